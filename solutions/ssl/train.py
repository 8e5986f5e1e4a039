"""Pretrain and compare self-supervised encoders: `vislab train ssl [options]` (see --help).

    vislab train ssl                          # scratch, MAE, InfoNCE, combined on MNIST-5k, then
                                              # the video MAE on Moving MNIST (CPU, minutes)
    vislab train ssl --encoders mae,scratch   # some of the encoders only
    vislab train ssl --no-video               # the image encoders only
    vislab train ssl --encoders none          # the video MAE only
    vislab train ssl --full --device cuda     # full MNIST, longer runs (GPU)

Each encoder is pretrained (except scratch) on all training images without labels, then
fine-tuned twice on the same labelled budget (--labels-per-class): the whole network
("finetune") and the head alone ("linear", a linear probe). The run folder gets, per encoder,
pretrain/ and finetune/ and linear/ run folders (metrics.jsonl, checkpoint.pt, curves.png),
reconstructions.png for the MAE encoders, results.md (the comparison table) and video/ with
video_frames.png.
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from vislab import RUNS_DIR, plots
from vislab.data import ImageDataset, mnist, mnist5k, select_classes
from vislab.data.mnist import MEAN, STD
from vislab.data.moving_mnist import MovingMNIST
from vislab.errors import UsageError
from vislab.training import RunConfig, fit, positive_int, setup, teardown

from .contrastive import ProjectionHead, augment, combined_loss, info_nce
from .finetune import Classifier, trainable_parameters
from .mae import MAEConfig, MAEDecoder, MAEEncoder, mae_loss, unpatchify
from .video import VideoMAE, VideoMAEConfig, video_patchify, video_unpatchify

ENCODERS = ("scratch", "mae", "infonce", "combined")


def encoder_list(text: str) -> list[str]:
    if text == "none":
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    wrong = [n for n in names if n not in ENCODERS]
    if wrong or not names:
        raise argparse.ArgumentTypeError(f"--encoders takes a comma list of {', '.join(ENCODERS)} "
                                         f"(or none), got {text!r}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoders", type=encoder_list, default=list(ENCODERS),
                        help="which encoders to compare, e.g. mae,scratch (default: all four)")
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--nce-weight", type=float, default=0.2,
                        help="the combined loss: (1 - w) MAE + w InfoNCE")
    parser.add_argument("--finetune-epochs", type=positive_int, default=None,
                        help="epochs of each fine-tuning (default 15, or 30 with --full)")
    parser.add_argument("--probe-lr", type=float, default=1e-2,
                        help="learning rate of the linear probe (the head alone learns faster)")
    parser.add_argument("--labels-per-class", type=positive_int, default=100,
                        help="the labelled budget: this many training images per digit")
    parser.add_argument("--no-video", action="store_true", help="skip the video MAE")
    parser.add_argument("--video-clips", type=positive_int, default=2000)
    parser.add_argument("--video-epochs", type=positive_int, default=None,
                        help="video MAE epochs (default 10, or 50 with --full)")


def check_args(args) -> None:
    if not args.encoders and args.no_video:
        raise UsageError("--encoders none with --no-video leaves nothing to train: name an "
                         "encoder or drop --no-video")
    if not 0 < args.mask_ratio < 1:
        raise UsageError(f"--mask-ratio must be between 0 and 1 (0.5: half the patches "
                         f"masked), got {args.mask_ratio}")
    if not 0 <= args.nce_weight <= 1:
        raise UsageError(f"--nce-weight must be in [0, 1], got {args.nce_weight}")
    if args.temperature <= 0:
        raise UsageError(f"--temperature must be positive, got {args.temperature}")


# ------------------------------------------------------------------------------------ data

class Unlabelled(Dataset):
    """Normalised images without their labels (what the pretraining sees)."""

    def __init__(self, images: torch.Tensor):
        self.images = ImageDataset(images, torch.zeros(len(images)), MEAN, STD)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i][0]


class Clips(Dataset):
    """Moving MNIST clips (T, 1, 64, 64) in [0, 1], generated once."""

    def __init__(self, split: str, n: int, frames: int):
        data = MovingMNIST(split, n=n, frames=frames)
        self.videos = torch.stack([data[i] for i in range(n)])   # (n, T, 1, 64, 64) uint8

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, i):
        return self.videos[i].float() / 255


# ------------------------------------------------------------------------------- pretraining

class Pretrainer(nn.Module):
    """What one pretraining run optimises: the encoder, and the decoder / head it needs."""

    def __init__(self, kind: str, config: MAEConfig):
        super().__init__()
        self.kind = kind
        self.encoder = MAEEncoder(config)
        if kind in ("mae", "combined"):
            self.decoder = MAEDecoder(config)
        if kind in ("infonce", "combined"):
            self.head = ProjectionHead(config.dim)


def pretrain_step(args, config: MAEConfig):
    def step(model, x):
        if model.kind == "mae":
            latent, mask, ids = model.encoder(x, args.mask_ratio)
            loss = mae_loss(model.decoder(latent, ids), x, mask, config.patch_size)
            return {"loss": loss, "mae": loss.detach()}
        v1, v2 = augment(x), augment(x)
        if model.kind == "infonce":
            z1 = model.head(model.encoder(v1, 0.0)[0][:, 0])
            z2 = model.head(model.encoder(v2, 0.0)[0][:, 0])
            loss = info_nce(z1, z2, args.temperature)
            return {"loss": loss, "nce": loss.detach()}
        out = combined_loss(model.encoder, model.decoder, model.head, v1, v2, args.mask_ratio,
                            args.nce_weight, args.temperature)
        return {"loss": out["loss"], "mae": out["mae"].detach(), "nce": out["nce"].detach()}
    return step


@torch.no_grad()
def masked_test_mse(model: Pretrainer, images: torch.Tensor, ratio: float, patch: int) -> float:
    torch.manual_seed(0)
    latent, mask, ids = model.encoder(images, ratio)
    return mae_loss(model.decoder(latent, ids), images, mask, patch).item()


# ---------------------------------------------------------------------------- fine-tuning

def finetune(encoder, mode, train_set, test_set, run: RunConfig, dist, kind):
    model = Classifier(copy.deepcopy(encoder), 10)
    params = trainable_parameters(model, mode)
    if not any(p.requires_grad for p in params):
        raise UsageError(f"trainable_parameters(model, {mode!r}) returned no parameter with "
                         f"requires_grad=True (finetune.py, TODO ssl.finetune)")

    def step(model, batch):
        x, y = batch
        if mode == "linear":
            model.encoder.eval()   # a linear probe reads fixed features
        logits = model(x)
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(-1) == y).float().mean()}

    def evaluate(model):
        x, y = test_set
        logits = torch.cat([model(x[i:i + 500]) for i in range(0, len(x), 500)])
        return {"test_loss": F.cross_entropy(logits, y).item(),
                "test_acc": (logits.argmax(-1) == y).float().mean().item()}

    history = fit(model, train_set, step, run, dist, evaluate=evaluate, params=params,
                  meta={"kind": kind, "mode": mode}, seed=0)
    plots.curves(history, run.out / "curves.png", f"{kind} encoder, {mode}")
    return history[-1]["test_acc"]


# --------------------------------------------------------------------------------- figures

def image_rows(rows: list[torch.Tensor], labels: list[str], path: Path, title: str,
               titles: list[str] | None = None) -> Path:
    """One row per tensor (n, 1, H, W), values in [0, 1], labelled on the left; `titles` over
    the columns."""
    n = len(rows[0])
    fig, axes = plots.plt.subplots(len(rows), n, figsize=(1.1 * n + 0.8, 1.15 * len(rows)),
                                   squeeze=False)
    for r, (row, label) in enumerate(zip(rows, labels)):
        for i in range(n):
            axes[r, i].imshow(row[i, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, i].set_xticks([])
            axes[r, i].set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    for i, text in enumerate(titles or []):
        axes[0, i].set_title(text, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return plots._save(fig, path)


@torch.no_grad()
def reconstructions(model: Pretrainer, images: torch.Tensor, config: MAEConfig, ratio, path, kind):
    model.eval()
    torch.manual_seed(0)
    latent, mask, ids = model.encoder(images, ratio)
    pred = model.decoder(latent, ids)                                   # (B, N, P*P)
    P, S = config.patch_size, config.image_size
    pixels = mask[..., None].expand(-1, -1, P * P)
    hidden = unpatchify(pixels, P, 1, S, S).bool()                      # (B, 1, S, S)
    show = lambda x: x * STD + MEAN  # noqa: E731
    masked = torch.where(hidden, torch.full_like(images, 0.5), show(images))
    recon = unpatchify(pred, P, 1, S, S)
    pasted = torch.where(hidden, show(recon), show(images))
    return image_rows([show(images), masked, show(recon), pasted],
                      ["original", f"masked {ratio:.0%}", "reconstructed", "visible + recon."],
                      path, f"{kind} encoder: MNIST-5k test images (masked patches grey)")


@torch.no_grad()
def video_frames(model: VideoMAE, clips: torch.Tensor, path: Path) -> Path:
    model.eval()
    torch.manual_seed(0)
    _, pred, mask = model(clips)
    c = model.config
    recon = video_unpatchify(pred, c)                                   # (B, T, 1, H, W)
    hidden = video_unpatchify(mask[..., None].expand(-1, -1, c.patch_dim), c).bool()
    B, T = clips.shape[:2]
    flat = lambda x: x.reshape(B * T, *x.shape[2:])  # noqa: E731  (clip 0's frames, clip 1's, ...)
    rows = [flat(clips), flat(torch.where(hidden, 0.4, clips)), flat(recon),
            flat(torch.where(hidden, recon, clips))]
    labels = ["clip", "masked", "reconstructed", "visible + recon."]
    titles = [f"clip {b}, frame {t}" for b in range(B) for t in range(T)]
    return image_rows(rows, labels, path, f"video MAE on Moving MNIST test clips, frame by "
                                          f"frame: {c.mask_ratio:.0%} of the tokens masked (grey)",
                      titles)


# -------------------------------------------------------------------------------- training

def main(args: argparse.Namespace) -> int:
    check_args(args)
    dist = setup(args.device, args.seed)
    out = Path(args.out or RUNS_DIR / "ssl" / default_name())
    load = mnist if args.full else mnist5k
    train_images, train_labels = load("train")
    test_images, test_labels = load("test")
    config = MAEConfig(mask_ratio=args.mask_ratio)
    epochs = args.epochs or (100 if args.full else 20)
    ft_epochs = args.finetune_epochs or (30 if args.full else 15)
    labelled = ImageDataset(*select_classes(train_images, train_labels, list(range(10)),
                                            args.labels_per_class), MEAN, STD)
    test = ImageDataset(test_images, test_labels, MEAN, STD)
    test_set = (test.normalise(test.images).to(dist.device), test.labels.to(dist.device))
    if dist.is_main:
        print(f"encoders {', '.join(args.encoders) or 'none'}: pretraining on {len(train_images)} "
              f"unlabelled images for {epochs} epochs, then fine-tuning and a linear probe on "
              f"{len(labelled)} labelled ones ({args.labels_per_class} per digit) for {ft_epochs} "
              f"epochs each; run folder {out}")
    results = {}
    for kind in args.encoders:
        encoder = MAEEncoder(config)
        row = {}
        if kind != "scratch":
            model = Pretrainer(kind, config)
            run = RunConfig(out / kind / "pretrain", epochs, args.batch_size, args.lr,
                            args.weight_decay, resume=args.resume)
            if dist.is_main:
                print(f"[{kind}] pretraining ({sum(p.numel() for p in model.parameters()):,} "
                      f"parameters)")
            history = fit(model, Unlabelled(train_images), pretrain_step(args, config), run,
                          dist, meta={"kind": kind, "config": asdict(config)}, seed=args.seed)
            model = model.cpu().eval()
            plots.curves(history, run.out / "curves.png", f"{kind} pretraining on MNIST-5k")
            if kind in ("mae", "combined"):
                row["masked_mse"] = masked_test_mse(model, test_set[0].cpu(), args.mask_ratio,
                                                    config.patch_size)
                first = [(test.labels == d).nonzero()[0].item() for d in range(10)]
                reconstructions(model, test_set[0].cpu()[first], config, args.mask_ratio,
                                out / kind / "reconstructions.png", kind)
            encoder = model.encoder
        for mode in ("finetune", "linear"):
            lr = args.probe_lr if mode == "linear" else args.lr
            run = RunConfig(out / kind / mode, ft_epochs, 64, lr, args.weight_decay,
                            resume=args.resume)
            if dist.is_main:
                print(f"[{kind}] {mode}")
            row[mode] = finetune(encoder, mode, labelled, test_set, run, dist, kind)
        results[kind] = row
    if results and dist.is_main:
        write_table(results, out, args, epochs, ft_epochs, len(labelled))
    if not args.no_video:
        train_video(args, dist, out / "video")
    teardown(dist)
    return 0


def write_table(results, out, args, epochs, ft_epochs, labelled) -> None:
    lines = [f"| encoder | pretraining | fine-tune acc | linear-probe acc | masked MSE |",
             "|---|---|---|---|---|"]
    what = {"scratch": "none", "mae": f"MAE, {args.mask_ratio:.0%} masked",
            "infonce": f"InfoNCE, tau {args.temperature}",
            "combined": f"{1 - args.nce_weight:.1f} MAE + {args.nce_weight:.1f} InfoNCE"}
    for kind, row in results.items():
        mse = f"{row['masked_mse']:.3f}" if "masked_mse" in row else "-"
        lines.append(f"| {kind} | {what[kind]} | {row['finetune']:.4f} | {row['linear']:.4f} | {mse} |")
    note = (f"\n{epochs} pretraining epochs; {ft_epochs} epochs of each fine-tuning on "
            f"{labelled} labelled images; accuracy on the {'MNIST' if args.full else 'MNIST-5k'} "
            f"test images.\n")
    table = "\n".join(lines) + "\n" + note
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table)
    print(f"wrote {out / 'results.md'}")


def train_video(args, dist, out: Path) -> None:
    config = VideoMAEConfig()
    train_set = Clips("train", args.video_clips, config.frames)
    test_clips = Clips("test", 64, config.frames).videos.float() / 255  # the figure: first 3
    model = VideoMAE(config)
    epochs = args.video_epochs or (50 if args.full else 10)
    run = RunConfig(out, epochs, 32, args.lr, args.weight_decay, resume=args.resume)
    if dist.is_main:
        print(f"[video] video MAE on {len(train_set)} Moving MNIST clips of {config.frames} "
              f"frames, {config.num_patches} tokens of {config.tubelet}x{config.patch_size}x"
              f"{config.patch_size}, {config.mask_ratio:.0%} masked, {epochs} epochs")

    def step(model, clips):
        loss, _, _ = model(clips)
        return {"loss": loss}

    def evaluate(model):
        """The masked-token L1 on the test clips, and what predicting black (0) scores on the
        same masked tokens: a model that only learnt the background has test_loss ~ test_black_loss."""
        torch.manual_seed(0)
        clips = test_clips.to(dist.device)
        loss, _, mask = model(clips)
        c = model.config
        black = video_patchify(clips, c.tubelet, c.patch_size).abs().mean(-1)  # (B, N)
        return {"test_loss": loss.item(),
                "test_black_loss": ((black * mask).sum() / mask.sum()).item()}

    history = fit(model, train_set, step, run, dist, evaluate=evaluate,
                  meta={"config": asdict(config)}, seed=args.seed)
    if dist.is_main:
        paths = [plots.curves(history, out / "curves.png", "video MAE (L1 on masked tokens)"),
                 video_frames(model.cpu(), test_clips[:3], out / "video_frames.png")]
        last = history[-1]
        print(f"[video] masked-token L1 on {len(test_clips)} test clips: {last['test_loss']:.4f} "
              f"(predicting black there: {last['test_black_loss']:.4f})")
        print("wrote " + ", ".join(str(p) for p in paths))


def default_name() -> str:
    from datetime import datetime
    return f"compare-{datetime.now():%Y%m%d-%H%M%S}"


def required_tasks(args) -> set[str]:
    """The lab's tasks this run's code calls."""
    needed = set()
    kinds = set(args.encoders)
    if kinds:
        needed |= {"ssl.random_masking", "ssl.mae_encoder", "ssl.finetune"}
    if kinds & {"mae", "combined"}:
        needed |= {"ssl.mae_decoder", "ssl.mae_loss"}
    if kinds & {"infonce", "combined"}:
        needed |= {"ssl.infonce"}
    if "combined" in kinds:
        needed |= {"ssl.combined"}
    if not args.no_video:
        needed |= {"ssl.random_masking", "ssl.video_tokens", "ssl.video_mae"}
    return needed
