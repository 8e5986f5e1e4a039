"""The checks of diffusion.slot_decoder, registered on the diffusion lab by
autograder/diffusion.py (the "_" keeps the kit from taking this file for a lab). References: a
linear stand-in slot model and autoencoder whose slots, latents and gradients the grader
computes in float64; a tiny slot model trained in the probe with the student's loss and
evaluated here, in float64 with the grader's own forward pass, on held-out scenes; the
segmentation from the attention written with torch's reshape and nearest interpolation.
"""
import math

import torch
import torch.nn.functional as F

from vislab.grading import expect, expect_close, expect_shape

from . import diffusion_slots_probes as probes


def ref_masks(attention, h, w, size, transpose=False):
    B, K, N = attention.shape
    maps = attention.double().reshape(B, K, h, w) if not transpose else \
        attention.double().reshape(B, K, w, h).transpose(-2, -1)
    return F.interpolate(maps, size=size, mode="nearest").argmax(1)


# ------------------------------------------------------------------ the training check

# The tiny slot model of the training check (autograder/diffusion_slots_probes.TinySlotModel):
# scenes of 3 x 4 x 4 pixels, two coloured 2 x 2 objects in two of the four quadrants; K = 2
# slots of D = 8; latents 2 x 2 x 2 of a fixed linear autoencoder of raw std 5.5-6.5 (seeds 0-2).
SIZES = {"pixels": 48, "K": 2, "D": 8, "latent_dim": 8, "width": 64, "time_dim": 16}
LATENT = (2, 2, 2)
STEPS, BATCH, LR = 300, 64, 1e-2
# Thresholds, set by benchmarks/calibrate_diffusion_slots.py over 20 seeds (docs/labs/diffusion.md):
MAX_MSE = 0.15         # the held-out epsilon-MSE with each scene's own slots, at most
MIN_GAP = 0.35         # the MSE with another scene's slots minus that, at least


def tiny_scenes(n, g):
    """(n, 3, 4, 4) in [0, 1]: black, two objects of random colours in two distinct quadrants."""
    images = torch.zeros(n, 3, 4, 4)
    quadrant = torch.rand(n, 4, generator=g).argsort(1)[:, :2]       # (n, 2) distinct
    colour = torch.rand(n, 2, 3, generator=g) * 0.8 + 0.2           # (n, 2, 3)
    for k in range(2):
        for i in range(n):
            q = int(quadrant[i, k])
            r, c = 2 * (q // 2), 2 * (q % 2)
            images[i, :, r:r + 2, c:c + 2] = colour[i, k].view(3, 1, 1)
    return images


def tiny_setup(g):
    """The grader's initial weights (the slot encoder's weight zero: the slots start empty, so
    only a slot path that learns can carry the scenes), and the autoencoder's matrix E."""
    d, w, p = SIZES["latent_dim"], SIZES["width"], SIZES["pixels"]
    KD = SIZES["K"] * SIZES["D"]
    def lin(o, i):
        return torch.randn(o, i, generator=g) / i ** 0.5, torch.zeros(o)
    state = {"encoder.weight": torch.zeros(KD, p), "encoder.bias": torch.randn(KD, generator=g) * 0.5}
    for name, (o, i) in {"inp": (w, d), "cond": (w, SIZES["D"]), "time": (w, SIZES["time_dim"]),
                         "hidden": (w, w), "out": (d, w)}.items():
        state[f"unet.{name}.weight"], state[f"unet.{name}.bias"] = lin(o, i)
    E = torch.randn(p, d, generator=g) * 4 / (p * 0.1) ** 0.5
    return state, E


def ref_eps(state, z_t, t, slots):
    """The tiny denoiser's forward pass, in float64 from the state dict."""
    W = {k: v.double() for k, v in state.items()}
    half = SIZES["time_dim"] // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float64) / half)
    args = t.double()[:, None] * freqs[None]
    temb = torch.cat([torch.sin(args), torch.cos(args)], -1)                    # (B, time_dim)
    lin = lambda x, n: x @ W[f"unet.{n}.weight"].T + W[f"unet.{n}.bias"]  # noqa: E731
    h = lin(z_t.flatten(1), "inp") + lin(slots, "cond").mean(1) + lin(temb, "time")
    return lin(F.silu(lin(F.silu(h), "hidden")), "out")                          # (B, d)


def ref_slots(state, images):
    W, b = state["encoder.weight"].double(), state["encoder.bias"].double()
    return (images.double().flatten(1) @ W.T + b).view(len(images), SIZES["K"], SIZES["D"])


def held_out_mse(state, E, scale, g, n=1000):
    """epsilon-MSE on n held-out scenes at the grader's t and noise: with each scene's own
    slots, and with the slots of another scene (rolled by one)."""
    images = tiny_scenes(n, g)
    z0 = scale * (images.double().flatten(1) @ E.double())                       # (n, d)
    t = torch.randint(0, 1000, (n,), generator=g)
    noise = torch.randn(z0.shape, generator=g, dtype=torch.float64)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t][:, None]
    z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
    slots = ref_slots(state, images)
    own = ((ref_eps(state, z_t, t, slots) - noise) ** 2).mean().item()
    other = ((ref_eps(state, z_t, t, slots.roll(1, 0)) - noise) ** 2).mean().item()
    return own, other


