"""Multi-object scenes with instance masks (Slot Attention lab): two generators and a loader for
CLEVRTex-style folders (CLEVRTex itself and CLEVR-with-masks, converted to the same layout from
DeepMind's TFRecord file without TensorFlow).

Generated styles, after DeepMind's multi_object_datasets:
- 'multi-dsprites': min..max dSprites shapes (square, ellipse, heart; random scale in [0.5, 1],
  angle, position) in random RGB colours on a random RGB background; later sprites occlude earlier
  ones; every sprite keeps at least a quarter of its area visible, so it really is in the scene.
- 'tetrominoes': min..max of the 19 fixed tetrominoes in six colours (red, green, blue, yellow,
  magenta, cyan, no colour twice) on a black background, on an 8x8 grid of blocks, never overlapping.

Scene i is generated from numpy.random.default_rng([seed, split, i]) alone: no cache, random access,
identical for the same seed. Images are 64x64 (or 128x128 with size=128).

Every item is (image (3, H, W) float32 in [0, 1], masks (K+1, H, W) float32 one-hot): mask 0 is the
background, mask k the k-th object (in painting order for the generators), empty channels pad scenes
with fewer than K objects, and the masks partition the image (exactly one channel is 1 at each pixel).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vislab.data.common import BadSplit, MissingData, data_root
from vislab.data.dsprites import UNIT, draw_sprite

STYLES = ("multi-dsprites", "tetrominoes")
DEFAULT_OBJECTS = {"multi-dsprites": (1, 4), "tetrominoes": (3, 3)}  # (min, max), as in the originals
SPLITS = ("train", "val", "test")
MIN_VISIBLE = 0.25  # the fraction of a sprite's own area that must stay visible
MIN_COLOUR_DISTANCE = 0.3  # between any two colours of a scene, RGB in [0, 1]
TETROMINO_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                              [255, 0, 255], [0, 255, 255]], dtype=np.uint8)
GRID = 8  # tetromino blocks per image side


def _fixed_tetrominoes() -> list[np.ndarray]:
    """The 19 fixed tetrominoes: the 7 one-sided pieces in all their distinct rotations, as (4, 2)
    (row, col) block offsets."""
    pieces = {"I": [(0, 0), (0, 1), (0, 2), (0, 3)], "O": [(0, 0), (0, 1), (1, 0), (1, 1)],
              "T": [(0, 0), (0, 1), (0, 2), (1, 1)], "S": [(0, 1), (0, 2), (1, 0), (1, 1)],
              "Z": [(0, 0), (0, 1), (1, 1), (1, 2)], "J": [(0, 0), (1, 0), (1, 1), (1, 2)],
              "L": [(0, 2), (1, 0), (1, 1), (1, 2)]}
    shapes = []
    for cells in pieces.values():
        cells = np.array(cells)
        for _ in range(4):
            cells = np.stack([cells[:, 1], -cells[:, 0]], axis=1)  # rotate by 90 degrees
            cells = cells - cells.min(axis=0)
            cells = cells[np.lexsort((cells[:, 1], cells[:, 0]))]
            if not any(np.array_equal(cells, s) for s in shapes):
                shapes.append(cells)
    return shapes


TETROMINOES = _fixed_tetrominoes()


def distinct_colour(rng: np.random.Generator, taken: list[np.ndarray]) -> np.ndarray:
    """A random RGB colour (3,) uint8 at least MIN_COLOUR_DISTANCE from every colour in `taken`."""
    while True:
        colour = rng.integers(0, 256, size=3).astype(np.uint8)
        if all(np.linalg.norm((colour.astype(float) - t) / 255) >= MIN_COLOUR_DISTANCE for t in taken):
            return colour


def sprite_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random dSprites sprite (size, size) bool: shape, scale in [0.5, 1], angle, centre in the
    middle 60% of the image; drawn only inside its bounding window, for speed."""
    unit = UNIT * size / 64
    shape, scale, angle = rng.integers(3), rng.uniform(0.5, 1.0), rng.uniform(0, 2 * np.pi)
    centre = rng.uniform(0.2, 0.8, size=2) * size
    reach = int(np.ceil(1.7 * scale * unit)) + 1  # every shape lies within 1.7 units of its centre
    top, left = (np.floor(centre) - reach).astype(int).clip(0)
    bottom, right = (np.floor(centre) + reach + 1).astype(int).clip(max=size)
    mask = np.zeros((size, size), dtype=bool)
    mask[top:bottom, left:right] = draw_sprite(shape, scale, angle, (centre[0] - top, centre[1] - left),
                                               (bottom - top, right - left), unit=unit)
    return mask


