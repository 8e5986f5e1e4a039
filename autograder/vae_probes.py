"""Probes for the VAE lab: run the student's functions and modules on the grader's inputs and
weights, and return raw material (samples, outputs, gradients, trained weights) only; the
checks in autograder/vae.py compute every verdict. Nothing here is secret.

Where the student's code calls another task's function (the model calls reparameterize, the
ELBO calls kl_to_standard_normal), the probe puts a reference in for it, so that an unfinished
task does not cost the next one its points.
"""

import torch
import torch.nn.functional as F

from vislab.probing import ProbeFailed, load_weights, replaced, returned


def _kl(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)


def _with_eps(eps):
    """A reparameterize that uses the grader's noise: the model's wiring becomes deterministic."""
    def reparameterize(mu, logvar):
        return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)
    return reparameterize


def _fresh(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def _grad(t):
    return None if t.grad is None else t.grad


# ------------------------------------------------------------------------ vae.reparameterize

def reparameterize(lab, mu, logvar, grad_out=None, seed=0):
    """z for (mu, logvar) and, with grad_out, the gradients of <z, grad_out> wrt mu, logvar."""
    torch.manual_seed(seed)
    mu, logvar = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    z = returned(lab.losses.reparameterize(mu, logvar), "reparameterize")
    out = {"z": z}
    if grad_out is not None and z.requires_grad and z.shape == grad_out.shape:
        (z * grad_out).sum().backward()
        out.update(mu_grad=_grad(mu), logvar_grad=_grad(logvar))
    return out


def reparameterize_twice(lab, mu, logvar, seed=0):
    torch.manual_seed(seed)
    first = returned(lab.losses.reparameterize(mu.clone(), logvar.clone()), "reparameterize")
    second = returned(lab.losses.reparameterize(mu.clone(), logvar.clone()), "reparameterize")
    return {"first": first, "second": second}


# ------------------------------------------------------------------------------------ vae.kl

def kl(lab, mu, logvar, grad_out=None):
    mu, logvar = mu.clone().requires_grad_(), logvar.clone().requires_grad_()
    out = returned(lab.losses.kl_to_standard_normal(mu, logvar), "kl_to_standard_normal")
    result = {"out": out}
    if grad_out is not None and out.requires_grad and out.shape == grad_out.shape:
        (out * grad_out).sum().backward()
        result.update(mu_grad=_grad(mu), logvar_grad=_grad(logvar))
    return result


# ---------------------------------------------------------------------------------- vae.elbo

def log_likelihood(lab, x, decoded, likelihood, sigma):
    decoded = decoded.clone().requires_grad_()
    out = returned(lab.losses.log_likelihood(x, decoded, likelihood, sigma), "log_likelihood")
    result = {"out": out}
    if out.requires_grad and out.numel():
        out.sum().backward()
        result["decoded_grad"] = _grad(decoded)
    return result


def elbo(lab, x, decoded, mu, logvar, likelihood, sigma):
    """The student's elbo with the reference KL in place of theirs; its value and gradients."""
    decoded, mu, logvar = (t.clone().requires_grad_() for t in (decoded, mu, logvar))
    with replaced(lab.losses, kl_to_standard_normal=_kl):
        out = returned(lab.losses.elbo(x, decoded, mu, logvar, likelihood, sigma), "elbo")
    result = {"out": out}
    if out.requires_grad and out.numel() == 1:
        out.sum().backward()
        result.update(decoded_grad=_grad(decoded), mu_grad=_grad(mu), logvar_grad=_grad(logvar))
    return result


def bits_per_dim(lab, values, num_dims, bin_width):
    """bits_per_dim of each value, given as a Python float and as a tensor."""
    out = []
    for v in values:
        out.append(returned(torch.as_tensor(lab.losses.bits_per_dim(v, num_dims, bin_width)),
                            "bits_per_dim").reshape(()))
    tensor = returned(torch.as_tensor(lab.losses.bits_per_dim(torch.tensor(values), num_dims,
                                                              bin_width)), "bits_per_dim")
    return {"floats": torch.stack(out), "tensor": tensor}


# --------------------------------------------------------------------------------- vae.model

def _vae(lab, config, state):
    m = lab.model.VAE(lab.model.VAEConfig(**config))
    return load_weights(m, state, "VAE")


def model_parts(lab, config, state, x, z, eps):
    """posterior(x), encode(x) twice (train mode), decode(z); reparameterize uses eps."""
    m = _vae(lab, config, state).train()
    with torch.no_grad(), replaced(lab.model, reparameterize=_with_eps(eps)):
        post = m.posterior(x)
        if not isinstance(post, (tuple, list)) or len(post) != 2:
            raise ProbeFailed("VAE.posterior must return (mu, logvar)")
        mu, logvar = (returned(t, "VAE.posterior") for t in post)
        first = returned(m.encode(x), "VAE.encode")
    second = returned(m.encode(x), "VAE.encode")
    with torch.no_grad():
        decoded = returned(m.decode(z), "VAE.decode")
    return {"mu": mu, "logvar": logvar, "encode": first, "encode_again": second,
            "decode": decoded}


def model_forward(lab, config, state, x, eps, grad_out):
    """forward(x) with the grader's noise; the gradients of <decoded, grad_out> + <mu, 1> +
    <logvar, 1> for every parameter."""
    m = _vae(lab, config, state).train()
    with replaced(lab.model, reparameterize=_with_eps(eps)):
        out = m(x)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ProbeFailed("VAE.forward must return (decoded, mu, logvar)")
    decoded, mu, logvar = (returned(t, "VAE.forward") for t in out)
    result = {"decoded": decoded, "mu": mu, "logvar": logvar}
    if decoded.shape == grad_out.shape and decoded.requires_grad:
        ((decoded * grad_out).sum() + mu.sum() + logvar.sum()).backward()
        result["grads"] = {n: p.grad for n, p in m.named_parameters()}
    return result


def train_vae(lab, config, x_train, seed, epochs, batch_size, lr):
    """Train the student's VAE on binary images with the reference -ELBO (Bernoulli, KL in
    closed form) and a reference reparameterize (fresh noise); return the trained weights."""
    torch.manual_seed(seed)
    m = lab.model.VAE(lab.model.VAEConfig(**config))
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    steps = len(x_train) // batch_size
    m.train()
    with replaced(lab.model, reparameterize=_fresh):
        for _ in range(epochs):
            order = torch.randperm(len(x_train))
            for i in range(steps):
                x = x_train[order[i * batch_size:(i + 1) * batch_size]]
                out = m(x)
                if not isinstance(out, (tuple, list)) or len(out) != 3:
                    raise ProbeFailed("VAE.forward must return (decoded, mu, logvar)")
                decoded, mu, logvar = (returned(t, "VAE.forward") for t in out)
                rec = F.binary_cross_entropy_with_logits(decoded, x, reduction="none")
                loss = (rec.flatten(1).sum(1) + _kl(mu, logvar).sum(1)).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return {k: v for k, v in m.state_dict().items()}


# ---------------------------------------------------------------------------------- vae.beta

def beta_loss(lab, rec_ll, kl, beta, capacity):
    rec_ll, kl = rec_ll.clone().requires_grad_(), kl.clone().requires_grad_()
    out = returned(lab.losses.beta_vae_loss(rec_ll, kl, beta, capacity), "beta_vae_loss")
    result = {"out": out}
    if out.requires_grad and out.numel() == 1:
        out.sum().backward()
        result.update(rec_grad=_grad(rec_ll), kl_grad=_grad(kl))
    return result


def capacity(lab, cases):
    values = []
    for step, total, c_max in cases:
        v = lab.losses.capacity_at(step, total, c_max)
        if isinstance(v, torch.Tensor):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)):  # numpy floats are floats
            raise ProbeFailed(f"capacity_at must return a number, got {type(v).__name__}")
        values.append(float(v))
    return torch.tensor(values, dtype=torch.float64)


