"""Train the lab's models: `vislab train diffusion [options]` (see --help).

    vislab train diffusion                       # DDPM on MNIST-5k, then latent: ~4 CPU minutes
    vislab train diffusion --guidance 0 1 3      # the guidance weights of the sample grids
    vislab train diffusion --sample-steps 1000   # sample with all T steps (slow on a CPU)
    vislab train diffusion --kind cosine         # the cosine schedule
    vislab train diffusion --full --device cuda  # CIFAR-10 (files needed, see docs/data.md)
    vislab train diffusion --part latent         # latent diffusion on the VAE lab's codes only
    vislab train diffusion --part latent --vae runs/vae/<run>/vae/checkpoint.pt   # your own VAE
    vislab train diffusion --part slots          # the slot-conditioned decoder, ARI per epoch
    vislab train diffusion --part slots --slot-encoder runs/slots/<run>/checkpoint.pt
                                                 # its slot encoder warm-started from the slots lab

One model serves the unconditional and the conditional samples: a UNet conditioned on the
class label through cross-attention, trained with label dropout (--p-uncond), so that the null
label gives unconditional samples and classifier-free guidance combines the two.

The run folder gets metrics.jsonl, checkpoint.pt, curves.png, samples_epoch<N>.png (one per
class, every --samples-every epochs), forward.png (x_t for a few t), chain.png (the sampling
chain of one digit), samples_unconditional.png, samples_w<w>.png (one row per class) and
results.json (test loss, FID with the feature network named, sampling speed).

Latent diffusion (--part latent, in the default run after the DDPM): the VAE lab's VAE (given:
vae_model.py) encodes MNIST-5k to 16-D codes; a LatentDenoiser learns DDPM on the standardised
codes; samples (all T = 1000 steps: an MLP on 16 numbers is cheap) are decoded by the VAE. The
VAE is trained by the kit's reference code on first use and kept in
runs/diffusion/vae-mnist5k-d16-seed<seed>/ (later runs reuse it; an existing folder is never
overwritten), or read from --vae. Its subfolder latent/ gets latent_samples_w<w>.png,
vae_prior_samples.png (decoding z ~ N(0, I), the VAE's own sampler, for comparison) and
results.json with the FIDs of both.

Sampling: T = 1000 steps are trained; by default the samples use 50 of them (100 with --full;
respace in ddpm.py, Nichol & Dhariwal's respacing of the same trained model); --sample-steps
1000 uses all.

The defaults fit the default run into about 4 minutes of one CPU thread (docs/labs/diffusion.md,
"The default run"): 3 epochs of batch 16 without dropout (750 steps, about 45% of the time),
the sampling (50 steps; one model call per step at w = 0 and for the null label, two with
guidance) and the FIDs' feature networks most of the rest, the VAE (first use) and 20 epochs of
the latent denoiser under a minute together.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from vislab import RUNS_DIR
from vislab.errors import UsageError
from vislab.training import RunConfig, fit, positive_int, setup, teardown

from .ddpm import (diffusion_loss, drop_labels, guided_model, make_schedule, q_sample, respace,
                   respaced_model, sample)
from .unet import ClassConditionalUNet, UNetConfig

DDPM_TASKS = ("diffusion.schedule", "diffusion.q_sample", "diffusion.loss", "diffusion.p_sample",
              "diffusion.sample", "diffusion.time_embedding", "diffusion.resblock",
              "diffusion.cross_attention", "diffusion.guidance")
LATENT_TASKS = ("diffusion.schedule", "diffusion.q_sample", "diffusion.loss", "diffusion.p_sample",
                "diffusion.sample", "diffusion.time_embedding", "diffusion.guidance",
                "diffusion.latent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--part", choices=["ddpm", "latent", "slots", "all"], default="all",
                        help="all: ddpm then latent (the slot decoder is its own run: --part slots)")
    parser.add_argument("--batch-size", type=positive_int, default=16,
                        help="default 16: on MNIST-5k more, smaller steps beat fewer large ones")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--T", type=positive_int, default=1000, help="diffusion steps")
    parser.add_argument("--kind", choices=["linear", "cosine"], default="linear",
                        help="the variance schedule")
    parser.add_argument("--sample-steps", type=positive_int,
                        help="steps of the sampler (respaced from T; T = every step); default 50, "
                             "100 with --full")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 2.0],
                        help="guidance weights w of the class-conditional grids")
    parser.add_argument("--p-uncond", type=float, default=0.2,
                        help="label dropout: the probability of training a step unconditionally")
    parser.add_argument("--samples-every", type=positive_int, default=2,
                        help="a grid of samples every N epochs")
    parser.add_argument("--fid-samples", type=positive_int, default=100,
                        help="generated images per FID (per guidance weight)")
    parser.add_argument("--vae", type=Path, metavar="CHECKPOINT",
                        help="latent part: a VAE lab run's vae/checkpoint.pt (default: the kit's, "
                             "trained on first use)")
    parser.add_argument("--latent-epochs", type=positive_int, default=20,
                        help="epochs of the latent denoiser")
    parser.add_argument("--slot-epochs", type=positive_int,
                        help="epochs of the slot-conditioned decoder (--part slots; default 10, "
                             "100 with --full)")
    parser.add_argument("--slot-data", choices=["tetrominoes", "multi-dsprites"],
                        default="tetrominoes", help="the generated scenes of --part slots "
                                                    "(--full: CLEVR-with-masks)")
    parser.add_argument("--slot-lr", type=float, default=1e-3,
                        help="learning rate of the slot decoder (the Slot Attention lab's)")
    parser.add_argument("--scene-autoencoder", type=Path, metavar="CHECKPOINT",
                        help="--part slots: a scene autoencoder's checkpoint.pt (default: the "
                             "kit's, trained on first use into runs/diffusion/scene-ae-*)")
    parser.add_argument("--slot-encoder", type=Path, metavar="CHECKPOINT",
                        help="--part slots: start the slot encoder and slot attention from a Slot "
                             "Attention lab run's checkpoint.pt (same sizes; still trained end to end)")
    parser.add_argument("--slot-fid-samples", type=positive_int, default=200,
                        help="--part slots: composed (and redrawn) scenes per FID")


SLOT_TASKS = ("diffusion.schedule", "diffusion.q_sample", "diffusion.loss", "diffusion.p_sample",
              "diffusion.sample", "diffusion.time_embedding", "diffusion.resblock",
              "diffusion.cross_attention", "diffusion.slot_decoder")


def required_tasks(args) -> list[str]:
    return sorted(set(DDPM_TASKS if args.part in ("ddpm", "all") else ())
                  | set(LATENT_TASKS if args.part in ("latent", "all") else ())
                  | set(SLOT_TASKS if args.part == "slots" else ()))


# ------------------------------------------------------------------------------------ data

def datasets(full: bool):
    """Images in [-1, 1] (N, C, H, W) and labels: MNIST-5k (CPU) or CIFAR-10 (--full)."""
    from vislab.data import cifar10, mnist5k

    if full:
        (xtr, ytr), (xte, yte) = cifar10("train"), cifar10("test")
        scale = lambda x: x.float() / 127.5 - 1
    else:
        (xtr, ytr), (xte, yte) = mnist5k("train"), mnist5k("test")
        scale = lambda x: (x.float() / 127.5 - 1)[:, None] if x.ndim == 3 else x.float() / 127.5 - 1
    return TensorDataset(scale(xtr), ytr.long()), TensorDataset(scale(xte), yte.long())


def config_for(full: bool, channels: int) -> UNetConfig:
    if full:  # closer to DDPM's CIFAR-10 UNet (128 wide, 4 levels), smaller: see the docs
        return UNetConfig(image_size=32, in_channels=channels, channels=(64, 128, 128, 128),
                          attention=(False, True, False, False), blocks=2, cond_dim=128,
                          heads=4, dropout=0.1, groups=32)
    return UNetConfig(in_channels=channels, cond_dim=32, dropout=0.0)   # 3 epochs: no dropout


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) / 2).clamp(0, 1)


# --------------------------------------------------------------------------------- figures

def grid(images: torch.Tensor, path: Path, title: str, columns: int = 10,
         row_labels: list[str] | None = None) -> Path:
    from vislab.plots import _save
    import matplotlib.pyplot as plt

    n = len(images)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            img = to_pixels(images[i].float()).permute(1, 2, 0).squeeze(-1)
            ax.imshow(img.numpy(), cmap="gray", vmin=0, vmax=1)
        if row_labels and i % columns == 0 and i // columns < len(row_labels):
            ax.text(-0.3, 0.5, row_labels[i // columns], transform=ax.transAxes, ha="right",
                    va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def strip(images: torch.Tensor, labels: list[str], path: Path, title: str) -> Path:
    from vislab.plots import _save
    import matplotlib.pyplot as plt

    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.0, rows * 1.0 + 0.4), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            ax.imshow(to_pixels(images[r, c].float()).permute(1, 2, 0).squeeze(-1).numpy(),
                      cmap="gray", vmin=0, vmax=1)
            if r == 0:
                ax.set_title(labels[c], fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_curves(history: list[dict], path: Path) -> Path:
    from vislab.plots import _save, integer_epochs
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h["epoch"] for h in history]
    for key in ("train_loss", "test_loss"):
        ax.plot(epochs, [h[key] for h in history], marker="o", ms=3, label=key)
    ax.set_xlabel("epoch")
    integer_epochs(ax)
    ax.set_ylabel("epsilon MSE")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.suptitle("DDPM loss per epoch (test: fixed t and noise)")
    return _save(fig, path)


# -------------------------------------------------------------------------------- sampling

def sampler(model, schedule: dict, steps: int):
    """(schedule, model) for `steps` sampling steps (respaced when fewer than T)."""
    if steps >= len(schedule["betas"]):
        return schedule, model
    new, timesteps = respace(schedule, steps)
    return new, respaced_model(model, timesteps)


@torch.no_grad()
def generate(model, schedule, steps, labels, w, shape, device, callback=None):
    """Samples for `labels` with guidance weight w. At w = 0 (and for the null label) the
    guided eps is (1 + 0) eps_c - 0 eps_u = eps_c exactly: one model call per step, not two."""
    guided = model if w == 0 else guided_model(model, model.null_label, w)
    sched, m = sampler(guided, schedule, steps)
    return sample(m, sched, (len(labels), *shape), labels.to(device), clip=True, device=device,
                  callback=callback).cpu()


@torch.no_grad()
def test_loss(model, schedule, test_set, device, n=500) -> float:
    """The epsilon MSE on the first n test images with fixed t and noise (comparable across
    epochs)."""
    g = torch.Generator().manual_seed(0)
    x, y = test_set.tensors[0][:n], test_set.tensors[1][:n]
    t = torch.randint(0, len(schedule["betas"]), (len(x),), generator=g)
    noise = torch.randn(x.shape, generator=g)
    total = 0.0
    for i in range(0, len(x), 100):
        sl = slice(i, i + 100)
        x_t = q_sample(schedule, x[sl], t[sl], noise[sl]).to(device)
        eps = model(x_t, t[sl].to(device), y[sl].to(device)).float().cpu()
        total += ((eps - noise[sl]) ** 2).sum().item()
    return total / noise.numel()


# ------------------------------------------------------------------------------------ main

def main(args: argparse.Namespace) -> int:
    if not 0 <= args.p_uncond < 1:
        raise UsageError(f"--p-uncond must be from 0 up to (not including) 1, got {args.p_uncond:g}")
    if args.slot_lr <= 0:
        raise UsageError(f"--slot-lr must be above 0, got {args.slot_lr:g}")
    if args.sample_steps is None:
        args.sample_steps = min(100 if args.full else 50, args.T)
    if args.sample_steps > args.T:
        raise UsageError(f"--sample-steps {args.sample_steps} is more than --T {args.T}: "
                         f"the sampler keeps at most the T trained steps")
    if args.scene_autoencoder is not None and not args.scene_autoencoder.is_file():
        raise UsageError(f"--scene-autoencoder {args.scene_autoencoder}: no such file (a "
                         f"runs/diffusion/scene-ae-*/checkpoint.pt)")
    if args.slot_encoder is not None and not args.slot_encoder.is_file():
        raise UsageError(f"--slot-encoder {args.slot_encoder}: no such file (a Slot Attention lab "
                         f"run's checkpoint.pt: runs/slots/<run>/checkpoint.pt)")
    if args.vae is not None and not args.vae.is_file():
        raise UsageError(f"--vae {args.vae}: no such file (a VAE lab run's vae/checkpoint.pt)")
    dist = setup(args.device, args.seed)
    out = Path(args.out or RUNS_DIR / "diffusion" / f"run-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.part in ("ddpm", "all"):
        train_ddpm(args, dist, out / "ddpm")
    if args.part in ("latent", "all") and dist.is_main:
        from .latent_train import train_latent
        train_latent(args, dist, out / "latent")
    if args.part == "slots":
        from .slots_train import train_slots
        train_slots(args, dist, out / "slots")
    teardown(dist)
    return 0


def train_ddpm(args, dist, out: Path) -> None:
    train_set, test_set = datasets(args.full)
    shape = tuple(train_set.tensors[0].shape[1:])
    config = config_for(args.full, shape[0])
    model = ClassConditionalUNet(config, num_classes=10)
    schedule = make_schedule(args.T, args.kind)
    epochs = args.epochs or (100 if args.full else 3)
    null = model.null_label
    print(f"DDPM: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(train_set)} images {shape}, T = {args.T} ({args.kind}), {epochs} epochs, "
          f"label dropout {args.p_uncond:g}, sampling with {args.sample_steps} steps")

    def step(model, batch):
        x, y = batch
        return {"loss": diffusion_loss(model, schedule, x, drop_labels(y, args.p_uncond, null))}

    def evaluate(model):
        row = {"test_loss": test_loss(model, schedule, test_set, dist.device)}
        epoch = len(history_so_far) + 1
        history_so_far.append(epoch)
        if epoch % args.samples_every == 0 or epoch == epochs:
            with torch.random.fork_rng():   # the training's random stream does not see the grid
                torch.manual_seed(args.seed + epoch)
                labels = torch.arange(10)
                imgs = generate(model, schedule, args.sample_steps, labels, args.guidance[-1],
                                shape, dist.device)
            grid(imgs, out / f"samples_epoch{epoch}.png",
                 f"epoch {epoch}: classes 0-9, w = {args.guidance[-1]:g}")
        return row

    metrics = out / "metrics.jsonl"   # a resumed run counts its epochs on from the file's
    history_so_far: list[int] = ([0] * len(metrics.read_text().splitlines())
                                 if args.resume and metrics.is_file() else [])
    run = RunConfig(out, epochs, args.batch_size, args.lr, weight_decay=0.0, resume=args.resume)
    history = fit(model, train_set, step, run, dist, evaluate=evaluate,
                  meta={"config": asdict(config), "T": args.T, "kind": args.kind}, seed=args.seed)
    if dist.is_main:
        report(model.eval(), history, schedule, train_set, test_set, shape, args, out, dist.device)


def report(model, history, schedule, train_set, test_set, shape, args, out, device) -> None:
    from vislab.metrics.fid import feature_extractor, fid

    paths = [plot_curves(history, out / "curves.png")]
    x = test_set.tensors[0][:3]
    ts = sorted({t for t in (0, 50, 100, 250, 500, 750) if t < args.T} | {args.T - 1})
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    forward = torch.stack([q_sample(schedule, x, torch.full((3,), t), noise) for t in ts], 1)
    paths.append(strip(forward, [f"t = {t}" for t in ts], out / "forward.png",
                       "the forward process q(x_t | x_0)"))
    chain = []
    torch.manual_seed(args.seed)
    keep = set(torch.linspace(0, args.sample_steps - 1, 8).round().long().tolist())
    generate(model, schedule, args.sample_steps, torch.tensor([3]), args.guidance[-1], shape,
             device, callback=lambda t, x: chain.append((t, x.cpu())) if t in keep else None)
    chain.sort(key=lambda c: -c[0])
    paths.append(strip(torch.stack([c[1][0] for c in chain])[None],
                       [f"step {c[0]}" for c in chain], out / "chain.png",
                       f"sampling a 3, {args.sample_steps} steps (x after each step shown)"))
    results = {"epochs": history[-1]["epoch"], "test_loss": history[-1]["test_loss"],
               "T": args.T, "kind": args.kind, "sample_steps": args.sample_steps, "samples": {}}
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    uncond = generate(model, schedule, args.sample_steps, torch.full((40,), model.null_label), 0.0,
                      shape, device)
    seconds = time.perf_counter() - start
    results["images_per_second_unguided"] = round(40 / seconds, 3)
    paths.append(grid(uncond, out / "samples_unconditional.png",
                      f"unconditional (null label), {args.sample_steps} steps"))
    real = to_pixels(test_set.tensors[0][:1000])
    rgb = lambda im: im.expand(-1, 3, -1, -1) if im.shape[1] == 1 else im
    train_images = rgb(to_pixels(train_set.tensors[0][:2000]))
    extractor = feature_extractor(train_images, "MNIST-5k" if not args.full else "CIFAR-10",
                                  cache=out / "fid_features.pt", seed=args.seed)
    per_class = max(1, args.fid_samples // 10)
    for w in args.guidance:
        torch.manual_seed(args.seed)
        labels = torch.arange(10).repeat_interleave(per_class)
        imgs = generate(model, schedule, args.sample_steps, labels, w, shape, device)
        order = torch.arange(len(labels)).view(10, per_class)[:, :min(per_class, 10)].flatten()
        paths.append(grid(imgs[order], out / f"samples_w{w:g}.png",
                          f"class-conditional, guidance w = {w:g} (one row per class)",
                          columns=min(per_class, 10), row_labels=[str(c) for c in range(10)]))
        score = fid(rgb(real), rgb(to_pixels(imgs)), extractor)
        results["samples"][f"w={w:g}"] = score.as_dict()
        print(f"w = {w:g}: {score}")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"test epsilon MSE {results['test_loss']:.4f} after {results['epochs']} epochs; "
          f"{results['images_per_second_unguided']:.2f} images/s with {args.sample_steps} steps")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "results.json"]))
