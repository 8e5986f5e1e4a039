"""The checks of diffusion.latent (latent diffusion on the VAE lab's codes), registered on the
diffusion lab by autograder/diffusion.py. The file name starts with "_" so that the kit does not
take it for a lab of its own. References: a linear stand-in autoencoder whose maps the grader
knows, and a LatentDenoiser written here from F.linear / F.layer_norm, in float64.
"""
import math

import torch
import torch.nn.functional as F

from vislab.grading import expect, expect_close, expect_gradients, expect_shape

from . import diffusion_latent_probes as probes


def _seed(g) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=g))


def ref_embedding(t, dim):
    half = dim // 2
    f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    ang = t.double()[:, None] * f[None]
    return F.pad(torch.cat([ang.sin(), ang.cos()], -1), (0, dim % 2))


def denoiser_shapes(dim, hidden, blocks, num_classes):
    s = {"time_mlp.0.weight": (hidden, hidden), "time_mlp.0.bias": (hidden,),
         "time_mlp.2.weight": (hidden, hidden), "time_mlp.2.bias": (hidden,),
         "label_embed.weight": (num_classes + 1, hidden),
         "proj_in.weight": (hidden, dim), "proj_in.bias": (hidden,)}
    for i in range(blocks):
        p = f"blocks.{i}."
        s.update({p + "norm.weight": (hidden,), p + "norm.bias": (hidden,)})
        for name in ("fc1", "time", "fc2"):
            s.update({p + f"{name}.weight": (hidden, hidden), p + f"{name}.bias": (hidden,)})
    s.update({"norm_out.weight": (hidden,), "norm_out.bias": (hidden,),
              "proj_out.weight": (dim, hidden), "proj_out.bias": (dim,)})
    return s


def random_denoiser(g, dim, hidden, blocks, num_classes):
    state = {}
    for name, shape in denoiser_shapes(dim, hidden, blocks, num_classes).items():
        if name.endswith("norm.weight") or name == "norm_out.weight":
            state[name] = 1 + 0.3 * torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            state[name] = 0.2 * torch.randn(shape, generator=g)
        elif name == "label_embed.weight":
            state[name] = torch.randn(shape, generator=g)
        else:
            state[name] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
    return state


def ref_denoiser(S, z, t, y, blocks, hidden, silu_temb=True, time_inside=True, label=True):
    lin = lambda v, n: F.linear(v, S[n + ".weight"], S[n + ".bias"])  # noqa: E731
    temb = lin(F.silu(lin(ref_embedding(t, hidden), "time_mlp.0")), "time_mlp.2")
    h = lin(z.double(), "proj_in") + (S["label_embed.weight"][y] if label else 0)
    for i in range(blocks):
        p = f"blocks.{i}."
        n = F.layer_norm(h, (hidden,), S[p + "norm.weight"], S[p + "norm.bias"])
        tt = lin(F.silu(temb) if silu_temb else temb, p + "time")
        inner = lin(n, p + "fc1") + tt if time_inside else lin(n, p + "fc1")
        h = h + lin(F.silu(inner), p + "fc2") + (0 if time_inside else tt)
    return lin(F.silu(F.layer_norm(h, (hidden,), S["norm_out.weight"], S["norm_out.bias"])), "proj_out")


