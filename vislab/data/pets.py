"""Oxford-IIIT Pets for binary segmentation (UNet lab), and a synthetic stand-in in the same layout.

The loader is torchvision's OxfordIIITPet(root, split, target_types="segmentation", download=False)
wrapped to give fixed-size tensors. Its trimaps label 1 pet, 2 background, 3 the uncertain border;
here 2 becomes 0 (background) and 1 and 3 become 1 (pet).

Offline, `make_pets_fixture` writes synthetic "pets" (an ellipse body and a round head on a
textured background) in the exact on-disk layout torchvision reads:

    <root>/oxford-iiit-pet/images/<Breed>_<n>.jpg
    <root>/oxford-iiit-pet/annotations/trimaps/<Breed>_<n>.png      (mode L, values 1, 2, 3)
    <root>/oxford-iiit-pet/annotations/trainval.txt, test.txt       ("<Breed>_<n> CLASS SPECIES BREED")

so the same loader runs on the fixture and on the real data.

Items are (image (3, size, size) float32 in [0, 1], mask (1, size, size) float32 in {0, 1}); images
are resized to size x size (bilinear), trimaps with nearest neighbour (the aspect ratio is not kept).
With trimap=True the mask is the 3-class trimap instead, (size, size) int64: 0 background, 1 pet,
2 the uncertain border (TRIMAP_CLASSES), for cross-entropy and multi-class Dice.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vislab.data.common import BadSplit, MissingData, atomic_write, cache_dir, data_root

SPLITS = ("trainval", "test")
PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
RESOURCES = (  # (url, md5) as torchvision's OxfordIIITPet downloads them
    (PETS_URL + "data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
    (PETS_URL + "data/annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"),
)
# (image-name prefix, CLASS-ID 1..37, SPECIES 1 cat / 2 dog, BREED-ID within species), as in list.txt
FIXTURE_BREEDS = (("Abyssinian", 1, 1, 1), ("american_bulldog", 2, 2, 1),
                  ("beagle", 5, 2, 4), ("Bengal", 6, 1, 2))
PET, BACKGROUND, BORDER = 1, 2, 3  # trimap values
TRIMAP_CLASSES = ("background", "pet", "border")  # the class indices of trimap=True masks


def pets_folder(root: Path | None = None) -> Path:
    """The oxford-iiit-pet/ folder under `root` (default data_root())."""
    return Path(root if root else data_root()) / "oxford-iiit-pet"


def synthetic_root() -> Path:
    """Where the synthetic stand-in is generated: cache_dir()/pets-synthetic/ (holding oxford-iiit-pet/)."""
    return cache_dir() / "pets-synthetic"


def how_to_get(root: Path) -> str:
    return (f"download images.tar.gz and annotations.tar.gz from {PETS_URL} and untar both into "
            f"{pets_folder(root)} (giving images/ and annotations/), or run `vislab data prepare pets "
            f"--download`; offline, `vislab data prepare pets-synthetic` writes a synthetic set in the "
            f"same layout")


class PetsSegmentation(Dataset):
    """Oxford-IIIT Pets (or anything in its layout under `root`) as (image, binary mask) pairs."""

    def __init__(self, split: str = "trainval", size: int = 128, root: Path | None = None,
                 trimap: bool = False):
        from torchvision.datasets import OxfordIIITPet

        if split not in SPLITS:
            raise BadSplit(f"split must be one of {SPLITS}, got {split!r}")
        root = Path(root) if root else data_root()
        folder = pets_folder(root)
        for needed in (folder / "images", folder / "annotations" / "trimaps",
                       folder / "annotations" / f"{split}.txt"):
            if not needed.exists():
                raise MissingData(f"Oxford-IIIT Pets: {needed} not found; {how_to_get(root)}")
        try:
            self.pets = OxfordIIITPet(str(root), split=split, target_types="segmentation", download=False)
        except (ValueError, RuntimeError) as exc:
            raise MissingData(f"Oxford-IIIT Pets: cannot parse {folder / 'annotations' / f'{split}.txt'} "
                              f"({exc}); {how_to_get(root)}") from None
        self.root, self.size, self.trimap = root, size, trimap

    def __len__(self) -> int:
        return len(self.pets)

    def __getitem__(self, i: int):
        try:
            image, trimap = self.pets[i]
        except OSError as exc:  # a listed file that is missing or not an image
            raise MissingData(f"Oxford-IIIT Pets: cannot read {exc.filename or exc}; "
                              f"{how_to_get(self.root)}") from None
        image = np.array(image.resize((self.size, self.size), Image.BILINEAR))          # (H, W, 3) uint8
        trimap = np.array(trimap.resize((self.size, self.size), Image.NEAREST))         # (H, W) in 1..3
        if self.trimap:  # 1 pet, 2 background, 3 border -> 1, 0, 2
            classes = np.select([trimap == PET, trimap == BORDER], [1, 2], 0).astype(np.int64)
            return (torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255),
                    torch.from_numpy(classes))                                      # (H, W)
        mask = (trimap != BACKGROUND).astype(np.float32)[None]                          # (1, H, W)
        return torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32) / 255), torch.from_numpy(mask)


def oxford_pets(split: str = "trainval", size: int = 128, root: Path | None = None,
                trimap: bool = False) -> PetsSegmentation:
    """The real Oxford-IIIT Pets under `root` (default data_root())."""
    return PetsSegmentation(split, size, root, trimap)


def pets_synthetic(split: str = "trainval", size: int = 128, trimap: bool = False) -> PetsSegmentation:
    """The synthetic stand-in, through the same loader; generated into the cache on first use."""
    if not pets_folder(synthetic_root()).exists():
        make_pets_fixture(synthetic_root())
    return PetsSegmentation(split, size, synthetic_root(), trimap)


# ----------------------------------------------------------------------------- the fixture

def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of mask (H, W) by a (2r+1)x(2r+1) square."""
    padded = np.pad(mask, radius)
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + height, dx:dx + width]
    return out


