"""The denoising UNet: eps_hat = UNet(x_t, t, cond).

    t --timestep_embedding--> (B, C0) --time_mlp--> temb (B, 4*C0)
    x --conv_in--> down levels [ResBlock (+ TransformerBlock)] x blocks, Downsample
      --> mid [ResBlock, TransformerBlock, ResBlock]
      --> up levels [cat(skip), ResBlock (+ TransformerBlock)] x (blocks + 1), Upsample
      --> GroupNorm, SiLU, conv_out --> eps_hat (B, C, H, W)

Down and up ResBlocks differ: an up block takes its own channels plus the skip's (the
concatenation), so it changes the width and has the 1x1 skip convolution; a down block
changes width only at the first block of a level. TransformerBlocks run at the levels marked
in `attention` (low resolutions) and in the middle; with cond_dim set they cross-attend to the
condition cond (B, L, cond_dim), without it their cross-attention attends to x itself.

Parameter names are fixed (the grader loads weights by them):
  ResBlock: norm1, conv1, time_proj, norm2, conv2, skip (only when in != out)
  Attention: to_q, to_k, to_v (no bias), to_out (with bias)
  TransformerBlock: norm1, attn1 (self), norm2, attn2 (cross), norm3, mlp.0, mlp.2
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


# ------------------------------------------------------------------ diffusion.time_embedding

def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The sinusoidal embedding of (possibly fractional) steps t (B,), (B, dim) float32:

        half = dim // 2,   f_i = max_period ** (-i / half)   for i = 0..half-1
        emb = [sin(t f_0), ..., sin(t f_{half-1}), cos(t f_0), ..., cos(t f_{half-1})]

    sines first, then cosines; for an odd dim a last column of zeros."""
    ### BEGIN SOLUTION
    # TODO(diffusion.time_embedding): the frequencies exp(-ln(max_period) * i / half), the
    #   angles t[:, None] * f[None], cat([sin, cos], -1), and a zero column if dim is odd.
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / half)   # (half,)
    args = t.float()[:, None] * freqs[None]                          # (B, half)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)      # (B, 2*half)
    if dim % 2:
        emb = F.pad(emb, (0, 1))                                     # (B, dim)
    return emb
    ### END SOLUTION


# ------------------------------------------------------------------------ diffusion.resblock

class ResBlock(nn.Module):
    """h = conv1(SiLU(norm1(x)))                 3x3 convs, padding 1, in -> out -> out
       h = h + time_proj(SiLU(temb))[:, :, None, None]
       h = conv2(dropout(SiLU(norm2(h))))
       return h + skip(x)       skip: a 1x1 conv when in != out, else the identity (x itself)
    norm1, norm2: GroupNorm(groups, channels), each normalising *before* its activation."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int,
                 dropout: float = 0.0, groups: int = 8):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                     else nn.Identity())

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x: (B, in, H, W), temb: (B, time_dim) -> (B, out, H, W)."""
        ### BEGIN SOLUTION
        # TODO(diffusion.resblock): the two norm -> SiLU -> conv stages, the projected time
        #   embedding added per channel between them, dropout before conv2, and the skip.
        h = self.conv1(F.silu(self.norm1(x)))                        # (B, out, H, W)
        h = h + self.time_proj(F.silu(temb))[:, :, None, None]      # (B, out, H, W)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))          # (B, out, H, W)
        return h + self.skip(x)
        ### END SOLUTION


# ----------------------------------------------------------------- diffusion.cross_attention

