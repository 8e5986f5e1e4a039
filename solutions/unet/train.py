"""Train the lab's models: `vislab train unet [options]` (see --help).

    vislab train unet                              # the four UNet variants side by side (CPU)
    vislab train unet --down conv --up bilinear --loss dice      # one variant
    vislab train unet --model swin-unet            # the Swin encoder with the UNet decoder
    vislab train unet --model convnext-unet        # the ConvNeXt encoder
    vislab train unet --trimap --loss ce           # 3 classes: background / pet / border
    vislab train unet --weight-decay 0.05 --epochs 40            # ablations: weight decay, epochs
    vislab train unet --base 8 --depth 2           # a smaller UNet; --blocks 1 for the hybrids
    vislab train unet --full --device cuda         # Oxford-IIIT Pets at 128 px (GPU, files needed)

The four default variants are the comparison courses assign: max-pool + transposed conv + BCE,
max-pool + transposed conv + Dice, strided conv + transposed conv + BCE, strided conv +
bilinear + Dice. Data: pets-synthetic (generated, Oxford-IIIT Pets' layout) at 64 x 64, or the
real Oxford-IIIT Pets with --full; the trainval split is cut once into train and validation (a
fixed 1/8), the test split is only evaluated at the end. Every run uses vislab.training.fit
(AdamW, warm-up then cosine decay of the learning rate).

A run folder gets metrics.jsonl (train loss and Dice, validation loss, Dice and IoU per epoch),
checkpoint.pt, results.json (Dice and IoU on train / val / test), predictions.png (image, ground
truth, prediction), layers.txt and graph.png (the model graph). Several variants train into
sub-folders and add comparison.md, comparison.png (train / validation loss and validation Dice
per variant) and predictions.png (all variants on the same test images).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from vislab import RUNS_DIR, plots
from vislab.data import oxford_pets, pets_synthetic
from vislab.errors import UsageError
from vislab.metrics.segmentation import dice_per_image, iou_per_image, to_masks
from vislab.training import RunConfig, fit, positive_int, setup, teardown

from . import hybrid, summary, unet
from .losses import segmentation_loss

MODELS = ("unet", "swin-unet", "convnext-unet")
# (down, up, loss): the four variants trained side by side by default
VARIANTS = (("maxpool", "transpose", "bce"), ("maxpool", "transpose", "dice"),
            ("conv", "transpose", "bce"), ("conv", "bilinear", "dice"))
MEAN, STD = 0.5, 0.25  # fixed normalisation of images in [0, 1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODELS, default="unet",
                        help="unet (default), or a hybrid: swin-unet, convnext-unet")
    parser.add_argument("--down", choices=unet.DOWNS, help="UNet downsampling (with --up and "
                        "--loss: one variant; none of the three: the four default variants)")
    parser.add_argument("--up", choices=unet.UPS, help="upsampling (the hybrids' decoder too)")
    parser.add_argument("--loss", choices=("bce", "dice", "ce"),
                        help="training loss (default bce; ce needs --trimap)")
    parser.add_argument("--trimap", action="store_true",
                        help="3 classes (background / pet / border) instead of pet vs background")
    parser.add_argument("--size", type=positive_int, help="image size (default 64, 128 with --full)")
    parser.add_argument("--base", type=positive_int, default=None,
                        help="UNet channels of the first level (default 16; 32 with --full)")
    parser.add_argument("--depth", type=positive_int, default=None,
                        help="UNet down steps (default 3; 4 with --full)")
    parser.add_argument("--blocks", type=positive_int, default=2,
                        help="hybrids: blocks per encoder stage (default 2)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (default 3e-3 for the UNet, 1e-3 for the hybrids)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                        help="the learning rate after the warm-up: cosine decay to 0 (default) or constant")


# ------------------------------------------------------------------------------------ data

def tensors(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    masks = torch.stack([dataset[i][1] for i in range(len(dataset))])
    return (images - MEAN) / STD, masks


def datasets(args):
    """(train, val, test) TensorDatasets of normalised images and masks ((B, 1, H, W) floats,
    or (B, H, W) class indices with --trimap)."""
    size = args.size or (128 if args.full else 64)
    load = oxford_pets if args.full else pets_synthetic
    x, y = tensors(load("trainval", size, trimap=args.trimap))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    n_val = len(x) // 8
    val, train = order[:n_val].sort().values, order[n_val:].sort().values
    test = tensors(load("test", size, trimap=args.trimap))
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val]), TensorDataset(*test)


# ---------------------------------------------------------------------------------- models

def run_specs(args) -> list[dict]:
    """One dict per run: name, model kind, config, loss."""
    if args.loss == "ce" and not args.trimap:
        raise UsageError("--loss ce is the 3-class cross-entropy: add --trimap (or use --loss bce)")
    if args.loss == "bce" and args.trimap:
        raise UsageError("--loss bce is binary; with --trimap use --loss ce or --loss dice")
    classes = 3 if args.trimap else 1
    default_loss = "ce" if args.trimap else "bce"
    if args.model != "unet":
        if args.down:
            raise UsageError("--down chooses the UNet's downsampling; the hybrids' encoders "
                             "downsample themselves (drop --down)")
        depths = tuple([args.blocks] * 3)
        config = asdict(hybrid.HybridConfig(encoder=args.model.split("-")[0], num_classes=classes,
                                            depths=depths, up=args.up or "transpose"))
        return [{"name": args.model, "kind": "hybrid", "config": config,
                 "loss": args.loss or default_loss}]
    common = dict(num_classes=classes, base=args.base or (32 if args.full else 16),
                  depth=args.depth or (4 if args.full else 3))
    if args.down or args.up or args.loss:
        variants = [(args.down or "maxpool", args.up or "transpose", args.loss or default_loss)]
    else:
        variants = [(d, u, "ce" if args.trimap and loss == "bce" else loss)
                    for d, u, loss in VARIANTS]
    return [{"name": f"{d}-{u}-{loss}", "kind": "unet",
             "config": asdict(unet.UNetConfig(down=d, up=u, **common)), "loss": loss}
            for d, u, loss in variants]


def build(kind: str, config: dict) -> nn.Module:
    if kind == "unet":
        return unet.UNet(unet.UNetConfig(**config))
    config = {**config, "depths": tuple(config["depths"]), "num_heads": tuple(config["num_heads"])}
    return hybrid.HybridUNet(hybrid.HybridConfig(**config))


def scores(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image Dice and IoU of the hard predictions (averaged over the classes)."""
    pred, K = to_masks(logits), logits.shape[1]
    target = target.long()
    return dice_per_image(pred, target, K).mean(1), iou_per_image(pred, target, K).mean(1)


