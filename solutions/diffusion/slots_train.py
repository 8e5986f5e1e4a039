"""The slot part of `vislab train diffusion` (--part slots): a slot-conditioned LATENT diffusion
decoder trained end to end, then compositional generation.

1. The scene autoencoder (scene_autoencoder.py, given): trained by the kit's reference code on
   the training scenes on first use and kept in runs/diffusion/scene-ae-<data>-<size>px-seed<seed>/
   checkpoint.pt, which later runs read (never overwritten; an interrupted one resumes); or
   --scene-autoencoder names a checkpoint of your own. Its latents get one scale factor
   (latent_scale: 1 / their standard deviation over the training scenes).
2. The slot decoder (SlotDiffusion): the Slot Attention lab's encoder and a UNet on the latents
   cross-attending to the slots, trained with your slot_diffusion_loss. Each epoch reports the
   validation ARI and foreground ARI of the segmentation from slot attention's attention.
3. Compositional generation (compose.py): the slot library of the training scenes, K-means
   into K clusters, new slot sets of one slot per cluster, decoded with 50 respaced steps;
   their FID against held-out scenes, beside the FID of held-out scenes redrawn from their
   own slots (vislab.metrics.fid, the feature network named in results.json).

Default (CPU): 2,000 Tetrominoes scenes at 16 x 16 (--slot-data multi-dsprites for up to 3
sprites), latents 4 x 8 x 8. --full: CLEVR-with-masks at 128 x 128 (files: docs/data.md),
latents 4 x 16 x 16, 11 slots. The run folder's slots/ subfolder gets metrics.jsonl,
checkpoint.pt, curves.png, masks.png, composed.png and results.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from vislab import RUNS_DIR
from vislab.errors import UsageError
from vislab.metrics.clustering import ari, fg_ari
from vislab.training import RunConfig, fit, load_checkpoint

from .compose import cluster_slots, compose_slots, decode_slots, slot_library
from .ddpm import make_schedule
from .scene_autoencoder import SceneAEConfig, SceneAutoencoder, latent_scale
from .slot_decoder import SlotDiffusion, slot_diffusion_loss, slot_masks
from .slots_model import SlotConfig
from .unet import UNetConfig

AE_EPOCHS = 5


# ------------------------------------------------------------------------------------ data

def scenes(style: str, split: str, n: int, size: int = 16):
    """Generated scenes at 64 px subsampled to size: images (n, 3, size, size) in [0, 1], ids."""
    from vislab.data.multi_object import MultiObjectScenes

    objects = None if style == "tetrominoes" else 3     # Tetrominoes: always three pieces
    data, step = MultiObjectScenes(style, split, n=n, max_objects=objects), 64 // size
    images, ids = [], []
    for i in range(n):
        image, labels = data.scene(i)
        images.append(torch.from_numpy(image[:, ::step, ::step].copy()))
        ids.append(torch.from_numpy(labels[::step, ::step].copy()))
    return torch.stack(images).float() / 255, torch.stack(ids).long()


class Images(Dataset):
    """The images of a CLEVR-style folder (vislab.data.multi_object), as 1-tuples for fit."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        return (self.folder[i][0],)


def folder_scenes(folder, n: int):
    """The first n scenes of a CLEVR-style folder: images (n, 3, S, S) and ids (n, S, S)."""
    n = min(n, len(folder))
    pairs = [folder[i] for i in range(n)]
    return (torch.stack([p[0] for p in pairs]).float(),
            torch.stack([p[1].argmax(0) for p in pairs]).long())


def datasets(args):
    """(training set of 1-tuples, a tensor of up to 2,000 training images for the library and
    the scale, validation images and ids, test images for FID)."""
    if args.full:
        from vislab.data.multi_object import clevr_with_masks

        size = 128
        train = clevr_with_masks("train", size)
        x_lib, _ = folder_scenes(train, 2000)
        x_val, id_val = folder_scenes(clevr_with_masks("val", size), 500)
        x_test, _ = folder_scenes(clevr_with_masks("test", size), 1000)
        return Images(train), x_lib, x_val, id_val, x_test
    x_train, _ = scenes(args.slot_data, "train", 2000)
    x_val, id_val = scenes(args.slot_data, "val", 200)
    x_test, _ = scenes(args.slot_data, "test", 500)
    return TensorDataset(x_train), x_train, x_val, id_val, x_test


