"""dSprites: the factor grid's size and indexing, the drawn images, the caches and the official file.

The full 737,280-image set is never generated here: the generator is tested block by block and
index by index, and the indexing maths on the whole grid (cheap: integers only)."""
import numpy as np
import pytest

from vislab.data import MissingData
from vislab.data import dsprites as d


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "full"))
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))


def test_grid_has_the_official_sizes_and_bases():
    assert d.LATENTS_SIZES.tolist() == [1, 3, 6, 40, 32, 32]
    assert d.LATENTS_BASES.tolist() == [737280, 245760, 40960, 1024, 32, 1]
    assert d.N_IMAGES == 737_280
    assert [len(v) for v in d.FACTOR_VALUES] == d.LATENTS_SIZES.tolist()


def test_latents_arrays_cover_the_grid_in_order():
    classes = d.all_latents_classes()
    values = d.all_latents_values()
    assert classes.shape == values.shape == (737_280, 6)
    assert classes.dtype == np.int64 and values.dtype == np.float64
    np.testing.assert_array_equal(d.indices_of(classes), np.arange(737_280))  # index = classes . bases
    assert classes[1].tolist() == [0, 0, 0, 0, 0, 1]   # posY varies fastest
    assert classes[32].tolist() == [0, 0, 0, 0, 1, 0]  # then posX
    assert classes[1024].tolist() == [0, 0, 0, 1, 0, 0]
    assert classes[245760].tolist() == [0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("index, expected", [
    (0, [1.0, 1.0, 0.5, 0.0, 0.0, 0.0]),
    (737_279, [1.0, 3.0, 1.0, 2 * np.pi, 1.0, 1.0]),
    (1 * 245760 + 2 * 40960 + 10 * 1024 + 5 * 32 + 7, [1.0, 2.0, 0.7, 10 * 2 * np.pi / 39, 5 / 31, 7 / 31]),
])
def test_values_at_a_few_indices(index, expected):
    np.testing.assert_allclose(d.values_of(d.classes_of([index]))[0], expected, rtol=0, atol=1e-12)


def test_classes_and_indices_are_inverse():
    indices = np.random.default_rng(0).integers(0, d.N_IMAGES, size=1000)
    np.testing.assert_array_equal(d.indices_of(d.classes_of(indices)), indices)


def test_orientation_includes_both_ends():
    orientation = d.FACTOR_VALUES[3]
    assert len(orientation) == 40 and orientation[0] == 0.0 and orientation[-1] == 2 * np.pi
    first, last = d.indices_of([[0, 2, 5, 0, 9, 20], [0, 2, 5, 39, 9, 20]])
    np.testing.assert_array_equal(d.render([first]), d.render([last]))  # 0 and 2*pi look the same
    quarter = d.indices_of([[0, 2, 5, 5, 9, 20]])
    assert not np.array_equal(d.render([first]), d.render(quarter))


def test_images_are_binary_and_nonempty():
    images = d.render(np.random.default_rng(1).integers(0, d.N_IMAGES, size=50))
    assert images.shape == (50, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) <= {0, 1}
    assert images.reshape(50, -1).sum(1).min() > 20


def test_a_position_class_is_a_one_pixel_shift():
    base = np.array([0, 1, 3, 7, 10, 12])
    image = d.render(d.indices_of([base]))[0]
    right = d.render(d.indices_of([base + [0, 0, 0, 0, 1, 0]]))[0]  # posX + 1
    down = d.render(d.indices_of([base + [0, 0, 0, 0, 0, 1]]))[0]   # posY + 1
    np.testing.assert_array_equal(np.roll(image, 1, axis=1), right)
    np.testing.assert_array_equal(np.roll(image, 1, axis=0), down)


def test_sprites_grow_with_scale():
    for shape in range(3):
        areas = [d.sprite_patch(shape, scale, 0).sum() for scale in range(6)]
        assert areas == sorted(areas) and areas[0] < areas[-1] / 3


@pytest.mark.parametrize("block", [(0, 0, 0), (2, 5, 39), (1, 3, 17)])
def test_block_generation_matches_drawing_each_index(block):
    start = d.indices_of([[0, *block, 0, 0]])[0]
    np.testing.assert_array_equal(d.render_block(*block), d.render(np.arange(start, start + 1024)))


def test_blocks_are_in_grid_order():
    blocks = d.blocks()
    assert len(blocks) == 720
    starts = d.indices_of([[0, *b, 0, 0] for b in blocks])
    np.testing.assert_array_equal(starts, np.arange(720) * 1024)


def test_pack_and_unpack_round_trip():
    images = d.render_block(1, 2, 3)[:64]
    packed = d.pack(images)
    assert packed.shape == (64, 64, 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(d.unpack(packed), images)


def test_dataset_items_and_images():
    block = d.render_block(0, 0, 0)  # indices 0..1023
    ds = d.DSprites(d.pack(block), d.all_latents_classes()[:1024], d.all_latents_values()[:1024])
    image, classes = ds[37]
    assert image.shape == (1, 64, 64) and str(image.dtype) == "torch.float32"
    assert classes.tolist() == d.classes_of([37])[0].tolist()
    np.testing.assert_array_equal(ds.images([5, 900])[:, 0].numpy(), block[[5, 900]])


def test_sampling_with_one_factor_fixed():
    rng = np.random.default_rng(0)
    classes = d.sample_with_fixed_factor(500, "scale", rng)
    assert classes.shape == (500, 6)
    assert len(np.unique(classes[:, 2])) == 1
    assert (classes < d.LATENTS_SIZES).all() and (classes >= 0).all()
    for f in (1, 3, 4, 5):  # the others vary
        assert len(np.unique(classes[:, f])) > 1
    assert (d.sample_with_fixed_factor(10, 3, rng, value=7)[:, 3] == 7).all()


def test_sampling_is_deterministic_from_the_seed():
    a = d.sample_classes(100, np.random.default_rng(3))
    b = d.sample_classes(100, np.random.default_rng(3))
    c = d.sample_classes(100, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_traversal_varies_one_factor_through_all_its_values():
    base = np.array([0, 2, 1, 5, 6, 7])
    rows = d.traversal("orientation", base)
    assert rows.shape == (40, 6)
    assert rows[:, 3].tolist() == list(range(40))
    np.testing.assert_array_equal(np.delete(rows, 3, axis=1), np.delete(np.tile(base, (40, 1)), 3, axis=1))
    with pytest.raises(ValueError, match="unknown factor"):
        d.traversal("colour", base)


def test_generated_cache_is_never_half_written(monkeypatch):
    calls = {"n": 0}
    real = d.render_block

    def failing(*block):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        return real(*block)

    monkeypatch.setattr(d, "render_block", failing)
    with pytest.raises(RuntimeError):
        d.write_generated_cache()
    folder = d.cache_file().parent
    assert not d.cache_file().exists()
    assert list(folder.iterdir()) == []  # no temporary left either


def test_a_corrupt_cache_is_reported_with_how_to_rebuild_it():
    path = d.cache_file()
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((10, 64, 8), np.uint8))  # wrong size
    with pytest.raises(MissingData, match="dsprites_packed.npy.*vislab data prepare dsprites"):
        d.load_packed(path, "the generator")
    full = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(d.N_IMAGES, 64, 8))
    del full
    with open(path, "r+b") as f:  # the right header, then the data cut short
        f.truncate(1000)
    with pytest.raises(MissingData, match="dsprites_packed.npy is corrupt"):
        d.load_packed(path, "the generator")


def _official_like(path, images):
    """A file in the official layout (imgs, latents_values, latents_classes), any number of images."""
    indices = np.arange(len(images))
    np.savez_compressed(path, imgs=images, latents_values=d.values_of(d.classes_of(indices)),
                        latents_classes=d.classes_of(indices))


def test_official_images_are_streamed_and_packed(tmp_path):
    images = d.render(np.arange(0, 737280, 73728)).astype(np.uint8)  # 10 images
    _official_like(tmp_path / "small.npz", images)
    packed = d.read_official_images_packed(tmp_path / "small.npz", chunk=3)
    np.testing.assert_array_equal(d.unpack(packed), images)


def test_an_official_file_of_the_wrong_size_is_reported():
    npz = d.official_file()
    npz.parent.mkdir(parents=True)
    _official_like(npz, d.render(np.arange(4)))
    with pytest.raises(MissingData) as err:
        d.dsprites_grid()
    message = str(err.value)
    assert str(npz) in message and "737280" in message and d.OFFICIAL_URL in message
    assert not d.official_cache_file().exists()


def test_a_damaged_official_file_names_the_file_and_where_to_get_it():
    npz = d.official_file()
    npz.parent.mkdir(parents=True)
    npz.write_bytes(b"not a zip file")
    with pytest.raises(MissingData) as err:
        d.dsprites_grid()
    assert str(npz) in str(err.value) and d.OFFICIAL_URL in str(err.value)


def test_the_official_file_is_preferred_packed_once_and_read_with_its_own_latents(monkeypatch, capsys):
    monkeypatch.setattr(d, "N_IMAGES", 8)  # a stand-in official file of 8 images, same layout
    images = d.render(np.arange(0, 737280, 92160))
    npz = d.official_file()
    npz.parent.mkdir(parents=True)
    _official_like(npz, images)
    ds = d.dsprites_grid()
    assert "packing the official file" in capsys.readouterr().out
    assert d.official_cache_file().exists() and not d.cache_file().exists()
    assert len(ds) == 8 and ds.latents_classes.dtype == np.int64
    np.testing.assert_array_equal(ds.images(np.arange(8))[:, 0].numpy(), images)
    np.testing.assert_array_equal(ds.latents_classes, d.classes_of(np.arange(8)))
    d.dsprites_grid()
    assert "packing" not in capsys.readouterr().out  # the packed cache is reused
