"""MNIST-5k (shipped) and full MNIST's loader, run on MNIST-5k written in MNIST's own layout."""
import pytest
import torch

from vislab.cli import main
from vislab.data import MissingData, mnist, mnist5k
from vislab.data.mnist import make_mnist_fixture


def test_mnist5k_splits_are_fixed_and_balanced():
    (x_train, y_train), (x_test, y_test) = mnist5k("train"), mnist5k("test")
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert x_train.dtype == torch.uint8 and y_train.dtype == torch.int64
    assert torch.bincount(y_test).tolist() == [100] * 10
    assert torch.bincount(y_train).tolist() == [400] * 10
    with pytest.raises(ValueError, match="split must be"):
        mnist5k("val")


def test_full_mnist_loader_reads_mnist_files(tmp_path):
    root = make_mnist_fixture(tmp_path)
    for split in ("train", "test"):
        images, labels = mnist(split, root)
        want_images, want_labels = mnist5k(split)
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_missing_full_mnist_says_where_to_put_it(tmp_path):
    with pytest.raises(MissingData, match=str(tmp_path / "MNIST" / "raw")):
        mnist("train", tmp_path)


def test_train_full_runs_on_mnist_files(tmp_path, monkeypatch, capsys):
    """`vislab train vit --full` (the larger ViT) reads full MNIST through the real loader."""
    monkeypatch.setenv("VISLAB_DATA", str(make_mnist_fixture(tmp_path / "data")))
    assert main(["train", "vit", "--impl", "solutions", "--full", "--epochs", "1", "--per-class", "20",
                 "--device", "cpu", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "on MNIST classes" in out and "(200 train / 1000 test images)" in out
    meta = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["config"]["dim"] == 192 and meta["config"]["depth"] == 6
