"""The shared training loop (vislab.training) and `vislab train vit`."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vislab.cli import main
from vislab.training import RunConfig, fit, setup, warmup_cosine


def toy_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def step(model, batch):
    x, y = batch
    logits = model(x)
    return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(-1) == y).float().mean()}


def test_fit_learns_writes_metrics_and_checkpoint(tmp_path):
    dist = setup("cpu", seed=0)
    model = nn.Linear(4, 2)
    run = RunConfig(tmp_path, epochs=3, batch_size=16, lr=0.1)
    history = fit(model, toy_data(), step, run, dist, evaluate=lambda m: {"test_acc": 1.0},
                  meta={"kind": "toy"})
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history and [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert {"train_loss", "train_acc", "test_acc", "lr", "seconds"} <= set(history[0])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["meta"] == {"kind": "toy"}
    assert torch.equal(state["model"]["weight"], model.weight.detach())


def test_loader_workers_give_the_same_run(tmp_path):
    """Data loaded by worker processes (for image files decoded per item) trains exactly as
    in-process loading: the shuffle comes from the sampler's seed, not from the workers."""
    runs = []
    for workers in (0, 1):
        dist = setup("cpu", seed=0)
        model = nn.Linear(4, 2)
        fit(model, toy_data(), step, RunConfig(tmp_path / str(workers), epochs=2, batch_size=16,
                                              lr=0.1, workers=workers), dist)
        runs.append(model.weight.detach().clone())
    assert torch.equal(runs[0], runs[1])


def test_an_interrupted_run_resumes_exactly(tmp_path):
    """Stopped during epoch 3 and resumed, a run ends with the same weights and history as a
    run that was never interrupted."""
    dist = setup("cpu", seed=0)
    straight = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))
    config = dict(epochs=4, batch_size=16, lr=0.1)
    fit(straight, toy_data(), step, RunConfig(tmp_path / "a", **config), dist)

    setup("cpu", seed=0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))
    calls = 0

    def interrupted(model, batch):
        nonlocal calls
        calls += 1
        if calls == 10:  # 4 batches per epoch: in epoch 3
            raise KeyboardInterrupt
        return step(model, batch)
    with pytest.raises(KeyboardInterrupt):
        fit(model, toy_data(), interrupted, RunConfig(tmp_path / "b", **config), dist)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 2

    resumed = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))
    history = fit(resumed, toy_data(), step, RunConfig(tmp_path / "b", **config, resume=True), dist)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    drop_time = lambda path: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa
                              for line in path.read_text().splitlines()]
    assert drop_time(tmp_path / "a" / "metrics.jsonl") == drop_time(tmp_path / "b" / "metrics.jsonl")


def test_warmup_cosine_schedule():
    f = warmup_cosine(10, 110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0, abs=1e-12)
    g = warmup_cosine(10, 110, constant=True)  # the same warm-up, then no decay
    assert g(0) == pytest.approx(0.1) and g(60) == g(110) == 1.0


DDP_SCRIPT = """
import sys, torch, torch.nn as nn, torch.nn.functional as F, torch.distributed as dist
from torch.utils.data import TensorDataset
from vislab.training import RunConfig, fit, setup, teardown

d = setup("cpu", seed=0)
g = torch.Generator().manual_seed(0)
x = torch.randn(96, 4, generator=g)
data = TensorDataset(x, (x[:, 0] > 0).long())

def step(model, batch):
    x, y = batch
    return {"loss": F.cross_entropy(model(x), y), "count": torch.tensor(float(len(x)))}

model = nn.Linear(4, 2)
fit(model, data, step, RunConfig(sys.argv[1], epochs=2, batch_size=16, lr=0.1), d)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(d.world_size)]
dist.all_gather(gathered, flat)
assert d.world_size == 2 and all(torch.equal(gathered[0], t) for t in gathered), "ranks differ"
print(f"rank {d.rank} of {d.world_size}: weights agree")
teardown(d)
"""


