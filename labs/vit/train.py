"""Train the lab's models: `vislab train vit [options]` (see --help).

    vislab train vit                              # ViT on MNIST-5k, CPU, about a minute
    vislab train vit --model cnn --out runs/vit/cnn                 # the CNN of about the same size
    vislab train vit --mixup 0.8 --randaugment --weight-decay 0.1 --dropout 0.1
    vislab train vit --teacher runs/vit/cnn/checkpoint.pt           # KL distillation, T = 4
    vislab train vit --classes 0-4 --out runs/vit/pre               # pretrain on digits 0-4
    vislab train vit --finetune runs/vit/pre/checkpoint.pt --classes 5-9 --per-class 50 \\
                     --finetune-mode head                           # then fine-tune on 5-9
    vislab train vit --full --device cuda         # full MNIST, a larger ViT (GPU)

A run folder gets metrics.jsonl, checkpoint.pt, curves.png, confusion.png and (ViT)
attention.png. `--finetune` also takes a torchvision VisionTransformer state dict (e.g.
vit_b_16's weights file), loaded with model.load_torchvision_weights.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torchvision.transforms import v2

from vislab import RUNS_DIR, plots
from vislab.data import ImageDataset, mnist, mnist5k, parse_classes, select_classes
from vislab.data.folder import image_folder
from vislab.data.mnist import MEAN, STD
from vislab.errors import UsageError
from vislab.training import RunConfig, fit, load_checkpoint, positive_int, setup, teardown

from .cnn import SmallCNN
from .distill import distillation_loss
from .finetune import replace_head, trainable_parameters
from .model import ViT, ViTConfig, load_torchvision_weights

SMALL = ViTConfig()  # 7x7 patches, 2 blocks, D = 64: trains on a CPU in about a minute
FULL = ViTConfig(dim=192, depth=6, num_heads=3, mlp_dim=384, dropout=0.1)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=["vit", "cnn"], default="vit")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout rate (default 0, or 0.1 with --full)")
    parser.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                        help="MixUp with Beta(ALPHA, ALPHA) mixing weights (0: off)")
    parser.add_argument("--randaugment", action="store_true", help="RandAugment each image")
    parser.add_argument("--teacher", type=Path, metavar="CKPT",
                        help="distil from this checkpoint's model: KL at --temperature, no labels")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--finetune", type=Path, metavar="CKPT",
                        help="start from this checkpoint (ours, or a torchvision ViT state dict) "
                             "with a new head")
    parser.add_argument("--finetune-mode", choices=["full", "head"], default="full")
    parser.add_argument("--classes", default="0-9", help="digits to use, e.g. 0-4 or 1,3,5")
    parser.add_argument("--per-class", type=positive_int, metavar="N",
                        help="use only N training images per class")
    parser.add_argument("--data", type=Path, metavar="PATH",
                        help="your own class-per-folder images (ImageFolder layout) instead of MNIST-5k")
    parser.add_argument("--image-size", type=positive_int, metavar="N",
                        help="with --data: resize images to N x N (default 64; 4 x 4 patches)")


# ------------------------------------------------------------------------------------ data

def folder_datasets(args):
    """(train, test) ImageDatasets of a class-per-folder set and its class names; the
    validation split is not used here (the swin_cnn lab uses it)."""
    if args.classes != "0-9" or args.per_class or args.full:
        raise UsageError("--data takes the classes and images in its folders: drop --classes, "
                         "--per-class and --full")
    data = image_folder(args.data, args.image_size or 64)
    for note in data.notes:
        print(f"{args.data}: {note}")
    half = torch.full((3, 1, 1), 0.5)  # RGB images of any folder set, to [-1, 1]
    augment = v2.RandAugment() if args.randaugment else None
    return (ImageDataset(*data.splits["train"], half, half, transform=augment),
            ImageDataset(*data.splits["test"], half, half), data.classes)


def datasets(args):
    if args.data is not None:
        return folder_datasets(args)
    if args.image_size:
        raise UsageError("--image-size applies to --data PATH")
    load = mnist if args.full else mnist5k
    classes = parse_classes(args.classes)
    train = select_classes(*load("train"), classes, args.per_class)
    test = select_classes(*load("test"), classes)
    augment = v2.RandAugment() if args.randaugment else None
    return (ImageDataset(*train, MEAN, STD, transform=augment),
            ImageDataset(*test, MEAN, STD), classes)


# ---------------------------------------------------------------------------------- models

def build(kind: str, config: dict) -> torch.nn.Module:
    return ViT(ViTConfig(**config)) if kind == "vit" else SmallCNN(**config)


def vit_config_from_torchvision(state: dict) -> ViTConfig:
    """A ViTConfig that fits a torchvision VisionTransformer state dict."""
    dim, channels, patch, _ = state["conv_proj.weight"].shape
    grid = int(round((state["encoder.pos_embedding"].shape[1] - 1) ** 0.5))
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.layers.")})
    heads = {768: 12, 1024: 16, 1280: 16}.get(dim, max(1, dim // 64))  # torchvision's ViTs
    return ViTConfig(image_size=grid * patch, patch_size=patch, in_channels=channels,
                     num_classes=state["heads.head.weight"].shape[0], dim=dim, depth=depth,
                     num_heads=heads,
                     mlp_dim=state["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0])


def load_model(path: Path) -> tuple[torch.nn.Module, str, dict]:
    """A model from our checkpoint.pt or from a torchvision VisionTransformer state dict."""
    state = load_checkpoint(path)
    if "conv_proj.weight" in state:
        config = vit_config_from_torchvision(state)
        return load_torchvision_weights(ViT(config), state), "vit", asdict(config)
    if "meta" not in state or "kind" not in state["meta"]:
        raise UsageError(f"{path} is neither a vislab checkpoint nor a torchvision ViT state dict")
    kind, config = state["meta"]["kind"], state["meta"]["config"]
    model = build(kind, config)
    model.load_state_dict(state["model"])
    return model, kind, config


def adapt_input(x: torch.Tensor, kind: str, config: dict) -> torch.Tensor:
    """MNIST batches as the model expects them: torchvision's ImageNet ViTs take 3-channel
    images of their own size with ImageNet's normalisation."""
    if kind != "vit" or config["in_channels"] == x.shape[1] and config["image_size"] == x.shape[-1]:
        return x
    x = (x * STD + MEAN).expand(-1, config["in_channels"], -1, -1)   # back to [0, 1]
    x = F.interpolate(x, size=config["image_size"], mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD[: x.shape[1]], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


# -------------------------------------------------------------------------------- training

def main(args: argparse.Namespace) -> int:
    dist = setup(args.device, args.seed)
    # the checkpoints named on the command line are read before the data: a wrong path fails
    # at once, not after the data has loaded
    source = load_model(args.finetune) if args.finetune else None
    teacher_source = load_model(args.teacher) if args.teacher else None
    train_set, test_set, classes = datasets(args)
    dropout = args.dropout if args.dropout is not None else (0.1 if args.full else 0.0)
    params = None
    if args.finetune:
        model, kind, config = source
        model = replace_head(model, len(classes))
        config = {**config, "num_classes": len(classes)}
        params = list(trainable_parameters(model, args.finetune_mode))
        if not any(p.requires_grad for p in params):
            raise UsageError(f"trainable_parameters(model, {args.finetune_mode!r}) returned no "
                             f"parameter with requires_grad=True, so nothing would train: the "
                             f"head at least must train (finetune.py, TODO vit.finetune)")
    elif args.model == "vit":
        kind = "vit"
        config = asdict(FULL if args.full else SMALL) | {"num_classes": len(classes),
                                                         "dropout": dropout}
        if args.data is not None:  # 4 x 4 patches of the folder's S x S RGB images
            size = train_set.images.shape[-1]
            config |= {"image_size": size, "patch_size": max(1, size // 4), "in_channels": 3}
        model = build(kind, config)
    else:
        kind, config = "cnn", {"num_classes": len(classes), "dropout": dropout,
                               "in_channels": train_set.images.shape[1]}
        model = build(kind, config)
    teacher = None
    if args.teacher:
        teacher, teacher_kind, teacher_config = teacher_source
        teacher = teacher.to(dist.device).eval().requires_grad_(False)
    mixup = v2.MixUp(alpha=args.mixup, num_classes=len(classes)) if args.mixup else None

    def step(model, batch):
        x, y = batch
        if mixup is not None:
            x, y = mixup(x, y)                          # y: (B, classes) soft labels
        logits = model(adapt_input(x, kind, config))    # (B, classes)
        if teacher is not None:
            with torch.no_grad():
                target = teacher(adapt_input(x, teacher_kind, teacher_config))
            loss = distillation_loss(logits, target, args.temperature)
        else:
            loss = F.cross_entropy(logits, y)
        hard = y.argmax(-1) if y.ndim == 2 else y
        return {"loss": loss, "acc": (logits.argmax(-1) == hard).float().mean()}

    def evaluate(model):
        logits, labels = predict(model, test_set, kind, config, dist.device)
        return {"test_loss": F.cross_entropy(logits, labels).item(),
                "test_acc": (logits.argmax(-1) == labels).float().mean().item()}

    epochs = args.epochs or (100 if args.full else 20)
    out = Path(args.out or default_out(kind, args))
    run = RunConfig(out, epochs, args.batch_size, args.lr, args.weight_decay, resume=args.resume)
    data = args.data.name if args.data is not None else ("MNIST" if args.full else "MNIST-5k")
    if dist.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training {kind} ({n_params:,} parameters) on {data}"
              f" classes {classes} ({len(train_set)} train / {len(test_set)} test images), "
              f"{epochs} epochs on {dist.device}; run folder {out}")
    history = fit(model, train_set, step, run, dist, evaluate=evaluate, params=params,
                  meta={"kind": kind, "config": config, "classes": classes}, seed=args.seed)
    if dist.is_main:
        report(model, kind, config, history, test_set, classes, out, dist.device, data)
    teardown(dist)
    return 0


def default_out(kind: str, args) -> Path:
    from datetime import datetime
    return RUNS_DIR / "vit" / f"{kind}-{datetime.now():%Y%m%d-%H%M%S}"


@torch.no_grad()
def predict(model, dataset, kind, config, device, batch_size=500):
    model.eval()
    logits = [model(adapt_input(dataset.normalise(dataset.images[i:i + batch_size]).to(device),
                                kind, config)).float().cpu()
              for i in range(0, len(dataset), batch_size)]
    return torch.cat(logits), dataset.labels


# --------------------------------------------------------------------------------- results

class _SoftmaxRecorder(TorchFunctionMode):
    """Inside the block, keep the output of every softmax call: the attention weights as your
    Attention computes them, however it is written (one (B, H, N, N) softmax, or one (B, N, N)
    per head)."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") == "softmax":
            self.outputs.append(out)
        return out


def attention_weights(attn: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor | None:
    """Your Attention's own softmax weights on `tokens` (B, N, D), averaged over the heads:
    (B, N, N), or None when they cannot be read (no softmax of that shape was called)."""
    B, N, _ = tokens.shape
    with _SoftmaxRecorder() as recorder:
        attn(tokens)
    weights = [w for w in recorder.outputs if w.shape[0] == B and w.shape[-2:] == (N, N)]
    if len(weights) == 1 and weights[0].ndim == 4:       # (B, H, N, N)
        return weights[0].mean(1)
    if weights and all(w.ndim == 3 for w in weights):    # one (B, N, N) per head
        return torch.stack(weights, 1).mean(1)
    return None


@torch.no_grad()
def attention_rollout(model: ViT, x: torch.Tensor) -> torch.Tensor | None:
    """How much the CLS token draws on each patch, through all blocks (Abnar & Zuidema, 2020).

    Each block's attention weights, as the lab's Attention computes them (read from its softmax
    while it runs on the block's input), averaged over heads, plus the identity for the
    residual, rows renormalised, are multiplied through the blocks; the CLS row gives a (B, h, w)
    map. None when the weights cannot be read from the Attention."""
    inputs = []
    hooks = [b.attn.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
             for b in model.blocks]
    model.eval()(x)
    for h in hooks:
        h.remove()
    rollout = None
    for block, tokens in zip(model.blocks, inputs):
        a = attention_weights(block.attn, tokens)                      # (B, N, N)
        if a is None:
            return None
        N = a.shape[-1]
        a = a + torch.eye(N, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    grid = int((rollout.shape[-1] - 1) ** 0.5)
    return rollout[:, 0, 1:].reshape(-1, grid, grid)                  # (B, h, w)


def report(model, kind, config, history, test_set, classes, out, device,
           data: str = "MNIST-5k") -> None:
    model = model.cpu()
    logits, labels = predict(model, test_set, kind, config, "cpu")
    preds = logits.argmax(-1)
    names = [str(c) for c in classes]
    paths = [plots.curves(history, out / "curves.png", f"{kind} on {data}"),
             plots.plot_confusion(labels, preds, names, out / "confusion.png", f"{kind} on {data}")]
    if kind == "vit" and config["image_size"] == 28:
        first = [(labels == c).nonzero()[0].item() for c in range(len(classes)) if (labels == c).any()]
        images = test_set.images[first[:10]]
        maps = attention_rollout(model, test_set.normalise(images))
        if maps is None:
            print("attention.png not drawn: the attention weights could not be read from your "
                  "Attention (it computes no softmax of shape (B, H, N, N) or (B, N, N))")
        else:
            maps = F.interpolate(maps[:, None], size=images.shape[-1], mode="nearest")[:, 0]
            titles = [f"{classes[labels[i]]} -> {classes[preds[i]]}" for i in first[:10]]
            paths.append(plots.overlay_grid(
                images.float() / 255, maps, titles, out / "attention.png",
                f"attention rollout from CLS, your Attention's weights, {data} test images "
                f"(true -> predicted)", colorbar_label="share of CLS's attention"))
    acc = (preds == labels).float().mean().item()
    print(f"test accuracy {acc:.4f} after {history[-1]['epoch']} epochs")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "metrics.jsonl", out / "checkpoint.pt"]))


def required_tasks(args) -> set[str]:
    """The lab's tasks this run's code calls (`vislab train` checks them before the first
    epoch): the ViT's, unless only the given CNN trains; distillation with --teacher;
    fine-tuning with --finetune."""
    vit = {"vit.patch_embed", "vit.mlp", "vit.attention", "vit.block", "vit.model"}
    needed = set() if args.model == "cnn" and not args.finetune else vit
    if args.teacher:
        needed = needed | {"vit.distill"}
    if args.finetune:
        needed = needed | {"vit.finetune"}
    return needed