@torch.no_grad()
def predict(model, dataset, device, batch_size=64) -> torch.Tensor:
    model.eval()
    x = dataset.tensors[0]
    return torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(x), batch_size)])


def required_tasks(args) -> set[str]:
    """The lab's tasks this run's code calls (`vislab train` checks them before the first
    epoch): the losses always; the UNet's blocks and forward; for a hybrid, its encoder and the
    decoder's blocks (DoubleConv, Up)."""
    needed = {"unet.dice_loss", "unet.double_conv", "unet.up"}
    if args.model == "unet":
        return needed | {"unet.down", "unet.model"}
    return needed | {"unet.swin_encoder" if args.model == "swin-unet" else "unet.convnext_encoder"}


# -------------------------------------------------------------------------------- training

def main(args: argparse.Namespace) -> int:
    specs = run_specs(args)
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    if len(specs) == 1:
        out = Path(args.out or RUNS_DIR / "unet" / f"{specs[0]['name']}-{stamp}")
        train_one(args, specs[0], out)
        return 0
    out = Path(args.out or RUNS_DIR / "unet" / f"compare-{stamp}")
    for spec in specs:
        train_one(args, spec, out / spec["name"])
    compare(args, out, specs)
    return 0


def train_one(args, spec: dict, out: Path) -> dict:
    dist = setup(args.device, args.seed)
    train_set, val_set, test_set = datasets(args)
    model = build(spec["kind"], spec["config"])
    kind = spec["loss"]

    def step(model, batch):
        x, y = batch
        logits = model(x)
        dice, _ = scores(logits.detach(), y)
        return {"loss": segmentation_loss(logits, y, kind), "dice": dice.mean()}

    def evaluate(model):
        logits = predict(model, val_set, dist.device)
        y = val_set.tensors[1]
        dice, iou = scores(logits, y)
        return {"val_loss": segmentation_loss(logits, y, kind).item(),
                "val_dice": dice.mean().item(), "val_iou": iou.mean().item()}

    epochs = args.epochs or (30 if args.full else 10)
    lr = args.lr or (3e-3 if spec["kind"] == "unet" else 1e-3)
    run = RunConfig(out, epochs, args.batch_size, lr, args.weight_decay, resume=args.resume,
                    schedule=args.schedule)
    size = tuple(train_set.tensors[0].shape[-2:])
    if dist.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training {spec['name']} ({n_params:,} parameters, loss {kind}) on "
              f"{'Oxford-IIIT Pets' if args.full else 'pets-synthetic'} at {size[0]}x{size[1]} "
              f"({len(train_set)} train / {len(val_set)} validation / {len(test_set)} test images"
              f"{', 3 trimap classes' if args.trimap else ''}), {epochs} epochs on {dist.device}; "
              f"run folder {out}")
    history = fit(model, train_set, step, run, dist, evaluate=evaluate,
                  meta={"kind": spec["kind"], "config": spec["config"], "loss": kind},
                  seed=args.seed)
    results = {}
    if dist.is_main:
        results = report(model.cpu(), spec, history, (train_set, val_set, test_set), out)
    teardown(dist)
    return results


