"""MNIST: the shipped 5,000-image subset (MNIST-5k) and torchvision's full files when present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vislab import DATASETS_DIR
from vislab.data.common import BadSplit, MissingData, data_root

MNIST5K_FILE = DATASETS_DIR / "mnist5k" / "mnist5k.npz"
MEAN, STD = 0.1307, 0.3081  # the full MNIST training set's pixel statistics


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 MNIST images -> float32, standardised with MEAN and STD."""
    return (images.float() / 255 - MEAN) / STD


def mnist5k(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST-5k: uint8 images (N, 1, 28, 28) and int64 labels; 'train' 4000, 'test' 1000."""
    if split not in ("train", "test"):
        raise BadSplit(f"split must be 'train' or 'test', got {split!r}")
    if not MNIST5K_FILE.exists():
        raise MissingData(f"MNIST-5k ships with the kit at {MNIST5K_FILE}, but the file is missing; "
                          f"restore it with `git checkout -- {MNIST5K_FILE.relative_to(DATASETS_DIR.parent)}`")
    with np.load(MNIST5K_FILE) as f:
        images, labels = f[f"x_{split}"], f[f"y_{split}"]
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def mnist(split: str, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Full MNIST (60,000 / 10,000) from torchvision's files under `root` (default data_root())."""
    from torchvision.datasets import MNIST

    root = Path(root) if root else data_root()
    try:
        ds = MNIST(str(root), train=split == "train", download=False)
    except RuntimeError:
        raise MissingData(
            f"full MNIST not found under {root / 'MNIST' / 'raw'} (looked for "
            f"train-images-idx3-ubyte and its three siblings). With internet, run: python -c "
            f"\"from torchvision.datasets import MNIST; MNIST('{root}', download=True)\"; "
            f"or copy the four unpacked idx files there; or set VISLAB_DATA to the folder that "
            f"holds MNIST/raw/.") from None
    return ds.data.unsqueeze(1), ds.targets.long()


def write_idx(path: Path, array: np.ndarray) -> None:
    """One file in MNIST's idx format: magic (0, 0, 8 = uint8, ndim), big-endian sizes, bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist_fixture(root: Path) -> Path:
    """Write MNIST-5k in full MNIST's on-disk layout (<root>/MNIST/raw/, the four unpacked idx
    files), so that `mnist(split, root)`, the loader of the real files, runs offline."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = mnist5k(split)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images.squeeze(1).numpy())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.numpy())
    return Path(root)
