"""Train the lab's models: `vislab train swin_cnn [options]` (see --help).

    vislab train swin_cnn                            # Swin on MNIST-5k, CPU, about a minute
    vislab train swin_cnn --model convnext           # ConvNeXt of about the same size
    vislab train swin_cnn --model resnet --norm gn   # ResNet-20 with your GroupNorm
    vislab train swin_cnn --model all                # Swin, ConvNeXt, ResNet-20: a comparison
    vislab train swin_cnn --model resnet --norm all  # ResNet-20 with each of the five norms
    vislab train swin_cnn --teacher runs/vit/vit-.../checkpoint.pt   # distil a Swin, no labels
    vislab train swin_cnn --classes 0-4 --out runs/swin_cnn/pre      # pretrain on digits 0-4
    vislab train swin_cnn --finetune runs/swin_cnn/pre/checkpoint.pt --classes 5-9 \\
                          --per-class 50 --finetune-mode head        # then fine-tune on 5-9
    vislab train swin_cnn --full --device cuda       # CIFAR-10 (GPU), when its files are present
    vislab train swin_cnn --data PATH --image-size 64  # your own class-per-folder images
    vislab train swin_cnn --data PATH --config birds   # the course's bird-species set-up (GPU)

The training set is split once into train and validation (a fixed 1/8, the same for every seed);
the test set is only evaluated at the end. A run folder gets metrics.jsonl (loss and accuracy per
epoch, train and validation), checkpoint.pt, results.json (accuracy, micro-F1 and macro-F1 on
train, validation and test), curves.png, confusion.png and gradcam_correct.png /
gradcam_incorrect.png (Grad-CAM of test images the model got right and wrong). `--model all`
and `--norm all` train one run per model (norm) in sub-folders and add comparison.md and
comparison.png.

`--data PATH` trains on any class-per-folder set (torchvision's ImageFolder layout, with or
without train/ val/ test/ folders; vislab.data.folder), images resized to --image-size, the
class names from the folders; the split used is written to the run folder (split.json), and
`--gradcam-classes "A,B"` picks the classes whose images the Grad-CAM figures show.
`--config birds` is the course's set-up for its 25-class bird-species set: the ResNet (16 / 32
/ 64 filters, feature maps 256 / 128 / 64) on 256 x 256 images, SGD from a learning rate of
1e-4 for 50 epochs.

`--teacher` takes a checkpoint of the ViT lab (`vislab train vit` writes runs/vit/.../
checkpoint.pt, with meta {kind, config}) or of this lab. The ViT is rebuilt with the ViT lab's
own code, found next to this lab's folder (labs/vit for labs/swin_cnn, solutions/vit for
solutions/swin_cnn; --teacher-lab names another). It is looked up only when --teacher is given:
this lab's graded code never imports another lab (see distill.py). `--finetune` also takes a
torchvision SwinTransformer or ConvNeXt state dict (swin_t's, convnext_tiny's weights files),
loaded with the mappings in swin.py and convnext.py.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from vislab import RUNS_DIR, plots
from vislab.data import ImageDataset, cifar10, mnist5k, parse_classes, select_classes
from vislab.data.folder import image_folder
from vislab.data.mnist import MEAN, STD
from vislab.errors import UsageError
from vislab.impl import import_lab
from vislab.training import RunConfig, fit, load_checkpoint, positive_int, setup, teardown

from . import convnext, resnet, swin
from .distill import distillation_step
from .gradcam import grad_cam, upsample
from .norms import NORMS

CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
CIFAR_CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
KINDS = ("swin", "convnext", "resnet")


# The course's set-up for its bird-species set (--config birds): the options it sets.
CONFIGS = {"birds": dict(model="resnet", image_size=256, epochs=50, optimizer="sgd", lr=1e-4,
                         weight_decay=5e-4, batch_size=32)}


def configs(full: bool, in_channels: int, num_classes: int,
            image_size: int | None = None) -> dict[str, dict]:
    """The three models, each about 0.3M parameters. The Swin's windows are 4 x 4 tokens: on
    MNIST 4 x 4 patches give a 7 x 7 map (padded to 2 x 2 windows), then 4 x 4 (one window); on
    CIFAR-10 2 x 2 patches give 16 x 16 (4 x 4 windows), then 8 x 8; on S x S images of a
    folder (--data), S/16 x S/16 patches give 16 x 16 tokens, then 8 x 8."""
    common = dict(in_channels=in_channels, num_classes=num_classes)
    size = dict(image_size=32, patch_size=2) if full else {}
    if image_size is not None:
        size = dict(image_size=image_size, patch_size=max(1, image_size // 16))
    return {
        "swin": asdict(swin.SwinConfig(drop_path=0.1, **size, **common)),
        "convnext": asdict(convnext.ConvNeXtConfig(drop_path=0.1, **common)),
        "resnet": asdict(resnet.ResNetConfig(**common)),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=KINDS + ("all",), default="swin",
                        help="swin (default), convnext, resnet, or all three one after the other")
    parser.add_argument("--norm", choices=NORMS + ("all",), default="bn",
                        help="the ResNet's normalisation (norms.py); all: one run per norm")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (default 2e-3 for Swin and ConvNeXt, 4e-3 for "
                             "the ResNet)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--teacher", type=Path, metavar="CKPT",
                        help="distil from this checkpoint's model: KL at --temperature, no labels")
    parser.add_argument("--teacher-lab", type=Path, metavar="DIR",
                        help="the ViT lab folder whose code rebuilds a ViT teacher "
                             "(default: the vit folder next to this lab's)")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--finetune", type=Path, metavar="CKPT",
                        help="start from this checkpoint (ours, or torchvision's swin_t / "
                             "convnext_tiny state dict) with a new head")
    parser.add_argument("--finetune-mode", choices=["full", "head"], default="full")
    parser.add_argument("--classes", default=None,
                        help="classes to use, e.g. 0-4 or 1,3,5 (default: all ten)")
    parser.add_argument("--per-class", type=positive_int, metavar="N",
                        help="use only N training images per class")
    parser.add_argument("--data", type=Path, metavar="PATH",
                        help="your own class-per-folder images (ImageFolder layout) instead of MNIST-5k")
    parser.add_argument("--image-size", type=positive_int, metavar="N",
                        help="with --data: resize images to N x N (default 64)")
    parser.add_argument("--gradcam-classes", metavar="NAMES",
                        help='with --data: the classes the Grad-CAM figures show, e.g. "Cattle Egret,Indian Peacock"')
    parser.add_argument("--config", choices=sorted(CONFIGS),
                        help="a named course set-up (birds: the ResNet at 256 px, SGD lr 1e-4, 50 "
                             "epochs; needs --data)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader processes (default: 2 for --data sets too large to keep "
                             "in memory, else 0)")


# ------------------------------------------------------------------------------------ data

def split_validation(images, labels, fraction: float = 1 / 8):
    """A fixed split of the training set: the same images are held out whatever --seed is."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))
    n_val = int(len(images) * fraction)
    val, train = order[:n_val].sort().values, order[n_val:].sort().values
    return (images[train], labels[train]), (images[val], labels[val])


