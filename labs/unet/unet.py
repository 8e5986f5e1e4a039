"""A UNet (Ronneberger et al., 2015) for segmentation, with two choices in each direction.

Encoder: a double convolution at full resolution, then `depth` down steps, each halving H and W
(2x2 max-pool, or a 2x2 convolution with stride 2) and doubling the channels with a double
convolution. Decoder: `depth` up steps, each doubling H and W (2x2 transposed convolution, or
bilinear upsampling and a 1x1 convolution) while halving the channels, padding the result to
the size of the encoder's map at that resolution (the skip), concatenating [skip, upsampled] on
the channels and applying a double convolution. A 1x1 convolution gives one logit per class and
pixel. Convolutions are "same" (padding 1), so the output has the input's H x W for any size.

Parameter names (the grader loads weights by name): inc.{conv1, bn1, conv2, bn2},
downs.<i>.{pool (only for down="conv"), conv.*}, ups.<i>.{up, conv.*}, head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

DOWNS = ("maxpool", "conv")
UPS = ("transpose", "bilinear")


@dataclass
class UNetConfig:
    in_channels: int = 3
    num_classes: int = 1        # 1: one logit per pixel (pet vs background); 3: the trimap
    base: int = 16              # channels of the first level; level i has base * 2**i
    depth: int = 3              # down steps (= up steps); H and W are divided by 2**depth
    down: str = "maxpool"       # "maxpool" or "conv" (2x2, stride 2)
    up: str = "transpose"       # "transpose" (2x2, stride 2) or "bilinear" (+ 1x1 conv)


# ---------------------------------------------------------------------- unet.double_conv

class DoubleConv(nn.Module):
    """(3x3 conv, no bias -> BatchNorm -> ReLU) twice: relu(bn2(conv2(relu(bn1(conv1(x)))))).

    Both convolutions have padding 1 (H and W unchanged); conv1 maps in_channels to
    out_channels, conv2 out_channels to out_channels. The convolutions have no bias: the
    BatchNorm's shift that follows would cancel it.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """Return (B, C_out, H, W)."""
        # TODO(unet.double_conv): conv1, bn1, ReLU, then conv2, bn2, ReLU (use the modules
        #   created in __init__, so that BatchNorm follows train / eval mode).
        raise NotImplementedError('TODO(unet.double_conv): conv1, bn1, ReLU, then conv2, bn2, ReLU (use the modules created in __init__, so that BatchNorm follows train / eval mode).')


# ---------------------------------------------------------------------------- unet.down

class Down(nn.Module):
    """Halve H and W, then DoubleConv(in_channels, out_channels).

    mode "maxpool": 2x2 max-pooling with stride 2 (no parameters; `self.pool` may be an
    nn.MaxPool2d or you may call F.max_pool2d in forward).
    mode "conv": `self.pool = nn.Conv2d(in_channels, in_channels, kernel_size=2, stride=2)`, a
    learned downsampling (with bias).
    Either way an odd H gives floor(H / 2), and `self.conv` is the DoubleConv.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "maxpool"):
        super().__init__()
        if mode not in DOWNS:
            raise ValueError(f"down mode must be one of {DOWNS}, got {mode!r}")
        self.mode = mode
        # TODO(unet.down): self.pool: nn.MaxPool2d(2) for "maxpool", a 2x2 stride-2
        #   nn.Conv2d(in_channels, in_channels) for "conv"; self.conv = DoubleConv(in, out).
        raise NotImplementedError('TODO(unet.down): self.pool: nn.MaxPool2d(2) for "maxpool", a 2x2 stride-2 nn.Conv2d(in_channels, in_channels) for "conv"; self.conv = DoubleConv(in, out).')

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """Return (B, C_out, floor(H/2), floor(W/2))."""
        # TODO(unet.down): downsample with self.pool, then self.conv.
        raise NotImplementedError('TODO(unet.down): downsample with self.pool, then self.conv.')


# ------------------------------------------------------------------------------ unet.up

class Up(nn.Module):
    """Upsample x (B, C_in, h, w) to twice its size with C_in // 2 channels, pad it to the skip's
    size, concatenate [skip, upsampled] on the channels, DoubleConv(C_in, C_out).

    mode "transpose": `self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)`.
    mode "bilinear": bilinear upsampling by 2 (align_corners=False: F.interpolate or
    nn.Upsample) and `self.up = nn.Conv2d(in_channels, in_channels // 2, kernel_size=1)`.
    The skip has in_channels // 2 channels and size (H, W) with H = 2h or 2h + 1 (an odd size
    was floored on the way down): pad the upsampled map with zeros at the bottom and right to
    (H, W) -- for a difference of at most one this is the centred padding of the common PyTorch
    UNet too. Do not crop the skip: the output keeps the skip's (so the input's) size.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "transpose"):
        super().__init__()
        if mode not in UPS:
            raise ValueError(f"up mode must be one of {UPS}, got {mode!r}")
        self.mode = mode
        # TODO(unet.up): self.up: nn.ConvTranspose2d(in, in // 2, 2, stride=2) for "transpose",
        #   nn.Conv2d(in, in // 2, 1) for "bilinear"; self.conv = DoubleConv(in, out).
        raise NotImplementedError('TODO(unet.up): self.up: nn.ConvTranspose2d(in, in // 2, 2, stride=2) for "transpose", nn.Conv2d(in, in // 2, 1) for "bilinear"; self.conv = DoubleConv(in, out).')

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, h, w), skip: (B, C_in // 2, H, W); returns (B, C_out, H, W)."""
        # TODO(unet.up): upsample (transposed conv, or bilinear x2 then the 1x1 conv); pad with
        #   F.pad(x, (0, W - w2, 0, H - h2)) to the skip's size; torch.cat([skip, x], dim=1);
        #   self.conv.
        raise NotImplementedError("TODO(unet.up): upsample (transposed conv, or bilinear x2 then the 1x1 conv); pad with F.pad(x, (0, W - w2, 0, H - h2)) to the skip's size; torch.cat([skip, x], dim=1); self.conv.")


# --------------------------------------------------------------------------- unet.model

class UNet(nn.Module):
    """inc = DoubleConv(in_channels, base); downs.i = Down(base 2^i, base 2^(i+1)) for
    i < depth; ups.i = Up(base 2^(depth-i), base 2^(depth-i-1)); head = 1x1 Conv2d(base,
    num_classes) (with bias). Up step i takes the encoder's map at the same resolution as its
    skip: the output of downs.(depth-2-i), or of inc for the last one.
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        self.inc = DoubleConv(c.in_channels, c.base)
        self.downs = nn.ModuleList(
            [Down(c.base * 2**i, c.base * 2**(i + 1), c.down) for i in range(c.depth)])
        self.ups = nn.ModuleList(
            [Up(c.base * 2**(c.depth - i), c.base * 2**(c.depth - i - 1), c.up)
             for i in range(c.depth)])
        self.head = nn.Conv2d(c.base, c.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """Return the logits, (B, num_classes, H, W) -- no sigmoid or softmax: the losses and
        the metrics apply it."""
        # TODO(unet.model): inc; keep every encoder output (the skips); the downs; then each up
        #   with the skip of the same resolution (the deepest first, inc's last); head.
        raise NotImplementedError("TODO(unet.model): inc; keep every encoder output (the skips); the downs; then each up with the skip of the same resolution (the deepest first, inc's last); head.")
