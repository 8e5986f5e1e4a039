"""Contrastive learning with the CLS token: two views, InfoNCE / NT-Xent (Oord et al., 2018;
Chen et al., 2020), and MAE + InfoNCE on one encoder."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mae import mae_loss


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear on the CLS embedding (SimCLR's head). Given. Names fc1, fc2."""

    def __init__(self, dim: int, hidden_dim: int = 128, out_dim: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D)
        return self.fc2(F.gelu(self.fc1(x)))            # (B, out_dim)


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random view of each image (B, C, H, W), drawn per image: rotation up to 15 degrees,
    scale 0.8-1.1, shift up to 10% of the size, then a random erasing of one 8x8 square. Given."""
    B, C, H, W = images.shape
    kw = dict(generator=generator, device=images.device)
    angle = (torch.rand(B, **kw) * 2 - 1) * math.radians(15)
    scale = 0.8 + 0.3 * torch.rand(B, **kw)
    shift = (torch.rand(B, 2, **kw) * 2 - 1) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)        # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    background = images.amin(dim=(1, 2, 3), keepdim=True)                   # (B, 1, 1, 1)
    out = F.grid_sample(images - background, grid, align_corners=False) + background
    rows = torch.randint(0, H - 7, (B,), **kw)
    cols = torch.randint(0, W - 7, (B,), **kw)
    r = torch.arange(H, device=images.device)[None, :, None]
    c = torch.arange(W, device=images.device)[None, None, :]
    erase = ((r >= rows[:, None, None]) & (r < rows[:, None, None] + 8)
             & (c >= cols[:, None, None]) & (c < cols[:, None, None] + 8))  # (B, H, W)
    return torch.where(erase[:, None], background, out)


# ------------------------------------------------------------------------------ ssl.infonce

def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent (SimCLR's InfoNCE) of two views' embeddings z1, z2: (B, E); row i of z1 and row i
    of z2 are two views of image i.

    With the 2B embeddings u = normalise([z1; z2]) (unit length) and s_ij = u_i . u_j / tau,
    anchor i's positive p(i) is its other view (i + B, or i - B) and
        loss_i = -log( exp(s_i,p(i)) / sum_{k != i} exp(s_ik) )
    The denominator runs over all 2B - 1 others: the positive and 2B - 2 negatives, never i
    itself (mask the diagonal). Both directions count: the loss is the mean of loss_i over all
    2B anchors (the views of z1 as anchors, and those of z2).
    """
    # TODO(ssl.infonce): normalise, the (2B, 2B) similarity matrix / tau, mask its diagonal
    #   (-inf), cross-entropy of each row against its positive's index.
    raise NotImplementedError("TODO(ssl.infonce): normalise, the (2B, 2B) similarity matrix / tau, mask its diagonal (-inf), cross-entropy of each row against its positive's index.")


# ----------------------------------------------------------------------------- ssl.combined

def combined_loss(encoder: nn.Module, decoder: nn.Module, head: nn.Module,
                  view1: torch.Tensor, view2: torch.Tensor, mask_ratio: float = 0.5,
                  weight: float = 0.2, temperature: float = 0.1) -> dict:
    """MAE and InfoNCE on one encoder: (1 - weight) * MAE + weight * InfoNCE.

    Each view (B, C, H, W) is encoded once, masked: latent_v, mask_v, ids_v = encoder(view_v,
    mask_ratio) (view1 first, then view2). MAE = the mean of the two views' mae_loss of
    decoder(latent_v, ids_v) against view_v itself. InfoNCE = info_nce(head(cls_1),
    head(cls_2), temperature) on the CLS outputs latent_v[:, 0]; the patch size is
    encoder.config.patch_size. Returns {"loss", "mae", "nce"}.
    """
    # TODO(ssl.combined): encode both views (masked), decode, mae_loss per view, InfoNCE on
    #   the projected CLS tokens, then the weighted sum.
    raise NotImplementedError('TODO(ssl.combined): encode both views (masked), decode, mae_loss per view, InfoNCE on the projected CLS tokens, then the weighted sum.')