FOLDER_MEAN = FOLDER_STD = torch.full((3, 1, 1), 0.5)  # RGB images of any folder set, to [-1, 1]


def folder_datasets(args):
    """(train, val, test) ImageDatasets of a class-per-folder set, its class names, and the
    split (file lists) to record next to the run."""
    if args.classes or args.per_class or args.full:
        raise UsageError("--data takes the classes and images in its folders: drop --classes, "
                         "--per-class and --full")
    data = image_folder(args.data, args.image_size or 64)
    for note in data.notes:
        print(f"{args.data}: {note}")
    sets = [ImageDataset(*data.splits[s], FOLDER_MEAN, FOLDER_STD) for s in ("train", "val", "test")]
    return (*sets, data.classes, data.split_files)


def apply_config(args) -> None:
    """--config NAME: its options, where the command line did not set them."""
    if args.config is None:
        return
    if args.data is None:
        raise UsageError(f"--config {args.config} is a set-up for a folder of images: add --data PATH")
    defaults = {"model": "swin", "batch_size": 64, "weight_decay": 0.05}  # add_arguments'
    for key, value in CONFIGS[args.config].items():
        if key == "model" and args.model not in (defaults["model"], value):
            raise UsageError(f"--config {args.config} trains the {value}; drop --model {args.model}")
        if getattr(args, key, None) == defaults.get(key):  # not set on the command line
            setattr(args, key, value)


