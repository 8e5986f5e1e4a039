"""Checks for the VAE lab. Run them with `vislab grade vae [--impl labs|solutions|PATH]`.

References are independent of the student's code and of the lab's solution: torch.distributions
(Normal, Bernoulli, kl_divergence), closed forms, and a reference VAE written here from
functional torch ops (F.conv2d, F.conv_transpose2d, F.linear) that loads the same state dict,
all in float64. Inputs and weights come from the generator `g` the grader seeds.
"""
import math

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from vislab.grading import Lab, expect, expect_close, expect_gradients, expect_shape

from . import vae_probes as probes

lab = Lab("vae", {
    "vae.reparameterize": "z = mu + exp(logvar / 2) * eps, with gradients",
    "vae.kl": "closed-form KL(N(mu, sigma^2) || N(0, 1)) per latent",
    "vae.elbo": "log-likelihood (Bernoulli / Gaussian), ELBO, bits per dim",
    "vae.model": "encoder -> (mu, logvar), reparameterise, decoder -> logits",
    "vae.beta": "beta-VAE objective and capacity annealing",
    "vae.traverse": "latent traversals, the other latents fixed",
    "vae.conditional": "conditional VAE: the label in encoder and decoder",
})

# Small configs: fast, with 3 channels, two convs (and one conv), so that mixed-up axes show.
CONFIG = dict(image_size=8, in_channels=3, channels=[4, 6], hidden=10, latent_dim=5)
ONE_CONV = dict(image_size=6, in_channels=2, channels=[3], hidden=7, latent_dim=3)


def _n(x) -> str:
    return f"{x:.4g}"


# ------------------------------------------------------------------- the reference VAE

def state_shapes(config: dict, num_classes: int = 0, condition: str | None = None,
                 embed_dim: int = 0) -> dict[str, tuple]:
    """The lab's parameter names and shapes, written out from the handout."""
    c = config
    chans, n = list(c["channels"]), len(c["channels"])
    s = c["image_size"] // 2 ** n
    shapes, width = {}, c["in_channels"]
    for i, out in enumerate(chans):
        shapes[f"encoder.{2 * i}.weight"] = (out, width, 4, 4)
        shapes[f"encoder.{2 * i}.bias"] = (out,)
        width = out
    shapes[f"encoder.{2 * n + 1}.weight"] = (c["hidden"], width * s * s)
    shapes[f"encoder.{2 * n + 1}.bias"] = (c["hidden"],)
    extra = embed_dim if condition == "concat" else 0
    D = c["latent_dim"]
    shapes.update({"fc_mu.weight": (D, c["hidden"] + extra), "fc_mu.bias": (D,),
                   "fc_logvar.weight": (D, c["hidden"] + extra), "fc_logvar.bias": (D,),
                   "decoder_input.weight": (c["hidden"], D + extra),
                   "decoder_input.bias": (c["hidden"],),
                   "decoder_fc.1.weight": (chans[-1] * s * s, c["hidden"]),
                   "decoder_fc.1.bias": (chans[-1] * s * s,)})
    widths = chans[::-1] + [c["in_channels"]]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        shapes[f"decoder_conv.{2 * i}.weight"] = (a, b, 4, 4)
        shapes[f"decoder_conv.{2 * i}.bias"] = (b,)
    if condition is not None:
        width = c["hidden"] if condition == "multiply" else embed_dim
        shapes["label_enc.weight"] = (num_classes, width)
        shapes["label_dec.weight"] = (num_classes, width)
    return shapes


def random_state(g, config, **kwargs) -> dict[str, torch.Tensor]:
    """Random weights (float32) of about unit gain, biases nonzero, so no term hides as zero."""
    state = {}
    for name, shape in state_shapes(config, **kwargs).items():
        if name.startswith("label_"):
            state[name] = 1 + 0.5 * torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            state[name] = 0.2 * torch.randn(shape, generator=g)
        else:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            if name.startswith("decoder_conv"):
                fan_in = shape[0] * 4  # each output pixel sees 2x2 taps of every input channel
            state[name] = torch.randn(shape, generator=g) * 1.4 / math.sqrt(fan_in)
    return state


def ref_posterior(state, config, x, y=None, condition=None, concat_first=False,
                  label=True):
    """mu, logvar of the reference (conditional) VAE in float64."""
    S = {k: v.double() if not isinstance(v, torch.Tensor) or not v.requires_grad else v
         for k, v in state.items()}
    n = len(config["channels"])
    h = x.double()
    for i in range(n):
        h = F.relu(F.conv2d(h, S[f"encoder.{2 * i}.weight"], S[f"encoder.{2 * i}.bias"],
                            stride=2, padding=1))
    h = F.relu(F.linear(h.flatten(1), S[f"encoder.{2 * n + 1}.weight"],
                        S[f"encoder.{2 * n + 1}.bias"]))
    if condition is not None:
        e = S["label_enc.weight"][y] if label else None
        if condition == "multiply":
            h = h * e if label else h
        else:
            e = e if label else torch.zeros(len(h), S["label_enc.weight"].shape[1],
                                            dtype=h.dtype)
            h = torch.cat([e, h] if concat_first else [h, e], dim=-1)
    return (F.linear(h, S["fc_mu.weight"], S["fc_mu.bias"]),
            F.linear(h, S["fc_logvar.weight"], S["fc_logvar.bias"]))


