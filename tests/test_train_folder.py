"""`vislab train swin_cnn --data PATH`: your own class-per-folder images, on the generated
fixture (mixed formats, a corrupt file, an empty class); and the course's --config birds."""
import json

import pytest
import torch

from vislab.cli import main
from vislab.data.folder import make_folder_fixture


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_folder_fixture(tmp_path_factory.mktemp("data") / "shapes", per_class=12)


def train(*argv):
    return main(["train", "swin_cnn", "--impl", "solutions", "--epochs", "1", *argv])


def test_a_folder_trains_with_its_class_names_split_and_figures(shapes, tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--data", str(shapes), "--image-size", "32", "--model", "resnet",
                 "--gradcam-classes", "circle,square", "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert "skipped 1 file(s)" in text and "left out 1 class folder(s)" in text
    split = json.loads((out / "split.json").read_text())
    assert split["root"] == str(shapes) and len(split["train"]) == 30 and len(split["test"]) == 3
    results = json.loads((out / "results.json").read_text())
    assert {"accuracy", "micro_f1", "macro_f1"} <= set(results["test"])
    meta = torch.load(out / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["classes"] == ["circle", "square", "triangle"] and meta["config"]["in_channels"] == 3
    for name in ("confusion.png", "curves.png"):
        assert (out / name).is_file()


def test_the_swin_fits_the_folders_image_size(shapes, tmp_path):
    assert train("--data", str(shapes), "--image-size", "48", "--out", str(tmp_path / "swin")) == 0
    meta = torch.load(tmp_path / "swin" / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["config"]["image_size"] == 48 and meta["config"]["patch_size"] == 3


def test_the_birds_config_is_the_resnet_with_sgd(shapes, tmp_path):
    out = tmp_path / "birds"
    assert train("--data", str(shapes), "--config", "birds", "--image-size", "32", "--out", str(out)) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["meta"]["kind"] == "resnet"
    group = state["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.9 and group["initial_lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("argv, words", [
    (["--gradcam-classes", "circle,hexagon"], "--gradcam-classes: no class 'hexagon'"),
    (["--classes", "0-4"], "--data takes the classes and images in its folders"),
])
def test_folder_mistakes_are_one_line(shapes, tmp_path, capsys, argv, words):
    assert train("--data", str(shapes), "--out", str(tmp_path / "x"), *argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_birds_without_data_and_image_size_without_data_are_one_line(capsys):
    assert train("--config", "birds") == 2
    assert "add --data PATH" in capsys.readouterr().err
    assert train("--image-size", "64") == 2
    assert "apply to --data PATH" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["vit", "cnn"])
def test_the_vit_lab_trains_on_a_folder_too(shapes, tmp_path, capsys, model):
    out = tmp_path / model
    assert main(["train", "vit", "--impl", "solutions", "--epochs", "1", "--data", str(shapes),
                 "--image-size", "32", "--model", model, "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    meta = torch.load(out / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["classes"] == ["circle", "square", "triangle"]
    if model == "vit":
        assert (meta["config"]["image_size"], meta["config"]["patch_size"]) == (32, 8)