def datasets(args):
    """(train, val, test) ImageDatasets and the class names."""
    if args.data is not None:
        return folder_datasets(args)[:4]
    classes = parse_classes(args.classes)
    if args.full:
        load, mean, std = cifar10, CIFAR_MEAN, CIFAR_STD
        augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
        names = [CIFAR_CLASSES[c] for c in classes]
    else:
        load, mean, std, augment = mnist5k, MEAN, STD, None
        names = [str(c) for c in classes]
    train, val = split_validation(*load("train"))
    train = select_classes(*train, classes, args.per_class)
    val, test = select_classes(*val, classes), select_classes(*load("test"), classes)
    return (ImageDataset(*train, mean, std, transform=augment), ImageDataset(*val, mean, std),
            ImageDataset(*test, mean, std), names)


# ---------------------------------------------------------------------------------- models

def build(kind: str, config: dict) -> nn.Module:
    if kind == "swin":
        return swin.Swin(swin.SwinConfig(**config))
    if kind == "convnext":
        return convnext.ConvNeXt(convnext.ConvNeXtConfig(**config))
    if kind == "resnet":
        return resnet.ResNet(resnet.ResNetConfig(**config))
    raise UsageError(f"this lab cannot build a {kind!r} model")


def load_model(path: Path, teacher_lab: Path | None = None) -> tuple[nn.Module, str, dict, object]:
    """(model, kind, config, adapt) from our checkpoint, a ViT lab checkpoint, or torchvision's
    swin_t / convnext_tiny state dict; adapt(x) turns our batches into the model's input."""
    state = load_checkpoint(path)
    if "features.0.0.weight" in state and "head.weight" in state:
        config = swin.config_from_torchvision(state)
        model = swin.load_torchvision_weights(swin.Swin(config), state)
        return model, "swin", asdict(config), to_channels(config.in_channels)
    if "features.0.0.weight" in state and "classifier.2.weight" in state:
        config = convnext.config_from_torchvision(state)
        model = convnext.load_torchvision_weights(convnext.ConvNeXt(config), state)
        return model, "convnext", asdict(config), to_channels(config.in_channels)
    if "meta" not in state or "kind" not in state["meta"]:
        raise UsageError(f"{path} is neither a vislab checkpoint nor a torchvision Swin / "
                         f"ConvNeXt state dict")
    kind, config = state["meta"]["kind"], state["meta"]["config"]
    if kind in KINDS:
        model = build(kind, config)
        model.load_state_dict(state["model"])
        return model, kind, config, lambda x: x
    vit = import_lab(teacher_lab or Path(__file__).resolve().parent.parent / "vit")
    try:
        model, kind, config = vit.train.load_model(path)
    except (ImportError, FileNotFoundError) as exc:
        raise UsageError(f"{path} holds a {kind!r} model of the ViT lab, whose code was not "
                         f"found ({exc}); pass --teacher-lab with the vit lab's folder") from None
    return model, kind, config, lambda x: vit.train.adapt_input(x, kind, config)


def to_channels(channels: int):
    """Grey MNIST batches for a 3-channel (torchvision) model: repeat the channel."""
    return lambda x: x.expand(-1, channels, -1, -1) if x.shape[1] != channels else x


def gradcam_layer(model: nn.Module, kind: str) -> tuple[nn.Module, bool]:
    """The layer whose Grad-CAM the figures show (the last stage) and whether it is
    channels-last."""
    if kind == "swin":
        return model.stages[-1], True
    if kind == "convnext":
        return model.stages[-1], False
    return model.layer3, False


# -------------------------------------------------------------------------------- training

