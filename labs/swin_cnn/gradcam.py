"""Grad-CAM (Selvaraju et al., 2017): where in the image did the evidence for a class come from?

For a layer with activations A (B, K, h, w) and the logit y_c of class c (before the softmax):

    alpha_k = mean over (h, w) of d y_c / d A_k          (one weight per channel k)
    cam     = ReLU( sum_k alpha_k A_k )                  (B, h, w)

Only positive evidence is kept (the ReLU). `upsample` scales a map to the image's size for
display.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def grad_cam(model: nn.Module, layer: nn.Module, images: torch.Tensor,
             target: torch.Tensor | None = None,
             channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM of `model` at `layer` (a sub-module of model) for `images` (B, C, H, W).

    target: the class of each image (B,), or None for the model's own prediction.
    channels_last: the layer's output is (B, h, w, K) (a Swin stage) instead of (B, K, h, w).
    Returns (cam (B, h, w), detached from the autograd graph, the classes used (B,)). The model
    is left as it was: its mode unchanged, no hooks stay registered and no parameter's .grad
    changes (use torch.autograd.grad, not backward).
    """
    # TODO(gradcam): register a forward hook on `layer` that keeps its output A, run the model,
    #   remove the hook (also if the model raises); pick the classes; the gradient of the sum of
    #   the chosen logits with respect to A (torch.autograd.grad); for channels_last, move K to
    #   axis 1 in A and its gradient; alpha = mean gradient over (h, w); ReLU of the weighted sum.
    raise NotImplementedError('TODO(gradcam): register a forward hook on `layer` that keeps its output A, run the model, remove the hook (also if the model raises); pick the classes; the gradient of the sum of the chosen logits with respect to A (torch.autograd.grad); for channels_last, move K to axis 1 in A and its gradient; alpha = mean gradient over (h, w); ReLU of the weighted sum.')


def upsample(cam: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """cam (B, h, w) -> (B, H, W), bilinear, each map divided by its maximum (all-zero maps
    stay zero), for overlays on the images."""
    cam = F.interpolate(cam[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    top = cam.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / top
