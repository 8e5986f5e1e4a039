"""dSprites: the exact factor grid of 737,280 binary 64x64 sprites, generated here or read from the
official file, with the factor arithmetic that beta-VAE traversals and disentanglement metrics need.

The grid follows the official file (dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz):

    factor       classes  values
    color        1        1.0 (white)
    shape        3        1, 2, 3 = square, ellipse, heart
    scale        6        linspace(0.5, 1, 6)
    orientation  40       linspace(0, 2*pi, 40)  (both ends included, so classes 0 and 39 look alike)
    posX         32       linspace(0, 1, 32)
    posY         32       linspace(0, 1, 32)

and image `index = latents_classes . LATENTS_BASES` (posY varies fastest, then posX, ...).

The sprites are redrawn here (4x4 supersampled implicit shapes, thresholded at half coverage); they
are not pixel-identical to DeepMind's, but every factor means the same thing. A position class is a
whole-pixel shift: posX class i moves the sprite i pixels right, posY class j moves it j pixels down,
so the full grid is 720 drawn sprites, each copied to 1024 places. The cache stores the images
bit-packed along the width (np.packbits): 737,280 x 64 x 8 bytes = 377 MB instead of 3 GB.

Images are float32 in {0, 1}, shape (1, 64, 64), like the official file's 0/1 pixels.
"""
from __future__ import annotations

import time
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vislab.data.common import MissingData, atomic_write, cache_dir, data_root

FACTORS = ("color", "shape", "scale", "orientation", "posX", "posY")
SHAPES = ("square", "ellipse", "heart")
LATENTS_SIZES = np.array([1, 3, 6, 40, 32, 32])
LATENTS_BASES = np.concatenate([LATENTS_SIZES[::-1].cumprod()[::-1][1:], [1]])  # [737280, ..., 32, 1]
N_IMAGES = int(LATENTS_SIZES.prod())  # 737,280
IMAGE_SIZE = 64
FACTOR_VALUES = (
    np.array([1.0]),                      # color
    np.array([1.0, 2.0, 3.0]),            # shape
    np.linspace(0.5, 1.0, 6),             # scale
    np.linspace(0.0, 2 * np.pi, 40),      # orientation
    np.linspace(0.0, 1.0, 32),            # posX
    np.linspace(0.0, 1.0, 32),            # posY
)

OFFICIAL_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
OFFICIAL_URL = "https://github.com/deepmind/dsprites-dataset/raw/master/" + OFFICIAL_NAME
UNIT = 8.0       # pixels per shape unit at scale 1 (a square at scale 1 is 16x16 pixels)
PATCH = 33       # a sprite is drawn in a 33x33 patch centred on its middle pixel
SUPERSAMPLE = 4  # 4x4 samples per pixel; a pixel is on when at least half of them are inside


def official_file() -> Path:
    """Where the official dSprites file is looked for: data_root()/dsprites/<official name>."""
    return data_root() / "dsprites" / OFFICIAL_NAME


def cache_file() -> Path:
    """Where the generated grid is cached, bit-packed: cache_dir()/dsprites/dsprites_packed.npy."""
    return cache_dir() / "dsprites" / "dsprites_packed.npy"


def official_cache_file() -> Path:
    """Where the official file's images are cached, bit-packed, after the first read."""
    return cache_dir() / "dsprites" / "dsprites_official_packed.npy"


# ----------------------------------------------------------------------------- factor arithmetic

def factor_index(factor: int | str) -> int:
    """A factor's column: 0..5, or its name ('shape', 'posX', ...)."""
    if isinstance(factor, str):
        if factor not in FACTORS:
            raise ValueError(f"unknown factor {factor!r}; factors are {', '.join(FACTORS)}")
        return FACTORS.index(factor)
    if not 0 <= factor < len(FACTORS):
        raise ValueError(f"factor must be 0..{len(FACTORS) - 1}, got {factor}")
    return int(factor)


def indices_of(classes: np.ndarray) -> np.ndarray:
    """Image indices (N,) of latent classes (N, 6): index = classes . LATENTS_BASES."""
    return np.asarray(classes, dtype=np.int64) @ LATENTS_BASES


