"""Probes for the diffusion lab's slot decoder task (diffusion.slot_decoder): the student's
slot_diffusion_loss with a stand-in slot model, a stand-in autoencoder and a recording
reference diffusion_loss; a short training run of a tiny slot model with the student's loss
(the trained state_dict comes back); slot_masks on the grader's attention. Raw material only
comes back; the checks are in autograder/diffusion_slots.py. Nothing here is secret.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.probing import ProbeFailed, replaced, returned


class StandInSlots(nn.Module):
    """encode(images) = slots (B, K, D) = a linear map of the images' pixels (parameter A),
    attention uniform; unet(x, t, cond) = a * x + the mean of cond per image."""

    def __init__(self, A, K, D):
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.K, self.D = K, D
        self.unet = StandInUNet()

    def encode(self, images):
        if type(images) is not torch.Tensor:
            raise ProbeFailed("model.encode must get the images tensor")
        slots = (images.flatten(1) @ self.A).view(len(images), self.K, self.D)
        N = images.shape[-2] * images.shape[-1]
        return slots, torch.full((len(images), self.K, N), 1.0 / self.K)


class StandInUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, t, cond=None):
        extra = 0 if cond is None else cond.flatten(1).mean(1).view(-1, *([1] * (x.ndim - 1)))
        return self.a * x + extra


class StandInAutoencoder(nn.Module):
    """encode(images) = a linear map of the pixels (parameter E) viewed as latents (B, c, h, w);
    a parameter, so that a gradient flowing into the autoencoder shows."""

    def __init__(self, E, latent_shape):
        super().__init__()
        self.E = nn.Parameter(E.clone())
        self.latent_shape = tuple(latent_shape)

    def encode(self, images):
        if type(images) is not torch.Tensor:
            raise ProbeFailed("autoencoder.encode must get the images tensor")
        return (images.flatten(1) @ self.E).view(len(images), *self.latent_shape)

    def decode(self, z):
        raise ProbeFailed("slot_diffusion_loss must not decode: the loss is on the latents")


def loss(lab, A, K, D, E, latent_shape, scale, images, t, noise):
    model = StandInSlots(A, K, D)
    autoencoder = StandInAutoencoder(E, latent_shape)
    seen = []

    def recording_loss(unet, schedule, x0, cond=None):
        seen.append({"is_unet": unet is model.unet, "x0": x0.detach().clone(),
                     "cond": None if cond is None else cond.detach().clone()})
        eps = noise if x0.shape == noise.shape else torch.randn_like(x0)   # (the check fails on x0)
        abar = schedule["alphas_cumprod"].to(x0.dtype)[t[:len(x0)]].view(-1, *([1] * (x0.ndim - 1)))
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        return ((unet(x_t, t, cond) - eps) ** 2).mean()

    from_grader = {"alphas_cumprod": torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000,
                                                                     dtype=torch.float64), 0)}
    with replaced(lab.slot_decoder, diffusion_loss=recording_loss):
        value = returned(lab.slot_decoder.slot_diffusion_loss(model, from_grader, images.clone(),
                                                              autoencoder, float(scale)),
                         "slot_diffusion_loss")
    out = {"loss": value.detach(), "calls": [{"x0": s["x0"], "cond": s["cond"],
                                             "model": "unet" if s["is_unet"] else "other"}
                                            for s in seen]}
    if value.requires_grad and value.numel() == 1:
        value.backward()
        out["A_grad"] = model.A.grad
        out["a_grad"] = model.unet.a.grad
        out["E_grad"] = autoencoder.E.grad
    return out


# ------------------------------------------------------------------ the training run

def time_features(t, dim):
    """The tiny denoiser's own sinusoidal features of t (not the student's embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class TinyDenoiser(nn.Module):
    """eps_hat = out(SiLU(hidden(SiLU(inp(z_t) + cond(slots).mean over slots + time(f(t))))))."""

    def __init__(self, latent_dim, slot_dim, width, time_dim):
        super().__init__()
        self.time_dim = time_dim
        self.inp = nn.Linear(latent_dim, width)
        self.cond = nn.Linear(slot_dim, width)
        self.time = nn.Linear(time_dim, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, latent_dim)

    def forward(self, x, t, cond=None):
        if cond is None:
            raise ProbeFailed("the UNet got no condition: pass the slots to diffusion_loss")
        if x[0].numel() != self.inp.in_features:
            raise ProbeFailed(f"the UNet got x_t of shape {tuple(x.shape)}: it denoises the "
                              f"autoencoder's latents, not pixels")
        h = self.inp(x.flatten(1)) + self.cond(cond).mean(1) + self.time(time_features(t, self.time_dim))
        h = self.hidden(F.silu(h))
        return self.out(F.silu(h)).view_as(x)


class TinySlotModel(nn.Module):
    """encode(images) = slots (B, K, D) = encoder(pixels) viewed as K slots, attention uniform;
    unet = TinyDenoiser. Parameter names: encoder.{weight, bias}, unet.{inp, cond, time,
    hidden, out}.{weight, bias}."""

    def __init__(self, pixels, K, D, latent_dim, width, time_dim):
        super().__init__()
        self.K, self.D = K, D
        self.encoder = nn.Linear(pixels, K * D)
        self.unet = TinyDenoiser(latent_dim, D, width, time_dim)

    def encode(self, images):
        if type(images) is not torch.Tensor:
            raise ProbeFailed("model.encode must get the images tensor")
        slots = self.encoder(images.flatten(1)).view(len(images), self.K, self.D)
        return slots, torch.full((len(images), self.K, images.shape[-2] * images.shape[-1]), 1.0 / self.K)


def reference_diffusion_loss(unet, schedule, x0, cond=None):
    """DDPM's simple loss (the reference put in for the student's diffusion_loss)."""
    abar = schedule["alphas_cumprod"].to(x0.dtype)
    t = torch.randint(0, len(abar), (len(x0),))
    noise = torch.randn_like(x0)
    a = abar[t].view(-1, *([1] * (x0.ndim - 1)))
    return ((unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, cond) - noise) ** 2).mean()


def train(lab, state, sizes, E, latent_shape, scale, images, steps, batch_size, lr, seed):
    """`steps` Adam steps of the tiny slot model on the grader's scenes with the student's
    slot_diffusion_loss; returns the trained state_dict."""
    torch.manual_seed(seed)
    model = TinySlotModel(**sizes)
    model.load_state_dict(state)
    autoencoder = StandInAutoencoder(E, latent_shape)
    autoencoder.requires_grad_(False)
    schedule = {"alphas_cumprod": torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)}
    optimizer = torch.optim.Adam(model.parameters(), lr)
    with replaced(lab.slot_decoder, diffusion_loss=reference_diffusion_loss):
        for _ in range(steps):
            batch = images[torch.randint(0, len(images), (batch_size,))]
            value = returned(lab.slot_decoder.slot_diffusion_loss(model, schedule, batch, autoencoder,
                                                                  float(scale)), "slot_diffusion_loss")
            if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.requires_grad):
                raise ProbeFailed("slot_diffusion_loss must return a scalar loss in the graph")
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def masks(lab, attention, height, width, size):
    return returned(lab.slot_decoder.slot_masks(attention.clone(), height, width, tuple(size)),
                    "slot_masks")
