"""The checks of diffusion.time_embedding, diffusion.resblock and diffusion.cross_attention
(the denoising UNet's parts), registered on the diffusion lab by autograder/diffusion.py at their
place in the task order (register(lab)). References: the sinusoidal embedding in closed form, and
a ResBlock, attention and TransformerBlock written here from functional torch ops (F.group_norm,
F.conv2d, F.layer_norm, F.linear) on the grader's weights, in float64.
"""
import math

import torch
import torch.nn.functional as F

from vislab.grading import expect, expect_close, expect_gradients, expect_shape

from . import diffusion_probes as probes

_CHECKS: list = []   # (task, points, timeout, fn) in the order of this file


def check(task: str, points: float, timeout: float = 10.0):
    """lab.check, deferred: register(lab) registers the checks in the order written here."""
    def deco(fn):
        _CHECKS.append((task, points, timeout, fn))
        return fn
    return deco


def register(lab) -> None:
    for task, points, timeout, fn in _CHECKS:
        lab.check(task, points=points, timeout=timeout)(fn)


def _seed(g) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=g))


# ---------------------------------------------------------------- diffusion.time_embedding

def ref_embedding(t, dim, order="sin_cos", shift=0, max_period=10000.0):
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    f = torch.exp(-math.log(max_period) * i / (half - shift))
    ang = t.double()[:, None] * f[None]
    parts = [ang.sin(), ang.cos()] if order == "sin_cos" else [ang.cos(), ang.sin()]
    emb = torch.cat(parts, -1)
    if order == "interleaved":
        emb = torch.stack([ang.sin(), ang.cos()], -1).flatten(1)
    return F.pad(emb, (0, dim % 2))


# float32 angles t * f_i for t up to 1000 are rounded by about 1000 * 6e-8: an atol of 5e-4
# accepts any float32 computation and still separates every named mistake (errors of order 1).
EMB_TOL = dict(atol=5e-4, rtol=0)


@check("diffusion.time_embedding", points=1)
def embedding_closed_form(student, g):
    """timestep_embedding for t in {0, 1, 999, and random steps}, dim 16, against the closed
    form: sines first, frequencies 10000^(-i / half)."""
    t = torch.cat([torch.tensor([0, 1, 999]), torch.randint(0, 1000, (5,), generator=g)])
    got = student.run(probes.time_embedding, t=t, dim=16)
    expect_close(got, ref_embedding(t, 16), "timestep_embedding(t, 16)", **EMB_TOL, diagnoses={
        "the sin and cos halves swapped (sines first, then cosines)": ref_embedding(t, 16, "cos_sin"),
        "sin and cos interleaved (the handout concatenates the halves)":
            ref_embedding(t, 16, "interleaved"),
        "frequencies 10000^(-i / (half - 1)) (the handout divides by half)":
            ref_embedding(t, 16, shift=1)})


@check("diffusion.time_embedding", points=1)
def embedding_odd_dim_and_float_t(student, g):
    """An odd dim (7: a zero last column), fractional t as a float tensor, a batch of one."""
    t = torch.rand(4, generator=g) * 50
    got = student.run(probes.time_embedding, t=t, dim=7)
    expect_shape(got, (4, 7), "timestep_embedding(t, 7)")
    expect_close(got, ref_embedding(t, 7), "timestep_embedding(fractional t, 7)", **EMB_TOL)
    t1 = torch.tensor([37])
    got = student.run(probes.time_embedding, t=t1, dim=10)
    expect_close(got, ref_embedding(t1, 10), "timestep_embedding(one t, 10)", **EMB_TOL)
    t2 = torch.tensor([0, 3, 17, 60])
    got = student.run(probes.time_embedding, t=t2, dim=8, max_period=100.0)
    expect_close(got, ref_embedding(t2, 8, max_period=100.0),
                 "timestep_embedding(t, 8, max_period=100)", **EMB_TOL, diagnoses={
                     "max_period ignored (10000 hard-coded; use the argument)":
                         ref_embedding(t2, 8)})


