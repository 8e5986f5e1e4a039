"""The scenes' autoencoder (given, nothing to write): a small KL-regularised convolutional
autoencoder with SPATIAL latents, the part-4 counterpart of Stable Diffusion's AutoencoderKL
(Rombach et al., 2022), for the slot-conditioned decoder to denoise latents, as LSD does.

    image (B, 3, H, W) in [0, 1] --encoder--> mean, logvar (B, c, H/f, W/f), f = 2^len(channels)
    encode(image) = mean (the posterior mean: deterministic, the same in train and eval mode)
    decode(z) = decoder(z) (B, 3, H, W), about [0, 1] (clamp to show; no sigmoid: on scenes that
                are 80% black background a sigmoid output saturates at 0 and stops learning)

Trained with  loss = sum of squared pixel errors of decode(mean + std * eps) + beta * KL(q || N(0, I))
(per image, averaged over the batch). A small beta keeps the latents' scale bounded without
blurring the reconstructions, as in Stable Diffusion (whose KL weight is 1e-6 of its loss).

DDPM's forward process ends at N(0, I), so the latents get ONE scale factor, 1 / their standard
deviation over the training scenes (latent_scale; Stable Diffusion's 0.18215 was found the same
way): the diffusion model works on z0 = scale * encode(image) and samples decode as
decode(z / scale).

Defaults: 16 x 16 scenes -> 4 x 8 x 8 latents (f = 2: one latent position per 2 x 2 block of a
16-px Tetrominoes scene); --full: 128 x 128 -> 4 x 16 x 16 (f = 8, as Stable Diffusion's VAE).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class SceneAEConfig:
    image_size: int = 16
    in_channels: int = 3
    hidden: int = 32                                    # width at full resolution
    channels: tuple[int, ...] = field(default=(64,))   # one stride-2 stage per entry
    latent_channels: int = 4
    beta: float = 1e-3                                  # weight of the KL term

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** len(self.channels)


class SceneAutoencoder(nn.Module):
    """Encoder: conv 3x3 to hidden, then per stage SiLU, conv 4x4 stride 2 (to the stage's
    width), SiLU, conv 3x3; a 1x1 conv to 2 c (mean, logvar). Decoder: the mirror, with nearest
    upsampling and a 3x3 conv per stage, then a 3x3 conv to the image's channels."""

    def __init__(self, config: SceneAEConfig):
        super().__init__()
        self.config = c = config
        if c.image_size % 2 ** len(c.channels):
            raise ValueError(f"image_size {c.image_size} is not divisible by 2^{len(c.channels)}")
        widths = [c.hidden, *c.channels]
        enc = [nn.Conv2d(c.in_channels, widths[0], 3, padding=1)]
        for a, b in zip(widths[:-1], widths[1:]):
            enc += [nn.SiLU(), nn.Conv2d(a, b, 4, stride=2, padding=1), nn.SiLU(),
                    nn.Conv2d(b, b, 3, padding=1)]
        enc += [nn.SiLU(), nn.Conv2d(widths[-1], 2 * c.latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv2d(c.latent_channels, widths[-1], 3, padding=1)]
        for a, b in zip(widths[::-1][:-1], widths[::-1][1:]):
            dec += [nn.SiLU(), nn.Conv2d(a, a, 3, padding=1), nn.SiLU(),
                    nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1)]
        dec += [nn.SiLU(), nn.Conv2d(widths[0], c.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def posterior(self, images: torch.Tensor):
        """images (B, 3, H, W) in [0, 1] -> mean, logvar (B, c, h, w) each."""
        mean, logvar = self.encoder(2 * images - 1).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mean (B, c, h, w)."""
        return self.posterior(images)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, c, h, w) -> images (B, 3, H, W), about [0, 1]."""
        return self.decoder(z)

    def loss(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The training loss (reparameterised sample of the posterior) and its two terms."""
        mean, logvar = self.posterior(images)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)       # (B, c, h, w)
        recon = ((self.decode(z) - images) ** 2).flatten(1).sum(1).mean()
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).flatten(1).sum(1).mean()
        return {"loss": recon + self.config.beta * kl, "recon": recon.detach(), "kl": kl.detach()}


@torch.no_grad()
def latent_scale(autoencoder: SceneAutoencoder, images: torch.Tensor, batch_size: int = 500) -> float:
    """One scale factor for every latent entry: 1 / the standard deviation of encode(images)."""
    autoencoder.eval()
    z = torch.cat([autoencoder.encode(images[i:i + batch_size])
                   for i in range(0, len(images), batch_size)])       # (N, c, h, w)
    return float(1 / z.float().std())