def configs(full: bool):
    """(autoencoder, slot encoder, UNet) configs: CPU default or --full."""
    if full:  # CLEVR at 128 px; LSD: 128 px, Stable Diffusion's f = 8 VAE, 11 slots of 64 (see docs)
        ae = SceneAEConfig(image_size=128, hidden=64, channels=(128, 128, 128), latent_channels=4)
        slots = SlotConfig(image_size=128, hidden=64, encoder_layers=4, slot_dim=64, num_slots=11,
                           iters=3, mlp_dim=128, decoder_resolution=8)
        unet = UNetConfig(image_size=16, in_channels=4, channels=(128, 256, 256),
                          attention=(False, True, True), blocks=2, cond_dim=64, heads=4, dropout=0.0)
        return ae, slots, unet
    ae = SceneAEConfig(image_size=16, hidden=32, channels=(64,), latent_channels=4, beta=1e-4)
    slots = SlotConfig(image_size=16, hidden=32, encoder_layers=3, slot_dim=32, num_slots=4,
                       iters=3, mlp_dim=64, decoder_resolution=4)
    unet = UNetConfig(image_size=8, in_channels=4, channels=(32, 64), attention=(True, True),
                      cond_dim=32, heads=4, dropout=0.0)
    return ae, slots, unet


# ---------------------------------------------------------------------------- autoencoder

def load_scene_autoencoder(path: Path, want: SceneAEConfig | None = None) -> SceneAutoencoder:
    from .latent_train import read_kit_checkpoint

    state, config = read_kit_checkpoint(path, "scene autoencoder",
                                        "runs/diffusion/scene-ae-*/checkpoint.pt")
    try:
        ae = SceneAutoencoder(SceneAEConfig(**config))
        ae.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{path}: not a checkpoint of scene_autoencoder.py's SceneAutoencoder "
                         f"({type(exc).__name__})") from None
    if want is not None and (ae.config.image_size, ae.config.in_channels) != (want.image_size, want.in_channels):
        raise UsageError(f"{path}: an autoencoder of {ae.config.in_channels} x {ae.config.image_size} px "
                         f"images; these scenes are {want.in_channels} x {want.image_size} px")
    return ae.eval()


def kit_scene_autoencoder(args, dist, train_set, config: SceneAEConfig) -> tuple[SceneAutoencoder, Path]:
    """The kit's scene autoencoder: read from its folder, or trained there on first use."""
    data = "clevr-masks" if args.full else args.slot_data
    folder = RUNS_DIR / "diffusion" / f"scene-ae-{data}-{config.image_size}px-seed{args.seed}"
    checkpoint = folder / "checkpoint.pt"
    epochs = 20 if args.full else AE_EPOCHS
    if checkpoint.is_file() and load_checkpoint(checkpoint).get("epoch", 0) >= epochs:
        print(f"slots: the scene autoencoder from {checkpoint} (trained earlier; delete the folder "
              f"to retrain)")
        return load_scene_autoencoder(checkpoint, config), checkpoint
    ae = SceneAutoencoder(config)
    print(f"slots: training the scene autoencoder (latents {config.latent_channels} x "
          f"{config.latent_size} x {config.latent_size}) for {epochs} epochs into {folder}"
          + (" (continuing an interrupted run)" if checkpoint.is_file() else ""))

    def step(model, batch):
        return {k: v for k, v in model.loss(batch[0]).items()}
    run = RunConfig(folder, epochs, 32, 2e-3, weight_decay=0.0, resume=checkpoint.is_file(),
                    workers=4 if args.full else 0)                  # --full decodes PNG files
    fit(ae, train_set, step, run, dist, seed=args.seed, meta={"kind": "scene-autoencoder",
                                                               "config": config.__dict__})
    return ae.cpu().eval(), checkpoint