# ---------------------------------------------------------------------- diffusion.resblock

def resblock_state(g, cin, cout, tdim):
    s = {"norm1.weight": 1 + 0.3 * torch.randn(cin, generator=g),
         "norm1.bias": 0.2 * torch.randn(cin, generator=g),
         "conv1.weight": torch.randn(cout, cin, 3, 3, generator=g) / math.sqrt(9 * cin),
         "conv1.bias": 0.2 * torch.randn(cout, generator=g),
         "time_proj.weight": torch.randn(cout, tdim, generator=g) / math.sqrt(tdim),
         "time_proj.bias": 0.2 * torch.randn(cout, generator=g),
         "norm2.weight": 1 + 0.3 * torch.randn(cout, generator=g),
         "norm2.bias": 0.2 * torch.randn(cout, generator=g),
         "conv2.weight": torch.randn(cout, cout, 3, 3, generator=g) / math.sqrt(9 * cout),
         "conv2.bias": 0.2 * torch.randn(cout, generator=g)}
    if cin != cout:
        s["skip.weight"] = torch.randn(cout, cin, 1, 1, generator=g) / math.sqrt(cin)
        s["skip.bias"] = 0.2 * torch.randn(cout, generator=g)
    return s


def ref_resblock(S, x, temb, groups, norm_after=(), silu_temb=True, time_after=False,
                 skip=True, drop_mask=None):
    def stage(h, n):
        w, b = S[f"norm{n}.weight"], S[f"norm{n}.bias"]
        return (F.group_norm(F.silu(h), groups, w, b) if n in norm_after
                else F.silu(F.group_norm(h, groups, w, b)))
    tt = F.linear(F.silu(temb) if silu_temb else temb, S["time_proj.weight"], S["time_proj.bias"])
    h = F.conv2d(stage(x, 1), S["conv1.weight"], S["conv1.bias"], padding=1)
    if not time_after:
        h = h + tt[:, :, None, None]
    h = stage(h, 2)
    if drop_mask is not None:
        h = h * drop_mask
    h = F.conv2d(h, S["conv2.weight"], S["conv2.bias"], padding=1)
    if time_after:
        h = h + tt[:, :, None, None]
    res = F.conv2d(x, S["skip.weight"], S["skip.bias"]) if "skip.weight" in S else x
    return h + res if skip else h


def resblock_case(student, g, cin, cout, groups, B, H, W, what):
    tdim = 12
    state = resblock_state(g, cin, cout, tdim)
    x = torch.randn(B, cin, H, W, generator=g)
    temb = torch.randn(B, tdim, generator=g)
    grad_out = torch.randn(B, cout, H, W, generator=g)
    got = student.run(probes.resblock, in_channels=cin, out_channels=cout, time_dim=tdim,
                      dropout=0.3, groups=groups, state=state, x=x, temb=temb, grad_out=grad_out,
                      train=False)
    S = {k: v.double().requires_grad_() for k, v in state.items()}
    xd, td = x.double().requires_grad_(), temb.double().requires_grad_()
    want = ref_resblock(S, xd, td, groups)
    (want * grad_out.double()).sum().backward()
    Sd = {k: v.detach() for k, v in S.items()}
    xx, tt = x.double(), temb.double()
    expect_close(got["out"], want.detach(), what, diagnoses={
        "GroupNorm after the activation (normalise first: SiLU(GroupNorm(x)))":
            ref_resblock(Sd, xx, tt, groups, norm_after=(1, 2)),
        "GroupNorm after the activation in the first stage (norm1 before SiLU)":
            ref_resblock(Sd, xx, tt, groups, norm_after=(1,)),
        "GroupNorm after the activation in the second stage (norm2 before SiLU)":
            ref_resblock(Sd, xx, tt, groups, norm_after=(2,)),
        "the time embedding projected without SiLU first (time_proj(SiLU(temb)))":
            ref_resblock(Sd, xx, tt, groups, silu_temb=False),
        "the time embedding added after conv2 (add it between the two convs)":
            ref_resblock(Sd, xx, tt, groups, time_after=True),
        "no residual connection (return h + skip(x))": ref_resblock(Sd, xx, tt, groups, skip=False)})
    expect(got.get("grads") is not None, f"{what}: the output carries no gradient")
    expect_gradients(got["grads"], {k: v.grad.float() for k, v in S.items()}, what,
                     atol=1e-4, rtol=1e-3)
    expect_close(got["x_grad"], xd.grad, f"{what}: gradient wrt x", atol=1e-4, rtol=1e-3)
    expect_close(got["temb_grad"], td.grad, f"{what}: gradient wrt temb", atol=1e-4, rtol=1e-3)


