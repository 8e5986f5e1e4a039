"""Checks for the Slot Attention lab. Run them with `vislab grade slots [--impl ...]`.

References are independent of the student's code and of the lab's solution: functions of a state
dict written here from torch ops in float64 (F.linear, F.layer_norm, F.conv2d,
F.conv_transpose2d, torch's nn.GRUCell with the grader's weights), closed forms for the position
grid and sklearn.metrics.adjusted_rand_score / sklearn.cluster.KMeans for the metrics. Inputs
and weights come from the generator `g` the grader seeds. The training check trains the
student's SlotAttention inside the probe's reference encoder and decoder, then evaluates the
returned weights with the reference model below on scenes the probe never sees.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from vislab.grading import Lab, expect, expect_close, expect_gradients, expect_shape

from . import slots_probes as probes

lab = Lab("slots", {
    "slots.position_embed": "position grid [x, y, 1-x, 1-y] and its soft embedding",
    "slots.init": "initial slots from a learned Gaussian, reparameterised",
    "slots.attention": "one slot-attention iteration and the loop",
    "slots.decoder": "spatial broadcast decoder, masks softmaxed over slots",
    "slots.ari": "ARI and foreground ARI from the contingency table",
    "slots.library": "slot library, K-means clusters, compositional sampling",
})

D, K, MLP = 8, 3, 10  # slot width, slots, slot-MLP width of the small checks


def rand(g, *shape, scale=1.0):
    return scale * torch.randn(*shape, generator=g)


# --------------------------------------------------------------------- references (float64)

def ref_grid(height, width, variant="right"):
    """[x, y, 1-x, 1-y] on an (H, W) grid; x along the width, y along the height."""
    y = torch.linspace(0, 1, height, dtype=torch.float64)[:, None].expand(height, width)
    x = torch.linspace(0, 1, width, dtype=torch.float64)[None, :].expand(height, width)
    if variant == "swapped":
        x, y = y, x
    if variant == "signed":  # [-1, 1] instead of [0, 1]
        x, y = 2 * x - 1, 2 * y - 1
    if variant == "arange":  # j / W instead of j / (W - 1)
        x = x * (width - 1) / width
        y = y * (height - 1) / height
    return torch.stack([x, y, 1 - x, 1 - y], dim=-1)  # (H, W, 4)


def ref_pos(state, prefix, x, variant="right"):
    """x (B, H, W, D) + Linear(grid); variant 'columns': the grid flattened column by column
    but added to features flattened row by row; 'none': no embedding."""
    B, H, W, _ = x.shape
    if variant == "none":
        return x.double()
    weight, bias = state[prefix + "proj.weight"].double(), state[prefix + "proj.bias"].double()
    if variant == "columns":
        grid = ref_grid(H, W).transpose(0, 1).reshape(H * W, 4).reshape(H, W, 4)
    else:
        grid = ref_grid(H, W, variant)
    return x.double() + F.linear(grid, weight, bias)


def layer_norm(x, state, name):
    return F.layer_norm(x, x.shape[-1:], state[name + ".weight"].double(),
                        state[name + ".bias"].double())


def gru_cell(state, prefix="gru."):
    dim = state[prefix + "weight_hh"].shape[1]
    gru = nn.GRUCell(dim, dim).double()
    gru.load_state_dict({k: state[prefix + k].double() for k in
                         ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    return gru


def ref_step(state, slots, k, v, eps, gru=None, softmax="slots", renorm=True, norm_slots=True,
             residual=True, scale=True, eps_where="before", swap_gru=False, returns="attn"):
    """One slot-attention iteration in float64 (with optional known mistakes)."""
    gru = gru or gru_cell(state)
    B, Ks, Dm = slots.shape
    prev = slots
    h = layer_norm(slots, state, "norm_slots") if norm_slots else slots
    q = F.linear(h, state["to_q.weight"].double())                      # (B, K, D)
    logits = q @ k.transpose(1, 2)                                      # (B, K, N)
    if scale:
        logits = logits / Dm**0.5
    attn = logits.softmax(dim=1 if softmax == "slots" else 2)           # (B, K, N)
    weights = attn + eps if eps_where == "before" else attn
    if renorm:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if eps_where == "after":
        weights = weights + eps
    updates = weights @ v                                               # (B, K, D)
    a, b = updates.reshape(-1, Dm), prev.reshape(-1, Dm)
    new = (gru(b, a) if swap_gru else gru(a, b)).reshape(B, Ks, Dm)
    mlp = F.linear(F.relu(F.linear(layer_norm(new, state, "norm_mlp"),
                                   state["mlp.0.weight"].double(), state["mlp.0.bias"].double())),
                   state["mlp.2.weight"].double(), state["mlp.2.bias"].double())
    new = new + mlp if residual else mlp
    return new, (weights if returns == "weights" else attn)


def ref_kv(state, inputs, norm=True):
    x = layer_norm(inputs.double(), state, "norm_inputs") if norm else inputs.double()
    return F.linear(x, state["to_k.weight"].double()), F.linear(x, state["to_v.weight"].double())


def ref_slot_attention(state, inputs, slots, iters, eps, norm_inputs=True, gru=None,
                       **mistakes):
    """T iterations from the given initial slots; the last iteration's attention."""
    gru = gru or gru_cell(state)
    k, v = ref_kv(state, inputs, norm_inputs)
    slots, attn = slots.double(), None
    for _ in range(iters):
        slots, attn = ref_step(state, slots, k, v, eps, gru, **mistakes)
    return slots, attn


