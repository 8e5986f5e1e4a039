# Given code, written by `vislab release` from solutions/vae/losses.py (the vae lab's reference).
# Do not edit: it is regenerated from there.
"""The VAE's objective: the reparameterisation trick, the KL to N(0, I), the ELBO, bits per
dimension, and the beta-VAE objective with optional capacity annealing.

Notation: B batch, D latent size, P = C*H*W pixels per image. The encoder gives q(z|x) =
N(mu, diag(exp(logvar))) with mu and logvar of shape (B, D); the prior is p(z) = N(0, I).

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)

The first term is summed over the P pixels, the KL over the D latents, and the ELBO of a batch
is the mean over its B images (the per-image ELBO, in nats).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LIKELIHOODS = ("bernoulli", "gaussian")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """A sample z ~ N(mu, exp(logvar)) that gradients can flow through:

        z = mu + sigma * eps,   sigma = exp(logvar / 2),   eps ~ N(0, I)

    eps is fresh standard normal noise, one number per element of mu (per image and latent),
    drawn anew on every call. dz/dmu = 1 and dz/dlogvar = eps * sigma / 2.
    mu, logvar: (B, D); returns z: (B, D).
    """
    std = torch.exp(0.5 * logvar)   # (B, D)
    eps = torch.randn_like(std)     # (B, D), fresh every call
    return mu + std * eps           # (B, D)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) for every latent, in closed form:

        KL = 1/2 (mu^2 + exp(logvar) - 1 - logvar)     (>= 0, and 0 only at mu = 0, logvar = 0)

    mu, logvar: (B, D); returns (B, D), one KL per image and latent (not summed: the ELBO sums
    over latents, and the KL per latent shows which latents the model uses).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)  # (B, D)


def log_likelihood(x: torch.Tensor, decoded: torch.Tensor, likelihood: str = "bernoulli",
                   sigma: float = 1.0) -> torch.Tensor:
    """log p(x|z) of each image, summed over its pixels: (B,).

    bernoulli: `decoded` are logits l (the decoder applies no sigmoid); for x in [0, 1]
        log p(x|z) = sum_pixels x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))
                   = -sum_pixels BCE_with_logits(l, x)
    gaussian: `decoded` are the means m, with a fixed standard deviation sigma:
        log p(x|z) = sum_pixels -(x - m)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2
    x, decoded: (B, C, H, W).
    """
    if likelihood == "bernoulli":
        per_pixel = -F.binary_cross_entropy_with_logits(decoded, x, reduction="none")
    elif likelihood == "gaussian":
        per_pixel = (-0.5 * ((x - decoded) / sigma) ** 2 - math.log(sigma)
                     - 0.5 * math.log(2 * math.pi))
    else:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    return per_pixel.flatten(1).sum(dim=1)  # (B,)


def elbo(x: torch.Tensor, decoded: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
         likelihood: str = "bernoulli", sigma: float = 1.0) -> torch.Tensor:
    """The ELBO of a batch, a scalar in nats per image:

        mean over images of [ log p(x|z) (summed over pixels) - KL (summed over latents) ]

    with `decoded` the decoder's output for a sample z ~ q(z|x). Train by minimising -elbo.
    Use log_likelihood and kl_to_standard_normal.
    """
    rec = log_likelihood(x, decoded, likelihood, sigma)   # (B,)
    kl = kl_to_standard_normal(mu, logvar).sum(dim=1)      # (B,)
    return (rec - kl).mean()


def bits_per_dim(elbo_nats: torch.Tensor | float, num_dims: int,
                 bin_width: float = 1.0) -> torch.Tensor:
    """The negative ELBO per image (nats) as bits per dimension:

        bpd = (-elbo / num_dims - log(bin_width)) / log(2)

    num_dims = C*H*W. bin_width is 1 for a probability mass (Bernoulli on binary pixels); for a
    density on 8-bit images scaled to [0, 1] it is 1/256 (a density p(x) over a bin of width
    1/256 gives it a probability of about p(x)/256, so -log2 of it is 8 bits more per pixel).
    """
    elbo_nats = torch.as_tensor(elbo_nats, dtype=torch.float64)
    return (-elbo_nats / num_dims - math.log(bin_width)) / math.log(2)


def beta_vae_loss(rec_ll: torch.Tensor, kl: torch.Tensor, beta: float = 1.0,
                  capacity: float | None = None) -> torch.Tensor:
    """The beta-VAE loss to minimise, a scalar (Higgins et al., 2017; Burgess et al., 2018):

        capacity None:  mean_b[-rec_ll]  +  beta * mean_b[sum_d kl]
        capacity C:     mean_b[-rec_ll]  +  beta * | mean_b[sum_d kl] - C |

    rec_ll: (B,) log p(x|z) per image (from log_likelihood); kl: (B, D) per image and latent
    (from kl_to_standard_normal). beta weighs the KL only, never the reconstruction. With a
    capacity C (nats) the batch's mean KL is pulled towards C instead of towards 0; |.| is
    taken of the batch mean. beta = 1, capacity None gives -elbo.
    """
    rec = -rec_ll.mean()
    kl = kl.sum(dim=1).mean()
    if capacity is None:
        return rec + beta * kl
    return rec + beta * (kl - capacity).abs()


def capacity_at(step: int, total_steps: int, c_max: float) -> float:
    """Burgess et al.'s capacity schedule: C grows linearly from 0 at step 0 to c_max at
    `total_steps`, and stays at c_max after it."""
    return c_max * min(1.0, step / total_steps)
