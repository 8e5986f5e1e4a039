"""Data for the labs: small sets that ship with the kit, deterministic generators, and loaders for the
full sets when present (docs/data.md describes every set; `vislab data list` shows where they are)."""
from vislab.data.cifar import cifar10
from vislab.data.common import (ImageDataset, MissingData, atomic_write, cache_dir, data_root,
                                parse_classes, select_classes)
from vislab.data.dsprites import DSprites, dsprites_grid
from vislab.data.mnist import mnist, mnist5k
from vislab.data.moving_mnist import MovingMNIST
from vislab.data.multi_object import MultiObjectScenes, clevr_with_masks, clevrtex
from vislab.data.mathqa import generate as mathqa_generated, load_mathqa  # noqa: F401
from vislab.data.pets import PetsSegmentation, make_pets_fixture, oxford_pets, pets_synthetic

__all__ = ["ImageDataset", "MissingData", "data_root", "cache_dir", "atomic_write", "mnist", "mnist5k",
           "parse_classes", "select_classes",
           "cifar10", "MovingMNIST", "DSprites", "dsprites_grid", "MultiObjectScenes", "clevrtex",
           "clevr_with_masks", "PetsSegmentation", "oxford_pets", "pets_synthetic", "make_pets_fixture"]
