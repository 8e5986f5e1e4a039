"""Probes for the Slot Attention lab: run the student's code on the grader's weights and inputs.

Each probe receives `lab` (the student's modules: lab.model, lab.metrics, lab.library) and plain
inputs, and returns plain values; the checks in autograder/slots.py compare them with references.
Where a task's code calls another task's, the probe puts a reference in for the other task (the
decoder gets a reference position embedding; forward() without slots gets a reference
init_slots), so one unfinished task does not cost the next one its points. Nothing here is
secret.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.probing import ProbeFailed, gradients, load_weights, returned


# ------------------------------------------------------------------ reference stand-ins

def _grid(height, width, like):
    y = torch.linspace(0, 1, height, dtype=like.dtype, device=like.device)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width, dtype=like.dtype, device=like.device)[None, :].expand(height, width)
    return torch.stack([x, y, 1 - x, 1 - y], dim=-1)  # (H, W, 4)


class _PositionEmbed(nn.Module):
    """x + Linear(4, D)(grid), standing in for the lab's SoftPositionEmbed (same names)."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(4, dim)

    def forward(self, x):  # (B, H, W, D)
        return x + self.proj(_grid(x.shape[1], x.shape[2], x))


class _Encoder(nn.Module):
    """The lab's Encoder built from torch layers (same parameter names)."""

    def __init__(self, in_channels, hidden, layers, dim):
        super().__init__()
        convs = []
        for i in range(layers):
            convs += [nn.Conv2d(in_channels if i == 0 else hidden, hidden, 5, padding=2), nn.ReLU()]
        self.convs = nn.Sequential(*convs)
        self.pos = _PositionEmbed(hidden)
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, image):
        x = self.pos(self.convs(image).permute(0, 2, 3, 1)).flatten(1, 2)
        return self.mlp(self.norm(x))


class _Decoder(nn.Module):
    """A spatial broadcast decoder at the image's own resolution (no upsampling)."""

    def __init__(self, dim, hidden, size, out_channels=3):
        super().__init__()
        self.size, self.out_channels = size, out_channels
        self.pos = _PositionEmbed(dim)
        self.convs = nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(hidden, out_channels + 1, 3, padding=1))

    def forward(self, slots):
        B, K, D = slots.shape
        x = slots.reshape(B * K, 1, 1, D).expand(-1, self.size, self.size, -1)
        x = self.convs(self.pos(x).permute(0, 3, 1, 2))
        x = x.reshape(B, K, *x.shape[1:])
        rgb, alpha = x[:, :, :self.out_channels], x[:, :, self.out_channels:]
        return (alpha.softmax(1) * rgb).sum(1)


def _pair(value, what):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ProbeFailed(f"{what} must return (slots, attention), got {type(value).__name__}")
    return [returned(value[0], what), returned(value[1], what)]


def _slot_attention(lab, num_slots, dim, mlp_dim, state, iters=3, eps=1e-8):
    m = lab.model.SlotAttention(num_slots, dim, iters=iters, mlp_dim=mlp_dim, eps=eps)
    return load_weights(m, state, "SlotAttention")


# ------------------------------------------------------------------- slots.position_embed

def grid(lab, height, width):
    return returned(lab.model.build_grid(height, width), "build_grid")


def position_embed(lab, dim, state, x, grad_out=None, double=False):
    m = load_weights(lab.model.SoftPositionEmbed(dim), state, "SoftPositionEmbed")
    if double:
        try:
            with torch.no_grad():
                return {"out": returned(m.double()(x.double()), "SoftPositionEmbed")}
        except RuntimeError as exc:
            raise ProbeFailed(f"SoftPositionEmbed failed on a float64 input ({str(exc)[:80]}): "
                              f"build the grid with x's dtype and device") from None
    x = x.clone().requires_grad_(grad_out is not None)
    out = returned(m(x), "SoftPositionEmbed")
    if grad_out is None or out.shape != grad_out.shape:
        return {"out": out}
    if not out.requires_grad:
        raise ProbeFailed("SoftPositionEmbed's output carries no gradient")
    (out * grad_out).sum().backward()
    return {"out": out, "grads": gradients(m), "input_grad": x.grad}


# ---------------------------------------------------------------------------- slots.init

def init_slots(lab, num_slots, dim, state, batch_size, grad_out=None, seed=0):
    m = _slot_attention(lab, num_slots, dim, state["mlp.0.weight"].shape[0], state)
    torch.manual_seed(seed)
    slots = returned(m.init_slots(batch_size), "init_slots")
    if grad_out is None or slots.shape != grad_out.shape or not slots.requires_grad:
        return {"slots": slots}
    (slots * grad_out).sum().backward()
    return {"slots": slots, "grads": gradients(m)}


# ------------------------------------------------------------------------ slots.attention

def step(lab, num_slots, dim, mlp_dim, eps, state, slots, k, v, grad_out=None):
    m = _slot_attention(lab, num_slots, dim, mlp_dim, state, iters=1, eps=eps)
    inputs = [t.clone().requires_grad_(grad_out is not None) for t in (slots, k, v)]
    out = _pair(m.step(*inputs), "SlotAttention.step")
    if grad_out is None:
        return out
    if any(o.shape != g.shape for o, g in zip(out, grad_out)):
        return {"out": out}
    if not (out[0].requires_grad and out[1].requires_grad):
        raise ProbeFailed("SlotAttention.step's outputs carry no gradient (torch.no_grad or .detach()?)")
    ((out[0] * grad_out[0]).sum() + (out[1] * grad_out[1]).sum()).backward()
    return {"out": out, "grads": gradients(m), "input_grads": [t.grad for t in inputs]}


