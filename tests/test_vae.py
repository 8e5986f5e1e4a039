"""The VAE lab's checks: plausible mistakes lose points in the named task with a message that
helps, and correct code written differently gets full marks."""
import pytest

from conftest import by_task, variant
from vislab.grading import Lab, grade, load_lab, summarize

# The training check takes seconds; mistakes in vae.model are caught by the quick checks, so
# they are graded without it, and so is the alternative of vae.model (the solution's test in
# tests/test_grading.py runs the training check; the alternative changes no arithmetic).
SLOW = {"trains_on_mnist5k"}


def grade_task(folder, task: str, quick: bool = False) -> dict:
    lab = load_lab("vae")
    if quick:
        lab = Lab(lab.name, lab.tasks, [c for c in lab.checks if c.name not in SLOW])
    rows = summarize(lab, grade(lab, folder, task))
    assert len(rows) == 1
    return rows[0]


# -------------------------------------------------------------------- plausible mistakes

NOISE = """    eps = torch.randn_like(std)     # (B, D), fresh every call
    return mu + std * eps           # (B, D)"""
KL = "return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)  # (B, D)"
BETA = """    rec = -rec_ll.mean()
    kl = kl.sum(dim=1).mean()
    if capacity is None:
        return rec + beta * kl
    return rec + beta * (kl - capacity).abs()"""
CODES = "codes = z.expand(D, K, D).clone()                  # (D, K, D)"
GRID = """    z = model.encode(x, y)                                       # (B, D)
    zs = z.repeat_interleave(num_classes, dim=0)                 # (B*K, D)
    labels = torch.arange(num_classes, device=x.device).repeat(B)  # (B*K,)"""

