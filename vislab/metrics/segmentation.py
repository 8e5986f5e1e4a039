"""Dice and IoU of predicted segmentation masks (the UNet lab's metrics).

For one image and one class, with P the predicted and T the true set of pixels:

    Dice = 2 |P ∩ T| / (|P| + |T|)        IoU = |P ∩ T| / |P ∪ T|

(Dice is the F1 score of the pixels, IoU the Jaccard index; Dice = 2 IoU / (1 + IoU).) An image
where both sets are empty counts as a perfect 1 for both. Scores are computed per image and
then averaged over the images (and over the classes for multi-class masks), as the Dice loss is.
These are hard-mask metrics: threshold or argmax the model's output first (`to_masks`).
"""
from __future__ import annotations

import torch


def to_masks(logits: torch.Tensor) -> torch.Tensor:
    """Hard predictions from logits: (B, 1, H, W) -> (B, 1, H, W) {0, 1} (logit > 0, i.e.
    probability > 0.5); (B, K, H, W) with K > 1 -> (B, H, W) class indices (argmax)."""
    if logits.shape[1] == 1:
        return (logits > 0).to(torch.long)
    return logits.argmax(dim=1)


def _one_hot(masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, H, W) binary or (B, H, W) class indices -> (B, K, H*W) booleans."""
    if num_classes == 1:
        return (masks.reshape(masks.shape[0], 1, -1) > 0)
    masks = masks.reshape(masks.shape[0], -1).long()
    return torch.stack([masks == k for k in range(num_classes)], dim=1)


def _counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int):
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p, t = _one_hot(pred, num_classes), _one_hot(target, num_classes)
    inter = (p & t).sum(-1).double()                       # (B, K)
    return inter, p.sum(-1).double(), t.sum(-1).double()


def dice_per_image(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 1) -> torch.Tensor:
    """Dice of each image and class, (B, K) float64; binary masks (B, 1, H, W) with
    num_classes=1, or class-index masks (B, H, W) with num_classes=K."""
    inter, p, t = _counts(pred, target, num_classes)
    total = p + t
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def iou_per_image(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 1) -> torch.Tensor:
    """IoU of each image and class, (B, K) float64 (see dice_per_image)."""
    inter, p, t = _counts(pred, target, num_classes)
    union = p + t - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def dice_score(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 1) -> float:
    """Mean Dice over the images (and classes)."""
    return dice_per_image(pred, target, num_classes).mean().item()


def iou_score(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 1) -> float:
    """Mean IoU over the images (and classes)."""
    return iou_per_image(pred, target, num_classes).mean().item()
