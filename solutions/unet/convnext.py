# Given code, written by `vislab release` from solutions/swin_cnn/convnext.py (the swin_cnn lab's reference).
# Do not edit: it is regenerated from there.
"""ConvNeXt (Liu et al., 2022): a ResNet modernised step by step towards a Swin Transformer.

Patchify stem (a stride-P convolution), stages of ConvNeXt blocks -- a 7x7 depthwise
convolution (the "window"), LayerNorm, an inverted bottleneck MLP (C -> 4C -> C) with GELU,
a learned per-channel layer scale and stochastic depth -- and LayerNorm + stride-2 convolutions
between stages.

Parameter names (the grader and `load_torchvision_weights` rely on them): stem.0 (conv),
stem.1 (norm), stages.<i>.<j>.{dwconv, norm, pwconv1, pwconv2, layer_scale},
downsamples.<i>.0 (norm), downsamples.<i>.1 (conv), norm, head. layer_scale has shape (C, 1, 1)
as in torchvision's CNBlock.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ConvNeXtConfig:
    in_channels: int = 1
    num_classes: int = 10
    stem_size: int = 2                  # the stem's kernel and stride (4 in convnext_tiny)
    dims: tuple[int, ...] = (48, 96)    # channels per stage
    depths: tuple[int, ...] = (2, 3)    # blocks per stage
    layer_scale: float = 1e-6           # initial value of every layer-scale entry
    drop_path: float = 0.0              # stochastic depth of the last block; 0 for the first


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, at every position (torchvision's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


# ------------------------------------------------------------------------- convnext.block

def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:  # x: (B, ...)
    """Stochastic depth (Huang et al., 2016) on a residual branch's output x.

    In training, each sample's branch is dropped (set to zero) with probability p and kept
    otherwise, scaled by 1 / (1 - p) so that its expected value is unchanged; one coin per
    sample (torchvision's mode "row"), not per element, whatever the number of axes of x.
    p = 1 returns zeros. Outside training, or with p = 0, x is returned unchanged.
    """
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < 1 - p
    return x * keep.to(x.dtype) / (1 - p)


class CNBlock(nn.Module):
    """x + drop_path(gamma * pwconv2(GELU(pwconv1(LN(dwconv(x)))))) on (B, C, H, W) maps.

    dwconv: 7x7 depthwise convolution (groups = C, padding 3); LN: LayerNorm over the channels
    (eps 1e-6), computed channels-last; pwconv1, pwconv2: Linear(C, 4C), Linear(4C, C), the
    inverted bottleneck, applied at every position; gamma: layer_scale (C, 1, 1).
    """

    def __init__(self, dim: int, layer_scale: float = 1e-6, drop_path: float = 0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        y = self.dwconv(x).permute(0, 2, 3, 1)              # (B, H, W, C)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))  # (B, H, W, C)
        y = self.layer_scale * y.permute(0, 3, 1, 2)        # (B, C, H, W)
        return x + drop_path(y, self.drop_path, self.training)


class ConvNeXt(nn.Module):
    """stem (conv k = s = stem_size, LayerNorm2d) -> stage 0 -> [LayerNorm2d, conv k = s = 2]
    -> stage 1 -> ... -> global average pool -> LayerNorm -> head."""

    def __init__(self, config: ConvNeXtConfig):
        super().__init__()
        self.config = c = config
        if len(c.dims) != len(c.depths):
            raise ValueError(f"dims {c.dims} and depths {c.depths} differ in length")
        self.stem = nn.Sequential(
            nn.Conv2d(c.in_channels, c.dims[0], kernel_size=c.stem_size, stride=c.stem_size),
            LayerNorm2d(c.dims[0], eps=1e-6))
        total, k = sum(c.depths), 0
        self.stages, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(c.dims, c.depths)):
            blocks = []
            for _ in range(depth):
                blocks.append(CNBlock(dim, c.layer_scale, c.drop_path * k / max(1, total - 1)))
                k += 1
            self.stages.append(nn.Sequential(*blocks))
            if i < len(c.dims) - 1:
                self.downsamples.append(nn.Sequential(
                    LayerNorm2d(dim, eps=1e-6), nn.Conv2d(dim, c.dims[i + 1], 2, stride=2)))
        self.norm = nn.LayerNorm(c.dims[-1], eps=1e-6)
        self.head = nn.Linear(c.dims[-1], c.num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """The last stage's map, (B, C_last, h, w)."""
        x = self.stem(x)                                # (B, C_0, H/P, W/P)
        for i, stage in enumerate(self.stages):
            x = stage(x)                                # (B, C_i, h, w)
            if i < len(self.downsamples):
                x = self.downsamples[i](x)              # (B, C_i+1, h/2, w/2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        return self.head(self.norm(self.features(x).mean(dim=(2, 3))))  # (B, num_classes)


# ------------------------------------------------------------------ torchvision's weights

def torchvision_key_map(depths: tuple[int, ...]) -> dict[str, str]:
    """Our parameter name -> torchvision ConvNeXt's (features.0 the stem, features.1, 3, ... the
    stages, features.2, 4, ... the downsampling layers, classifier.0 / .2 norm and head)."""
    names = {"stem.0.weight": "features.0.0.weight", "stem.0.bias": "features.0.0.bias",
             "stem.1.weight": "features.0.1.weight", "stem.1.bias": "features.0.1.bias",
             "norm.weight": "classifier.0.weight", "norm.bias": "classifier.0.bias",
             "head.weight": "classifier.2.weight", "head.bias": "classifier.2.bias"}
    block = {"dwconv": "block.0", "norm": "block.2", "pwconv1": "block.3", "pwconv2": "block.5"}
    for i, depth in enumerate(depths):
        for j in range(depth):
            ours, theirs = f"stages.{i}.{j}.", f"features.{2 * i + 1}.{j}."
            for a, b in block.items():
                for p in ("weight", "bias"):
                    names[f"{ours}{a}.{p}"] = f"{theirs}{b}.{p}"
            names[ours + "layer_scale"] = theirs + "layer_scale"
        if i < len(depths) - 1:
            for p in ("0.weight", "0.bias", "1.weight", "1.bias"):
                names[f"downsamples.{i}.{p}"] = f"features.{2 * i + 2}.{p}"
    return names


def config_from_torchvision(state: dict[str, torch.Tensor], **overrides) -> ConvNeXtConfig:
    """A ConvNeXtConfig that fits a torchvision ConvNeXt state dict (e.g. convnext_tiny's)."""
    dim0, in_channels, stem, _ = state["features.0.0.weight"].shape
    stages = sorted({int(k.split(".")[1]) for k in state
                     if k.startswith("features.") and int(k.split(".")[1]) % 2 == 1})
    depths = tuple(len({k.split(".")[2] for k in state if k.startswith(f"features.{s}.")})
                   for s in stages)
    dims = tuple(state[f"features.{s}.0.layer_scale"].shape[0] for s in stages)
    config = dict(in_channels=in_channels, num_classes=state["classifier.2.weight"].shape[0],
                  stem_size=stem, dims=dims, depths=depths)
    return ConvNeXtConfig(**(config | overrides))


def load_torchvision_weights(model: ConvNeXt, state_dict: dict[str, torch.Tensor]) -> ConvNeXt:
    """Copy a torchvision ConvNeXt state dict (e.g. convnext_tiny's) into `model`, whose config
    must agree (see config_from_torchvision). Returns `model`."""
    names = torchvision_key_map(model.config.depths)
    missing = [theirs for theirs in names.values() if theirs not in state_dict]
    if missing:
        raise KeyError(f"torchvision state dict lacks {missing[:3]}: is it a ConvNeXt with "
                       f"depths {model.config.depths}?")
    extra = sorted(set(state_dict) - set(names.values()))
    if extra:
        raise KeyError(f"torchvision state dict has weights this ConvNeXt has no place for: "
                       f"{extra[:4]}")
    ours = {name: state_dict[theirs] for name, theirs in names.items()}
    for name, param in model.state_dict().items():
        if ours[name].shape != param.shape:
            raise ValueError(f"{name}: torchvision's tensor has shape {tuple(ours[name].shape)}, "
                             f"this model's has {tuple(param.shape)}; make the configs agree")
    model.load_state_dict(ours)
    return model