# --------------------------------------------------------------------------------- results

def report(model, spec, history, sets, out: Path) -> dict:
    results = {}
    for split, dataset in zip(("train", "val", "test"), sets):
        dice, iou = scores(predict(model, dataset, "cpu"), dataset.tensors[1])
        results[split] = {"dice": dice.mean().item(), "iou": iou.mean().item()}
    results["params"] = sum(p.numel() for p in model.parameters())
    results["epochs"] = history[-1]["epoch"]
    results["seconds"] = round(sum(h["seconds"] for h in history), 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    shape = (1,) + tuple(sets[0].tensors[0].shape[1:])
    rows = summary.layer_table(model, shape, max_depth=2)
    (out / "layers.txt").write_text(summary.format_table(rows) + "\n")
    paths = [summary.draw_graph(model, shape, out / "graph.png", spec["name"]),
             curves([(spec["name"], history)], out / "curves.png"),
             prediction_grid([(spec["name"], model)], sets[2], out / "predictions.png")]
    print(f"{'':6} {'Dice':>7} {'IoU':>7}")
    for split in ("train", "val", "test"):
        print(f"{split:6} {results[split]['dice']:7.4f} {results[split]['iou']:7.4f}")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "layers.txt", out / "results.json",
                                                         out / "metrics.jsonl", out / "checkpoint.pt"]))
    return results


def curves(runs: list[tuple[str, list[dict]]], path: Path) -> Path:
    """Train (solid) and validation (dashed) loss, and validation Dice, per epoch and run."""
    fig, (ax_loss, ax_dice) = plots.plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (name, history) in enumerate(runs):
        epochs = [h["epoch"] for h in history]
        color = f"C{i}"
        ax_loss.plot(epochs, [h["train_loss"] for h in history], color=color, label=f"{name} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in history], color=color, ls="--",
                     label=f"{name} val")
        ax_dice.plot(epochs, [h["val_dice"] for h in history], color=color, marker="o", ms=3,
                     label=name)
    ax_loss.set_ylabel("loss (each variant's own)")
    ax_dice.set_ylabel("validation Dice")
    for ax in (ax_loss, ax_dice):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_loss.legend(fontsize=6)
    ax_dice.legend(fontsize=7)
    return plots._save(fig, path)


def prediction_grid(models: list[tuple[str, nn.Module]], test_set, path: Path, n: int = 6) -> Path:
    """n test images (rows): the image, the ground truth, each model's prediction."""
    x, y = test_set.tensors[0][:n], test_set.tensors[1][:n]
    preds = [(name, to_masks(predict(m, TensorDataset(x, y), "cpu"))) for name, m in models]
    cols = 2 + len(preds)
    fig, axes = plots.plt.subplots(n, cols, figsize=(1.7 * cols, 1.7 * n), squeeze=False)
    classes = 3 if y.ndim == 3 else 2
    for i in range(n):
        panels = [(x[i] * STD + MEAN).clamp(0, 1).permute(1, 2, 0), y[i].reshape(y.shape[-2:])]
        panels += [p[i].reshape(y.shape[-2:]) for _, p in preds]
        for j, (ax, img) in enumerate(zip(axes[i], panels)):
            kw = {} if j == 0 else dict(cmap="viridis", vmin=0, vmax=classes - 1)
            ax.imshow(img.numpy(), **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(["image", "ground truth"][j] if j < 2 else preds[j - 2][0],
                             fontsize=6)
    return plots._save(fig, path)


def compare(args, out: Path, specs: list[dict]) -> None:
    """comparison.md (Dice and IoU of each run), comparison.png, predictions.png (all runs)."""
    from vislab.training import load_checkpoint

    rows = ["| variant | params | epochs | s/epoch | train Dice | val Dice | test Dice | test IoU |",
            "|---" * 8 + "|"]
    runs, models = [], []
    for spec in specs:
        folder = out / spec["name"]
        r = json.loads((folder / "results.json").read_text())
        history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        runs.append((spec["name"], history))
        model = build(spec["kind"], spec["config"])
        model.load_state_dict(load_checkpoint(folder / "checkpoint.pt")["model"])
        models.append((spec["name"], model))
        rows.append(f"| {spec['name']} | {r['params']:,} | {r['epochs']} | "
                    f"{r['seconds'] / r['epochs']:.1f} | {r['train']['dice']:.4f} | "
                    f"{r['val']['dice']:.4f} | {r['test']['dice']:.4f} | {r['test']['iou']:.4f} |")
    curves(runs, out / "comparison.png")
    _, _, test_set = datasets(args)
    prediction_grid(models, test_set, out / "predictions.png")
    (out / "comparison.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.png'}, {out / 'predictions.png'}")