def classes_of(indices: np.ndarray) -> np.ndarray:
    """Latent classes (N, 6) of image indices (N,); the inverse of indices_of."""
    indices = np.asarray(indices, dtype=np.int64)
    return (indices[..., None] // LATENTS_BASES) % LATENTS_SIZES  # (N, 6)


def values_of(classes: np.ndarray) -> np.ndarray:
    """Latent values (N, 6) float64 of latent classes (N, 6), as in the official latents_values."""
    classes = np.asarray(classes, dtype=np.int64)
    return np.stack([FACTOR_VALUES[f][classes[..., f]] for f in range(len(FACTORS))], axis=-1)


def all_latents_classes() -> np.ndarray:
    """The official `latents_classes` array: int64 (737280, 6), row i = classes of image i."""
    return classes_of(np.arange(N_IMAGES))


def all_latents_values() -> np.ndarray:
    """The official `latents_values` array: float64 (737280, 6), row i = values of image i."""
    return values_of(all_latents_classes())


def sample_classes(n: int, rng: np.random.Generator) -> np.ndarray:
    """n latent class vectors (n, 6) drawn uniformly from the grid."""
    return rng.integers(0, LATENTS_SIZES, size=(n, len(FACTORS)))


def sample_with_fixed_factor(n: int, factor: int | str, rng: np.random.Generator,
                             value: int | None = None) -> np.ndarray:
    """n class vectors (n, 6) that share one factor's class (`value`, or one drawn at random); the
    other factors vary uniformly. The beta-VAE and FactorVAE metrics are built on such batches."""
    f = factor_index(factor)
    classes = sample_classes(n, rng)
    classes[:, f] = rng.integers(LATENTS_SIZES[f]) if value is None else value
    return classes


def traversal(factor: int | str, base: np.ndarray) -> np.ndarray:
    """Class vectors (size_f, 6) that run `factor` through all its classes and keep the others at
    `base` (6,): one row of a latent-traversal figure."""
    f = factor_index(factor)
    classes = np.repeat(np.asarray(base, dtype=np.int64)[None], LATENTS_SIZES[f], axis=0)
    classes[:, f] = np.arange(LATENTS_SIZES[f])
    return classes


# ----------------------------------------------------------------------------- drawing

def inside_shape(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether points (u right, v up, in shape units, sprite centred at 0) lie inside shape
    0 (square, 2x2), 1 (ellipse, 3x1.5) or 2 (heart, about 2.3x2.2)."""
    if shape == 0:
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if shape == 1:
        return (u / 1.5) ** 2 + (v / 0.75) ** 2 <= 1
    if shape == 2:
        v = v + 0.118  # centre the heart's bounding box (it spans v in [-1, 1.236])
        return (u ** 2 + v ** 2 - 1) ** 3 - u ** 2 * v ** 3 <= 0
    raise ValueError(f"shape must be 0, 1 or 2, got {shape}")


def draw_sprite(shape: int, scale: float, angle: float, center: tuple[float, float],
                size: tuple[int, int], unit: float = UNIT, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Binary image (H, W) bool of one sprite: `center` (row, col) in pixels (pixel i spans [i, i+1)),
    rotated counter-clockwise by `angle` radians, `scale` times `unit` pixels per shape unit.
    A pixel is on when at least half of its supersample x supersample samples are inside."""
    height, width = size
    offsets = (np.arange(supersample) + 0.5) / supersample
    rows = (np.arange(height)[:, None] + offsets).reshape(-1)  # (H*s,)
    cols = (np.arange(width)[:, None] + offsets).reshape(-1)   # (W*s,)
    x = (cols[None, :] - center[1]) / (scale * unit)            # (1, W*s), right
    y = (center[0] - rows[:, None]) / (scale * unit)            # (H*s, 1), up
    angle = angle % (2 * np.pi)  # 2*pi draws exactly like 0
    cos, sin = np.cos(angle), np.sin(angle)
    inside = inside_shape(shape, cos * x + sin * y, -sin * x + cos * y)  # (H*s, W*s)
    coverage = inside.reshape(height, supersample, width, supersample).mean(axis=(1, 3))
    return coverage >= 0.5


@lru_cache(maxsize=None)
def sprite_patch(shape: int, scale: int, orientation: int) -> np.ndarray:
    """The (33, 33) bool patch of one (shape, scale, orientation) class triple, centred on pixel 16
    (remembered: 720 patches of 1 KB; treat the result as read-only)."""
    middle = PATCH / 2
    return draw_sprite(shape, FACTOR_VALUES[2][scale], FACTOR_VALUES[3][orientation],
                       (middle, middle), (PATCH, PATCH))


def render(indices: np.ndarray) -> np.ndarray:
    """Images (N, 64, 64) uint8 in {0, 1} of grid indices (N,), drawn one by one (no cache needed)."""
    classes = classes_of(np.atleast_1d(indices))
    images = np.zeros((len(classes), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for image, (_, shape, scale, orientation, pos_x, pos_y) in zip(images, classes.tolist()):
        image[pos_y:pos_y + PATCH, pos_x:pos_x + PATCH] = sprite_patch(shape, scale, orientation)
    return images


def render_block(shape: int, scale: int, orientation: int) -> np.ndarray:
    """The 1024 images (1024, 64, 64) bool of one (shape, scale, orientation): indices
    [b, b + 1024) with b = (shape, scale, orientation) . bases, posX-major, posY fastest."""
    patch = sprite_patch(shape, scale, orientation)  # (33, 33)
    n_x, n_y = LATENTS_SIZES[4], LATENTS_SIZES[5]
    column = np.zeros((n_y, IMAGE_SIZE, PATCH), dtype=bool)  # (posY, H, 33): the patch moved down
    for y in range(n_y):
        column[y, y:y + PATCH] = patch
    block = np.zeros((n_x, n_y, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)  # (posX, posY, H, W)
    for x in range(n_x):
        block[x, :, :, x:x + PATCH] = column
    return block.reshape(n_x * n_y, IMAGE_SIZE, IMAGE_SIZE)


def blocks() -> list[tuple[int, int, int]]:
    """The 720 (shape, scale, orientation) class triples in grid order."""
    return [(s, c, o) for s in range(LATENTS_SIZES[1]) for c in range(LATENTS_SIZES[2])
            for o in range(LATENTS_SIZES[3])]


def pack(images: np.ndarray) -> np.ndarray:
    """Bit-pack binary images (N, 64, 64) into (N, 64, 8) uint8 (8 pixels per byte, along the width)."""
    return np.packbits(images.astype(bool), axis=-1)


def unpack(packed: np.ndarray) -> np.ndarray:
    """Binary images (N, 64, 64) uint8 in {0, 1} from packed (N, 64, 8)."""
    return np.unpackbits(packed, axis=-1)


# ----------------------------------------------------------------------------- caches and files

def write_generated_cache() -> Path:
    """Generate the full grid into the bit-packed cache (atomically) and return its path."""
    path = cache_file()
    with atomic_write(path) as tmp:
        packed = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                           shape=(N_IMAGES, IMAGE_SIZE, IMAGE_SIZE // 8))
        for b, (shape, scale, orientation) in enumerate(blocks()):
            packed[b * 1024:(b + 1) * 1024] = pack(render_block(shape, scale, orientation))
        packed.flush()
        del packed
    return path


def read_official_images_packed(npz: Path, chunk: int = 8192) -> np.ndarray:
    """Stream `imgs` (N, 64, 64) uint8 out of the official .npz and bit-pack it, chunk by chunk, so
    the 3 GB of raw pixels never sit in memory at once. Returns (N, 64, 8) uint8."""
    fmt = np.lib.format
    with zipfile.ZipFile(npz) as archive, archive.open("imgs.npy") as f:
        version = fmt.read_magic(f)
        shape, fortran, dtype = (fmt.read_array_header_1_0(f) if version == (1, 0)
                                 else fmt.read_array_header_2_0(f))
        if len(shape) != 3 or shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or dtype != np.uint8 or fortran:
            raise ValueError(f"imgs is {dtype} {shape}, expected uint8 (N, 64, 64)")
        packed = np.empty((shape[0], IMAGE_SIZE, IMAGE_SIZE // 8), dtype=np.uint8)
        for start in range(0, shape[0], chunk):
            n = min(chunk, shape[0] - start)
            raw = f.read(n * IMAGE_SIZE * IMAGE_SIZE)
            if len(raw) != n * IMAGE_SIZE * IMAGE_SIZE:
                raise ValueError(f"imgs ends after {start} images")
            packed[start:start + n] = pack(np.frombuffer(raw, np.uint8).reshape(n, IMAGE_SIZE, IMAGE_SIZE))
    return packed


def write_official_cache() -> Path:
    """Bit-pack the official file's images into the cache (atomically) and return the cache path."""
    npz, path = official_file(), official_cache_file()
    try:
        packed = read_official_images_packed(npz)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise MissingData(f"{npz} is corrupt or not the official dSprites file ({exc}); "
                          f"{_how_to_get()}") from None
    if len(packed) != N_IMAGES:
        raise MissingData(f"{npz} holds {len(packed)} images, expected {N_IMAGES}; {_how_to_get()}")
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, packed)
    return path


def _how_to_get() -> str:
    return (f"download {OFFICIAL_URL} to {official_file()} (`vislab data prepare dsprites --download`), "
            f"or delete it and use the generated grid (`vislab data prepare dsprites`)")


def load_packed(path: Path, source: str) -> np.ndarray:
    """Memory-map a packed cache (737280, 64, 8) uint8; a short or damaged file is reported, not read."""
    try:
        packed = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise MissingData(f"the dSprites cache {path} is corrupt ({exc}); delete it and run "
                          f"`vislab data prepare dsprites` to rebuild it from {source}") from None
    if packed.shape != (N_IMAGES, IMAGE_SIZE, IMAGE_SIZE // 8) or packed.dtype != np.uint8:
        raise MissingData(f"the dSprites cache {path} holds {packed.dtype} {packed.shape}, expected uint8 "
                          f"{(N_IMAGES, IMAGE_SIZE, IMAGE_SIZE // 8)}; delete it and run "
                          f"`vislab data prepare dsprites` to rebuild it from {source}")
    return packed


def prepare() -> Path:
    """Build the packed cache if it is missing (from the official file when present, else generated)
    and return its path. Prints what it does and how long it took."""
    official = official_file().exists()
    path = official_cache_file() if official else cache_file()
    if path.exists():
        print(f"dSprites cache already at {path}")
        return path
    start = time.perf_counter()
    if official:
        print(f"packing the official file {official_file()} into {path} ...", flush=True)
        write_official_cache()
    else:
        print(f"generating the {N_IMAGES:,} dSprites images into {path} ...", flush=True)
        write_generated_cache()
    print(f"done in {time.perf_counter() - start:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
    return path


class DSprites(Dataset):
    """dSprites images with their latent classes and values.

    `packed` (N, 64, 8) uint8 holds the bit-packed images; `latents_classes` (N, 6) int64 and
    `latents_values` (N, 6) float64 are the official arrays. Item i is (image (1, 64, 64) float32 in
    {0, 1}, latents_classes[i] (6,) int64). Build the full set with `dsprites_grid()`.
    """

    def __init__(self, packed: np.ndarray, latents_classes: np.ndarray, latents_values: np.ndarray):
        if packed.ndim != 3 or packed.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE // 8):
            raise ValueError(f"packed must be (N, 64, 8), got {packed.shape}")
        if not len(packed) == len(latents_classes) == len(latents_values):
            raise ValueError(f"{len(packed)} images but {len(latents_classes)} classes "
                             f"and {len(latents_values)} values")
        self.packed, self.latents_classes, self.latents_values = packed, latents_classes, latents_values

    def __len__(self) -> int:
        return len(self.packed)

    def images(self, indices) -> torch.Tensor:
        """Images (N, 1, 64, 64) float32 in {0, 1} at `indices` (N,)."""
        indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        return torch.from_numpy(unpack(self.packed[indices])[:, None].astype(np.float32))  # (N, 1, 64, 64)

    def __getitem__(self, i: int):
        return self.images([i])[0], torch.from_numpy(self.latents_classes[i].astype(np.int64))


def dsprites_grid() -> DSprites:
    """The full grid: the official file's images when it is present under data_root(), else the
    generated grid (cached in datasets/cache/ on first use; see `prepare`)."""
    npz = official_file()
    if npz.exists():
        cache = official_cache_file()
        if not cache.exists():
            prepare()
        try:
            with np.load(npz) as f:
                classes, values = f["latents_classes"].astype(np.int64), f["latents_values"]
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise MissingData(f"{npz} is corrupt ({exc}); {_how_to_get()}") from None
        return DSprites(load_packed(cache, str(npz)), classes, values)
    if not cache_file().exists():
        prepare()
    classes = all_latents_classes()
    return DSprites(load_packed(cache_file(), "the generator"), classes, values_of(classes))
