# Given code, written by `vislab release` from solutions/vae/model.py (the vae lab's reference).
# Do not edit: it is regenerated from there.
"""A convolutional VAE and a conditional VAE, small enough to train on MNIST on a CPU.

    encoder: x (B, C, H, W) -> convs (stride 2) -> flatten -> Linear -> ReLU -> h (B, hidden)
             h -> fc_mu, fc_logvar -> mu, logvar (B, D)
    decoder: z (B, D) -> decoder_input -> decoder_fc (ReLU, Linear, ReLU) -> (B, c, s, s)
             -> decoder_conv (transposed convs, stride 2) -> logits or means (B, C, H, W)

The stable interface other labs use (the diffusion lab's latent diffusion):
    model.encode(x) -> z (B, D), the posterior mean;  model.decode(z) -> (B, C, H, W), logits
    (Bernoulli; torch.sigmoid gives pixel probabilities) or means (Gaussian).
The latent is a vector (B, D); a convolutional consumer reshapes it, z.view(B, c, h, w) with
c*h*w = D (e.g. D = 64 as (4, 4, 4)), and reshapes back before decode.

Parameter names are fixed (the grader loads weights by name): encoder.{0,2,...} (convs),
encoder.<n>.{weight,bias} (the Linear after Flatten), fc_mu, fc_logvar, decoder_input,
decoder_fc.1, decoder_conv.{0,2,...}; the conditional VAE adds label_enc and label_dec.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .losses import reparameterize

CONDITIONS = ("multiply", "concat")


@dataclass
class VAEConfig:
    image_size: int = 28
    in_channels: int = 1
    channels: tuple[int, ...] = field(default=(32, 64))  # conv widths; each halves H and W
    hidden: int = 256                                    # width of h
    latent_dim: int = 16                                 # D
    likelihood: str = "bernoulli"                        # or "gaussian" (decoder gives means)
    sigma: float = 0.1                                   # the Gaussian likelihood's std

    @property
    def feature_size(self) -> int:
        """s: the side of the last conv's feature map."""
        return self.image_size // 2 ** len(self.channels)


def conv_encoder(c: VAEConfig) -> nn.Sequential:
    if c.image_size % 2 ** len(c.channels):
        raise ValueError(f"image_size {c.image_size} must be divisible by 2^{len(c.channels)} "
                         f"(one halving per entry of channels)")
    layers, width = [], c.in_channels
    for out in c.channels:
        layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
        width = out
    s = c.feature_size
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * s * s, c.hidden), nn.ReLU())


def conv_decoder(c: VAEConfig) -> nn.Sequential:
    layers, widths = [], list(c.channels[::-1]) + [c.in_channels]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)  # no sigmoid: the output is logits (or means)


class VAE(nn.Module):
    """q(z|x) = N(mu, exp(logvar)), p(z) = N(0, I), p(x|z) with logits (or means) decode(z)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = c = config
        s = c.feature_size
        self.encoder = conv_encoder(c)
        self.fc_mu = nn.Linear(c.hidden, c.latent_dim)
        self.fc_logvar = nn.Linear(c.hidden, c.latent_dim)
        self.decoder_input = nn.Linear(c.latent_dim, c.hidden)
        self.decoder_fc = nn.Sequential(nn.ReLU(), nn.Linear(c.hidden, c.channels[-1] * s * s),
                                        nn.ReLU())
        self.decoder_conv = conv_decoder(c)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, C, H, W)
        """mu and logvar of q(z|x), each (B, D)."""
        h = self.encoder(x)                    # (B, hidden)
        return self.fc_mu(h), self.fc_logvar(h)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        """The posterior mean mu (B, D): deterministic, the code of x (no sampling here)."""
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:  # z: (B, D)
        """Logits (Bernoulli) or means (Gaussian) of p(x|z), (B, C, H, W); no sigmoid."""
        s = self.config.feature_size
        h = self.decoder_fc(self.decoder_input(z))              # (B, c*s*s)
        return self.decoder_conv(h.view(len(z), -1, s, s))      # (B, C, H, W)

    def forward(self, x: torch.Tensor):  # x: (B, C, H, W)
        """(decoded, mu, logvar): decoded = decode(z) for z = reparameterize(mu, logvar)."""
        mu, logvar = self.posterior(x)          # (B, D) each
        z = reparameterize(mu, logvar)          # (B, D)
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, device=None) -> torch.Tensor:
        """n images' logits (or means) decoded from z ~ N(0, I)."""
        return self.decode(torch.randn(n, self.config.latent_dim, device=device))