def synthetic_pet(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic pet photo (H, W, 3) uint8 and its trimap (H, W) uint8 in {1, 2, 3}; H, W in [96, 160]."""
    height, width = rng.integers(96, 161, size=2)
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    # background: a gradient between two colours, plus noise
    a, b = rng.uniform(0, 255, size=(2, 3))
    t = (rows / height)[..., None]
    image = (1 - t) * a + t * b + rng.normal(0, 6, size=(height, width, 3))
    # pet: an elliptical body and a round head, in a striped fur colour
    cy, cx = rng.uniform(0.45, 0.6) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.15, 0.25) * height, rng.uniform(0.2, 0.3) * width
    body = ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
    hy, hx, hr = cy - ry, cx + rng.choice([-1, 1]) * rx * 0.6, rng.uniform(0.5, 0.8) * ry
    head = (rows - hy) ** 2 + (cols - hx) ** 2 <= hr ** 2
    pet = body | head
    fur = rng.uniform(0, 255, size=3) * (0.8 + 0.2 * np.sin(cols / rng.uniform(2, 5)))[..., None]
    image[pet] = fur[pet] + rng.normal(0, 4, size=(pet.sum(), 3))
    trimap = np.full((height, width), BACKGROUND, dtype=np.uint8)
    trimap[pet] = PET
    trimap[_grow(pet, 1) & _grow(~pet, 1)] = BORDER  # a 2-pixel band across the outline
    return image.clip(0, 255).astype(np.uint8), trimap


def make_pets_fixture(root: Path, n_trainval: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Write n_trainval + n_test synthetic pets in the Oxford-IIIT Pets layout under `root`
    (root/oxford-iiit-pet/, written to a temporary folder first, then renamed). Returns that folder."""
    target = pets_folder(root)
    lines = {"trainval": [], "test": []}
    with atomic_write(target) as tmp:
        (tmp / "images").mkdir(parents=True)
        (tmp / "annotations" / "trimaps").mkdir(parents=True)
        for i in range(n_trainval + n_test):
            breed, class_id, species, breed_id = FIXTURE_BREEDS[i % len(FIXTURE_BREEDS)]
            name = f"{breed}_{i // len(FIXTURE_BREEDS) + 1}"
            image, trimap = synthetic_pet(np.random.default_rng([seed, i]))
            Image.fromarray(image).save(tmp / "images" / f"{name}.jpg", quality=90)
            Image.fromarray(trimap).save(tmp / "annotations" / "trimaps" / f"{name}.png")  # mode L
            split = "trainval" if i < n_trainval else "test"
            lines[split].append(f"{name} {class_id} {species} {breed_id}\n")
        for split, rows in lines.items():
            (tmp / "annotations" / f"{split}.txt").write_text("".join(rows))
    return target