def main(args: argparse.Namespace) -> int:
    if args.model == "all" and args.norm == "all":
        raise UsageError("--model all and --norm all together would train 7 models; pick one")
    if (args.model == "all" or args.norm == "all") and (args.teacher or args.finetune):
        raise UsageError("--teacher and --finetune train one model; drop --model all / --norm all")
    if args.norm != "bn" and args.model not in ("resnet", "all") and args.norm != "all":
        raise UsageError("--norm applies to the ResNet: add --model resnet")
    if args.norm == "all" and args.model != "resnet":
        raise UsageError("--norm all compares norms on the ResNet: add --model resnet")
    if (args.image_size or args.gradcam_classes) and args.data is None:
        raise UsageError("--image-size and --gradcam-classes apply to --data PATH")
    apply_config(args)
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    if args.model == "all":
        runs = [(kind, "bn") for kind in KINDS]
        name = "compare"
    elif args.norm == "all":
        runs = [("resnet", norm) for norm in NORMS]
        name = "norms"
    else:
        return train_one(args, args.model, args.norm,
                         Path(args.out or RUNS_DIR / "swin_cnn" / f"{run_name(args)}-{stamp}"))
    out = Path(args.out or RUNS_DIR / "swin_cnn" / f"{name}-{stamp}")
    for kind, norm in runs:
        train_one(args, kind, norm, out / (kind if name == "compare" else norm))
    compare(out, [kind if name == "compare" else norm for kind, norm in runs],
            "model" if name == "compare" else "ResNet-20 norm")
    return 0


def run_name(args) -> str:
    if args.teacher:
        return f"{args.model}-distilled"
    if args.finetune:
        return f"{args.model}-finetune-{args.finetune_mode}"
    return args.model if args.model != "resnet" else f"resnet-{args.norm}"


def train_one(args, kind: str, norm: str, out: Path) -> int:
    dist = setup(args.device, args.seed)
    # the checkpoints named on the command line are read before the data: a wrong path fails
    # at once, not after the data has loaded
    source = load_model(args.finetune) if args.finetune else None
    teacher_source = load_model(args.teacher, args.teacher_lab) if args.teacher else None
    if args.data is not None:
        train_set, val_set, test_set, names, split = folder_datasets(args)
        show = gradcam_selection(args.gradcam_classes, names)
    else:
        (train_set, val_set, test_set, names), split, show = datasets(args), None, None
    in_channels = train_set.images.shape[1]
    params, adapt = None, (lambda x: x)
    if args.finetune:
        model, kind, config, adapt = source
        if kind not in KINDS:
            raise UsageError(f"{args.finetune} holds a {kind!r} model; fine-tune a Swin, "
                             f"ConvNeXt or ResNet checkpoint (or torchvision's swin_t / convnext_tiny)")
        head = "fc" if kind == "resnet" else "head"
        setattr(model, head, nn.Linear(getattr(model, head).in_features, len(names)))
        config = {**config, "num_classes": len(names)}
        if args.finetune_mode == "head":  # only the new head trains
            model.requires_grad_(False)
            getattr(model, head).requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        config = configs(args.full, in_channels, len(names),
                         train_set.images.shape[-1] if args.data is not None else None)[kind]
        if kind == "resnet":
            config["norm"] = norm
        model = build(kind, config)
    teacher = None
    if args.teacher:
        teacher, teacher_kind, _, teacher_adapt = teacher_source
        teacher = teacher.to(dist.device).eval().requires_grad_(False)

        class Teacher(nn.Module):  # the teacher on the batches as it expects them
            def __init__(self):
                super().__init__()
                self.net = teacher

            def forward(self, x):
                return self.net(teacher_adapt(x))
        teacher_module = Teacher()

    def step(model, batch):
        x, y = batch
        if teacher is not None:  # labels unused: the teacher's soft targets replace them
            out = distillation_step(Wrapped(model, adapt), teacher_module, x, args.temperature)
            return {"loss": out["loss"], "agreement": out["agreement"]}
        logits = model(adapt(x))
        return {"loss": F.cross_entropy(logits, y), "acc": (logits.argmax(-1) == y).float().mean()}

    def evaluate(model):
        logits, labels = predict(model, val_set, dist.device, adapt)
        return {"val_loss": F.cross_entropy(logits, labels).item(),
                "val_acc": (logits.argmax(-1) == labels).float().mean().item()}

    epochs = args.epochs or (100 if args.full else 10)
    lr = args.lr or (4e-3 if kind == "resnet" else 2e-3)
    lazy = args.data is not None and train_set.images._cache is None
    workers = args.workers if args.workers is not None else (2 if lazy else 0)
    run = RunConfig(out, epochs, args.batch_size, lr, args.weight_decay, resume=args.resume,
                    workers=workers, optimizer=getattr(args, "optimizer", "adamw"))
    data = args.data.name if args.data is not None else ("CIFAR-10" if args.full else "MNIST-5k")
    if dist.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        what = f"{kind}" + (f" ({norm})" if kind == "resnet" else "")
        print(f"training {what}, {n_params:,} parameters, on {data}"
              f" ({len(train_set)} train / {len(val_set)} validation / {len(test_set)} test "
              f"images), {epochs} epochs on {dist.device}"
              + (f", distilled from {args.teacher} at T = {args.temperature:g}" if teacher else "")
              + f"; run folder {out}")
    history = fit(model, train_set, step, run, dist, evaluate=evaluate, params=params,
                  meta={"kind": kind, "config": config, "classes": names}, seed=args.seed)
    if dist.is_main:
        if split is not None:  # the split this run used, to reproduce and report it
            (out / "split.json").write_text(json.dumps({"root": str(args.data), **split}, indent=1) + "\n")
        report(model, kind, history, (train_set, val_set, test_set), names, out, dist.device, adapt,
               data, show)
    teardown(dist)
    return 0