class Attention(nn.Module):
    """Multi-head attention of queries from x (B, N, dim) over keys and values from context
    (B, L, context_dim), or from x itself when context is None (self-attention):

        q = to_q(x), k = to_k(context), v = to_v(context), split into `heads` heads of
        dim // heads; softmax(q k^T / sqrt(dim // heads)) over the L keys; v; merge heads;
        to_out.  Returns (B, N, dim)."""

    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ### BEGIN SOLUTION
        # TODO(diffusion.cross_attention): queries from x, keys and values from context (x if
        #   None); heads; scaled softmax over the keys; merge the heads; to_out.
        context = x if context is None else context
        B, N, D = x.shape
        h = self.heads
        q = self.to_q(x).view(B, N, h, D // h).transpose(1, 2)                 # (B, h, N, d)
        k = self.to_k(context).view(B, context.shape[1], h, D // h).transpose(1, 2)  # (B, h, L, d)
        v = self.to_v(context).view(B, context.shape[1], h, D // h).transpose(1, 2)  # (B, h, L, d)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D // h)                    # (B, h, N, L)
        out = att.softmax(dim=-1) @ v                                          # (B, h, N, d)
        return self.to_out(out.transpose(1, 2).reshape(B, N, D))               # (B, N, dim)
        ### END SOLUTION


class TransformerBlock(nn.Module):
    """On a feature map x (B, C, H, W) as N = H*W tokens (row-major), each step pre-norm and
    residual:
        x = x + attn1(norm1(x))                    self-attention
        x = x + attn2(norm2(x), cond)              cross-attention to the condition (B, L, cond_dim)
        x = x + mlp(norm3(x))                      Linear(C, 4C), GELU, Linear(4C, C)
    and back to (B, C, H, W). norms: LayerNorm(C). cond None: attn2 attends to norm2(x)."""

    def __init__(self, dim: int, cond_dim: int | None = None, heads: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, None, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, cond_dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        ### BEGIN SOLUTION
        # TODO(diffusion.cross_attention): flatten (B, C, H, W) to tokens (B, H*W, C), the three
        #   pre-norm residual steps (the condition goes to attn2 as its context), reshape back.
        B, C, H, W = x.shape
        h = x.flatten(2).transpose(1, 2)                              # (B, N, C)
        h = h + self.attn1(self.norm1(h))
        h = h + self.attn2(self.norm2(h), cond)
        h = h + self.mlp(self.norm3(h))
        return h.transpose(1, 2).reshape(B, C, H, W)                  # (B, C, H, W)
        ### END SOLUTION


# ---------------------------------------------------------------------------- the UNet (given)

@dataclass
class UNetConfig:
    image_size: int = 28
    in_channels: int = 1
    channels: tuple[int, ...] = field(default=(16, 32, 32))   # width of each level; each
    #                                                  but the last halves H and W (28, 14, 7)
    attention: tuple[bool, ...] = field(default=(False, False, True))  # TransformerBlocks
    blocks: int = 1               # ResBlocks per down level (up levels: blocks + 1)
    cond_dim: int | None = None   # width of the condition's tokens (None: unconditional)
    heads: int = 4
    dropout: float = 0.1
    groups: int = 8


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):  # (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, size):  # (B, C, h, w) -> (B, C, *size), nearest then 3x3 conv
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Level(nn.Module):
    """One resolution: ResBlocks, each followed by a TransformerBlock where attention is on."""

    def __init__(self, widths: list[tuple[int, int]], c: UNetConfig, time_dim: int, attn: bool):
        super().__init__()
        self.res = nn.ModuleList(ResBlock(a, b, time_dim, c.dropout, c.groups) for a, b in widths)
        self.attn = nn.ModuleList(TransformerBlock(b, c.cond_dim, c.heads) for _, b in widths
                                  ) if attn else None


class UNet(nn.Module):
    """eps_hat = UNet(x_t (B, C, H, W), t (B,), cond (B, L, cond_dim) or None). See the module
    docstring; the layout follows diffusers' UNet2DModel (DownBlock2D / CrossAttnDownBlock2D)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        C0, time_dim = c.channels[0], 4 * c.channels[0]
        self.time_mlp = nn.Sequential(nn.Linear(C0, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.conv_in = nn.Conv2d(c.in_channels, C0, 3, padding=1)
        self.down, self.downsample, skips, width = nn.ModuleList(), nn.ModuleList(), [C0], C0
        for i, (ch, attn) in enumerate(zip(c.channels, c.attention)):
            widths = [(width if j == 0 else ch, ch) for j in range(c.blocks)]
            self.down.append(Level(widths, c, time_dim, attn))
            width = ch
            skips += [ch] * c.blocks
            if i < len(c.channels) - 1:
                self.downsample.append(Downsample(ch))
                skips.append(ch)
        self.mid1 = ResBlock(width, width, time_dim, c.dropout, c.groups)
        self.mid_attn = TransformerBlock(width, c.cond_dim, c.heads)
        self.mid2 = ResBlock(width, width, time_dim, c.dropout, c.groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, (ch, attn) in reversed(list(enumerate(zip(c.channels, c.attention)))):
            widths = []
            for _ in range(c.blocks + 1):
                widths.append((width + skips.pop(), ch))
                width = ch
            self.up.append(Level(widths, c, time_dim, attn))
            if i > 0:
                self.upsample.append(Upsample(ch))
        self.norm_out = nn.GroupNorm(c.groups, width)
        self.conv_out = nn.Conv2d(width, c.in_channels, 3, padding=1)

    @staticmethod
    def _level(level: Level, x, temb, cond, skips=None, hs=None):
        for j, res in enumerate(level.res):
            if skips is not None:
                x = torch.cat([x, skips.pop()], dim=1)               # (B, C + C_skip, H, W)
            x = res(x, temb)
            if level.attn is not None:
                x = level.attn[j](x, cond)
            if hs is not None:
                hs.append(x)
        return x

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        temb = self.time_mlp(timestep_embedding(t, self.config.channels[0]).to(x.dtype))  # (B, 4*C0)
        h = self.conv_in(x)                                           # (B, C0, H, W)
        hs = [h]
        for i, level in enumerate(self.down):
            h = self._level(level, h, temb, cond, hs=hs)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb), cond), temb)
        for i, level in enumerate(self.up):
            h = self._level(level, h, temb, cond, skips=hs)
            if i < len(self.upsample):
                h = self.upsample[i](h, hs[-1].shape[-2:])
        return self.conv_out(F.silu(self.norm_out(h)))                # (B, C, H, W)


class ClassConditionalUNet(nn.Module):
    """A UNet conditioned on a class label through cross-attention: the label's embedding is a
    condition sequence of one token, cond = label_embed(y)[:, None] (B, 1, cond_dim). Label
    `num_classes` is the null label (no condition) of classifier-free guidance."""

    def __init__(self, config: UNetConfig, num_classes: int = 10):
        super().__init__()
        if config.cond_dim is None:
            raise ValueError("a class-conditional UNet needs config.cond_dim")
        self.num_classes = num_classes
        self.unet = UNet(config)
        self.label_embed = nn.Embedding(num_classes + 1, config.cond_dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, self.label_embed(y)[:, None])          # (B, C, H, W)
