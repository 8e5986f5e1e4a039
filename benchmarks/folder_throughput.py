"""How fast class-per-folder images are read: images per second for the in-memory store
(decoded once, four threads) and for per-item decoding through a DataLoader with 0 or 2 workers.

    python benchmarks/folder_throughput.py [--per-class 200] [--sizes 64 256]

Runs on the shapes-folder fixture (JPEG and PNG of 40-120 px, written to a temporary folder),
with one torch thread, as training does by default. Prints one line per measurement.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vislab.data.common import ImageDataset
from vislab.data.folder import FolderImages, image_folder, make_folder_fixture


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.0f} images/s ({n} in {seconds:.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = make_folder_fixture(Path(tempfile.mkdtemp()) / "shapes", per_class=args.per_class)
    print(f"{3 * args.per_class} images in {root}; load average {os.getloadavg()[0]:.1f}")
    start = time.perf_counter()
    data = image_folder(root, 64, preload=False)
    print(f"scan (every file decoded once at reduced scale to check it): "
          f"{rate(sum(len(v[0]) for v in data.splits.values()), time.perf_counter() - start)}")
    paths = data.splits["train"][0].paths
    labels = data.splits["train"][1]
    for size in args.sizes:
        start = time.perf_counter()
        FolderImages(paths, size, preload=True)
        print(f"{size:3d} px, in memory (decoded once, 4 threads):      {rate(len(paths), time.perf_counter() - start)}")
        for workers in (0, 2):
            dataset = ImageDataset(FolderImages(paths, size, preload=False), labels, 0.5, 0.5)
            loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=workers)
            start = time.perf_counter()
            n = sum(len(x) for x, _ in loader)
            print(f"{size:3d} px, per item, DataLoader with {workers} workers: {rate(n, time.perf_counter() - start)}")


if __name__ == "__main__":
    main()
