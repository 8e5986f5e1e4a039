"""A masked autoencoder (He et al., 2022) on the ViT lab's blocks, small enough for MNIST on a CPU.

Parameter names are fixed (the grader loads weights by name):
encoder: patch_embed.proj, cls_token, pos_embed, blocks.<i>.*, norm   (the ViT's, without head)
decoder: embed, mask_token, pos_embed, blocks.<i>.*, norm, pred
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .model import Block, PatchEmbed


@dataclass
class MAEConfig:
    image_size: int = 28
    patch_size: int = 7
    in_channels: int = 1
    dim: int = 64             # encoder width D (the ViT lab's small ViT)
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 128
    decoder_dim: int = 32     # the decoder is lighter than the encoder
    decoder_depth: int = 1
    decoder_heads: int = 4
    decoder_mlp_dim: int = 64
    mask_ratio: float = 0.5

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        return self.patch_size ** 2 * self.in_channels


# ---------------------------------------------------------------------- ssl.random_masking

def random_masking(x: torch.Tensor, mask_ratio: float):
    """Keep a random subset of each image's tokens: K = round(N * (1 - mask_ratio)) of them.

    x: (B, N, D). Every image draws its own random order (argsort of uniform noise, or a
    torch.randperm per image); its first K tokens in that order are kept.
    Returns
      x_kept      (B, K, D)  the kept tokens, in the shuffled order
      mask        (B, N)     float, 0 where a token is kept, 1 where it is removed (image order)
      ids_restore (B, N)     long: the shuffled sequence [kept..., removed...] gathered with
                             ids_restore along dim 1 gives the tokens back in image order, i.e.
                             ids_restore[b, n] is where token n of image b sits in the shuffle.
    Uses torch's global random generator (seed it with torch.manual_seed for repeatable masks).
    """
    B, N, D = x.shape
    keep = round(N * (1 - mask_ratio))
    ### BEGIN SOLUTION
    # TODO(ssl.random_masking): noise (B, N) -> ids_shuffle = argsort(noise, dim=1);
    #   ids_restore = argsort(ids_shuffle); gather the first K; mask 1 everywhere, 0 for the
    #   first K in shuffled order, then gathered back to image order with ids_restore.
    noise = torch.rand(B, N, device=x.device)                           # (B, N)
    ids_shuffle = torch.argsort(noise, dim=1)                           # (B, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)                     # (B, N)
    ids_keep = ids_shuffle[:, :keep]                                    # (B, K)
    x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))  # (B, K, D)
    mask = torch.ones(B, N, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)                           # (B, N)
    return x_kept, mask, ids_restore
    ### END SOLUTION


# ------------------------------------------------------------------------- ssl.mae_encoder

class MAEEncoder(nn.Module):
    """The ViT encoder of the ViT lab (no head), run on the visible patches only."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        c = self.config = config
        self.patch_embed = PatchEmbed(c.image_size, c.patch_size, c.in_channels, c.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, c.num_patches + 1, c.dim) * 0.02)
        self.blocks = nn.ModuleList(
            [Block(c.dim, c.num_heads, c.mlp_dim) for _ in range(c.depth)])
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)

    def forward(self, x: torch.Tensor, mask_ratio: float):  # x: (B, C, H, W)
        """Return (latent (B, 1 + K, D), mask (B, N), ids_restore (B, N)).

        Patch tokens get their own positions (pos_embed[:, 1:]) *before* masking; then
        random_masking (call it by that name) keeps K of them; the CLS token, plus its position
        pos_embed[:, :1], goes first; then the blocks and the final norm. The masked patches
        never enter the blocks.
        """
        ### BEGIN SOLUTION
        # TODO(ssl.mae_encoder): embed + positions, random_masking, prepend CLS (+ its
        #   position), blocks, norm; return latent, mask, ids_restore.
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]                  # (B, N, D)
        tokens, mask, ids_restore = random_masking(tokens, mask_ratio)        # (B, K, D)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(x), -1, -1)  # (B, 1, D)
        h = torch.cat([cls, tokens], dim=1)                                   # (B, 1+K, D)
        for block in self.blocks:
            h = block(h)
        return self.norm(h), mask, ids_restore
        ### END SOLUTION


# ------------------------------------------------------------------------- ssl.mae_decoder

