"""DDPM (Ho et al., 2020): the variance schedule, the forward process, the loss, and ancestral
sampling, with classifier-free guidance (Ho & Salimans, 2021) for conditional models.

Notation: T steps, t in 0..T-1 (step t of the code is step t+1 of the paper), x0 an image in
[-1, 1], eps ~ N(0, I).

    beta_t                      the variance schedule, (T,)
    alpha_t = 1 - beta_t,       abar_t = prod_{s <= t} alpha_s,    abar_{-1} = 1
    q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)
    q(x_{t-1} | x_t, x0) = N(coef1_t x0 + coef2_t x_t, var_t I) with
        coef1_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t)
        coef2_t = (1 - abar_{t-1}) sqrt(alpha_t) / (1 - abar_t)
        var_t   = beta_t (1 - abar_{t-1}) / (1 - abar_t)        (var_0 = 0)

A schedule is a dict of float64 tensors of shape (T,), keyed by SCHEDULE_KEYS. The model is
called as model(x_t, t, cond) -> eps_hat with t a LongTensor (B,) and cond None or the model's
condition (class labels, a sequence of tokens, slots).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

SCHEDULE_KEYS = ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev",
                 "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2")
KINDS = ("linear", "cosine")


# ------------------------------------------------------------------------- diffusion.schedule

def make_schedule(T: int = 1000, kind: str = "linear", beta_start: float = 1e-4,
                  beta_end: float = 0.02) -> dict[str, torch.Tensor]:
    """The schedule and everything derived from it, float64 tensors of shape (T,).

    kind "linear": beta_t from beta_start to beta_end, T values evenly spaced (both ends in).
    kind "cosine" (Nichol & Dhariwal, 2021): f(u) = cos((u + 0.008) / 1.008 * pi / 2)^2,
        beta_t = min(1 - f((t + 1) / T) / f(t / T), 0.999)     for t = 0..T-1.
    Then alphas, alphas_cumprod (abar_t), alphas_cumprod_prev (abar_{t-1}, with abar_{-1} = 1),
    posterior_variance (var_t), posterior_mean_coef1 (of x0) and posterior_mean_coef2 (of x_t),
    as in the module docstring.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    # TODO(diffusion.schedule): betas for the kind (float64), then alphas = 1 - betas,
    #   abar = cumprod, abar_prev = abar shifted right by one with 1 first, and the posterior's
    #   variance and mean coefficients. Return a dict with the SCHEDULE_KEYS.
    raise NotImplementedError("TODO(diffusion.schedule): betas for the kind (float64), then alphas = 1 - betas, abar = cumprod, abar_prev = abar shifted right by one with 1 first, and the posterior's variance and mean coefficients. Return a dict with the SCHEDULE_KEYS.")


def gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] (T,) -> (B,) reshaped to (B, 1, 1, ...) to broadcast over `like` (B, ...), in
    like's dtype and on its device."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)   # (B,)
    return out.view(-1, *([1] * (like.ndim - 1)))


# ------------------------------------------------------------------------ diffusion.q_sample

