"""PNG plots every lab uses: training curves, a confusion matrix, images with heat-map overlays."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no screen needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def integer_epochs(ax) -> None:
    """Whole-number ticks on the x axis (epochs are counted, 1.5 is not one)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves(history: list[dict], path: Path, title: str = "") -> Path:
    """Loss (left) and accuracy (right, if any) per epoch, train and test."""
    epochs = [h["epoch"] for h in history]
    kinds = [k for k in ("loss", "acc") if any(key.endswith("_" + k) for key in history[0])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for key in sorted(k for k in history[0] if k.endswith("_" + kind)):
            ax.plot(epochs, [h[key] for h in history], marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.set_ylabel({"loss": "loss", "acc": "accuracy"}[kind])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[i, j] = how many examples of true class i were predicted as class j."""
    index = labels.long() * num_classes + preds.long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def plot_confusion(labels: torch.Tensor, preds: torch.Tensor, class_names: list[str],
                   path: Path, title: str = "") -> Path:
    counts = confusion_matrix(labels, preds, len(class_names))
    fig, ax = plt.subplots(figsize=(1 + 0.5 * len(class_names),) * 2)
    ax.imshow(counts.numpy(), cmap="Blues")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            value = counts[i, j].item()
            ax.text(j, i, value, ha="center", va="center", fontsize=8,
                    color="white" if value > counts.max().item() / 2 else "black")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names)
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = counts.diag().sum().item() / max(1, counts.sum().item())
    ax.set_title(f"{title} accuracy {accuracy:.3f}".strip())
    return _save(fig, path)


def overlay_grid(images: torch.Tensor, maps: torch.Tensor | None, titles: list[str],
                 path: Path, title: str = "", colorbar_label: str = "",
                 vmax: float | None = None) -> Path:
    """Images (B, C, H, W) in [0, 1], each with its heat map (B, H, W) below it, in square
    panels. All maps share one colour scale, from 0 to `vmax` (default: the largest value),
    shown by a colour bar labelled `colorbar_label`."""
    rows = 2 if maps is not None else 1
    fig, axes = plt.subplots(rows, len(images), figsize=(1.6 * len(images) + 0.8, 1.75 * rows),
                             squeeze=False)
    scale = None
    if maps is not None:
        top = float(maps.max()) if vmax is None else vmax
        scale = dict(cmap="jet", alpha=0.5, vmin=0.0, vmax=top if top > 0 else 1.0)
    for i, image in enumerate(images):
        picture = image.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
        axes[0, i].imshow(picture, cmap="gray" if image.shape[0] == 1 else None)
        axes[0, i].set_title(titles[i], fontsize=8)
        if maps is not None:
            axes[1, i].imshow(picture, cmap="gray" if image.shape[0] == 1 else None)
            shown = axes[1, i].imshow(maps[i].numpy(), **scale)
    for ax in axes.flat:
        ax.set_box_aspect(1)
        ax.axis("off")
    if maps is not None:
        bar = fig.colorbar(shown, ax=axes[1].tolist(), fraction=0.02, pad=0.01)
        bar.solids.set_alpha(1)
        bar.set_label(colorbar_label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
