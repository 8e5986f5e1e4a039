"""Checks for the ViT lab. Run them with `vislab grade vit [--impl labs|solutions|PATH]`.

References are independent of the student's code and of the lab's solution: torch's
nn.MultiheadAttention, torchvision's MLPBlock / EncoderBlock / VisionTransformer with the same
weights, computed in float64. Inputs and weights come from the generator `g` the grader seeds.
"""
import copy
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vision_transformer import EncoderBlock, MLPBlock, VisionTransformer

from vislab.grading import (Lab, expect, expect_close, expect_gradients, expect_not_in_source,
                            expect_shape)

from . import vit_probes as probes

lab = Lab("vit", {
    "vit.patch_embed": "image -> patch tokens (B, N, D)",
    "vit.mlp": "Linear -> GELU -> Linear, with dropout",
    "vit.attention": "multi-head self-attention from matmuls",
    "vit.block": "pre-norm transformer block with residuals",
    "vit.model": "CLS token, position embedding, blocks, norm, head",
    "vit.distill": "KL distillation loss at temperature T",
    "vit.finetune": "new head; full vs head-only fine-tuning",
})

# A small config: fast, yet with 3 channels, several heads and two blocks, so that mixed-up
# axes show. Reference models are built with the same numbers.
CONFIG = dict(image_size=12, patch_size=4, in_channels=3, num_classes=5, dim=24, depth=2,
              num_heads=3, mlp_dim=40, dropout=0.0)


def randomize(module: nn.Module, g: torch.Generator) -> nn.Module:
    """Every parameter random (LayerNorm weights near 1), so that no term can hide as zero."""
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                norm_weight = isinstance(mod, nn.LayerNorm) and name == "weight"
                p.copy_(1 + 0.2 * noise if norm_weight else 0.3 * noise)
    return module


def tv_vit(g: torch.Generator) -> VisionTransformer:
    c = CONFIG
    m = VisionTransformer(c["image_size"], c["patch_size"], c["depth"], c["num_heads"], c["dim"],
                          c["mlp_dim"], num_classes=c["num_classes"])
    if c["in_channels"] != 3:
        raise ValueError("torchvision's VisionTransformer takes 3 channels")
    return randomize(m, g).double().eval()


def tv_block(g: torch.Generator) -> EncoderBlock:
    c = CONFIG
    m = EncoderBlock(c["num_heads"], c["dim"], c["mlp_dim"], 0.0, 0.0,
                     partial(nn.LayerNorm, eps=1e-6))
    return randomize(m, g).double().eval()


def block_state(tv: EncoderBlock) -> dict[str, torch.Tensor]:
    """torchvision EncoderBlock weights under the lab's Block names (float32)."""
    s = tv.state_dict()
    names = {"norm1": "ln_1", "norm2": "ln_2", "attn.proj": "self_attention.out_proj",
             "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    out = {f"{ours}.{p}": s[f"{theirs}.{p}"] for ours, theirs in names.items()
           for p in ("weight", "bias")}
    out["attn.qkv.weight"] = s["self_attention.in_proj_weight"]
    out["attn.qkv.bias"] = s["self_attention.in_proj_bias"]
    return {k: v.float() for k, v in out.items()}