@check("diffusion.resblock", points=1)
def resblock_same_width(student, g):
    """ResBlock(8, 8) (no skip parameters: the identity), GroupNorm(4), images 5 x 7, eval
    mode with dropout 0.3: output and every gradient against the float64 reference."""
    resblock_case(student, g, 8, 8, 4, 2, 5, 7, "ResBlock(8, 8)")


@check("diffusion.resblock", points=1)
def resblock_new_width(student, g):
    """ResBlock(6, 12) (a 1x1 skip conv), GroupNorm(3), one image 4 x 3: output and gradients."""
    resblock_case(student, g, 6, 12, 3, 1, 4, 3, "ResBlock(6, 12)")


@check("diffusion.resblock", points=1)
def resblock_dropout_place(student, g):
    """Train mode with dropout p = 1: everything after the dropout sees zeros, so the output
    is conv2.bias + skip(x); with p = 0 in train mode it equals the eval-mode reference; with
    p = 0.5 and conv2 the identity, conv2's input is 0 or 2 SiLU(norm2(h)) element by element."""
    cin, cout, groups, tdim = 4, 8, 2, 6
    state = resblock_state(g, cin, cout, tdim)
    x = torch.randn(2, cin, 3, 5, generator=g)
    temb = torch.randn(2, tdim, generator=g)
    S = {k: v.double() for k, v in state.items()}
    for p in (1.0, 0.0):
        got = student.run(probes.resblock, in_channels=cin, out_channels=cout, time_dim=tdim,
                          dropout=p, groups=groups, state=state, x=x, temb=temb, grad_out=None,
                          train=True, seed=_seed(g))
        skip = F.conv2d(x.double(), S["skip.weight"], S["skip.bias"])
        if p == 1.0:
            want = S["conv2.bias"].view(1, -1, 1, 1) + skip
            expect_close(got["out"], want, "ResBlock in train mode with dropout p = 1 (dropout "
                         "goes right before conv2)", diagnoses={
                             "dropout after conv2 (the handout puts it before conv2)": skip,
                             "no dropout (or dropout off in train mode)": ref_resblock(S, x.double(), temb.double(), groups)})
        else:
            expect_close(got["out"], ref_resblock(S, x.double(), temb.double(), groups),
                         "ResBlock in train mode with dropout p = 0")
    # p = 0.5 with conv2 the identity (a 3x3 kernel with only its centre, no bias): out - skip(x)
    # is what conv2 received, dropout(SiLU(norm2(h))): each element 0 or 2 SiLU(norm2(h)).
    eye = torch.zeros(cout, cout, 3, 3)
    eye[range(cout), range(cout), 1, 1] = 1
    state = dict(state, **{"conv2.weight": eye, "conv2.bias": torch.zeros(cout)})
    got = student.run(probes.resblock, in_channels=cin, out_channels=cout, time_dim=tdim,
                      dropout=0.5, groups=groups, state=state, x=x, temb=temb, grad_out=None,
                      train=True, seed=_seed(g))
    xx = x.double()
    h = F.conv2d(F.silu(F.group_norm(xx, groups, S["norm1.weight"], S["norm1.bias"])),
                 S["conv1.weight"], S["conv1.bias"], padding=1)
    h = h + F.linear(F.silu(temb.double()), S["time_proj.weight"], S["time_proj.bias"])[:, :, None, None]
    kept = 2 * F.silu(F.group_norm(h, groups, S["norm2.weight"], S["norm2.bias"]))
    out = expect_shape(got["out"], kept.shape, "ResBlock in train mode with dropout p = 0.5")
    z = out.double() - F.conv2d(xx, S["skip.weight"], S["skip.bias"])
    err = torch.minimum(z.abs(), (z - kept).abs())
    expect(err.max().item() < 1e-4, "ResBlock in train mode with dropout p = 0.5 and conv2 the "
           f"identity: conv2 received values that are neither 0 nor SiLU(norm2(h)) / (1 - p) "
           f"(off by up to {err.max().item():.3g}); dropout goes after the SiLU, right before "
           f"conv2 (nn.Dropout: zeros, the rest scaled by 1 / (1 - p))",
           "dropout not between the SiLU and conv2")
    frac = (z.abs() < 1e-6).double().mean().item()
    expect(0.25 < frac < 0.75, f"ResBlock in train mode with dropout p = 0.5 zeroed {frac:.0%} "
           f"of conv2's input, expected about 50%: use the block's dropout (self.dropout)")