MISTAKES = {
    # name: (task, file, old, new, words the message must contain)
    "std = exp(logvar)": (
        "vae.reparameterize", "losses.py", "std = torch.exp(0.5 * logvar)", "std = torch.exp(logvar)",
        "exp(logvar / 2)"),
    "torch.normal(mu, std)": (
        "vae.reparameterize", "losses.py", NOISE, "    return torch.normal(mu, std)",
        "torch.normal"),
    "mu detached": (
        "vae.reparameterize", "losses.py", "return mu + std * eps", "return mu.detach() + std * eps",
        "no gradient reached mu"),
    "one eps for the whole batch": (
        "vae.reparameterize", "losses.py", "eps = torch.randn_like(std)",
        "eps = torch.randn(std.shape[-1])", "same noise"),
    "uniform noise": (
        "vae.reparameterize", "losses.py", "eps = torch.randn_like(std)",
        "eps = torch.rand_like(std)", "uniform"),
    "the same noise every call": (
        "vae.reparameterize", "losses.py", "eps = torch.randn_like(std)",
        "eps = torch.randn(std.shape, generator=torch.Generator().manual_seed(0))",
        "gave the same z"),
    "KL with the wrong sign": (
        "vae.kl", "losses.py", KL, "return 0.5 * (1 + logvar - mu.pow(2) - logvar.exp())",
        "sign flipped"),
    "KL averaged over the latents": (
        "vae.kl", "losses.py", KL, "return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(-1)",
        "averaged over the latents"),
    "KL with sigma for the variance": (
        "vae.kl", "losses.py", KL, "return 0.5 * (mu.pow(2) + (0.5 * logvar).exp() - 1 - logvar)",
        "sigma instead of the variance"),
    "KL without 1/2": (
        "vae.kl", "losses.py", KL, "return mu.pow(2) + logvar.exp() - 1 - logvar", "no factor 1/2"),
    "ELBO with the KL averaged over latents": (
        "vae.elbo", "losses.py", "kl = kl_to_standard_normal(mu, logvar).sum(dim=1)",
        "kl = kl_to_standard_normal(mu, logvar).mean(dim=1)", "the scale bug"),
    "reconstruction averaged over pixels": (
        "vae.elbo", "losses.py", "return per_pixel.flatten(1).sum(dim=1)",
        "return per_pixel.flatten(1).mean(dim=1)", "averaged over the pixels"),
    "KL added": (
        "vae.elbo", "losses.py", "return (rec - kl).mean()", "return (rec + kl).mean()",
        "added instead of subtracted"),
    "ELBO summed over the batch": (
        "vae.elbo", "losses.py", "return (rec - kl).mean()", "return (rec - kl).sum()",
        "summed over the batch"),
    "Gaussian without its constants": (
        "vae.elbo", "losses.py",
        " - math.log(sigma)\n                     - 0.5 * math.log(2 * math.pi))", ")",
        "without its constants"),
    "bits per dim in nats": (
        "vae.elbo", "losses.py", "- math.log(bin_width)) / math.log(2)", "- math.log(bin_width))",
        "nats per dimension"),
    "bits per dim without the bin width": (
        "vae.elbo", "losses.py", "(-elbo_nats / num_dims - math.log(bin_width))",
        "(-elbo_nats / num_dims)", "bin width ignored"),
    "sigmoid inside the decoder": (
        "vae.model", "model.py",
        "return self.decoder_conv(h.view(len(z), -1, s, s))      # (B, C, H, W)",
        "return torch.sigmoid(self.decoder_conv(h.view(len(z), -1, s, s)))",
        "sigmoid inside the model"),
    "encode returns a sample": (
        "vae.model", "model.py", "return self.posterior(x)[0]",
        "return reparameterize(*self.posterior(x))", "sampled z where the mean is asked for"),
    "forward decodes mu": (
        "vae.model", "model.py", "return self.decode(z), mu, logvar",
        "return self.decode(mu), mu, logvar", "decoded from mu"),
    "mu and logvar swapped": (
        "vae.model", "model.py",
        "h = self.encoder(x)                    # (B, hidden)\n        return self.fc_mu(h), self.fc_logvar(h)",
        "h = self.encoder(x)\n        return self.fc_logvar(h), self.fc_mu(h)", "swapped"),
    "beta on the reconstruction": (
        "vae.beta", "losses.py", "return rec + beta * kl", "return beta * rec + kl",
        "beta multiplies the reconstruction"),
    "|KL - C| per image": (
        "vae.beta", "losses.py", BETA,
        "    rec = -rec_ll.mean()\n    if capacity is None:\n        return rec + beta * kl.sum(1).mean()\n"
        "    return rec + beta * (kl.sum(1) - capacity).abs().mean()", "per image"),
    "KL - C without abs": (
        "vae.beta", "losses.py", "(kl - capacity).abs()", "(kl - capacity)",
        "without the absolute value"),
    "capacity not clamped": (
        "vae.beta", "losses.py", "c_max * min(1.0, step / total_steps)", "c_max * step / total_steps",
        "not clamped"),
    "traversal from zeros": (
        "vae.traverse", "traverse.py", CODES, "codes = torch.zeros(D, K, D, dtype=z.dtype)",
        "set to 0"),
    "traversal adds the value": (
        "vae.traverse", "traverse.py", "codes[index, :, index] = values.to(z.dtype)",
        "codes[index, :, index] += values.to(z.dtype)", "added to z[d]"),
    "traversal writes into z": (
        "vae.traverse", "traverse.py", CODES + "\n    index = torch.arange(D, device=z.device)\n"
        "    codes[index, :, index] = values.to(z.dtype)        # row d, all k: latent d := values[k]",
        "rows = []\n    for d in range(D):\n        for v in values:\n            z[d] = v\n"
        "            rows.append(z.clone())\n    codes = torch.stack(rows)", "in place"),
    "traversal as (K, D)": (
        "vae.traverse", "traverse.py", "return out.reshape(D, K, *out.shape[1:])",
        "return out.reshape(K, D, *out.shape[1:])", "one row per latent"),
    "label not in the encoder": (
        "vae.conditional", "model.py",
        'h = h * e if self.condition == "multiply" else torch.cat([h, e], dim=-1)',
        'h = h if self.condition == "multiply" else torch.cat([h, e], dim=-1)',
        "not used in the encoder"),
    "label not in the decoder": (
        "vae.conditional", "model.py", "g = self.decoder_input(z) * e ", "g = self.decoder_input(z) ",
        "not used in the decoder"),
    "concatenation in the other order": (
        "vae.conditional", "model.py", "torch.cat([h, e], dim=-1)", "torch.cat([e, h], dim=-1)",
        "cat([embedding, features])"),
    "wrong-label grid encodes with every label": (
        "vae.conditional", "model.py", GRID,
        "    labels = torch.arange(num_classes, device=x.device).repeat(B)\n"
        "    zs = model.encode(x.repeat_interleave(num_classes, dim=0), labels)",
        "encoded with every label"),
}


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, tmp_path):
    task, file, old, new, words = MISTAKES[name]
    row = grade_task(variant(tmp_path, "vae", {file: [(old, new)]}), task, quick=True)
    assert row["status"] == "failed", row
    assert row["earned"] < row["possible"]
    assert words in row["message"], row["message"]


# ------------------------------------------------------------ correct, written differently

