"""Train the lab's models: `vislab train vae [options]` (see --help).

    vislab train vae                               # all three parts on the CPU, a few minutes
    vislab train vae --part vae --latent-dim 2     # the VAE on MNIST-5k with a 2-D latent scatter
    vislab train vae --part beta --beta 1 4 16     # beta-VAE on the dSprites subset, MIG per beta
    vislab train vae --part beta --beta 4 --capacity 25   # Burgess et al.'s capacity annealing
    vislab train vae --part cvae --condition concat       # conditional VAE, the wrong-label grid
    vislab train vae --full --device cuda          # full MNIST, the full dSprites grid, CIFAR-10

A run folder gets one subfolder per part (vae/, beta-<b>/, cvae/) with metrics.jsonl,
checkpoint.pt and curves.png, and the figures: reconstructions.png, samples.png,
latent_scatter.png (latent size 2); traversals.png per beta, kl_per_latent.png, mig.png;
wrong_labels.png. results.json holds the numbers.

Data. MNIST-5k pixels are binarised (> 127) for the Bernoulli likelihood. The dSprites subset
(CPU): orientation fixed at 0, every shape and scale, every other x and y position, drawn at
64 x 64 and average-pooled to 32 x 32 (then binarised), 4,608 images; a position class there
is a whole-pixel shift. --full: the whole 64 x 64 grid (737,280 images). CIFAR-10 (--full,
files present) uses the Gaussian likelihood on pixels in [0, 1].
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vislab import RUNS_DIR, plots
from vislab.data import cifar10, mnist, mnist5k
from vislab.errors import UsageError
from vislab.metrics.disentanglement import mig
from vislab.training import RunConfig, fit, positive_int, setup, teardown

from .losses import beta_vae_loss, bits_per_dim, capacity_at, kl_to_standard_normal, log_likelihood
from .model import ConditionalVAE, VAE, VAEConfig, decode_with_each_label
from .traverse import traverse

PARTS = ("vae", "beta", "cvae")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--part", choices=PARTS + ("all",), default="all")
    parser.add_argument("--batch-size", type=positive_int,
                        help="default 64 (32 for the beta part: more steps on 4,608 images)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--latent-dim", type=positive_int,
                        help="latent size D (default 16; 10 for the beta-VAE)")
    parser.add_argument("--likelihood", choices=["bernoulli", "gaussian"],
                        help="default: bernoulli on MNIST and dSprites, gaussian on CIFAR-10")
    parser.add_argument("--sigma", type=float, default=0.1,
                        help="the Gaussian likelihood's standard deviation")
    parser.add_argument("--beta", type=float, nargs="+", default=[1.0, 4.0, 16.0],
                        help="the beta values of the beta part (one model each)")
    parser.add_argument("--capacity", type=float, metavar="C_MAX",
                        help="capacity annealing: pull the KL towards C, 0 -> C_MAX nats")
    parser.add_argument("--condition", choices=["multiply", "concat"], default="multiply")
    parser.add_argument("--cifar", action="store_true",
                        help="the conditional VAE on CIFAR-10 (needs its files; see docs/data.md)")


# ------------------------------------------------------------------------------------ data

def mnist_sets(full: bool):
    load = mnist if full else mnist5k
    (xtr, ytr), (xte, yte) = load("train"), load("test")
    binary = [(x > 127).float() for x in (xtr, xte)]
    return TensorDataset(binary[0], ytr), TensorDataset(binary[1], yte)


def cifar_sets():
    (xtr, ytr), (xte, yte) = cifar10("train"), cifar10("test")
    return TensorDataset(xtr.float() / 255, ytr), TensorDataset(xte.float() / 255, yte)


def dsprites_subset() -> tuple[TensorDataset, np.ndarray]:
    """The CPU subset (see the module docstring): images (4608, 1, 32, 32) and their factor
    classes (shape, scale, posX, posY) with positions in 32-pixel units."""
    from vislab.data.dsprites import LATENTS_SIZES, indices_of, render

    grid = np.array([(0, s, c, 0, x, y) for s in range(LATENTS_SIZES[1])
                     for c in range(LATENTS_SIZES[2]) for x in range(0, 32, 2)
                     for y in range(0, 32, 2)])
    images = torch.from_numpy(render(indices_of(grid))).float()[:, None]   # (N, 1, 64, 64)
    images = (F.avg_pool2d(images, 2) >= 0.5).float()                       # (N, 1, 32, 32)
    factors = np.stack([grid[:, 1], grid[:, 2], grid[:, 4] // 2, grid[:, 5] // 2], axis=1)
    return TensorDataset(images, torch.from_numpy(factors)), factors


def dsprites_full():
    from vislab.data import dsprites_grid

    data = dsprites_grid()
    return data, data.latents_classes[:, 1:]   # colour is constant


FACTOR_NAMES = {"small": ["shape", "scale", "posX", "posY"],
                "full": ["shape", "scale", "orientation", "posX", "posY"]}


# ---------------------------------------------------------------------------------- configs

def mnist_config(args, latent_dim):
    if args.full:
        return VAEConfig(channels=(32, 64), hidden=512, latent_dim=latent_dim)
    return VAEConfig(channels=(16, 32), hidden=256, latent_dim=latent_dim)


def dsprites_config(args, latent_dim):
    if args.full:  # Burgess et al.'s size: four 4x4 stride-2 convs to 4x4, 256 hidden
        return VAEConfig(image_size=64, channels=(32, 32, 64, 64), hidden=256,
                         latent_dim=latent_dim)
    return VAEConfig(image_size=32, channels=(16, 32, 32), hidden=128, latent_dim=latent_dim)


# -------------------------------------------------------------------------------- training

def make_step(config: VAEConfig, conditional: bool, beta: float = 1.0,
              capacity: float | None = None, total_steps: int = 1):
    """The loss of one batch: beta_vae_loss (beta 1, no capacity: -ELBO), plus the ELBO and
    KL as metrics. With a capacity, C follows capacity_at over the training steps."""
    count = {"step": 0}

    def step(model, batch):
        x, y = batch
        decoded, mu, logvar = model(x, y) if conditional else model(x)
        rec = log_likelihood(x, decoded, config.likelihood, config.sigma)   # (B,)
        kl = kl_to_standard_normal(mu, logvar)                              # (B, D)
        c = None if capacity is None else capacity_at(count["step"], total_steps, capacity)
        count["step"] += 1
        loss = beta_vae_loss(rec, kl, beta, c)
        return {"loss": loss, "elbo": (rec - kl.sum(1)).mean().detach(),
                "kl": kl.sum(1).mean().detach()}
    return step


@torch.no_grad()
def evaluate_elbo(model, dataset, config, conditional, device, batch_size=500) -> dict:
    """The test ELBO (one sample of z per image), its reconstruction and KL terms, in nats per
    image, and bits per dimension."""
    model.eval()
    x_all, y_all = dataset.tensors
    rec_sum = kl_sum = 0.0
    for i in range(0, len(x_all), batch_size):
        x, y = x_all[i:i + batch_size].to(device), y_all[i:i + batch_size].to(device)
        decoded, mu, logvar = model(x, y) if conditional else model(x)
        rec_sum += log_likelihood(x, decoded.float(), config.likelihood, config.sigma).sum().item()
        kl_sum += kl_to_standard_normal(mu.float(), logvar.float()).sum().item()
    n = len(x_all)
    elbo = (rec_sum - kl_sum) / n
    dims = config.in_channels * config.image_size ** 2
    bin_width = 1.0 if config.likelihood == "bernoulli" else 1 / 256
    return {"test_elbo": elbo, "test_rec": rec_sum / n, "test_kl": kl_sum / n,
            "test_bpd": bits_per_dim(elbo, dims, bin_width).item()}


def batch_size(args, part: str) -> int:
    return args.batch_size or (32 if part == "beta" else 64)


def train_one(model, train_set, step, out, args, dist, epochs, evaluate=None, meta=None,
              part="vae"):
    run = RunConfig(out, epochs, batch_size(args, part), args.lr, weight_decay=0.0,
                    resume=args.resume)
    history = fit(model, train_set, step, run, dist, evaluate=evaluate, meta=meta, seed=args.seed)
    if dist.is_main:
        plots.curves([{k: v for k, v in h.items() if k.endswith("loss") or k == "epoch"}
                      for h in history], out / "curves.png", f"{out.name}: loss per epoch")
    return history


def to_images(decoded: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Pictures in [0, 1]: sigmoid of logits, or the Gaussian means clamped."""
    return torch.sigmoid(decoded) if likelihood == "bernoulli" else decoded.clamp(0, 1)