def ref_decoder(state, slots, resolution, upsamples, out_channels, mask_softmax="slots",
                pos="right"):
    """The spatial broadcast decoder in float64; masks softmaxed over the slots."""
    B, Ks, Dm = slots.shape
    h, w = resolution
    x = slots.double().reshape(B * Ks, 1, 1, Dm).expand(-1, h, w, -1)
    x = ref_pos(state, "pos.", x, pos).permute(0, 3, 1, 2)              # (B*K, D, h, w)
    i = 0
    for _ in range(upsamples):
        x = F.relu(F.conv_transpose2d(x, state[f"convs.{i}.weight"].double(),
                                      state[f"convs.{i}.bias"].double(), stride=2, padding=2,
                                      output_padding=1))
        i += 2
    x = F.relu(F.conv2d(x, state[f"convs.{i}.weight"].double(), state[f"convs.{i}.bias"].double(),
                        padding=1))
    x = F.conv2d(x, state[f"convs.{i + 2}.weight"].double(), state[f"convs.{i + 2}.bias"].double(),
                 padding=1)                                             # (B*K, C+1, H, W)
    x = x.reshape(B, Ks, *x.shape[1:])
    rgb, alpha = x[:, :, :out_channels], x[:, :, out_channels:]
    if mask_softmax == "slots":
        masks = alpha.softmax(dim=1)
    elif mask_softmax == "pixels":
        masks = alpha.flatten(3).softmax(-1).reshape(alpha.shape)
    elif mask_softmax == "sigmoid":
        masks = alpha.sigmoid()
    else:  # alpha used as it is
        masks = alpha
    return (masks * rgb).sum(1), masks, rgb


def ref_encoder(state, image, layers):
    x = image.double()
    for i in range(layers):
        x = F.relu(F.conv2d(x, state[f"convs.{2 * i}.weight"].double(),
                            state[f"convs.{2 * i}.bias"].double(), padding=2))
    x = ref_pos(state, "pos.", x.permute(0, 2, 3, 1)).flatten(1, 2)
    x = layer_norm(x, state, "norm")
    x = F.relu(F.linear(x, state["mlp.0.weight"].double(), state["mlp.0.bias"].double()))
    return F.linear(x, state["mlp.2.weight"].double(), state["mlp.2.bias"].double())


