"""Checks for the diffusion lab. Run them with `vislab grade diffusion [--impl labs|solutions|PATH]`.

References are independent of the student's code and of the lab's solution: the DDPM schedule
and posterior in closed form in float64 (tests/test_diffusion.py checks them against diffusers'
DDPMScheduler: add_noise, and step with variance "fixed_small"), computed in float64. Inputs
come from the generator `g` the grader seeds.

The checks of the other tasks are in files of their own, registered on this `lab` in the order
of the tasks: diffusion_unet.py (the sinusoidal embedding, the ResBlock, attention and the
TransformerBlock), diffusion_latent.py and diffusion_slots.py.
"""
import math

import torch
import torch.nn.functional as F

from vislab.grading import CheckFailed, Lab, expect, expect_close, expect_gradients, expect_shape

from . import diffusion_probes as probes

lab = Lab("diffusion", {
    "diffusion.schedule": "linear and cosine beta schedules, abar, the posterior",
    "diffusion.q_sample": "the forward process x_t = sqrt(abar) x0 + sqrt(1 - abar) eps",
    "diffusion.loss": "the epsilon loss at a uniformly drawn t",
    "diffusion.p_sample": "one ancestral step x_t -> x_{t-1} (fixed-small variance, clip)",
    "diffusion.sample": "the sampling loop from x_T ~ N(0, I) to x_0",
    "diffusion.time_embedding": "sinusoidal embedding of t",
    "diffusion.resblock": "ResBlock: GroupNorm, SiLU, conv, + time, dropout, conv, skip",
    "diffusion.cross_attention": "attention with keys/values from the condition; TransformerBlock",
    "diffusion.guidance": "classifier-free guidance: label dropout and the guided eps",
    "diffusion.latent": "latent diffusion: standardised VAE codes and an MLP denoiser",
    "diffusion.slot_decoder": "a slot-conditioned diffusion decoder: the loss, the masks",
})

SCHEDULE_KEYS = ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev",
                 "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2")


def _seed(g) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=g))


# ------------------------------------------------------------------- the reference schedule

