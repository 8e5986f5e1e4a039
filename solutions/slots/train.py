"""Train the lab's Slot Attention autoencoder: `vislab train slots [options]` (see --help).

    vislab train slots                            # Tetrominoes at 16 x 16, 4 slots, 20 epochs, CPU
    vislab train slots --image-size 32 --epochs 30  # 32 x 32 scenes: about 5x the time per step
    vislab train slots --dataset multi-dsprites --num-slots 5
    vislab train slots --full --device cuda       # CLEVR with masks, 128 px, 11 slots (GPU)
    vislab train slots --full --dataset clevrtex --device cuda

A run folder gets metrics.jsonl (train / validation reconstruction loss, ARI and foreground ARI
per epoch), checkpoint.pt, curves.png, slots.png (validation scenes: image, reconstruction, each
slot's mask and masked colours), generated.png (scenes composed from the slot library:
model.encode every training image, K-means the slots, sample, decode) and results.json with
the FID of those scenes against validation images and which feature network made it.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from vislab import RUNS_DIR
from vislab.errors import UsageError
from vislab.metrics.clustering import ari, fg_ari
from vislab.training import RunConfig, fit, positive_int, setup, teardown

from .library import build_library, cluster_library, sample_slots
from .model import SlotAutoencoder, SlotConfig, reconstruction_loss

GENERATED = ("tetrominoes", "multi-dsprites")
FOLDERS = ("clevr-masks", "clevrtex")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=GENERATED + FOLDERS, default=None,
                        help="default: tetrominoes, or clevr-masks with --full")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="scenes are made at 64 px and subsampled: 64, 32, 16 or 8 "
                             "(default 16; 128 with --full)")
    parser.add_argument("--num-slots", type=positive_int, default=None, help="K (default 4; 11 with --full)")
    parser.add_argument("--iters", type=positive_int, default=3, help="T, attention iterations")
    parser.add_argument("--hidden", type=positive_int, default=None,
                        help="conv channels (default 32; 64 with --full)")
    parser.add_argument("--slot-dim", type=positive_int, default=None, help="D (default 32; 64 with --full)")
    parser.add_argument("--train-size", type=positive_int, default=2000, help="generated training scenes")
    parser.add_argument("--val-size", type=positive_int, default=200, help="validation scenes")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clusters", type=positive_int, default=12,
                        help="K-means clusters of the slot library")
    parser.add_argument("--generate", type=positive_int, default=200,
                        help="scenes to compose from the slot library (and score with the FID)")
    parser.add_argument("--feature-steps", type=positive_int, default=200,
                        help="training steps of the FID's feature network when Inception's "
                             "weights are absent")


# ------------------------------------------------------------------------------------ data

class Scenes(Dataset):
    """(image (3, S, S) float in [0, 1], ids (S, S) int64: 0 background, k the k-th object)."""

    def __init__(self, images: torch.Tensor, ids: torch.Tensor):
        self.images, self.ids = images, ids

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.ids[i]


class FolderScenes(Dataset):
    """A CLEVR-style folder's (image, masks) as (image, ids)."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        image, masks = self.folder[i]
        return image, masks.argmax(0)


def generated(style: str, split: str, n: int, size: int, max_objects: int | None) -> Scenes:
    """Generated scenes at 64 px, subsampled to size x size (exact for Tetrominoes: its blocks
    are 8 px)."""
    from vislab.data.multi_object import MultiObjectScenes

    step = 64 // size
    data = MultiObjectScenes(style, split, n=n, max_objects=max_objects)
    images, ids = [], []
    for i in range(n):
        image, labels = data.scene(i)
        images.append(torch.from_numpy(image[:, ::step, ::step].copy()))
        ids.append(torch.from_numpy(labels[::step, ::step].copy()))
    return Scenes(torch.stack(images).float() / 255, torch.stack(ids))


