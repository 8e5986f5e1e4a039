"""The diffusion lab's part 4 (diffusion.slot_decoder): plausible mistakes in the latent slot
loss lose points with a message that helps (the training check among them), correct rewrites
get full marks; the kit's scene autoencoder (cached, never overwritten), compositional
generation (slot library, K-means, one slot per cluster, decoding) and the --full data path
on small CLEVR-style files written here."""
import argparse

import numpy as np
import pytest
import torch

from conftest import by_task, grade_task_messages, variant
from vislab import SOLUTIONS_DIR
from vislab.impl import import_lab

TASK = "diffusion.slot_decoder"
FILE = "slot_decoder.py"
SLOTS = "slots, _ = model.encode(images)                                   # (B, K, D)"
Z0 = "z0 = scale * autoencoder.encode(images)                       # (B, c, h, w)"
FROZEN = """    with torch.no_grad():
        z0 = scale * autoencoder.encode(images)                       # (B, c, h, w)"""
CALL = "return diffusion_loss(model.unet, schedule, z0, slots)"


# The training check takes a second or two: the mistakes the quick checks catch are graded
# without it; test_the_training_check_itself_catches and the alternatives run it.
SLOW = {"trains_slots_and_decoder"}


def grade_slot_task(folder, quick: bool = False) -> tuple[dict, str]:
    return grade_task_messages("diffusion", folder, TASK, SLOW if quick else ())


MISTAKES = {  # name: (task, file, old, new, words in the messages)
    "pixels instead of latents": (TASK, FILE, Z0, "z0 = 2 * images - 1", "not pixels"),
    "the scale factor missing": (TASK, FILE, Z0, "z0 = autoencoder.encode(images)",
                                 "without the scale factor"),
    "the latents divided by the scale": (TASK, FILE, Z0, "z0 = autoencoder.encode(images) / scale",
                                         "divided by the scale"),
    "the images encoded in [-1, 1]": (TASK, FILE, Z0, "z0 = scale * autoencoder.encode(2 * images - 1)",
                                      "encoded in [-1, 1]"),
    "the autoencoder not frozen": (TASK, FILE, FROZEN,
                                   "    z0 = scale * autoencoder.encode(images)", "flowed into the autoencoder"),
    "the slots detached": (TASK, FILE, CALL, "return diffusion_loss(model.unet, schedule, z0, slots.detach())",
                           "no gradient reached the slot encoder"),
    "the slots under no_grad": (TASK, FILE, "    " + SLOTS,
                                "    with torch.no_grad():\n        " + SLOTS, "no gradient reached"),
    "the slots of a noisy input": (TASK, FILE, SLOTS,
                                   "slots, _ = model.encode(images + 0.3 * torch.randn_like(images))",
                                   "the condition given to diffusion_loss"),
    "the slots of 2 images - 1": (TASK, FILE, SLOTS, "slots, _ = model.encode(2 * images - 1)",
                                  "2 images - 1"),
    "no condition": (TASK, FILE, CALL, "return diffusion_loss(model.unet, schedule, z0)", "no condition"),
    "masks read column-major": (
        TASK, FILE, "maps = attention.reshape(B, K, height, width)                     # (B, K, h, w)",
        "maps = attention.reshape(B, K, width, height).transpose(-2, -1)", "column-major"),
}


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, tmp_path):
    task, file, old, new, words = MISTAKES[name]
    row, messages = grade_slot_task(variant(tmp_path, "diffusion", {file: [(old, new)]}), quick=True)
    assert row["earned"] < row["possible"], f"{name}: not caught"
    assert words in messages, f"{name}: {messages}"


OWN_LOSS_ON_Z0 = """abar = schedule["alphas_cumprod"].to(z0.dtype)
    t = torch.randint(0, len(abar), (len(z0),))
    noise = torch.randn_like(z0)
    a = abar[t].view(-1, *([1] * (z0.ndim - 1)))
    return ((model.unet(a.sqrt() * z0 + (1 - a).sqrt() * noise, t, slots) - z0) ** 2).mean()"""


@pytest.mark.parametrize("old, new, words", [
    (CALL, "return diffusion_loss(model.unet, schedule, z0, slots.detach())", "the slot path did not learn"),
    (Z0, "z0 = autoencoder.encode(images)", "the loss trains the wrong target"),
    (CALL, OWN_LOSS_ON_Z0, "the loss trains the wrong target"),
], ids=["slots detached", "scale missing", "own loss targeting z0"])
def test_the_training_check_itself_catches(old, new, words, tmp_path):
    """The grader's evaluation of the trained tiny model fails these, besides the quick check."""
    row, messages = grade_slot_task(variant(tmp_path, "diffusion", {FILE: [(old, new)]}))
    assert row["earned"] < row["possible"] and words in messages, messages


