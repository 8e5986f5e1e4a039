"""`vislab data show`: a PNG grid of samples, with the masks overlaid where a set has masks.

Layouts (8 columns): image sets are a plain grid; videos are one sequence per row (8 frames); sets
with masks alternate a row of images with a row of the same images, each instance tinted in its own
colour (the background darkened, not tinted).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from vislab.data.common import atomic_write, cache_dir
from vislab.errors import UsageError

COLUMNS = 8
PALETTE = torch.tensor([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                        [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230],
                        [210, 245, 60], [250, 190, 212], [0, 128, 128]], dtype=torch.float32) / 255


def overlay(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] with one-hot masks (N, K, H, W) drawn over them: background
    (mask 0) darkened, instance k blended with PALETTE[k]."""
    labels = masks.argmax(dim=1)                                    # (N, H, W)
    colours = PALETTE[labels % len(PALETTE)].permute(0, 3, 1, 2)    # (N, 3, H, W)
    tinted = 0.45 * images + 0.55 * colours
    return torch.where((labels == 0)[:, None], 0.4 * images, tinted)


def pairs(images: torch.Tensor, masks: torch.Tensor, columns: int = COLUMNS) -> torch.Tensor:
    """Rows of `columns` images, each followed by the row of their overlays; a short last row is
    filled with white tiles. Returns (2 * rows * columns, 3, H, W)."""
    shown = overlay(images, masks)
    blank = torch.ones_like(images[:1])
    tiles = []
    for start in range(0, len(images), columns):
        for row in (images[start:start + columns], shown[start:start + columns]):
            tiles += [row, blank.expand(columns - len(row), -1, -1, -1)]
    return torch.cat(tiles)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) uint8 or float in [0, 1] -> (N, 3, H, W) float in [0, 1]."""
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _pick(count: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(count, size=min(n, count), replace=False)


def _image_set(name: str, split: str | None, n: int, seed: int) -> torch.Tensor:
    from vislab.data.cifar import cifar10
    from vislab.data.mnist import mnist, mnist5k

    images, _ = {"mnist5k": mnist5k, "mnist": mnist, "cifar10": cifar10}[name](split or "train")
    return as_rgb(images[torch.from_numpy(_pick(len(images), n, seed))])


def _moving_mnist(split: str | None, n: int, seed: int) -> torch.Tensor:
    from vislab.data.moving_mnist import MovingMNIST

    ds = MovingMNIST(split or "train", n=n, frames=COLUMNS, seed=seed)
    return as_rgb(torch.cat([ds[i] for i in range(n)]))  # (n * 8, 3, 64, 64)


def _dsprites(n: int, seed: int, split: str | None = None) -> torch.Tensor:
    from vislab.data import dsprites as d

    if split is not None:
        raise UsageError("dsprites has no splits: it is one grid of every factor combination "
                         "(leave out --split)")
    indices = np.sort(_pick(d.N_IMAGES, n, seed))
    if d.official_file().exists() or d.cache_file().exists():
        return as_rgb(d.dsprites_grid().images(indices))
    return as_rgb(torch.from_numpy(d.render(indices))[:, None] * 255)  # drawn directly, no cache needed


def _masked(dataset, n: int, seed: int) -> torch.Tensor:
    """Pairs of rows (images, overlays) of n items, min(n, 8) to a row."""
    items = [dataset[int(i)] for i in _pick(len(dataset), n, seed)]
    images = torch.stack([image for image, _ in items])
    masks = torch.stack([mask for _, mask in items])
    if masks.shape[1] == 1:  # a binary mask: make it background / foreground channels
        masks = torch.cat([1 - masks, masks], dim=1)
    return pairs(images, masks, columns=min(n, COLUMNS))


def samples(name: str, n: int = 16, seed: int = 0, split: str | None = None) -> torch.Tensor:
    """The tiles (M, 3, H, W) in [0, 1] that `vislab data show NAME` lays out in rows of
    columns(name, n) tiles."""
    from vislab.data import multi_object, pets

    if name in ("mnist5k", "mnist", "cifar10"):
        return _image_set(name, split, n, seed)
    if name == "moving-mnist":
        return _moving_mnist(split, n, seed)
    if name == "dsprites":
        return _dsprites(n, seed, split)
    if name in ("multi-dsprites", "tetrominoes"):
        return _masked(multi_object.MultiObjectScenes(name, split or "train", n=n, seed=seed), n, seed)
    if name == "clevrtex":
        return _masked(multi_object.clevrtex(split or "train"), n, seed)
    if name == "clevr-masks":
        return _masked(multi_object.clevr_with_masks(split or "train"), n, seed)
    if name == "pets":
        return _masked(pets.oxford_pets(split or "trainval", size=96), n, seed)
    if name == "pets-synthetic":
        return _masked(pets.pets_synthetic(split or "trainval", size=96), n, seed)
    raise ValueError(f"no preview for data set {name!r}")


def columns(name: str, n: int) -> int:
    """Tiles per row: 8 frames per video, else up to 8 samples."""
    return COLUMNS if name == "moving-mnist" else min(n, COLUMNS)


def png_path(name: str, out: Path | None) -> Path:
    """Where `show` writes: `out` itself when it names a .png file, `out/NAME.png` when it is a
    folder (never replaced by the picture), the cache by default."""
    if out is None:
        return cache_dir() / "show" / f"{name}.png"
    out = Path(out)
    if out.is_dir():
        return out / f"{name}.png"
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: give a file name ending in .png or an existing folder "
                         f"(the picture is written as FOLDER/{name}.png)")
    return out


def show(name: str, out: Path | None = None, n: int = 16, seed: int = 0, split: str | None = None) -> Path:
    """Write a PNG grid of `n` samples of data set `name` to `out` (a .png file or a folder;
    default cache_dir()/show/<name>.png) and return its path."""
    out = png_path(name, out)
    tiles = samples(name, n, seed, split)                                                # (M, 3, h, w)
    grid = make_grid(tiles, nrow=columns(name, n), padding=2, pad_value=1.0)             # (3, H, W)
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()   # (H, W, 3)
    with atomic_write(out) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG", optimize=True)
    return out
