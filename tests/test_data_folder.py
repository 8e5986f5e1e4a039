"""Class-per-folder data sets (vislab.data.folder), on a generated fixture in the formats real
ones come in: mixed sizes and modes, a corrupt file, a text file, an empty class."""
import json

import pytest
import torch
from PIL import Image

from vislab.data.common import ImageDataset
from vislab.data.folder import FolderImages, image_folder, make_folder_fixture
from vislab.errors import UsageError


def test_one_folder_is_split_stratified_seeded_and_recorded(tmp_path):
    root = make_folder_fixture(tmp_path / "shapes", per_class=12)
    data = image_folder(root, image_size=32, seed=0)
    assert data.classes == ["circle", "square", "triangle"]  # the empty class is left out
    sizes = {s: len(data.splits[s][0]) for s in ("train", "val", "test")}
    assert sizes == {"train": 30, "val": 3, "test": 3}  # 12 per class: 10 / 1 / 1
    for s in ("val", "test"):
        assert sorted(data.splits[s][1].tolist()) == [0, 1, 2]  # every class in every split
    files = [f for s in data.split_files.values() for f in s]
    assert len(files) == len(set(files)) == 36
    again = image_folder(root, image_size=32, seed=0)
    assert again.split_files == data.split_files
    assert image_folder(root, image_size=32, seed=1).split_files != data.split_files
    assert json.loads(json.dumps(data.split_files)) == data.split_files  # recordable as JSON
    assert any("skipped 1 file(s)" in n and "broken.jpg" in n for n in data.notes)
    assert any("left out 1 class folder(s)" in n and "empty_class" in n for n in data.notes)


def test_images_are_rgb_uint8_of_the_asked_size_whatever_the_file(tmp_path):
    root = make_folder_fixture(tmp_path / "shapes", per_class=4)
    images, labels = image_folder(root, image_size=24).splits["train"]
    batch = images[0:3]
    assert batch.dtype == torch.uint8 and batch.shape == (3, 3, 24, 24)
    assert images[torch.tensor([0, 2])].shape == (2, 3, 24, 24)
    dataset = ImageDataset(images, labels, 0.5, 0.5)  # the labs' dataset takes it as it is
    x, y = dataset[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.long


def test_lazy_and_in_memory_stores_agree(tmp_path):
    root = make_folder_fixture(tmp_path / "shapes", per_class=4)
    data = image_folder(root, image_size=16)
    paths = data.splits["train"][0].paths
    lazy, eager = FolderImages(paths, 16, preload=False), FolderImages(paths, 16, preload=True)
    assert torch.equal(lazy[0:len(paths)], eager[0:len(paths)])
    assert torch.equal(lazy[3], eager[3])


def test_split_folders_are_used_and_a_missing_val_comes_from_train(tmp_path):
    root = make_folder_fixture(tmp_path / "shapes", per_class=12, splits=True)
    data = image_folder(root, image_size=16)
    assert all(f.startswith("test/") for f in data.split_files["test"])
    assert all(f.startswith("train/") for f in data.split_files["val"])
    assert any("no val/ folder" in n for n in data.notes)
    assert not set(data.split_files["val"]) & set(data.split_files["train"])


def one_class(root):
    (root / "cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "cats" / "a.png")


@pytest.mark.parametrize("make, words", [
    (lambda root: root.mkdir(), "no readable images"),
    (one_class, "only one class"),
    (lambda root: None, "no such folder"),
    (lambda root: (root / "val" / "a").mkdir(parents=True), "but no train/ folder"),
])
def test_folders_that_cannot_be_a_data_set_are_one_line(tmp_path, make, words):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(UsageError, match=words):
        image_folder(root)


def test_cli_prepares_the_fixture_as_a_data_set(tmp_path, monkeypatch, capsys):
    from vislab.cli import main

    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    assert main(["data", "prepare", "shapes-folder"]) == 0
    assert "shapes-folder is ready" in capsys.readouterr().out
    data = image_folder(tmp_path / "cache" / "shapes-folder", image_size=16)
    assert len(data.classes) == 3 and sum(len(v[0]) for v in data.splits.values()) == 120
