"""Hybrid UNets: the Swin and ConvNeXt encoders of the swin_cnn lab feed this lab's decoder.

Each encoder returns its stages' outputs as channels-first maps, finest first:
    features[i]: (B, C_i, H / 2^(i+1), W / 2^(i+1)),  C_i = embed_dim * 2^i
(a stride-2 stem, then each stage halves the size and doubles the channels). The decoder starts
from the deepest map and runs one Up block (unet.py) per level, with the next finer feature as
its skip, and a last Up to full resolution whose skip is `stem`, a DoubleConv of the image with
embed_dim / 2 channels. H and W must be multiples of 2^len(depths) (here no padding is done),
and Swin's stage maps should be at least one window wide.

The Swin encoder's blocks work on channels-last maps (B, h, w, C) -- swin.py's SwinBlock and
PatchMerging -- while the decoder's convolutions want (B, C, h, w): the encoder hands the decoder
permuted copies. swin.py and convnext.py are given (the swin_cnn lab's reference, written here by
`vislab release`).

Parameter names: encoder.patch_embed / encoder.stem, encoder.stages.<i>.<j>.*, encoder.merges.<i>.*
/ encoder.downsamples.<i>.*, stem.*, ups.<i>.*, head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .convnext import CNBlock, LayerNorm2d
from .swin import PatchEmbed, PatchMerging, SwinBlock
from .unet import DoubleConv, Up

ENCODERS = ("swin", "convnext")


@dataclass
class HybridConfig:
    encoder: str = "swin"                # "swin" or "convnext"
    in_channels: int = 3
    num_classes: int = 1
    embed_dim: int = 32                  # C_0; stage i has embed_dim * 2**i channels
    depths: tuple[int, ...] = (2, 2, 2)  # blocks per stage
    num_heads: tuple[int, ...] = (2, 4, 8)  # Swin only: heads per stage
    window_size: int = 4                 # Swin only
    mlp_ratio: float = 4.0               # Swin only
    up: str = "transpose"                # the decoder's Up mode


# ----------------------------------------------------------------------- unet.swin_encoder

class SwinEncoder(nn.Module):
    """patch_embed (2x2 patches, LayerNorm; channels-last) -> stage 0 -> merge 0 -> stage 1 ...

    Stage i: depths[i] SwinBlocks of width C_i, shifts 0 and window_size // 2 alternating;
    merges.i = PatchMerging(C_i) after every stage but the last.
    """

    def __init__(self, config: HybridConfig):
        super().__init__()
        c = config
        self.patch_embed = PatchEmbed(2, c.in_channels, c.embed_dim)
        self.stages, self.merges = nn.ModuleList(), nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(c.depths, c.num_heads)):
            dim = c.embed_dim * 2**i
            self.stages.append(nn.Sequential(*[
                SwinBlock(dim, heads, c.window_size, 0 if j % 2 == 0 else c.window_size // 2,
                          c.mlp_ratio) for j in range(depth)]))
            if i < len(c.depths) - 1:
                self.merges.append(PatchMerging(dim))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x: (B, C_in, H, W)
        """The output of every stage (after its blocks, before the merge that follows), each
        as a channels-first (B, C_i, H / 2^(i+1), W / 2^(i+1)) map, finest first."""
        # TODO(unet.swin_encoder): patch_embed gives (B, H/2, W/2, C_0) channels-last; for each
        #   stage: run it, keep its output permuted to (B, C, h, w) (a permute, not a reshape),
        #   then the merge (on the channels-last map) unless it is the last stage.
        raise NotImplementedError('TODO(unet.swin_encoder): patch_embed gives (B, H/2, W/2, C_0) channels-last; for each stage: run it, keep its output permuted to (B, C, h, w) (a permute, not a reshape), then the merge (on the channels-last map) unless it is the last stage.')


# ------------------------------------------------------------------- unet.convnext_encoder

class ConvNeXtEncoder(nn.Module):
    """stem (2x2 stride-2 conv, LayerNorm2d) -> stage 0 -> downsample 0 -> stage 1 -> ...

    Stage i: depths[i] CNBlocks of width C_i; downsamples.i = [LayerNorm2d(C_i), 2x2 stride-2
    Conv2d(C_i, C_i+1)] after every stage but the last. All maps are channels-first.
    """

    def __init__(self, config: HybridConfig):
        super().__init__()
        c = config
        dims = [c.embed_dim * 2**i for i in range(len(c.depths))]
        self.stem = nn.Sequential(nn.Conv2d(c.in_channels, dims[0], 2, stride=2),
                                  LayerNorm2d(dims[0], eps=1e-6))
        self.stages, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(dims, c.depths)):
            self.stages.append(nn.Sequential(*[CNBlock(dim) for _ in range(depth)]))
            if i < len(dims) - 1:
                self.downsamples.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6),
                                                      nn.Conv2d(dim, dims[i + 1], 2, stride=2)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # x: (B, C_in, H, W)
        """The output of every stage (before the downsampling that follows), (B, C_i,
        H / 2^(i+1), W / 2^(i+1)), finest first."""
        # TODO(unet.convnext_encoder): stem; for each stage: run it, keep its output, then the
        #   downsampling unless it is the last stage.
        raise NotImplementedError('TODO(unet.convnext_encoder): stem; for each stage: run it, keep its output, then the downsampling unless it is the last stage.')


class HybridUNet(nn.Module):
    """A Swin or ConvNeXt encoder, a full-resolution DoubleConv `stem` as the finest skip, and a
    UNet decoder: ups.i = Up(C_(n-1-i), C_(n-1-i) / 2) for the n = len(depths) levels, head =
    1x1 Conv2d(embed_dim / 2, num_classes)."""

    def __init__(self, config: HybridConfig):
        super().__init__()
        self.config = c = config
        if c.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {c.encoder!r}")
        if c.embed_dim % 2:
            raise ValueError(f"embed_dim must be even, got {c.embed_dim}")
        self.encoder = SwinEncoder(c) if c.encoder == "swin" else ConvNeXtEncoder(c)
        self.stem = DoubleConv(c.in_channels, c.embed_dim // 2)
        dims = [c.embed_dim * 2**i for i in range(len(c.depths))]
        self.ups = nn.ModuleList([Up(d, d // 2, c.up) for d in reversed(dims)])
        self.head = nn.Conv2d(c.embed_dim // 2, c.num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """The logits, (B, num_classes, H, W)."""
        n = 2 ** len(self.config.depths)
        if x.shape[-2] % n or x.shape[-1] % n:
            raise ValueError(f"a {self.config.encoder} UNet with {len(self.config.depths)} stages "
                             f"needs H and W divisible by {n}, got {tuple(x.shape[-2:])}")
        features = self.encoder(x)                      # finest first
        skips = [self.stem(x)] + features[:-1]          # (B, C_0/2, H, W), then C_0, C_1, ...
        x = features[-1]                                # the deepest map
        for up in self.ups:
            x = up(x, skips.pop())                      # twice the size, half the channels
        return self.head(x)                             # (B, num_classes, H, W)