# ---------------------------------------------------------------------------- evaluation

@torch.no_grad()
def segmentation(model, images, ids, batch_size=100) -> dict[str, float]:
    pred, device = [], next(model.parameters()).device
    side = model.slot_config.image_size
    for i in range(0, len(images), batch_size):
        _, attn = model.encode(images[i:i + batch_size].to(device))
        pred.append(slot_masks(attn.float(), side, side, tuple(images.shape[-2:])).cpu())
    pred = torch.cat(pred).flatten(1)
    return {"val_ari": float(ari(ids.flatten(1), pred).mean()),
            "val_fg_ari": float(fg_ari(ids.flatten(1), pred).mean())}


def plot_history(history: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from vislab.plots import _save, integer_epochs

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3)
    axes[0].set_ylabel("train epsilon MSE (latents)")
    for key in ("val_ari", "val_fg_ari"):
        axes[1].plot(epochs, [h[key] for h in history], marker="o", ms=3, label=key)
    axes[1].set_ylabel("ARI")
    axes[1].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.grid(alpha=0.3)
    fig.suptitle("slot-conditioned latent diffusion decoder")
    return _save(fig, path)


# ------------------------------------------------------------------------------------ main

SLOT_PARTS = ("encoder.", "slot_attention.")


def load_slot_encoder(model: SlotDiffusion, path: Path) -> None:
    """Copy encoder.* and slot_attention.* from a Slot Attention lab checkpoint (the two labs
    share those names); the UNet starts fresh. A run of other sizes is refused in one line."""
    state = load_checkpoint(path)
    state = state.get("model", state)
    want = {k: v for k, v in model.state_dict().items() if k.startswith(SLOT_PARTS)}
    got = {k: v for k, v in state.items() if k.startswith(SLOT_PARTS)}
    wrong = [k for k in want if k not in got or got[k].shape != want[k].shape]
    if wrong:
        raise UsageError(f"--slot-encoder {path}: not a Slot Attention lab run of this model's "
                         f"sizes ({wrong[0]} {'missing' if wrong[0] not in got else 'differs'}); "
                         f"train one with `vislab train slots` (16 px, 4 slots, D = 32)")
    model.load_state_dict(got, strict=False)

