"""CIFAR-10 through torchvision: a small fixture in cifar-10-batches-py/ layout. torchvision checks
each batch file's md5, which a fixture cannot match, so `trust_fixture` patches that check inside a
test only; the test without the patch shows that the check runs and names the corrupt file."""
import os
import pickle
import socket

import numpy as np
import pytest
import torch

from vislab.data import MissingData
from vislab.data import cifar


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a data test tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def trust_fixture(monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def write_batch(path, images, labels):
    with open(path, "wb") as f:
        pickle.dump({"data": images.reshape(len(images), -1), "labels": labels.tolist()}, f)


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_batch(folder / name, rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 4))
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    return tmp_path


def test_loads_uint8_images_and_labels_in_channel_first_order(root, trust_fixture):
    images, labels = cifar.cifar10("train", root)
    assert images.shape == (20, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (20,) and labels.dtype == torch.int64
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f)
    np.testing.assert_array_equal(images[:4].numpy(), first["data"].reshape(4, 3, 32, 32))
    assert labels[:4].tolist() == first["labels"]
    assert cifar.cifar10("test", root)[0].shape == (4, 3, 32, 32)


def test_the_md5_check_runs_and_names_the_corrupt_file(root):
    with pytest.raises(MissingData) as err:
        cifar.cifar10("test", root)
    message = str(err.value)
    assert str(root / "cifar-10-batches-py" / "test_batch") in message and "md5" in message
    assert cifar.URL in message


def test_missing_files_are_named_with_where_to_put_them(tmp_path):
    with pytest.raises(MissingData) as err:
        cifar.cifar10("train", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert cifar.URL in message and "--download" in message


def test_default_root_is_data_root(tmp_path, monkeypatch, root, trust_fixture):
    monkeypatch.setenv("VISLAB_DATA", str(root))
    assert len(cifar.cifar10("test")[0]) == 4
