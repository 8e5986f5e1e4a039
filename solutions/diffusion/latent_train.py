"""The latent part of `vislab train diffusion` (--part latent, or after the DDPM by default).

1. The autoencoder: the VAE lab's VAE (vae_model.py, given) with its default MNIST config,
   latent size 16, trained with its ELBO (losses.py, given) for 8 epochs on binarised MNIST-5k.
   Trained once and kept in runs/diffusion/vae-mnist5k-d16-seed<seed>/checkpoint.pt, which later
   runs read (never overwrite); or --vae names a VAE lab run's vae/checkpoint.pt.
2. The codes: to_latent (standardised posterior means) of the 4,000 training images.
3. DDPM on the codes with a LatentDenoiser (your diffusion_loss, label dropout for guidance),
   --latent-epochs (20) of batch 64.
4. Samples with every one of the T = 1000 steps, decoded by from_latent; FID against the test
   images, beside the VAE's own sampler (decode z ~ N(0, I)).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from vislab import RUNS_DIR
from vislab.errors import UsageError
from vislab.training import RunConfig, fit, load_checkpoint

from .ddpm import diffusion_loss, drop_labels, guided_model, make_schedule, sample
from .latent import LatentDenoiser, from_latent, latent_stats, to_latent
from .losses import elbo
from .vae_model import VAE, VAEConfig

VAE_EPOCHS = 8


def mnist_binary():
    from vislab.data import mnist5k

    (xtr, ytr), (xte, yte) = mnist5k("train"), mnist5k("test")
    fix = lambda x: (x[:, None] if x.ndim == 3 else x)  # noqa: E731
    return (fix(xtr) > 127).float(), ytr.long(), (fix(xte) > 127).float(), yte.long()


def read_kit_checkpoint(path: Path, what: str, hint: str) -> tuple[dict, dict]:
    """A kit run's checkpoint and its meta config (lists back to tuples), or one line saying
    what the file is not."""
    state = load_checkpoint(path)
    config = (state.get("meta") or {}).get("config") if isinstance(state, dict) else None
    if "model" not in state or not isinstance(config, dict):
        raise UsageError(f"{path} is not a {what}'s checkpoint (no model and meta config): use {hint}")
    return state, {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}


def load_vae(path: Path) -> VAE:
    state, config = read_kit_checkpoint(path, "VAE run", "a VAE lab run's vae/checkpoint.pt")
    try:
        vae = VAE(VAEConfig(**config))
        vae.load_state_dict(state["model"])
    except (TypeError, RuntimeError) as exc:
        raise UsageError(f"{path}: not a checkpoint of the VAE lab's VAE ({type(exc).__name__})") from None
    if vae.config.image_size != 28 or vae.config.in_channels != 1:
        raise UsageError(f"{path}: a VAE of {vae.config.in_channels} x {vae.config.image_size} px "
                         f"images; the latent part needs an MNIST VAE (1 x 28)")
    return vae.eval()


def kit_vae(args, dist, x_train, y_train) -> tuple[VAE, Path]:
    """The kit's VAE: read from its folder, or trained there on first use."""
    folder = RUNS_DIR / "diffusion" / f"vae-mnist5k-d16-seed{args.seed}"
    checkpoint = folder / "checkpoint.pt"
    done = checkpoint.is_file() and load_checkpoint(checkpoint).get("epoch", 0) >= VAE_EPOCHS
    if done:
        print(f"latent: the VAE from {checkpoint} (trained earlier; delete the folder to retrain)")
        return load_vae(checkpoint), checkpoint
    config = VAEConfig(channels=(16, 32), hidden=256, latent_dim=16)   # the VAE lab's default
    vae = VAE(config)
    print(f"latent: training the VAE lab's VAE (latent 16) for {VAE_EPOCHS} epochs into {folder}"
          + (" (continuing an interrupted run)" if checkpoint.is_file() else ""))

    def step(model, batch):
        x, _ = batch
        decoded, mu, logvar = model(x)
        return {"loss": -elbo(x, decoded, mu, logvar)}
    run = RunConfig(folder, VAE_EPOCHS, 64, 2e-3, weight_decay=0.0, resume=checkpoint.is_file())
    fit(vae, TensorDataset(x_train, y_train), step, run, dist, seed=args.seed,
        meta={"kind": "vae", "config": config.__dict__})
    return vae.cpu().eval(), checkpoint