def slot_attention(lab, num_slots, dim, mlp_dim, iters, state, inputs, slots):
    m = _slot_attention(lab, num_slots, dim, mlp_dim, state, iters=iters)
    with torch.no_grad():
        return _pair(m(inputs, slots), "SlotAttention.forward")


def sampled_forward(lab, num_slots, dim, mlp_dim, state, inputs, noise, grad_out):
    """forward(inputs) with a reference init_slots that uses the grader's noise."""
    m = _slot_attention(lab, num_slots, dim, mlp_dim, state)

    def init_slots(batch_size):
        if batch_size != noise.shape[0]:
            raise ProbeFailed(f"forward called init_slots({batch_size}) for a batch of "
                              f"{noise.shape[0]}")
        return m.slots_mu + m.slots_log_sigma.exp() * noise

    m.init_slots = init_slots
    slots = _pair(m(inputs), "SlotAttention.forward")[0]
    if slots.shape != grad_out.shape or not slots.requires_grad:
        return {"out": slots}
    (slots * grad_out).sum().backward()
    return {"out": slots, "grads": gradients(m)}


class _Autoencoder(nn.Module):
    def __init__(self, lab, c):
        super().__init__()
        self.encoder = _Encoder(3, c["hidden"], c["encoder_layers"], c["slot_dim"])
        self.slot_attention = lab.model.SlotAttention(c["num_slots"], c["slot_dim"], c["iters"],
                                                      c["mlp_dim"], 1e-8)
        self.decoder = _Decoder(c["slot_dim"], c["hidden"], c["image_size"])

    def forward(self, image):
        sa = self.slot_attention
        noise = torch.randn(len(image), sa.num_slots, sa.dim)
        init = sa.slots_mu + sa.slots_log_sigma.exp() * noise                # (B, K, D)
        slots = _pair(sa(self.encoder(image), init), "SlotAttention.forward")[0]
        return self.decoder(slots)


def train_autoencoder(lab, config, images, seed, steps, batch_size, lr):
    """Train the student's SlotAttention between reference encoder and decoder (Adam, 10
    warm-up steps, MSE); return the whole model's trained weights."""
    torch.manual_seed(seed)
    model = _Autoencoder(lab, config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 10))
    for _ in range(steps):
        batch = images[torch.randint(0, len(images), (batch_size,))]
        loss = F.mse_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {k: v for k, v in model.state_dict().items()}


# -------------------------------------------------------------------------- slots.decoder

def decoder(lab, dim, hidden, resolution, upsamples, out_channels, state, slots, grad_out=None):
    m = lab.model.SpatialBroadcastDecoder(dim, hidden, resolution, upsamples, out_channels)
    load_weights(m, state, "SpatialBroadcastDecoder")
    m.pos = _PositionEmbed(dim)
    m.pos.proj.load_state_dict({"weight": state["pos.proj.weight"], "bias": state["pos.proj.bias"]})
    slots = slots.clone().requires_grad_(grad_out is not None)
    out = m(slots)
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise ProbeFailed("SpatialBroadcastDecoder must return (image, masks, rgb)")
    out = [returned(o, "SpatialBroadcastDecoder") for o in out]
    if grad_out is None:
        return out
    if out[0].shape != grad_out.shape or not out[0].requires_grad:
        return {"out": out}
    (out[0] * grad_out).sum().backward()
    return {"out": out, "grads": gradients(m), "input_grad": slots.grad}


# ------------------------------------------------------------------------------ slots.ari

def ari(lab, true, pred):
    return returned(lab.metrics.adjusted_rand_index(true, pred), "adjusted_rand_index")


def fg_ari(lab, true, pred):
    return returned(lab.metrics.foreground_ari(true, pred), "foreground_ari")


# -------------------------------------------------------------------------- slots.library

def library(lab, images, weight, num_slots, batch_size):
    """build_library with a fixed linear 'encoder' that records the batch sizes it sees."""
    sizes, grad_enabled = [], []

    def encode(batch):
        sizes.append(len(batch))
        grad_enabled.append(torch.is_grad_enabled())
        slots = (batch.flatten(1) @ weight.T).reshape(len(batch), num_slots, -1)
        return slots, torch.zeros(len(batch), num_slots, 1)

    out = returned(lab.library.build_library(encode, images, batch_size), "build_library")
    return {"library": out, "batch_sizes": sizes, "grad_enabled": grad_enabled}


def cluster(lab, library, num_clusters, seed):
    return returned(lab.library.cluster_library(library, num_clusters, seed), "cluster_library")


def sample(lab, library, labels, num_scenes, num_slots, seed, again=False):
    """sample_slots with a generator seeded `seed`; with again, twice, from two generators
    seeded alike (the global generator in different states)."""
    g = torch.Generator().manual_seed(seed)
    first = returned(lab.library.sample_slots(library, labels, num_scenes, num_slots, g),
                     "sample_slots")
    if not again:
        return first
    torch.randn(7)  # moves the global generator on
    g = torch.Generator().manual_seed(seed)
    return [first, returned(lab.library.sample_slots(library, labels, num_scenes, num_slots, g),
                            "sample_slots")]
