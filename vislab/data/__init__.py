"""Data for the labs: small sets that ship with the kit, loaders for the full sets when present."""
from vislab.data.common import ImageDataset, MissingData, data_root
from vislab.data.mnist import mnist, mnist5k

__all__ = ["ImageDataset", "MissingData", "data_root", "mnist", "mnist5k"]