# --------------------------------------------------------------- diffusion.cross_attention

def attention_state(g, dim, cdim):
    return {"to_q.weight": torch.randn(dim, dim, generator=g) / math.sqrt(dim),
            "to_k.weight": torch.randn(dim, cdim, generator=g) / math.sqrt(cdim),
            "to_v.weight": torch.randn(dim, cdim, generator=g) / math.sqrt(cdim),
            "to_out.weight": torch.randn(dim, dim, generator=g) / math.sqrt(dim),
            "to_out.bias": 0.2 * torch.randn(dim, generator=g)}


def ref_attention(S, x, ctx, heads, prefix="", kv_from="context", k_from="context",
                  scale=True, softmax_dim=-1, full_scale=False):
    ctx = x if ctx is None else ctx
    B, N, D = x.shape
    d = D // heads
    src_k = x if k_from == "x" else ctx
    src_v = x if kv_from == "x" else ctx

    def split(h):
        return h.view(B, h.shape[1], heads, d).transpose(1, 2)
    q = split(F.linear(x, S[prefix + "to_q.weight"]))
    k = split(F.linear(src_k, S[prefix + "to_k.weight"]))
    v = split(F.linear(src_v, S[prefix + "to_v.weight"]))
    att = q @ k.transpose(-2, -1)
    if scale:
        att = att / math.sqrt(D if full_scale else d)
    out = att.softmax(softmax_dim) @ v
    return F.linear(out.transpose(1, 2).reshape(B, N, D), S[prefix + "to_out.weight"],
                    S[prefix + "to_out.bias"])


