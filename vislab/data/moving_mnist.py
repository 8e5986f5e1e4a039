"""Moving MNIST: short videos of 1-2 MNIST-5k digits bouncing inside a 64x64 frame (video-MAE lab).

After Srivastava et al. (2015): each 28x28 digit starts at a random place with a random velocity,
moves in a straight line and bounces off the frame's edges; overlapping digits combine by maximum.
Sequence i is generated from numpy.random.default_rng([seed, split, i]) alone, so the data set needs
no cache, any item can be read in any order, and the same seed always gives the same videos.

Videos are uint8 in [0, 255], shape (T, 1, 64, 64), like MNIST-5k's images.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from vislab.data.common import BadSplit
from vislab.data.mnist import mnist5k

FRAME_SIZE = 64
MAX_FRAMES = 20
SPLITS = ("train", "test")


def bounce(start: float, velocity: float, frames: int, high: float) -> np.ndarray:
    """Positions (frames,) of a point moving at `velocity` per frame from `start`, reflected at 0
    and at `high`."""
    period = 2 * high
    raw = np.mod(start + velocity * np.arange(frames), period)  # unfold the reflections ...
    return np.where(raw <= high, raw, period - raw)             # ... and fold them back


def moving_mnist_sequence(digits: np.ndarray, rng: np.random.Generator, frames: int = 3,
                          size: int = FRAME_SIZE, speed: tuple[float, float] = (2.0, 5.0)):
    """One video of the given digits (D, 28, 28) uint8 bouncing in a size x size frame.

    Returns the video (T, 1, size, size) uint8 and the digits' top-left corners (D, T, 2) int64
    (row, col), each in [0, size - 28].
    """
    if not 1 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be 1..{MAX_FRAMES}, got {frames}")
    digit_size = digits.shape[-1]
    high = size - digit_size
    video = np.zeros((frames, 1, size, size), dtype=np.uint8)  # (T, 1, H, W)
    corners = np.zeros((len(digits), frames, 2), dtype=np.int64)  # (D, T, 2)
    for d, digit in enumerate(digits):
        angle, norm = rng.uniform(0, 2 * np.pi), rng.uniform(*speed)
        start = rng.uniform(0, high, size=2)
        velocity = norm * np.array([np.sin(angle), np.cos(angle)])
        for axis in range(2):
            corners[d, :, axis] = np.rint(bounce(start[axis], velocity[axis], frames, high))
        for t, (row, col) in enumerate(corners[d]):
            window = video[t, 0, row:row + digit_size, col:col + digit_size]
            np.maximum(window, digit, out=window)
    return video, corners


class MovingMNIST(Dataset):
    """`n` videos (T, 1, 64, 64) uint8 of 1..max_digits MNIST-5k digits from `split` ('train' digits
    for 'train', 'test' digits for 'test'). Item i is the video alone."""

    def __init__(self, split: str = "train", n: int = 10_000, frames: int = 3, max_digits: int = 2,
                 seed: int = 0):
        if split not in SPLITS:
            raise BadSplit(f"split must be one of {SPLITS}, got {split!r}")
        if not 1 <= frames <= MAX_FRAMES:
            raise ValueError(f"frames must be 1..{MAX_FRAMES}, got {frames}")
        if max_digits not in (1, 2):
            raise ValueError(f"max_digits must be 1 or 2, got {max_digits}")
        self.digits = mnist5k(split)[0][:, 0].numpy()  # (N, 28, 28) uint8
        self.split, self.n, self.frames, self.max_digits, self.seed = split, n, frames, max_digits, seed

    def __len__(self) -> int:
        return self.n

    def sequence(self, i: int):
        """Video (T, 1, 64, 64) uint8 and digit corners (D, T, 2) of item i."""
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} videos")
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), i])
        count = rng.integers(1, self.max_digits + 1)
        digits = self.digits[rng.choice(len(self.digits), size=count, replace=False)]  # (D, 28, 28)
        return moving_mnist_sequence(digits, rng, self.frames)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.sequence(i)[0])  # (T, 1, 64, 64)