def vit_names(depth: int) -> dict[str, str]:
    """The lab's ViT parameter names -> torchvision VisionTransformer's."""
    names = {"patch_embed.proj.weight": "conv_proj.weight",
             "patch_embed.proj.bias": "conv_proj.bias", "cls_token": "class_token",
             "pos_embed": "encoder.pos_embedding", "norm.weight": "encoder.ln.weight",
             "norm.bias": "encoder.ln.bias", "head.weight": "heads.head.weight",
             "head.bias": "heads.head.bias"}
    block = {"norm1": "ln_1", "norm2": "ln_2", "attn.proj": "self_attention.out_proj",
             "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    for i in range(depth):
        ours, theirs = f"blocks.{i}.", f"encoder.layers.encoder_layer_{i}."
        for a, b in block.items():
            for p in ("weight", "bias"):
                names[f"{ours}{a}.{p}"] = f"{theirs}{b}.{p}"
        names[ours + "attn.qkv.weight"] = theirs + "self_attention.in_proj_weight"
        names[ours + "attn.qkv.bias"] = theirs + "self_attention.in_proj_bias"
    return names


def model_state(tv: VisionTransformer) -> dict[str, torch.Tensor]:
    """torchvision VisionTransformer weights under the lab's ViT names (float32)."""
    s = tv.state_dict()
    return {ours: s[theirs].float() for ours, theirs in vit_names(len(tv.encoder.layers)).items()}


def reference_vit(state: dict, config: dict) -> VisionTransformer:
    """The grader's own ViT (torchvision's VisionTransformer, a conv_proj for any number of
    channels) holding weights given under the lab's names; eval mode."""
    c = config
    tv = VisionTransformer(c["image_size"], c["patch_size"], c["depth"], c["num_heads"], c["dim"],
                           c["mlp_dim"], num_classes=c["num_classes"])
    tv.conv_proj = nn.Conv2d(c["in_channels"], c["dim"], c["patch_size"], c["patch_size"])
    names = vit_names(c["depth"])
    want = {ours: tuple(tv.state_dict()[theirs].shape) for ours, theirs in names.items()}
    have = {k: tuple(v.shape) for k, v in state.items() if type(v) is torch.Tensor}
    missing, extra = sorted(set(want) - set(have)), sorted(set(state) - set(want))
    expect(not missing and not extra, f"the trained ViT's weights are not the handout's "
           f"parameters: missing {missing[:3]}, unexpected {extra[:3]} (keep the names that "
           f"__init__ creates)")
    wrong = [k for k in want if have[k] != want[k]]
    expect(not wrong, f"the trained ViT's {wrong[0] if wrong else ''} has shape "
                      f"{have[wrong[0]] if wrong else ''}, expected {want[wrong[0]] if wrong else ''}")
    tv.load_state_dict({theirs: state[ours].float() for ours, theirs in names.items()})
    return tv.eval()


def reference(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    """module(x) in float64 and the gradients of <output, grad_out> by parameter name."""
    module.zero_grad(set_to_none=True)
    x = x.double().requires_grad_()
    out = module(x)
    (out * grad_out.double()).sum().backward()
    grads = {n: p.grad.float() for n, p in module.named_parameters()}
    return out.detach(), grads, x.grad


# ------------------------------------------------------------------------- vit.patch_embed

def patches_reference(x, weight, bias, patch_size, order="row"):
    out = F.conv2d(x.double(), weight.double(), bias.double(), stride=patch_size)  # (B, D, h, w)
    if order == "column":
        out = out.transpose(2, 3)
    return out.flatten(2).transpose(1, 2)  # (B, N, D)


@lab.check("vit.patch_embed", points=2)
def patch_embed_matches_conv(student, g):
    """Tokens equal a stride-P convolution's outputs, patches in row-major order, for a square
    and a non-square image (H != W: N = (H/P)(W/P)); gradients."""
    c = CONFIG
    P = c["patch_size"]
    weight = 0.3 * torch.randn(c["dim"], c["in_channels"], P, P, generator=g)
    bias = torch.randn(c["dim"], generator=g)
    for B, H, W in ((3, c["image_size"], c["image_size"]), (2, 2 * P, 3 * P)):
        x = torch.randn(B, c["in_channels"], H, W, generator=g)
        n = (H // P) * (W // P)
        grad_out = torch.randn(B, n, c["dim"], generator=g)
        got = student.run(probes.patch_embed, config=c, state={"proj.weight": weight,
                          "proj.bias": bias}, x=x, grad_out=grad_out)
        out = got["out"]
        what = f"PatchEmbed of a {H} x {W} image"
        if tuple(out.shape) == (B, c["dim"], n):
            expect(False, f"{what}: expected shape (B, N, D) = {(B, n, c['dim'])}, got "
                          f"{tuple(out.shape)}, which is (B, D, N): transpose the last two axes")
        if tuple(out.shape) == (B, c["dim"], H // P, W // P):
            expect(False, f"{what}: expected shape (B, N, D) = {(B, n, c['dim'])}, got "
                          f"{tuple(out.shape)}: flatten the patch grid and put D last")
        want = patches_reference(x, weight, bias, P)
        expect_close(out, want, f"{what}: output", diagnoses={
            "the patches in column-major order (transpose H and W before flattening)":
                patches_reference(x, weight, bias, P, "column")})
        w = weight.double().requires_grad_()
        (patches_reference(x, w, bias, P) * grad_out.double()).sum().backward()
        expect_gradients(got.get("grads", {}), {"proj.weight": w.grad.float()}, what)


# --------------------------------------------------------------------------------- vit.mlp

def mlp_setup(g, dropout, dim=CONFIG["dim"], hidden=CONFIG["mlp_dim"]):
    ref = randomize(MLPBlock(dim, hidden, dropout), g).double().eval()
    s = ref.state_dict()
    state = {"fc1.weight": s["0.weight"], "fc1.bias": s["0.bias"],
             "fc2.weight": s["3.weight"], "fc2.bias": s["3.bias"]}
    return ref, {k: v.float() for k, v in state.items()}


@lab.check("vit.mlp", points=1)
def mlp_matches_torchvision(student, g):
    """In eval mode, equals torchvision's MLPBlock (Linear, exact GELU, Linear)."""
    c = CONFIG
    ref, state = mlp_setup(g, dropout=0.3)
    x = torch.randn(2, 5, c["dim"], generator=g)
    got = student.run(probes.mlp, dim=c["dim"], hidden_dim=c["mlp_dim"], dropout=0.3,
                      state=state, x=x, train=False)
    expect(torch.equal(expect_shape(got["out"], x.shape, "MLP output"), got["again"]),
           "MLP in eval mode gave two different outputs for the same input: dropout is applied "
           "in eval mode too (use self.dropout, an nn.Dropout, which is off in eval mode)",
           mistake="dropout active in eval mode")
    got = got["out"]
    xd = x.double()
    h = ref[0](xd)
    expect_close(got, ref(xd), "MLP output in eval mode", diagnoses={
        "GELU's tanh approximation (use the exact GELU, F.gelu(x) or nn.GELU())":
            ref[3](F.gelu(h, approximate="tanh")),
        "ReLU instead of GELU": ref[3](F.relu(h)),
        "no activation between the two Linear layers": ref[3](h),
    })


def hidden_through_fc2(out, W2, b2, p, min_kept):
    """Each token's hidden vector (after the hidden dropout), read back from the kept outputs:
    out_kept * (1 - p) = W2_kept h + b2_kept, by least squares (W2 has more rows than columns).
    Returns (hidden (T, Hd), worst residual), tokens with too few kept outputs left out."""
    hidden, worst = [], 0.0
    for row in out.reshape(-1, out.shape[-1]):
        kept = row != 0
        if kept.sum() < min_kept:
            hidden.append(torch.full((W2.shape[1],), float("nan"), dtype=torch.float64))
            continue
        A, rhs = W2[kept], row[kept] * (1 - p) - b2[kept]
        sol = torch.linalg.lstsq(A, rhs[:, None]).solution[:, 0]
        worst = max(worst, (A @ sol - rhs).abs().max().item() / (1 + rhs.abs().max().item()))
        hidden.append(sol)
    return torch.stack(hidden), worst


@lab.check("vit.mlp", points=1)
def mlp_uses_dropout(student, g):
    """In train mode dropout acts after GELU and after fc2: with p = 1 every output is zero;
    with p = 0.5 about half the outputs are zero and the others doubled, and the hidden units
    (read back through fc2, which the grader chose narrow) are each 0 or 2 GELU(fc1 x)."""
    c = CONFIG
    _, state = mlp_setup(g, dropout=1.0)
    x = torch.randn(2, 5, c["dim"], generator=g)
    got = student.run(probes.mlp, dim=c["dim"], hidden_dim=c["mlp_dim"], dropout=1.0,
                      state=state, x=x, train=True)["out"]
    got = expect_shape(got, x.shape, "MLP output")
    expect(bool((got == 0).all()),
           "MLP with dropout p=1 in train mode should output all zeros: apply self.dropout "
           "after GELU and after fc2 (as torchvision's MLPBlock does)",
           mistake="no dropout on the MLP's output")
    D, hidden, p = 12, 4, 0.5
    _, state = mlp_setup(g, dropout=p, dim=D, hidden=hidden)
    x = torch.randn(4, 40, D, generator=g)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    out = student.run(probes.mlp, dim=D, hidden_dim=hidden, dropout=p, state=state, x=x,
                      train=True, seed=seed)["out"]
    out = expect_shape(out, x.shape, f"MLP output with p = {p}").double()
    zero = (out == 0).double().mean().item()
    expect(zero > 0.05, f"MLP with dropout p = {p} in train mode: none of its outputs is zero: "
                        f"apply self.dropout to fc2's output too", mistake="no dropout on the MLP's output")
    expect(0.35 <= zero <= 0.65, f"MLP with dropout p = {p} in train mode: {zero:.2f} of its "
                                 f"outputs are zero, expected about {p} (dropout after fc2 with "
                                 f"self.dropout's rate)")
    W2, b2 = state["fc2.weight"].double(), state["fc2.bias"].double()
    h, worst = hidden_through_fc2(out, W2, b2, p, hidden + 2)
    expect(worst < 1e-3, f"MLP with dropout p = {p} in train mode: the kept outputs are not "
                         f"fc2(h) / (1 - p) for any hidden vector h (is fc2's output scaled by "
                         f"1 / (1 - p), as nn.Dropout does, and nothing else after fc2?)")
    act = F.gelu(F.linear(x.double(), state["fc1.weight"].double(), state["fc1.bias"].double()))
    act = act.reshape(-1, hidden)
    use = torch.isfinite(h) & (act.abs() > 0.05)
    ratio = h[use] / act[use]
    near = lambda v: (ratio - v).abs() < 1e-3  # noqa: E731
    expect(not bool(near(1.0).all()),
           f"MLP with dropout p = {p} in train mode: the hidden units (after GELU) are never "
           f"dropped: apply self.dropout between GELU and fc2 too", mistake="no dropout after GELU")
    odd = ratio[~(near(0.0) | near(1 / (1 - p)))]
    expect(len(odd) == 0, f"MLP with dropout p = {p} in train mode: each hidden unit should be "
                          f"0 or GELU(fc1 x) / (1 - p) (dropout right after GELU), found "
                          f"factors like {odd[0].item() if len(odd) else 0:.3g}")
    dropped = near(0.0).double().mean().item()
    expect(0.3 <= dropped <= 0.7, f"MLP with dropout p = {p} in train mode: {dropped:.2f} of the "
                                  f"hidden units dropped, expected about {p}")


# --------------------------------------------------------------------------- vit.attention

def attention_variant(x, state, num_heads, scale=True, softmax_dim=-1, split="transpose",
                      merge="transpose", scale_dim=None, proj=True):
    """Self-attention in float64, with optional known mistakes, for diagnoses."""
    x = x.double()
    B, N, D = x.shape
    d = D // num_heads
    qkv = F.linear(x, state["qkv.weight"].double(), state["qkv.bias"].double())  # (B, N, 3D)
    q, k, v = qkv.chunk(3, dim=-1)                                                # (B, N, D)
    if split == "transpose":
        q, k, v = (t.reshape(B, N, num_heads, d).transpose(1, 2) for t in (q, k, v))
    else:  # a reshape straight to (B, H, N, d) mixes tokens and features
        q, k, v = (t.reshape(B, num_heads, N, d) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1)                                              # (B, H, N, N)
    if scale:
        scores = scores / (scale_dim or d) ** 0.5
    out = scores.softmax(dim=softmax_dim) @ v                                     # (B, H, N, d)
    out = out.transpose(1, 2).reshape(B, N, D) if merge == "transpose" else out.reshape(B, N, D)
    if not proj:
        return out
    return F.linear(out, state["proj.weight"].double(), state["proj.bias"].double())


def attention_diagnoses(x, state, num_heads) -> dict:
    D = x.shape[-1]
    return {
        "attention without the 1/sqrt(head_dim) scale":
            attention_variant(x, state, num_heads, scale=False),
        "a 1/sqrt(D) scale instead of 1/sqrt(head_dim)":
            attention_variant(x, state, num_heads, scale_dim=D),
        "softmax over the queries (dim=-2) instead of the keys (dim=-1)":
            attention_variant(x, state, num_heads, softmax_dim=-2),
        "heads split by reshaping (B, N, D) straight to (B, H, N, d), without a transpose":
            attention_variant(x, state, num_heads, split="reshape"),
        "heads merged by reshaping (B, H, N, d) straight to (B, N, D), without a transpose":
            attention_variant(x, state, num_heads, merge="reshape"),
        "no output projection (apply self.proj to the merged heads)":
            attention_variant(x, state, num_heads, proj=False),
    }


@lab.check("vit.attention", points=2)
def attention_matches_multihead_attention(student, g):
    """Equals torch.nn.MultiheadAttention with the same weights, for two input sizes."""
    c = CONFIG
    for B, N in ((2, 7), (1, 13)):
        ref = randomize(nn.MultiheadAttention(c["dim"], c["num_heads"], batch_first=True),
                        g).double()
        s = ref.state_dict()
        state = {"qkv.weight": s["in_proj_weight"], "qkv.bias": s["in_proj_bias"],
                 "proj.weight": s["out_proj.weight"], "proj.bias": s["out_proj.bias"]}
        state = {k: v.float() for k, v in state.items()}
        x = torch.randn(B, N, c["dim"], generator=g)
        got = student.run(probes.attention, dim=c["dim"], num_heads=c["num_heads"], state=state,
                          x=x)["out"]
        want = ref(x.double(), x.double(), x.double(), need_weights=False)[0]
        expect_close(got, want.detach(), f"Attention output for x of shape {(B, N, c['dim'])}",
                     diagnoses=attention_diagnoses(x, state, c["num_heads"]))
    # The guard in the probe (a torch function mode) runs in the student's process, which can
    # switch it off: the grader reads the source itself.
    expect_not_in_source(student, ["model.py"], probes.ATTENTION_BUILTINS | {"MultiheadAttention"},
                         "vit.attention")


@lab.check("vit.attention", points=1)
def attention_gradients(student, g):
    """Gradients of every weight and of the input equal nn.MultiheadAttention's."""
    c = CONFIG
    ref = randomize(nn.MultiheadAttention(c["dim"], c["num_heads"], batch_first=True), g).double()
    s = ref.state_dict()
    state = {k: s[v].float() for k, v in (("qkv.weight", "in_proj_weight"),
             ("qkv.bias", "in_proj_bias"), ("proj.weight", "out_proj.weight"),
             ("proj.bias", "out_proj.bias"))}
    x = torch.randn(2, 6, c["dim"], generator=g)
    grad_out = torch.randn(2, 6, c["dim"], generator=g)
    got = student.run(probes.attention, dim=c["dim"], num_heads=c["num_heads"], state=state,
                      x=x, grad_out=grad_out)
    xd = x.double().requires_grad_()
    out = ref(xd, xd, xd, need_weights=False)[0]
    expect_shape(got["out"], out.shape, "Attention output")
    (out * grad_out.double()).sum().backward()
    want = {"qkv.weight": ref.in_proj_weight.grad, "qkv.bias": ref.in_proj_bias.grad,
            "proj.weight": ref.out_proj.weight.grad, "proj.bias": ref.out_proj.bias.grad}
    expect_gradients(got.get("grads", {}), {k: v.float() for k, v in want.items()}, "Attention")
    expect_close(got.get("input_grad"), xd.grad, "Attention: gradient of the input")


# ------------------------------------------------------------------------------- vit.block

@lab.check("vit.block", points=2)
def block_matches_torchvision(student, g):
    """Equals torchvision's EncoderBlock (same weights), attention and MLP given by the grader,
    in eval mode with dropout 0.5 (which must then be off); in train mode with dropout 1 the
    attention branch is dropped (self.dropout) and the MLP branch is not."""
    c = CONFIG
    ref = tv_block(g)
    x = torch.randn(2, 7, c["dim"], generator=g)
    grad_out = torch.randn(2, 7, c["dim"], generator=g)
    got = student.run(probes.block, dim=c["dim"], num_heads=c["num_heads"], mlp_dim=c["mlp_dim"],
                      state=block_state(ref), x=x, grad_out=grad_out, dropout=0.5)
    want, grads, _ = reference(ref, x, grad_out)
    xd = x.double()

    def attn(t):
        return ref.self_attention(t, t, t, need_weights=False)[0]

    def default_eps(t):  # both norms with F.layer_norm's default eps 1e-5
        def ln(u, norm):
            return F.layer_norm(u, (c["dim"],), norm.weight, norm.bias)
        y = t + attn(ln(t, ref.ln_1))
        return y + ref.mlp(ln(y, ref.ln_2))
    eps_mistake = ("LayerNorm with eps 1e-5 (F.layer_norm's default) instead of the block's "
                   "norms (eps 1e-6): use self.norm1 and self.norm2")
    with torch.no_grad():
        no_attn_residual = attn(ref.ln_1(xd))
        diagnoses = {
        "no residual around attention (x = attn(norm1(x)))":
            no_attn_residual + ref.mlp(ref.ln_2(no_attn_residual)),
        "no residual around the MLP": ref.mlp(ref.ln_2(xd + attn(ref.ln_1(xd)))),
        "post-norm (norm after adding the residual) instead of pre-norm":
            ref.ln_2((y := ref.ln_1(xd + attn(xd))) + ref.mlp(y)),
        "the same LayerNorm (norm1) used before both branches":
            (y := xd + attn(ref.ln_1(xd))) + ref.mlp(ref.ln_1(y)),
        eps_mistake: default_eps(xd),
        }
    expect_close(got["out"], want, "Block output in eval mode (dropout 0.5, which eval mode "
                 "turns off)", diagnoses=diagnoses)
    names = {"norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
             "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias"}
    expect_gradients(got.get("grads", {}), {k: grads[v] for k, v in names.items()}, "Block")
    small = 3e-3 * torch.randn(2, 7, c["dim"], generator=g)  # variance ~1e-5: the eps shows
    got = student.run(probes.block, dim=c["dim"], num_heads=c["num_heads"], mlp_dim=c["mlp_dim"],
                      state=block_state(ref), x=small)
    with torch.no_grad():
        want_small, wrong_small = ref(small.double()), default_eps(small.double())
    expect_close(got["out"], want_small, "Block output for tokens of small spread (variance "
                 "~1e-5, where the LayerNorms' eps 1e-6 matters)",
                 diagnoses={eps_mistake: wrong_small})
    got = student.run(probes.block, dim=c["dim"], num_heads=c["num_heads"], mlp_dim=c["mlp_dim"],
                      state=block_state(ref), x=x, dropout=1.0, train=True)
    with torch.no_grad():
        expect_close(got["out"], xd + ref.mlp(ref.ln_2(xd)), "Block output in train mode with "
                     "dropout 1 (the attention branch dropped: x + mlp(norm2(x)))", diagnoses={
            "no dropout on the attention branch (x + self.dropout(self.attn(self.norm1(x))))":
                want,
            "self.dropout on the MLP branch too (only the attention's output goes through "
            "self.dropout; the MLP has its own)": xd,
        })


# ------------------------------------------------------------------------------- vit.model

def tv_model_variant(tv, x, cls_first=True, pos=True, final_norm=True, pool="cls", read=None):
    """torchvision's forward, optionally with known mistakes, for diagnoses."""
    tokens = tv._process_input(x)                                  # (B, N, D)
    cls = tv.class_token.expand(x.shape[0], -1, -1)                # (B, 1, D)
    t = torch.cat([cls, tokens] if cls_first else [tokens, cls], dim=1)
    if pos:
        t = t + tv.encoder.pos_embedding
    t = tv.encoder.layers(t)
    if final_norm:
        t = tv.encoder.ln(t)
    if read is None:
        read = 0 if cls_first else -1
    feature = t.mean(dim=1) if pool == "mean" else t[:, read]
    return tv.heads(feature)


@lab.check("vit.model", points=2)
def model_matches_torchvision(student, g):
    """Equals torchvision's VisionTransformer (weights copied), with the grader's patch
    embedding and blocks inside the student's ViT; gradients of CLS, positions, norm, head."""
    c = CONFIG
    tv = tv_vit(g)
    x = torch.randn(3, c["in_channels"], c["image_size"], c["image_size"], generator=g)
    grad_out = torch.randn(3, c["num_classes"], generator=g)
    got = student.run(probes.model, config={**c, "dropout": 0.5}, state=model_state(tv), x=x,
                      grad_out=grad_out)
    want, grads, _ = reference(tv, x, grad_out)
    xd = x.double()
    with torch.no_grad():
        diagnoses = {
            "the CLS token appended after the patches instead of before them":
                tv_model_variant(tv, xd, cls_first=False),
            "the CLS token appended after the patches, and the head reading token 0 (a patch)":
                tv_model_variant(tv, xd, cls_first=False, read=0),
            "no position embedding added": tv_model_variant(tv, xd, pos=False),
            "no final LayerNorm": tv_model_variant(tv, xd, final_norm=False),
            "the head applied to the mean of all tokens instead of the CLS token":
                tv_model_variant(tv, xd, pool="mean"),
        }
    expect_close(got["out"], want, "ViT logits in eval mode (dropout 0.5, which eval mode "
                 "turns off)", diagnoses=diagnoses)
    names = {"cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
             "norm.weight": "encoder.ln.weight", "head.weight": "heads.head.weight"}
    expect_gradients(got.get("grads", {}), {k: grads[v] for k, v in names.items()}, "ViT")
    with torch.no_grad():  # tiny embeddings and blocks that add nothing: the final norm's
        quiet = copy.deepcopy(tv)  # input has variance ~1e-6, where its eps 1e-6 matters
        for p in (quiet.conv_proj.weight, quiet.conv_proj.bias, quiet.class_token,
                  quiet.encoder.pos_embedding):
            p.mul_(1e-3)
        for layer in quiet.encoder.layers:
            for p in (*layer.self_attention.out_proj.parameters(), *layer.mlp[3].parameters()):
                p.zero_()
        want_quiet = quiet(x.double())
        t = quiet.encoder.layers(torch.cat([quiet.class_token.expand(len(x), -1, -1),
                                            quiet._process_input(x.double())], 1)
                                 + quiet.encoder.pos_embedding)
        default_eps = quiet.heads(F.layer_norm(t, (c["dim"],), quiet.encoder.ln.weight,
                                               quiet.encoder.ln.bias)[:, 0])
    got = student.run(probes.model, config=c, state=model_state(quiet), x=x)
    expect_close(got["out"], want_quiet, "ViT logits with tiny embeddings (the final norm's "
                 "input has variance ~1e-6, where its eps 1e-6 matters)", diagnoses={
        "the final LayerNorm with eps 1e-5 (F.layer_norm's default) instead of self.norm's "
        "1e-6: use self.norm": default_eps})
    got = student.run(probes.model, config={**c, "dropout": 1.0}, state=model_state(tv), x=x,
                      train=True)
    with torch.no_grad():
        zeros = torch.zeros_like(tv.encoder.pos_embedding).expand(len(x), -1, -1)
        dropped = tv.heads(tv.encoder.ln(tv.encoder.layers(zeros))[:, 0])
    expect_close(got["out"], dropped, "ViT logits in train mode with dropout 1 (every token "
                 "dropped after the position embedding is added, so the blocks see zeros)",
                 diagnoses={"no dropout after adding the position embedding (self.dropout)":
                            want})


@lab.check("vit.model", points=1)
def whole_model_matches_torchvision(student, g):
    """The student's whole ViT (own patches, attention, MLP, blocks) equals torchvision's, in
    eval mode with dropout 0.3 (off in eval mode, in every part)."""
    c = CONFIG
    tv = tv_vit(g)
    x = torch.randn(2, c["in_channels"], c["image_size"], c["image_size"], generator=g)
    grad_out = torch.randn(2, c["num_classes"], generator=g)
    state = model_state(tv)
    got = student.run(probes.model, config={**c, "dropout": 0.3}, state=state, x=x,
                      grad_out=grad_out, own_parts=True)
    want, grads, _ = reference(tv, x, grad_out)
    expect_close(got["out"], want, "ViT logits in eval mode with your own PatchEmbed, "
                 "Attention, MLP and Block (if vit.model's first check passes, the difference is "
                 "in those tasks)")
    to_tv = {"patch_embed.proj.weight": "conv_proj.weight",
             "blocks.0.attn.qkv.weight": "encoder.layers.encoder_layer_0.self_attention.in_proj_weight",
             "blocks.1.mlp.fc1.weight": "encoder.layers.encoder_layer_1.mlp.0.weight"}
    expect_gradients(got.get("grads", {}), {k: grads[v] for k, v in to_tv.items()}, "ViT")


# The training recipe of trains_on_mnist5k and its pass mark. The mark sits well below the
# reference's worst seed (benchmarks/calibrate.py vit; numbers in docs/labs/vit.md) and far
# above chance (0.10), so any correct ViT passes and one that does not learn fails.
TRAIN = dict(epochs=2, batch_size=32, lr=3e-3)
TRAIN_THRESHOLD = 0.60
MNIST_CONFIG = dict(image_size=28, patch_size=7, in_channels=1, num_classes=10, dim=64,
                    depth=2, num_heads=4, mlp_dim=128, dropout=0.0)


def mnist_accuracy(student, seed: int) -> float:
    """Test accuracy after the TRAIN recipe on MNIST-5k: the student's ViT trains on the
    training images (in the student's process), and the grader's own ViT, holding the trained
    weights, classifies the test images, which the student's process never receives."""
    from vislab.data.mnist import mnist5k, normalise

    (x_train, y_train), (x_test, y_test) = mnist5k("train"), mnist5k("test")
    state = student.run(probes.train_model, config=MNIST_CONFIG, x_train=normalise(x_train),
                        y_train=y_train, seed=seed, **TRAIN)
    expect(type(state) is dict, "train_model must return the trained ViT's state_dict")
    model = reference_vit(state, MNIST_CONFIG)
    with torch.no_grad():
        x = normalise(x_test)
        pred = torch.cat([model(x[i:i + 500]).argmax(-1) for i in range(0, len(x), 500)])
    return (pred == y_test).float().mean().item()


@lab.check("vit.model", points=2, timeout=60)
def trains_on_mnist5k(student, g):
    """The student's ViT (7x7 patches, 2 blocks), trained for seconds, classifies MNIST-5k's
    test images (in the grader's own ViT, holding the trained weights)."""
    acc = mnist_accuracy(student, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    expect(acc >= TRAIN_THRESHOLD,
           f"test accuracy {acc:.3f} after {TRAIN['epochs']} epochs of MNIST-5k is below "
           f"{TRAIN_THRESHOLD}; the model computes but does not learn (are all parameters "
           f"trained? is dropout off in eval mode?)")


# ----------------------------------------------------------------------------- vit.distill

def kd_reference(s, t, T):
    """T^2 * KL(p_teacher || q_student) at temperature T, batch mean; float64."""
    log_q = F.log_softmax(s.double() / T, dim=-1)
    log_p = F.log_softmax(t.double() / T, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * T**2


@lab.check("vit.distill", points=2)
def distillation_matches_kl(student, g):
    """Loss and gradient equal T^2 * KL(teacher || student) (batch mean), for T = 4 and 2."""
    for T in (4.0, 2.0):
        s = 3 * torch.randn(5, 7, generator=g)
        t = 3 * torch.randn(5, 7, generator=g)
        got = student.run(probes.distill, student_logits=s, teacher_logits=t, temperature=T)
        sd = s.double().requires_grad_()
        want = kd_reference(sd, t, T)
        want.backward()
        log_q, log_p = F.log_softmax(s.double() / T, -1), F.log_softmax(t.double() / T, -1)
        expect_close(got["loss"], want.detach(), f"distillation loss at T={T:g}", diagnoses={
            "KL without the T^2 factor": want.detach() / T**2,
            "KL(student || teacher), the reversed direction":
                (log_q.exp() * (log_q - log_p)).sum(-1).mean() * T**2,
            "KL averaged over classes too (reduction='mean' instead of 'batchmean')":
                want.detach() / s.shape[1],
            "KL summed over the batch instead of averaged": want.detach() * s.shape[0],
            "logits not divided by T": F.kl_div(F.log_softmax(s.double(), -1),
                                                F.log_softmax(t.double(), -1), log_target=True,
                                                reduction="batchmean") * T**2,
        })
        expect(got["student_grad"] is not None,
               "no gradient reached the student's logits (is the loss detached?)")
        expect_close(got["student_grad"], sd.grad, f"gradient wrt the student's logits at T={T:g}")
        t_grad = got["teacher_grad"]
        expect(t_grad is None or not t_grad.abs().max().item(),
               "a gradient flowed into the teacher's logits: detach them, the teacher is a "
               "fixed target")


# ---------------------------------------------------------------------------- vit.finetune

def tiny_net_state(g):
    net = randomize(probes._TinyNet(), g)
    return {k: v.clone() for k, v in net.state_dict().items()}


@lab.check("vit.finetune", points=1)
def replace_head_keeps_body(student, g):
    """replace_head returns the model with a new Linear(in_features, num_classes) head and
    every other weight unchanged: the returned model computes body(x) W^T + b with the new
    head's W, b (recomputed here from the state it reports)."""
    state = tiny_net_state(g)
    x = torch.randn(4, 6, generator=g)
    got = student.run(probes.replace_head, state=state, num_classes=5, x=x)
    new = got["state"]
    body = {k for k in state if not k.startswith("head.")}
    head = set(new) - body
    expect(head == {"head.weight", "head.bias"},
           f"the new head must be one nn.Linear(8, 5) assigned to model.head (weight and bias), "
           f"but the model's parameters outside the body are {sorted(head)}")
    expect_shape(new["head.weight"], (5, 8), "the new head's weight (nn.Linear(in_features, "
                 "num_classes) with the old head's in_features)")
    expect_shape(new["head.bias"], (5,), "the new head's bias")
    for name in sorted(body):
        expect(name in new and torch.equal(new[name], state[name]),
               f"{name} changed: only the head may be replaced")
    net = probes._TinyNet()
    net.head = nn.Linear(8, 5)
    net.load_state_dict({k: v.clone() for k, v in new.items()})
    with torch.no_grad():
        want = net.eval()(x)
    expect_close(got["net_out"], want, "the model's output after replace_head (the old body, "
                 "then the new Linear head)")
    expect(got["returned_out"] is not None, "replace_head must return the model it was given",
           mistake="replace_head returns nothing")
    expect_close(got["returned_out"], want, "the output of the model replace_head returned "
                 "(return the model you were given, with its new head)")


FINETUNE_LR = 0.1


def finetune_step(student, g, mode):
    """One SGD step through the student's trainable_parameters; the grader's own gradients and
    the names of the parameters the student returned (found by their values)."""
    state = tiny_net_state(g)
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    got = student.run(probes.trainable, state=state, mode=mode, x=x, y=y, lr=FINETUNE_LR)
    net = probes._TinyNet()
    net.load_state_dict(state)
    F.cross_entropy(net(x), y).backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    names = []
    for value in got["returned"]:
        match = [n for n, v in state.items() if v.shape == value.shape and torch.equal(v, value)]
        names.append(match[0] if match else "<not a parameter of the model>")
    return got, sorted(names), state, grads


def expect_sgd_step(got, state, grads, trained: list[str], mode: str) -> None:
    """The state after the step: p - lr * grad for the trained parameters, the rest unchanged;
    frozen parameters have no gradient, trained ones the grader's."""
    frozen = sorted(n for n in state if n not in trained)
    still = [n for n in frozen if got["grads"].get(n) is not None]
    expect(not still, f"in '{mode}' mode these still have requires_grad=True (they got a "
                      f"gradient): {still}")
    missing = [n for n in trained if got["grads"].get(n) is None]
    expect(not missing, f"in '{mode}' mode {missing} got no gradient: set requires_grad=True on "
                        f"the parameters that train (here every parameter starts frozen, so "
                        f"trainable_parameters must switch them on)")
    for n in trained:
        expect_close(got["grads"][n], grads[n], f"the gradient of {n}")
    moved = [n for n in frozen if not torch.equal(got["state"][n], state[n])]
    expect(not moved, f"one optimiser step changed frozen weights: {moved}")
    for n in trained:
        expect_close(got["state"][n], state[n] - FINETUNE_LR * grads[n],
                     f"{n} after one SGD step on the returned parameters (p - lr * gradient)")


@lab.check("vit.finetune", points=1)
def head_only_trains_the_head(student, g):
    """mode 'head': only the head's parameters are returned, require grad and change (one SGD
    step, recomputed here)."""
    got, names, state, grads = finetune_step(student, g, "head")
    head = ["head.bias", "head.weight"]
    expect(names == head,
           f"trainable_parameters(model, 'head') should return the head's parameters "
           f"{head}, got {names}")
    expect_sgd_step(got, state, grads, head, "head")


@lab.check("vit.finetune", points=1)
def full_trains_everything(student, g):
    """mode 'full': every parameter is returned, requires grad and changes (one SGD step,
    recomputed here)."""
    got, names, state, grads = finetune_step(student, g, "full")
    everything = sorted(state)
    expect(names == everything,
           f"trainable_parameters(model, 'full') should return all {len(everything)} "
           f"parameters, got {names}")
    expect_sgd_step(got, state, grads, everything, "full")
