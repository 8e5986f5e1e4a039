"""Probes for the diffusion lab: run the student's functions and modules on the grader's inputs
and weights and return raw material only (outputs, recorded calls, gradients, trained weights);
the checks in autograder/diffusion.py compute every verdict. Nothing here is secret.

Where the student's code calls another task's function (the loss calls q_sample, the sampling
loop calls p_sample), the probe puts a reference in for it, so that an unfinished task does not
cost the next one its points, and records what the student's code passed to it.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.probing import ProbeFailed, gradients, load_weights, replaced, returned


def _schedule_value(schedule, key, t, like):
    return schedule[key].to(like.dtype)[t].view(-1, *([1] * (like.ndim - 1)))


def ref_q_sample(schedule, x0, t, noise):
    abar = _schedule_value(schedule, "alphas_cumprod", t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def ref_p_sample(schedule, eps, x_t, t, noise, clip=False):
    t = int(t)
    s = {k: schedule[k][t].item() for k in ("alphas_cumprod", "posterior_variance",
                                            "posterior_mean_coef1", "posterior_mean_coef2")}
    x0 = (x_t - math.sqrt(1 - s["alphas_cumprod"]) * eps) / math.sqrt(s["alphas_cumprod"])
    if clip:
        x0 = x0.clamp(-1, 1)
    mean = s["posterior_mean_coef1"] * x0 + s["posterior_mean_coef2"] * x_t
    return mean if t == 0 else mean + math.sqrt(s["posterior_variance"]) * noise


class LinearModel(nn.Module):
    """The grader's stand-in for a denoiser: eps_hat = a * x + b * t / T (+ cond's mean where a
    condition is given), with a and b parameters; it records every call."""

    def __init__(self, a, b, T):
        super().__init__()
        self.a, self.b = nn.Parameter(a.clone()), nn.Parameter(b.clone())
        self.T, self.calls = T, []

    def forward(self, x, t, cond=None, /):   # positional, as the handout's model(x_t, t, cond):
        # ClassConditionalUNet names its third argument y, so model(x_t, t, cond=c) breaks there
        if type(x) is not torch.Tensor or type(t) is not torch.Tensor:
            raise ProbeFailed("the model must be called as model(x_t, t, cond) with tensors x_t "
                              "and t (a LongTensor of shape (B,))")
        self.calls.append({"x": x.detach().clone(), "t": t.detach().clone(),
                           "cond": None if cond is None else torch.as_tensor(cond).detach().clone()})
        tt = t.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) if t.ndim == 1 else t.to(x.dtype)
        out = self.a * x + self.b * tt / self.T
        if cond is not None:
            out = out + torch.as_tensor(cond).to(x.dtype).view(len(x), -1).mean(1).view(
                -1, *([1] * (x.ndim - 1)))
        return out


# --------------------------------------------------------------------- diffusion.schedule

def schedule(lab, T, kind, beta_start, beta_end):
    out = lab.ddpm.make_schedule(T, kind, beta_start, beta_end)
    if type(out) is not dict:
        raise ProbeFailed(f"make_schedule must return a dict, got {type(out).__name__}")
    return {k: returned(v, f"make_schedule()[{k!r}]") for k, v in out.items() if type(k) is str}


# --------------------------------------------------------------------- diffusion.q_sample

def q_sample(lab, schedule, x0, t, noise):
    x0 = x0.clone().requires_grad_()
    out = returned(lab.ddpm.q_sample(schedule, x0, t, noise), "q_sample")
    result = {"out": out}
    if out.requires_grad and out.shape == x0.shape:
        out.sum().backward()
        result["x0_grad"] = x0.grad
    return result


# ------------------------------------------------------------------------- diffusion.loss

def loss(lab, schedule, x0, a, b, calls=1, seed=0, cond=None):
    """The student's diffusion_loss with the grader's linear model and the reference q_sample;
    the loss, what the model saw (x_t, t, cond) and the gradients of a and b, per call."""
    torch.manual_seed(seed)
    out = []
    T = len(schedule["betas"])
    for _ in range(calls):
        model = LinearModel(a, b, T)
        with replaced(lab.ddpm, q_sample=ref_q_sample):
            value = returned(lab.ddpm.diffusion_loss(model, schedule, x0.clone(), cond), "diffusion_loss")
        if len(model.calls) != 1:
            raise ProbeFailed(f"diffusion_loss must call the model once, it called it "
                              f"{len(model.calls)} times")
        row = {"loss": value.detach(), "x_t": model.calls[0]["x"], "t": model.calls[0]["t"],
               "cond": model.calls[0]["cond"]}
        if value.requires_grad and value.numel() == 1:
            value.backward()
            row["grads"] = gradients(model)
        out.append(row)
    return out


class TinyDenoiser(nn.Module):
    """The training check's model (written here, not the student's): eps_hat from x_t and the
    sinusoidal embedding of t. Names: conv_in, time, conv_mid, conv_out."""

    def __init__(self, width=16):
        super().__init__()
        self.width = width
        self.conv_in = nn.Conv2d(1, width, 3, padding=1)
        self.time = nn.Linear(width, width)
        self.conv_mid = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x, t, cond=None):
        half = self.width // 2
        f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        ang = t.float()[:, None] * f[None]
        emb = torch.cat([ang.sin(), ang.cos()], -1)
        h = F.silu(self.conv_in(x) + self.time(emb)[:, :, None, None])
        return self.conv_out(F.silu(self.conv_mid(h)))


def train_denoiser(lab, schedule, x_train, seed, steps, batch_size, lr, width):
    """Train the TinyDenoiser with the student's diffusion_loss (reference q_sample) and return
    the trained weights; the grader evaluates them on images it keeps."""
    torch.manual_seed(seed)
    model = TinyDenoiser(width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for i in range(steps):
        idx = torch.randint(0, len(x_train), (batch_size,))
        with replaced(lab.ddpm, q_sample=ref_q_sample):
            value = returned(lab.ddpm.diffusion_loss(model, schedule, x_train[idx]), "diffusion_loss")
        if value.numel() != 1 or not value.requires_grad:
            raise ProbeFailed("diffusion_loss must return a scalar that carries a gradient")
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return dict(model.state_dict())


# ---------------------------------------------------------------------- diffusion.p_sample

def p_sample(lab, schedule, eps, x_t, t, noise, clip):
    return returned(lab.ddpm.p_sample(schedule, eps.clone(), x_t.clone(), t, noise.clone(), clip),
                    "p_sample")


# ------------------------------------------------------------------------ diffusion.sample

def sample(lab, schedule, shape, a, b, cond, clip, seed):
    """The student's sample() with the grader's linear model and a recording reference
    p_sample: every model call, every p_sample call (eps, x_t, t, noise, clip), the result."""
    torch.manual_seed(seed)
    T = len(schedule["betas"])
    model = LinearModel(a, b, T)
    steps = []

    def recording_p_sample(schedule_, eps, x_t, t, noise, clip=False):
        if isinstance(t, torch.Tensor):
            if t.numel() != 1:
                raise ProbeFailed("p_sample takes t as an int (the same step for every image)")
            t = t.item()
        for name, v in (("eps", eps), ("x_t", x_t), ("noise", noise)):
            if type(v) is not torch.Tensor:
                raise ProbeFailed(f"sample passed {name} to p_sample as {type(v).__name__}, "
                                  f"expected a tensor")
        if not 0 <= int(t) < T:
            raise ProbeFailed(f"sample passed t = {int(t)} to p_sample: t runs 0..T-1 = "
                              f"0..{T - 1} (not 1..T)")
        steps.append({"eps": eps.detach().clone(), "x_t": x_t.detach().clone(), "t": int(t),
                      "noise": noise.detach().clone(), "clip": bool(clip)})
        out = ref_p_sample(schedule_, eps, x_t, t, noise, clip)
        steps[-1]["out"] = out.detach().clone()
        return out

    seen = []

    def callback(t, x):
        seen.append({"t": t.item() if isinstance(t, torch.Tensor) and t.numel() == 1 else t,
                     "x": x.detach().clone() if isinstance(x, torch.Tensor) else None})

    with replaced(lab.ddpm, p_sample=recording_p_sample):
        out = returned(lab.ddpm.sample(model, schedule, tuple(shape), cond, clip,
                                       callback=callback), "sample")
    return {"out": out, "model_calls": model.calls, "steps": steps,
            "callback": [{"t": c["t"] if type(c["t"]) is int else None, "x": c["x"]} for c in seen]}


# ---------------------------------------------------------------- diffusion.time_embedding

def time_embedding(lab, t, dim, max_period=None):
    if max_period is None:
        return returned(lab.unet.timestep_embedding(t, dim), "timestep_embedding")
    return returned(lab.unet.timestep_embedding(t, dim, max_period), "timestep_embedding")


# ---------------------------------------------------------------------- diffusion.resblock

def resblock(lab, in_channels, out_channels, time_dim, dropout, groups, state, x, temb,
             grad_out, train, seed=0):
    torch.manual_seed(seed)
    block = lab.unet.ResBlock(in_channels, out_channels, time_dim, dropout, groups)
    load_weights(block, state, "ResBlock")
    block.train(train)
    x, temb = x.clone().requires_grad_(), temb.clone().requires_grad_()
    out = returned(block(x, temb), "ResBlock")
    result = {"out": out}
    if grad_out is not None and out.shape == grad_out.shape and out.requires_grad:
        (out * grad_out).sum().backward()
        result.update(grads=gradients(block), x_grad=x.grad, temb_grad=temb.grad)
    return result


# --------------------------------------------------------------- diffusion.cross_attention

def attention(lab, dim, context_dim, heads, state, x, context, grad_out):
    module = lab.unet.Attention(dim, context_dim, heads)
    load_weights(module, state, "Attention")
    x = x.clone().requires_grad_()
    ctx = None if context is None else context.clone().requires_grad_()
    out = returned(module(x, ctx), "Attention")
    result = {"out": out}
    if out.shape == grad_out.shape and out.requires_grad:
        (out * grad_out).sum().backward()
        result.update(grads=gradients(module), x_grad=x.grad,
                      context_grad=None if ctx is None else ctx.grad)
    return result


def transformer(lab, dim, cond_dim, heads, state, x, conds, grad_out):
    """The TransformerBlock on x with each condition in `conds` (in eval mode), and the
    gradients for the first."""
    block = lab.unet.TransformerBlock(dim, cond_dim, heads)
    load_weights(block, state, "TransformerBlock")
    block.eval()
    outs, result = [], {}
    for i, cond in enumerate(conds):
        xx = x.clone().requires_grad_(i == 0)
        cc = None if cond is None else cond.clone().requires_grad_(i == 0)
        out = returned(block(xx, cc), "TransformerBlock")
        if i == 0 and out.shape == grad_out.shape and out.requires_grad:
            (out * grad_out).sum().backward()
            result.update(grads=gradients(block), x_grad=xx.grad,
                          cond_grad=None if cc is None else cc.grad)
        outs.append(out.detach())
    result["outs"] = outs
    return result


# ---------------------------------------------------------------------- diffusion.guidance

class LabelModel(nn.Module):
    """eps_hat = a * x + E[y] (one value per label) + b * t / 1000, recording the labels of
    every call."""

    def __init__(self, a, table, b=0.0):
        super().__init__()
        self.a, self.table, self.b, self.labels = a, table, b, []

    def forward(self, x, t, y):
        if type(y) is not torch.Tensor or type(t) is not torch.Tensor:
            raise ProbeFailed("guided_eps must call the model with tensors of steps and labels")
        self.labels.append(y.detach().clone())
        view = (-1, *([1] * (x.ndim - 1)))
        return (self.a * x + self.table[y].view(view).to(x.dtype)
                + self.b * t.to(x.dtype).view(view) / 1000)


def guided(lab, a, table, x, t, y, null_label, w, b=0.0):
    model = LabelModel(a, table, b)
    y_in = y.clone()
    out = returned(lab.ddpm.guided_eps(model, x.clone(), t.clone(), y_in, null_label, w),
                   "guided_eps")
    return {"out": out, "labels": model.labels, "y_after": y_in}


def drop_labels(lab, y, p, null_label, seed):
    torch.manual_seed(seed)
    before = y.clone()
    out = returned(lab.ddpm.drop_labels(y, p, null_label), "drop_labels")
    again = returned(lab.ddpm.drop_labels(y, p, null_label), "drop_labels")
    return {"out": out, "again": again, "y_after": y, "y_before": before}