def sub(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------- random weights

def slot_state(g, dim=D, mlp_dim=MLP):
    """SlotAttention weights, float32, under the lab's names (LayerNorm weights near 1)."""
    s = {"slots_mu": rand(g, 1, 1, dim), "slots_log_sigma": rand(g, 1, 1, dim, scale=0.5)}
    for name in ("norm_inputs", "norm_slots", "norm_mlp"):
        s[name + ".weight"] = 1 + rand(g, dim, scale=0.2)
        s[name + ".bias"] = rand(g, dim, scale=0.2)
    for name in ("to_q", "to_k", "to_v"):
        s[name + ".weight"] = rand(g, dim, dim, scale=dim**-0.5 * 1.5)
    for name in ("weight_ih", "weight_hh"):
        s["gru." + name] = rand(g, 3 * dim, dim, scale=dim**-0.5)
    for name in ("bias_ih", "bias_hh"):
        s["gru." + name] = rand(g, 3 * dim, scale=0.2)
    s.update({"mlp.0.weight": rand(g, mlp_dim, dim, scale=dim**-0.5),
              "mlp.0.bias": rand(g, mlp_dim, scale=0.2),
              "mlp.2.weight": rand(g, dim, mlp_dim, scale=mlp_dim**-0.5),
              "mlp.2.bias": rand(g, dim, scale=0.2)})
    return s


def pos_state(g, dim, prefix=""):
    return {prefix + "proj.weight": rand(g, dim, 4), prefix + "proj.bias": rand(g, dim, scale=0.5)}


def decoder_state(g, dim, hidden, upsamples, out_channels):
    s = pos_state(g, dim, "pos.")
    i, channels = 0, dim
    for _ in range(upsamples):
        s[f"convs.{i}.weight"] = rand(g, channels, hidden, 5, 5, scale=(channels * 25) ** -0.5 * 2)
        s[f"convs.{i}.bias"] = rand(g, hidden, scale=0.1)
        i, channels = i + 2, hidden
    s[f"convs.{i}.weight"] = rand(g, hidden, channels, 3, 3, scale=(channels * 9) ** -0.5 * 1.5)
    s[f"convs.{i}.bias"] = rand(g, hidden, scale=0.1)
    s[f"convs.{i + 2}.weight"] = rand(g, out_channels + 1, hidden, 3, 3, scale=(hidden * 9) ** -0.5 * 2)
    s[f"convs.{i + 2}.bias"] = rand(g, out_channels + 1, scale=0.1)
    return s


# ------------------------------------------------------------------- slots.position_embed

def grid_diagnoses(H, W):
    return {"x and y swapped (x must vary along the width, i.e. across columns)":
                ref_grid(H, W, "swapped"),
            "coordinates in [-1, 1] instead of [0, 1]": ref_grid(H, W, "signed"),
            "j / W instead of j / (W - 1) (use torch.linspace(0, 1, W))": ref_grid(H, W, "arange")}


@lab.check("slots.position_embed", points=1)
def grid_matches_closed_form(student, g):
    """build_grid(H, W) is [x, y, 1-x, 1-y] with x = j/(W-1), y = i/(H-1), non-square too."""
    for H, W in ((5, 7), (4, 4), (2, 3)):
        got = student.run(probes.grid, height=H, width=W)
        if tuple(got.shape) == (W, H, 4) and H != W:
            expect(False, f"build_grid({H}, {W}): expected shape (H, W, 4) = {(H, W, 4)}, got "
                          f"{tuple(got.shape)}: rows (y) first, then columns (x)")
        expect_close(got, ref_grid(H, W), f"build_grid({H}, {W})", diagnoses=grid_diagnoses(H, W))


@lab.check("slots.position_embed", points=2)
def position_embed_matches_reference(student, g):
    """x + Linear(grid) for non-square maps and two batch sizes; gradients of proj and x."""
    for B, H, W in ((2, 5, 7), (1, 3, 3)):
        dim = 6
        state = pos_state(g, dim)
        x = rand(g, B, H, W, dim)
        grad_out = rand(g, B, H, W, dim)
        got = probes_out = student.run(probes.position_embed, dim=dim, state=state, x=x,
                                       grad_out=grad_out)
        want = ref_pos(state, "", x)
        expect_close(probes_out["out"], want, f"SoftPositionEmbed output for x of shape "
                     f"{(B, H, W, dim)}", diagnoses={
            "the grid flattened column by column (x-major) while the features are flattened row "
            "by row: build the grid as (H, W, 4) and add it before flattening":
                ref_pos(state, "", x, "columns"),
            "x and y swapped in the grid (x must vary along the width)": ref_pos(state, "", x, "swapped"),
            "no position embedding added": ref_pos(state, "", x, "none"),
        })
        w = state["proj.weight"].double().requires_grad_()
        b = state["proj.bias"].double().requires_grad_()
        (ref_pos({"proj.weight": w, "proj.bias": b}, "", x) * grad_out.double()).sum().backward()
        expect_gradients(got.get("grads", {}), {"proj.weight": w.grad, "proj.bias": b.grad},
                         "SoftPositionEmbed")
        expect_close(got.get("input_grad"), grad_out.double(),
                     "SoftPositionEmbed: gradient of the input (x + ... passes it unchanged)")
    got = student.run(probes.position_embed, dim=dim, state=state, x=x, double=True)
    expect_close(got["out"], want, "SoftPositionEmbed in float64 (the grid must follow x's dtype)")


# ---------------------------------------------------------------------------- slots.init

@lab.check("slots.init", points=1)
def init_slots_follow_the_gaussian(student, g):
    """2000 draws per feature: mean mu and standard deviation exp(log_sigma), per feature; every
    slot of every batch item drawn apart."""
    dim, num_slots, batch = 6, 4, 500
    state = slot_state(g, dim)
    state["slots_log_sigma"] = torch.linspace(-1.2, 0.6, dim).reshape(1, 1, dim)
    got = student.run(probes.init_slots, num_slots=num_slots, dim=dim, state=state,
                      batch_size=batch)["slots"]
    got = expect_shape(got, (batch, num_slots, dim), "init_slots(500) with K=4, D=6").double()
    mu, ls = state["slots_mu"].double().reshape(dim), state["slots_log_sigma"].double().reshape(dim)
    samples = got.reshape(-1, dim)
    std = samples.std(0)
    n = len(samples)
    expect(bool((samples[1:] != samples[:1]).any(1).all()),
           "init_slots gave the same slot twice: draw new noise for every slot of every item "
           "(noise of shape (B, K, D), not (1, 1, D) or (1, K, D))")
    if torch.allclose(std, ls.abs(), rtol=0.1):
        expect(False, f"init_slots: the slots' standard deviation {std.numpy().round(3)} matches "
                      f"log_sigma itself: sigma = exp(log_sigma)", "sigma = log_sigma (no exp)")
    expect(bool(((samples.mean(0) - mu).abs() <= 5 * ls.exp() / n**0.5).all()),
           f"init_slots: the mean over 2000 draws, {samples.mean(0).numpy().round(3)}, is not "
           f"slots_mu {mu.numpy().round(3)}: slots = mu + exp(log_sigma) * noise")
    expect(bool(((std / ls.exp() - 1).abs() < 0.1).all()),
           f"init_slots: the standard deviation over 2000 draws, {std.numpy().round(3)}, is not "
           f"exp(log_sigma) = {ls.exp().numpy().round(3)}")


@lab.check("slots.init", points=1)
def init_slots_pass_gradients(student, g):
    """The reparameterisation: d<slots, G>/d mu = sum G and d/d log_sigma = sum G (slots - mu)."""
    dim, num_slots, batch = D, K, 3
    state = slot_state(g, dim)
    grad_out = rand(g, batch, num_slots, dim)
    got = student.run(probes.init_slots, num_slots=num_slots, dim=dim, state=state,
                      batch_size=batch, grad_out=grad_out)
    slots = expect_shape(got["slots"], (batch, num_slots, dim), "init_slots(3)").double()
    grads = got.get("grads", {})
    for name in ("slots_mu", "slots_log_sigma"):
        grad = grads.get(name)
        expect(grad is not None and bool(grad.abs().sum() > 0),
               f"init_slots: {name} got no gradient (or only zeros); it matches torch.normal, "
               f"which passes no gradient to mu or sigma: write mu + exp(log_sigma) * "
               f"torch.randn(...)", "torch.normal for the initial slots")
    want_mu = grad_out.double().sum((0, 1)).reshape(1, 1, dim)
    want_ls = (grad_out.double() * (slots - state["slots_mu"].double())).sum((0, 1)).reshape(1, 1, dim)
    expect_gradients(grads, {"slots_mu": want_mu, "slots_log_sigma": want_ls}, "init_slots")



# ------------------------------------------------------------------------ slots.attention

def step_diagnoses(state, slots, k, v, eps):
    def alt(**kw):
        return ref_step(state, slots, k, v, eps, **kw)
    return {
        "softmax over the inputs instead of the slots (slots must compete for each input)":
            alt(softmax="inputs"),
        "no renormalisation over the inputs (divide the attention + eps by its sum over N)":
            alt(renorm=False),
        "no LayerNorm on the slots before q": alt(norm_slots=False),
        "no residual around the slot MLP (slots = slots + mlp(norm_mlp(slots)))": alt(residual=False),
        "no 1/sqrt(D) scale on the logits": alt(scale=False),
        "eps added after renormalising (add it first, then divide by the sum over N)":
            alt(eps_where="after"),
        "no eps": alt(eps_where="none"),
        "the GRU's input and hidden state swapped (gru(updates, old slots))": alt(swap_gru=True),
    }


def expect_step(got, want, diagnoses, what):
    slots, attn = got
    expect_close(slots, want[0], f"{what}: new slots",
                 diagnoses={m: w[0] for m, w in diagnoses.items()})
    expect_close(attn, want[1], f"{what}: attention (B, K, N), softmax over the slots", diagnoses={
        "the renormalised weights (sum 1 over the inputs): return the attention before eps "
        "and renormalisation": want[2]} | {m: w[1] for m, w in diagnoses.items()})


@lab.check("slots.attention", points=2)
def step_matches_reference(student, g):
    """One iteration equals the float64 reference (torch's GRUCell, same weights), for two
    sizes, batch of 1 and an eps large enough to show where it is added."""
    for B, N, eps in ((2, 7, 1e-8), (1, 5, 0.05)):
        state = slot_state(g)
        slots, k, v = rand(g, B, K, D), rand(g, B, N, D), rand(g, B, N, D)
        got = student.run(probes.step, num_slots=K, dim=D, mlp_dim=MLP, eps=eps, state=state,
                          slots=slots, k=k, v=v)
        sd, kd, vd = slots.double(), k.double(), v.double()
        with torch.no_grad():
            want = ref_step(state, sd, kd, vd, eps)
            weights = ref_step(state, sd, kd, vd, eps, returns="weights")[1]
            diagnoses = step_diagnoses(state, sd, kd, vd, eps)
        expect(isinstance(got, list) and len(got) == 2,
               "SlotAttention.step must return (slots, attention)")
        expect_step(got, (*want, weights), diagnoses, f"step with B={B}, N={N}, eps={eps:g}")


@lab.check("slots.attention", points=1)
def step_gradients(student, g):
    """Every weight's gradient and the slots', k's and v's equal the reference's."""
    B, N = 2, 6
    state = slot_state(g)
    slots, k, v = rand(g, B, K, D), rand(g, B, N, D), rand(g, B, N, D)
    grad_slots, grad_attn = rand(g, B, K, D), rand(g, B, K, N)
    got = student.run(probes.step, num_slots=K, dim=D, mlp_dim=MLP, eps=1e-8, state=state,
                      slots=slots, k=k, v=v, grad_out=[grad_slots, grad_attn])
    ref_state = {n: t.double().requires_grad_() for n, t in state.items()}
    gru = gru_cell(ref_state)
    inputs = [t.double().requires_grad_() for t in (slots, k, v)]
    new, attn = ref_step(ref_state, *inputs, 1e-8, gru)
    ((new * grad_slots.double()).sum() + (attn * grad_attn.double()).sum()).backward()
    want = {n: t.grad for n, t in ref_state.items() if t.grad is not None}
    want.update({f"gru.{n}": p.grad for n, p in gru.named_parameters()})
    expect("grads" in got, "SlotAttention.step: no gradients came back (is the output detached?)")
    expect_gradients(got["grads"], want, "SlotAttention.step")
    for name, t, mine in zip(("slots", "k", "v"), inputs, got["input_grads"]):
        expect_close(mine, t.grad, f"SlotAttention.step: gradient of {name}")


@lab.check("slots.attention", points=2)
def forward_matches_reference(student, g):
    """T iterations (T = 3 and T = 1) from the given initial slots, k and v computed once from
    the LayerNormed inputs; equals the float64 reference."""
    for B, N, iters in ((2, 9, 3), (1, 4, 1)):
        state = slot_state(g)
        inputs, slots = rand(g, B, N, D, scale=2.0), rand(g, B, K, D)
        got = student.run(probes.slot_attention, num_slots=K, dim=D, mlp_dim=MLP, iters=iters,
                          state=state, inputs=inputs, slots=slots)
        with torch.no_grad():
            want = ref_slot_attention(state, inputs, slots, iters, 1e-8)
            diagnoses = {
                "inputs not LayerNormed (norm_inputs) before k and v":
                    ref_slot_attention(state, inputs, slots, iters, 1e-8, norm_inputs=False),
                f"{iters + 1} iterations instead of T = {iters}":
                    ref_slot_attention(state, inputs, slots, iters + 1, 1e-8),
            }
            if iters > 1:
                diagnoses[f"{iters - 1} iterations instead of T = {iters}"] = \
                    ref_slot_attention(state, inputs, slots, iters - 1, 1e-8)
            diagnoses |= {m: w for m, w in (
                (m, ref_slot_attention(state, inputs, slots, iters, 1e-8, **kw)) for m, kw in (
                    ("softmax over the inputs instead of the slots", {"softmax": "inputs"}),
                    ("no renormalisation over the inputs", {"renorm": False}),
                    ("no LayerNorm on the slots before q", {"norm_slots": False}),
                    ("no residual around the slot MLP", {"residual": False})))}
        expect(isinstance(got, list) and len(got) == 2,
               "SlotAttention.forward must return (slots, attention)")
        expect_close(got[0], want[0], f"SlotAttention slots after T={iters} (B={B}, N={N})",
                     diagnoses={m: w[0] for m, w in diagnoses.items()})
        expect_close(got[1], want[1], f"SlotAttention attention of the last iteration (B={B}, N={N})")


@lab.check("slots.attention", points=1)
def permutation_symmetry(student, g):
    """Permuting the initial slots permutes the output slots and attention rows; permuting the
    inputs leaves the slots unchanged and permutes the attention's columns."""
    B, N = 2, 8
    state = slot_state(g)
    inputs, slots = rand(g, B, N, D, scale=2.0), rand(g, B, K, D)
    slot_perm, input_perm = torch.randperm(K, generator=g), torch.randperm(N, generator=g)
    while torch.equal(slot_perm, torch.arange(K)):
        slot_perm = torch.randperm(K, generator=g)
    run = dict(num_slots=K, dim=D, mlp_dim=MLP, iters=3, state=state)
    base = student.run(probes.slot_attention, inputs=inputs, slots=slots, **run)
    by_slots = student.run(probes.slot_attention, inputs=inputs, slots=slots[:, slot_perm], **run)
    by_inputs = student.run(probes.slot_attention, inputs=inputs[:, input_perm], slots=slots, **run)
    with torch.no_grad():
        want = ref_slot_attention(state, inputs, slots, 3, 1e-8)
    expect_close(base[0], want[0], "SlotAttention slots (the check's first run)")
    expect_close(by_slots[0], base[0][:, slot_perm],
                 "slots from permuted initial slots vs the permuted slots (equivariance)")
    expect_close(by_slots[1], base[1][:, slot_perm],
                 "attention from permuted initial slots vs the permuted attention rows")
    expect_close(by_inputs[0], base[0], "slots from permuted inputs vs the slots (invariance)")
    expect_close(by_inputs[1], base[1][:, :, input_perm],
                 "attention from permuted inputs vs the permuted attention columns")
    attn = base[1]
    expect_close(attn.sum(1), torch.ones(B, N), "attention summed over the slots (must be 1 "
                 "for each input: softmax over the slots)")


@lab.check("slots.attention", points=1)
def forward_samples_slots_when_none(student, g):
    """forward(inputs) with no slots calls init_slots (the grader's noise put in its place) and
    passes gradients back to slots_mu and slots_log_sigma."""
    B, N = 2, 5
    state = slot_state(g)
    inputs, noise, grad_out = rand(g, B, N, D), rand(g, B, K, D), rand(g, B, K, D)
    got = student.run(probes.sampled_forward, num_slots=K, dim=D, mlp_dim=MLP, state=state,
                      inputs=inputs, noise=noise, grad_out=grad_out)
    ref_state = {n: t.double().requires_grad_() for n, t in state.items()}
    init = ref_state["slots_mu"] + ref_state["slots_log_sigma"].exp() * noise.double()
    slots, _ = ref_slot_attention(ref_state, inputs, init, 3, 1e-8)
    (slots * grad_out.double()).sum().backward()
    expect_close(got["out"], slots.detach(), "SlotAttention(inputs) with the initial slots "
                 "from init_slots (the grader's noise)")
    expect_gradients(got.get("grads", {}), {"slots_mu": ref_state["slots_mu"].grad,
                                            "slots_log_sigma": ref_state["slots_log_sigma"].grad},
                     "SlotAttention(inputs)")


# The training recipe of learns_to_reconstruct and its pass mark: multi-dSprites scenes at
# 8 x 8 pixels (64 px subsampled by 8), a small autoencoder, 300 Adam steps. In the seconds
# a check may take the foreground ARI stays at chance (it rises after about a minute of
# training at 16 px; docs/labs/slots.md), so the check measures reconstruction instead: the
# held-out MSE must fall well below the best constant image's (about 0.082), which needs the
# scene's content to pass through the slots. The mark sits below the reference's worst seed
# (benchmarks/calibrate.py slots; numbers in docs/labs/slots.md).
TRAIN = dict(steps=300, batch_size=32, lr=5e-3)
TRAIN_DATA = dict(train=300, val=100, subsample=8)
TRAIN_CONFIG = dict(image_size=8, hidden=16, encoder_layers=2, slot_dim=16, num_slots=4,
                    mlp_dim=32, iters=3)
TRAIN_THRESHOLD = 0.06


def scenes(split, n, seed):
    from vislab.data.multi_object import MultiObjectScenes

    data = MultiObjectScenes("multi-dsprites", split, n=n, seed=seed)
    s = TRAIN_DATA["subsample"]
    return torch.stack([data[i][0][:, ::s, ::s] for i in range(n)]).contiguous()


def reference_reconstruction(state, images, noise):
    """The grader's model with the returned weights: the images' reconstruction (float64)."""
    c = TRAIN_CONFIG
    inputs = ref_encoder(sub(state, "encoder."), images, c["encoder_layers"])
    sa = sub(state, "slot_attention.")
    init = sa["slots_mu"].double() + sa["slots_log_sigma"].double().exp() * noise.double()
    slots, _ = ref_slot_attention(sa, inputs, init, c["iters"], 1e-8)
    return ref_decoder(sub(state, "decoder."), slots, (c["image_size"],) * 2, 0, 3)[0]


def reconstruction_error(student, seed: int) -> float:
    """Held-out MSE of the grader's model with the student's trained weights."""
    data_seed = seed % 1000
    x_train = scenes("train", TRAIN_DATA["train"], data_seed)
    x_val = scenes("val", TRAIN_DATA["val"], data_seed)
    state = student.run(probes.train_autoencoder, config=TRAIN_CONFIG, images=x_train, seed=seed,
                        **TRAIN)
    expect(isinstance(state, dict), "the training probe returned no weights")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(x_val), TRAIN_CONFIG["num_slots"], TRAIN_CONFIG["slot_dim"],
                        generator=g)
    with torch.no_grad():
        recon = reference_reconstruction(state, x_val, noise)
    return ((recon - x_val.double()) ** 2).mean().item()