def ref_decode(state, config, z, y=None, condition=None, concat_first=False, label=True,
               sigmoid=False):
    S = {k: v.double() if not v.requires_grad else v for k, v in state.items()}
    n = len(config["channels"])
    s = config["image_size"] // 2 ** n
    z = z.double()
    if condition == "concat":
        e = S["label_dec.weight"][y] if label else torch.zeros(len(z), S["label_dec.weight"].shape[1],
                                                               dtype=z.dtype)
        z = torch.cat([e, z] if concat_first else [z, e], dim=-1)
    g = F.linear(z, S["decoder_input.weight"], S["decoder_input.bias"])
    if condition == "multiply" and label:
        g = g * S["label_dec.weight"][y]
    g = F.relu(F.linear(F.relu(g), S["decoder_fc.1.weight"], S["decoder_fc.1.bias"]))
    g = g.view(len(z), -1, s, s)
    for i in range(n):
        g = F.conv_transpose2d(g, S[f"decoder_conv.{2 * i}.weight"],
                               S[f"decoder_conv.{2 * i}.bias"], stride=2, padding=1)
        if i < n - 1:
            g = F.relu(g)
    return torch.sigmoid(g) if sigmoid else g


def image(g, config, B):
    return torch.rand(B, config["in_channels"], config["image_size"], config["image_size"],
                      generator=g)


# ---------------------------------------------------------------------- vae.reparameterize

def logvar_values(g, shape):
    """log-variances away from 0 (where exp(logvar) and exp(logvar / 2) agree)."""
    sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
    return sign * (0.6 + 1.2 * torch.rand(shape, generator=g))