def part_vae(args, dist, out: Path) -> dict:
    train_set, test_set = mnist_sets(args.full)
    latent = args.latent_dim or 16
    config = mnist_config(args, latent)
    config.likelihood = args.likelihood or "bernoulli"
    config.sigma = args.sigma
    model = VAE(config)
    epochs = args.epochs or (50 if args.full else 8)
    print(f"part vae: {sum(p.numel() for p in model.parameters()):,} parameters, latent size "
          f"{latent}, {config.likelihood} likelihood, {len(train_set)} MNIST images, "
          f"{epochs} epochs")
    history = train_one(model, train_set, make_step(config, False), out / "vae", args, dist,
                        epochs, lambda m: evaluate_elbo(m, test_set, config, False, dist.device),
                        {"kind": "vae", "config": config.__dict__})
    model = model.cpu().eval()
    x, y = test_set.tensors
    first = [int((y == c).nonzero()[0]) for c in range(10)]   # one test image per class
    with torch.no_grad():
        recon = to_images(model.decode(model.encode(x[first])), config.likelihood)
        samples = to_images(model.sample(30), config.likelihood)
    figs = [image_grid(torch.stack([x[first], recon]), out / "vae" / "reconstructions.png",
                       "test images (top) and their reconstructions decode(encode(x))"),
            image_grid(samples.view(3, 10, *samples.shape[1:]), out / "vae" / "samples.png",
                       "samples: decode(z), z ~ N(0, I)")]
    if latent == 2:
        with torch.no_grad():
            codes = model.encode(x)
        figs.append(latent_scatter(codes, y, out / "vae" / "latent_scatter.png"))
    result = {k: v for k, v in history[-1].items() if k.startswith("test_")}
    print(f"vae: test ELBO {result['test_elbo']:.1f} nats per image, {result['test_bpd']:.4f} "
          f"bits per dim; wrote {', '.join(str(f) for f in figs)}")
    return result


