"""Probes for the diffusion lab's latent task (diffusion.latent): the student's latent_stats,
to_latent, from_latent and LatentDenoiser run with a stand-in autoencoder and weights the
grader sent; raw material only comes back (outputs, what the autoencoder saw, gradients,
trained weights). The checks are in autograder/diffusion_latent.py. Nothing here is secret.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.probing import ProbeFailed, gradients, load_weights, replaced, returned


def ref_embedding(t, dim, max_period=10000.0):
    half = dim // 2
    f = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    ang = t.float()[:, None] * f[None]
    return F.pad(torch.cat([ang.sin(), ang.cos()], -1), (0, dim % 2))


class StandInVAE(nn.Module):
    """encode(x) = flatten(x) W^T + b (B, D); decode(z) = (z V^T + c) as (B, *shape), logits.
    It records the batch sizes it encoded and whether it was in eval mode."""

    def __init__(self, W, b, V, c, shape):
        super().__init__()
        self.W, self.b, self.V, self.c, self.shape = W, b, V, c, tuple(shape)
        self.encoded, self.training_seen = [], []

    def encode(self, x):
        if type(x) is not torch.Tensor:
            raise ProbeFailed("vae.encode must get a tensor of images")
        self.encoded.append(len(x))
        self.training_seen.append(self.training)
        return x.flatten(1) @ self.W.T + self.b

    def decode(self, z):
        if type(z) is not torch.Tensor or z.ndim != 2:
            raise ProbeFailed("vae.decode must get codes of shape (B, D)")
        return (z @ self.V.T + self.c).view(len(z), *self.shape)

    def forward(self, x):
        raise ProbeFailed("use vae.encode (the posterior mean), not vae(x) (which samples)")


def codec(lab, W, b, V, c, shape, images, batch_size):
    vae = StandInVAE(W, b, V, c, shape).train()
    stats = lab.latent.latent_stats(vae, images, batch_size)
    if not isinstance(stats, (tuple, list)) or len(stats) != 2:
        raise ProbeFailed("latent_stats must return (mean, std)")
    mean, std = (returned(s, "latent_stats") for s in stats)
    batches, modes = list(vae.encoded), list(vae.training_seen)
    return {"mean": mean, "std": std, "batches": batches, "train_mode": modes}


def codec_maps(lab, W, b, V, c, shape, x, z, mean, std):
    vae = StandInVAE(W, b, V, c, shape).eval()
    with torch.no_grad():
        latent = returned(lab.latent.to_latent(vae, x, mean, std), "to_latent")
        pixels = returned(lab.latent.from_latent(vae, z, mean, std), "from_latent")
    return {"latent": latent, "pixels": pixels}


def denoiser(lab, dim, hidden, blocks, num_classes, state, z, t, y, t_other, y_other, grad_out):
    with replaced(lab.latent, timestep_embedding=ref_embedding):
        model = lab.latent.LatentDenoiser(dim, hidden, blocks, num_classes)
        load_weights(model, state, "LatentDenoiser")
        zz = z.clone().requires_grad_()
        out = returned(model(zz, t, y), "LatentDenoiser")
        result = {"out": out}
        if out.shape == grad_out.shape and out.requires_grad:
            (out * grad_out).sum().backward()
            result.update(grads=gradients(model), z_grad=zz.grad)
        with torch.no_grad():
            result["other_t"] = returned(model(z, t_other, y), "LatentDenoiser")
            result["other_y"] = returned(model(z, t, y_other), "LatentDenoiser")
    return result


def train_denoiser(lab, dim, hidden, blocks, num_classes, abar, z_train, y_train, seed, steps,
                   batch_size, lr, p_uncond):
    """Train the student's LatentDenoiser with the reference epsilon loss (and label dropout)
    and return its weights; the grader evaluates them on codes it keeps."""
    torch.manual_seed(seed)
    with replaced(lab.latent, timestep_embedding=ref_embedding):
        model = lab.latent.LatentDenoiser(dim, hidden, blocks, num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        T = len(abar)
        for _ in range(steps):
            idx = torch.randint(0, len(z_train), (batch_size,))
            z0, y = z_train[idx], y_train[idx]
            y = torch.where(torch.rand(batch_size) < p_uncond, torch.full_like(y, num_classes), y)
            t = torch.randint(0, T, (batch_size,))
            eps = torch.randn_like(z0)
            a = abar[t].float()[:, None]
            out = returned(model(a.sqrt() * z0 + (1 - a).sqrt() * eps, t, y), "LatentDenoiser")
            if out.shape != z0.shape:
                raise ProbeFailed(f"LatentDenoiser returned {tuple(out.shape)}, expected {tuple(z0.shape)}")
            loss = ((out - eps) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return dict(model.state_dict())