def datasets(args, name: str, size: int, num_slots: int):
    if name in GENERATED:
        if size not in (8, 16, 32, 64):
            raise UsageError(f"--image-size {size}: generated scenes come at 64, 32, 16 or 8 px")
        objects = min(num_slots - 1, 4 if name == "multi-dsprites" else 3)  # one slot for the background
        if objects < 1:
            raise UsageError(f"--num-slots {num_slots}: need at least 2 (objects and background)")
        if name == "tetrominoes":
            objects = None  # always 3, as in the original
        return (generated(name, "train", args.train_size, size, objects),
                generated(name, "val", args.val_size, size, objects))
    from vislab.data.multi_object import clevr_with_masks, clevrtex

    load = clevr_with_masks if name == "clevr-masks" else clevrtex
    return FolderScenes(load("train", size)), FolderScenes(load("val", size))


# -------------------------------------------------------------------------------- training

def config_for(args, name: str) -> SlotConfig:
    full = args.full
    size = args.image_size or (128 if full else 16)
    return SlotConfig(image_size=size, hidden=args.hidden or (64 if full else 32),
                      encoder_layers=4 if full else 3, slot_dim=args.slot_dim or (64 if full else 32),
                      num_slots=args.num_slots or (11 if full else 4), iters=args.iters,
                      mlp_dim=128 if full else 64, decoder_resolution=4 if size <= 16 else 8)


@torch.no_grad()
def evaluate_scenes(model, data, device, batch_size=100) -> dict[str, float]:
    """Validation reconstruction loss, ARI and foreground ARI (vislab.metrics.clustering)."""
    model.eval()
    loss, aris, fg, n = 0.0, [], [], 0
    for images, ids in DataLoader(data, batch_size):
        out = model(images.to(device))
        loss += reconstruction_loss(out["recon"].float(), images.to(device)).item() * len(images)
        pred = out["masks"].float().argmax(1).flatten(1).cpu()     # (B, N)
        true = ids.flatten(1)
        aris.append(ari(true, pred))
        fg.append(fg_ari(true, pred))
        n += len(images)
    import numpy as np
    return {"val_loss": loss / n, "val_ari": float(np.concatenate(aris).mean()),
            "val_fg_ari": float(np.concatenate(fg).mean())}


def main(args: argparse.Namespace) -> int:
    dist = setup(args.device, args.seed)
    name = args.dataset or ("clevr-masks" if args.full else "tetrominoes")
    config = config_for(args, name)
    try:
        config.upsamples
    except ValueError as exc:
        raise UsageError(f"--image-size {config.image_size}: {exc}") from None
    train_set, val_set = datasets(args, name, config.image_size, config.num_slots)
    model = SlotAutoencoder(config)

    def step(model, batch):
        images, _ = batch
        out = model(images)
        return {"loss": reconstruction_loss(out["recon"].float(), images)}

    def evaluate(model):
        return evaluate_scenes(model, val_set, dist.device)

    epochs = args.epochs or (100 if args.full else 20)
    out = Path(args.out or RUNS_DIR / "slots" / f"{name}-{__import__('datetime').datetime.now():%Y%m%d-%H%M%S}")
    run = RunConfig(out, epochs, args.batch_size, args.lr, weight_decay=0.0, resume=args.resume)
    if dist.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"training Slot Attention ({n_params:,} parameters, K={config.num_slots}, "
              f"T={config.iters}) on {name} at {config.image_size}x{config.image_size} "
              f"({len(train_set)} train / {len(val_set)} val scenes), {epochs} epochs on "
              f"{dist.device}; run folder {out}")
    history = fit(model, train_set, step, run, dist, evaluate=evaluate,
                  meta={"config": asdict(config), "dataset": name}, seed=args.seed)
    if dist.is_main:
        report(model, history, train_set, val_set, name, args, out)
    teardown(dist)
    return 0


# --------------------------------------------------------------------------------- results

