"""What the benchmark scripts share: the machine's name and a plain training epoch, timed."""
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def steps_seconds(params, losses, optimizer=torch.optim.AdamW, lr: float = 1e-3) -> float:
    """Seconds for one optimiser step on each of `losses`, functions of no argument that return
    a scalar loss (a batch each, in order): the timed loop of every speed benchmark."""
    opt = optimizer(params, lr=lr)
    start = time.perf_counter()
    for loss_fn in losses:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def epoch_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> float:
    """One epoch of AdamW on cross-entropy, in order, batch 64: the same loop for every model."""
    model.train()
    return steps_seconds(model.parameters(), [
        lambda i=i: F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size])
        for i in range(0, len(x), batch_size)])


def alternating_medians(runs: list, repeats: int) -> list[float]:
    """Median seconds of each of `runs` (functions of no argument that return seconds) after
    one warm-up each; the runs take turns, so that a change in the machine's load hits them
    alike."""
    for run in runs:
        run()
    seconds = [[] for _ in runs]
    for _ in range(repeats):
        for run, times in zip(runs, seconds):
            times.append(run())
    return [statistics.median(times) for times in seconds]


def timed(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, repeats: int) -> list[float]:
    """Median epoch seconds of each model (epoch_seconds), taking turns (alternating_medians)."""
    return alternating_medians([lambda m=m: epoch_seconds(m, x, y) for m in models], repeats)
