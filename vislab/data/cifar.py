"""CIFAR-10 for full runs, read by torchvision from its on-disk format when the files are present.

Why torchvision and not a reader of our own: torchvision's CIFAR10 checks the md5 sum of every batch
file, so a truncated or altered download is caught instead of silently training on it; we only turn
its one error ("not found or corrupted") into a message that names the missing or corrupt file. The
price is that a generated fixture cannot pass the md5 check, so the tests patch torchvision's
integrity check inside the test only; everything else they run is the real code path.
"""
from __future__ import annotations

from pathlib import Path

import torch

from vislab.data.common import BadSplit, MissingData, data_root

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # torchvision's CIFAR10.tgz_md5
FOLDER = "cifar-10-batches-py"


def cifar_folder(root: Path | None = None) -> Path:
    """The cifar-10-batches-py/ folder under `root` (default data_root())."""
    return Path(root if root else data_root()) / FOLDER


def _how_to_get(root: Path) -> str:
    return (f"download {URL} (md5 {ARCHIVE_MD5}) and untar it into {root} (it unpacks into {FOLDER}/), "
            f"or run `vislab data prepare cifar10 --download`, or set VISLAB_DATA to the folder that "
            f"holds {FOLDER}/")


def cifar10(split: str, root: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 (50,000 train / 10,000 test): uint8 images (N, 3, 32, 32) and int64 labels (N,)."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    if split not in ("train", "test"):
        raise BadSplit(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root else data_root()
    files = CIFAR10.train_list if split == "train" else CIFAR10.test_list
    files = files + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    for name, _ in files:
        if not (cifar_folder(root) / name).is_file():
            raise MissingData(f"CIFAR-10: {cifar_folder(root) / name} not found; {_how_to_get(root)}")
    try:
        ds = CIFAR10(str(root), train=split == "train", download=False)
    except RuntimeError:
        corrupt = [str(cifar_folder(root) / name) for name, md5 in files
                   if not check_integrity(str(cifar_folder(root) / name), md5)]
        raise MissingData(f"CIFAR-10: {', '.join(corrupt) or 'a batch file'} failed its md5 check "
                          f"(corrupt or incomplete); {_how_to_get(root)}") from None
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return images, torch.tensor(ds.targets, dtype=torch.int64)