ALTERNATIVES = {  # name: (task, file, [(old, new), ...])
    "z0 detached instead of no_grad, scale on the right": (TASK, FILE, [
        (FROZEN, "    z0 = autoencoder.encode(images).detach() * scale")]),
    "the autoencoder frozen with requires_grad_(False), latents first": (TASK, FILE, [
        (FROZEN, "    autoencoder.requires_grad_(False)\n    z0 = scale * autoencoder.encode(images)"),
        (CALL, "return diffusion_loss(model.unet, schedule, z0, cond=slots)")]),
    "masks with unflatten and index arithmetic": (TASK, FILE, [
        ("""    maps = attention.reshape(B, K, height, width)                     # (B, K, h, w)
    maps = F.interpolate(maps, size=tuple(size), mode="nearest")      # (B, K, H, W)
    return maps.argmax(dim=1)                                         # (B, H, W)""",
         """    ids = attention.argmax(dim=1).unflatten(1, (height, width))      # (B, h, w)
    rows = (torch.arange(size[0]) * height // size[0])
    cols = (torch.arange(size[1]) * width // size[1])
    return ids[:, rows][:, :, cols]""")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, tmp_path):
    task, file, edits = ALTERNATIVES[name]
    row, messages = grade_slot_task(variant(tmp_path, "diffusion", {file: edits}))
    assert row["earned"] == row["possible"], f"{name}: {messages}"


# ------------------------------------------------------------------------ kit code

@pytest.fixture(scope="module")
def lab():
    return import_lab(SOLUTIONS_DIR / "diffusion")


def tiny(lab, num_slots=3):
    from dataclasses import replace

    ae_config, slot_config, unet_config = lab.slots_train.configs(False)
    ae = lab.scene_autoencoder.SceneAutoencoder(replace(ae_config, hidden=8, channels=(8,)))
    slot_config = replace(slot_config, hidden=8, slot_dim=8, num_slots=num_slots, mlp_dim=8, encoder_layers=1)
    unet_config = replace(unet_config, channels=(8, 8), cond_dim=8, heads=2, groups=4)
    return ae.eval(), lab.slot_decoder.SlotDiffusion(slot_config, unet_config).eval()


def test_scene_autoencoder_shapes_and_scale(lab):
    torch.manual_seed(0)
    ae, _ = tiny(lab)
    images = torch.rand(5, 3, 16, 16)
    z = ae.encode(images)
    assert z.shape == (5, 4, 8, 8) and ae.decode(z).shape == (5, 3, 16, 16)
    assert torch.equal(ae.encode(images), ae.train().encode(images))       # the mean, in either mode
    scale = lab.scene_autoencoder.latent_scale(ae, images)
    assert abs(float((scale * ae.encode(images)).detach().std()) - 1) < 1e-5
    full = lab.scene_autoencoder.SceneAutoencoder(lab.slots_train.configs(True)[0])
    assert full.encode(torch.rand(1, 3, 128, 128)).shape == (1, 4, 16, 16)


def test_compositional_generation_takes_one_slot_per_cluster(lab):
    torch.manual_seed(0)
    ae, model = tiny(lab)
    images = torch.rand(12, 3, 16, 16)
    torch.manual_seed(1)
    library = lab.compose.slot_library(model, images, batch_size=12)
    assert library.shape == (12 * 3, 8)
    torch.manual_seed(1)                                   # slot attention's initial slots
    with torch.no_grad():
        slots, _ = model.encode(images)
    assert torch.allclose(library, slots.flatten(0, 1), atol=1e-6)
    assert lab.compose.slot_library(model, images, batch_size=5).shape == (36, 8)
    labels = lab.compose.cluster_slots(library, 3, seed=0)
    assert labels.shape == (36,) and sorted(labels.unique().tolist()) == [0, 1, 2]
    new, picks = lab.compose.compose_slots(library, labels, 7, torch.Generator().manual_seed(0))
    assert new.shape == (7, 3, 8) and picks.shape == (7, 3)
    assert torch.equal(new, library[picks])
    assert torch.equal(labels[picks], torch.arange(3).expand(7, 3))       # one slot from each cluster
    schedule = lab.ddpm.make_schedule(1000)
    out = lab.compose.decode_slots(model, ae, 0.5, schedule, new, (4, 8, 8), steps=3, batch_size=4)
    assert out.shape == (7, 3, 16, 16) and out.min() >= 0 and out.max() <= 1


def test_the_kits_scene_autoencoder_is_read_from_its_folder_and_never_overwritten(lab, tmp_path, monkeypatch):
    from vislab.training import Dist

    st = lab.slots_train
    monkeypatch.setattr(st, "RUNS_DIR", tmp_path)
    config = st.configs(False)[0]
    ae = lab.scene_autoencoder.SceneAutoencoder(config)
    folder = tmp_path / "diffusion" / "scene-ae-tetrominoes-16px-seed3"
    folder.mkdir(parents=True)
    path = folder / "checkpoint.pt"
    torch.save({"model": ae.state_dict(), "epoch": st.AE_EPOCHS,
                "meta": {"kind": "scene-autoencoder", "config": config.__dict__}}, path)
    before = path.stat().st_mtime_ns
    args = argparse.Namespace(seed=3, full=False, slot_data="tetrominoes")
    loaded, source = st.kit_scene_autoencoder(args, Dist(torch.device("cpu")), None, config)
    assert source == path and path.stat().st_mtime_ns == before
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ae.state_dict().values()))