@lab.check("slots.attention", points=2, timeout=60)
def learns_to_reconstruct(student, g):
    """The student's SlotAttention between a reference encoder and decoder, trained for 300
    steps on multi-dSprites (8 x 8), reconstructs held-out scenes (the grader's model, the
    trained weights) well below the best constant image."""
    err = reconstruction_error(student, int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    expect(err <= TRAIN_THRESHOLD,
           f"held-out reconstruction MSE {err:.4f} after {TRAIN['steps']} steps is above "
           f"{TRAIN_THRESHOLD} (a constant image scores about 0.082): the slots carry little of "
           f"the scene (are the slots detached? does every parameter train?)")


# -------------------------------------------------------------------------- slots.decoder

def decoder_setup(g, B, Ks, dim, hidden, resolution, upsamples, channels=3):
    state = decoder_state(g, dim, hidden, upsamples, channels)
    return state, rand(g, B, Ks, dim)


def expect_decoder(got, want, what, diagnoses=None):
    expect(isinstance(got, list) and len(got) == 3,
           "SpatialBroadcastDecoder must return (image, masks, rgb)")
    names = ("image", "masks", "rgb")
    for i, name in enumerate(names):
        expect_close(got[i], want[i], f"{what}: {name}",
                     diagnoses={m: w[i] for m, w in (diagnoses or {}).items()})


@lab.check("slots.decoder", points=2)
def decoder_matches_reference(student, g):
    """Broadcast onto a non-square grid, position embedding, transposed convs, masks softmaxed
    over the slots, image = sum of masks * rgb; equals the float64 reference."""
    B, Ks, dim, hidden, res, ups = 2, 3, 6, 5, (3, 4), 1
    state, slots = decoder_setup(g, B, Ks, dim, hidden, res, ups)
    got = student.run(probes.decoder, dim=dim, hidden=hidden, resolution=res, upsamples=ups,
                      out_channels=3, state=state, slots=slots)
    with torch.no_grad():
        want = ref_decoder(state, slots, res, ups, 3)
        diagnoses = {
            "masks softmaxed over the pixels instead of the slots":
                ref_decoder(state, slots, res, ups, 3, mask_softmax="pixels"),
            "masks = sigmoid(alpha), not normalised over the slots":
                ref_decoder(state, slots, res, ups, 3, mask_softmax="sigmoid"),
            "alpha used as the mask without a softmax over the slots":
                ref_decoder(state, slots, res, ups, 3, mask_softmax="none"),
            "no position embedding on the broadcast slots":
                ref_decoder(state, slots, res, ups, 3, pos="none"),
        }
    expect_decoder(got, want, f"decoder of slots {(B, Ks, dim)} broadcast to {res}", diagnoses)


@lab.check("slots.decoder", points=1)
def masks_sum_to_one(student, g):
    """Masks lie in [0, 1] and sum to 1 over the slots at every pixel (batch of 1, 4 slots,
    two upsamplings, 1 colour channel), and match the reference."""
    B, Ks, dim, hidden, res, ups = 1, 4, 5, 4, (2, 2), 2
    state, slots = decoder_setup(g, B, Ks, dim, hidden, res, ups, channels=1)
    got = student.run(probes.decoder, dim=dim, hidden=hidden, resolution=res, upsamples=ups,
                      out_channels=1, state=state, slots=slots)
    expect(isinstance(got, list) and len(got) == 3,
           "SpatialBroadcastDecoder must return (image, masks, rgb)")
    masks = expect_shape(got[1], (B, Ks, 1, 8, 8), "masks")
    expect(bool((masks >= 0).all() and (masks <= 1).all()), "masks must lie in [0, 1]")
    expect_close(masks.sum(1), torch.ones(B, 1, 8, 8), "masks summed over the slots (must be 1 "
                 "at every pixel: softmax over the slots, dim 1)")
    with torch.no_grad():
        want = ref_decoder(state, slots, res, ups, 1)
    expect_decoder(got, want, "decoder with 1 colour channel")


@lab.check("slots.decoder", points=1)
def decoder_gradients(student, g):
    """Gradients of the slots and of the position embedding and conv weights."""
    B, Ks, dim, hidden, res, ups = 2, 2, 4, 3, (2, 3), 1
    state, slots = decoder_setup(g, B, Ks, dim, hidden, res, ups)
    grad_out = rand(g, B, 3, 4, 6)
    got = student.run(probes.decoder, dim=dim, hidden=hidden, resolution=res, upsamples=ups,
                      out_channels=3, state=state, slots=slots, grad_out=grad_out)
    ref_state = {n: t.double().requires_grad_() for n, t in state.items()}
    s = slots.double().requires_grad_()
    image = ref_decoder(ref_state, s, res, ups, 3)[0]
    expect_shape(got["out"][0], image.shape, "decoded image")
    (image * grad_out.double()).sum().backward()
    expect("grads" in got, "the decoded image carries no gradient")
    expect_gradients(got["grads"], {n: ref_state[n].grad for n in
                                    ("pos.proj.weight", "convs.0.weight", "convs.4.weight")},
                     "SpatialBroadcastDecoder")
    expect_close(got["input_grad"], s.grad, "SpatialBroadcastDecoder: gradient of the slots")


# ------------------------------------------------------------------------------ slots.ari

def sklearn_ari(true, pred, keep=None):
    out = []
    for b in range(len(true)):
        t, p = true[b].numpy(), pred[b].numpy()
        if keep is not None:
            t, p = t[keep[b].numpy()], p[keep[b].numpy()]
        out.append(adjusted_rand_score(t, p))
    return torch.tensor(out, dtype=torch.float64)


def rand_index(true, pred, keep=None):
    """The unadjusted Rand index and the ARI with n_ij^2 pair counts, for diagnoses."""
    ri, squared = [], []
    for b in range(len(true)):
        t, p = true[b], pred[b]
        if keep is not None:
            t, p = t[keep[b]], p[keep[b]]
        n = len(t)
        table = torch.zeros(int(t.max()) + 1 if n else 1, int(p.max()) + 1 if n else 1,
                            dtype=torch.float64)
        if n:
            table.index_put_((t, p), torch.ones(n, dtype=torch.float64), accumulate=True)
        pairs = lambda m: m * (m - 1) / 2
        total = pairs(torch.tensor(float(n)))
        a, c = pairs(table.sum(1)).sum(), pairs(table.sum(0)).sum()
        idx = pairs(table).sum()
        ri.append(((total + 2 * idx - a - c) / total).item() if total > 0 else 1.0)
        sq_idx, sq_a, sq_c = (table**2).sum(), (table.sum(1) ** 2).sum(), (table.sum(0) ** 2).sum()
        exp = sq_a * sq_c / n**2 if n else 0.0
        den = (sq_a + sq_c) / 2 - exp
        squared.append(((sq_idx - exp) / den).item() if den else 1.0)
    return torch.tensor(ri), torch.tensor(squared)


def ari_diagnoses(true, pred, keep=None):
    ri, squared = rand_index(true, pred, keep)
    return {"the Rand index without the adjustment for chance (subtract the expected index "
            "and divide by maximum - expected)": ri,
            "counts squared (n_ij^2) instead of pairs C(n_ij, 2) = n_ij (n_ij - 1) / 2": squared}


@lab.check("slots.ari", points=2)
def ari_matches_sklearn(student, g):
    """ARI of random labelings with 1 to 6 segments equals sklearn's adjusted_rand_score."""
    B, N = 6, 60
    true = torch.stack([torch.randint(0, s, (N,), generator=g) for s in (2, 3, 4, 5, 6, 3)])
    pred = torch.stack([torch.randint(0, s, (N,), generator=g) for s in (3, 2, 4, 6, 2, 5)])
    pred[0] = (true[0] + 1) % 2             # the same partition, other ids: ARI 1
    pred[1] = torch.where(torch.rand(N, generator=g) < 0.8, true[1], pred[1])  # close to it
    got = student.run(probes.ari, true=true, pred=pred)
    expect_close(expect_shape(got, (B,), "adjusted_rand_index of 6 images"), sklearn_ari(true, pred),
                 "ARI vs sklearn.metrics.adjusted_rand_score", atol=1e-6, rtol=1e-6,
                 diagnoses=ari_diagnoses(true, pred))


@lab.check("slots.ari", points=1)
def ari_degenerate_cases(student, g):
    """One segment in both (1), one in the truth only (0), fewer predicted segments than true
    ones, every pixel alone in both (1), the same partition with other ids (1)."""
    N = 12
    true = torch.stack([torch.zeros(N, dtype=torch.long), torch.zeros(N, dtype=torch.long),
                        torch.randint(0, 4, (N,), generator=g), torch.arange(N),
                        torch.arange(N) % 3, torch.randint(0, 5, (N,), generator=g)])
    pred = torch.stack([torch.full((N,), 3), torch.randint(0, 4, (N,), generator=g),
                        torch.randint(0, 2, (N,), generator=g), torch.arange(N).flip(0),
                        (torch.arange(N) % 3 + 1) * 2, torch.zeros(N, dtype=torch.long)])
    got = student.run(probes.ari, true=true, pred=pred)
    want = sklearn_ari(true, pred)
    got = expect_shape(got, (6,), "adjusted_rand_index of 6 images")
    expect(bool(torch.isfinite(got).all()),
           f"ARI gave {got.tolist()} on degenerate labelings: where maximum - expected is 0 "
           f"(both labelings one segment, or both every pixel alone) ARI is 1")
    expect_close(got, want, "ARI on degenerate labelings (rows: both one segment, truth one "
                 "segment, fewer predicted segments, every pixel alone, other ids, prediction one "
                 "segment)", atol=1e-6, rtol=1e-6)


@lab.check("slots.ari", points=2)
def foreground_ari_leaves_out_background(student, g):
    """Foreground ARI equals sklearn's ARI on exactly the pixels whose true id is not 0; an image
    with no (or one) foreground pixel gives 1."""
    N = 40
    true = torch.randint(0, 4, (5, N), generator=g)
    true[3] = 0                      # all background
    true[4] = 0
    true[4, 7] = 2                   # one foreground pixel
    pred = torch.randint(0, 4, (5, N), generator=g)
    pred[0] = torch.where(true[0] > 0, true[0] + 3, torch.randint(0, 7, (N,), generator=g))
    got = student.run(probes.fg_ari, true=true, pred=pred)
    keep = true != 0
    want = sklearn_ari(true, pred, keep)
    expect_close(expect_shape(got, (5,), "foreground_ari of 5 images"), want,
                 "foreground ARI vs sklearn on the true foreground pixels", atol=1e-6, rtol=1e-6,
                 diagnoses={"the ARI with the background pixels kept (leave out every pixel whose "
                            "TRUE id is the background)": sklearn_ari(true, pred),
                            "pixels left out where the PREDICTED id is 0 instead of the true one":
                                sklearn_ari(true, pred, pred != 0)} | ari_diagnoses(true, pred, keep))


# -------------------------------------------------------------------------- slots.library

@lab.check("slots.library", points=1)
def library_stacks_every_slot(student, g):
    """build_library: 7 images in batches of at most 3; image 0's slots first, then image 1's."""
    images = rand(g, 7, 3, 4, 4)
    weight = rand(g, K * D, 3 * 4 * 4, scale=0.3)
    got = student.run(probes.library, images=images, weight=weight, num_slots=K, batch_size=3)
    want = (images.flatten(1).double() @ weight.double().T).reshape(7, K, D).reshape(7 * K, D)
    sizes = got["batch_sizes"]
    expect(bool(sizes) and max(sizes) <= 3 and sum(sizes) == 7,
           f"build_library called encode on batches of {sizes}: at most batch_size (3) images "
           f"each, every image once")
    expect(not any(got["grad_enabled"]), "build_library called encode with gradients enabled: "
                                         "run it under torch.no_grad()")
    expect_close(got["library"], want, "slot library (21, D)", diagnoses={
        "the slots ordered slot-major (all images' slot 0 first): flatten (n, K, D) to (n*K, D)":
            want.reshape(7, K, D).transpose(0, 1).reshape(7 * K, D)})


@lab.check("slots.library", points=1)
def clusters_match_kmeans(student, g):
    """cluster_library on 4 well-separated groups gives the partition K-means finds."""
    centres = rand(g, 4, 6, scale=6.0)
    which = torch.randint(0, 4, (120,), generator=g)
    which[:4] = torch.arange(4)
    library = centres[which] + rand(g, 120, 6, scale=0.3)
    got = student.run(probes.cluster, library=library, num_clusters=4, seed=0)
    got = expect_shape(got, (120,), "cluster labels")
    expect(got.dtype == torch.int64 and int(got.min()) >= 0 and int(got.max()) < 4,
           f"cluster labels must be int64 in 0..3, got {got.dtype} in {int(got.min())}.."
           f"{int(got.max())}")
    want = KMeans(4, n_init=4, random_state=0).fit(library.double().numpy()).labels_
    score = adjusted_rand_score(want, got.numpy())
    expect(score > 0.999, f"the clusters differ from K-means' (ARI {score:.3f} with "
                          f"sklearn.cluster.KMeans(4) on the library's rows)")


@lab.check("slots.library", points=2)
def sampling_takes_distinct_clusters_uniformly(student, g):
    """600 scenes of 3 slots: each slot is a library row; a scene's slots come from different
    clusters; clusters are chosen uniformly (not by size) and members at random."""
    sizes = [2, 4, 6, 10, 14, 20, 24, 30, 40, 50]
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    library = rand(g, len(labels), D)
    got = student.run(probes.sample, library=library, labels=labels, num_scenes=600, num_slots=3,
                      seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)), again=True)
    expect(isinstance(got, list) and len(got) == 2, "sample_slots must return a tensor")
    first, got = got
    got = expect_shape(got, (600, 3, D), "sampled slots (600 scenes, 3 slots)")
    expect(torch.equal(first, got), "sample_slots gave different scenes for two generators "
                                    "seeded alike: draw every random number from `generator`")
    match = (got.reshape(-1, 1, D) == library[None]).all(-1)         # (1800, M)
    expect(bool(match.any(1).all()),
           "some sampled slots are not slots of the library: pick library rows (a cluster's "
           "members), not cluster centres or new vectors")
    row = match.float().argmax(1)
    cluster = labels[row].reshape(600, 3)
    same = (cluster[:, :, None] == cluster[:, None, :]).sum((1, 2)) > 3
    expect(not bool(same.any()),
           f"{int(same.sum())} of 600 scenes took two slots from one cluster: choose num_slots "
           f"DIFFERENT clusters (torch.randperm), with replacement only within none")
    counts = torch.bincount(cluster.flatten(), minlength=len(sizes)).double()
    expected = 600 * 3 / len(sizes)                                   # 180 per cluster
    expect(bool(((counts - expected).abs() < 60).all()),
           f"clusters were chosen {counts.long().tolist()} times (from the smallest to the "
           f"largest, sizes {sizes}); uniformly would be about {expected:.0f} each: choose the "
           f"cluster first, then a member (not a library row at random)")
    distinct = len(row.unique())
    expect(distinct >= 0.8 * len(labels),
           f"only {distinct} of {len(labels)} library slots were ever drawn: pick a random "
           f"member of each chosen cluster, not always the same one")
