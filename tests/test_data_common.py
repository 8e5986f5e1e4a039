"""vislab.data.common: where data and caches live, and atomic writes (never a half-written cache)."""
from pathlib import Path

import pytest
import torch

from vislab.data.common import atomic_write, cache_dir, data_root


def test_data_root_and_cache_dir_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "full"))
    monkeypatch.setenv("VISLAB_CACHE", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "full"
    assert cache_dir() == tmp_path / "cache"


def test_cache_dir_defaults_to_the_git_ignored_datasets_cache(monkeypatch):
    monkeypatch.delenv("VISLAB_CACHE", raising=False)
    assert cache_dir().parts[-2:] == ("datasets", "cache")


def test_atomic_write_renames_a_finished_file(tmp_path):
    target = tmp_path / "sub" / "cache.bin"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_bytes(b"done")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_bytes() == b"done"
    assert list(target.parent.iterdir()) == [target]


def test_atomic_write_renames_a_finished_folder_over_an_old_one(tmp_path):
    target = tmp_path / "tree"
    (target / "old").mkdir(parents=True)
    with atomic_write(target) as tmp:
        (tmp / "new").mkdir(parents=True)
    assert [p.name for p in target.iterdir()] == ["new"]


def test_atomic_write_leaves_nothing_behind_when_writing_fails(tmp_path):
    target = tmp_path / "cache.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_previous_file_when_writing_fails(tmp_path):
    target = tmp_path / "cache.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_parse_classes_reads_ranges_and_lists_and_refuses_the_rest():
    from vislab.data import parse_classes
    from vislab.errors import UsageError
    assert parse_classes(None) == list(range(10))
    assert parse_classes("0-4") == [0, 1, 2, 3, 4]
    assert parse_classes("7,1-2") == [1, 2, 7]
    for bad in ("3-12", "x", "", "5-3"):
        with pytest.raises(UsageError, match="--classes must name classes 0-9"):
            parse_classes(bad)


def test_select_classes_relabels_and_caps_per_class():
    from vislab.data import select_classes
    labels = torch.tensor([5, 6, 5, 9, 6, 5])
    images = torch.arange(6)
    x, y = select_classes(images, labels, [5, 6], per_class=2)
    assert x.tolist() == [0, 1, 2, 4] and y.tolist() == [0, 1, 0, 1]
    x, y = select_classes(images, labels, [9])
    assert x.tolist() == [3] and y.tolist() == [0]