def register(lab):
    @lab.check("diffusion.latent", points=1)
    def latent_codec(student, g):
        """latent_stats: the per-dimension mean and std (unbiased) of the codes of 300 images,
        encoded in batches of 128 in eval mode; to_latent = (encode(x) - mean) / std; from_latent
        = sigmoid(decode(z * std + mean)); with a linear stand-in autoencoder, D = 5."""
        shape, D = (1, 4, 3), 5
        P = math.prod(shape)
        W = torch.randn(D, P, generator=g) / math.sqrt(P)
        b = torch.randn(D, generator=g)
        V = torch.randn(P, D, generator=g)
        c = 0.3 * torch.randn(P, generator=g)
        images = torch.rand(300, *shape, generator=g)
        got = student.run(probes.codec, W=W, b=b, V=V, c=c, shape=list(shape), images=images,
                          batch_size=128)
        codes = images.double().flatten(1) @ W.double().T + b.double()
        mean, std = codes.mean(0), codes.std(0)
        expect(got["batches"] and max(got["batches"]) <= 128,
               f"latent_stats encoded batches of {sorted(set(got['batches']))} images: encode in "
               f"batches of at most batch_size = 128")
        expect(sum(got["batches"]) == 300, f"latent_stats encoded {sum(got['batches'])} images, "
                                           f"expected every one of the 300 once")
        expect(not any(got["train_mode"]), "latent_stats encoded with the autoencoder in train "
                                           "mode: call vae.eval() first")
        expect_close(got["mean"], mean, "latent_stats: mean")
        expect_close(got["std"], std, "latent_stats: std (z.std(0), the unbiased estimate)",
                     diagnoses={"the variance instead of the std": codes.var(0),
                                "the biased std (torch's default is the unbiased one)":
                                    codes.std(0, correction=0)})
        x = torch.rand(4, *shape, generator=g)
        z = torch.randn(4, D, generator=g)
        m, s = mean.float(), std.float()
        got = student.run(probes.codec_maps, W=W, b=b, V=V, c=c, shape=list(shape), x=x, z=z,
                          mean=m, std=s)
        enc = x.double().flatten(1) @ W.double().T + b.double()
        expect_close(got["latent"], (enc - mean) / std, "to_latent", diagnoses={
            "the code not standardised (subtract mean, divide by std)": enc,
            "multiplied by std instead of divided": (enc - mean) * std})
        dec = lambda v: (v @ V.double().T + c.double()).view(4, *shape)  # noqa: E731
        want = torch.sigmoid(dec(z.double() * std + mean))
        expect_close(got["pixels"], want, "from_latent", diagnoses={
            "logits returned (apply the sigmoid: from_latent gives pixel probabilities)":
                dec(z.double() * std + mean),
            "the standardisation not undone before decoding": torch.sigmoid(dec(z.double())),
            "z / std + mean (multiply by std to undo the division)":
                torch.sigmoid(dec(z.double() / std + mean))})

    @lab.check("diffusion.latent", points=1)
    def latent_denoiser(student, g):
        """LatentDenoiser(dim 6, hidden 8, 2 blocks, 4 classes) against the float64 reference
        with the grader's weights: output and gradients; another t and another label change
        the output as the reference's do."""
        dim, hidden, blocks, K = 6, 8, 2, 4
        state = random_denoiser(g, dim, hidden, blocks, K)
        z = torch.randn(5, dim, generator=g)
        t = torch.randint(0, 1000, (5,), generator=g)
        y = torch.tensor([0, 1, 2, 3, K])
        t_other = (t + 137) % 1000
        y_other = (y + 1) % (K + 1)
        grad_out = torch.randn(5, dim, generator=g)
        got = student.run(probes.denoiser, dim=dim, hidden=hidden, blocks=blocks, num_classes=K,
                          state=state, z=z, t=t, y=y, t_other=t_other, y_other=y_other,
                          grad_out=grad_out)
        S = {k: v.double().requires_grad_() for k, v in state.items()}
        zd = z.double().requires_grad_()
        want = ref_denoiser(S, zd, t, y, blocks, hidden)
        (want * grad_out.double()).sum().backward()
        Sd = {k: v.detach() for k, v in S.items()}
        expect_close(got["out"], want.detach(), "LatentDenoiser(z, t, y)", diagnoses={
            "the time embedding projected without SiLU (time(SiLU(temb)))":
                ref_denoiser(Sd, z, t, y, blocks, hidden, silu_temb=False),
            "the time added outside the block's SiLU (add it to fc1's output)":
                ref_denoiser(Sd, z, t, y, blocks, hidden, time_inside=False),
            "the label not used": ref_denoiser(Sd, z, t, y, blocks, hidden, label=False)})
        expect_close(got["other_t"], ref_denoiser(Sd, z, t_other, y, blocks, hidden),
                     "LatentDenoiser with another t")
        expect_close(got["other_y"], ref_denoiser(Sd, z, t, y_other, blocks, hidden),
                     "LatentDenoiser with another label")
        expect(got.get("grads") is not None, "LatentDenoiser: the output carries no gradient")
        expect_gradients(got["grads"], {k: v.grad.float() for k, v in S.items()}, "LatentDenoiser",
                         atol=1e-4, rtol=1e-3)
        expect_close(got["z_grad"], zd.grad, "LatentDenoiser: gradient wrt z", atol=1e-4, rtol=1e-3)

    @lab.check("diffusion.latent", points=1, timeout=60)
    def latent_denoiser_trains(student, g):
        """Your LatentDenoiser, trained for seconds on codes of 10 classes (a mixture the grader
        draws, D = 8), predicts the noise of held-out codes: the grader's epsilon MSE with its
        own t, noise and labels is below the mark."""
        mse = latent_mse(student, _seed(g) % 1000)
        expect(mse <= LATENT_THRESHOLD,
               f"test epsilon MSE {mse:.3f} of the trained LatentDenoiser is above "
               f"{LATENT_THRESHOLD} (an untrained model scores about 1): are t and y used?")


