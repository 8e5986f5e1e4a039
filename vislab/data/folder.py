"""Your own images: any class-per-folder data set (torchvision's ImageFolder layout).

    ROOT/train/<class>/*.jpg   ROOT/val/<class>/...   ROOT/test/<class>/...
    or ROOT/<class>/*.jpg      (one folder: split here, seeded and stratified, and recorded)

`image_folder(ROOT, image_size)` returns the three splits as ImageDataset-compatible image
stores (uint8 (N, 3, S, S), decoded and resized to S x S on first use), the labels, the class
names (the folder names, sorted) and the split that was used (file lists, to write next to a
run). Files that are not images are ignored; images that cannot be decoded are skipped and
counted; a class folder without a readable image is left out, with a note. An empty folder, a
single class, or split folders whose classes disagree are one-line errors (UsageError).

A set whose decoded images fit in IN_MEMORY bytes is decoded once, with a few threads, and kept
in memory (training then reads tensors, at MNIST-5k speed); a larger one is decoded per item,
which a DataLoader with workers spreads over processes (RunConfig.workers).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vislab.errors import UsageError

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")
FRACTIONS = {"val": 0.15, "test": 0.15}  # of each class, when the folder has no split folders
IN_MEMORY = 1 << 30  # bytes of decoded images kept in memory


class FolderImages:
    """uint8 images (N, 3, S, S) read from files: indexable like a tensor (an int, a slice, a
    list or tensor of indices), decoded and resized on first use."""

    dtype, ndim = torch.uint8, 4

    def __init__(self, paths: list[Path], size: int, preload: bool | None = None):
        self.paths, self.size = list(paths), size
        self._cache = None
        nbytes = len(self.paths) * 3 * size * size
        if preload if preload is not None else nbytes <= IN_MEMORY:
            with ThreadPoolExecutor(max_workers=4) as pool:  # PIL decodes without the GIL
                images = list(pool.map(self.load, range(len(self.paths))))
            self._cache = torch.stack(images) if images else torch.zeros(0, 3, size, size, dtype=torch.uint8)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), 3, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> torch.Tensor:
        """Image i as uint8 (3, S, S): any mode converted to RGB, resized to S x S."""
        with Image.open(self.paths[i]) as image:
            image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
            return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)  # (3, S, S)

    def __getitem__(self, index):
        if self._cache is not None:
            return self._cache[index]
        if isinstance(index, (int, np.integer)) or (torch.is_tensor(index) and index.ndim == 0):
            return self.load(int(index))
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif torch.is_tensor(index) and index.dtype == torch.bool:
            index = index.nonzero().flatten().tolist()
        return torch.stack([self.load(int(i)) for i in index])


@dataclass
class FolderData:
    """The three splits of a class-per-folder set."""
    classes: list[str]
    splits: dict[str, tuple[FolderImages, torch.Tensor]]
    split_files: dict[str, list[str]]   # split -> files relative to the root (the record)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def readable(path: Path) -> bool:
    """Whether the file decodes (cheaply: a JPEG at reduced scale); a header alone can lie."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def scan(folder: Path, skipped: list[str]) -> dict[str, list[Path]]:
    """class name -> its readable image files (sorted); unreadable ones go to `skipped`."""
    classes = {}
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    with ThreadPoolExecutor(max_workers=4) as pool:
        for sub in subs:
            files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
            ok = list(pool.map(readable, files))
            classes[sub.name] = [p for p, good in zip(files, ok) if good]
            skipped += [p for p, good in zip(files, ok) if not good]
    return classes


def stratified_split(per_class: dict[str, list[Path]], seed: int) -> dict[str, dict[str, list[Path]]]:
    """Each class's files shuffled with `seed`, then cut into train / val / test by FRACTIONS
    (at least one val and one test image for a class of three or more)."""
    rng = np.random.default_rng(seed)
    out = {s: {} for s in SPLITS}
    for name, files in per_class.items():
        order = [files[i] for i in rng.permutation(len(files))]
        n = len(order)
        n_val = max(1, math.floor(n * FRACTIONS["val"])) if n >= 3 else 0
        n_test = max(1, math.floor(n * FRACTIONS["test"])) if n >= 3 else 0
        out["val"][name], out["test"][name] = order[:n_val], order[n_val:n_val + n_test]
        out["train"][name] = sorted(order[n_val + n_test:])
    return out


