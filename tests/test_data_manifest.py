"""The manifest: every data set has a kind, a source, a size, a checksum line and a place."""
import pytest

from vislab.data import manifest


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "full"))
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))


def test_every_issue_data_set_is_listed_once():
    names = manifest.names()
    assert len(names) == len(set(names))
    assert set(names) >= {"mnist5k", "mnist", "moving-mnist", "dsprites", "multi-dsprites", "tetrominoes",
                          "clevrtex", "clevr-masks", "pets", "pets-synthetic", "cifar10"}


@pytest.mark.parametrize("entry", manifest.ENTRIES, ids=lambda e: e.name)
def test_entries_are_complete(entry):
    assert entry.kind in manifest.KINDS
    for text in (entry.description, entry.source, entry.size, entry.checksum, entry.layout):
        assert text.strip()
    assert entry.location().is_absolute()
    assert isinstance(entry.present(), bool)


def test_download_sets_live_under_data_root_and_caches_under_cache_dir(tmp_path):
    for entry in manifest.ENTRIES:
        if entry.kind == "download":
            assert entry.location().is_relative_to(tmp_path / "full"), entry.name
            assert not entry.present()
            assert "http" in entry.source
        if entry.kind == "generated":
            assert entry.location().is_relative_to(tmp_path / "cache"), entry.name
        if entry.kind == "on-the-fly":
            assert entry.present() and entry.location().suffix == ".py"


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="known: mnist5k"):
        manifest.entry("imagenet")