def q_sample(schedule: dict, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, one t per image.
    x0, noise: (B, ...); t: LongTensor (B,) in 0..T-1. Returns (B, ...) in x0's dtype."""
    # TODO(diffusion.q_sample): abar_t for each image (gather broadcasts it), then the formula
    #   (square roots on both coefficients).
    raise NotImplementedError('TODO(diffusion.q_sample): abar_t for each image (gather broadcasts it), then the formula (square roots on both coefficients).')


# ---------------------------------------------------------------------------- diffusion.loss

def diffusion_loss(model: Callable, schedule: dict, x0: torch.Tensor, cond=None) -> torch.Tensor:
    """The simple epsilon loss of DDPM: for each image a step t ~ U{0, ..., T-1} and fresh noise
    eps ~ N(0, I), x_t = q_sample(schedule, x0, t, eps), and

        loss = mean over every element of (model(x_t, t, cond) - eps)^2.

    Draw t with torch.randint on x0's device (one t per image) and eps with torch.randn_like;
    call q_sample (the grader replaces it). Returns a scalar."""
    # TODO(diffusion.loss): t = torch.randint(0, T, (B,)), eps = torch.randn_like(x0),
    #   x_t = q_sample(...), then the mean squared error between model(x_t, t, cond) and eps.
    raise NotImplementedError('TODO(diffusion.loss): t = torch.randint(0, T, (B,)), eps = torch.randn_like(x0), x_t = q_sample(...), then the mean squared error between model(x_t, t, cond) and eps.')


# ------------------------------------------------------------------------ diffusion.p_sample

def p_sample(schedule: dict, eps: torch.Tensor, x_t: torch.Tensor, t: int,
             noise: torch.Tensor, clip: bool = False) -> torch.Tensor:
    """One step of ancestral sampling, x_t -> x_{t-1}, with the fixed-small variance:

        x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t),   clamped to [-1, 1] if clip
        mean   = coef1_t x0_hat + coef2_t x_t
        x_{t-1} = mean + sqrt(var_t) noise   for t > 0;   x_{-1} = mean (no noise) at t = 0.

    eps: the model's prediction for x_t, (B, ...); t: an int, the same step for every image;
    noise: N(0, I) of x_t's shape. Returns x_{t-1} in x_t's dtype."""
    # TODO(diffusion.p_sample): x0_hat from x_t and eps, clip it (before the mean uses it),
    #   the posterior mean, and the noise scaled by sqrt(posterior_variance[t]) unless t == 0.
    raise NotImplementedError('TODO(diffusion.p_sample): x0_hat from x_t and eps, clip it (before the mean uses it), the posterior mean, and the noise scaled by sqrt(posterior_variance[t]) unless t == 0.')


# -------------------------------------------------------------------------- diffusion.sample

@torch.no_grad()
def sample(model: Callable, schedule: dict, shape: tuple, cond=None, clip: bool = True,
           device=None, callback: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling: x_{T-1}... from x ~ N(0, I) of `shape`, then for t = T-1, ..., 0:

        eps = model(x, t_batch, cond)  with t_batch = torch.full((B,), t) (a LongTensor)
        x = p_sample(schedule, eps, x, t, torch.randn_like(x), clip)

    Every t once, from T-1 down to 0; p_sample leaves the noise out at t = 0. Call p_sample
    (the grader replaces it). `callback(t, x)`, when given, sees x after each step (the
    sampling chain figure). Returns x0 (B, ...)."""
    # TODO(diffusion.sample): x = torch.randn(shape); loop t from T-1 down to 0: the model's eps
    #   for (x, t), then x = p_sample(...) with fresh noise; return x.
    raise NotImplementedError("TODO(diffusion.sample): x = torch.randn(shape); loop t from T-1 down to 0: the model's eps for (x, t), then x = p_sample(...) with fresh noise; return x.")


def respace(schedule: dict, steps: int) -> tuple[dict, torch.Tensor]:
    """A faster sampler (Nichol & Dhariwal, 2021, section 4): keep `steps` of the T steps,
    evenly spaced and always the last, and recompute the betas so that the kept abar are
    unchanged: beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}}. Returns (the new schedule, the model
    time of each new step, (steps,) LongTensor); sample with respaced_model(model, timesteps)."""
    T = len(schedule["betas"])
    if not 1 <= steps <= T:
        raise ValueError(f"steps must be from 1 to T = {T}, got {steps}")
    kept = torch.linspace(0, T - 1, steps, dtype=torch.float64).round().long()   # (steps,)
    abar = schedule["alphas_cumprod"][kept]
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    betas = 1 - abar / abar_prev
    alphas = 1 - betas
    new = {"betas": betas, "alphas": alphas, "alphas_cumprod": abar,
           "alphas_cumprod_prev": abar_prev,
           "posterior_variance": betas * (1 - abar_prev) / (1 - abar),
           "posterior_mean_coef1": betas * abar_prev.sqrt() / (1 - abar),
           "posterior_mean_coef2": (1 - abar_prev) * alphas.sqrt() / (1 - abar)}
    return new, kept


def respaced_model(model: Callable, timesteps: torch.Tensor) -> Callable:
    """The model seen through a respaced schedule: step i of it is model time timesteps[i]."""
    def call(x, t, cond=None):
        return model(x, timesteps.to(t.device)[t], cond)
    return call


# ------------------------------------------------------------------------ diffusion.guidance

def drop_labels(y: torch.Tensor, p: float, null_label: int) -> torch.Tensor:
    """Classifier-free guidance's training trick: each label independently replaced by
    `null_label` (the "no condition" class) with probability p; a new tensor, y unchanged.
    p = 0 keeps every label, p = 1 drops them all."""
    # TODO(diffusion.guidance): a Bernoulli(p) mask per label (torch.rand(len(y)) < p) and
    #   torch.where(mask, null_label, y).
    raise NotImplementedError('TODO(diffusion.guidance): a Bernoulli(p) mask per label (torch.rand(len(y)) < p) and torch.where(mask, null_label, y).')


def guided_eps(model: Callable, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
               null_label: int, w: float) -> torch.Tensor:
    """Classifier-free guidance: eps = (1 + w) * eps(x, t, y) - w * eps(x, t, null), with
    eps(., ., y) = model(x, t, y). w = 0 is the conditional model, w > 0 pushes away from the
    unconditional prediction. Returns (B, ...)."""
    # TODO(diffusion.guidance): the conditional and unconditional predictions (labels all
    #   null_label), combined with weights (1 + w) and -w.
    raise NotImplementedError('TODO(diffusion.guidance): the conditional and unconditional predictions (labels all null_label), combined with weights (1 + w) and -w.')


def guided_model(model: Callable, null_label: int, w: float) -> Callable:
    """model(x, t, y) with guidance weight w, in the form sample() calls."""
    return lambda x, t, y: guided_eps(model, x, t, y, null_label, w)