def train_slots(args, dist, out: Path) -> dict:
    from vislab.metrics.fid import feature_extractor, fid

    from .train import grid, strip

    ae_config, slot_config, unet_config = configs(args.full)
    train_set, x_lib, x_val, id_val, x_test = datasets(args)
    if args.scene_autoencoder:
        autoencoder, source = load_scene_autoencoder(args.scene_autoencoder, ae_config), args.scene_autoencoder
    else:
        autoencoder, source = kit_scene_autoencoder(args, dist, train_set, ae_config)
    autoencoder = autoencoder.to(dist.device).eval().requires_grad_(False)
    scale = latent_scale(autoencoder, x_lib.to(dist.device))
    with torch.no_grad():
        z = autoencoder.encode(x_val[:100].to(dist.device))
        recon = ((autoencoder.decode(z).clamp(0, 1).cpu() - x_val[:100]) ** 2).mean().item()
    latent_shape = tuple(z.shape[1:])
    unet_config.in_channels, unet_config.image_size = latent_shape[0], latent_shape[1]
    print(f"slots: latents {' x '.join(map(str, latent_shape))}, scale factor {scale:.4f}, "
          f"the autoencoder's validation MSE {recon:.5f}")
    model = SlotDiffusion(slot_config, unet_config)
    if args.slot_encoder:
        load_slot_encoder(model, args.slot_encoder)
        print(f"slots: slot encoder and slot attention start from {args.slot_encoder}")
    schedule = make_schedule(args.T, args.kind)
    epochs = args.slot_epochs or (100 if args.full else 10)
    print(f"slots: a slot-conditioned latent diffusion decoder, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(train_set):,} "
          f"{'clevr-masks' if args.full else args.slot_data} scenes at {slot_config.image_size} px, "
          f"{epochs} epochs, lr {args.slot_lr:g}")

    def step(model, batch):
        return {"loss": slot_diffusion_loss(model, schedule, batch[0], autoencoder, scale)}

    def evaluate(model):
        return segmentation(model, x_val, id_val)
    run = RunConfig(out, epochs, 32, args.slot_lr, weight_decay=0.0, resume=args.resume,
                    workers=4 if args.full else 0)
    history = fit(model, train_set, step, run, dist, evaluate=evaluate, seed=args.seed,
                  meta={"slot_config": slot_config.__dict__, "unet_config": unet_config.__dict__,
                        "autoencoder": str(source), "scale": scale})
    if not dist.is_main:
        return {}
    model = model.to(dist.device).eval()
    paths = [plot_history(history, out / "curves.png")]
    side = slot_config.image_size
    n_show = 6
    images = x_val[:n_show]
    torch.manual_seed(args.seed)
    with torch.no_grad():
        slots, attn = model.encode(images.to(dist.device))
        masks = slot_masks(attn.float(), side, side, tuple(images.shape[-2:])).cpu()
    redrawn = decode_slots(model, autoencoder, scale, schedule, slots.cpu(), latent_shape)
    colours = torch.rand(slot_config.num_slots, 3, generator=torch.Generator().manual_seed(1))
    colours[:4] = torch.tensor([[1.0, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.4, 1.0], [1.0, 0.9, 0.2]])
    seg = colours[masks].permute(0, 3, 1, 2)                            # (6, 3, H, W)
    with torch.no_grad():
        ae_recon = autoencoder.decode(autoencoder.encode(images.to(dist.device))).clamp(0, 1).cpu()
    rows = torch.stack([images, ae_recon, seg, redrawn], 1) * 2 - 1    # (6, 4, 3, H, W)
    paths.append(strip(rows, ["scene", "autoencoder", "attention", "from slots"],
                       out / "masks.png", "validation scenes"))
    # compositional generation
    library = slot_library(model, x_lib)                                # (N K, D)
    labels = cluster_slots(library, slot_config.num_slots, seed=args.seed)
    n = args.slot_fid_samples
    new, picks = compose_slots(library, labels, n, torch.Generator().manual_seed(args.seed))
    composed = decode_slots(model, autoencoder, scale, schedule, new, latent_shape)
    real = x_test
    held = real[:n]
    own = slot_library(model, held).view(len(held), slot_config.num_slots, -1)
    redrawn_all = decode_slots(model, autoencoder, scale, schedule, own, latent_shape)
    paths.append(grid(composed[:40] * 2 - 1, out / "composed.png",
                      f"new scenes: one slot from each of {slot_config.num_slots} K-means clusters"))
    extractor = feature_extractor(x_lib, f"{'clevr-masks' if args.full else args.slot_data} training",
                                  cache=out / "fid_features.pt",
                                  seed=args.seed)
    scores = {"composed": fid(real, composed, extractor), "redrawn": fid(real, redrawn_all, extractor)}
    with torch.no_grad():
        scores["autoencoder"] = fid(real, autoencoder.decode(autoencoder.encode(
            held.to(dist.device))).clamp(0, 1).cpu(), extractor)
    last = history[-1]
    results = {"epochs": last["epoch"], "train_loss": last["train_loss"],
               "val_ari": last["val_ari"], "val_fg_ari": last["val_fg_ari"],
               "latent_shape": list(latent_shape), "scale": scale, "autoencoder": str(source),
               "autoencoder_val_mse": recon, "cluster_sizes": torch.bincount(labels).tolist(),
               "fid": {k: v.as_dict() for k, v in scores.items()}}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"slots: validation ARI {last['val_ari']:.3f}, foreground ARI {last['val_fg_ari']:.3f} "
          f"after {last['epoch']} epochs")
    for key, what in (("composed", "composed scenes (one slot per K-means cluster)"),
                      ("redrawn", "held-out scenes redrawn from their own slots"),
                      ("autoencoder", "the autoencoder's reconstructions (a floor)")):
        print(f"slots, {what}: {scores[key]}")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "results.json"]))
    return results