def part_beta(args, dist, out: Path) -> dict:
    if args.full:
        train_set, factors = dsprites_full()
        names = FACTOR_NAMES["full"]
    else:
        train_set, factors = dsprites_subset()
        names = FACTOR_NAMES["small"]
    latent = args.latent_dim or 10
    config = dsprites_config(args, latent)
    config.likelihood = args.likelihood or "bernoulli"
    config.sigma = args.sigma
    epochs = args.epochs or (30 if args.full else 12)
    steps = epochs * math.ceil(len(train_set) / batch_size(args, "beta"))
    results = {}
    kl_rows, migs = {}, {}
    rng = np.random.default_rng(args.seed)
    eval_idx = np.sort(rng.choice(len(train_set), min(len(train_set), 10000), replace=False))
    for beta in args.beta:
        tag = f"beta-{beta:g}"
        torch.manual_seed(args.seed)
        model = VAE(config)
        annealing = "" if args.capacity is None else f", capacity 0 -> {args.capacity:g} nats"
        print(f"part beta: beta = {beta:g}{annealing}, latent size {latent}, "
              f"{len(train_set)} dSprites images, {epochs} epochs")
        history = train_one(model, train_set, make_step(config, False, beta, args.capacity, steps),
                            out / tag, args, dist, epochs,
                            meta={"kind": "beta", "config": config.__dict__, "beta": beta},
                            part="beta")
        model = model.cpu().eval()
        images = torch.stack([train_set[int(i)][0] for i in eval_idx])      # (N, 1, H, W)
        with torch.no_grad():
            mu, logvar = model.posterior(images)
            kl = kl_to_standard_normal(mu, logvar).mean(0)                 # (D,) nats
            rec = log_likelihood(images, model.decode(mu), config.likelihood, config.sigma).mean()
            score = mig(mu, factors[eval_idx])
            z = mu[0]
            order = kl.argsort(descending=True)
            grid = traverse(model.decode, z, torch.linspace(-2.5, 2.5, 9))  # (D, 9, 1, H, W)
        grid = to_images(grid[order], config.likelihood)
        image_grid(grid, out / tag / "traversals.png",
                   f"beta = {beta:g}: latent traversals from -2.5 to 2.5, one row per latent "
                   f"(sorted by KL)", [f"z{int(d)} KL {kl[d]:.2f}" for d in order])
        kl_rows[beta], migs[beta] = kl.numpy(), score["mig"]
        results[tag] = {"mig": score["mig"],
                        "mig_per_factor": dict(zip(names, score["per_factor"].tolist())),
                        "kl_per_latent": kl.tolist(), "kl": kl.sum().item(), "rec": rec.item(),
                        "train_loss": history[-1]["train_loss"]}
        print(f"beta {beta:g}: MIG {score['mig']:.3f}, KL {kl.sum():.2f} nats "
              f"({int((kl > 0.1).sum())} latents above 0.1 nats), reconstruction {rec:.1f} nats")
    bar_chart(kl_rows, out / "kl_per_latent.png")
    mig_chart(migs, out / "mig.png")
    return results