# ------------------------------------------------------------------------------ vae.traverse

def traverse(lab, weight, bias, image_shape, z, values, nonlinear=False):
    """traverse with a decoder the grader defines: linear (or tanh of linear) from codes to
    images of image_shape. Returns the output, every code passed to the decoder, and z after."""
    seen = []

    def decode(codes):
        if not isinstance(codes, torch.Tensor) or codes.ndim != 2 or codes.shape[1] != len(z):
            raise ProbeFailed(f"traverse must call decode on a batch of codes (N, {len(z)}), "
                              f"got {getattr(codes, 'shape', type(codes).__name__)}")
        seen.append(codes.detach().clone())
        out = codes.to(weight.dtype) @ weight.T + bias          # (N, P)
        out = torch.tanh(out) if nonlinear else out
        return out.reshape(len(codes), *image_shape)

    z_in = z.clone()
    out = returned(lab.traverse.traverse(decode, z_in, values.clone()), "traverse")
    codes = torch.cat(seen) if seen else torch.zeros(0, len(z))
    return {"out": out, "codes": codes, "z_after": z_in}


# --------------------------------------------------------------------------- vae.conditional

def _cvae(lab, config, state, num_classes, condition, embed_dim):
    m = lab.model.ConditionalVAE(lab.model.VAEConfig(**config), num_classes=num_classes,
                                 condition=condition, embed_dim=embed_dim)
    return load_weights(m, state, f"ConditionalVAE({condition!r})")


def cvae(lab, config, state, num_classes, condition, embed_dim, x, y, z, y_other, eps,
         grad_out):
    """posterior, encode, decode with two labels, forward with the grader's noise, and the
    gradients of <decoded, grad_out> + sum(mu) + sum(logvar) for every parameter."""
    m = _cvae(lab, config, state, num_classes, condition, embed_dim).train()
    with replaced(lab.model, reparameterize=_with_eps(eps)):
        with torch.no_grad():
            post = m.posterior(x, y)
            if not isinstance(post, (tuple, list)) or len(post) != 2:
                raise ProbeFailed("ConditionalVAE.posterior must return (mu, logvar)")
            mu, logvar = (returned(t, "ConditionalVAE.posterior") for t in post)
            encoded = returned(m.encode(x, y), "ConditionalVAE.encode")
            decoded = returned(m.decode(z, y), "ConditionalVAE.decode")
            other = returned(m.decode(z, y_other), "ConditionalVAE.decode")
        out = m(x, y)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ProbeFailed("ConditionalVAE.forward must return (decoded, mu, logvar)")
    f_dec, f_mu, f_logvar = (returned(t, "ConditionalVAE.forward") for t in out)
    result = {"mu": mu, "logvar": logvar, "encode": encoded, "decode": decoded,
              "decode_other": other, "forward": f_dec}
    if f_dec.shape == grad_out.shape and f_dec.requires_grad:
        ((f_dec * grad_out).sum() + f_mu.sum() + f_logvar.sum()).backward()
        result["grads"] = {n: p.grad for n, p in m.named_parameters()}
    return result


def wrong_label_grid(lab, config, state, num_classes, condition, embed_dim, x, y):
    m = _cvae(lab, config, state, num_classes, condition, embed_dim).eval()
    with torch.no_grad():
        return returned(lab.model.decode_with_each_label(m, x, y, num_classes),
                        "decode_with_each_label")
