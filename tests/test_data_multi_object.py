"""Multi-object scenes: masks that partition the image, background first, object counts in range,
determinism from the seed; the CLEVRTex-layout loader on a small folder written here."""
import numpy as np
import pytest
import torch
from PIL import Image

from vislab.data import MissingData
from vislab.data import multi_object as mo


def assert_partition(masks):
    assert masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(masks.sum(0), torch.ones(masks.shape[1:]))  # exactly one channel per pixel


@pytest.mark.parametrize("style", mo.STYLES)
@pytest.mark.parametrize("size", [64, 128])
def test_masks_partition_the_image(style, size):
    ds = mo.MultiObjectScenes(style, n=6, size=size)
    for i in range(len(ds)):
        image, masks = ds[i]
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert 0 <= image.min() and image.max() <= 1
        assert masks.shape == (ds.max_objects + 1, size, size)
        assert_partition(masks)


@pytest.mark.parametrize("style, low, high", [("multi-dsprites", 1, 4), ("multi-dsprites", 2, 3),
                                               ("tetrominoes", 3, 3), ("tetrominoes", 1, 2)])
def test_object_counts_in_range(style, low, high):
    ds = mo.MultiObjectScenes(style, n=40, min_objects=low, max_objects=high)
    counts = []
    for i in range(len(ds)):
        _, masks = ds[i]
        present = masks.flatten(1).sum(1) > 0  # (K+1,)
        count = int(present[1:].sum())
        assert present[0]  # some background is always visible
        assert present[1:count + 1].all() and not present[count + 1:].any()  # objects first, padding last
        counts.append(count)
    assert min(counts) >= low and max(counts) <= high
    assert set(counts) == set(range(low, high + 1))


def test_multi_dsprites_background_first_one_colour_per_mask():
    ds = mo.MultiObjectScenes("multi-dsprites", n=20, seed=3)
    for i in range(len(ds)):
        image, labels = ds.scene(i)
        colours = [np.unique(image[:, labels == k], axis=1) for k in np.unique(labels)]
        assert all(c.shape[1] == 1 for c in colours)  # flat colours, one per entity
        assert len({tuple(c[:, 0]) for c in colours}) == len(colours)  # all distinct


def test_multi_dsprites_sprites_stay_visible_under_occlusion():
    ds = mo.MultiObjectScenes("multi-dsprites", n=30, min_objects=4, max_objects=4, seed=1)
    for i in range(len(ds)):
        _, labels = ds.scene(i)
        visible = np.bincount(labels.ravel(), minlength=5)[1:]
        assert (visible >= 10).all()


def test_tetrominoes_are_whole_pieces_without_overlap():
    assert len(mo.TETROMINOES) == 19
    assert len({tuple(map(tuple, t)) for t in mo.TETROMINOES}) == 19
    for size in (64, 128):
        ds = mo.MultiObjectScenes("tetrominoes", n=10, size=size)
        block = size // mo.GRID
        for i in range(len(ds)):
            image, labels = ds.scene(i)
            areas = np.bincount(labels.ravel())[1:]
            assert (areas == 4 * block * block).all()
            assert (image[:, labels == 0] == 0).all()  # black background
            for k in range(1, labels.max() + 1):
                colour = np.unique(image[:, labels == k], axis=1)
                assert colour.shape[1] == 1 and any((colour[:, 0] == c).all() for c in mo.TETROMINO_COLOURS)


@pytest.mark.parametrize("style", mo.STYLES)
def test_same_seed_same_scenes_different_seed_different_scenes(style):
    a, b = mo.MultiObjectScenes(style, n=5, seed=7), mo.MultiObjectScenes(style, n=5, seed=7)
    c = mo.MultiObjectScenes(style, n=5, seed=8)
    for i in range(5):
        assert all(torch.equal(x, y) for x, y in zip(a[i], b[i]))
    assert not all(torch.equal(a[i][0], c[i][0]) for i in range(5))
    assert not torch.equal(a[0][0], mo.MultiObjectScenes(style, "test", n=5, seed=7)[0][0])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="style"):
        mo.MultiObjectScenes("clevr")
    with pytest.raises(ValueError, match="size"):
        mo.MultiObjectScenes(size=96)
    with pytest.raises(ValueError, match="min_objects"):
        mo.MultiObjectScenes(min_objects=3, max_objects=2)


# ----------------------------------------------------------------------------- CLEVRTex-layout folders