class Wrapped(nn.Module):
    """model(adapt(x)), so that distillation_step sees one module with the model's mode."""

    def __init__(self, model, adapt):
        super().__init__()
        self.model, self.adapt = model, adapt

    def forward(self, x):
        return self.model(self.adapt(x))

    def train(self, mode: bool = True):
        self.model.train(mode)
        return super().train(mode)


@torch.no_grad()
def predict(model, dataset, device, adapt=lambda x: x, batch_size=500):
    model.eval()
    logits = [model(adapt(dataset.normalise(dataset.images[i:i + batch_size]).to(device))).float().cpu()
              for i in range(0, len(dataset), batch_size)]
    return torch.cat(logits), dataset.labels


# --------------------------------------------------------------------------------- results

def classification_metrics(counts: torch.Tensor) -> dict[str, float]:
    """Accuracy, micro-F1 and macro-F1 from a confusion matrix counts[true, predicted].

    Per class c: precision tp / (tp + fp), recall tp / (tp + fn), F1 their harmonic mean
    2 tp / (2 tp + fp + fn). Macro-F1 averages the classes' F1 (every class counts the same);
    micro-F1 pools tp, fp, fn over the classes first -- with one label per image every error is
    one fp and one fn, so micro-F1 equals the accuracy. A class with no images and no
    predictions has F1 0 here (it is counted, as sklearn's zero_division=0 does).
    """
    counts = counts.double()
    tp = counts.diag()
    fp, fn = counts.sum(0) - tp, counts.sum(1) - tp
    f1 = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), 0.0)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()).clamp_min(1)
    return {"accuracy": (tp.sum() / counts.sum().clamp_min(1)).item(),
            "micro_f1": micro.item(), "macro_f1": f1.mean().item()}


def gradcam_selection(text: str | None, names: list[str]) -> list[int] | None:
    """--gradcam-classes "A,B": the class ids to show (checked before training), or None."""
    if not text:
        return None
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise UsageError(f"--gradcam-classes: no class {', '.join(repr(u) for u in unknown)}; the "
                         f"classes are {', '.join(names[:30])}")
    return [names.index(w) for w in wanted]