def image_folder(root: str | Path, image_size: int = 64, seed: int = 0,
                 preload: bool | None = None) -> FolderData:
    """The class-per-folder set at `root` (see the module's docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"--data {root}: no such folder (expected ROOT/<class>/*.jpg, or "
                         f"ROOT/train/<class>/..., ROOT/val/..., ROOT/test/...)")
    skipped, notes = [], []
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and "train" not in present:
        raise UsageError(f"--data {root} has {', '.join(present)}/ but no train/ folder")
    if present:
        per_split = {s: scan(root / s, skipped) for s in present}
        names = sorted(c for c, files in per_split["train"].items() if files)
        for s in present[1:]:
            extra = sorted(set(c for c, f in per_split[s].items() if f) - set(names))
            if extra:
                raise UsageError(f"--data {root}: {s}/ has classes that train/ has no images of: "
                                 f"{', '.join(extra[:5])}")
        splits = {s: {c: per_split[s].get(c, []) for c in names} for s in present}
        missing = [s for s in SPLITS if s not in present]
        if missing:  # e.g. train/ and test/ only: val (and test) come out of train, stratified
            cut = stratified_split(splits["train"], seed)
            splits["train"] = cut["train"]
            for s in missing:
                splits[s] = cut[s]
            notes.append(f"no {' or '.join(f'{s}/' for s in missing)} folder: "
                         f"{' and '.join(missing)} taken from train/ (seed {seed}, stratified)")
        empty_classes = sorted(c for c, f in per_split["train"].items() if not f)
    else:
        per_class = scan(root, skipped)
        names = sorted(c for c, files in per_class.items() if files)
        empty_classes = sorted(c for c, f in per_class.items() if not f)
        splits = stratified_split({c: per_class[c] for c in names}, seed)
        notes.append(f"no train/ val/ test/ folders: split each class {1 - sum(FRACTIONS.values()):.0%} / "
                     f"{FRACTIONS['val']:.0%} / {FRACTIONS['test']:.0%} (seed {seed}, stratified)")
    if empty_classes:
        notes.append(f"left out {len(empty_classes)} class folder(s) without a readable image: "
                     f"{', '.join(empty_classes[:5])}")
    if skipped:
        notes.append(f"skipped {len(skipped)} file(s) that are not readable images (first: "
                     f"{skipped[0].relative_to(root)})")
    if not names:
        raise UsageError(f"--data {root}: no readable images in class folders (expected "
                         f"ROOT/<class>/*.jpg or ROOT/train/<class>/*.jpg)")
    if len(names) < 2:
        raise UsageError(f"--data {root}: only one class ({names[0]}); a classifier needs at least "
                         f"two class folders")
    out, record = {}, {}
    for s in SPLITS:
        files = [(i, p) for i, c in enumerate(names) for p in splits[s].get(c, [])]
        labels = torch.tensor([i for i, _ in files], dtype=torch.long)
        out[s] = (FolderImages([p for _, p in files], image_size, preload), labels)
        record[s] = [p.relative_to(root).as_posix() for _, p in files]
    if not len(out["train"][0]):
        raise UsageError(f"--data {root}: the training split is empty")
    return FolderData(names, out, record, notes, [p.relative_to(root).as_posix() for p in skipped])


# --------------------------------------------------------------------- a fixture to test on

def fixture_root() -> Path:
    from vislab.data.common import cache_dir

    return cache_dir() / "shapes-folder"


def make_folder_fixture(root: Path, per_class: int = 12, seed: int = 0, splits: bool = False) -> Path:
    """A small class-per-folder set in the formats real ones come in: three classes of drawn
    shapes (JPEG RGB and greyscale, PNG with alpha and palette, mixed sizes), one corrupt file,
    one text file, and an empty class folder. With `splits`, in train/ and test/ folders."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    root = Path(root)
    shapes = ["circle", "square", "triangle"]
    for k, shape in enumerate(shapes):
        for i in range(per_class):
            split = ("test" if i % 4 == 3 else "train") if splits else ""
            folder = root / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            size = int(rng.integers(40, 120)), int(rng.integers(40, 120))
            image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 90, 3)))
            draw = ImageDraw.Draw(image)
            w, h = size
            box = [w * 0.2, h * 0.2, w * 0.8, h * 0.8]
            colour = tuple(int(v) for v in rng.integers(150, 256, 3))
            if shape == "circle":
                draw.ellipse(box, fill=colour)
            elif shape == "square":
                draw.rectangle(box, fill=colour)
            else:
                draw.polygon([(w * 0.5, h * 0.15), (w * 0.15, h * 0.85), (w * 0.85, h * 0.85)], fill=colour)
            kind = i % 4
            if kind == 0:
                image.save(folder / f"{shape}_{i:03d}.jpg", quality=90)
            elif kind == 1:
                image.convert("L").save(folder / f"{shape}_{i:03d}.jpeg")
            elif kind == 2:
                image.convert("RGBA").save(folder / f"{shape}_{i:03d}.png")
            else:
                image.convert("P").save(folder / f"{shape}_{i:03d}.png")
    first = root / ("train" if splits else "") / shapes[0]
    (first / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (first / "notes.txt").write_text("not an image\n")
    (root / ("train" if splits else "") / "empty_class").mkdir(parents=True, exist_ok=True)
    return root