def multi_dsprites_scene(rng: np.random.Generator, size: int = 64, min_objects: int = 1,
                         max_objects: int = 4):
    """A Multi-dSprites scene: image (3, size, size) uint8 and labels (size, size) int64 in 0..n
    (0 = background, k = k-th sprite painted)."""
    while True:
        count = rng.integers(min_objects, max_objects + 1)
        colours = [rng.integers(0, 256, size=3).astype(np.uint8)]  # the background first
        labels = np.zeros((size, size), dtype=np.int64)
        areas = []
        for k in range(1, count + 1):
            colours.append(distinct_colour(rng, colours))
            mask = sprite_mask(rng, size)
            labels[mask] = k
            areas.append(mask.sum())
        visible = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        if all(v >= MIN_VISIBLE * a and v > 0 for v, a in zip(visible, areas)):
            image = np.stack(colours)[labels]  # (H, W, 3)
            return image.transpose(2, 0, 1).copy(), labels


def tetrominoes_scene(rng: np.random.Generator, size: int = 64, min_objects: int = 3,
                      max_objects: int = 3):
    """A Tetrominoes scene: image (3, size, size) uint8 and labels (size, size) int64 in 0..n."""
    if size % GRID:
        raise ValueError(f"size must be a multiple of {GRID}, got {size}")
    if max_objects > len(TETROMINO_COLOURS):
        raise ValueError(f"at most {len(TETROMINO_COLOURS)} tetrominoes (one per colour), got {max_objects}")
    count = rng.integers(min_objects, max_objects + 1)
    colours = rng.permutation(len(TETROMINO_COLOURS))[:count]
    grid = np.zeros((GRID, GRID), dtype=np.int64)  # block labels
    for k in range(1, count + 1):
        while True:
            cells = TETROMINOES[rng.integers(len(TETROMINOES))]
            corner = rng.integers(0, GRID - cells.max(axis=0))  # (row, col) so that the piece fits
            rows, cols = (cells + corner).T
            if not grid[rows, cols].any():
                grid[rows, cols] = k
                break
    block = size // GRID
    labels = grid.repeat(block, axis=0).repeat(block, axis=1)  # (H, W)
    palette = np.concatenate([np.zeros((1, 3), np.uint8), TETROMINO_COLOURS[colours]])
    return palette[labels].transpose(2, 0, 1).copy(), labels


SCENES = {"multi-dsprites": multi_dsprites_scene, "tetrominoes": tetrominoes_scene}


def to_float(image: np.ndarray) -> torch.Tensor:
    """uint8 image (3, H, W) as float32 in [0, 1]; converted in numpy, which skips torch's
    intra-op thread start-up on small tensors (slow on a busy machine)."""
    return torch.from_numpy(image.astype(np.float32) / 255)


def one_hot_masks(labels: np.ndarray, channels: int) -> torch.Tensor:
    """Masks (channels, H, W) float32 from labels (H, W) in 0..channels-1."""
    masks = labels[None] == np.arange(channels)[:, None, None]  # (K+1, H, W)
    return torch.from_numpy(masks.astype(np.float32))


class MultiObjectScenes(Dataset):
    """`n` generated scenes of `style` ('multi-dsprites' or 'tetrominoes'); item i is
    (image (3, size, size) float32 in [0, 1], masks (max_objects + 1, size, size) float32 one-hot)."""

    def __init__(self, style: str = "multi-dsprites", split: str = "train", n: int = 10_000,
                 size: int = 64, min_objects: int | None = None, max_objects: int | None = None,
                 seed: int = 0):
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        if split not in SPLITS:
            raise BadSplit(f"split must be one of {SPLITS}, got {split!r}")
        if size not in (64, 128):
            raise ValueError(f"size must be 64 or 128, got {size}")
        low, high = DEFAULT_OBJECTS[style]
        self.min_objects = low if min_objects is None else min_objects
        self.max_objects = high if max_objects is None else max_objects
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, "
                             f"got {self.min_objects} and {self.max_objects}")
        self.style, self.split, self.n, self.size, self.seed = style, split, n, size, seed

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int):
        """Image (3, H, W) uint8 and labels (H, W) int64 of scene i."""
        if not 0 <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} scenes")
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), i])
        return SCENES[self.style](rng, self.size, self.min_objects, self.max_objects)

    def __getitem__(self, i: int):
        image, labels = self.scene(i)
        return to_float(image), one_hot_masks(labels, self.max_objects + 1)


# ----------------------------------------------------------------------------- CLEVRTex-style folders

SPLIT_FRACTIONS = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0)}  # as clevrtex_eval.py

CLEVRTEX_URL = "https://www.robots.ox.ac.uk/~vgg/data/clevrtex/"
CLEVR_MASKS_URL = "https://console.cloud.google.com/storage/browser/multi-object-datasets/clevr_with_masks"
CLEVR_MASKS_FILE = "clevr_with_masks_train.tfrecords"