def run_training(student, g, seed):
    """The probe's training run on the grader's scenes; returns (trained state, E, scale)."""
    state, E = tiny_setup(g)
    train_images = tiny_scenes(512, g)
    scale = float(1 / (train_images.flatten(1) @ E).std())
    got = student.run(probes.train, state=state, sizes=SIZES, E=E, latent_shape=list(LATENT),
                      scale=scale, images=train_images, steps=STEPS, batch_size=BATCH, lr=LR,
                      seed=seed)
    return got, E, scale


def slot_scores(student, g):
    """The training check's two numbers (own-slot and other-slot held-out eps-MSE)."""
    got, E, scale = run_training(student, g, seed=int(torch.randint(0, 2 ** 31, (1,), generator=g)))
    state, _ = tiny_setup(torch.Generator().manual_seed(0))
    expect(isinstance(got, dict) and set(got) == set(state) and all(
        isinstance(got[k], torch.Tensor) and got[k].shape == v.shape for k, v in state.items()),
           "the training probe did not return the tiny model's weights")
    return held_out_mse(got, E, scale, g)


def register(lab):
    @lab.check("diffusion.slot_decoder", points=1)
    def slot_loss_end_to_end(student, g):
        """slot_diffusion_loss with a stand-in slot model and a stand-in autoencoder:
        diffusion_loss gets the model's UNet, z0 = scale * autoencoder.encode(images) and the
        slots of the images as the condition; the loss's gradient reaches the slot encoder's
        parameters (end to end) and not the autoencoder's, as the grader computes."""
        B, C, H, W, K, D = 3, 3, 4, 5, 2, 3
        c, h, w = 2, 3, 2                                    # latents (B, 2, 3, 2), not 3 x 4 x 5
        A = torch.randn(C * H * W, K * D, generator=g) / (C * H * W) ** 0.5
        E = torch.randn(C * H * W, c * h * w, generator=g) * 3 / (C * H * W) ** 0.5
        scale = 0.37
        images = torch.rand(B, C, H, W, generator=g)
        t = torch.randint(0, 1000, (B,), generator=g)
        noise = torch.randn(B, c, h, w, generator=g)
        got = student.run(probes.loss, A=A, K=K, D=D, E=E, latent_shape=[c, h, w], scale=scale,
                          images=images, t=t, noise=noise)
        expect(len(got["calls"]) == 1, f"slot_diffusion_loss called diffusion_loss "
                                       f"{len(got['calls'])} times, expected once")
        call = got["calls"][0]
        expect(call["model"] == "unet", "slot_diffusion_loss must train model.unet (pass it to "
                                        "diffusion_loss), not the whole model")
        expect(tuple(call["x0"].shape) != (B, C, H, W),
               f"diffusion_loss got x0 of the images' shape {(B, C, H, W)}: the decoder denoises "
               f"the autoencoder's latents, z0 = scale * autoencoder.encode(images) "
               f"{(B, c, h, w)}, not pixels", "pixels instead of latents")
        latents = (images.double().flatten(1) @ E.double()).view(B, c, h, w)
        x0 = scale * latents
        expect_close(call["x0"], x0, "the x0 given to diffusion_loss (scale * the latents)", diagnoses={
            "the latents without the scale factor (z0 = scale * autoencoder.encode(images))": latents,
            "the latents divided by the scale (multiply: z0 = scale * encode(images))": latents / scale,
            "the images encoded in [-1, 1] (the autoencoder takes them in [0, 1])":
                scale * ((2 * images.double() - 1).flatten(1) @ E.double()).view(B, c, h, w)})
        Ad = A.double().requires_grad_()
        slots = (images.double().flatten(1) @ Ad).view(B, K, D)
        expect(call["cond"] is not None, "slot_diffusion_loss gave diffusion_loss no condition: "
                                         "the slots are the UNet's condition")
        expect_close(call["cond"], slots.detach(), "the condition given to diffusion_loss (the "
                     "slots of the clean images)", diagnoses={
                         "the slots of 2 images - 1 (encode the images in [0, 1])":
                             ((2 * images.double() - 1).flatten(1) @ A.double()).view(B, K, D)})
        abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t]
        abar = abar.view(-1, 1, 1, 1)
        a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise.double()
        want = ((a * x_t + slots.flatten(1).mean(1).view(-1, 1, 1, 1) - noise.double()) ** 2).mean()
        want.backward()
        expect_close(got["loss"], want.detach(), "slot_diffusion_loss")
        expect(got.get("A_grad") is not None and bool(got["A_grad"].abs().sum() > 0),
               "no gradient reached the slot encoder: keep the slots in the graph (no .detach(), "
               "no torch.no_grad()); the encoder learns through this loss", "the slots detached")
        expect_close(got["A_grad"], Ad.grad, "gradient of the loss wrt the slot encoder's weights")
        expect_close(got["a_grad"], a.grad, "gradient of the loss wrt the UNet's weights")
        E_grad = got.get("E_grad")
        expect(E_grad is None or not bool(E_grad.abs().sum() > 0),
               "a gradient flowed into the autoencoder: it is pretrained and frozen; encode under "
               "torch.no_grad() (or detach z0)", "the autoencoder not frozen")

    @lab.check("diffusion.slot_decoder", points=1)
    def trains_slots_and_decoder(student, g):
        """A short training run (300 Adam steps, batch 64) of a tiny slot model with your
        slot_diffusion_loss on the grader's scenes (the reference diffusion_loss put in); the
        grader evaluates the trained weights on 1,000 held-out scenes with its own t and noise:
        the epsilon-MSE with each scene's own slots must be low, and clearly lower than with
        another scene's slots (the slot path learned)."""
        own, other = slot_scores(student, g)
        expect(math.isfinite(own) and math.isfinite(other), "the trained model gives NaN or inf")
        wrong_target = (f"the loss trains the wrong target; z0 = scale * autoencoder.encode(images) "
                        f"with the slots of the clean images as the condition, through diffusion_loss")
        expect(own <= 3 * MAX_MSE,
               f"after training, the held-out eps-MSE is {own:.3f} (at most {MAX_MSE:g} expected; "
               f"a denoiser that ignores the slots reaches about 0.2): {wrong_target}",
               "the denoiser does not learn")
        expect(other - own >= MIN_GAP,
               f"after training, the denoiser does no better with a scene's own slots (eps-MSE "
               f"{own:.3f}) than with another scene's ({other:.3f}; a gap of {MIN_GAP:g} expected): "
               f"the slot path did not learn; keep the slots in the graph and pass them to "
               f"diffusion_loss as the condition", "the slot path does not learn")
        expect(own <= MAX_MSE,
               f"after training, the held-out eps-MSE is {own:.3f} (at most {MAX_MSE:g} expected): "
               f"{wrong_target}", "the denoiser does not learn")

    @lab.check("diffusion.slot_decoder", points=1)
    def masks_from_attention(student, g):
        """slot_masks on attention (2, 3, N) of a 3 x 5 feature map (row-major), upsampled to
        6 x 10, and of a 4 x 4 map kept at 4 x 4: the argmax over slots of each position."""
        for (h, w), size in (((3, 5), (6, 10)), ((4, 4), (4, 4))):
            logits = torch.randn(2, 3, h * w, generator=g)
            attention = logits.softmax(1)
            got = student.run(probes.masks, attention=attention, height=h, width=w, size=list(size))
            got = expect_shape(got, (2, *size), f"slot_masks for a {h} x {w} map resized to {size}")
            expect(not got.is_floating_point(), f"slot_masks must return integer ids, got {got.dtype}")
            want = ref_masks(attention, h, w, size)
            wrong = {"the positions read column-major (N is row-major: index = row * width + column)":
                     ref_masks(attention, h, w, size, transpose=True)} if h != w else {}
            expect_close(got, want, f"slot_masks ({h} x {w} -> {size})", atol=0, rtol=0, diagnoses={
                **wrong, "the argmax over positions or channels mixed up": want * 0})
