# Given code, written by `vislab release` from solutions/vit/model.py (the vit lab's reference).
# Do not edit: it is regenerated from there.
"""A Vision Transformer (Dosovitskiy et al., 2021), small enough to train on MNIST on a CPU.

Parameter names are fixed (the grader and `load_torchvision_weights` rely on them):
patch_embed.proj, cls_token, pos_embed, blocks.<i>.{norm1, attn.qkv, attn.proj, norm2,
mlp.fc1, mlp.fc2}, norm, head.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ViTConfig:
    image_size: int = 28
    patch_size: int = 7
    in_channels: int = 1
    num_classes: int = 10
    dim: int = 64          # D, the width of every token
    depth: int = 2         # number of transformer blocks
    num_heads: int = 4
    mlp_dim: int = 128     # hidden width of each block's MLP
    dropout: float = 0.0

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class PatchEmbed(nn.Module):
    """Cut the image into non-overlapping P x P patches and project each one to D numbers.

    A patch x_p (C*P*P values) becomes W x_p + b. A Conv2d with kernel = stride = P does exactly
    this, with W stored as proj.weight of shape (D, C, P, P).
    """

    def __init__(self, image_size: int, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        """Return the patch tokens, (B, N, D) with N = (H/P) * (W/P), patches in row-major order."""
        x = self.proj(x)                     # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class MLP(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, as torchvision's MLPBlock."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, D)
        x = self.dropout(F.gelu(self.fc1(x)))  # (B, N, hidden)
        return self.dropout(self.fc2(x))       # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention, written from matmuls.

    With q, k, v = x W_q, x W_k, x W_v split into H heads of size d = D / H:
        head_h = softmax(q_h k_h^T / sqrt(d)) v_h        (softmax over the keys)
        out    = concat(head_1, ..., head_H) W_o
    qkv is one Linear(D, 3D) whose output is [q | k | v]; each of q, k, v is split into heads
    as (B, N, H, d) -- head h owns features h*d .. (h+1)*d -- like nn.MultiheadAttention.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, D)
        """Return (B, N, D). Do not call nn.MultiheadAttention or scaled_dot_product_attention."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                        # each (B, H, N, d)
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, N, N)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)           # (B, N, D)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, mlp_dim, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, N, D)
        x = x + self.dropout(self.attn(self.norm1(x)))  # (B, N, D)
        return x + self.mlp(self.norm2(x))               # (B, N, D)


class ViT(nn.Module):
    """Patches -> [CLS] + patch tokens + position embedding -> blocks -> norm -> head(CLS)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.in_channels, c.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, c.num_patches + 1, c.dim) * 0.02)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            [Block(c.dim, c.num_heads, c.mlp_dim, c.dropout) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.head = nn.Linear(c.dim, c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        """Return the logits, (B, num_classes)."""
        tokens = self.patch_embed(x)                           # (B, N, D)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)   # (B, 1, D)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed   # (B, N+1, D)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x)                                       # (B, N+1, D)
        return self.head(self.norm(x)[:, 0])                   # (B, num_classes)


def torchvision_key_map(depth: int) -> dict[str, str]:
    """Our parameter name -> torchvision VisionTransformer's name (q, k, v share one tensor)."""
    names = {
        "patch_embed.proj.weight": "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias",
        "cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
        "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias",
        "head.weight": "heads.head.weight", "head.bias": "heads.head.bias",
    }
    for i in range(depth):
        ours, theirs = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        names.update({
            ours + "norm1.weight": theirs + "ln_1.weight", ours + "norm1.bias": theirs + "ln_1.bias",
            ours + "attn.qkv.weight": theirs + "self_attention.in_proj_weight",
            ours + "attn.qkv.bias": theirs + "self_attention.in_proj_bias",
            ours + "attn.proj.weight": theirs + "self_attention.out_proj.weight",
            ours + "attn.proj.bias": theirs + "self_attention.out_proj.bias",
            ours + "norm2.weight": theirs + "ln_2.weight", ours + "norm2.bias": theirs + "ln_2.bias",
            ours + "mlp.fc1.weight": theirs + "mlp.0.weight", ours + "mlp.fc1.bias": theirs + "mlp.0.bias",
            ours + "mlp.fc2.weight": theirs + "mlp.3.weight", ours + "mlp.fc2.bias": theirs + "mlp.3.bias",
        })
    return names


def load_torchvision_weights(model: ViT, state_dict: dict[str, torch.Tensor]) -> ViT:
    """Copy a torchvision VisionTransformer state dict (e.g. vit_b_16's) into `model`.

    The configs must agree (dim, depth, patch size, image size, classes); a mismatch is reported
    by name and shape. Returns `model`.
    """
    ours = {}
    for name, theirs in torchvision_key_map(model.config.depth).items():
        if theirs not in state_dict:
            raise KeyError(f"torchvision state dict has no {theirs!r} (needed for {name!r}); "
                           f"is it a VisionTransformer with depth {model.config.depth}?")
        ours[name] = state_dict[theirs]
    extra = set(state_dict) - set(torchvision_key_map(model.config.depth).values())
    if extra:
        raise KeyError(f"torchvision state dict has weights this ViT has no place for: "
                       f"{sorted(extra)[:4]} (is its depth larger than {model.config.depth}?)")
    for name, param in model.state_dict().items():
        if name in ours and ours[name].shape != param.shape:
            raise ValueError(f"{name}: torchvision's tensor has shape {tuple(ours[name].shape)}, "
                             f"this model's has {tuple(param.shape)}; make the configs agree")
    model.load_state_dict(ours)
    return model