@check("diffusion.cross_attention", points=1)
def attention_matches(student, g):
    """Attention(8, context_dim=6, heads=2) on x (2, 5, 8) and a context (2, 3, 6), and
    Attention(8, heads=1) as self-attention (context None): outputs and gradients."""
    for dim, cdim, heads, L, self_attn in ((8, 6, 2, 3, False), (8, None, 1, 0, True)):
        state = attention_state(g, dim, cdim or dim)
        x = torch.randn(2, 5, dim, generator=g)
        ctx = None if self_attn else torch.randn(2, L, cdim, generator=g)
        grad_out = torch.randn(2, 5, dim, generator=g)
        got = student.run(probes.attention, dim=dim, context_dim=cdim, heads=heads, state=state,
                          x=x, context=ctx, grad_out=grad_out)
        S = {k: v.double().requires_grad_() for k, v in state.items()}
        xd = x.double().requires_grad_()
        cd = None if ctx is None else ctx.double().requires_grad_()
        want = ref_attention(S, xd, cd, heads)
        (want * grad_out.double()).sum().backward()
        Sd = {k: v.detach() for k, v in S.items()}
        xx, cc = x.double(), None if ctx is None else ctx.double()
        what = f"Attention({dim}, {cdim}, heads={heads})" + (" as self-attention" if self_attn else "")
        expect_close(got["out"], want.detach(), what, diagnoses={
            "no 1/sqrt(head_dim) scaling of the scores": ref_attention(Sd, xx, cc, heads, scale=False),
            "the scores scaled by 1/sqrt(dim) (use the head's width dim // heads)":
                ref_attention(Sd, xx, cc, heads, full_scale=True),
            "softmax over the queries (take it over the keys, the last axis)":
                ref_attention(Sd, xx, cc, heads, softmax_dim=-2)})
        expect(got.get("grads") is not None, f"{what}: the output carries no gradient")
        expect_gradients(got["grads"], {k: v.grad.float() for k, v in S.items()}, what,
                         atol=1e-4, rtol=1e-3)
        expect(got.get("x_grad") is not None, f"{what}: no gradient reached x")
        expect_close(got["x_grad"], xd.grad, f"{what}: gradient wrt x", atol=1e-4, rtol=1e-3)
        if cd is not None:
            expect(got.get("context_grad") is not None, f"{what}: no gradient reached the context")
            expect_close(got["context_grad"], cd.grad, f"{what}: gradient wrt the context",
                         atol=1e-4, rtol=1e-3)


@check("diffusion.cross_attention", points=1)
def keys_and_values_from_the_condition(student, g):
    """Attention(8, context_dim=8, heads=2) with a context of as many tokens as x (so that
    mixing them up runs): keys and values come from the context, queries from x."""
    dim, heads, N = 8, 2, 4
    state = attention_state(g, dim, dim)
    x = torch.randn(3, N, dim, generator=g)
    ctx = torch.randn(3, N, dim, generator=g)
    got = student.run(probes.attention, dim=dim, context_dim=dim, heads=heads, state=state,
                      x=x, context=ctx, grad_out=torch.randn(3, N, dim, generator=g))
    S = {k: v.double() for k, v in state.items()}
    xx, cc = x.double(), ctx.double()
    expect_close(got["out"], ref_attention(S, xx, cc, heads), "cross-attention", diagnoses={
        "keys from the image (keys and values both come from the condition)":
            ref_attention(S, xx, cc, heads, k_from="x"),
        "keys and values from the image (the condition is ignored: self-attention)":
            ref_attention(S, xx, cc, heads, k_from="x", kv_from="x"),
        "queries from the condition and keys/values from the image (swapped)":
            ref_attention(S, cc, xx, heads)})


def transformer_state(g, dim, cdim):
    s = {}
    for n in (1, 2, 3):
        s[f"norm{n}.weight"] = 1 + 0.3 * torch.randn(dim, generator=g)
        s[f"norm{n}.bias"] = 0.2 * torch.randn(dim, generator=g)
    for prefix, c in (("attn1.", dim), ("attn2.", cdim)):
        s.update({prefix + k: v for k, v in attention_state(g, dim, c).items()})
    s["mlp.0.weight"] = torch.randn(4 * dim, dim, generator=g) / math.sqrt(dim)
    s["mlp.0.bias"] = 0.2 * torch.randn(4 * dim, generator=g)
    s["mlp.2.weight"] = torch.randn(dim, 4 * dim, generator=g) / math.sqrt(4 * dim)
    s["mlp.2.bias"] = 0.2 * torch.randn(dim, generator=g)
    return s