def first_images(data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    items = [data[i] for i in range(min(n, len(data)))]
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def plot_curves(history, path: Path) -> Path:
    from vislab.plots import _save, integer_epochs, plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label="train")
    left.plot(epochs, [h["val_loss"] for h in history], marker="o", ms=3, label="validation")
    left.set_ylabel("reconstruction MSE")
    right.plot(epochs, [h["val_ari"] for h in history], marker="o", ms=3, label="ARI")
    right.plot(epochs, [h["val_fg_ari"] for h in history], marker="o", ms=3, label="foreground ARI")
    right.set_ylabel("validation")
    right.set_ylim(-0.05, 1.0)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_slots(images, out, path: Path, title: str) -> Path:
    """Per scene: the image, the reconstruction, then each slot's mask * rgb (its share)."""
    from vislab.plots import _save, plt

    masks, rgb = out["masks"].float(), out["rgb"].float().clamp(0, 1)   # (B, K, 1|3, H, W)
    B, K = masks.shape[:2]
    fig, axes = plt.subplots(B, K + 2, figsize=(1.4 * (K + 2), 1.4 * B), squeeze=False)
    for b in range(B):
        panels = [images[b], out["recon"][b].float().clamp(0, 1)] + \
                 [masks[b, k] * rgb[b, k] + (1 - masks[b, k]) for k in range(K)]
        for j, panel in enumerate(panels):
            axes[b, j].imshow(panel.permute(1, 2, 0).numpy(), interpolation="nearest")
            axes[b, j].set_xticks([])
            axes[b, j].set_yticks([])
        if b == 0:
            for j, label in enumerate(["image", "recon"] + [f"slot {k}" for k in range(K)]):
                axes[0, j].set_title(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_grid(images, path: Path, title: str, columns: int = 10) -> Path:
    from vislab.plots import _save, plt

    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, images):
        ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


@torch.no_grad()
def compose(model, train_set, args, config) -> tuple[torch.Tensor, dict]:
    """Slot library of the training images -> K-means -> sampled slot sets -> decoded scenes."""
    images = torch.stack([train_set[i][0] for i in range(len(train_set))])
    library = build_library(model.encode, images, batch_size=100)         # (n * K, D)
    labels = cluster_library(library, args.clusters, seed=args.seed)       # (n * K,)
    g = torch.Generator().manual_seed(args.seed)
    slots = sample_slots(library, labels, args.generate, config.num_slots, g)  # (S, K, D)
    scenes = torch.cat([model.decode(slots[i:i + 100])[0] for i in range(0, len(slots), 100)])
    return scenes.clamp(0, 1), {"library": len(library), "clusters": args.clusters}


def report(model, history, train_set, val_set, name, args, out: Path) -> None:
    from vislab.metrics.fid import feature_extractor, fid

    model = model.cpu().eval()
    config = model.config
    paths = [plot_curves(history, out / "curves.png")]
    images, _ = first_images(val_set, 6)
    with torch.no_grad():
        paths.append(plot_slots(images, model(images), out / "slots.png",
                                f"{name}: validation scenes, reconstruction, each slot's share"))
    scenes, about = compose(model, train_set, args, config)
    paths.append(plot_grid(scenes[:40], out / "generated.png",
                           f"composed from the slot library ({about['clusters']} K-means clusters)"))
    real, _ = first_images(val_set, len(val_set))
    train_images, _ = first_images(train_set, min(len(train_set), 2000))
    extractor = feature_extractor(train_images, name, cache=out / "fid_features.pt", seed=args.seed,
                                  steps=args.feature_steps)
    score = fid(real, scenes, extractor)
    last = history[-1]
    results = {"dataset": name, "epochs": last["epoch"], "config": asdict(config),
               "val_loss": last["val_loss"], "val_ari": last["val_ari"],
               "val_fg_ari": last["val_fg_ari"], "generation": about | score.as_dict()}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"validation: reconstruction MSE {last['val_loss']:.4f}, ARI {last['val_ari']:.3f}, "
          f"foreground ARI {last['val_fg_ari']:.3f} after {last['epoch']} epochs")
    print(f"composed scenes: {score}")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "results.json", out / "metrics.jsonl",
                                                        out / "checkpoint.pt"]))
