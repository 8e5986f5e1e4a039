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


def epoch_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> float:
    """One epoch of AdamW on cross-entropy, in order, batch 64: the same loop for every model."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        loss = F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def timed(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, repeats: int) -> list[float]:
    """Median epoch seconds of each model after one warm-up epoch each; the models take turns
    epoch by epoch, so that a change in the machine's load hits them alike."""
    for model in models:
        epoch_seconds(model, x, y)
    seconds = [[] for _ in models]
    for _ in range(repeats):
        for model, times in zip(models, seconds):
            times.append(epoch_seconds(model, x, y))
    return [statistics.median(times) for times in seconds]