@pytest.mark.parametrize("content, words", [(None, "no such file"),
                                            ({"weights": torch.zeros(2)}, "is not a scene autoencoder")])
def test_a_bad_scene_autoencoder_gets_one_line(content, words, tmp_path, capsys):
    from vislab.cli import main

    path = tmp_path / "checkpoint.pt"
    if content is not None:
        torch.save(content, path)
    code = main(["train", "diffusion", "--impl", "solutions", "--part", "slots",
                 "--scene-autoencoder", str(path), "--out", str(tmp_path / "run")])
    assert code == 2 and words in capsys.readouterr().err


def test_slot_lr_must_be_positive(capsys):
    from vislab.cli import main

    assert main(["train", "diffusion", "--impl", "solutions", "--part", "slots", "--slot-lr", "0"]) == 2
    assert "--slot-lr must be above 0" in capsys.readouterr().err


def test_the_slot_encoder_warm_starts_from_a_slots_lab_run(tmp_path):
    """--slot-encoder copies encoder.* and slot_attention.* of a Slot Attention lab checkpoint
    (as `vislab train slots` writes it) and leaves the UNet as it was."""
    slots_lab, diffusion = import_lab(SOLUTIONS_DIR / "slots"), import_lab(SOLUTIONS_DIR / "diffusion")
    st = diffusion.slots_train
    _, slot_config, unet_config = st.configs(False)
    torch.manual_seed(0)
    donor = slots_lab.model.SlotAutoencoder(slot_config)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": donor.state_dict(), "epoch": 6}, path)
    model = diffusion.slot_decoder.SlotDiffusion(slot_config, unet_config)
    unet_before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    st.load_slot_encoder(model, path)
    theirs = donor.state_dict()
    for key, value in model.state_dict().items():
        if key.startswith(st.SLOT_PARTS):
            assert torch.equal(value, theirs[key]), key
    assert all(torch.equal(v, unet_before[k]) for k, v in model.unet.state_dict().items())


def test_a_slot_encoder_of_other_sizes_gets_one_line(tmp_path, capsys):
    from dataclasses import replace

    from vislab.cli import main
    from vislab.errors import UsageError

    slots_lab, diffusion = import_lab(SOLUTIONS_DIR / "slots"), import_lab(SOLUTIONS_DIR / "diffusion")
    _, slot_config, unet_config = diffusion.slots_train.configs(False)
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": slots_lab.model.SlotAutoencoder(replace(slot_config, slot_dim=16)).state_dict()}, path)
    model = diffusion.slot_decoder.SlotDiffusion(slot_config, unet_config)
    with pytest.raises(UsageError, match="not a Slot Attention lab run of this model's sizes"):
        diffusion.slots_train.load_slot_encoder(model, path)
    code = main(["train", "diffusion", "--impl", "solutions", "--part", "slots",
                 "--slot-encoder", str(tmp_path / "nothing.pt")])
    assert code == 2 and "--slot-encoder" in capsys.readouterr().err


def write_clevr_masks(folder, count):
    """CLEVR-with-masks scenes as `vislab data prepare clevr-masks` writes them (320 x 240 PNG
    pairs): three coloured boxes on grey, the flat mask 0 background, 1..3."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        sub = folder / f"{i // 4:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        labels = np.zeros((240, 320), np.uint8)
        for k in range(1, 4):
            top, left = rng.integers(30, 150), rng.integers(70, 200)
            labels[top:top + 40, left:left + 50] = k
        palette = np.array([[90, 90, 90], [200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)
        Image.fromarray(palette[labels]).save(sub / f"CLEVR_masks_{i:06d}.png")
        Image.fromarray(labels).save(sub / f"CLEVR_masks_{i:06d}_flat.png")


def test_full_reads_clevr_with_masks_at_128_px(lab, tmp_path, monkeypatch):
    write_clevr_masks(tmp_path / "clevr_with_masks", 20)
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    args = argparse.Namespace(full=True, slot_data="tetrominoes")
    train, x_lib, x_val, id_val, x_test = lab.slots_train.datasets(args)
    assert len(train) == 16 and train[0][0].shape == (3, 128, 128)
    assert x_lib.shape == (16, 3, 128, 128) and x_val.shape == (2, 3, 128, 128)
    assert id_val.shape == (2, 128, 128) and set(id_val.unique().tolist()) <= {0, 1, 2, 3}
    assert x_test.shape == (2, 3, 128, 128)
    _, slot_config, unet_config = lab.slots_train.configs(True)
    assert slot_config.image_size == 128 and unet_config.image_size == 16


def test_full_without_the_files_says_where_they_go(tmp_path, monkeypatch, capsys):
    from vislab.cli import main

    monkeypatch.setenv("VISLAB_DATA", str(tmp_path))
    code = main(["train", "diffusion", "--impl", "solutions", "--part", "slots", "--full",
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "clevr" in capsys.readouterr().err.lower()