class ConditionalVAE(VAE):
    """q(z|x, y) and p(x|z, y): the label y enters both the encoder and the decoder.

    condition "multiply" (the course's variant), embeddings of width hidden:
        h = encoder(x) * label_enc(y)               -> fc_mu, fc_logvar
        g = decoder_input(z) * label_dec(y)         -> decoder_fc, decoder_conv
    condition "concat" (the textbook variant), embeddings of width embed_dim = E:
        h = cat([encoder(x), label_enc(y)], -1)     -> fc_mu, fc_logvar take hidden + E
        g = decoder_input(cat([z, label_dec(y)], -1))   (decoder_input takes D + E)
    in that order: the features first, the embedding second.
    """

    def __init__(self, config: VAEConfig, num_classes: int = 10, condition: str = "multiply",
                 embed_dim: int = 16):
        if condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        super().__init__(config)
        c = config
        self.condition, self.num_classes = condition, num_classes
        width = c.hidden if condition == "multiply" else embed_dim
        self.label_enc = nn.Embedding(num_classes, width)
        self.label_dec = nn.Embedding(num_classes, width)
        if condition == "concat":
            self.fc_mu = nn.Linear(c.hidden + embed_dim, c.latent_dim)
            self.fc_logvar = nn.Linear(c.hidden + embed_dim, c.latent_dim)
            self.decoder_input = nn.Linear(c.latent_dim + embed_dim, c.hidden)

    def posterior(self, x: torch.Tensor, y: torch.Tensor):  # x: (B, C, H, W), y: (B,)
        """mu and logvar of q(z|x, y), each (B, D)."""
        h, e = self.encoder(x), self.label_enc(y)                          # (B, hidden), (B, E)
        h = h * e if self.condition == "multiply" else torch.cat([h, e], dim=-1)
        return self.fc_mu(h), self.fc_logvar(h)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The posterior mean (B, D)."""
        return self.posterior(x, y)[0]

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # z: (B, D), y: (B,)
        """Logits (or means) of p(x|z, y), (B, C, H, W)."""
        e = self.label_dec(y)                                              # (B, E)
        if self.condition == "multiply":
            g = self.decoder_input(z) * e                                  # (B, hidden)
        else:
            g = self.decoder_input(torch.cat([z, e], dim=-1))              # (B, hidden)
        s = self.config.feature_size
        return self.decoder_conv(self.decoder_fc(g).view(len(z), -1, s, s))  # (B, C, H, W)

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        """(decoded, mu, logvar) as VAE.forward, with the label in both halves."""
        mu, logvar = self.posterior(x, y)
        return self.decode(reparameterize(mu, logvar), y), mu, logvar

    @torch.no_grad()
    def sample(self, y: torch.Tensor) -> torch.Tensor:
        """One image's logits (or means) per label in y, from z ~ N(0, I)."""
        return self.decode(torch.randn(len(y), self.config.latent_dim, device=y.device), y)


def decode_with_each_label(model: ConditionalVAE, x: torch.Tensor, y: torch.Tensor,
                           num_classes: int) -> torch.Tensor:
    """The wrong-label grid: each image encoded with its own label y (its posterior mean),
    then that one z decoded with every label 0..num_classes-1.
    x: (B, C, H, W), y: (B,); returns (B, num_classes, C, H, W), row b, column k = decode(z_b, k).
    """
    B = len(x)
    z = model.encode(x, y)                                       # (B, D)
    zs = z.repeat_interleave(num_classes, dim=0)                 # (B*K, D)
    labels = torch.arange(num_classes, device=x.device).repeat(B)  # (B*K,)
    out = model.decode(zs, labels)                               # (B*K, C, H, W)
    return out.view(B, num_classes, *out.shape[1:])