@lab.check("vae.reparameterize", points=1)
def reparameterize_gradients(student, g):
    """dz/dmu = 1 and dz/dlogvar = eps * sigma / 2 = (z - mu) / 2, with eps recovered from z."""
    mu = torch.randn(4, 6, generator=g)
    logvar = logvar_values(g, (4, 6))
    grad_out = torch.randn(4, 6, generator=g)
    got = student.run(probes.reparameterize, mu=mu, logvar=logvar, grad_out=grad_out,
                      seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    z = expect_shape(got["z"], mu.shape, "reparameterize(mu, logvar)")
    expect(torch.isfinite(z).all().item(), "reparameterize: z contains NaN or inf")
    expect(got.get("mu_grad") is not None or got.get("logvar_grad") is not None,
           "z carries no gradient: write z = mu + sigma * eps with eps = torch.randn_like(mu); "
           "torch.no_grad or .detach() block the gradient to mu and logvar (the point of the "
           "trick)", mistake="no gradient to mu and logvar")
    expect(got.get("mu_grad") is not None, "no gradient reached mu (is it detached?)")
    expect(got.get("logvar_grad") is not None, "no gradient reached logvar (is it detached?)")
    expect(bool(got["mu_grad"].abs().sum() > 0) or not bool(grad_out.abs().sum() > 0),
           "the gradient of z wrt mu is zero: torch.normal(mu, sigma) samples without passing "
           "gradients to mu and sigma; write z = mu + sigma * eps with eps = torch.randn_like(mu)",
           mistake="torch.normal(mu, std) (no gradient to mu and std)")
    expect_close(got["mu_grad"], grad_out, "gradient of z wrt mu (dz/dmu = 1)")
    sigma = torch.exp(0.5 * logvar.double())
    eps = (z.double() - mu.double()) / sigma                 # the noise the student drew
    want = grad_out.double() * eps * sigma / 2
    expect_close(got["logvar_grad"], want, "gradient of z wrt logvar (dz/dlogvar = eps * sigma / 2,"
                 " eps recovered from z)", atol=1e-5, rtol=1e-3, diagnoses={
                     "std = exp(logvar) instead of exp(logvar / 2) (logvar is the log of the "
                     "variance)": grad_out.double() * (z.double() - mu.double()),
                 })


@lab.check("vae.reparameterize", points=1)
def reparameterize_statistics(student, g):
    """Over 20,000 draws each latent's sample mean is mu and its sample std exp(logvar / 2),
    within 5 standard errors (the run is seeded: the same draws every time)."""
    n, D = 20000, 6
    mu = 2 * torch.randn(D, generator=g)
    logvar = logvar_values(g, (D,))
    got = student.run(probes.reparameterize, mu=mu.expand(n, D).contiguous(),
                      logvar=logvar.expand(n, D).contiguous(),
                      seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    z = expect_shape(got["z"], (n, D), "reparameterize(mu, logvar)").double()
    expect(torch.isfinite(z).all().item(), "reparameterize: z contains NaN or inf")
    sigma = torch.exp(0.5 * logvar.double())
    mean, std = z.mean(0), z.std(0)
    # the standard error of a mean is sigma / sqrt(n), of a std about sigma / sqrt(2n)
    expect(bool(std.max() > 0), f"all {n} draws of z are identical: every image in the batch "
           f"got the same noise; eps must have mu's shape (B, D), e.g. torch.randn_like(mu)",
           mistake="one eps shared across the batch")
    mean_ok = ((mean - mu.double()).abs() <= 5 * sigma / math.sqrt(n)).all().item()
    std_ok = ((std - sigma).abs() <= 5 * sigma / math.sqrt(2 * n)).all().item()
    if not std_ok:
        wrong = torch.exp(logvar.double())
        if ((std - wrong).abs() <= 5 * wrong / math.sqrt(2 * n)).all().item():
            expect(False, f"sample std {std.numpy().round(3).tolist()} is exp(logvar) "
                          f"{wrong.numpy().round(3).tolist()}, not exp(logvar / 2) "
                          f"{sigma.numpy().round(3).tolist()}: logvar is the log of the "
                          f"variance, sigma = exp(logvar / 2)",
                   mistake="std = exp(logvar) instead of exp(logvar / 2)")
        uniform = sigma / math.sqrt(12)
        if ((std - uniform).abs() <= 5 * uniform / math.sqrt(2 * n)).all().item():
            expect(False, "the noise is uniform on [0, 1) (torch.rand_like): draw it from a "
                          "standard normal, torch.randn_like", mistake="uniform noise")
        expect(False, f"sample std over {n} draws {std.numpy().round(3).tolist()}, expected "
                      f"sigma = exp(logvar / 2) = {sigma.numpy().round(3).tolist()}")
    expect(mean_ok, f"sample mean over {n} draws {mean.numpy().round(3).tolist()}, expected "
                    f"mu = {mu.numpy().round(3).tolist()} (is eps zero-mean, torch.randn_like?)")


@lab.check("vae.reparameterize", points=1)
def reparameterize_fresh_noise(student, g):
    """The noise is drawn anew on each call, and differs between images and between latents."""
    B, D = 5, 4
    mu = torch.randn(1, D, generator=g).expand(B, D).contiguous()   # the same row B times
    logvar = torch.zeros(B, D)
    got = student.run(probes.reparameterize_twice, mu=mu, logvar=logvar,
                      seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    first = expect_shape(got["first"], (B, D), "reparameterize(mu, logvar)")
    second = expect_shape(got["second"], (B, D), "reparameterize(mu, logvar)")
    expect(not torch.allclose(first, mu), "z equals mu: no noise was added")
    expect(not torch.equal(first, second),
           "two calls with the same mu and logvar gave the same z: draw fresh noise on every "
           "call (no fixed seed, no noise stored in a global)", mistake="the same noise every call")
    eps = first - mu
    same_rows = all(torch.allclose(eps[0], eps[b]) for b in range(1, B))
    expect(not same_rows, "every image in the batch got the same noise: eps must have mu's "
                          "shape (B, D), e.g. torch.randn_like(mu), not torch.randn(D)",
           mistake="one eps shared across the batch")
    same_cols = all(torch.allclose(eps[:, 0], eps[:, d]) for d in range(1, D))
    expect(not same_cols, "every latent got the same noise: eps must have mu's shape (B, D), "
                          "not (B, 1)", mistake="one eps shared across the latents")


# ------------------------------------------------------------------------------------ vae.kl

def kl_inputs(g, B=5, D=4):
    mu = 1.5 * torch.randn(B, D, generator=g)
    logvar = 2.5 * torch.rand(B, D, generator=g) - 1.5
    mu[0], logvar[0] = 0.0, 0.0     # known value: KL = 0
    mu[1], logvar[1] = 2.0, 0.0     # known value: KL = mu^2 / 2 = 2 per latent
    return mu, logvar


@lab.check("vae.kl", points=1)
def kl_matches_torch_distributions(student, g):
    """Equals torch.distributions.kl_divergence(Normal(mu, sigma), Normal(0, 1)) (float64),
    per latent, with the known values 0 (mu = 0, logvar = 0) and 2 (mu = 2, logvar = 0)."""
    mu, logvar = kl_inputs(g)
    got = student.run(probes.kl, mu=mu, logvar=logvar)["out"]
    md, lvd = mu.double(), logvar.double()
    want = kl_divergence(Normal(md, torch.exp(0.5 * lvd)), Normal(0.0, 1.0))  # (B, D)
    if tuple(got.shape) == (mu.shape[0],):
        if torch.allclose(got.double(), want.mean(1), rtol=1e-4, atol=1e-5):
            expect(False, "kl_to_standard_normal returned the KL averaged over the latents, "
                          "shape (B,): return one KL per latent, shape (B, D) (the ELBO sums "
                          "it over the latents, as the reconstruction over the pixels)",
                   mistake="KL averaged over the latents")
        expect(False, f"kl_to_standard_normal: expected shape (B, D) = {tuple(mu.shape)}, got "
                      f"{tuple(got.shape)}: keep one KL per latent (do not sum it here)")
    got = expect_shape(got, mu.shape, "kl_to_standard_normal(mu, logvar)")
    expect(abs(got[0].double()).max().item() < 1e-6,
           f"KL at mu = 0, logvar = 0 must be 0 (q equals the prior), got {got[0].tolist()}")
    expect_close(got, want, "KL per latent", diagnoses={
        "the sign flipped: 1/2 (1 + logvar - mu^2 - exp(logvar)) is -KL (it is the term the "
        "ELBO adds); KL itself is >= 0": -want,
        "no factor 1/2": 2 * want,
        "sigma instead of the variance (exp(logvar / 2) in place of exp(logvar))":
            0.5 * (md ** 2 + torch.exp(0.5 * lvd) - 1 - lvd),
        "logvar used as the variance (logvar in place of exp(logvar), log(logvar)...)":
            0.5 * (md ** 2 + lvd - 1 - lvd),
    })
    expect_close(got[1], torch.full_like(got[1], 2.0).double(),
                 "KL at mu = 2, logvar = 0 (2 per latent)")


@lab.check("vae.kl", points=1)
def kl_gradients(student, g):
    """dKL/dmu = mu and dKL/dlogvar = (exp(logvar) - 1) / 2, through autograd."""
    mu, logvar = kl_inputs(g, 3, 6)
    grad_out = torch.randn(3, 6, generator=g)
    got = student.run(probes.kl, mu=mu, logvar=logvar, grad_out=grad_out)
    expect_shape(got["out"], mu.shape, "kl_to_standard_normal(mu, logvar)")
    expect(got.get("mu_grad") is not None and got.get("logvar_grad") is not None,
           "no gradient reached mu or logvar (is the KL detached, or computed under no_grad?)")
    expect_close(got["mu_grad"], grad_out.double() * mu.double(), "dKL/dmu")
    expect_close(got["logvar_grad"], grad_out.double() * (logvar.double().exp() - 1) / 2,
                 "dKL/dlogvar")


# ---------------------------------------------------------------------------------- vae.elbo

def ref_log_likelihood(x, decoded, likelihood, sigma):
    x, decoded = x.double(), decoded.double()
    if likelihood == "bernoulli":
        per_pixel = Bernoulli(logits=decoded).log_prob(x)
    else:
        per_pixel = Normal(decoded, sigma).log_prob(x)
    return per_pixel.flatten(1).sum(1)  # (B,)


def elbo_inputs(g, likelihood, B=4, shape=(2, 3, 5)):
    if likelihood == "bernoulli":
        x = (torch.rand(B, *shape, generator=g) < 0.4).float()
        decoded = 3 * torch.randn(B, *shape, generator=g)
    else:
        x = torch.rand(B, *shape, generator=g)
        decoded = x + 0.3 * torch.randn(B, *shape, generator=g)
    return x, decoded


def likelihood_diagnoses(x, decoded, likelihood, sigma, want):
    P = x[0].numel()
    wrong = {"log p(x|z) averaged over the pixels instead of summed (reduction='mean')": want / P,
             "the loss (-log p(x|z)) instead of the log-likelihood": -want}
    if likelihood == "bernoulli":
        wrong["a sigmoid applied to the logits before BCE-with-logits (the decoder's output "
              "is already logits)"] = ref_log_likelihood(x, torch.sigmoid(decoded.double()),
                                                         likelihood, sigma)
    else:
        wrong["the Gaussian log density without its constants (-log sigma - log(2 pi) / 2 per "
              "pixel)"] = want + P * (math.log(sigma) + 0.5 * math.log(2 * math.pi))
        wrong["the Gaussian log density with sigma = 1 (use the sigma given)"] = \
            ref_log_likelihood(x, decoded, likelihood, 1.0)
    return wrong


@lab.check("vae.elbo", points=1)
def log_likelihood_matches_distributions(student, g):
    """log p(x|z) per image, summed over pixels: torch.distributions' Bernoulli(logits) and
    Normal(mean, sigma) log_prob (float64), on (B, 2, 3, 5) images; gradients wrt decoded."""
    for likelihood, sigma in (("bernoulli", 1.0), ("gaussian", 0.3)):
        x, decoded = elbo_inputs(g, likelihood)
        got = student.run(probes.log_likelihood, x=x, decoded=decoded, likelihood=likelihood,
                          sigma=sigma)
        dd = decoded.double().requires_grad_()
        want = ref_log_likelihood(x, dd, likelihood, sigma)
        want.sum().backward()
        expect_close(got["out"], want.detach(), f"log_likelihood ({likelihood})",
                     diagnoses=likelihood_diagnoses(x, decoded, likelihood, sigma, want.detach()))
        expect(got.get("decoded_grad") is not None,
               f"log_likelihood ({likelihood}): no gradient reached the decoder's output")
        expect_close(got["decoded_grad"], dd.grad, f"log_likelihood ({likelihood}): gradient "
                                                   f"wrt the decoder's output")


@lab.check("vae.elbo", points=1)
def elbo_matches_reference(student, g):
    """ELBO = mean over the batch of [log p(x|z) summed over pixels - KL summed over latents],
    for both likelihoods (the reference KL stands in for the student's); gradients."""
    for likelihood, sigma in (("bernoulli", 1.0), ("gaussian", 0.2)):
        x, decoded = elbo_inputs(g, likelihood)
        mu, logvar = kl_inputs(g, x.shape[0], 7)
        got = student.run(probes.elbo, x=x, decoded=decoded, mu=mu, logvar=logvar,
                          likelihood=likelihood, sigma=sigma)
        dd, md, lvd = (t.double().requires_grad_() for t in (decoded, mu, logvar))
        rec = ref_log_likelihood(x, dd, likelihood, sigma)                         # (B,)
        kl = kl_divergence(Normal(md, torch.exp(0.5 * lvd)), Normal(0.0, 1.0))   # (B, D)
        want = (rec - kl.sum(1)).mean()
        want.backward()
        r, k, P = rec.detach(), kl.detach(), x[0].numel()
        out = got["out"]
        if out.numel() == x.shape[0] and out.ndim == 1:
            expect(False, f"elbo ({likelihood}) returned one value per image {tuple(out.shape)}: "
                          f"return the mean over the batch, a scalar")
        expect_close(out, want.detach(), f"ELBO ({likelihood})", atol=1e-4, diagnoses={
            "the KL averaged over the latents while the reconstruction is summed over the "
            "pixels (the scale bug: sum the KL over the latents too)": (r - k.mean(1)).mean(),
            "the reconstruction averaged over the pixels while the KL is summed "
            "(reduction='mean' in the likelihood)": (r / P - k.sum(1)).mean(),
            "the KL added instead of subtracted (ELBO = log p(x|z) - KL)": (r + k.sum(1)).mean(),
            "the ELBO summed over the batch instead of averaged": (r - k.sum(1)).sum(),
            "the negative ELBO (the loss) instead of the ELBO": -(r - k.sum(1)).mean(),
        })
        for name, t in (("decoded", dd), ("mu", md), ("logvar", lvd)):
            grad = got.get(f"{name}_grad")
            expect(grad is not None, f"ELBO ({likelihood}): no gradient reached {name}")
            expect_close(grad, t.grad, f"ELBO ({likelihood}): gradient wrt {name}", atol=1e-5)


@lab.check("vae.elbo", points=1)
def bits_per_dim_matches(student, g):
    """bpd = (-elbo / num_dims - log(bin_width)) / log 2, for floats and tensors, bin widths
    1 (binary pixels) and 1/256 (8-bit pixels scaled to [0, 1])."""
    for num_dims, bin_width in ((784, 1.0), (3 * 32 * 32, 1 / 256)):
        values = (-num_dims * (0.1 + 2 * torch.rand(3, generator=g, dtype=torch.float64))).tolist()
        got = student.run(probes.bits_per_dim, values=values, num_dims=num_dims,
                          bin_width=bin_width)
        v = torch.tensor(values, dtype=torch.float64)
        want = (-v / num_dims - math.log(bin_width)) / math.log(2)
        nats = -v / num_dims
        wrong = {"nats per dimension (divide by log 2 for bits)": nats - math.log(bin_width),
                 "not divided by the number of dimensions": (-v - math.log(bin_width)) / math.log(2),
                 "the sign: bits of +ELBO (the ELBO is negative; bpd is positive)": -want,
                 }
        if bin_width != 1:
            wrong["the bin width ignored (a density on [0, 1] needs -log(bin_width) = log 256 "
                  "nats more per dimension)"] = nats / math.log(2)
            wrong["log(bin_width) added instead of subtracted"] = \
                (nats + math.log(bin_width)) / math.log(2)
        what = f"bits_per_dim(elbo, {num_dims}, bin_width={bin_width:g})"
        expect_close(got["floats"], want, what + " for a float", rtol=1e-5, diagnoses=wrong)
        expect_close(got["tensor"].reshape(-1), want, what + " for a tensor of ELBOs", rtol=1e-5)


# --------------------------------------------------------------------------------- vae.model

@lab.check("vae.model", points=1)
def posterior_encode_decode(student, g):
    """posterior gives the reference (mu, logvar); encode gives mu, the same on every call (no
    sampling); decode gives the reference's logits (no sigmoid); two configs (two convs and a
    batch of 3, one conv and a batch of 1)."""
    for config, B in ((CONFIG, 3), (ONE_CONV, 1)):
        state = random_state(g, config)
        x = image(g, config, B)
        z = torch.randn(B, config["latent_dim"], generator=g)
        eps = torch.randn(B, config["latent_dim"], generator=g)
        got = student.run(probes.model_parts, config=config, state=state, x=x, z=z, eps=eps)
        mu, logvar = ref_posterior(state, config, x)
        where = f" (channels={config['channels']}, batch of {B})"
        expect_close(got["mu"], mu, "VAE.posterior: mu" + where, diagnoses={
            "mu and logvar swapped (fc_mu gives mu)": logvar})
        expect_close(got["logvar"], logvar, "VAE.posterior: logvar" + where, diagnoses={
            "mu and logvar swapped (fc_logvar gives logvar)": mu})
        expect_close(got["encode"], mu, "VAE.encode (the posterior mean)" + where, diagnoses={
            "a sampled z where the mean is asked for (encode returns mu, not a sample)":
                mu + torch.exp(0.5 * logvar) * eps.double()})
        expect(torch.equal(got["encode"], got["encode_again"]),
               "VAE.encode gave two different codes for the same image: it samples; return "
               "the posterior mean mu", mistake="a sampled z where the mean is asked for")
        want = ref_decode(state, config, z)
        expect_close(got["decode"], want, "VAE.decode" + where, diagnoses={
            "a sigmoid inside the model (decode must return logits: the loss applies "
            "BCE-with-logits, and torch.sigmoid gives probabilities for pictures)":
                ref_decode(state, config, z, sigmoid=True)})


@lab.check("vae.model", points=1)
def forward_wiring_and_gradients(student, g):
    """forward(x) = (decode(reparameterize(mu, logvar)), mu, logvar) -- with the grader's noise
    standing in for reparameterize -- and every parameter's gradient equals the reference's."""
    config = CONFIG
    state = random_state(g, config)
    x = image(g, config, 4)
    eps = torch.randn(4, config["latent_dim"], generator=g)
    grad_out = torch.randn(4, config["in_channels"], config["image_size"], config["image_size"],
                           generator=g)
    got = student.run(probes.model_forward, config=config, state=state, x=x, eps=eps,
                      grad_out=grad_out)
    ref = {k: v.double().requires_grad_() for k, v in state.items()}
    mu, logvar = ref_posterior(ref, config, x)
    decoded = ref_decode(ref, config, mu + torch.exp(0.5 * logvar) * eps.double())
    ((decoded * grad_out.double()).sum() + mu.sum() + logvar.sum()).backward()
    expect_close(got["mu"], mu.detach(), "VAE.forward: mu")
    expect_close(got["logvar"], logvar.detach(), "VAE.forward: logvar")
    expect_close(got["decoded"], decoded.detach(), "VAE.forward: decoded (call "
                 "reparameterize(mu, logvar) and decode its z)", diagnoses={
                     "decoded from mu, not from a sample z = reparameterize(mu, logvar)":
                         ref_decode(state, config, mu.detach()),
                     "a sigmoid inside the model (decode must return logits)":
                         torch.sigmoid(decoded.detach())})
    expect_gradients(got.get("grads", {}), {k: v.grad.float() for k, v in ref.items()}, "VAE",
                     atol=1e-4, rtol=1e-3)


# The training recipe of trains_on_mnist5k and its pass mark: the reference's ELBO on the
# held-out MNIST-5k test images (nats per image, higher is better) over 20 seeds
# (benchmarks/calibrate.py vae; numbers in docs/labs/vae.md). Any correct VAE passes; one that
# does not learn stays near the ELBO of the pixel marginals, which ignore z (-207 nats).
TRAIN = dict(epochs=4, batch_size=32, lr=2e-3)
TRAIN_THRESHOLD = -175.0
MNIST_CONFIG = dict(image_size=28, in_channels=1, channels=[8, 16], hidden=128, latent_dim=8)


def binarise(images: torch.Tensor) -> torch.Tensor:
    """uint8 MNIST -> float {0, 1} (pixels above half intensity on)."""
    return (images > 127).float()


@torch.no_grad()
def test_elbo(state: dict, x: torch.Tensor, g: torch.Generator, samples: int = 2) -> float:
    """The grader's own estimate of the ELBO (nats per image) of `state` on x, with its own
    reference model and its own noise."""
    state = {k: v.double() for k, v in state.items()}
    mu, logvar = ref_posterior(state, MNIST_CONFIG, x)
    total = 0.0
    for _ in range(samples):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g, dtype=mu.dtype)
        rec = ref_log_likelihood(x, ref_decode(state, MNIST_CONFIG, z), "bernoulli", 1.0)
        kl = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1)
        total += (rec - kl).mean().item()
    return total / samples


def mnist_elbo(student, seed: int) -> float:
    """Test ELBO of the student's VAE after the TRAIN recipe on binarised MNIST-5k: the probe
    trains and returns weights; the grader evaluates them on test images it never sent."""
    from vislab.data.mnist import mnist5k

    x_train, x_test = binarise(mnist5k("train")[0]), binarise(mnist5k("test")[0])
    state = student.run(probes.train_vae, config=MNIST_CONFIG, x_train=x_train, seed=seed,
                        **TRAIN)
    want = state_shapes(MNIST_CONFIG)
    expect(type(state) is dict and {k: tuple(v.shape) for k, v in state.items()
                                    if hasattr(v, "shape")} == want,
           "the trained VAE's state dict does not have the handout's parameter names and shapes")
    elbo = test_elbo(state, x_test, torch.Generator().manual_seed(seed))
    expect(math.isfinite(elbo), "the trained VAE's test ELBO is not finite")
    return elbo


@lab.check("vae.model", points=2, timeout=60)
def trains_on_mnist5k(student, g):
    """The student's VAE, trained for seconds on binarised MNIST-5k, reaches a test ELBO the
    grader computes itself on held-out images."""
    elbo = mnist_elbo(student, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    expect(elbo >= TRAIN_THRESHOLD,
           f"test ELBO {elbo:.1f} nats per image after {TRAIN['epochs']} epochs of MNIST-5k is "
           f"below {TRAIN_THRESHOLD}; the model computes but does not learn (are all "
           f"parameters used? does decode return logits?)")


# ---------------------------------------------------------------------------------- vae.beta

def ref_beta(rec_ll, kl, beta, capacity):
    rec, k = -rec_ll.mean(), kl.sum(1).mean()
    return rec + beta * (k if capacity is None else (k - capacity).abs())


@lab.check("vae.beta", points=1)
def beta_loss_matches(student, g):
    """mean(-rec_ll) + beta * mean(KL summed over latents), or + beta * |mean KL - C|, for
    beta 1, 4, 0.5 and capacities below and above the batch's KL; gradients."""
    B, D = 6, 5
    for beta, capacity in ((1.0, None), (4.0, None), (0.5, None), (3.0, "below"),
                           (2.0, "above"), (1.5, "median")):
        rec_ll = -100 - 50 * torch.rand(B, generator=g)
        kl = 3 * torch.rand(B, D, generator=g)
        mean_kl = kl.sum(1).mean().item()
        # "median": some images' KL above C and some below, so |.| of the mean and the mean
        # of |.| differ
        C = {None: None, "below": mean_kl - 2.5, "above": mean_kl + 4,
             "median": kl.sum(1).median().item() + 0.1}[capacity]
        got = student.run(probes.beta_loss, rec_ll=rec_ll, kl=kl, beta=beta, capacity=C)
        r, k = rec_ll.double().requires_grad_(), kl.double().requires_grad_()
        want = ref_beta(r, k, beta, C)
        want.backward()
        rd, kd = rec_ll.double(), kl.double()
        wrong = {
            "beta multiplies the reconstruction instead of the KL": (
                beta * -rd.mean() + (kd.sum(1).mean() if C is None
                                     else (kd.sum(1).mean() - C).abs())),
            "the KL averaged over the latents instead of summed": ref_beta(
                rd, kd / D, beta, C),
        }
        if C is not None:
            wrong["|KL - C| per image, then the batch mean (take |.| of the batch mean)"] = (
                -rd.mean() + beta * (kd.sum(1) - C).abs().mean())
            wrong["KL - C without the absolute value"] = -rd.mean() + beta * (kd.sum(1).mean() - C)
            wrong["the capacity ignored"] = ref_beta(rd, kd, beta, None)
        what = f"beta_vae_loss(beta={beta:g}, capacity={'None' if C is None else f'{C:.3g}'})"
        expect_close(got["out"], want.detach(), what, diagnoses=wrong)
        expect(got.get("rec_grad") is not None and got.get("kl_grad") is not None,
               f"{what}: no gradient reached rec_ll or kl")
        expect_close(got["rec_grad"], r.grad, f"{what}: gradient wrt rec_ll")
        expect_close(got["kl_grad"], k.grad, f"{what}: gradient wrt kl")


@lab.check("vae.beta", points=1)
def capacity_schedule(student, g):
    """C = c_max * step / total_steps, clamped at c_max: start, middle, end, past the end."""
    total = int(torch.randint(50, 500, (1,), generator=g))
    c_max = float(5 + 20 * torch.rand(1, generator=g))
    steps = [0, total // 4, total // 2, total - 1, total, 2 * total + 7]
    cases = [(s, total, c_max) for s in steps] + [(3, 10, 0.0)]
    got = student.run(probes.capacity, cases=cases)
    want = torch.tensor([c * min(1.0, s / t) for s, t, c in cases], dtype=torch.float64)
    expect_close(got, want, "capacity_at at steps " + ", ".join(map(str, steps)), diagnoses={
        "not clamped at c_max after total_steps": torch.tensor([c * s / t for s, t, c in cases],
                                                               dtype=torch.float64)})


# ------------------------------------------------------------------------------ vae.traverse

def traverse_setup(g, D, K, image_shape=(2, 3, 5)):
    P = math.prod(image_shape)
    weight = torch.randn(P, D, generator=g, dtype=torch.float64)
    bias = torch.randn(P, generator=g, dtype=torch.float64)
    z = torch.randn(D, generator=g)
    values = torch.linspace(-2.5, 2.5, K) + 0.1 * torch.randn(K, generator=g)
    return weight, bias, z, values


def traversal_codes(z, values, base="z", mode="set"):
    D, K = len(z), len(values)
    codes = (z.double() if base == "z" else torch.zeros(D, dtype=torch.float64)).expand(D, K, D).clone()
    for d in range(D):
        codes[d, :, d] = values.double() + (z[d].double() if mode == "add" else 0)
    return codes  # (D, K, D)


@lab.check("vae.traverse", points=1)
def traversal_matches(student, g):
    """out[d, k] = decode(z with latent d set to values[k]) for a linear decoder the grader
    defines, images (2, 3, 5); D = 4 latents, K = 3 values."""
    D, K, shape = 4, 3, (2, 3, 5)
    weight, bias, z, values = traverse_setup(g, D, K, shape)
    got = student.run(probes.traverse, weight=weight, bias=bias, image_shape=shape, z=z,
                      values=values)
    expect(torch.equal(got["z_after"], z), "traverse changed z in place: clone it before "
                                           "setting a latent", mistake="z modified in place")

    def dec(codes):
        return (codes @ weight.T + bias).reshape(D, K, *shape)
    out = got["out"]
    if tuple(out.shape) == (K, D, *shape):
        expect(False, f"traverse: expected shape (D, K, C, H, W) = {(D, K, *shape)}, got "
                      f"{tuple(out.shape)}: one row per latent, one column per value")
    expect_close(out, dec(traversal_codes(z, values)), "traverse output", diagnoses={
        "the other latents set to 0 (start every code from z, not from zeros)":
            dec(traversal_codes(z, values, base="zeros")),
        "values added to z[d] instead of replacing it": dec(traversal_codes(z, values, mode="add")),
        "rows and columns mixed up (reshape to (D, K) in the order the codes were built)":
            dec(traversal_codes(z, values)).reshape(K, D, *shape).transpose(0, 1).reshape(
                D, K, *shape),
    })


@lab.check("vae.traverse", points=1)
def traversal_keeps_other_latents(student, g):
    """Every code given to the decoder differs from z in at most one latent, every (latent,
    value) pair is decoded, z is left unchanged; D = 6, K = 1, a tanh decoder."""
    D, K, shape = 6, 1, (1, 2, 3)
    weight, bias, z, values = traverse_setup(g, D, K, shape)
    got = student.run(probes.traverse, weight=weight, bias=bias, image_shape=shape, z=z,
                      values=values, nonlinear=True)
    expect(torch.equal(got["z_after"], z), "traverse changed z in place: clone it before "
                                           "setting a latent")
    codes = got["codes"].double()
    expect(codes.ndim == 2 and len(codes) >= D * K,
           f"traverse decoded {len(codes)} codes, expected D*K = {D * K}")
    changed = ((codes - z.double()).abs() > 1e-6).sum(1)   # a one-hot sum may round
    expect(bool((changed <= 1).all()),
           f"a code given to the decoder differs from z in {int(changed.max())} latents: a "
           f"traversal changes one latent and keeps all the others at their values in z",
           mistake="other latents not kept fixed")
    want = traversal_codes(z, values).reshape(D * K, D)
    for d, code in enumerate(want):
        expect(bool(((codes - code).abs() <= 1e-6).all(1).any()),
               f"no code with latent {d} set to values[0] = {values[0].item():.4g} (and the "
               f"others as in z) was decoded")
    out = expect_shape(got["out"], (D, K, *shape), "traverse output")
    ref = torch.tanh(want @ weight.T + bias).reshape(D, K, *shape)
    expect_close(out, ref, "traverse output (tanh decoder)")


# --------------------------------------------------------------------------- vae.conditional

CVAE = dict(num_classes=4, embed_dim=3)


def cvae_check(student, g, condition):
    config = CONFIG
    state = random_state(g, config, condition=condition, **CVAE)
    B, D = 4, config["latent_dim"]
    x = image(g, config, B)
    y = torch.tensor([0, 3, 1, 2])
    y_other = (y + 1) % CVAE["num_classes"]
    z = torch.randn(B, D, generator=g)
    eps = torch.randn(B, D, generator=g)
    grad_out = torch.randn(B, config["in_channels"], config["image_size"], config["image_size"],
                           generator=g)
    got = student.run(probes.cvae, config=config, state=state, condition=condition, x=x, y=y,
                      z=z, y_other=y_other, eps=eps, grad_out=grad_out, **CVAE)
    what = f"ConditionalVAE(condition={condition!r})"
    mu, logvar = ref_posterior(state, config, x, y, condition)
    post_wrong = {"the label not used in the encoder (q(z|x, y) must see y)":
                  ref_posterior(state, config, x, y, condition, label=False)[0]}
    if condition == "concat":
        post_wrong["cat([embedding, features]) instead of cat([features, embedding])"] = \
            ref_posterior(state, config, x, y, condition, concat_first=True)[0]
    expect_close(got["mu"], mu, f"{what}.posterior: mu", diagnoses=post_wrong)
    expect_close(got["logvar"], logvar, f"{what}.posterior: logvar")
    expect_close(got["encode"], mu, f"{what}.encode (the posterior mean)", diagnoses={
        "a sampled z where the mean is asked for": mu + torch.exp(0.5 * logvar) * eps.double()})
    dec = ref_decode(state, config, z, y, condition)
    dec_wrong = {"the label not used in the decoder (p(x|z, y) must see y)":
                 ref_decode(state, config, z, y, condition, label=False),
                 "a sigmoid inside the model (decode must return logits)": torch.sigmoid(dec)}
    if condition == "concat":
        dec_wrong["cat([embedding, z]) instead of cat([z, embedding])"] = \
            ref_decode(state, config, z, y, condition, concat_first=True)
    expect_close(got["decode"], dec, f"{what}.decode(z, y)", diagnoses=dec_wrong)
    expect(not torch.allclose(got["decode"], got["decode_other"]),
           f"{what}.decode gave the same image for one z with two different labels: the "
           f"decoder must use the label")
    expect_close(got["decode_other"], ref_decode(state, config, z, y_other, condition),
                 f"{what}.decode(z, another label)")
    ref = {k: v.double().requires_grad_() for k, v in state.items()}
    m, lv = ref_posterior(ref, config, x, y, condition)
    out = ref_decode(ref, config, m + torch.exp(0.5 * lv) * eps.double(), y, condition)
    ((out * grad_out.double()).sum() + m.sum() + lv.sum()).backward()
    expect_close(got["forward"], out.detach(), f"{what}.forward: decoded (decode(reparameterize("
                 f"mu, logvar), y))")
    grads = got.get("grads", {})
    for name in ("label_enc.weight", "label_dec.weight"):
        grad = grads.get(name)
        expect(grad is not None and bool(grad.abs().sum() > 0),
               f"{what}: {name} got no gradient: the label must enter "
               f"{'the encoder' if 'enc' in name else 'the decoder'}")
    expect_gradients(grads, {k: v.grad.float() for k, v in ref.items()}, what, atol=1e-4,
                     rtol=1e-3)


@lab.check("vae.conditional", points=1)
def conditional_multiply(student, g):
    """condition 'multiply': encoder(x) * label_enc(y), decoder_input(z) * label_dec(y);
    outputs and gradients equal the reference's, and the label changes the decoded image."""
    cvae_check(student, g, "multiply")


@lab.check("vae.conditional", points=1)
def conditional_concat(student, g):
    """condition 'concat': cat([encoder(x), label_enc(y)]), cat([z, label_dec(y)]); outputs
    and gradients equal the reference's, and the label changes the decoded image."""
    cvae_check(student, g, "concat")


@lab.check("vae.conditional", points=1)
def wrong_label_grid(student, g):
    """decode_with_each_label: row b, column k = decode(encode(x_b, y_b), k), shape
    (B, K, C, H, W), for both conditions."""
    for condition in ("multiply", "concat"):
        config = ONE_CONV
        state = random_state(g, config, condition=condition, **CVAE)
        B, K = 3, CVAE["num_classes"]
        x = image(g, config, B)
        y = torch.randint(0, K, (B,), generator=g)
        got = student.run(probes.wrong_label_grid, config=config, state=state,
                          condition=condition, x=x, y=y, **CVAE)
        mu, logvar = ref_posterior(state, config, x, y, condition)
        zs = mu.repeat_interleave(K, 0)
        labels = torch.arange(K).repeat(B)
        want = ref_decode(state, config, zs, labels, condition).reshape(B, K, *x.shape[1:])
        wrong = {"each image encoded with every label (encode with the image's own label, "
                 "decode with every label)": ref_decode(
                     state, config, ref_posterior(state, config, x.repeat_interleave(K, 0),
                                                  labels, condition)[0], labels,
                     condition).reshape(B, K, *x.shape[1:])}
        expect_close(got, want, f"decode_with_each_label ({condition})", diagnoses=wrong)
