"""The ResNet for small images of He et al. (2016, section 4.2): 6n + 2 layers.

A 3x3 convolution with 16 filters, then three stages of n basic blocks with 16, 32 and 64
filters (the second and third stages start with stride 2, halving H and W), global average
pooling and a linear classifier: 6n + 2 weighted layers (n = 3: ResNet-20, 0.27M parameters).
Where a block changes the shape, its shortcut is a 1x1 convolution + norm (option B).

Parameter names follow torchvision's ResNet: conv1, bn1, layer1..layer3 (blocks with conv1,
bn1, conv2, bn2 and, where needed, downsample.0 / downsample.1), fc. "bn" is the name of the
norm layer whichever norm it is (see norms.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .norms import norm_layer as make_norm


@dataclass
class ResNetConfig:
    depth: int = 20                          # 6n + 2
    in_channels: int = 1
    num_classes: int = 10
    widths: tuple[int, ...] = (16, 32, 64)   # filters of the three stages
    norm: str = "bn"                         # bn, in, bin, ln or gn (norms.py)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """relu(norm(conv(relu(norm(conv(x))))) + shortcut(x)), as torchvision's BasicBlock.

    conv1 (3x3, `stride`) -> bn1 -> ReLU -> conv2 (3x3) -> bn2; the shortcut is x itself, or
    downsample(x) (1x1 conv with `stride`, then a norm) when the shape changes; add, ReLU.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = norm_layer(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = norm_layer(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False), norm_layer(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """Returns (B, C_out, H / stride, W / stride)."""
        # TODO(resnet.model): the two conv-norm steps with a ReLU between; add the shortcut
        #   (x, or self.downsample(x)); a final ReLU.
        raise NotImplementedError('TODO(resnet.model): the two conv-norm steps with a ReLU between; add the shortcut (x, or self.downsample(x)); a final ReLU.')


class ResNet(nn.Module):
    """conv1 (3x3, widths[0]) -> bn1 -> ReLU -> layer1 -> layer2 -> layer3 -> average pool -> fc.

    layer_i is an nn.Sequential of n = (depth - 2) / 6 BasicBlocks of widths[i-1] filters; the
    first block of layer2 and of layer3 has stride 2 (and takes the previous width as input).
    `norm_layer(channels)` builds every norm (default: norms.py's layer named by config.norm).
    """

    def __init__(self, config: ResNetConfig, norm_layer: Callable[[int], nn.Module] | None = None):
        super().__init__()
        self.config = c = config
        if (c.depth - 2) % 6 or c.depth < 8:
            raise ValueError(f"depth must be 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...), got {c.depth}")
        n = (c.depth - 2) // 6
        norm_layer = norm_layer or make_norm(c.norm)
        self.conv1 = conv3x3(c.in_channels, c.widths[0])
        self.bn1 = norm_layer(c.widths[0])
        self.relu = nn.ReLU(inplace=True)
        # TODO(resnet.model): self.layer1, self.layer2, self.layer3 from self.make_layer,
        #   with strides 1, 2, 2.
        raise NotImplementedError('TODO(resnet.model): self.layer1, self.layer2, self.layer3 from self.make_layer, with strides 1, 2, 2.')
        self.fc = nn.Linear(c.widths[2], c.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def make_layer(c_in: int, c_out: int, blocks: int, stride: int,
                   norm_layer: Callable[[int], nn.Module]) -> nn.Sequential:
        """`blocks` BasicBlocks: the first maps c_in -> c_out with `stride`, the others keep
        c_out with stride 1."""
        # TODO(resnet.model): an nn.Sequential of BasicBlock(c_in, c_out, stride, norm_layer)
        #   and blocks - 1 BasicBlock(c_out, c_out, 1, norm_layer).
        raise NotImplementedError('TODO(resnet.model): an nn.Sequential of BasicBlock(c_in, c_out, stride, norm_layer) and blocks - 1 BasicBlock(c_out, c_out, 1, norm_layer).')

    def features(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """The last stage's map, (B, widths[2], H/4, W/4)."""
        # TODO(resnet.model): conv1, bn1, ReLU, then the three layers.
        raise NotImplementedError('TODO(resnet.model): conv1, bn1, ReLU, then the three layers.')

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """Return the logits, (B, num_classes)."""
        # TODO(resnet.model): features, mean over (H, W), fc.
        raise NotImplementedError('TODO(resnet.model): features, mean over (H, W), fc.')
