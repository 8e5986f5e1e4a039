"""Latent diffusion (Rombach et al., 2022): DDPM on the codes of a pretrained autoencoder.

    x (B, 1, 28, 28) --vae.encode--> mu (B, D) --standardise--> z0 (B, D) ~ roughly N(0, 1) per dim
    DDPM on z0 (ddpm.py, unchanged: q_sample and p_sample work on any shape (B, ...))
    z0 sample --unstandardise--> vae.decode --> logits --sigmoid--> pixel probabilities

The autoencoder is the VAE lab's (given: vae_model.py), encode = the posterior mean. Its code
is a vector from a Linear layer: its D entries have no spatial neighbours, so a convolutional
UNet's locality prior would mean nothing on a reshape of it to (c, h, w). The denoiser here is
an MLP of residual blocks, each told the step t the way the UNet's ResBlocks are.

Standardising matters: DDPM's forward process ends at N(0, I), so the data should have about
unit scale per dimension (Stable Diffusion multiplies its latents by 0.18215 for this reason).

Parameter names of LatentDenoiser (the grader loads weights by them): time_mlp.0, time_mlp.2,
label_embed, proj_in, blocks.<i>.{norm, fc1, time, fc2}, norm_out, proj_out.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .unet import timestep_embedding


# ------------------------------------------------------------------------- diffusion.latent

@torch.no_grad()
def latent_stats(vae, images: torch.Tensor, batch_size: int = 500):
    """The per-dimension mean and standard deviation of the codes vae.encode(images), (D,)
    each: encode in batches of batch_size (in the VAE's eval mode), concatenate, then
    z.mean(0) and z.std(0) (torch's default, the unbiased estimate)."""
    ### BEGIN SOLUTION
    # TODO(diffusion.latent): vae.eval(); encode images[i:i + batch_size] for every batch,
    #   torch.cat the codes (N, D), return their mean and std over the N images.
    vae.eval()
    z = torch.cat([vae.encode(images[i:i + batch_size])
                   for i in range(0, len(images), batch_size)])       # (N, D)
    return z.mean(0), z.std(0)
    ### END SOLUTION


def to_latent(vae, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The standardised code of x: (vae.encode(x) - mean) / std, (B, D)."""
    ### BEGIN SOLUTION
    # TODO(diffusion.latent): encode (the posterior mean), subtract mean, divide by std.
    return (vae.encode(x) - mean) / std                               # (B, D)
    ### END SOLUTION


def from_latent(vae, z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Images from standardised codes: sigmoid(vae.decode(z * std + mean)), (B, C, H, W) pixel
    probabilities in [0, 1] (the VAE decodes to Bernoulli logits)."""
    ### BEGIN SOLUTION
    # TODO(diffusion.latent): undo the standardisation, decode, sigmoid.
    return torch.sigmoid(vae.decode(z * std + mean))                  # (B, C, H, W)
    ### END SOLUTION


class LatentBlock(nn.Module):
    """h + fc2(SiLU(fc1(norm(h)) + time(SiLU(temb)))): a ResBlock for vectors."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.time = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:  # (B, hidden) each
        ### BEGIN SOLUTION
        # TODO(diffusion.latent): the formula of the class docstring.
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.time(F.silu(temb))))
        ### END SOLUTION


class LatentDenoiser(nn.Module):
    """eps_hat = LatentDenoiser(z_t (B, D), t (B,), y (B,)):

        temb = time_mlp(timestep_embedding(t, hidden))          Linear, SiLU, Linear
        h = proj_in(z_t) + label_embed(y)                        label num_classes: the null label
        h = block(h, temb) for each of the blocks                LatentBlock
        eps_hat = proj_out(SiLU(norm_out(h)))                    (B, D)
    """

    def __init__(self, dim: int, hidden: int = 256, blocks: int = 3, num_classes: int = 10):
        super().__init__()
        self.num_classes, self.hidden = num_classes, hidden
        self.time_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_embed = nn.Embedding(num_classes + 1, hidden)
        self.proj_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(LatentBlock(hidden) for _ in range(blocks))
        self.norm_out = nn.LayerNorm(hidden)
        self.proj_out = nn.Linear(hidden, dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        # TODO(diffusion.latent): the four lines of the class docstring (call
        #   timestep_embedding: the grader replaces it).
        temb = self.time_mlp(timestep_embedding(t, self.hidden).to(z.dtype))   # (B, hidden)
        h = self.proj_in(z) + self.label_embed(y)                             # (B, hidden)
        for block in self.blocks:
            h = block(h, temb)
        return self.proj_out(F.silu(self.norm_out(h)))                         # (B, D)
        ### END SOLUTION