def ref_transformer(S, x, cond, heads, pre_norm=True, residual=True, use_cond=True):
    B, C, H, W = x.shape
    h = x.flatten(2).transpose(1, 2)

    def norm(v, n):
        return F.layer_norm(v, (C,), S[f"norm{n}.weight"], S[f"norm{n}.bias"])

    def mlp(v):
        return F.linear(F.gelu(F.linear(v, S["mlp.0.weight"], S["mlp.0.bias"])),
                        S["mlp.2.weight"], S["mlp.2.bias"])
    steps = [(1, lambda v: ref_attention(S, v, None, heads, "attn1.")),
             (2, lambda v: ref_attention(S, v, cond if use_cond else None, heads, "attn2.")),
             (3, mlp)]
    for n, f in steps:
        if pre_norm:
            h = h + f(norm(h, n)) if residual else f(norm(h, n))
        else:
            h = norm(h + f(h), n)
    return h.transpose(1, 2).reshape(B, C, H, W)


@check("diffusion.cross_attention", points=1)
def transformer_block(student, g):
    """TransformerBlock(8, cond_dim=5, heads=2) on a 3 x 4 map with a condition of 2 tokens:
    output and gradients; a different condition changes the output, the condition's tokens
    permuted do not (attention is a set operation), and cond None attends to x itself."""
    dim, cdim, heads = 8, 5, 2
    state = transformer_state(g, dim, cdim)
    x = torch.randn(2, dim, 3, 4, generator=g)
    cond = torch.randn(2, 2, cdim, generator=g)
    other = torch.randn(2, 2, cdim, generator=g)
    grad_out = torch.randn(2, dim, 3, 4, generator=g)
    got = student.run(probes.transformer, dim=dim, cond_dim=cdim, heads=heads, state=state, x=x,
                      conds=[cond, other, cond.flip(1)], grad_out=grad_out)
    S = {k: v.double().requires_grad_() for k, v in state.items()}
    xd, cd = x.double().requires_grad_(), cond.double().requires_grad_()
    want = ref_transformer(S, xd, cd, heads)
    (want * grad_out.double()).sum().backward()
    Sd = {k: v.detach() for k, v in S.items()}
    xx, cc = x.double(), cond.double()
    outs = got["outs"]
    expect(len(outs) == 3, "the probe did not get three outputs")
    expect_close(outs[0], want.detach(), "TransformerBlock(x, cond)", atol=1e-4, rtol=1e-3, diagnoses={
        "post-norm (the handout's block is pre-norm: x + f(norm(x)))":
            ref_transformer(Sd, xx, cc, heads, pre_norm=False),
        "no residual connections": ref_transformer(Sd, xx, cc, heads, residual=False)})
    expect(not torch.allclose(outs[0], outs[1], atol=1e-4),
           "TransformerBlock gave the same output for two different conditions: attn2 must "
           "attend to the condition", "the condition is ignored")
    expect_close(outs[1], ref_transformer(Sd, xx, other.double(), heads),
                 "TransformerBlock(x, another cond)", atol=1e-4, rtol=1e-3)
    expect_close(outs[2], want.detach(), "TransformerBlock(x, cond with its tokens permuted) "
                 "(keys and values from the same tokens: the order must not matter)",
                 atol=1e-4, rtol=1e-3)
    expect(got.get("grads") is not None, "TransformerBlock: the output carries no gradient")
    expect_gradients(got["grads"], {k: v.grad.float() for k, v in S.items()}, "TransformerBlock",
                     atol=1e-4, rtol=1e-3)
    expect(got.get("cond_grad") is not None, "TransformerBlock: no gradient reached the condition")
    expect_close(got["cond_grad"], cd.grad, "TransformerBlock: gradient wrt cond", atol=1e-4, rtol=1e-3)
    # No condition (the unconditional UNet): attn2 still runs, attending to norm2(x) itself.
    state = transformer_state(g, dim, dim)
    got = student.run(probes.transformer, dim=dim, cond_dim=None, heads=heads, state=state, x=x,
                      conds=[None], grad_out=grad_out)
    S = {k: v.double() for k, v in state.items()}
    expect(len(got["outs"]) == 1, "the probe did not get an output")
    expect_close(got["outs"][0], ref_transformer(S, xx, None, heads),
                 "TransformerBlock(8, cond_dim=None)(x, None) (attn2 still runs, as self-attention "
                 "on norm2(x))", atol=1e-4, rtol=1e-3)