# The training recipe of latent_denoiser_trains and its pass mark, over 20 seeds
# (benchmarks/calibrate_diffusion_latent.py; numbers in docs/labs/diffusion.md).
LATENT = dict(dim=8, hidden=32, blocks=2, num_classes=10, steps=150, batch_size=64, lr=3e-3,
              p_uncond=0.1)
LATENT_THRESHOLD = 0.5


def mixture(seed: int, n: int):
    """Codes of 10 classes: class k has its own mean and a low-rank covariance, standardised."""
    g = torch.Generator().manual_seed(1234)          # the mixture itself is fixed
    means = 1.5 * torch.randn(10, 8, generator=g)
    mix = 0.5 * torch.randn(10, 8, 2, generator=g)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    z = means[y] + (mix[y] @ torch.randn(n, 2, 1, generator=g)).squeeze(-1) \
        + 0.1 * torch.randn(n, 8, generator=g)
    return z, y


def latent_mse(student, seed: int) -> float:
    from .diffusion import ref_schedule

    abar = ref_schedule(1000)["alphas_cumprod"]
    z_train, y_train = mixture(seed, 4000)
    z_test, y_test = mixture(10_000 + seed, 1000)
    mean, std = z_train.mean(0), z_train.std(0)
    z_train, z_test = (z_train - mean) / std, (z_test - mean) / std
    c = LATENT
    state = student.run(probes.train_denoiser, abar=abar, z_train=z_train, y_train=y_train,
                        seed=seed, **c)
    want = denoiser_shapes(c["dim"], c["hidden"], c["blocks"], c["num_classes"])
    expect(type(state) is dict and {k: tuple(v.shape) for k, v in state.items()} == want,
           "the trained LatentDenoiser's state dict does not have the handout's names and shapes")
    S = {k: v.double() for k, v in state.items()}
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, 1000, (len(z_test),), generator=g)
    noise = torch.randn(z_test.shape, generator=g, dtype=torch.float64)
    a = abar[t][:, None]
    with torch.no_grad():
        out = ref_denoiser(S, a.sqrt() * z_test.double() + (1 - a).sqrt() * noise, t, y_test,
                           c["blocks"], c["hidden"])
    mse = ((out - noise) ** 2).mean().item()
    expect(math.isfinite(mse), "the trained LatentDenoiser's test loss is not finite")
    return mse
