# Given code, written by `vislab release` from solutions/slots/model.py (the slots lab's reference).
# Do not edit: it is regenerated from there.
"""Slot Attention (Locatello et al., 2020): an autoencoder whose bottleneck is a set of K slots.

    image --CNN--> feature map --+ position embedding--> N inputs --slot attention--> K slots
    K slots --spatial broadcast decoder--> K (RGB, alpha) --softmax over slots--> masks, image

Parameter names are fixed (the grader loads its weights by them):
  encoder.{convs.<i>, pos.proj, norm, mlp.0, mlp.2}
  slot_attention.{slots_mu, slots_log_sigma, norm_inputs, norm_slots, norm_mlp, to_q, to_k, to_v,
                  gru, mlp.0, mlp.2}
  decoder.{pos.proj, convs.<i>}

The interface later labs rely on (the diffusion lab conditions on these slots):
  model.encode(image (B, C, H, W)) -> slots (B, K, D), attention (B, K, N)
      attention[b, k, n] = share of input n (a pixel of the feature map, row-major) that slot k
      took in the last iteration; it sums to 1 over k.
  model.decode(slots (B, K, D)) -> image (B, C, H, W), masks (B, K, 1, H, W), rgb (B, K, C, H, W)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class SlotConfig:
    image_size: int = 32       # H = W of the images
    in_channels: int = 3
    hidden: int = 32           # channels of the encoder's and decoder's convolutions
    encoder_layers: int = 4    # 5x5 convolutions of the encoder (stride 1)
    slot_dim: int = 32         # D, the width of the inputs and of every slot
    num_slots: int = 4         # K
    iters: int = 3             # T, attention iterations
    mlp_dim: int = 64          # hidden width of the slot MLP
    decoder_resolution: int = 8  # side of the grid each slot is broadcast onto
    eps: float = 1e-8          # added to the attention before renormalising over the inputs

    @property
    def upsamples(self) -> int:
        """Stride-2 transposed convolutions from decoder_resolution up to image_size."""
        n, size = 0, self.decoder_resolution
        while size < self.image_size:
            size, n = size * 2, n + 1
        if size != self.image_size:
            raise ValueError(f"image_size {self.image_size} is not decoder_resolution "
                             f"{self.decoder_resolution} times a power of 2")
        return n


# ---------------------------------------------------------------------- slots.position_embed

def build_grid(height: int, width: int) -> torch.Tensor:
    """The position grid, (H, W, 4): at row i, column j the four channels are

        [x, y, 1 - x, 1 - y]   with x = j / (W - 1) (left 0 to right 1),
                                    y = i / (H - 1) (top 0 to bottom 1).

    (torch.linspace(0, 1, n) gives the n values of one axis.) H and W are at least 2.
    """
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width),
                          indexing="ij")                      # each (H, W)
    return torch.stack([x, y, 1 - x, 1 - y], dim=-1)          # (H, W, 4)


class SoftPositionEmbed(nn.Module):
    """The paper's soft position embedding: x + proj(grid), proj a Linear(4, D) of the grid.

    Works on channels-last feature maps of any size: x is (B, H, W, D), the grid (H, W, 4) is
    built for the input's own H and W, projected to (H, W, D) and added at every position.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, D)
        """Return x + proj(build_grid(H, W)), (B, H, W, D)."""
        grid = build_grid(x.shape[1], x.shape[2]).to(x)  # (H, W, 4)
        return x + self.proj(grid)                       # (B, H, W, D)


class Encoder(nn.Module):
    """CNN (5x5 convolutions + ReLU, stride 1) -> position embedding -> flatten the H x W map to
    N = H * W inputs (row-major) -> LayerNorm -> MLP. Returns the inputs of slot attention."""

    def __init__(self, in_channels: int, hidden: int, layers: int, dim: int):
        super().__init__()
        convs = []
        for i in range(layers):
            convs += [nn.Conv2d(in_channels if i == 0 else hidden, hidden, 5, padding=2), nn.ReLU()]
        self.convs = nn.Sequential(*convs)
        self.pos = SoftPositionEmbed(hidden)
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # image: (B, C, H, W)
        x = self.convs(image).permute(0, 2, 3, 1)  # (B, H, W, hidden)
        x = self.pos(x).flatten(1, 2)              # (B, N, hidden)
        return self.mlp(self.norm(x))              # (B, N, D)


# ------------------------------------------------------------------ slots.init, slots.attention