def test_ddp_with_two_cpu_processes(tmp_path):
    """torchrun --nproc_per_node 2 with gloo: same weights on both ranks, one metrics file."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("weights agree") == 2
    lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in lines] == [1, 2]
    # each rank saw half of each epoch; the logged mean batch size is over both ranks' batches
    assert lines[0]["train_count"] == pytest.approx(16.0)


# ---------------------------------------------------------------------- vislab train vit

def train(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["train", "vit", "--impl", "solutions", "--epochs", "1", "--per-class", "30",
                 "--out", str(out), *extra]) == 0
    return out


def test_train_vit_writes_run_folder(tmp_path, capsys):
    out = train(tmp_path, "vit", "--mixup", "0.8", "--randaugment", "--dropout", "0.1")
    for name in ("metrics.jsonl", "checkpoint.pt", "curves.png", "confusion.png", "attention.png"):
        assert (out / name).is_file(), name
    text = capsys.readouterr().out
    assert "test accuracy" in text and str(out / "curves.png") in text


def test_train_cnn_then_distil_a_vit_from_it(tmp_path):
    teacher = train(tmp_path, "cnn", "--model", "cnn")
    student = train(tmp_path, "student", "--teacher", str(teacher / "checkpoint.pt"))
    assert json.loads((student / "metrics.jsonl").read_text())["train_loss"] >= 0


def test_finetune_head_only_changes_only_the_head(tmp_path):
    pre = train(tmp_path, "pre", "--classes", "0-4")
    tuned = train(tmp_path, "tuned", "--finetune", str(pre / "checkpoint.pt"), "--classes", "5-9",
                  "--finetune-mode", "head")
    before = torch.load(pre / "checkpoint.pt", weights_only=True)["model"]
    after = torch.load(tuned / "checkpoint.pt", weights_only=True)["model"]
    assert after["head.weight"].shape == (5, 64)
    for name, value in before.items():
        if not name.startswith("head."):
            assert torch.equal(value, after[name]), f"{name} changed in head-only fine-tuning"


def test_finetune_from_a_torchvision_state_dict(tmp_path):
    """A torchvision VisionTransformer weights file (as downloaded) fine-tunes on MNIST."""
    from torchvision.models import VisionTransformer
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=128,
                           mlp_dim=64, num_classes=1000)
    path = tmp_path / "tv_vit.pth"
    torch.save(tv.state_dict(), path)
    tuned = train(tmp_path, "tv", "--finetune", str(path), "--finetune-mode", "head")
    meta = torch.load(tuned / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["config"]["image_size"] == 32 and meta["config"]["in_channels"] == 3
    assert meta["config"]["num_classes"] == 10


@pytest.mark.parametrize("argv, words", [
    (["--teacher", "/no/such.pt"], "no checkpoint at /no/such.pt"),
    (["--classes", "3-12"], "--classes must name classes 0-9"),
    (["--full"], "full MNIST not found"),
])
def test_train_mistakes_are_one_line(tmp_path, argv, words, capsys):
    assert main(["train", "vit", "--impl", "solutions", "--epochs", "1", "--out",
                 str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    for option in ("--teacher", "--finetune"):
        assert main(["train", "vit", "--impl", "solutions", "--epochs", "1", option, str(text)]) == 2
        err = capsys.readouterr().err
        assert f"cannot read {text} as a PyTorch checkpoint" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, words", [
    (["--epochs", "0"], "--epochs: must be at least 1, got 0"),
    (["--epochs", "-1"], "--epochs: must be at least 1, got -1"),
    (["--per-class", "0"], "--per-class: must be at least 1"),
    (["--batch-size", "many"], "--batch-size: expected a whole number, got 'many'"),
])
def test_counts_below_one_are_refused_before_training(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "vit", "--impl", "solutions", *argv])
    assert exit_.value.code == 2 and words in capsys.readouterr().err


def test_training_an_unfinished_lab_says_which_todo_in_one_line(tmp_path, capsys):
    assert main(["train", "vit", "--epochs", "1", "--out", str(tmp_path / "x")]) == 2  # labs/
    err = capsys.readouterr().err
    assert "TODO(vit." in err and "finish it first" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()  # stopped before any data or model was made


def test_an_error_in_the_students_code_shows_the_traceback_and_where(tmp_path, capsys):
    from conftest import variant
    folder = variant(tmp_path, "vit",
                     {"model.py": [("+ self.pos_embed   #", "+ self.pos_embed[:, :3]   #")]})
    assert main(["train", "vit", "--impl", str(folder), "--epochs", "1", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err  # the student needs it to debug their own code
    last = err.strip().splitlines()[-1]
    assert last.startswith("vislab: training stopped in the lab's code") and "at model.py:" in last


def test_resume_needs_the_run_folder(capsys):
    with pytest.raises(SystemExit):
        main(["train", "vit", "--resume"])
    assert "--resume needs --out FOLDER" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["--lr", "-1"], "--lr must be above 0, got -1"),
    (["--lr", "0"], "--lr must be above 0, got 0"),
    (["--dropout", "1.5"], "--dropout must be from 0 up to"),
    (["--weight-decay", "-0.1"], "--weight-decay must be 0 or more"),
    (["--threads", "0"], "--threads: must be at least 1"),
])
def test_bad_options_are_refused_before_training(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "vit", "--impl", "solutions", *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and "Traceback" not in err


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    """--out naming a folder with files in it needs --resume; the files stay as they were."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("precious\n")
    with pytest.raises(SystemExit):
        main(["train", "vit", "--impl", "solutions", "--epochs", "1", "--out", str(run)])
    assert "already holds files" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == "precious\n"


def test_fit_refuses_a_folder_that_holds_a_checkpoint(tmp_path):
    from vislab.errors import UsageError

    dist = setup("cpu", seed=0)
    fit(nn.Linear(4, 2), toy_data(), step, RunConfig(tmp_path, epochs=1, batch_size=16), dist)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(UsageError, match="already holds a run"):
        fit(nn.Linear(4, 2), toy_data(), step, RunConfig(tmp_path, epochs=1, batch_size=16), dist)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_an_out_that_cannot_be_a_run_folder_is_one_line(tmp_path, capsys, monkeypatch, kind):
    import os
    from pathlib import Path

    if kind == "file":
        out = tmp_path / "a-file"
        out.write_text("x")
        words = "is a file, not a folder"
    else:  # root may write anywhere, so the refusal is simulated for the locked folder
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out, words = locked / "run", "permission denied"
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode))
    with pytest.raises(SystemExit):
        main(["train", "vit", "--impl", "solutions", "--epochs", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert words in err and "lab's code" not in err


def test_a_syntax_error_in_the_lab_is_one_line(tmp_path, capsys):
    from conftest import variant
    folder = variant(tmp_path, "vit", {"finetune.py": [("def replace_head", "def replace_head(:\ndef _x")]})
    assert main(["train", "vit", "--impl", str(folder), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "SyntaxError in finetune.py line" in err and "Traceback" not in err


def test_the_first_epoch_gives_an_estimate_of_the_whole_run():
    from vislab.training import estimate

    assert estimate(2.0, 19) == ("the first epoch took 2.0 s: the remaining 19 should take about "
                                 "38 s (--threads sets torch's CPU threads)")
    assert "about 3.0 min" in estimate(10.0, 18)
