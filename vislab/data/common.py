"""Conventions shared by every data set: where full sets and caches live, the missing-data error,
and atomic writes so that a cache is never half-written."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset

from vislab import DATASETS_DIR
from vislab.errors import UsageError


class BadSplit(UsageError, ValueError):
    """A split name the data set does not have (one line for the user, a ValueError for code)."""


class MissingData(FileNotFoundError):
    """A data set's files are not where the kit looks; the message says where to put them."""


def data_root() -> Path:
    """Where full data sets live: $VISLAB_DATA if set, else datasets/full/ in the repo."""
    return Path(os.environ.get("VISLAB_DATA", DATASETS_DIR / "full")).expanduser()


class ImageDataset(Dataset):
    """uint8 images (N, C, H, W) + labels; returns (float image, label), normalised per channel.

    `transform` (e.g. torchvision.transforms.v2.RandAugment) runs on the uint8 image first.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
                 transform: Callable | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels.long()
        self.mean, self.std, self.transform = mean, std, transform

    def __len__(self) -> int:
        return len(self.images)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - self.mean) / self.std

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return self.normalise(image), self.labels[i]


def parse_classes(text: str | None) -> list[int]:
    """A --classes option: '0-4', '1,3,5' or '0-2,7' -> the sorted class ids, all among 0-9;
    None -> all ten."""
    if text is None:
        return list(range(10))
    classes = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            classes.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        classes = set()
    if not classes or not classes <= set(range(10)):
        raise UsageError(f"--classes must name classes 0-9 (e.g. 0-4 or 1,3,5), got {text!r}")
    return sorted(classes)


def select_classes(images: torch.Tensor, labels: torch.Tensor, classes: list[int],
                   per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep `classes` (relabelled 0..k-1 in that order), at most `per_class` images of each (the
    first ones, so the choice does not depend on a seed)."""
    keep = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        keep.append(idx[:per_class] if per_class else idx)
    keep = torch.cat(keep).sort().values
    relabel = torch.full((10,), -1, dtype=torch.long)
    relabel[classes] = torch.arange(len(classes))
    return images[keep], relabel[labels[keep]]


def cache_dir() -> Path:
    """Where generated data sets are cached: $VISLAB_CACHE if set, else datasets/cache/ (git-ignored)."""
    return Path(os.environ.get("VISLAB_CACHE", DATASETS_DIR / "cache")).expanduser()


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write (a file or a folder); rename it to `path` on success.

    Readers therefore see either nothing or the complete result, never a half-written cache: if the
    block raises (or the process dies), `path` is untouched and the temporary is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
