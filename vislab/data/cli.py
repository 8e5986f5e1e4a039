"""`vislab data`: list, prepare, locate and preview the data sets (filled in by the data-layer issue)."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list, prepare, locate and preview data sets")
    p.set_defaults(run=lambda args: print("no data sets beyond MNIST-5k yet") or 0)