class MaskedSceneFolder(Dataset):
    """Scenes stored as PNG pairs, CLEVRTex's layout: `<prefix>NNNNNN.png` (RGB or RGBA image) and
    `<prefix>NNNNNN_flat.png` (one channel, pixel value = entity: 0 background, 1..10 objects), in
    `folder` or any subfolder of it. Scenes are ordered by their number and split as CLEVRTex's own
    loader does: test = first 10%, val = next 10%, train = the rest.

    Each image is centre-cropped to a square of 0.8 x its shorter side (192x192 for 320x240; again as
    CLEVRTex's loader), then resized to size x size (bilinear; nearest for the mask). Item i is
    (image (3, size, size) float32 in [0, 1], masks (max_masks, size, size) float32 one-hot).
    """

    def __init__(self, folder: Path, prefix: str, split: str = "train", size: int = 128,
                 max_masks: int = 11, how_to_get: str = ""):
        if split not in SPLIT_FRACTIONS:
            raise BadSplit(f"split must be one of {tuple(SPLIT_FRACTIONS)}, got {split!r}")
        self.folder, self.size, self.max_masks, self.how_to_get = Path(folder), size, max_masks, how_to_get
        images = sorted(self.folder.glob(f"**/{prefix}{'[0-9]' * 6}.png"), key=lambda p: p.name)
        if not images:
            raise MissingData(f"no scenes found: expected {self.folder}/**/{prefix}000000.png with "
                              f"{prefix}000000_flat.png beside it; {how_to_get}")
        low, high = SPLIT_FRACTIONS[split]
        self.images = images[int(low * len(images)):int(high * len(images))]

    def __len__(self) -> int:
        return len(self.images)

    def _open(self, path: Path) -> Image.Image:
        try:
            image = Image.open(path)
            image.load()
            return image
        except (OSError, ValueError) as exc:
            raise MissingData(f"cannot read {path} ({exc}); {self.how_to_get}") from None

    def __getitem__(self, i: int):
        image_path = self.images[i]
        image = self._open(image_path).convert("RGB")
        mask = self._open(image_path.with_name(image_path.stem + "_flat.png"))
        side = int(0.8 * min(image.size))
        box = ((image.width - side) // 2, (image.height - side) // 2,
               (image.width + side) // 2, (image.height + side) // 2)
        image = image.crop(box).resize((self.size, self.size), Image.BILINEAR)
        labels = np.array(mask.crop(box).resize((self.size, self.size), Image.NEAREST)).astype(np.int64)
        if labels.ndim != 2 or labels.max() >= self.max_masks:
            raise MissingData(f"{image_path.stem}_flat.png in {image_path.parent} is not a one-channel mask "
                              f"with values 0..{self.max_masks - 1}; {self.how_to_get}")
        return to_float(np.array(image).transpose(2, 0, 1)), one_hot_masks(labels, self.max_masks)


def clevrtex_folder() -> Path:
    """Where CLEVRTex (main 'full' variant) is looked for: data_root()/clevrtex/clevrtex_full/."""
    return data_root() / "clevrtex" / "clevrtex_full"


def clevr_masks_folder() -> Path:
    """Where CLEVR-with-masks, converted to PNG pairs, is looked for: data_root()/clevr_with_masks/."""
    return data_root() / "clevr_with_masks"


def clevr_masks_tfrecords() -> Path:
    """Where DeepMind's file is looked for, to convert: data_root()/clevr_with_masks_train.tfrecords."""
    return data_root() / CLEVR_MASKS_FILE


def clevrtex(split: str = "train", size: int = 128, folder: Path | None = None) -> MaskedSceneFolder:
    """CLEVRTex 'full' (50,000 scenes, up to 10 objects): the untarred clevrtex_full/ folder, whose
    subfolders hold CLEVRTEX_full_NNNNNN.png, ..._flat.png (and .json, not read)."""
    folder = Path(folder) if folder else clevrtex_folder()
    how = (f"download the clevrtex_full parts from {CLEVRTEX_URL} and untar them into {folder.parent} "
           f"(they unpack into clevrtex_full/), or set VISLAB_DATA")
    return MaskedSceneFolder(folder, "CLEVRTEX_full_", split, size, max_masks=11, how_to_get=how)


def clevr_with_masks(split: str = "train", size: int = 128, folder: Path | None = None) -> MaskedSceneFolder:
    """CLEVR-with-masks (DeepMind, 320x240, up to 10 objects + background), converted once from its
    TFRecord file to CLEVRTex's layout (CLEVR_masks_NNNNNN.png, CLEVR_masks_NNNNNN_flat.png) by
    `vislab data prepare clevr-masks`, i.e. `convert_clevr_with_masks`."""
    folder = Path(folder) if folder else clevr_masks_folder()
    how = (f"download {CLEVR_MASKS_FILE} from {CLEVR_MASKS_URL} into {clevr_masks_tfrecords().parent} "
           f"and run `vislab data prepare clevr-masks`, which converts it into {folder}; or set VISLAB_DATA")
    return MaskedSceneFolder(folder, "CLEVR_masks_", split, size, max_masks=11, how_to_get=how)


# ----------------------------------------------------------------------------- CLEVR-with-masks' TFRecord

CLEVR_SHAPE = (240, 320)  # height, width
CLEVR_ENTITIES = 11  # background + up to 10 objects


def convert_clevr_with_masks(src: Path, out: Path) -> int:
    """Convert DeepMind's CLEVR-with-masks TFRecord file (GZIP, one tf.train.Example per scene, read
    as their clevr_with_masks.py does: 'image' (240, 320, 3) and 'mask' (11, 240, 320, 1) as one-byte
    strings; other features ignored) into PNG pairs under `out`: scene i becomes
    NN/CLEVR_masks_iiiiii.png and NN/CLEVR_masks_iiiiii_flat.png (pixel = the entity whose mask is
    largest there: 0 background, 1..10 objects), 10,000 scenes per subfolder NN. Written to a
    temporary folder renamed at the end: `out` is complete or absent. Returns the number of scenes."""
    from tqdm import tqdm

    from vislab.data.common import atomic_write
    from vislab.data.tfrecord import TFRecordError, parse_example, read_records

    height, width = CLEVR_SHAPE
    count = 0
    with atomic_write(Path(out)) as tmp:
        try:
            for i, record in enumerate(tqdm(read_records(src), desc=f"converting {Path(src).name}",
                                            unit=" scenes")):
                example = parse_example(record)
                image, mask = example.get("image"), example.get("mask")
                for name, values, size in (("image", image, height * width * 3),
                                           ("mask", mask, CLEVR_ENTITIES * height * width)):
                    if not isinstance(values, np.ndarray) or values.size != size:
                        raise TFRecordError(f"scene {i}: feature '{name}' is not {size:,} one-byte values")
                labels = mask.reshape(CLEVR_ENTITIES, height, width).argmax(0).astype(np.uint8)
                folder = tmp / f"{i // 10000:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.reshape(height, width, 3)).save(folder / f"CLEVR_masks_{i:06d}.png")
                Image.fromarray(labels).save(folder / f"CLEVR_masks_{i:06d}_flat.png")
                count += 1
        except TFRecordError as exc:
            raise MissingData(f"cannot convert {src}: {exc}; download {CLEVR_MASKS_FILE} again from "
                              f"{CLEVR_MASKS_URL}") from None
        if not count:
            raise MissingData(f"{src} holds no scenes; download {CLEVR_MASKS_FILE} again from {CLEVR_MASKS_URL}")
    return count


def make_clevr_masks_fixture(path: Path, n: int = 10, seed: int = 0) -> Path:
    """A small file in CLEVR-with-masks' exact format (GZIP TFRecord, the same features, one-byte
    strings, float per-object factors): n scenes of 1..10 flat-coloured discs and squares on a grey
    floor, later objects occluding earlier ones. For testing the real converter offline."""
    from vislab.data.tfrecord import encode_example, write_records

    height, width = CLEVR_SHAPE
    yy, xx = np.mgrid[:height, :width]
    records = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        image = np.full((height, width, 3), rng.integers(90, 140), np.uint8)
        labels = np.zeros((height, width), np.int64)
        objects = rng.integers(1, CLEVR_ENTITIES)
        for k in range(1, objects + 1):
            cy, cx, r = rng.integers(40, height - 40), rng.integers(40, width - 40), rng.integers(12, 36)
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2) if rng.random() < 0.5 else \
                (abs(yy - cy) < r) & (abs(xx - cx) < r)
            labels[inside] = k
            image[inside] = rng.integers(0, 256, 3)
        masks = (np.arange(CLEVR_ENTITIES)[:, None, None] == labels).astype(np.uint8) * 255
        present = np.isin(np.arange(CLEVR_ENTITIES), labels).astype(np.float32)
        records.append(encode_example({
            "image": image, "mask": masks[..., None],
            "x": rng.uniform(-3, 3, CLEVR_ENTITIES).astype(np.float32) * present,
            "y": rng.uniform(-3, 3, CLEVR_ENTITIES).astype(np.float32) * present,
            "shape": (rng.integers(1, 4, CLEVR_ENTITIES) * present).astype(np.uint8),
            "visibility": present}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_records(path, records)
    return path
