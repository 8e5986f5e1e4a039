"""Segmentation losses: soft Dice (binary and multi-class), next to (binary) cross-entropy.

Soft Dice of one image, with p the predicted probabilities and t the target (0 or 1) at every
pixel, and eps a smoothing constant:

    D = (2 sum(p t) + eps) / (sum(p) + sum(t) + eps)          (sums over the image's pixels)

Dice loss = 1 - mean over the images of D. eps sits in the numerator and the denominator, so
an image with no pet that is predicted as no pet (p = t = 0 everywhere) has D = 1 (a perfect
match), never 0/0, and it keeps the loss smooth when sums are small. Dice is computed per image
and then averaged: with one Dice over the whole batch, a small pet next to a large one hardly
counts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KINDS = ("bce", "dice", "ce")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Binary soft Dice loss. logits: (B, 1, H, W) (before the sigmoid); target: (B, 1, H, W)
    in {0, 1}. Returns 1 - mean_b D_b (a scalar), D_b as in the module's docstring."""
    # TODO(unet.dice_loss): probabilities with torch.sigmoid; per image b the sums over its
    #   pixels of p * t, p and t; D_b = (2 I_b + eps) / (P_b + T_b + eps); 1 - mean of D_b.
    raise NotImplementedError('TODO(unet.dice_loss): probabilities with torch.sigmoid; per image b the sums over its pixels of p * t, p and t; D_b = (2 I_b + eps) / (P_b + T_b + eps); 1 - mean of D_b.')


def multiclass_dice_loss(logits: torch.Tensor, target: torch.Tensor,
                         eps: float = 1.0) -> torch.Tensor:
    """Soft Dice over K classes (e.g. the trimap's pet / border / background).

    logits: (B, K, H, W); target: (B, H, W) class indices in [0, K). With p = softmax over K
    and t the one-hot target, D_bk is the binary Dice of class k in image b; returns
    1 - mean over b and k of D_bk.
    """
    # TODO(unet.dice_loss): softmax over dim 1; F.one_hot(target, K) moved to (B, K, H, W);
    #   per image and class the sums over the pixels; D_bk; 1 - the mean over b and k.
    raise NotImplementedError('TODO(unet.dice_loss): softmax over dim 1; F.one_hot(target, K) moved to (B, K, H, W); per image and class the sums over the pixels; D_bk; 1 - the mean over b and k.')


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The training loss of a variant.

    kind "bce": binary cross-entropy on the logits, F.binary_cross_entropy_with_logits (which
    applies the sigmoid itself, in a numerically stable way), mean over the pixels;
    "dice": dice_loss for one output channel, multiclass_dice_loss for K > 1;
    "ce": cross-entropy over K classes (F.cross_entropy), target (B, H, W) class indices.
    """
    if kind not in KINDS:
        raise ValueError(f"loss kind must be one of {KINDS}, got {kind!r}")
    # TODO(unet.dice_loss): dispatch on kind; bce on the logits (no sigmoid before it).
    raise NotImplementedError('TODO(unet.dice_loss): dispatch on kind; bce on the logits (no sigmoid before it).')