def train_latent(args, dist, out: Path) -> dict:
    from vislab.metrics.fid import feature_extractor, fid

    from .train import grid

    x_train, y_train, x_test, y_test = mnist_binary()
    vae, source = (load_vae(args.vae), args.vae) if args.vae else kit_vae(args, dist, x_train, y_train)
    vae = vae.cpu().eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    mean, std = latent_stats(vae, x_train)
    with torch.no_grad():
        z_train = to_latent(vae, x_train, mean, std)                  # (N, D)
    D = z_train.shape[1]
    schedule = make_schedule(args.T, args.kind)
    model = LatentDenoiser(D, hidden=256, blocks=3)
    null = model.null_label
    print(f"latent: DDPM on {len(z_train)} standardised {D}-D codes, LatentDenoiser "
          f"{sum(p.numel() for p in model.parameters()):,} parameters, {args.latent_epochs} epochs")

    def step(model, batch):
        z, y = batch
        return {"loss": diffusion_loss(model, schedule, z, drop_labels(y, args.p_uncond, null))}
    run = RunConfig(out, args.latent_epochs, 64, 1e-3, weight_decay=0.0, resume=args.resume)
    history = fit(model, TensorDataset(z_train, y_train), step, run, dist, seed=args.seed,
                  meta={"D": D, "hidden": 256, "blocks": 3, "vae": str(source)})
    model = model.cpu().eval()
    pixels = lambda im: im.expand(-1, 3, -1, -1)  # noqa: E731
    extractor = feature_extractor(pixels(x_train[:2000]), "MNIST-5k (binarised)",
                                  cache=out / "fid_features.pt", seed=args.seed)
    real = pixels(x_test)
    n = max(10, args.fid_samples // 10 * 10)
    labels = torch.arange(10).repeat_interleave(n // 10)
    results = {"vae": str(source), "epochs": args.latent_epochs, "D": D, "T": args.T,
               "train_loss": history[-1]["train_loss"], "samples": {}}
    paths = []
    for w in args.guidance:
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        with torch.no_grad():
            z = sample(guided_model(model, null, w), schedule, (len(labels), D), labels.clone(),
                       clip=False)
            images = from_latent(vae, z, mean, std)                  # (n, 1, 28, 28)
        seconds = time.perf_counter() - start
        order = torch.arange(len(labels)).view(10, -1)[:, :10].flatten()
        paths.append(grid(images[order] * 2 - 1, out / f"latent_samples_w{w:g}.png",
                          f"latent diffusion, T = {args.T} steps, guidance w = {w:g} (rows: classes)",
                          columns=min(10, n // 10), row_labels=[str(c) for c in range(10)]))
        score = fid(real, pixels(images), extractor)
        results["samples"][f"w={w:g}"] = score.as_dict() | {"images_per_second": round(len(labels) / seconds, 2)}
        print(f"latent, w = {w:g}: {score}; {len(labels) / seconds:.1f} images/s with {args.T} steps")
    torch.manual_seed(args.seed)
    with torch.no_grad():
        prior = torch.sigmoid(vae.decode(torch.randn(len(labels), vae.config.latent_dim)))
    paths.append(grid(prior[:40] * 2 - 1, out / "vae_prior_samples.png",
                      "the VAE's own samples: decode(z ~ N(0, I))"))
    score = fid(real, pixels(prior), extractor)
    results["vae_prior_samples"] = score.as_dict()
    print(f"the VAE's prior samples: {score}")
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "results.json"]))
    return results