ALTERNATIVES = {
    "reparameterize with sqrt(exp(logvar)) and addcmul": ("vae.reparameterize", "losses.py", [(
        NOISE, "    return torch.addcmul(mu, logvar.exp().sqrt(), torch.randn(mu.shape))")]),
    "reparameterize with torch.distributions' rsample": ("vae.reparameterize", "losses.py", [(
        NOISE, "    return torch.distributions.Normal(mu, std).rsample()")]),
    "KL from torch.distributions": ("vae.kl", "losses.py", [(
        KL, "from torch.distributions import Normal, kl_divergence\n"
            "    prior = Normal(torch.zeros_like(mu), torch.ones_like(mu))\n"
            "    return kl_divergence(Normal(mu, torch.exp(logvar / 2)), prior)")]),
    "KL in the log-std parameterisation": ("vae.kl", "losses.py", [(
        KL, "log_std = logvar / 2\n"
            "    return 0.5 * (mu * mu + torch.exp(2 * log_std) - 1) - log_std")]),
    "likelihoods from torch.distributions, bpd with log2": ("vae.elbo", "losses.py", [(
        """    if likelihood == "bernoulli":
        per_pixel = -F.binary_cross_entropy_with_logits(decoded, x, reduction="none")""",
        """    if likelihood == "bernoulli":
        per_pixel = torch.distributions.Bernoulli(logits=decoded).log_prob(x)"""), (
        """        per_pixel = (-0.5 * ((x - decoded) / sigma) ** 2 - math.log(sigma)
                     - 0.5 * math.log(2 * math.pi))""",
        """        per_pixel = torch.distributions.Normal(decoded, sigma).log_prob(x)"""), (
        "return per_pixel.flatten(1).sum(dim=1)  # (B,)",
        "return per_pixel.sum(dim=tuple(range(1, x.ndim)))"), (
        "return (-elbo_nats / num_dims - math.log(bin_width)) / math.log(2)",
        "return -elbo_nats / num_dims / math.log(2) - math.log2(bin_width)")]),
    "Bernoulli with logsigmoid, ELBO written as -(loss)": ("vae.elbo", "losses.py", [(
        'per_pixel = -F.binary_cross_entropy_with_logits(decoded, x, reduction="none")',
        "per_pixel = x * F.logsigmoid(decoded) + (1 - x) * F.logsigmoid(-decoded)"), (
        """    rec = log_likelihood(x, decoded, likelihood, sigma)   # (B,)
    kl = kl_to_standard_normal(mu, logvar).sum(dim=1)      # (B,)
    return (rec - kl).mean()""",
        """    loss = kl_to_standard_normal(mu, logvar).sum() - log_likelihood(x, decoded, likelihood, sigma).sum()
    return -loss / x.shape[0]""")]),
    "model with unflatten and tuple unpacking": ("vae.model", "model.py", [(
        """        s = self.config.feature_size
        h = self.decoder_fc(self.decoder_input(z))              # (B, c*s*s)
        return self.decoder_conv(h.view(len(z), -1, s, s))      # (B, C, H, W)""",
        """        s = self.config.feature_size
        h = self.decoder_input(z)
        h = self.decoder_fc(h).unflatten(1, (self.config.channels[-1], s, s))
        return self.decoder_conv(h)"""), (
        "return self.posterior(x)[0]", "mu, _ = self.posterior(x)\n        return mu")]),
    "beta loss with sums divided by B and torch.abs": ("vae.beta", "losses.py", [(
        BETA, """    B = rec_ll.shape[0]
    kl_term = kl.sum() / B
    if capacity is not None:
        kl_term = torch.abs(kl_term - capacity)
    return -rec_ll.sum() / B + beta * kl_term"""), (
        "return c_max * min(1.0, step / total_steps)",
        "return min(c_max, c_max * step / total_steps)")]),
    "traversal with a loop, one decode per latent": ("vae.traverse", "traverse.py", [(
        """    D, K = z.shape[0], values.shape[0]
    codes = z.expand(D, K, D).clone()                  # (D, K, D)
    index = torch.arange(D, device=z.device)
    codes[index, :, index] = values.to(z.dtype)        # row d, all k: latent d := values[k]
    out = decode(codes.reshape(D * K, D))              # (D*K, C, H, W)
    return out.reshape(D, K, *out.shape[1:])           # (D, K, C, H, W)""",
        """    rows = []
    for d in range(len(z)):
        codes = z.repeat(len(values), 1)
        codes[:, d] = values
        rows.append(decode(codes))
    return torch.stack(rows)""")]),
    "traversal by one-hot arithmetic": ("vae.traverse", "traverse.py", [(
        """    D, K = z.shape[0], values.shape[0]
    codes = z.expand(D, K, D).clone()                  # (D, K, D)
    index = torch.arange(D, device=z.device)
    codes[index, :, index] = values.to(z.dtype)        # row d, all k: latent d := values[k]
    out = decode(codes.reshape(D * K, D))              # (D*K, C, H, W)
    return out.reshape(D, K, *out.shape[1:])           # (D, K, C, H, W)""",
        """    D, K = len(z), len(values)
    eye = torch.eye(D, dtype=z.dtype)
    codes = z + eye[:, None, :] * (values[None, :, None] - z[None, None, :])
    return decode(codes.flatten(0, 1)).unflatten(0, (D, K))""")]),
    "conditional with hstack, mul and a loop over labels": ("vae.conditional", "model.py", [(
        'h = h * e if self.condition == "multiply" else torch.cat([h, e], dim=-1)',
        'h = torch.mul(h, e) if self.condition == "multiply" else torch.hstack((h, e))'), (
        "g = self.decoder_input(torch.cat([z, e], dim=-1))",
        "g = self.decoder_input(torch.hstack((z, e)))"), (
        GRID + """
    out = model.decode(zs, labels)                               # (B*K, C, H, W)
    return out.view(B, num_classes, *out.shape[1:])""",
        """    z = model.encode(x, y)
    columns = [model.decode(z, torch.full_like(y, k)) for k in range(num_classes)]
    return torch.stack(columns, dim=1)""")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, tmp_path):
    task, file, edits = ALTERNATIVES[name]
    row = grade_task(variant(tmp_path, "vae", {file: edits}), task, quick=True)
    assert row["status"] == "passed", row
    assert row["earned"] == row["possible"]


# ------------------------------------------------------------- the lab's training script

def test_dsprites_subset_is_whole_pixel_shifts_of_every_shape_and_scale():
    """The CPU subset: 3 shapes x 6 scales x 16 x 16 positions, orientation 0, 32 x 32; a posX
    class step moves the sprite one pixel right."""
    import torch

    from vislab import SOLUTIONS_DIR
    from vislab.impl import import_lab

    train = import_lab(SOLUTIONS_DIR / "vae").train
    data, factors = train.dsprites_subset()
    images, classes = data.tensors
    assert images.shape == (4608, 1, 32, 32) and set(images.unique().tolist()) == {0.0, 1.0}
    assert factors.shape == (4608, 4) and torch.equal(classes, torch.from_numpy(factors))
    assert [len(set(factors[:, k])) for k in range(4)] == [3, 6, 16, 16]
    first = (factors == [1, 3, 4, 5]).all(1).nonzero()[0][0]
    moved = (factors == [1, 3, 5, 5]).all(1).nonzero()[0][0]
    assert torch.equal(torch.roll(images[first], 1, dims=-1), images[moved])


@pytest.mark.parametrize("argv, words", [
    (["--sigma", "0"], "--sigma must be positive"),
    (["--capacity", "-1"], "--capacity must be 0 or more"),
    (["--part", "vae", "--cifar"], "--cifar is for the conditional VAE"),
])
def test_bad_options_get_one_line(argv, words, capsys):
    from vislab.cli import main

    assert main(["train", "vae", "--impl", "solutions", *argv]) != 0
    assert words in capsys.readouterr().err


def test_conditional_part_on_cifar_shaped_data_uses_the_gaussian_likelihood(tmp_path, monkeypatch):
    """The --cifar branch end to end on a few random colour images (CIFAR-10's files are not
    in the kit): Gaussian likelihood, bits per dim with bin width 1/256, the wrong-label grid."""
    import argparse
    import json

    import torch
    from torch.utils.data import TensorDataset

    from vislab import SOLUTIONS_DIR
    from vislab.impl import import_lab

    train = import_lab(SOLUTIONS_DIR / "vae").train
    g = torch.Generator().manual_seed(0)
    sets = (TensorDataset(torch.rand(32, 3, 32, 32, generator=g), torch.arange(32) % 10),
            TensorDataset(torch.rand(10, 3, 32, 32, generator=g), torch.arange(10)))
    monkeypatch.setattr(train, "cifar_sets", lambda: sets)
    args = argparse.Namespace(part="cvae", cifar=True, full=False, epochs=1, device="cpu",
                              out=tmp_path / "run", seed=0, resume=False, batch_size=32, lr=1e-3,
                              latent_dim=4, likelihood=None, sigma=0.2, beta=[1.0],
                              capacity=None, condition="concat")
    assert train.main(args) == 0
    result = json.loads((tmp_path / "run" / "results.json").read_text())["cvae"]
    dims = 3 * 32 * 32
    want = (-result["test_elbo"] / dims + torch.log(torch.tensor(256.0)).item()) / 0.6931471805599453
    assert abs(result["test_bpd"] - want) < 1e-6
    assert (tmp_path / "run" / "cvae" / "wrong_labels.png").is_file()
