"""`vislab data list | prepare | path | show`: what each prints, exit codes, and no download ever
without --download (the network is cut off in every test here)."""
import argparse
import socket

import pytest

from vislab.data import MissingData, cli, dsprites, manifest


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "full"))
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))

    def refuse(*args, **kwargs):
        raise AssertionError("a data test tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(cli, "_download", refuse)


def run(*argv) -> int:
    parser = argparse.ArgumentParser(prog="vislab")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.run(args)


def test_list_shows_every_set_and_its_status(capsys):
    assert run("list") == 0
    out = capsys.readouterr().out
    for name in manifest.names():
        assert f"\n{name} " in out
    assert "on the fly" in out and "missing" in out and "not built" in out


def test_path_prints_where_a_set_lives(tmp_path, capsys):
    assert run("path", "cifar10") == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "full" / "cifar-10-batches-py")
    assert run("path", "dsprites") == 0
    assert capsys.readouterr().out.strip() == str(dsprites.cache_file())


def test_prepare_a_download_set_says_where_the_files_go_and_downloads_nothing(tmp_path, capsys):
    assert run("prepare", "pets") == 1
    out = capsys.readouterr().out
    assert str(tmp_path / "full" / "oxford-iiit-pet") in out and "images.tar.gz" in out and "--download" in out
    assert not (tmp_path / "full").exists()


def test_prepare_download_is_refused_for_sets_the_kit_cannot_fetch(capsys):
    assert run("prepare", "clevrtex", "--download") == 1
    assert "not supported" in capsys.readouterr().out


def test_prepare_generates_the_synthetic_pets_into_the_cache(tmp_path, monkeypatch, capsys):
    from vislab.data import pets
    real = pets.make_pets_fixture
    monkeypatch.setattr(pets, "make_pets_fixture", lambda root: real(root, 4, 2))
    assert run("prepare", "pets-synthetic") == 0
    assert (tmp_path / "cache" / "pets-synthetic" / "oxford-iiit-pet" / "annotations" / "test.txt").exists()
    assert "ready" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["moving-mnist", "multi-dsprites", "tetrominoes", "mnist5k"])
def test_prepare_on_the_fly_and_shipped_sets_just_checks_them(name, capsys):
    assert run("prepare", name) == 0
    assert name in capsys.readouterr().out


def test_prepare_dsprites_builds_the_cache(monkeypatch, capsys):
    def fake_generation():  # not 737,280 images in a test
        dsprites.cache_file().parent.mkdir(parents=True)
        dsprites.cache_file().write_bytes(b"cache")

    monkeypatch.setattr(dsprites, "write_generated_cache", fake_generation)
    assert run("prepare", "dsprites") == 0
    out = capsys.readouterr().out
    assert "generating the 737,280 dSprites images" in out and "done in" in out
    assert run("prepare", "dsprites") == 0  # a second time: already there
    assert "already" in capsys.readouterr().out


def test_show_writes_a_png_and_prints_its_path(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert run("show", "tetrominoes", "--out", str(out), "--n", "4") == 0
    assert capsys.readouterr().out.strip() == str(out) and out.read_bytes()[:4] == b"\x89PNG"


def test_unknown_names_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        run("show", "imagenet")
    assert exit_.value.code == 2 and "known: mnist5k" in capsys.readouterr().err


def test_missing_data_is_one_line_and_exit_code_two(tmp_path, capsys):
    from vislab.cli import main

    assert main(["data", "show", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "full" / "cifar-10-batches-py" / "data_batch_1") in err


def test_prepare_reads_a_present_download_set_so_corrupt_files_fail_now(tmp_path):
    from vislab.data.pets import make_pets_fixture
    make_pets_fixture(tmp_path / "full", n_trainval=2, n_test=1)
    assert run("prepare", "pets") == 0
    for image in (tmp_path / "full" / "oxford-iiit-pet" / "images").iterdir():
        image.write_bytes(b"not a jpeg")
    with pytest.raises(MissingData, match="cannot read"):
        run("prepare", "pets")