def write_scenes(folder, prefix, count, width=320, height=240):
    """`count` scenes in CLEVRTex's layout: RGBA image + one-channel flat mask (0 background, 1..3)."""
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / str(i // 4)  # the parts unpack into numbered subfolders
        sub.mkdir(parents=True, exist_ok=True)
        labels = np.zeros((height, width), np.uint8)
        for k in range(1, 4):
            top, left = rng.integers(30, 150), rng.integers(70, 200)
            labels[top:top + 40, left:left + 50] = k
        palette = np.array([[40, 40, 40, 255], [200, 0, 0, 255], [0, 200, 0, 255], [0, 0, 200, 255]], np.uint8)
        Image.fromarray(palette[labels]).save(sub / f"{prefix}{i:06d}.png")
        Image.fromarray(labels).save(sub / f"{prefix}{i:06d}_flat.png")


def test_clevrtex_folder_loads_with_partitioning_masks(tmp_path):
    folder = tmp_path / "clevrtex_full"
    write_scenes(folder, "CLEVRTEX_full_", 10)
    (folder / "0" / "CLEVRTEX_full_000000.json").write_text("{}")  # metadata is ignored
    train, val, test = (mo.clevrtex(s, size=64, folder=folder) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (8, 1, 1)
    assert test.images[0].name == "CLEVRTEX_full_000000.png"  # test = first 10% by number
    image, masks = train[0]
    assert image.shape == (3, 64, 64) and masks.shape == (11, 64, 64)
    assert_partition(masks)
    # the colours in the image follow the mask (red object 1, green 2, blue 3)
    for k, channel in ((1, 0), (2, 1), (3, 2)):
        inside = masks[k].bool()
        if inside.any():
            assert image[channel][inside].mean() > 0.5


def test_clevr_with_masks_reads_the_clevrtex_layout(tmp_path):
    write_scenes(tmp_path / "clevr_with_masks", "CLEVR_masks_", 10)
    ds = mo.clevr_with_masks("train", size=128, folder=tmp_path / "clevr_with_masks")
    image, masks = ds[3]
    assert image.shape == (3, 128, 128)
    assert_partition(masks)


def test_missing_clevrtex_names_the_expected_files_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    with pytest.raises(MissingData) as err:
        mo.clevrtex("train")
    message = str(err.value)
    assert str(tmp_path / "clevrtex" / "clevrtex_full") in message
    assert "CLEVRTEX_full_000000.png" in message and mo.CLEVRTEX_URL in message


def test_missing_mask_file_is_named(tmp_path):
    write_scenes(tmp_path, "CLEVR_masks_", 10)
    (tmp_path / "0" / "CLEVR_masks_000002_flat.png").unlink()
    ds = mo.clevr_with_masks("train", folder=tmp_path)
    with pytest.raises(MissingData, match="CLEVR_masks_000002_flat.png"):
        ds[0]


# ----------------------------------------------------------------------------- CLEVR-with-masks' TFRecord

@pytest.fixture(scope="module")
def clevr_tfrecords(tmp_path_factory):
    return mo.make_clevr_masks_fixture(tmp_path_factory.mktemp("clevr") / mo.CLEVR_MASKS_FILE, n=10)


def test_clevr_with_masks_converts_from_deepminds_format_and_loads(clevr_tfrecords, tmp_path):
    from vislab.data.tfrecord import parse_example, read_records
    out = tmp_path / "clevr_with_masks"
    assert mo.convert_clevr_with_masks(clevr_tfrecords, out) == 10
    train, val, test = (mo.clevr_with_masks(s, size=64, folder=out) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (8, 1, 1)
    # the converted scene is the record's image and the entity of each pixel, untouched
    first = parse_example(next(read_records(clevr_tfrecords)))
    saved = np.array(Image.open(out / "00" / "CLEVR_masks_000000.png"))
    assert np.array_equal(saved, first["image"].reshape(240, 320, 3))
    masks = first["mask"].reshape(11, 240, 320)
    flat = np.array(Image.open(out / "00" / "CLEVR_masks_000000_flat.png"))
    assert np.array_equal(masks[flat, np.arange(240)[:, None], np.arange(320)], np.full((240, 320), 255))
    for ds in (train, test):
        image, masks = ds[0]
        assert image.shape == (3, 64, 64) and masks.shape == (11, 64, 64)
        assert_partition(masks)
        assert masks[1:].sum() > 0  # objects survive the crop and resize


def test_a_corrupt_clevr_file_is_named_and_leaves_no_half_converted_folder(clevr_tfrecords, tmp_path):
    cut = tmp_path / mo.CLEVR_MASKS_FILE
    cut.write_bytes(clevr_tfrecords.read_bytes()[:len(clevr_tfrecords.read_bytes()) // 2])
    out = tmp_path / "clevr_with_masks"
    with pytest.raises(MissingData, match=str(cut)) as err:
        mo.convert_clevr_with_masks(cut, out)
    assert mo.CLEVR_MASKS_URL in str(err.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [cut]


def test_prepare_clevr_masks_converts_the_downloaded_file(clevr_tfrecords, tmp_path, monkeypatch, capsys):
    import argparse
    import shutil
    from vislab.data import cli
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    parser = argparse.ArgumentParser(prog="vislab")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "prepare", "clevr-masks"])
    assert args.run(args) == 1  # nothing there yet: says where the file goes
    assert str(tmp_path / mo.CLEVR_MASKS_FILE) in capsys.readouterr().out
    shutil.copy(clevr_tfrecords, tmp_path / mo.CLEVR_MASKS_FILE)
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "converted 10 scenes" in out and str(tmp_path / "clevr_with_masks") in out
    assert len(mo.clevr_with_masks("train")) == 8