def part_cvae(args, dist, out: Path) -> dict:
    cifar = args.cifar
    train_set, test_set = cifar_sets() if cifar else mnist_sets(args.full)
    latent = args.latent_dim or (64 if cifar else 16)
    if cifar:
        config = VAEConfig(image_size=32, in_channels=3, channels=(32, 64, 128), hidden=512,
                           latent_dim=latent, likelihood=args.likelihood or "gaussian",
                           sigma=args.sigma)
    else:
        config = mnist_config(args, latent)
        config.likelihood = args.likelihood or "bernoulli"
        config.sigma = args.sigma
    torch.manual_seed(args.seed)
    model = ConditionalVAE(config, num_classes=10, condition=args.condition)
    epochs = args.epochs or (50 if args.full else 8)
    print(f"part cvae: condition {args.condition}, latent size {latent}, "
          f"{'CIFAR-10' if cifar else 'MNIST'} ({len(train_set)} images), {epochs} epochs")
    history = train_one(model, train_set, make_step(config, True), out / "cvae", args, dist,
                        epochs, lambda m: evaluate_elbo(m, test_set, config, True, dist.device),
                        {"kind": "cvae", "config": config.__dict__, "condition": args.condition})
    model = model.cpu().eval()
    x, y = test_set.tensors
    first = [int((y == c).nonzero()[0]) for c in range(10)]
    with torch.no_grad():
        grid = to_images(decode_with_each_label(model, x[first], y[first], 10), config.likelihood)
    grid = torch.cat([x[first][:, None], grid], dim=1)          # the input in column 0
    fig = image_grid(grid, out / "cvae" / "wrong_labels.png",
                     "each test image (left) encoded with its label, decoded with labels 0-9",
                     [f"label {int(y[i])}" for i in first])
    result = {k: v for k, v in history[-1].items() if k.startswith("test_")}
    print(f"cvae: test ELBO {result['test_elbo']:.1f} nats per image, {result['test_bpd']:.4f} "
          f"bits per dim; wrote {fig}")
    return result


def main(args: argparse.Namespace) -> int:
    if args.cifar and args.part not in ("cvae", "all"):
        raise UsageError("--cifar is for the conditional VAE: use --part cvae (or all)")
    if args.sigma <= 0:
        raise UsageError(f"--sigma must be positive, got {args.sigma}")
    if args.capacity is not None and args.capacity < 0:
        raise UsageError(f"--capacity must be 0 or more nats, got {args.capacity}")
    if any(b < 0 for b in args.beta):
        raise UsageError(f"--beta values must be 0 or more, got {args.beta}")
    dist = setup(args.device, args.seed)
    if dist.distributed:
        raise UsageError("the VAE lab trains several small models in turn: run it without torchrun")
    out = Path(args.out or default_out(args))
    parts = PARTS if args.part == "all" else (args.part,)
    results = {}
    for part in parts:
        torch.manual_seed(args.seed)
        run_part = {"vae": part_vae, "beta": part_beta, "cvae": part_cvae}[part]
        results[part] = run_part(args, dist, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out / 'results.json'}")
    teardown(dist)
    return 0


def default_out(args) -> Path:
    from datetime import datetime
    return RUNS_DIR / "vae" / f"{args.part}-{datetime.now():%Y%m%d-%H%M%S}"


# --------------------------------------------------------------------------------- figures

def image_grid(images: torch.Tensor, path: Path, title: str = "",
               row_labels: list[str] | None = None) -> Path:
    """A grid of pictures (R, K, C, H, W) in [0, 1], one row per first index, drawn as one
    image (fast even for hundreds of pictures)."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    R, K, C, H, W = images.shape
    grid = make_grid(images.reshape(R * K, C, H, W).clamp(0, 1), nrow=K, padding=2, pad_value=0.5)
    fig, ax = plt.subplots(figsize=(0.7 * K + (1.3 if row_labels else 0.2), 0.7 * R + 0.5))
    ax.imshow(grid.permute(1, 2, 0).numpy(), vmin=0, vmax=1)
    ax.set_xticks([])
    if row_labels:
        ax.set_yticks([2 + r * (H + 2) + H / 2 for r in range(R)], row_labels, fontsize=7)
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    return plots._save(fig, path)


def latent_scatter(codes: torch.Tensor, labels: torch.Tensor, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=4)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("z1 (posterior mean)")
    ax.set_ylabel("z2")
    ax.set_title("test images in the 2-D latent space")
    return plots._save(fig, path)


def bar_chart(kl_rows: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    width = 0.8 / len(kl_rows)
    for i, (beta, kl) in enumerate(kl_rows.items()):
        ax.bar(np.arange(len(kl)) + i * width, np.sort(kl)[::-1], width, label=f"beta {beta:g}")
    ax.set_xlabel("latent (sorted by KL)")
    ax.set_ylabel("KL (nats, mean over images)")
    ax.legend()
    ax.set_title("which latents are used")
    return plots._save(fig, path)


def mig_chart(migs: dict, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.bar([f"{b:g}" for b in migs], list(migs.values()))
    ax.set_xlabel("beta")
    ax.set_ylabel("MIG")
    ax.set_title("disentanglement (MIG) per beta")
    return plots._save(fig, path)