class SlotAttention(nn.Module):
    """K slots compete for N inputs over T iterations.

    Initialisation: slots = mu + exp(log_sigma) * noise, noise ~ N(0, I), one draw per slot and
    per batch item (the reparameterisation: mu and log_sigma receive gradients).

    One iteration, with D the slot width:
        q = to_q(norm_slots(slots))                      (B, K, D)
        logits = q k^T / sqrt(D)                          (B, K, N)
        attn = softmax over the K slots                   (each input is shared out among slots)
        w = (attn + eps) / sum over the N inputs          (a weighted mean per slot)
        updates = w v                                     (B, K, D)
        slots = gru(updates, slots)                       (torch's GRUCell on B*K rows)
        slots = slots + mlp(norm_mlp(slots))              (a residual MLP)
    with k = to_k(x), v = to_v(x), x = norm_inputs(inputs), computed once before the loop.
    """

    def __init__(self, num_slots: int, dim: int, iters: int = 3, mlp_dim: int = 128,
                 eps: float = 1e-8):
        super().__init__()
        self.num_slots, self.dim, self.iters, self.eps = num_slots, dim, iters, eps
        self.slots_mu = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.slots_log_sigma = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.xavier_uniform_(self.slots_log_sigma)
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))

    def init_slots(self, batch_size: int) -> torch.Tensor:
        """Sample the initial slots, (batch_size, K, D), from N(mu, diag(exp(log_sigma))^2)."""
        noise = torch.randn(batch_size, self.num_slots, self.dim,
                            device=self.slots_mu.device, dtype=self.slots_mu.dtype)  # (B, K, D)
        return self.slots_mu + self.slots_log_sigma.exp() * noise                   # (B, K, D)

    def step(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """One iteration. slots (B, K, D), k and v (B, N, D) -> new slots (B, K, D) and the
        attention softmaxed over the slots, (B, K, N), before eps and renormalisation."""
        B, K, D = slots.shape
        q = self.to_q(self.norm_slots(slots))                   # (B, K, D)
        logits = q @ k.transpose(1, 2) / D**0.5                 # (B, K, N)
        attn = logits.softmax(dim=1)                            # (B, K, N), sums to 1 over K
        weights = attn + self.eps
        weights = weights / weights.sum(dim=-1, keepdim=True)   # (B, K, N), sums to 1 over N
        updates = weights @ v                                   # (B, K, D)
        slots = self.gru(updates.reshape(B * K, D), slots.reshape(B * K, D)).reshape(B, K, D)
        slots = slots + self.mlp(self.norm_mlp(slots))          # (B, K, D)
        return slots, attn

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor | None = None):
        """inputs (B, N, D); initial slots (B, K, D), sampled with init_slots when None.
        Returns the slots after T iterations, (B, K, D), and the last iteration's attention
        (B, K, N)."""
        if slots is None:
            slots = self.init_slots(inputs.shape[0])           # (B, K, D)
        x = self.norm_inputs(inputs)                           # (B, N, D)
        k, v = self.to_k(x), self.to_v(x)                      # (B, N, D) each
        attn = None
        for _ in range(self.iters):
            slots, attn = self.step(slots, k, v)
        return slots, attn


# -------------------------------------------------------------------------------- slots.decoder

class SpatialBroadcastDecoder(nn.Module):
    """Each slot is decoded on its own (Watters et al., 2019): broadcast onto an h x w grid,
    position embedding added, 5x5 transposed convolutions (stride 2) up to the image size, then
    two 3x3 convolutions, giving C colour channels and one alpha channel per slot. Then

        masks = softmax over the K slots of alpha      (at every pixel they sum to 1)
        image = sum over slots of masks * rgb
    """

    def __init__(self, dim: int, hidden: int, resolution: tuple[int, int], upsamples: int,
                 out_channels: int = 3):
        super().__init__()
        self.resolution, self.out_channels = tuple(resolution), out_channels
        self.pos = SoftPositionEmbed(dim)
        layers, channels = [], dim
        for _ in range(upsamples):
            layers += [nn.ConvTranspose2d(channels, hidden, 5, stride=2, padding=2,
                                          output_padding=1), nn.ReLU()]
            channels = hidden
        layers += [nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(hidden, out_channels + 1, 3, padding=1)]
        self.convs = nn.Sequential(*layers)

    def forward(self, slots: torch.Tensor):  # slots: (B, K, D)
        """Return image (B, C, H, W), masks (B, K, 1, H, W) and rgb (B, K, C, H, W)."""
        B, K, D = slots.shape
        h, w = self.resolution
        x = slots.reshape(B * K, 1, 1, D).expand(-1, h, w, -1)     # (B*K, h, w, D)
        x = self.pos(x).permute(0, 3, 1, 2)                         # (B*K, D, h, w)
        x = self.convs(x)                                           # (B*K, C+1, H, W)
        x = x.reshape(B, K, *x.shape[1:])                           # (B, K, C+1, H, W)
        rgb, alpha = x.split([self.out_channels, 1], dim=2)         # (B, K, C | 1, H, W)
        masks = alpha.softmax(dim=1)                                # (B, K, 1, H, W)
        return (masks * rgb).sum(dim=1), masks, rgb


# --------------------------------------------------------------------------------- the model

class SlotAutoencoder(nn.Module):
    """Encoder -> SlotAttention -> SpatialBroadcastDecoder, trained with the MSE of the image."""

    def __init__(self, config: SlotConfig):
        super().__init__()
        self.config = c = config
        self.encoder = Encoder(c.in_channels, c.hidden, c.encoder_layers, c.slot_dim)
        self.slot_attention = SlotAttention(c.num_slots, c.slot_dim, c.iters, c.mlp_dim, c.eps)
        self.decoder = SpatialBroadcastDecoder(c.slot_dim, c.hidden, (c.decoder_resolution,) * 2,
                                               c.upsamples, c.in_channels)

    def encode(self, image: torch.Tensor, slots: torch.Tensor | None = None):
        """image (B, C, H, W) -> slots (B, K, D), attention (B, K, N) with N = H * W."""
        return self.slot_attention(self.encoder(image), slots)

    def decode(self, slots: torch.Tensor):
        """slots (B, K, D) -> image (B, C, H, W), masks (B, K, 1, H, W), rgb (B, K, C, H, W)."""
        return self.decoder(slots)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        slots, attn = self.encode(image)
        recon, masks, rgb = self.decode(slots)
        return {"recon": recon, "masks": masks, "rgb": rgb, "slots": slots, "attn": attn}


def reconstruction_loss(recon: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The training loss: mean squared error over every pixel, channel and image of the batch."""
    return F.mse_loss(recon, image)
