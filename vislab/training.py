"""The training loop every lab's train.py uses.

    dist = setup(args.device, args.seed)          # seeds; joins torchrun's process group if any
    history = fit(model, train_set, step, run, dist, evaluate=evaluate, meta={...})

`step(model, batch)` returns a dict of batch-mean scalars with a "loss" to minimise (and, for
example, "acc"); `evaluate(model)` returns test metrics. `fit` does the rest: AdamW with warm-up
and cosine decay, bf16 autocast on CUDA, a tqdm bar, `metrics.jsonl` (one line per epoch),
`checkpoint.pt` after every epoch and resuming from it. Under `torchrun --nproc_per_node N`
the model is wrapped in DistributedDataParallel, each process sees 1/N of every epoch, the
metrics are averaged over all processes, and only rank 0 writes files or prints.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from vislab.errors import UsageError


@dataclass
class RunConfig:
    """What every lab's training shares (the options `vislab train` adds for every lab)."""
    out: Path
    epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: float = 0.05      # fraction of all steps spent warming the learning rate up
    resume: bool = False
    workers: int = 0          # DataLoader processes: for data decoded per item (image files)
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9), as some course set-ups prescribe
    schedule: str = "cosine"  # after the warm-up: cosine decay to 0, or "constant"


@dataclass
class Dist:
    """Where this process trains: its device, and its place among torchrun's processes."""
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(device: str | None = None, seed: int = 0) -> Dist:
    """Pick the device (cuda when present unless told), join torchrun's group, seed."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; "
                           "use --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
        if not torch_dist.is_initialized():
            torch_dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    seed_everything(seed)  # the same seed on every rank: identical initial weights
    return Dist(torch.device(device), rank, world_size)


def teardown(dist: Dist) -> None:
    if dist.distributed and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return type(batch)(to_device(b, device) for b in batch)


def autocast(dist: Dist):
    """bf16 autocast on CUDA (no loss scaling needed), nothing on the CPU."""
    if dist.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def warmup_cosine(warmup_steps: int, total_steps: int, constant: bool = False) -> Callable[[int], float]:
    """Learning-rate factor: linear from ~0 to 1 over the warm-up, then cosine down to 0 (or,
    with `constant`, 1 to the end)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if constant:
            return 1.0
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """A checkpoint or state dict, read safely (weights_only: tensors and plain types, no code);
    a UsageError naming the file when it is missing or is not one."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path} (train one first; its run folder holds checkpoint.pt)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
        raise UsageError(f"cannot read {path} as a PyTorch checkpoint ({type(exc).__name__}): it is not "
                         f"one, it is damaged, or it holds objects other than tensors and plain types "
                         f"(not loaded, for safety); expected a run folder's checkpoint.pt or a "
                         f"torchvision .pth state dict") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not a checkpoint or state dict")
    return state


def positive_int(text: str) -> int:
    """argparse type for counts (epochs, batch size, images per class): 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary name, then rename: a crash never leaves half a checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_metrics(history: list[dict], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    tmp.replace(path)


class MeanMeter:
    """Batch-size-weighted means of scalar metrics, summed over all processes on request."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, metrics: dict[str, torch.Tensor], n: int) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v) * n
        self.count += n

    def means(self, dist: Dist) -> dict[str, float]:
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[k] for k in keys] + [self.count], dtype=torch.float64)
        if dist.distributed:
            torch_dist.all_reduce(totals)
        return {k: totals[i].item() / max(1, totals[-1].item()) for i, k in enumerate(keys)}


def estimate(seconds: float, epochs_left: int) -> str:
    """After the first epoch: about how long the rest of the run will take."""
    left = seconds * epochs_left
    when = f"{left:.0f} s" if left < 120 else f"{left / 60:.1f} min"
    return (f"the first epoch took {seconds:.1f} s: the remaining {epochs_left} should take about "
            f"{when} (--threads sets torch's CPU threads)")


def fit(model: nn.Module, train_set: Dataset, step: Callable, run: RunConfig, dist: Dist,
        evaluate: Callable | None = None, params: list[nn.Parameter] | None = None,
        meta: dict | None = None, seed: int = 0) -> list[dict]:
    """Train `model` for `run.epochs`; returns the history (one dict of metrics per epoch).

    `params`: what the optimiser updates (default: every parameter). `meta`: stored in the
    checkpoint to rebuild the model later (e.g. its config). `evaluate(model)` runs on rank 0.
    """
    out = Path(run.out)
    model.to(dist.device)
    if dist.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    if run.optimizer == "sgd":
        optimizer = torch.optim.SGD(trainable, lr=run.lr, momentum=0.9, weight_decay=run.weight_decay)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=run.lr, weight_decay=run.weight_decay)
    # The shuffle comes from (seed, epoch) alone, on one process as on many: a resumed run
    # sees the same batches as one that was never interrupted.
    sampler = DistributedSampler(train_set, dist.world_size, dist.rank, seed=seed)
    loader = DataLoader(train_set, run.batch_size, sampler=sampler,
                        pin_memory=dist.device.type == "cuda", num_workers=run.workers,
                        persistent_workers=run.workers > 0)
    total = run.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(max(1, int(run.warmup * total)), total, run.schedule == "constant"))

    history, start_epoch = [], 1
    checkpoint = out / "checkpoint.pt"
    if run.resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, dist.device)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, start_epoch = state["history"], state["epoch"] + 1
        torch.set_rng_state(state["rng"])  # dropout and augmentation continue as they would have
        if dist.is_main:
            print(f"resuming {checkpoint} after epoch {state['epoch']}")
    elif run.resume and dist.is_main:
        print(f"no {checkpoint} to resume from: starting a new run there")
    elif checkpoint.exists():
        raise UsageError(f"{out} already holds a run ({checkpoint.name}): continue it with --resume, "
                         f"or choose another folder (a run is never overwritten)")
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)

    for epoch in range(start_epoch, run.epochs + 1):
        sampler.set_epoch(epoch)
        model.train()
        meter, start = MeanMeter(), time.perf_counter()
        # No bar where stderr is not a terminal (a log file would fill with its \r updates):
        # the line per epoch below still says how the run goes.
        bar = tqdm(loader, desc=f"epoch {epoch}/{run.epochs}", leave=False, dynamic_ncols=True,
                   disable=not dist.is_main or not sys.stderr.isatty())
        for batch in bar:
            batch = to_device(batch, dist.device)
            with autocast(dist):
                metrics = step(model, batch)
            loss = metrics["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} in epoch {epoch}; "
                                         f"try a lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            n = len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
            meter.add({k: v.detach() for k, v in metrics.items()}, n)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        row = {"epoch": epoch, **{f"train_{k}": v for k, v in meter.means(dist).items()},
               "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - start, 2)}
        if dist.is_main:
            if evaluate is not None:
                unwrap(model).eval()
                with torch.no_grad(), autocast(dist):
                    row.update(evaluate(unwrap(model)))
            history.append(row)
            write_metrics(history, out / "metrics.jsonl")
            save_atomic({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch,
                         "history": history, "meta": meta or {}, "rng": torch.get_rng_state()},
                        checkpoint)
            tqdm.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in row.items()))
            if epoch == start_epoch and epoch < run.epochs:
                tqdm.write(estimate(row["seconds"], run.epochs - epoch))
        if dist.distributed:
            torch_dist.barrier()
    return history