def report(model, kind, history, sets, names, out, device, adapt, data: str = "MNIST-5k",
           show: list[int] | None = None) -> dict:
    model = model.cpu()
    results, preds = {}, {}
    for split, dataset in zip(("train", "val", "test"), sets):
        logits, labels = predict(model, dataset, "cpu", adapt)
        preds[split] = (logits.argmax(-1), labels)
        results[split] = classification_metrics(plots.confusion_matrix(labels, logits.argmax(-1),
                                                                       len(names)))
    results["params"] = sum(p.numel() for p in model.parameters())
    results["epochs"] = history[-1]["epoch"]
    results["seconds"] = round(sum(h["seconds"] for h in history), 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    pred, labels = preds["test"]
    paths = [plots.curves(history, out / "curves.png", f"{kind} on {data}, {len(names)} classes"),
             plots.plot_confusion(labels, pred, names, out / "confusion.png", f"{kind} ({data} test)")]
    paths += gradcam_figures(model, kind, sets[2], pred, labels, names, out, adapt, data=data,
                             show=show)
    print(f"{'':6} {'accuracy':>9} {'micro-F1':>9} {'macro-F1':>9}")
    for split in ("train", "val", "test"):
        r = results[split]
        print(f"{split:6} {r['accuracy']:9.4f} {r['micro_f1']:9.4f} {r['macro_f1']:9.4f}")
    print("wrote " + ", ".join(str(p) for p in paths + [out / "results.json", out / "metrics.jsonl",
                                                         out / "checkpoint.pt"]))
    return results


def gradcam_figures(model, kind, test_set, pred, labels, names, out, adapt, n=8,
                    data: str = "MNIST-5k", show: list[int] | None = None) -> list[Path]:
    """Grad-CAM of the predicted class for n test images the model got right and n it got
    wrong (of the classes in `show`, when given)."""
    if kind not in KINDS:
        return []
    layer, channels_last = gradcam_layer(model, kind)
    paths = []
    chosen = torch.isin(labels, torch.tensor(show)) if show else torch.ones_like(labels, dtype=torch.bool)
    for name, mask in (("correct", chosen & (pred == labels)), ("incorrect", chosen & (pred != labels))):
        idx = spread(mask, labels, n)
        if len(idx) == 0:
            continue
        images = test_set.images[idx]
        x = adapt(test_set.normalise(images)).requires_grad_()  # also when the body is frozen
        cam, _ = grad_cam(model.eval(), layer, x, pred[idx], channels_last=channels_last)
        maps = upsample(cam, images.shape[-2:])
        titles = [f"{names[labels[i]]} -> {names[pred[i]]}" for i in idx]
        paths.append(plots.overlay_grid(images.float() / 255, maps, titles,
                                        out / f"gradcam_{name}.png",
                                        f"{kind}: Grad-CAM of the predicted class, {data} "
                                        f"test images {name} (true -> predicted)", vmax=1.0,
                                        colorbar_label="Grad-CAM / its maximum"))
    return paths


def spread(mask: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Up to n indices where mask holds, taken from the true classes in turn (the test set is
    sorted by class: the first n would all be zeros)."""
    per_class = [(mask & (labels == c)).nonzero().flatten().tolist() for c in labels.unique().tolist()]
    picked = []
    while len(picked) < n and any(per_class):
        for indices in per_class:
            if indices and len(picked) < n:
                picked.append(indices.pop(0))
    return torch.tensor(sorted(picked), dtype=torch.long)


def compare(out: Path, names: list[str], what: str) -> None:
    """comparison.md (the results of each run) and comparison.png (validation accuracy)."""
    import matplotlib.pyplot as plt

    rows = [f"| {what} | params | epochs | s/epoch | train acc (eval mode) | val acc | test acc | "
            f"test micro-F1 | test macro-F1 |", "|---" * 9 + "|"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name in names:
        r = json.loads((out / name / "results.json").read_text())
        history = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        rows.append(f"| {name} | {r['params']:,} | {r['epochs']} | {r['seconds'] / r['epochs']:.1f} | "
                    f"{r['train']['accuracy']:.4f} | {r['val']['accuracy']:.4f} | "
                    f"{r['test']['accuracy']:.4f} | {r['test']['micro_f1']:.4f} | "
                    f"{r['test']['macro_f1']:.4f} |")
        ax.plot([h["epoch"] for h in history], [h["val_acc"] for h in history], marker="o", ms=3,
                label=name)
    ax.set_xlabel("epoch")
    plots.integer_epochs(ax)
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(out / "comparison.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    (out / "comparison.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.png'}")


def required_tasks(args) -> set[str]:
    """The lab's tasks this run's code calls (`vislab train` checks them before the first
    epoch): each trained model's, the norms for the ResNet, Grad-CAM for the figures every
    run writes, distillation with --teacher."""
    swin_tasks = {"swin.window_partition", "swin.window_attention", "swin.shifted_window",
                  "swin.patch_merging", "swin.model"}
    per_model = {"swin": swin_tasks, "convnext": {"convnext.block"},
                 "resnet": {"resnet.model", "norms"}}
    needed = {"gradcam"}
    for kind in (KINDS if args.model == "all" else (args.model,)):
        needed |= per_model[kind]
    if args.teacher:
        needed.add("swin.distill")
    return needed