def derived(betas: torch.Tensor, prev_pad: str = "left", divide: bool = True) -> dict:
    """Everything that follows from betas (float64). prev_pad/divide reproduce named mistakes."""
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    one = torch.ones(1, dtype=torch.float64)
    abar_prev = torch.cat([one, abar[:-1]]) if prev_pad == "left" else torch.cat([abar[:-1], one])
    var = betas * (1 - abar_prev) / ((1 - abar) if divide else 1)
    return {"betas": betas, "alphas": alphas, "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev, "posterior_variance": var,
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_mean_coef2": (1 - abar_prev) * alphas.sqrt() / (1 - abar)}


def cosine_betas(T: int, cap: float | None = 0.999) -> torch.Tensor:
    u = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = 1 - f[1:] / f[:-1]
    return betas if cap is None else betas.clamp(max=cap)


def ref_schedule(T: int = 1000, kind: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, **mistake) -> dict:
    if kind == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
    else:
        betas = cosine_betas(T)
    return derived(betas, **mistake)


def expect_schedule(got, want: dict, what: str, wrong: dict[str, dict]) -> None:
    expect(type(got) is dict and all(k in got for k in SCHEDULE_KEYS),
           f"{what}: expected a dict with the keys {', '.join(SCHEDULE_KEYS)}; missing "
           f"{[k for k in SCHEDULE_KEYS if type(got) is not dict or k not in got]}")
    for key in SCHEDULE_KEYS:
        # float32 arithmetic is accepted: 1 - abar_0 = beta_0 = 1e-4 computed in float32 keeps
        # about 3 digits (posterior_mean_coef1[0] = beta_0 / (1 - abar_0) = 1 comes out 1.0002),
        # hence rtol 1e-3; every named mistake is off by far more.
        expect_close(got[key], want[key], f"{what}[{key!r}]", atol=1e-6, rtol=1e-3,
                     diagnoses={m: s[key] for m, s in wrong.items()})


@lab.check("diffusion.schedule", points=1)
def linear_schedule(student, g):
    """The linear schedule (T = 1000, beta 1e-4 to 0.02, and T = 7 with other ends) and every
    derived quantity; the posterior variance is 0 at t = 0 and beta_{T-1} (1 - abar_{T-2}) /
    (1 - abar_{T-1}) at t = T-1."""
    for T, start, end in ((1000, 1e-4, 0.02), (7, 0.01 + 0.05 * torch.rand(1, generator=g).item(), 0.4)):
        got = student.run(probes.schedule, T=T, kind="linear", beta_start=start, beta_end=end)
        want = ref_schedule(T, "linear", start, end)
        wrong = {"abar_{t-1} padded on the wrong side (the 1 goes first: abar_prev[0] = 1, "
                 "abar_prev[t] = abar[t-1])": ref_schedule(T, "linear", start, end, prev_pad="right"),
                 "the posterior variance without the division by (1 - abar_t)":
                     ref_schedule(T, "linear", start, end, divide=False)}
        what = f"make_schedule(T={T}, 'linear', {start:.3g}, {end:.3g})"
        if type(got) is dict and "posterior_variance" in got and len(got["posterior_variance"]) == T:
            var = got["posterior_variance"].double()
            expect(abs(var[0].item()) < 1e-12, f"{what}: posterior_variance[0] is "
                   f"{var[0].item():.3g}; at t = 0, abar_{{t-1}} = 1 so the variance is 0 (is "
                   f"abar_prev padded with 1 on the left?)", "posterior variance at t = 0 not 0")
        expect_schedule(got, want, what, wrong)


@lab.check("diffusion.schedule", points=1)
def cosine_schedule(student, g):
    """The cosine schedule for T = 1000 and T = 50: betas capped at 0.999, and the derived
    quantities."""
    for T in (1000, 50):
        got = student.run(probes.schedule, T=T, kind="cosine", beta_start=1e-4, beta_end=0.02)
        want = ref_schedule(T, "cosine")
        wrong = {"the cosine betas not capped at 0.999": derived(cosine_betas(T, None)),
                 "abar_{t-1} padded on the wrong side": derived(cosine_betas(T), prev_pad="right")}
        if type(got) is dict and "betas" in got and len(got["betas"]) == T:
            last = got["betas"][-1].item()
            expect(math.isfinite(last) and last <= 0.999 + 1e-6,   # 0.999 in float32 is 0.99900001
                   f"make_schedule(T={T}, 'cosine'): the last beta is {last:.6g}; cap the betas "
                   f"at 0.999 (f(1) = 0 makes the uncapped last beta 1)",
                   "the cosine betas not capped at 0.999")
        try:
            expect_schedule(got, want, f"make_schedule(T={T}, 'cosine')", wrong)
        except CheckFailed as failed:
            betas = got.get("betas") if type(got) is dict else None
            if failed.mistake or type(betas) is not torch.Tensor or betas.dtype == torch.float64:
                raise
            # 1 - f(u_{t+1}) / f(u_t) at small t subtracts two numbers within 4e-5 of 1: float32
            # keeps about 2 digits of the early betas (0.2% off), which the handout rules out.
            raise CheckFailed(f"{failed}; your betas are {betas.dtype}: compute the cosine "
                              f"schedule in float64 (in float32, 1 - f((t+1)/T) / f(t/T) loses "
                              f"digits: the early betas are about 4e-5)",
                              "the cosine schedule computed in float32") from None


# ---------------------------------------------------------------------- diffusion.q_sample

def ref_q(schedule, x0, t, noise, sqrt_abar=True, sqrt_rest=True, shift=0):
    abar = schedule["alphas_cumprod"][(t - shift) % len(schedule["betas"])]
    abar = abar.view(-1, *([1] * (x0.ndim - 1)))
    a = abar.sqrt() if sqrt_abar else abar
    s = (1 - abar).sqrt() if sqrt_rest else 1 - abar
    return a * x0.double() + s * noise.double()


@lab.check("diffusion.q_sample", points=1)
def q_sample_matches(student, g):
    """x_t for images (5, 3, 5, 7) at steps that include 0 and T-1, against the closed form in
    float64 (the same as diffusers' DDPMScheduler.add_noise); dx_t/dx0 = sqrt(abar_t)."""
    sched = ref_schedule(1000)
    B = 5
    x0 = torch.rand(B, 3, 5, 7, generator=g) * 2 - 1
    noise = torch.randn(B, 3, 5, 7, generator=g)
    t = torch.cat([torch.tensor([0, 999]), torch.randint(1, 999, (B - 2,), generator=g)])
    got = student.run(probes.q_sample, schedule=sched, x0=x0, t=t, noise=noise)
    want = ref_q(sched, x0, t, noise)
    expect_close(got["out"], want, "q_sample(schedule, x0, t, noise)", diagnoses={
        "sqrt missing on abar (x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps)":
            ref_q(sched, x0, t, noise, sqrt_abar=False),
        "sqrt missing on both coefficients": ref_q(sched, x0, t, noise, False, False),
        "t indexed off by one (t runs 0..T-1: abar_t is alphas_cumprod[t], not [t - 1])":
            ref_q(sched, x0, t, noise, shift=1),
        "t indexed off by one (alphas_cumprod[t + 1])": ref_q(sched, x0, t, noise, shift=-1),
        "x0 and noise swapped": ref_q(sched, noise, t, x0)})
    expect(got.get("x0_grad") is not None, "q_sample: no gradient reached x0")
    grad = sched["alphas_cumprod"][t].sqrt().view(-1, 1, 1, 1).expand_as(x0)
    expect_close(got["x0_grad"], grad, "gradient of q_sample wrt x0 (sqrt(abar_t))")


@lab.check("diffusion.q_sample", points=1)
def q_sample_any_shape(student, g):
    """q_sample on latent vectors (B, D) and on one image (1, 1, 4, 6) in float64, with the
    cosine schedule: abar_t broadcast over every axis but the batch; x0's dtype kept."""
    sched = ref_schedule(50, "cosine")
    for shape, dtype in (((6, 9), torch.float32), ((1, 1, 4, 6), torch.float64)):
        x0 = torch.randn(shape, generator=g).to(dtype)
        noise = torch.randn(shape, generator=g).to(dtype)
        t = torch.randint(0, 50, (shape[0],), generator=g)
        got = student.run(probes.q_sample, schedule=sched, x0=x0, t=t, noise=noise)
        out = expect_shape(got["out"], shape, f"q_sample on {tuple(shape)}")
        expect(out.dtype == dtype, f"q_sample on {dtype} input returned {out.dtype}: keep x0's dtype")
        expect_close(out, ref_q(sched, x0, t, noise), f"q_sample on {tuple(shape)} ({dtype})",
                     diagnoses={"sqrt missing on abar": ref_q(sched, x0, t, noise, sqrt_abar=False)})


# -------------------------------------------------------------------------- diffusion.loss

@lab.check("diffusion.loss", points=1)
def loss_targets_eps(student, g):
    """With the grader's model eps_hat = a * x_t + b * t / T: the loss equals the mean of
    (eps_hat - eps)^2 with eps recovered from x_t, eps is N(0, I) noise, and the gradients of
    a and b match."""
    sched = ref_schedule(1000)
    x0 = torch.rand(256, 1, 4, 4, generator=g) * 2 - 1
    a, b = torch.tensor(0.3 + 0.4 * torch.rand(1, generator=g).item()), torch.tensor(0.5)
    got = student.run(probes.loss, schedule=sched, x0=x0, a=a, b=b, seed=_seed(g))[0]
    t = expect_shape(got["t"], (256,), "the t diffusion_loss gave the model")
    expect(not t.is_floating_point(), f"t must be integer steps (torch.randint), got {t.dtype}")
    expect(bool(t.min() >= 0) and bool(t.max() <= 999),
           f"t must lie in 0..T-1 = 0..999, got {t.min().item()}..{t.max().item()}")
    x_t = expect_shape(got["x_t"], x0.shape, "the x_t diffusion_loss gave the model").double()
    abar = sched["alphas_cumprod"][t].view(-1, 1, 1, 1)
    eps = (x_t - abar.sqrt() * x0.double()) / (1 - abar).sqrt()        # the noise it drew
    expect(abs(eps.mean().item()) < 5 / math.sqrt(eps.numel())
           and abs(eps.std().item() - 1) < 5 / math.sqrt(2 * eps.numel()),
           f"the noise behind x_t has mean {eps.mean().item():.3g} and std {eps.std().item():.3g}; "
           f"draw eps = torch.randn_like(x0) (standard normal)", "noise not N(0, I)")
    flat = eps.flatten(1)                                              # (B, 16)
    expect(bool(((flat[1:] - flat[:1]).abs().amax(1) > 1e-3).all()),
           "two images got the same noise: draw eps for every image, torch.randn_like(x0) "
           "(not one noise broadcast over the batch)", "one noise for the whole batch")
    ad, bd = a.double().requires_grad_(), b.double().requires_grad_()
    pred = ad * x_t + bd * t.double().view(-1, 1, 1, 1) / 1000
    want = ((pred - eps) ** 2).mean()
    want.backward()
    expect_close(got["loss"], want.detach(), "diffusion_loss", diagnoses={
        "the loss targets x0 (the handout's loss predicts the noise eps)":
            ((pred - x0.double()) ** 2).mean().detach(),
        "a sum instead of the mean": ((pred - eps) ** 2).sum().detach(),
        "the mean over images of the per-image sum (take the mean over every element)":
            ((pred - eps) ** 2).flatten(1).sum(1).mean().detach()})
    grads = got.get("grads")
    expect(grads is not None, "diffusion_loss returned no gradient (torch.no_grad or .detach()?)")
    expect_gradients(grads, {"a": ad.grad.float(), "b": bd.grad.float()}, "diffusion_loss")


@lab.check("diffusion.loss", points=1)
def loss_draws_t_uniformly(student, g):
    """Over 3000 images and T = 10, t takes every value 0..9 about equally often (each count
    within 5 standard deviations of 300), one t per image, fresh on every call."""
    T = 10
    sched = ref_schedule(T, "linear", 1e-3, 0.2)
    x0 = torch.rand(3000, 1, 1, 2, generator=g) * 2 - 1
    cond = torch.randn(3000, 2, generator=g)
    calls = student.run(probes.loss, schedule=sched, x0=x0, a=torch.tensor(0.5),
                        b=torch.tensor(0.1), calls=2, seed=_seed(g), cond=cond)
    expect(calls[0].get("cond") is not None and torch.equal(calls[0]["cond"], cond),
           "diffusion_loss(model, schedule, x0, cond) did not give the model the condition: "
           "call model(x_t, t, cond)", "the condition not passed to the model")
    t = expect_shape(calls[0]["t"], (3000,), "the t diffusion_loss gave the model").long()
    expect(len(t.unique()) > 1, "every image got the same t: draw one t per image, "
           "torch.randint(0, T, (B,))", "one t for the whole batch")
    expect(bool(t.min() >= 0) and bool(t.max() <= T - 1),
           f"t must lie in 0..T-1 = 0..{T - 1}, got {t.min().item()}..{t.max().item()} "
           f"(torch.randint's upper end is excluded)", "t out of range")
    counts = torch.bincount(t, minlength=T).double()
    n, p = len(t), 1 / T
    if counts[0] == 0:
        expect(False, "t never took the value 0: draw t from 0..T-1 (torch.randint(0, T, ...)), "
                      "not 1..T-1", "t drawn from 1..T-1 (t = 0 never trained)")
    if counts[-1] == 0:
        expect(False, f"t never took the value T-1 = {T - 1}: torch.randint(0, T) excludes T, "
                      f"so the upper bound is T, not T-1", "t drawn from 0..T-2")
    bad = ((counts - n * p).abs() > 5 * math.sqrt(n * p * (1 - p))).nonzero().flatten().tolist()
    expect(not bad, f"t is not uniform over 0..{T - 1}: the counts are {counts.long().tolist()} "
                    f"(expected about {n * p:.0f} each)", "t not uniform")
    expect(not torch.equal(calls[0]["t"], calls[1]["t"]),
           "two calls of diffusion_loss drew the same t: draw fresh steps on every call")
    eps = []
    for c in calls:
        tt = c["t"].long()
        abar = sched["alphas_cumprod"][tt].view(-1, 1, 1, 1)
        eps.append((c["x_t"].double() - abar.sqrt() * x0.double()) / (1 - abar).sqrt())
    expect(not torch.allclose(eps[0], eps[1], atol=1e-3),
           "two calls of diffusion_loss drew the same noise: draw fresh noise on every call "
           "(torch.randn_like(x0), no fixed seed or generator)", "the same noise on every call")


# The training check's recipe and pass mark: the grader's epsilon MSE (its own t and noise, on
# held-out MNIST-5k test images at 14 x 14) of a TinyDenoiser trained with the student's loss,
# over 20 seeds (benchmarks/calibrate.py diffusion; numbers in docs/labs/diffusion.md).
TRAIN = dict(steps=150, batch_size=64, lr=3e-3, width=16)
TRAIN_THRESHOLD = 0.30  # set from the calibration (see docs); an untrained model gives about 1


def mnist14(split: str) -> torch.Tensor:
    from vislab.data.mnist import mnist5k

    x = mnist5k(split)[0].float() / 255
    return F.avg_pool2d(x[:, None] if x.ndim == 3 else x, 2) * 2 - 1     # (N, 1, 14, 14)


def ref_denoiser(S, x, t, width):
    half = width // 2
    f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    ang = t.double()[:, None] * f[None]
    emb = torch.cat([ang.sin(), ang.cos()], -1)
    h = F.conv2d(x, S["conv_in.weight"], S["conv_in.bias"], padding=1)
    h = F.silu(h + F.linear(emb, S["time.weight"], S["time.bias"])[:, :, None, None])
    h = F.silu(F.conv2d(h, S["conv_mid.weight"], S["conv_mid.bias"], padding=1))
    return F.conv2d(h, S["conv_out.weight"], S["conv_out.bias"], padding=1)


@torch.no_grad()
def eps_mse(state: dict, x0: torch.Tensor, g: torch.Generator, sched: dict) -> float:
    """The grader's own epsilon MSE of the trained weights on x0, its own t and noise."""
    S = {k: v.double() for k, v in state.items()}
    x0 = x0.double()
    t = torch.randint(0, len(sched["betas"]), (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = ref_q(sched, x0, t, noise)
    return ((ref_denoiser(S, x_t, t, TRAIN["width"]) - noise) ** 2).mean().item()


def denoiser_mse(student, seed: int) -> float:
    """Test epsilon MSE (lower is better) of the TinyDenoiser trained with the student's loss."""
    sched = ref_schedule(1000)
    x_train, x_test = mnist14("train"), mnist14("test")[:1000]
    state = student.run(probes.train_denoiser, schedule=sched, x_train=x_train, seed=seed, **TRAIN)
    w = TRAIN["width"]
    want = {"conv_in.weight": (w, 1, 3, 3), "conv_in.bias": (w,), "time.weight": (w, w),
            "time.bias": (w,), "conv_mid.weight": (w, w, 3, 3), "conv_mid.bias": (w,),
            "conv_out.weight": (1, w, 3, 3), "conv_out.bias": (1,)}
    expect(type(state) is dict and {k: tuple(v.shape) for k, v in state.items()} == want,
           "the trained denoiser's state dict is not the probe's TinyDenoiser's")
    mse = eps_mse(state, x_test, torch.Generator().manual_seed(seed), sched)
    expect(math.isfinite(mse), "the trained denoiser's test loss is not finite")
    return mse


@lab.check("diffusion.loss", points=2, timeout=60)
def trains_a_denoiser(student, g):
    """A small denoiser trained for seconds on MNIST-5k (14 x 14) with your loss predicts the
    noise of held-out images: the grader's epsilon MSE, its own t and noise, is below the mark."""
    mse = denoiser_mse(student, seed=_seed(g) % 1000)
    expect(mse <= TRAIN_THRESHOLD,
           f"test epsilon MSE {mse:.3f} after {TRAIN['steps']} steps is above {TRAIN_THRESHOLD} "
           f"(an untrained model scores about 1): does the loss target eps, at every t?")


# ---------------------------------------------------------------------- diffusion.p_sample

def ref_step(sched, eps, x_t, t, noise, clip=False, clip_after=False, noise_at_0=False,
             variance="posterior"):
    abar = sched["alphas_cumprod"][t]
    x0 = (x_t.double() - (1 - abar).sqrt() * eps.double()) / abar.sqrt()
    if clip and not clip_after:
        x0 = x0.clamp(-1, 1)
    mean = sched["posterior_mean_coef1"][t] * x0 + sched["posterior_mean_coef2"][t] * x_t.double()
    var = {"posterior": sched["posterior_variance"][t], "beta": sched["betas"][t]}[variance]
    if t == 0 and not noise_at_0:
        return mean
    return mean + var.sqrt() * noise.double()


@lab.check("diffusion.p_sample", points=1)
def p_sample_step(student, g):
    """x_{t-1} at t = T-1, a middle t and t = 1 (images (3, 2, 5, 4), no clip), against the
    closed form (diffusers' DDPMScheduler.step, variance "fixed_small"), x_t's dtype kept;
    and on vectors (5, 9)."""
    sched = ref_schedule(1000)
    for t in (999, int(torch.randint(2, 998, (1,), generator=g)), 1):
        x_t = torch.randn(3, 2, 5, 4, generator=g)
        eps = torch.randn(3, 2, 5, 4, generator=g)
        noise = torch.randn(3, 2, 5, 4, generator=g)
        got = student.run(probes.p_sample, schedule=sched, eps=eps, x_t=x_t, t=t, noise=noise,
                          clip=False)
        want = ref_step(sched, eps, x_t, t, noise)
        expect(type(got) is not torch.Tensor or got.dtype == x_t.dtype,
               f"p_sample on {x_t.dtype} input returned {got.dtype}: keep x_t's dtype (the "
               f"schedule is float64; use .item() or gather(..., like=x_t))",
               "p_sample changed the dtype")
        expect_close(got, want, f"p_sample at t = {t}", diagnoses={
            "the noise scaled by sqrt(beta_t) (the handout's variance is the posterior's, "
            "fixed-small)": ref_step(sched, eps, x_t, t, noise, variance="beta"),
            "the noise scaled by the variance, not its square root":
                ref_step(sched, eps, x_t, t, noise * 0) + sched["posterior_variance"][t] * noise.double(),
            "t indexed off by one (step t uses schedule[t], not schedule[t - 1])":
                ref_step(sched, eps, x_t, t - 1, noise)})
    # latent vectors (B, D): p_sample must not assume images (the latent part samples codes)
    x_t, eps, noise = (torch.randn(5, 9, generator=g) for _ in range(3))
    got = student.run(probes.p_sample, schedule=sched, eps=eps, x_t=x_t, t=300, noise=noise,
                      clip=False)
    expect_close(got, ref_step(sched, eps, x_t, 300, noise), "p_sample on vectors (5, 9) at "
                 "t = 300 (x_t may have any shape (B, ...))")


@lab.check("diffusion.p_sample", points=1)
def p_sample_last_step_and_clip(student, g):
    """At t = 0 no noise is added (x_{-1} is the mean), even where the schedule stores a nonzero
    posterior_variance[0]; with clip=True x0_hat is clamped to
    [-1, 1] before the mean is computed (one image, (1, 1, 6, 3), and a batch at t = 500)."""
    sched = ref_schedule(1000)
    clipped = dict(sched)   # improved DDPM's clipped variance: var_1 stored at t = 0 too
    clipped["posterior_variance"] = torch.cat([sched["posterior_variance"][1:2],
                                               sched["posterior_variance"][1:]])
    x_t = torch.randn(1, 1, 6, 3, generator=g)
    eps = torch.randn(1, 1, 6, 3, generator=g)
    noise = torch.randn(1, 1, 6, 3, generator=g)
    got = student.run(probes.p_sample, schedule=clipped, eps=eps, x_t=x_t, t=0, noise=noise,
                      clip=False)
    expect_close(got, ref_step(clipped, eps, x_t, 0, noise), "p_sample at t = 0 (with "
                 "posterior_variance[0] = var_1, as improved DDPM stores it)", diagnoses={
        "noise added at the final step (at t = 0 return the mean, whatever posterior_variance[0] "
        "holds)": ref_step(clipped, eps, x_t, 0, noise, noise_at_0=True)})
    for t in (500, 0):
        x_t = 3 * torch.randn(4, 1, 3, 5, generator=g)            # x0_hat far outside [-1, 1]
        eps = torch.randn(4, 1, 3, 5, generator=g)
        noise = torch.randn(4, 1, 3, 5, generator=g)
        got = student.run(probes.p_sample, schedule=sched, eps=eps, x_t=x_t, t=t, noise=noise,
                          clip=True)
        want = ref_step(sched, eps, x_t, t, noise, clip=True)
        expect_close(got, want, f"p_sample(clip=True) at t = {t}", diagnoses={
            "x0_hat clipped after the mean was computed (the clip then does nothing): clamp "
            "x0_hat, then compute the mean from it": ref_step(sched, eps, x_t, t, noise),
            "x_{t-1} clipped instead of x0_hat": ref_step(sched, eps, x_t, t, noise).clamp(-1, 1)})


# ------------------------------------------------------------------------ diffusion.sample

def _same_rows(v: torch.Tensor) -> bool:
    """Whether two images of a batch (B, ...) hold the same values (one draw broadcast)."""
    flat = v.flatten(1)
    return len(flat) > 1 and bool(((flat[1:] - flat[:1]).abs().amax(1) < 1e-6).any())


def run_sample(student, g, T, shape, cond, clip, callback=False):
    sched = ref_schedule(T, "linear", 0.05, 0.3)
    a, b = torch.tensor(0.4), torch.tensor(0.7)
    got = student.run(probes.sample, schedule=sched, shape=list(shape), a=a, b=b, cond=cond,
                      clip=clip, seed=_seed(g))
    calls, steps = got["model_calls"], got["steps"]
    expect(len(steps) > 0, "sample never called p_sample: call it at every step (the grader "
                           "replaces it to follow the chain)")
    model_t = []
    for c in calls:
        t = c["t"]
        expect(tuple(t.shape) == (shape[0],) and not t.is_floating_point(),
               f"the model must get t as a LongTensor of shape (B,) = ({shape[0]},), got "
               f"{t.dtype} {tuple(t.shape)}")
        expect(bool((t == t[0]).all()), "the model got different t for the images of one step")
        model_t.append(int(t[0]))
    expect(model_t == list(range(T - 1, -1, -1)),
           f"the model was called at t = {model_t[:8]}{'...' if len(model_t) > 8 else ''}; "
           f"visit every t from T-1 = {T - 1} down to 0 once (t runs 0..T-1)",
           "the loop does not visit T-1, ..., 0 once each")
    expect([s["t"] for s in steps] == model_t,
           f"p_sample was called at t = {[s['t'] for s in steps]}, the model at {model_t}: one "
           f"p_sample per model call, with the same t")
    x_T = calls[0]["x"].double()
    expect(tuple(x_T.shape) == tuple(shape), f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
    n = x_T.numel()
    expect(abs(x_T.mean().item()) < 5 / math.sqrt(n) and abs(x_T.std().item() - 1) < 5 / math.sqrt(2 * n),
           f"x_T has mean {x_T.mean().item():.3g} and std {x_T.std().item():.3g}: start from "
           f"x_T ~ N(0, I), torch.randn(shape)", "x_T not N(0, I)")
    expect(not _same_rows(x_T), "two images start from the same x_T: draw x_T ~ N(0, I) of the "
           "whole shape, torch.randn(shape)", "x_T shared across the batch")
    x = x_T
    for i, (c, s) in enumerate(zip(calls, steps)):
        t = model_t[i]
        expect(torch.allclose(c["x"].double(), x, atol=1e-6),
               f"at t = {t} the model did not get the current x (the output of the previous "
               f"p_sample step)", "the model sees a stale x")
        eps = a.double() * x + b.double() * t / T
        if cond is not None:
            eps = eps + cond.double().view(len(x), -1).mean(1).view(-1, *([1] * (x.ndim - 1)))
            expect(c["cond"] is not None and torch.equal(c["cond"], cond),
                   f"at t = {t} the model did not get the condition: pass cond to the model")
        expect_close(s["eps"], eps, f"the eps given to p_sample at t = {t} (the model's output "
                                    f"for the current x)", atol=1e-5, rtol=1e-4)
        expect(torch.allclose(s["x_t"].double(), x, atol=1e-6),
               f"at t = {t} p_sample did not get the current x")
        expect(s["clip"] == clip, f"sample(clip={clip}) passed clip={s['clip']} to p_sample")
        noise = s["noise"].double()
        expect(tuple(noise.shape) == tuple(shape), f"the noise at t = {t} has shape "
                                                   f"{tuple(noise.shape)}, expected {tuple(shape)}")
        if i > 0:
            expect(not torch.equal(s["noise"], steps[i - 1]["noise"]),
                   "the same noise was used at two steps: draw fresh noise every step",
                   "noise reused across steps")
        expect(t == 0 or not _same_rows(s["noise"]), f"at t = {t} two images got the same noise: draw it "
               f"for the whole batch, torch.randn_like(x)", "noise shared across the batch")
        x = ref_step(sched, eps, x, t, noise, clip=clip)
    noises = torch.stack([s["noise"].double() for s in steps[:-1]]) if len(steps) > 1 else None
    if noises is not None:
        m = noises.numel()
        expect(abs(noises.mean().item()) < 5 / math.sqrt(m)
               and abs(noises.std().item() - 1) < 5 / math.sqrt(2 * m),
               f"the noise given to p_sample has mean {noises.mean().item():.3g} and std "
               f"{noises.std().item():.3g}: torch.randn_like(x)")
    expect_close(got["out"], x, "sample() result (the chain recomputed from x_T and its noise)",
                 atol=1e-5, rtol=1e-4)
    if not callback:
        return
    seen = got["callback"]
    expect([c["t"] for c in seen] == model_t,
           f"callback(t, x) was called at t = {[c['t'] for c in seen][:8]}; call it once after "
           f"each step, with t = {model_t[:8]}{'...' if len(model_t) > 8 else ''}",
           "callback not called after each step")
    for c, s in zip(seen, steps):
        expect(c["x"] is not None and torch.allclose(c["x"].double(), s["out"].double(), atol=1e-6),
               f"callback(t = {c['t']}, x) did not get x after the step (p_sample's output)",
               "callback not given x after the step")


@lab.check("diffusion.sample", points=1)
def sample_visits_every_step(student, g):
    """T = 8, images (16, 1, 6, 5): the model is called at t = 7, 6, ..., 0 with the current x,
    its output goes to p_sample with fresh N(0, I) noise (for every image), the result is the
    last step's, and callback(t, x) sees x after each step."""
    run_sample(student, g, 8, (16, 1, 6, 5), None, True, callback=True)


@lab.check("diffusion.sample", points=1)
def sample_passes_condition_and_clip(student, g):
    """T = 5, one image (1, 2, 3, 4) with a condition (1, 3, 2) and clip=False: the condition
    reaches the model at every step and clip reaches p_sample."""
    run_sample(student, g, 5, (1, 2, 3, 4), torch.randn(1, 3, 2, generator=g), False)


# ------------------------------------- diffusion.time_embedding, .resblock, .cross_attention

from . import diffusion_unet  # noqa: E402  (the UNet's checks, in a file of their own)

diffusion_unet.register(lab)   # here, so that the checks keep the order of the tasks


# ---------------------------------------------------------------------- diffusion.guidance

@lab.check("diffusion.guidance", points=1)
def guidance_formula(student, g):
    """guided_eps = (1 + w) eps(x, t, y) - w eps(x, t, null) for w in {0, 1.5, 4}, with the
    grader's model eps = a x + E[y] + b t / 1000 (both passes at the images' t); the
    unconditional pass gives every image the null label."""
    K, null = 5, 5
    table = torch.randn(K + 1, generator=g)
    a = torch.tensor(0.6)
    for w in (0.0, 1.5, 4.0):
        x = torch.randn(4, 1, 3, 2, generator=g)
        t = torch.randint(0, 1000, (4,), generator=g)
        y = torch.randint(0, K, (4,), generator=g)
        got = student.run(probes.guided, a=a, table=table, x=x, t=t, y=y, null_label=null, w=w,
                          b=0.8)
        view = (-1, 1, 1, 1)
        tt = 0.8 * t.double().view(view) / 1000
        ec = a.double() * x.double() + table.double()[y].view(view) + tt
        eu = a.double() * x.double() + table.double()[null] + tt
        expect(torch.equal(got["y_after"], y), "guided_eps changed y in place: make the null "
               "labels a new tensor (torch.full_like(y, null_label))", "y modified in place")
        labels = got["labels"]
        nulls = sum(int((l == null).sum()) for l in labels if type(l) is torch.Tensor)
        expect(nulls >= len(y) or w == 0,
               f"guided_eps (w = {w:g}) never called the model with the null label ({null}) for "
               f"every image: the unconditional prediction uses the null label",
               "no unconditional pass with the null label")
        expect_close(got["out"], (1 + w) * ec - w * eu, f"guided_eps(w = {w:g})", diagnoses={
            "w eps_c + (1 - w) eps_u (the handout's convention: (1 + w) eps_c - w eps_u, so w = 0 "
            "is the conditional model)": w * ec + (1 - w) * eu,
            "the conditional and unconditional predictions swapped": (1 + w) * eu - w * ec,
            "(1 + w) eps_c + w eps_u (the unconditional term is subtracted)": (1 + w) * ec + w * eu})


@lab.check("diffusion.guidance", points=1)
def label_dropout(student, g):
    """drop_labels with p = 0 keeps every label, p = 1 replaces all by null_label, p = 0.3 drops
    about 30% of 20000 labels (within 5 standard errors), independently, with y left unchanged."""
    null = 6   # not MNIST's 10 classes: the null label is the argument, never a constant
    y = torch.randint(0, 6, (20000,), generator=g)
    for p in (0.0, 1.0, 0.3):
        got = student.run(probes.drop_labels, y=y, p=p, null_label=null, seed=_seed(g))
        expect(torch.equal(got["y_after"], got["y_before"]),
               "drop_labels changed y in place: return a new tensor", "y modified in place")
        out = expect_shape(got["out"], y.shape, f"drop_labels(p = {p:g})")
        expect(out.dtype == y.dtype, f"drop_labels(p = {p:g}) returned {out.dtype} labels from "
               f"{y.dtype} ones: keep y's dtype (the model's nn.Embedding needs integer labels; "
               f"torch.full_like(y, null_label))", "labels no longer integers")
        kept = out == y
        dropped = out == null
        expect(bool((kept | dropped).all()), f"drop_labels(p = {p:g}): labels other than y or "
                                             f"null_label appeared")
        frac = dropped.double().mean().item()
        if p in (0.0, 1.0):
            keep = frac == 1 - p
            expect(frac == p, f"drop_labels(p = {p:g}) dropped {frac:.1%} of the labels, expected "
                              f"{p:.0%}" + ("; p is the probability of dropping a label, not of "
                                           "keeping it" if keep else ""),
                   "p taken as the keep probability" if keep else None)
        else:
            se = math.sqrt(p * (1 - p) / len(y))
            expect(abs(frac - (1 - p)) > 5 * se, f"drop_labels(p = {p:g}) dropped {frac:.1%}: p is "
                   f"the probability of dropping a label, not of keeping it",
                   "p taken as the keep probability")
            expect(abs(frac - p) <= 5 * se, f"drop_labels(p = {p:g}) dropped {frac:.1%} of the "
                                            f"labels, expected about {p:.0%}")
            expect(not torch.equal(got["out"], got["again"]), "drop_labels dropped the same labels "
                   "on two calls: draw a fresh mask every call")


# ------------------------------------------------------------------------ diffusion.latent

from . import diffusion_latent, diffusion_slots  # noqa: E402  (checks in files of their own)

diffusion_latent.register(lab)
diffusion_slots.register(lab)
latent_mse = diffusion_latent.latent_mse  # the calibration's scorer (benchmarks/calibrate.py)