class MAEDecoder(nn.Module):
    """A light transformer that fills in the masked patches' pixels."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Linear(c.dim, c.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, c.num_patches + 1, c.decoder_dim) * 0.02)
        self.blocks = nn.ModuleList([Block(c.decoder_dim, c.decoder_heads, c.decoder_mlp_dim)
                                     for _ in range(c.decoder_depth)])
        self.norm = nn.LayerNorm(c.decoder_dim, eps=1e-6)
        self.pred = nn.Linear(c.decoder_dim, c.patch_dim)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + K, D) from the encoder, ids_restore (B, N) -> pixels (B, N, P*P*C).

        embed to the decoder's width; append N - K copies of mask_token after the K encoded
        patches; unshuffle those N tokens to image order with ids_restore; put the CLS token
        back first; add pos_embed; blocks, norm, pred; drop the CLS token's output.
        """
        ### BEGIN SOLUTION
        # TODO(ssl.mae_decoder): embed, mask tokens, unshuffle with ids_restore (gather),
        #   CLS first, + pos_embed, blocks, norm, pred, drop CLS.
        h = self.embed(latent)                                        # (B, 1+K, Dd)
        B, N = ids_restore.shape
        masks = self.mask_token.expand(B, N + 1 - h.shape[1], -1)      # (B, N-K, Dd)
        patches = torch.cat([h[:, 1:], masks], dim=1)                 # (B, N, Dd) shuffled
        index = ids_restore[..., None].expand(-1, -1, h.shape[-1])
        patches = torch.gather(patches, 1, index)                     # (B, N, Dd) image order
        h = torch.cat([h[:, :1], patches], dim=1) + self.pos_embed    # (B, 1+N, Dd)
        for block in self.blocks:
            h = block(h)
        return self.pred(self.norm(h))[:, 1:]                         # (B, N, P*P*C)
        ### END SOLUTION


# ---------------------------------------------------------------------------- ssl.mae_loss

def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, P*P*C): patches in row-major order (as PatchEmbed's tokens),
    each flattened as (row in patch, column in patch, channel), i.e. MAE's 'nchpwq->nhwpqc'."""
    ### BEGIN SOLUTION
    # TODO(ssl.mae_loss): reshape to (B, C, h, P, w, P), permute to (B, h, w, P, P, C),
    #   flatten to (B, h*w, P*P*C).
    B, C, H, W = images.shape
    P = patch_size
    x = images.reshape(B, C, H // P, P, W // P, P)
    x = x.permute(0, 2, 4, 3, 5, 1)                    # (B, h, w, P, P, C)
    return x.reshape(B, (H // P) * (W // P), P * P * C)
    ### END SOLUTION


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, height: int,
               width: int) -> torch.Tensor:
    """The inverse of patchify: (B, N, P*P*C) -> (B, C, H, W). Given."""
    B = patches.shape[0]
    P, h, w = patch_size, height // patch_size, width // patch_size
    x = patches.reshape(B, h, w, P, P, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, P, w, P)
    return x.reshape(B, channels, height, width)


def mae_loss(pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor,
             patch_size: int) -> torch.Tensor:
    """Mean squared error on the masked patches only.

    pred (B, N, P*P*C), images (B, C, H, W), mask (B, N) with 1 = masked. Each patch's loss is
    the mean over its P*P*C pixels of (pred - patchify(images))^2; the loss is the mean of
    those over the masked patches of the whole batch: sum(loss_n * mask_n) / sum(mask_n).
    """
    ### BEGIN SOLUTION
    # TODO(ssl.mae_loss): target = patchify(images, patch_size); per-patch mean squared
    #   error; average it over the masked patches (mask == 1) only.
    target = patchify(images, patch_size)              # (B, N, P*P*C)
    per_patch = ((pred - target) ** 2).mean(dim=-1)    # (B, N)
    return (per_patch * mask).sum() / mask.sum()
    ### END SOLUTION


class MAE(nn.Module):
    """Encoder + decoder. Given: forward returns (loss, pred, mask)."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = config
        self.encoder = MAEEncoder(config)
        self.decoder = MAEDecoder(config)

    def forward(self, images: torch.Tensor, mask_ratio: float | None = None):
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.encoder(images, ratio)   # (B, 1+K, D)
        pred = self.decoder(latent, ids_restore)                  # (B, N, P*P*C)
        return mae_loss(pred, images, mask, self.config.patch_size), pred, mask
