"""Oxford-IIIT Pets: the synthetic fixture has the exact on-disk layout, and loads through the same
loader (torchvision's OxfordIIITPet) as the real data; trimap 2 is background, 1 and 3 are pet."""
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import OxfordIIITPet

from vislab.data import MissingData
from vislab.data import pets as p


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a data test tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def fixture_root(tmp_path):
    p.make_pets_fixture(tmp_path, n_trainval=8, n_test=4)
    return tmp_path


def test_fixture_has_the_pets_layout(fixture_root):
    folder = fixture_root / "oxford-iiit-pet"
    assert sorted(x.name for x in folder.iterdir()) == ["annotations", "images"]
    names = [line.split()[0] for line in (folder / "annotations" / "trainval.txt").read_text().splitlines()]
    test_names = [line.split()[0] for line in (folder / "annotations" / "test.txt").read_text().splitlines()]
    assert len(names) == 8 and len(test_names) == 4 and not set(names) & set(test_names)
    for line in (folder / "annotations" / "trainval.txt").read_text().splitlines():
        name, class_id, species, breed_id = line.split()  # torchvision's four columns
        assert 1 <= int(class_id) <= 37 and int(species) in (1, 2) and int(breed_id) >= 1
        assert Image.open(folder / "images" / f"{name}.jpg").format == "JPEG"
        trimap = Image.open(folder / "annotations" / "trimaps" / f"{name}.png")
        assert trimap.format == "PNG" and trimap.mode == "L"
        assert set(np.unique(np.array(trimap))) == {1, 2, 3}


def test_fixture_loads_through_torchvision_oxford_iiit_pet(fixture_root):
    ds = p.oxford_pets("trainval", size=64, root=fixture_root)
    assert isinstance(ds.pets, OxfordIIITPet) and len(ds) == 8
    assert ds.pets.classes == ["Abyssinian", "American Bulldog", "Beagle", "Bengal"]
    assert len(p.oxford_pets("test", root=fixture_root)) == 4
    image, mask = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) == {0.0, 1.0}


def test_trimap_two_is_background_one_and_three_are_pet(fixture_root):
    trimap = np.full((40, 60), 2, np.uint8)
    trimap[10:30, 10:20], trimap[10:30, 30:40] = 1, 3
    name = (fixture_root / "oxford-iiit-pet" / "annotations" / "trainval.txt").read_text().split()[0]
    Image.fromarray(trimap).save(fixture_root / "oxford-iiit-pet" / "annotations" / "trimaps" / f"{name}.png")
    _, mask = p.PetsSegmentation("trainval", size=20, root=fixture_root)[0]
    expected = np.array(Image.fromarray((trimap != 2).astype(np.uint8)).resize((20, 20), Image.NEAREST))
    np.testing.assert_array_equal(mask[0].numpy(), expected)
    assert mask[0, 10, 5] == 1 and mask[0, 10, 12] == 1 and mask[0, 10, 17] == 0 and mask[0, 1, 1] == 0


def test_fixture_is_deterministic_from_the_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        p.make_pets_fixture(tmp_path / name, n_trainval=3, n_test=1, seed=seed)

    def files(name):
        folder = tmp_path / name / "oxford-iiit-pet"
        return {f.relative_to(folder): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}

    assert files("a") == files("b")
    assert files("a").keys() == files("c").keys() and files("a") != files("c")


def test_missing_pets_names_the_folder_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingData) as err:
        p.oxford_pets("trainval", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "oxford-iiit-pet" / "images") in message
    assert "images.tar.gz" in message and p.PETS_URL in message and "pets-synthetic" in message


def test_a_missing_listed_image_is_named(fixture_root):
    ds = p.oxford_pets("trainval", root=fixture_root)
    name = (fixture_root / "oxford-iiit-pet" / "annotations" / "trainval.txt").read_text().split()[0]
    (fixture_root / "oxford-iiit-pet" / "images" / f"{name}.jpg").unlink()
    with pytest.raises(MissingData, match=f"{name}.jpg"):
        ds[0]


def test_fixture_is_written_atomically(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = p.synthetic_pet

    def failing(rng):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return real(rng)

    monkeypatch.setattr(p, "synthetic_pet", failing)
    with pytest.raises(RuntimeError):
        p.make_pets_fixture(tmp_path, n_trainval=4, n_test=2)
    assert list(tmp_path.iterdir()) == []


def test_pets_synthetic_generates_into_the_cache_once(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path))
    calls = []
    real = p.make_pets_fixture
    monkeypatch.setattr(p, "make_pets_fixture", lambda root: calls.append(root) or real(root, 6, 2))
    ds = p.pets_synthetic("trainval", size=32)
    assert len(ds) == 6 and ds.root == tmp_path / "pets-synthetic"
    assert len(p.pets_synthetic("test")) == 2 and len(calls) == 1
