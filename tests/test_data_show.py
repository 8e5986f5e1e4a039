"""`vislab data show`: grids of samples, masks overlaid, written atomically as PNG."""
import numpy as np
import pytest
import torch
from PIL import Image

from vislab.data import pets, show


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "full"))
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))


def test_overlay_darkens_background_and_tints_each_instance():
    images = torch.full((1, 3, 2, 2), 0.5)
    masks = torch.zeros(1, 3, 2, 2)
    masks[0, 0, 0], masks[0, 1, 1, 0], masks[0, 2, 1, 1] = 1, 1, 1
    out = show.overlay(images, masks)
    torch.testing.assert_close(out[0, :, 0, 0], torch.full((3,), 0.2))
    torch.testing.assert_close(out[0, :, 1, 0], 0.45 * 0.5 + 0.55 * show.PALETTE[1])
    torch.testing.assert_close(out[0, :, 1, 1], 0.45 * 0.5 + 0.55 * show.PALETTE[2])


def test_pairs_alternate_rows_of_images_and_overlays():
    images, masks = torch.rand(10, 3, 4, 4), torch.zeros(10, 2, 4, 4)
    masks[:, 0] = 1
    tiles = show.pairs(images, masks)
    assert torch.equal(tiles[:8], images[:8]) and torch.equal(tiles[16:18], images[8:])
    assert (tiles[18:24] == 1).all() and len(tiles) == 32  # the short last rows are filled with white


@pytest.mark.parametrize("name, tiles", [("multi-dsprites", 8), ("tetrominoes", 8), ("dsprites", 4),
                                         ("mnist5k", 4), ("moving-mnist", 32)])
def test_show_writes_a_png_grid(tmp_path, name, tiles):
    assert len(show.samples(name, n=4)) == tiles
    path = show.show(name, tmp_path / f"{name}.png", n=4)
    image = Image.open(path)
    assert image.format == "PNG" and image.mode == "RGB"
    assert list(tmp_path.glob(".*")) == []  # no temporary left


def test_show_defaults_to_the_cache_and_overlays_pet_masks(tmp_path):
    pets.make_pets_fixture(tmp_path / "full", n_trainval=4, n_test=1)
    path = show.show("pets", n=3)
    assert path == tmp_path / "cache" / "show" / "pets.png"
    pixels = np.array(Image.open(path))
    assert pixels.shape == (2 * 98 + 2, 3 * 98 + 2, 3)  # images, then overlays (96 px tiles, 2 px padding)


def test_show_is_deterministic_from_the_seed(tmp_path):
    a = show.show("tetrominoes", tmp_path / "a.png", n=4, seed=1).read_bytes()
    b = show.show("tetrominoes", tmp_path / "b.png", n=4, seed=1).read_bytes()
    c = show.show("tetrominoes", tmp_path / "c.png", n=4, seed=2).read_bytes()
    assert a == b and a != c


def test_show_into_an_existing_folder_writes_inside_and_keeps_its_files(tmp_path):
    """--out naming a folder never deletes it: the picture goes inside, next to what was there."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    path = show.show("tetrominoes", folder, n=2)
    assert path == folder / "tetrominoes.png" and Image.open(path).format == "PNG"
    assert (folder / "thesis.tex").read_text() == "years of work"


def test_show_refuses_an_out_that_is_not_a_png_or_a_folder(tmp_path):
    from vislab.errors import UsageError

    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    with pytest.raises(UsageError, match="ending in .png or an existing folder"):
        show.show("tetrominoes", notes, n=2)
    assert notes.read_text() == "keep"


@pytest.mark.parametrize("argv, words", [
    (["--n", "0"], "must be at least 1"),
    (["--split", "bogus"], "split must be one of"),
])
def test_cli_show_bad_options_are_one_line(tmp_path, capsys, argv, words):
    from vislab.cli import main

    argv = ["data", "show", "tetrominoes", "--out", str(tmp_path / "x.png"), *argv]
    if argv[-2] == "--n":  # argparse refuses it: usage and one line, exit 2
        with pytest.raises(SystemExit, match="2"):
            main(argv)
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_cli_show_dsprites_has_no_split(tmp_path, capsys):
    from vislab.cli import main

    assert main(["data", "show", "dsprites", "--split", "test", "--out", str(tmp_path / "d.png")]) == 2
    assert "dsprites has no splits" in capsys.readouterr().err
