"""The slot part of `vislab train diffusion` (--part slots): a slot-conditioned diffusion
decoder trained end to end on generated scenes at 16 x 16 (2,000 training and 200 validation
scenes; Tetrominoes by default, three pieces each, as the Slot Attention lab's default run;
--slot-data multi-dsprites for up to 3 sprites).

Each epoch reports the validation ARI and foreground ARI of the segmentation that slot
attention's attention gives (slot_masks; vislab.metrics.clustering). The run folder's slots/
subfolder gets metrics.jsonl, checkpoint.pt, curves.png, masks.png (scenes, the attention's
segmentation, and each scene redrawn by the decoder from its own slots with 50 respaced steps)
and results.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from vislab.metrics.clustering import ari, fg_ari
from vislab.training import RunConfig, fit

from .ddpm import make_schedule, respace, respaced_model, sample
from .slot_decoder import SlotDiffusion, slot_diffusion_loss, slot_masks
from .slots_model import SlotConfig
from .unet import UNetConfig


def scenes(style: str, split: str, n: int, size: int = 16):
    from vislab.data.multi_object import MultiObjectScenes

    objects = None if style == "tetrominoes" else 3     # Tetrominoes: always three pieces
    data, step = MultiObjectScenes(style, split, n=n, max_objects=objects), 64 // size
    images, ids = [], []
    for i in range(n):
        image, labels = data.scene(i)
        images.append(torch.from_numpy(image[:, ::step, ::step].copy()))
        ids.append(torch.from_numpy(labels[::step, ::step].copy()))
    return torch.stack(images).float() / 255, torch.stack(ids).long()


@torch.no_grad()
def segmentation(model, images, ids, batch_size=100) -> dict[str, float]:
    pred, device = [], next(model.parameters()).device
    for i in range(0, len(images), batch_size):
        _, attn = model.encode(images[i:i + batch_size].to(device))
        pred.append(slot_masks(attn.float(), images.shape[-2], images.shape[-1],
                               tuple(images.shape[-2:])).cpu())
    pred = torch.cat(pred).flatten(1)
    return {"val_ari": float(ari(ids.flatten(1), pred).mean()),
            "val_fg_ari": float(fg_ari(ids.flatten(1), pred).mean())}


def plot_history(history: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from vislab.plots import _save, integer_epochs

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3)
    axes[0].set_ylabel("train epsilon MSE")
    for key in ("val_ari", "val_fg_ari"):
        axes[1].plot(epochs, [h[key] for h in history], marker="o", ms=3, label=key)
    axes[1].set_ylabel("ARI")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.grid(alpha=0.3)
    fig.suptitle("slot-conditioned diffusion decoder")
    return _save(fig, path)


def train_slots(args, dist, out: Path) -> dict:
    from .train import strip

    x_train, _ = scenes(args.slot_data, "train", 2000)
    x_val, id_val = scenes(args.slot_data, "val", 200)
    slot_config = SlotConfig(image_size=16, hidden=32, encoder_layers=3, slot_dim=32, num_slots=4,
                             iters=3, mlp_dim=64, decoder_resolution=4)
    unet_config = UNetConfig(image_size=16, in_channels=3, channels=(32, 64), attention=(True, True),
                             cond_dim=32, heads=4, dropout=0.0)
    model = SlotDiffusion(slot_config, unet_config)
    schedule = make_schedule(args.T, args.kind)
    epochs = args.slot_epochs
    print(f"slots: a slot-conditioned diffusion decoder, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, 2,000 {args.slot_data} "
          f"scenes at 16 x 16, {epochs} epochs, lr {args.slot_lr:g}")

    def step(model, batch):
        return {"loss": slot_diffusion_loss(model, schedule, batch[0])}

    def evaluate(model):
        return segmentation(model, x_val, id_val)
    run = RunConfig(out, epochs, 32, args.slot_lr, weight_decay=0.0, resume=args.resume)
    history = fit(model, TensorDataset(x_train), step, run, dist, evaluate=evaluate, seed=args.seed,
                  meta={"slot_config": slot_config.__dict__, "unet_config": unet_config.__dict__})
    model = model.cpu().eval()
    paths = [plot_history(history, out / "curves.png")]
    images = x_val[:6]
    with torch.no_grad():
        slots, attn = model.encode(images)
        masks = slot_masks(attn, 16, 16, (16, 16))                     # (6, 16, 16)
        sched, kept = respace(schedule, 50)
        torch.manual_seed(args.seed)
        redrawn = sample(respaced_model(model.unet, kept), sched, images.shape, slots)  # [-1, 1]
    colours = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.4, 1.0], [1.0, 0.9, 0.2]])
    seg = colours[masks].permute(0, 3, 1, 2) * 2 - 1                  # (6, 3, 16, 16) in [-1, 1]
    rows = torch.stack([images * 2 - 1, seg, redrawn.clamp(-1, 1)], 1)   # (6, 3, 3, 16, 16)
    paths.append(strip(rows, ["scene", "attention argmax", "redrawn from its slots"],
                       out / "masks.png", "validation scenes"))
    last = history[-1]
    results = {"epochs": last["epoch"], "train_loss": last["train_loss"],
               "val_ari": last["val_ari"], "val_fg_ari": last["val_fg_ari"]}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"slots: validation ARI {last['val_ari']:.3f}, foreground ARI {last['val_fg_ari']:.3f} "
          f"after {last['epoch']} epochs")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "results.json"]))
    return results
