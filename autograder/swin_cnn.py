"""Checks for the Swin-vs-CNN lab. Run them with `vislab grade swin_cnn [--impl labs|solutions|PATH]`.

References are independent of the student's code and of the lab's solution: torchvision's
ShiftedWindowAttention / shifted_window_attention, SwinTransformerBlock, PatchMerging,
SwinTransformer, CNBlock, ConvNeXt and BasicBlock with the same weights, torch's norm layers,
closed forms written here (window order, region masks, Grad-CAM by an explicit split of the
network), all in float64. Inputs and weights come from the generator `g` the grader seeds; the
student's code is reached only through `student.run(probe, ...)` (autograder/swin_cnn_probes.py).
"""
import copy
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.convnext import CNBlock, CNBlockConfig, ConvNeXt
from torchvision.models.resnet import BasicBlock
from torchvision.models.swin_transformer import (PatchMerging, ShiftedWindowAttention,
                                                 SwinTransformer, SwinTransformerBlock,
                                                 shifted_window_attention)

from vislab.grading import (CheckFailed, Lab, expect, expect_close, expect_gradients,
                            expect_not_in_source, expect_shape, expect_tensor)
from vislab.probing import StudentError

from . import swin_cnn_probes as probes

lab = Lab("swin_cnn", {
    "swin.window_partition": "window_partition and window_reverse",
    "swin.window_attention": "window attention with a relative position bias",
    "swin.shifted_window": "cyclic shift, the shifted-window mask, shift back",
    "swin.patch_merging": "2x2 concat (torchvision's order), norm, Linear 4C -> 2C",
    "swin.model": "stages of (shifted) blocks, merging, norm, pooling, head",
    "convnext.block": "depthwise 7x7, LayerNorm, inverted bottleneck, layer scale, drop path",
    "resnet.model": "ResNet 6n+2 with 16/32/64 filters",
    "norms": "BatchNorm, InstanceNorm, LayerNorm, GroupNorm, Batch-Instance Norm",
    "gradcam": "Grad-CAM for a chosen class and layer",
    "swin.distill": "label-free distillation step from a teacher's soft targets",
})


def randomize(module: nn.Module, g: torch.Generator) -> nn.Module:
    """Every parameter random (norm weights near 1), BatchNorm running statistics random, so
    that no term can hide as zero or one."""
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                norm_weight = isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d,
                                               nn.BatchNorm1d)) and name == "weight"
                p.copy_(1 + 0.2 * noise if norm_weight else 0.3 * noise)
            if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                mod.running_mean.copy_(0.3 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
    return module


def floats(state: dict) -> dict:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def reference(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, *args):
    """module(x) in float64 and the gradients of <output, grad_out> by parameter name."""
    module.zero_grad(set_to_none=True)
    x = x.double().requires_grad_()
    out = module(x, *args)
    (out * grad_out.double()).sum().backward()
    grads = {n: p.grad.float() for n, p in module.named_parameters() if p.grad is not None}
    return out.detach(), grads, x.grad


# ----------------------------------------------------------------- swin.window_partition

def partition_variant(x, ws, tokens="row", windows="row", permute=True):
    """window_partition in float64, optionally with a known mistake."""
    B, H, W, C = x.shape
    if not permute:
        return x.reshape(-1, ws * ws, C)
    v = x.view(B, H // ws, ws, W // ws, ws, C)           # b, i, y, j, x, c
    order = [0, 1, 3] if windows == "row" else [0, 3, 1]  # window grid axes
    order += [2, 4] if tokens == "row" else [4, 2]        # axes inside a window
    return v.permute(*order, 5).reshape(-1, ws * ws, C)


def reverse_reference(windows, ws, H, W):
    C = windows.shape[-1]
    v = windows.reshape(-1, H // ws, W // ws, ws, ws, C)
    return v.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


@lab.check("swin.window_partition", points=1)
def partition_orders_windows_and_tokens(student, g):
    """(B*nW, ws*ws, C): windows image by image, row by row; tokens row-major; H != W."""
    ws = 3
    for B, H, W, C in ((2, 6, 9, 4), (1, 3, 3, 2)):
        x = torch.randn(B, H, W, C, generator=g)
        got = student.run(probes.partition, x=x, window_size=ws)
        expect_close(got, partition_variant(x, ws), f"window_partition of a {(B, H, W, C)} map",
                     atol=0, rtol=0, diagnoses={
            "windows cut by a reshape without bringing the window-grid axes together "
            "(permute (B, H/ws, ws, W/ws, ws, C) to (B, H/ws, W/ws, ws, ws, C) first)":
                partition_variant(x, ws, permute=False),
            "the tokens inside each window in column-major order": partition_variant(x, ws, tokens="col"),
            "the windows in column-major order (down the columns first)":
                partition_variant(x, ws, windows="col"),
        })


@lab.check("swin.window_partition", points=1)
def reverse_undoes_partition(student, g):
    """window_reverse puts every token back: reverse(partition(x)) == x, and reverse of
    arbitrary windows matches the reference."""
    ws, B, H, W, C = 2, 2, 4, 6, 3
    windows = torch.randn(B * (H // ws) * (W // ws), ws * ws, C, generator=g)
    x = torch.randn(B, H, W, C, generator=g)
    got = student.run(probes.reverse, windows=windows, window_size=ws, H=H, W=W, x=x)
    expect_close(got["reversed"], reverse_reference(windows, ws, H, W), "window_reverse",
                 atol=0, rtol=0, diagnoses={
        "windows put back by a reshape, without undoing the permute":
            windows.reshape(-1, H, W, C)})
    expect_close(got["round_trip"], x, "window_reverse(window_partition(x))", atol=0, rtol=0)


# ------------------------------------------------------------------ swin.window_attention

def tv_index(ws: int) -> torch.Tensor:
    """torchvision's relative_position_index as (N, N)."""
    attn = ShiftedWindowAttention(4, [ws, ws], [0, 0], 1)
    return attn.relative_position_index.view(ws * ws, ws * ws)


def index_variants(ws: int) -> dict:
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + ws - 1
    dx = xs[:, None] - xs[None, :] + ws - 1
    return {"dy and dx swapped (dx * (2 ws - 1) + dy)": dx * (2 * ws - 1) + dy,
            "position j minus position i instead of i minus j (the transpose)": tv_index(ws).T,
            "rows of the table counted in steps of ws instead of 2 ws - 1": dy * ws + dx}


@lab.check("swin.window_attention", points=1)
def relative_position_index_matches_torchvision(student, g):
    """index[i, j] = (dy + ws - 1) * (2 ws - 1) + (dx + ws - 1), as torchvision's, ws = 2, 3, 4."""
    for ws in (2, 3, 4):
        got = expect_tensor(student.run(probes.position_index, window_size=ws),
                            "relative_position_index")
        N = ws * ws
        if tuple(got.shape) == (N * N,):
            raise CheckFailed(f"relative_position_index({ws}): expected shape {(N, N)}, got "
                              f"{(N * N,)} (torchvision keeps it flat; here it is (N, N))")
        expect(not got.is_floating_point(), f"relative_position_index({ws}) must hold integers "
               f"(a long tensor, to index the table), got {got.dtype}")
        expect_close(got, tv_index(ws), f"relative_position_index({ws})", atol=0, rtol=0,
                     diagnoses=index_variants(ws))


def tv_window_attention(g, dim, ws, heads) -> ShiftedWindowAttention:
    return randomize(ShiftedWindowAttention(dim, [ws, ws], [0, 0], heads), g).double().eval()


def attention_state(tv: ShiftedWindowAttention) -> dict:
    return floats({k: v for k, v in tv.state_dict().items() if "relative_position_index" not in k})


def window_attention_variant(tv, x, mask=None, scale=True, bias="normal", softmax_dim=-1,
                             mask_order="image"):
    """Window attention in float64 from tv's weights, optionally with a known mistake."""
    x = x.double()
    BW, N, C = x.shape
    H = tv.num_heads
    d = C // H
    qkv = F.linear(x, tv.qkv.weight, tv.qkv.bias).reshape(BW, N, 3, H, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores * d**-0.5
    rel = tv.get_relative_position_bias()                        # (1, H, N, N)
    if bias == "normal":
        scores = scores + rel
    elif bias == "transposed":
        scores = scores + rel.transpose(-2, -1)
    if mask is not None:
        nW = mask.shape[0]
        if mask_order == "image":
            scores = (scores.view(BW // nW, nW, H, N, N) + mask.double()[:, None]).view(BW, H, N, N)
        else:  # window w of every image got mask[w // B]
            scores = scores + mask.double().repeat_interleave(BW // nW, 0)[:, None]
    attn = scores.softmax(dim=softmax_dim)
    if bias == "after_softmax":
        attn = attn + rel
    out = (attn @ v).transpose(1, 2).reshape(BW, N, C)
    return F.linear(out, tv.proj.weight, tv.proj.bias)


@lab.check("swin.window_attention", points=2)
def window_attention_matches_torchvision(student, g):
    """Without a mask, equals torchvision's shifted_window_attention (shift 0) applied to each
    window; gradients of the weights, the bias table and the input."""
    dim, ws, heads, BW = 12, 3, 3, 4
    tv = tv_window_attention(g, dim, ws, heads)
    x = torch.randn(BW, ws * ws, dim, generator=g)
    grad_out = torch.randn(BW, ws * ws, dim, generator=g)
    got = student.run(probes.window_attention, dim=dim, window_size=ws, num_heads=heads,
                      state=attention_state(tv), x=x, grad_out=grad_out)

    want, grads, input_grad = reference(WindowsAsImages(tv), x, grad_out)
    with torch.no_grad():
        diagnoses = {
            "no relative position bias added": window_attention_variant(tv, x, bias="none"),
            "the bias transposed (B[h, j, i] instead of B[h, i, j])":
                window_attention_variant(tv, x, bias="transposed"),
            "the bias added after the softmax instead of before":
                window_attention_variant(tv, x, bias="after_softmax"),
            "no 1/sqrt(head_dim) scale": window_attention_variant(tv, x, scale=False),
            "softmax over the queries (dim=-2) instead of the keys":
                window_attention_variant(tv, x, softmax_dim=-2),
        }
    expect_close(got["out"], want, "WindowAttention output", diagnoses=diagnoses)
    expect_gradients(got.get("grads", {}), {
        "relative_position_bias_table": grads["attn.relative_position_bias_table"],
        "qkv.weight": grads["attn.qkv.weight"], "proj.weight": grads["attn.proj.weight"]},
        "WindowAttention")
    expect_close(got.get("input_grad"), input_grad, "WindowAttention: gradient of the input")


class WindowsAsImages(nn.Module):
    """torchvision's window attention applied to windows (B*nW, N, C), each as a ws x ws image."""

    def __init__(self, attn: ShiftedWindowAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        BW, N, C = x.shape
        ws = self.attn.window_size[0]
        return self.attn(x.view(BW, ws, ws, C)).reshape(BW, N, C)


@lab.check("swin.window_attention", points=1)
def window_attention_applies_mask(student, g):
    """With a mask (nW, N, N), window w of every image gets mask[w] before the softmax."""
    dim, ws, heads, B, nW = 8, 2, 2, 3, 2
    N = ws * ws
    tv = tv_window_attention(g, dim, ws, heads)
    x = torch.randn(B * nW, N, dim, generator=g)
    mask = torch.where(torch.rand(nW, N, N, generator=g) < 0.4, -100.0, 0.0)
    mask[:, torch.arange(N), torch.arange(N)] = 0.0  # every token may attend to itself
    got = student.run(probes.window_attention, dim=dim, window_size=ws, num_heads=heads,
                      state=attention_state(tv), x=x, mask=mask)
    with torch.no_grad():
        want = window_attention_variant(tv, x, mask)
        diagnoses = {
            "the mask ignored": window_attention_variant(tv, x),
            "the mask repeated window by window (mask[w] for windows w*B ... w*B + B-1) instead "
            "of image by image (windows are ordered b * nW + w: view the scores as (B, nW, H, N, N))":
                window_attention_variant(tv, x, mask, mask_order="window"),
        }
    expect_close(got["out"], want, "WindowAttention output with a mask", diagnoses=diagnoses)


# -------------------------------------------------------------------- swin.shifted_window

def mask_reference(H: int, W: int, ws: int, s: int, wrapped_first: bool = False) -> torch.Tensor:
    """True where tokens i, j of window w may NOT attend: after rolling by -s, a position
    p >= H - s (W - s) was wrapped around from the other side; tokens of one window may attend
    to each other when both or neither were wrapped, along each axis. (nW, N, N) bool."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    if wrapped_first:  # the regions of a roll by +s: the first s rows / columns wrapped
        label = ((ys < s).long() * 2 + (xs < s).long()).double()
    else:
        label = ((ys >= H - s).long() * 2 + (xs >= W - s).long()).double()
    windows = partition_variant(label[None, :, :, None], ws)[..., 0]   # (nW, N)
    return windows[:, :, None] != windows[:, None, :]


@lab.check("swin.shifted_window", points=1)
def shifted_window_mask_matches_regions(student, g):
    """mask[w, i, j] is 0 where tokens i, j of window w came from one region of the unrolled
    map and a large negative number (-100, or -inf) where not; H != W and two window sizes."""
    for H, W, ws, s in ((8, 12, 4, 2), (6, 6, 3, 1)):
        got = student.run(probes.window_mask, H=H, W=W, window_size=ws, shift_size=s)
        nW, N = (H // ws) * (W // ws), ws * ws
        got = expect_shape(got, (nW, N, N), f"shifted_window_mask({H}, {W}, {ws}, {s})")
        expect(got.is_floating_point(), f"shifted_window_mask must be a float tensor to add to "
                                         f"the scores, got {got.dtype}")
        allowed, blocked = got == 0, got <= -50
        if not (allowed | blocked).all():
            raise CheckFailed(f"shifted_window_mask({H}, {W}, {ws}, {s}): every entry must be 0 "
                              f"(may attend) or -100 (may not), found e.g. "
                              f"{got[~(allowed | blocked)][0].item():g}")
        want = mask_reference(H, W, ws, s)
        if torch.equal(blocked, want):
            continue
        wrong = (blocked != want).nonzero()[0].tolist()
        message = (f"shifted_window_mask({H}, {W}, {ws}, {s}): {(blocked != want).sum().item()} "
                   f"of {want.numel()} entries wrong, e.g. window {wrong[0]}, tokens {wrong[1]}, "
                   f"{wrong[2]} should {'not ' if want[tuple(wrong)] else ''}be masked")
        for mistake, pattern in {
            "a mask that blocks nothing": torch.zeros_like(want),
            "allowed and blocked swapped": ~want,
            "the regions of a roll by +shift (the first shift rows wrapped) instead of -shift":
                mask_reference(H, W, ws, s, wrapped_first=True),
        }.items():
            if pattern is not None and torch.equal(blocked, pattern):
                message += f"; it matches {mistake}"
                break
        raise CheckFailed(message)


def tv_swin_block(g, dim, heads, ws, shift) -> SwinTransformerBlock:
    block = SwinTransformerBlock(dim, heads, [ws, ws], [shift, shift],
                                 norm_layer=partial(nn.LayerNorm, eps=1e-5))
    return randomize(block, g).double().eval()


def block_state(tv: SwinTransformerBlock) -> dict:
    """torchvision SwinTransformerBlock weights under the lab's SwinBlock names."""
    out = {}
    for k, v in tv.state_dict().items():
        if "relative_position_index" in k:
            continue
        out[k.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")] = v
    return floats(out)


def block_variant(tv, x, shift, roll_back=True, sign=-1, mask=True, dims=(1, 2), mask_hw=None):
    """A Swin block in float64 from tv's weights, optionally with a known mistake in the shift
    (mask_hw: the mask built for a map of that size)."""
    x = x.double()
    ws = tv.attn.window_size[0]
    h = tv.norm1(x)
    B, H, W, C = h.shape
    if shift:
        h = torch.roll(h, shifts=(sign * shift,) * len(dims), dims=dims)
    m = None
    if shift and mask:
        m = torch.where(mask_reference(*(mask_hw or (H, W)), ws, shift), -100.0, 0.0)
    out = window_attention_variant(tv.attn, partition_variant(h, ws), m)
    h = reverse_reference(out, ws, H, W)
    if shift and roll_back:
        h = torch.roll(h, shifts=(-sign * shift,) * len(dims), dims=dims)
    x = x + h
    return x + tv.mlp(tv.norm2(x))


def shift_diagnoses(tv, x, shift) -> dict:
    B, H, W = x.shape[:3]
    ws = tv.attn.window_size[0]
    windows, square = B * (H // ws) * (W // ws), (H // ws) ** 2
    with torch.no_grad():
        wrong_size = {} if H == W or windows % square else {
            f"the mask built for an H x H map (shifted_window_mask(H, H, ...); it is "
            f"shifted_window_mask(H, W, ...), here ({H}, {W}))":
                block_variant(tv, x, shift, mask_hw=(H, H))}
        return wrong_size | {
            "the map not rolled back after the attention (the window not rolled back)":
                block_variant(tv, x, shift, roll_back=False),
            "shifted windows without the mask (mask missing)": block_variant(tv, x, shift, mask=False),
            "a roll by +shift first and -shift after (the wrong direction)":
                block_variant(tv, x, shift, sign=1),
            "a roll along H only (dims=1) instead of H and W": block_variant(tv, x, shift, dims=(1,)),
            "no shift at all": block_variant(tv, x, 0),
        }


@lab.check("swin.shifted_window", points=2)
def swin_block_matches_torchvision(student, g):
    """With reference window attention and partitioning, the student's SwinBlock equals
    torchvision's SwinTransformerBlock, shifted (shift 2 of window 4) and not shifted, on an
    8 x 12 map (H != W: the mask is shifted_window_mask(H, W, ...)); on a 4 x 4 map, one
    window, the shift argument (0 there) is what counts."""
    dim, heads, ws, B = 8, 2, 4, 2
    for shift in (2, 0):
        tv = tv_swin_block(g, dim, heads, ws, shift)
        x = torch.randn(B, 8, 12, dim, generator=g)
        grad_out = torch.randn(B, 8, 12, dim, generator=g)
        got = student.run(probes.swin_block, dim=dim, num_heads=heads, window_size=ws,
                          shift_size=shift, state=block_state(tv), x=x, grad_out=grad_out)
        want, grads, input_grad = reference(tv, x, grad_out)
        expect_close(got["out"], want, f"SwinBlock output (shift {shift})",
                     diagnoses=shift_diagnoses(tv, x, shift) if shift else None)
        expect_close(got.get("input_grad"), input_grad,
                     f"SwinBlock (shift {shift}): gradient of the input")
    tv = tv_swin_block(g, dim, heads, ws, 2)  # one window covers a 4 x 4 map: nothing to shift
    x = torch.randn(B, 4, 4, dim, generator=g)
    got = student.run(probes.swin_block, dim=dim, num_heads=heads, window_size=ws, shift_size=2,
                      state=block_state(tv), x=x)
    with torch.no_grad():
        want = tv(x.double())
        shifted = block_variant(tv, x, 2)
    expect_close(got["out"], want, "SwinBlock output (shift_size 2) on a 4 x 4 map, one window: "
                 "SwinBlock.attention calls shifted_window_attention with shift 0 there",
                 diagnoses={"the block's own shift_size used instead of the `shift` argument "
                            "(the map rolled and masked although one window covers it)": shifted})


@lab.check("swin.shifted_window", points=1)
def swin_block_with_own_parts(student, g):
    """The student's whole SwinBlock -- own partition, attention, mask and shift -- equals
    torchvision's, on a 12 x 8 map with window 4 and shift 2."""
    dim, heads, ws, shift = 12, 3, 4, 2
    tv = tv_swin_block(g, dim, heads, ws, shift)
    x = torch.randn(2, 12, 8, dim, generator=g)
    grad_out = torch.randn(2, 12, 8, dim, generator=g)
    got = student.run(probes.swin_block, dim=dim, num_heads=heads, window_size=ws,
                      shift_size=shift, state=block_state(tv), x=x, grad_out=grad_out,
                      own_parts=True)
    want, grads, _ = reference(tv, x, grad_out)
    expect_close(got["out"], want, "SwinBlock output with your own window_partition, "
                 "WindowAttention and mask (if swin_block_matches_torchvision passes, the "
                 "difference is in those)", diagnoses=shift_diagnoses(tv, x, shift))
    expect_gradients(got.get("grads", {}), {
        "attn.relative_position_bias_table": grads["attn.relative_position_bias_table"],
        "norm1.weight": grads["norm1.weight"]}, "SwinBlock")


# -------------------------------------------------------------------- swin.patch_merging

def merging_variant(tv: PatchMerging, x, order="torchvision", norm=True):
    x = x.double()
    H, W = x.shape[1:3]
    x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    tl, bl, tr, br = x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]
    if order == "torchvision":
        y = torch.cat([tl, bl, tr, br], -1)
    elif order == "row":
        y = torch.cat([tl, tr, bl, br], -1)
    else:  # pixel_unshuffle: channel-major interleave
        y = torch.stack([tl, tr, bl, br], -1).flatten(-2)
    return tv.reduction(tv.norm(y) if norm else y)


@lab.check("swin.patch_merging", points=2)
def patch_merging_matches_torchvision(student, g):
    """Equals torchvision's PatchMerging (same weights) on a 6 x 8 map; gradients."""
    dim = 5
    tv = randomize(PatchMerging(dim), g).double()
    x = torch.randn(2, 6, 8, dim, generator=g)
    grad_out = torch.randn(2, 3, 4, 2 * dim, generator=g)
    got = student.run(probes.patch_merging, dim=dim, state=floats(tv.state_dict()), x=x,
                      grad_out=grad_out)
    want, grads, _ = reference(tv, x, grad_out)
    with torch.no_grad():
        diagnoses = {
            "the four neighbours in row-major order (top-left, top-right, bottom-left, "
            "bottom-right); torchvision's is x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], "
            "x[1::2, 1::2]": merging_variant(tv, x, "row"),
            "the neighbours interleaved channel by channel (pixel_unshuffle's order) instead of "
            "concatenated": merging_variant(tv, x, "interleave"),
            "no LayerNorm before the reduction": merging_variant(tv, x, norm=False),
        }
    expect_close(got["out"], want, "PatchMerging output", diagnoses=diagnoses)
    expect_gradients(got.get("grads", {}), {k: grads[k] for k in ("reduction.weight", "norm.weight")},
                     "PatchMerging")


@lab.check("swin.patch_merging", points=1)
def patch_merging_pads_odd_sizes(student, g):
    """An odd H or W is padded with zeros at the bottom / right first: 7 x 5 -> 4 x 3, and one
    odd axis at a time (7 x 6 -> 4 x 3, 6 x 5 -> 3 x 3)."""
    dim = 3
    tv = randomize(PatchMerging(dim), g).double()
    for H, W in ((7, 5), (7, 6), (6, 5)):
        x = torch.randn(2, H, W, dim, generator=g)
        how = (f"pad a zero row at the bottom when H is odd and a zero column at the right when "
               f"W is odd: F.pad pads the last axis first, in (before, after) pairs, so for "
               f"(B, H, W, C) it is F.pad(x, (0, 0, 0, W % 2, 0, H % 2)) -- C, then W, then H")
        try:
            got = student.run(probes.patch_merging, dim=dim, state=floats(tv.state_dict()), x=x)
        except StudentError as exc:
            if exc.status != "error":
                raise
            raise CheckFailed(f"PatchMerging of a {H} x {W} map failed with {exc.message}; the "
                              f"padding is the likely cause: {how}",
                              "odd sizes not padded as torchvision")
        with torch.no_grad():
            want = tv(x.double())
            x_d = x.double()
            diagnoses = {"the zero row and column put at the top and left instead of the "
                         "bottom and right": merging_padded(tv, x_d, (0, 0, W % 2, 0, H % 2, 0))}
        expect_close(got["out"], want, f"PatchMerging output for a {H} x {W} map ({how})",
                     diagnoses=diagnoses)


def merging_padded(tv: PatchMerging, x, pad):
    """torchvision's PatchMerging after padding x by `pad` (F.pad order) instead of its own."""
    x = F.pad(x, pad)
    y = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    return tv.reduction(tv.norm(y))


# ------------------------------------------------------------------------------ swin.model

# Small enough to be fast, big enough to show mistakes: 3 channels, a first stage of 2x2
# windows (so shifts matter), a last stage smaller than a window (so padding happens).
# norm_eps 0.01, not the default 1e-5, so that a norm built without config.norm_eps shows.
SWIN = dict(image_size=16, patch_size=2, in_channels=3, num_classes=5, embed_dim=8,
            depths=[2, 2, 1], num_heads=[2, 2, 4], window_size=4, mlp_ratio=2.0, dropout=0.0,
            drop_path=0.2, norm_eps=0.01)


def tv_swin(g, config=None) -> SwinTransformer:
    c = config or SWIN
    # torchvision divides by (blocks - 1): one block is built as the first of two (rate 0, as
    # the lab's max(1, blocks - 1) gives), the second then removed
    one = sum(c["depths"]) == 1
    m = SwinTransformer([c["patch_size"]] * 2, c["embed_dim"], [2] if one else c["depths"],
                        c["num_heads"], [c["window_size"]] * 2, mlp_ratio=c["mlp_ratio"],
                        dropout=c["dropout"], stochastic_depth_prob=c["drop_path"],
                        num_classes=c["num_classes"],
                        norm_layer=partial(nn.LayerNorm, eps=c["norm_eps"]))
    if one:
        m.features[1] = m.features[1][:1]
    return randomize(m, g).double().eval()


def swin_names(tv: SwinTransformer) -> dict[str, str]:
    """The lab's Swin parameter names -> torchvision SwinTransformer's (index buffers aside)."""
    out = {}
    for k in tv.state_dict():
        if "relative_position_index" in k:
            continue
        parts = k.split(".")
        if parts[0] != "features":
            out[k] = k
        elif parts[1] == "0":
            out[f"patch_embed.{'proj' if parts[2] == '0' else 'norm'}.{parts[3]}"] = k
        elif int(parts[1]) % 2:
            rest = ".".join(parts[3:]).replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            out[f"stages.{(int(parts[1]) - 1) // 2}.{parts[2]}.{rest}"] = k
        else:
            out[f"merges.{int(parts[1]) // 2 - 1}.{'.'.join(parts[2:])}"] = k
    return out


def swin_state(tv: SwinTransformer) -> dict:
    """torchvision SwinTransformer weights under the lab's Swin names."""
    s = tv.state_dict()
    return floats({ours: s[theirs] for ours, theirs in swin_names(tv).items()})


def reference_swin(state: dict, config: dict) -> SwinTransformer:
    """The grader's own Swin (torchvision's SwinTransformer, its patch convolution for any
    number of channels) holding weights given under the lab's names; eval mode."""
    c = config
    tv = SwinTransformer([c["patch_size"]] * 2, c["embed_dim"], c["depths"], c["num_heads"],
                         [c["window_size"]] * 2, mlp_ratio=c["mlp_ratio"],
                         num_classes=c["num_classes"],
                         norm_layer=partial(nn.LayerNorm, eps=c["norm_eps"]))
    tv.features[0][0] = nn.Conv2d(c["in_channels"], c["embed_dim"], c["patch_size"],
                                  c["patch_size"])
    names = swin_names(tv)
    want = {ours: tuple(tv.state_dict()[theirs].shape) for ours, theirs in names.items()}
    have = {k: tuple(v.shape) for k, v in state.items() if type(v) is torch.Tensor}
    missing, extra = sorted(set(want) - set(have)), sorted(set(state) - set(want))
    expect(not missing and not extra, f"the trained Swin's weights are not the handout's "
           f"parameters: missing {missing[:3]}, unexpected {extra[:3]} (keep the names that "
           f"__init__ creates)")
    wrong = [k for k in want if have[k] != want[k]]
    expect(not wrong, f"the trained Swin's {wrong[0] if wrong else ''} has shape "
                      f"{have[wrong[0]] if wrong else ''}, expected {want[wrong[0]] if wrong else ''}")
    own = tv.state_dict()
    tv.load_state_dict({theirs: state[ours].float() if ours in state else own[theirs]
                        for theirs, ours in {**{v: k for k, v in names.items()},
                                             **{k: k for k in own if "index" in k}}.items()})
    return tv.eval()


def swin_variant(tv, x, shifts=None, final_norm=True, pool="mean"):
    """torchvision's forward with the blocks' shifts set to `shifts(j)` and other known mistakes."""
    tv = copy.deepcopy(tv)
    if shifts is not None:
        for i in range(1, len(tv.features), 2):
            for j, block in enumerate(tv.features[i]):
                block.attn.shift_size = [shifts(j)] * 2
    h = tv.features(x.double())
    if final_norm:
        h = tv.norm(h)
    h = h.mean(dim=(1, 2)) if pool == "mean" else h.amax(dim=(1, 2)) if pool == "max" else h[:, 0, 0]
    return tv.head(h)


def swin_diagnoses(tv, x) -> dict:
    half = SWIN["window_size"] // 2
    with torch.no_grad():
        return {
            "no block shifted (shift 0 in every block)": swin_variant(tv, x, lambda j: 0),
            "every block shifted": swin_variant(tv, x, lambda j: half),
            "the even blocks shifted instead of the odd ones":
                swin_variant(tv, x, lambda j: 0 if j % 2 else half),
            "no final LayerNorm": swin_variant(tv, x, final_norm=False),
            "max pooling instead of the mean over positions": swin_variant(tv, x, pool="max"),
            "the head reading the first position instead of the mean": swin_variant(tv, x, pool="first"),
        }


# Train-mode runs of swin_matches_torchvision, each deterministic: stochastic depth 1 over two
# blocks (rates 0 and 1: the first block always kept, the last always dropped, 16 images so a
# rate of 0.5 cannot pass by luck), over one block (rate 0: drop_path * k / max(1, blocks - 1)),
# and dropout 1 (every block's branches dropped).
SWIN_TRAIN_RUNS = {
    "stochastic depth 1 over two blocks (rates 0 and 1)":
        dict(SWIN, depths=[1, 1], num_heads=[2, 2], drop_path=1.0),
    "stochastic depth 1 with one block (its rate 0 = drop_path * 0 / max(1, blocks - 1))":
        dict(SWIN, depths=[1], num_heads=[2], drop_path=1.0),
    "dropout 1 (passed to every block, so every branch is dropped)":
        dict(SWIN, dropout=1.0, drop_path=0.0),
}


@lab.check("swin.model", points=2)
def swin_matches_torchvision(student, g):
    """With torchvision's blocks and patch merging in place of the student's (same weights,
    the settings the student built them with), equals torchvision's SwinTransformer in eval
    mode (norm eps 0.01); in train mode the stochastic-depth rates rise linearly from 0 to
    drop_path and the dropout reaches every block."""
    c = SWIN
    tv = tv_swin(g)
    x = torch.randn(2, c["in_channels"], c["image_size"], c["image_size"], generator=g)
    grad_out = torch.randn(2, c["num_classes"], generator=g)
    got = student.run(probes.swin_model, config=c, state=swin_state(tv), x=x, grad_out=grad_out)
    want, grads, _ = reference(tv, x, grad_out)
    with torch.no_grad():
        diagnoses = swin_diagnoses(tv, x)
        for where, parts in (("blocks", (SwinTransformerBlock,)), ("patch mergings", (PatchMerging,)),
                             ("blocks and patch mergings", (SwinTransformerBlock, PatchMerging))):
            diagnoses[f"the {where} built without config.norm_eps (their LayerNorms at eps "
                      f"1e-5 instead of {c['norm_eps']:g})"] = eps_variant(tv, x, 1e-5, parts)
    expect_close(got["out"], want, "Swin logits", diagnoses=diagnoses)
    expect_gradients(got.get("grads", {}), {"patch_embed.proj.weight": grads["features.0.0.weight"],
                                            "norm.weight": grads["norm.weight"],
                                            "head.weight": grads["head.weight"]}, "Swin")
    for what, config in SWIN_TRAIN_RUNS.items():
        tv = tv_swin(g, config)
        x = torch.randn(16, c["in_channels"], c["image_size"], c["image_size"], generator=g)
        got = student.run(probes.swin_model, config=config, state=swin_state(tv), x=x,
                          train=True)
        with torch.no_grad():
            want = tv.train()(x.double())
            tv.eval()
            diagnoses = {"the same stochastic-depth rate config.drop_path in every block":
                             constant_drop_variant(tv, x, config), "nothing dropped": tv(x.double())}
        expect_close(got["out"], want, f"Swin logits in train mode with {what}",
                     diagnoses=diagnoses)


def eps_variant(tv, x, eps, parts):
    """tv's forward with the eps of every LayerNorm inside modules of the types `parts` set to
    `eps`."""
    tv = copy.deepcopy(tv)
    for part in tv.modules():
        if isinstance(part, parts):
            for m in part.modules():
                if isinstance(m, nn.LayerNorm):
                    m.eps = eps
    return tv(x.double())


def constant_drop_variant(tv, x, config):
    """tv in train mode with every block's stochastic depth at config.drop_path."""
    tv = copy.deepcopy(tv).train()
    for m in tv.modules():
        if isinstance(m, SwinTransformerBlock):
            m.stochastic_depth.p = config["drop_path"]
    return tv(x.double())


@lab.check("swin.model", points=1)
def swin_with_own_parts_matches_torchvision(student, g):
    """The student's whole Swin (own blocks, attention, shifts, merging) equals torchvision's."""
    c = SWIN
    tv = tv_swin(g)
    x = torch.randn(2, c["in_channels"], c["image_size"], c["image_size"], generator=g)
    grad_out = torch.randn(2, c["num_classes"], generator=g)
    got = student.run(probes.swin_model, config=c, state=swin_state(tv), x=x, grad_out=grad_out,
                      own_parts=True)
    want, grads, _ = reference(tv, x, grad_out)
    expect_close(got["out"], want, "Swin logits with your own blocks and patch merging (if "
                 "swin_matches_torchvision passes, the difference is in the other swin tasks)",
                 atol=1e-4, diagnoses=swin_diagnoses(tv, x))
    expect_gradients(got.get("grads", {}), {
        "stages.0.1.attn.relative_position_bias_table":
            grads["features.1.1.attn.relative_position_bias_table"],
        "merges.0.reduction.weight": grads["features.2.reduction.weight"]}, "Swin", atol=1e-4)


# The recipe of trains_on_mnist5k and its pass mark. `python benchmarks/calibrate.py swin_cnn
# --seeds 20` (reference solution, seeds 0-19; AMD EPYC, 2 cores, 2026-11-22) gave test
# accuracies min 0.808, mean 0.823, max 0.848, stdev 0.010, 3-9 s a seed; the same again on
# 2026-12-01 with the accuracy measured in the grader's own Swin. The mark, 0.60, sits
# 0.2 (20 standard deviations) below the worst seed and far above chance (0.10): any correct
# Swin passes, one that does not learn fails.
MNIST_SWIN = dict(image_size=28, patch_size=7, in_channels=1, num_classes=10, embed_dim=32,
                  depths=[2, 2], num_heads=[2, 4], window_size=2, mlp_ratio=2.0, dropout=0.0,
                  drop_path=0.0, norm_eps=1e-5)
TRAIN = dict(epochs=1, batch_size=32, lr=3e-3)
TRAIN_THRESHOLD = 0.60


def mnist_accuracy(student, seed: int) -> float:
    """Test accuracy after the TRAIN recipe on MNIST-5k: the student's Swin trains on the
    training images (in the student's process), and the grader's own Swin, holding the trained
    weights, classifies the test images, which the student's process never receives."""
    from vislab.data.mnist import mnist5k, normalise

    (x_train, y_train), (x_test, y_test) = mnist5k("train"), mnist5k("test")
    state = student.run(probes.train_swin, config=MNIST_SWIN, x_train=normalise(x_train),
                        y_train=y_train, seed=seed, **TRAIN)
    expect(type(state) is dict, "train_swin must return the trained Swin's state_dict")
    model = reference_swin(state, MNIST_SWIN)
    with torch.no_grad():
        x = normalise(x_test)
        pred = torch.cat([model(x[i:i + 500]).argmax(-1) for i in range(0, len(x), 500)])
    return (pred == y_test).float().mean().item()


@lab.check("swin.model", points=2, timeout=60)
def trains_on_mnist5k(student, g):
    """The student's Swin (7x7 patches, 2x2 windows, two stages), trained for one epoch of
    MNIST-5k, classifies the test set."""
    acc = mnist_accuracy(student, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    expect(acc >= TRAIN_THRESHOLD,
           f"test accuracy {acc:.3f} after {TRAIN['epochs']} epoch of MNIST-5k is below "
           f"{TRAIN_THRESHOLD}; the model computes but does not learn (are all parameters "
           f"trained? is the mask on the right device and dtype?)")


# ------------------------------------------------------------------------- convnext.block

def tv_cn_block(g, dim) -> CNBlock:
    return randomize(CNBlock(dim, 1e-6, 0.0), g).double().eval()


def cn_state(tv: CNBlock) -> dict:
    names = {"block.0": "dwconv", "block.2": "norm", "block.3": "pwconv1", "block.5": "pwconv2"}
    out = {}
    for k, v in tv.state_dict().items():
        for theirs, ours in names.items():
            k = k.replace(theirs + ".", ours + ".")
        out[k] = v
    return floats(out)


def cn_variant(tv, x, act=F.gelu, scale=True, residual=True, norm_first=False,
               norm_axes="channels"):
    dw, norm, fc1, fc2 = tv.block[0], tv.block[2], tv.block[3], tv.block[5]
    x = x.double()
    if norm_first:
        y = dw(norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    else:
        y = dw(x).permute(0, 2, 3, 1)                        # (B, H, W, C)
        if norm_axes == "channels":
            y = norm(y)
        else:  # over (H, W, C) of each sample
            y = F.layer_norm(y, y.shape[1:]) * norm.weight + norm.bias
    y = fc2(act(fc1(y))).permute(0, 3, 1, 2)
    if scale:
        y = tv.layer_scale * y
    return x + y if residual else y


@lab.check("convnext.block", points=2)
def cn_block_matches_torchvision(student, g):
    """Equals torchvision's CNBlock (same weights, random layer scale, no stochastic depth);
    gradients of the weights, the layer scale and the input."""
    dim = 6
    tv = tv_cn_block(g, dim)
    x = torch.randn(2, dim, 9, 8, generator=g)
    grad_out = torch.randn(2, dim, 9, 8, generator=g)
    got = student.run(probes.cn_block, dim=dim, state=cn_state(tv), x=x, grad_out=grad_out)
    want, grads, input_grad = reference(tv, x, grad_out)
    with torch.no_grad():
        diagnoses = {
            "no residual (the input not added back)": cn_variant(tv, x, residual=False),
            "no layer scale": cn_variant(tv, x, scale=False),
            "ReLU instead of GELU": cn_variant(tv, x, act=F.relu),
            "GELU's tanh approximation (use the exact GELU)":
                cn_variant(tv, x, act=partial(F.gelu, approximate="tanh")),
            "LayerNorm over (H, W, C) of each sample instead of over the channels at each position":
                cn_variant(tv, x, norm_axes="all"),
            "the LayerNorm before the depthwise convolution": cn_variant(tv, x, norm_first=True),
        }
    expect_close(got["out"], want, "CNBlock output", diagnoses=diagnoses)
    quiet = copy.deepcopy(tv)  # a depthwise conv with tiny weights: the LayerNorm's input has
    with torch.no_grad():      # variance ~1e-7 across the channels, where its eps 1e-6 matters
        quiet.block[0].weight.mul_(1e-3)
        quiet.block[0].bias.mul_(1e-3)
        want_quiet = quiet(x.double())
        wrong = copy.deepcopy(quiet)
        wrong.block[2].eps = 1e-5
        wrong = wrong(x.double())
    quiet_got = student.run(probes.cn_block, dim=dim, state=cn_state(quiet), x=x)
    expect_close(quiet_got["out"], want_quiet, "CNBlock output with a tiny depthwise "
                 "convolution (where the LayerNorm's eps 1e-6 matters)", diagnoses={
        "LayerNorm with eps 1e-5 (F.layer_norm's default) instead of self.norm's 1e-6: use "
        "self.norm": wrong})
    expect_gradients(got.get("grads", {}), {
        "dwconv.weight": grads["block.0.weight"], "layer_scale": grads["layer_scale"],
        "pwconv1.weight": grads["block.3.weight"], "norm.weight": grads["block.2.weight"]},
        "CNBlock")
    expect_close(got.get("input_grad"), input_grad, "CNBlock: gradient of the input")


@lab.check("convnext.block", points=1)
def stochastic_depth_drops_whole_samples(student, g):
    """drop_path: in training each sample's branch is kept with probability 1 - p and scaled by
    1 / (1 - p), or zeroed, as a whole, for 4-D and 3-D inputs; zeros at p = 1; unchanged
    outside training or at p = 0. In a CNBlock with drop_path 0.5, each sample's output is x,
    or x + 2 * branch."""
    p, B = 0.25, 400
    x = 0.5 + torch.rand(B, 3, 2, 2, generator=g)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    got = student.run(probes.drop_path, x=x, p=p, training=True, seed=seed)
    got = expect_shape(got, x.shape, "drop_path output")
    ratio = (got / x).flatten(1)                                      # (B, 12)
    expect(bool((ratio.amax(1) - ratio.amin(1) < 1e-5).all()),
           "drop_path zeroed single elements instead of whole samples: draw one coin per sample, "
           "a mask of shape (B, 1, 1, 1)")
    kept = ratio[:, 0] > 0.5
    values = ratio[:, 0][kept]
    if len(values) and (values - 1).abs().max() < 1e-5:
        raise CheckFailed("drop_path kept samples unscaled: divide the kept ones by 1 - p, so "
                          "that the expected output equals the input")
    expect(len(values) == 0 or (values - 1 / (1 - p)).abs().max() < 1e-5,
           f"drop_path: kept samples should be scaled by 1 / (1 - p) = {1 / (1 - p):.4g}, "
           f"got factors like {values[0].item():.4g}")
    frac = kept.float().mean().item()
    expect(0.6 <= frac <= 0.9, f"drop_path with p = {p} kept {frac:.2f} of the samples, "
           f"expected about {1 - p}" + (" (it drops with probability 1 - p instead of p)"
                                        if abs(frac - p) < 0.1 else ""))
    for training, q in ((False, 0.5), (True, 0.0)):
        got = student.run(probes.drop_path, x=x, p=q, training=training, seed=seed)
        expect_close(got, x, f"drop_path with p = {q} and training = {training} (must return x "
                             f"unchanged)")
    got = student.run(probes.drop_path, x=x, p=1.0, training=True, seed=seed)
    expect_close(got, torch.zeros_like(x), "drop_path with p = 1 in training (every sample "
                 "dropped: zeros, not 0 / (1 - p) = 0 / 0)", atol=0, rtol=0)
    tokens = 0.5 + torch.rand(B, 5, 3, generator=g)                   # (B, N, C), not 4-D
    got = student.run(probes.drop_path, x=tokens, p=p, training=True, seed=seed)
    got = expect_shape(got, tokens.shape, "drop_path output for a (B, N, C) input (the mask "
                       "has shape (B, 1, 1) there: one coin per sample, whatever x's rank)")
    factors = (got / tokens).flatten(1)
    whole = (factors.amax(1) - factors.amin(1) < 1e-5).all()
    allowed = ((factors[:, 0] < 1e-6) | ((factors[:, 0] - 1 / (1 - p)).abs() < 1e-5)).all()
    expect(bool(whole and allowed), "drop_path on a (B, N, C) input: each sample must be zeroed "
           "or scaled by 1 / (1 - p) as a whole (a mask of shape (B,) + (1,) * (x.ndim - 1))")
    dim = 4
    tv = tv_cn_block(g, dim)
    x = torch.randn(64, dim, 5, 5, generator=g)
    with torch.no_grad():
        branch = tv(x.double()) - x.double()
    got = student.run(probes.cn_block, dim=dim, state=cn_state(tv), x=x, drop_path=0.5,
                      train=True, seed=seed)["out"]
    got = expect_shape(got, x.shape, "CNBlock output").double()
    res = (got - x.double()).flatten(1)
    dropped = res.abs().amax(1) < 1e-5
    kept = (res - 2 * branch.flatten(1)).abs().amax(1) < 1e-4
    expect(bool((dropped | kept).all()),
           "CNBlock with drop_path 0.5 in training: each sample's output must be x (branch "
           "dropped) or x + 2 * branch (kept, scaled by 1 / (1 - p)); apply drop_path to the "
           "scaled branch before adding the input")
    expect(bool(dropped.any() and kept.any()),
           "CNBlock with drop_path 0.5 in training dropped no sample or every sample: pass "
           "self.drop_path and self.training to drop_path")
    got = student.run(probes.cn_block, dim=dim, state=cn_state(tv), x=x, drop_path=0.5,
                      train=False, seed=seed)["out"]
    expect_close(got, branch + x.double(), "CNBlock with drop_path 0.5 in evaluation mode "
                 "(nothing may be dropped)")


CONVNEXT = dict(in_channels=3, num_classes=5, stem_size=4, dims=[8, 12], depths=[2, 1],
                layer_scale=1e-6, drop_path=0.0)


@lab.check("convnext.block", points=1)
def convnext_matches_torchvision(student, g):
    """The lab's ConvNeXt with the student's CNBlocks equals torchvision's ConvNeXt."""
    c = CONVNEXT
    tv = ConvNeXt([CNBlockConfig(c["dims"][0], c["dims"][1], c["depths"][0]),
                   CNBlockConfig(c["dims"][1], None, c["depths"][1])], num_classes=c["num_classes"])
    tv = randomize(tv, g).double().eval()
    names = {"features.0.0": "stem.0", "features.0.1": "stem.1", "features.2.0": "downsamples.0.0",
             "features.2.1": "downsamples.0.1", "classifier.0": "norm", "classifier.2": "head"}
    state = {}
    for k, v in tv.state_dict().items():
        parts = k.split(".")
        prefix = ".".join(parts[:2]) if parts[0] == "classifier" else ".".join(parts[:3])
        if prefix in names:
            state[names[prefix] + k[len(prefix):]] = v
        else:
            block = cn_state_key(".".join(parts[3:]))
            state[f"stages.{(int(parts[1]) - 1) // 2}.{parts[2]}.{block}"] = v
    x = torch.randn(2, 3, 16, 16, generator=g)
    got = student.run(probes.convnext, config=c, state=floats(state), x=x)
    with torch.no_grad():
        want = tv(x.double())
    expect_close(got, want, "ConvNeXt logits with your CNBlocks", atol=1e-4)


def cn_state_key(k: str) -> str:
    for theirs, ours in {"block.0.": "dwconv.", "block.2.": "norm.", "block.3.": "pwconv1.",
                         "block.5.": "pwconv2."}.items():
        k = k.replace(theirs, ours)
    return k


# --------------------------------------------------------------------------- resnet.model

NORM_LAYERS = {"bn": nn.BatchNorm2d, "gn2": partial(nn.GroupNorm, 2)}


def conv1x1_down(c_in, c_out, stride, norm_layer):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm_layer(c_out))


def tv_basic_block(c_in, c_out, stride, norm_layer) -> BasicBlock:
    down = conv1x1_down(c_in, c_out, stride, norm_layer) if stride != 1 or c_in != c_out else None
    return BasicBlock(c_in, c_out, stride, down, norm_layer=norm_layer)


class CifarResNet(nn.Module):
    """He et al.'s 6n+2 ResNet built from torchvision's BasicBlock (the reference)."""

    def __init__(self, widths, n, in_channels, num_classes, norm_layer):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = norm_layer(widths[0])
        c_in = widths[0]
        for i, (width, stride) in enumerate(zip(widths, (1, 2, 2))):
            blocks = [tv_basic_block(c_in, width, stride, norm_layer)]
            blocks += [tv_basic_block(width, width, 1, norm_layer) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            c_in = width
        self.fc = nn.Linear(widths[2], num_classes)

    def features(self, x, stem_relu=True):
        x = self.bn1(self.conv1(x))
        x = F.relu(x) if stem_relu else x
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x, stem_relu=True, pool="mean"):
        h = self.features(x, stem_relu)
        return self.fc(h.mean(dim=(2, 3)) if pool == "mean" else h.amax(dim=(2, 3)))


def block_variant_resnet(tv: BasicBlock, x, shortcut=True, relu_first=False, mid_relu=True,
                         final_relu=True):
    x = x.double()
    sc = tv.downsample(x) if tv.downsample is not None else x
    h = tv.bn1(tv.conv1(x))
    h = tv.bn2(tv.conv2(F.relu(h) if mid_relu else h))
    if relu_first:
        return F.relu(h) + sc
    h = h + sc if shortcut else h
    return F.relu(h) if final_relu else h


@lab.check("resnet.model", points=2)
def basic_block_matches_torchvision(student, g):
    """Equals torchvision's BasicBlock (same weights, BatchNorm in eval mode), with an identity
    shortcut and with a strided 1x1-conv shortcut; gradients."""
    for c_in, c_out, stride in ((4, 4, 1), (4, 6, 2)):
        tv = randomize(tv_basic_block(c_in, c_out, stride, nn.BatchNorm2d), g).double().eval()
        x = torch.randn(2, c_in, 6, 6, generator=g)
        grad_out = torch.randn(2, c_out, 6 // stride, 6 // stride, generator=g)
        got = student.run(probes.basic_block, c_in=c_in, c_out=c_out, stride=stride, norm="bn",
                          state=floats(tv.state_dict()), x=x, grad_out=grad_out)
        want, grads, input_grad = reference(tv, x, grad_out)
        what = f"BasicBlock({c_in}, {c_out}, stride {stride})"
        with torch.no_grad():
            diagnoses = {
                "no shortcut added": block_variant_resnet(tv, x, shortcut=False),
                "the ReLU applied before adding the shortcut (relu(bn2(...)) + shortcut)":
                    block_variant_resnet(tv, x, relu_first=True),
                "no ReLU between the two convolutions": block_variant_resnet(tv, x, mid_relu=False),
                "no ReLU after adding the shortcut": block_variant_resnet(tv, x, final_relu=False),
            }
        expect_close(got["out"], want, f"{what} output", diagnoses=diagnoses)
        expect_gradients(got.get("grads", {}), {"conv1.weight": grads["conv1.weight"],
                                                "bn2.weight": grads["bn2.weight"]}, what)
        expect_close(got.get("input_grad"), input_grad, f"{what}: gradient of the input")


@lab.check("resnet.model", points=2)
def resnet_matches_reference(student, g):
    """A 6n+2 ResNet (n = 2, widths 4/6/8) equals the same net built from torchvision's
    BasicBlock, with BatchNorm (eval mode) and with GroupNorm as the norm layer."""
    config = dict(depth=14, in_channels=3, num_classes=5, widths=[4, 6, 8], norm="bn")
    for norm in ("bn", "gn2"):
        ref = randomize(CifarResNet(config["widths"], 2, 3, 5, NORM_LAYERS[norm]), g).double().eval()
        x = torch.randn(2, 3, 12, 12, generator=g)
        grad_out = torch.randn(2, 5, generator=g)
        got = student.run(probes.resnet, config=config, norm=norm, state=floats(ref.state_dict()),
                          x=x, grad_out=grad_out)
        want, grads, _ = reference(ref, x, grad_out)
        with torch.no_grad():
            diagnoses = {"no ReLU after the stem (conv1, bn1)": ref(x.double(), stem_relu=False),
                         "max pooling instead of the mean": ref(x.double(), pool="max")}
        expect_close(got["out"], want, f"ResNet-14 logits (norm layer {norm})", diagnoses=diagnoses)
        expect_gradients(got.get("grads", {}), {k: grads[k] for k in (
            "conv1.weight", "layer2.0.downsample.0.weight", "layer3.1.conv2.weight", "fc.weight")},
            f"ResNet-14 ({norm})")


@lab.check("resnet.model", points=1)
def resnet20_has_the_papers_shape(student, g):
    """ResNet-20 for MNIST (1 channel, 10 classes, widths 16/32/64): the reference's parameter
    names and shapes (19 3x3 convolutions, two 1x1 shortcut convolutions and one linear layer:
    6n + 2 = 20 with n = 3; 272,186 parameters with BatchNorm) -- the grader's random weights
    load -- and its logits equal the reference's."""
    config = dict(depth=20, in_channels=1, num_classes=10, widths=[16, 32, 64], norm="bn")
    ref = randomize(CifarResNet(config["widths"], 3, 1, 10, nn.BatchNorm2d), g).double().eval()
    x = torch.randn(2, 1, 12, 12, generator=g)
    got = student.run(probes.resnet, config=config, norm="bn", state=floats(ref.state_dict()),
                      x=x)
    with torch.no_grad():
        want = ref(x.double())
    params = sum(p.numel() for p in ref.parameters())
    expect_close(got["out"], want, f"ResNet-20 logits (the paper's net: 19 3x3 convolutions, "
                 f"2 1x1 shortcut convolutions, 1 linear layer, {params:,} parameters)")


# ---------------------------------------------------------------------------------- norms

C_NORM = 6


def norm_inputs(g, n=3, shape=(4, C_NORM, 5, 5)):
    return [2 * torch.randn(shape, generator=g) + torch.randn(1, shape[1], 1, 1, generator=g)
            for _ in range(n)]


def affine_state(g, C=C_NORM, **extra) -> dict:
    return {"weight": 1 + 0.3 * torch.randn(C, generator=g),
            "bias": 0.3 * torch.randn(C, generator=g), **extra}


def normalise(x, dims, eps=1e-5, unbiased=False, eps_on_std=False):
    mean = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    return (x - mean) / (var.sqrt() + eps if eps_on_std else torch.sqrt(var + eps))


EPS, MOMENTUM = 0.5, 0.3  # given to the constructors, far from the defaults, so that both show


def expect_norm(got, want, what, diagnoses, right: str) -> None:
    """expect_close; a named mistake also says where the statistics belong (`right`)."""
    try:
        expect_close(got, want, what, diagnoses=diagnoses)
    except CheckFailed as exc:
        if exc.mistake and "statistics over" in exc.mistake:
            raise CheckFailed(f"{exc}; {right}", exc.mistake) from None
        raise


def affine(x_hat, state):
    return x_hat * state["weight"].double().view(1, -1, 1, 1) + state["bias"].double().view(1, -1, 1, 1)


def bn_reference(state, inputs, train, grad_out=None, eps=1e-5, momentum=0.1):
    """torch's BatchNorm2d: outputs, buffers after each input, gradients of the first."""
    ref = nn.BatchNorm2d(C_NORM, eps=eps, momentum=momentum).double()
    ref.load_state_dict({k: v.double() for k, v in state.items()}, strict=False)
    ref.train(train)
    outs, buffers, first = [], [], None
    for k, x in enumerate(inputs):
        if k == 0 and grad_out is not None:
            first = reference(ref, x, grad_out)
            outs.append(first[0])
        else:
            with torch.no_grad():
                outs.append(ref(x.double()))
        buffers.append({"running_mean": ref.running_mean.clone(), "running_var": ref.running_var.clone()})
    return outs, buffers, first


@lab.check("norms", points=2)
def batchnorm_matches_torch(student, g):
    """BatchNorm equals torch.nn.BatchNorm2d: training outputs (batch statistics over B, H, W),
    running statistics after two steps, evaluation outputs, gradients through the statistics;
    norms.py calls none of torch's norm functions and does not switch the probe's guard off
    (read from the source by the grader)."""
    C = C_NORM
    state = affine_state(g, running_mean=0.3 * torch.randn(C, generator=g),
                         running_var=0.5 + torch.rand(C, generator=g))
    x1, x2, x3 = norm_inputs(g)
    grad_out = torch.randn(x1.shape, generator=g)
    got = student.run(probes.norm, kind="bn", num_channels=C, state=state, inputs=[x1, x2],
                      train=True, grad_out=grad_out)
    outs, buffers, (_, grads, input_grad) = bn_reference(state, [x1, x2], True, grad_out)
    xd = x1.double()
    expect_norm(got["outs"][0], outs[0], "BatchNorm output in training", right=BN_RIGHT, diagnoses={
        "statistics over (C, H, W) of each sample (that is LayerNorm)": affine(normalise(xd, (1, 2, 3)), state),
        "statistics over (H, W) of each sample and channel (that is InstanceNorm)":
            affine(normalise(xd, (2, 3)), state),
        "statistics over the batch axis only, separately at each position": affine(normalise(xd, (0,)), state),
        "statistics over every axis (one mean for the whole batch)": affine(normalise(xd, (0, 1, 2, 3)), state),
        "the unbiased variance (n - 1) in the normalisation": affine(normalise(xd, (0, 2, 3), unbiased=True), state),
    })
    n = x1.numel() / C
    mean1, var1 = xd.mean((0, 2, 3)), xd.var((0, 2, 3), unbiased=False)
    rv = state["running_var"].double()
    expect_close(got["buffers"][0].get("running_mean"), buffers[0]["running_mean"],
                 "running_mean after one training step", diagnoses={
        "running statistics not updated": state["running_mean"].double(),
        "the momentum the wrong way round (r <- momentum r + (1 - momentum) batch)":
            0.1 * state["running_mean"].double() + 0.9 * mean1})
    expect_close(got["buffers"][0].get("running_var"), buffers[0]["running_var"],
                 "running_var after one training step", diagnoses={
        "the biased batch variance in running_var (torch keeps the unbiased one, n / (n - 1) "
        "times larger)": 0.9 * rv + 0.1 * var1,
        "the momentum the wrong way round": 0.1 * rv + 0.9 * var1 * n / (n - 1)})
    expect_close(got["buffers"][1].get("running_var"), buffers[1]["running_var"],
                 "running_var after two training steps")
    expect_gradients(got.get("grads", {}), grads, "BatchNorm")
    with torch.no_grad():
        mean, var = xd.mean((0, 2, 3), keepdim=True), xd.var((0, 2, 3), unbiased=False, keepdim=True)
        detached = ((grad_out.double() * state["weight"].double().view(1, -1, 1, 1))
                    / torch.sqrt(var + 1e-5))
    expect_close(got.get("input_grad"), input_grad, "BatchNorm: gradient of the input", diagnoses={
        "no gradient through the batch mean and variance (detached statistics)": detached})
    eval_state = {**state, **{k: v.float() for k, v in buffers[1].items()}}
    got = student.run(probes.norm, kind="bn", num_channels=C, state=eval_state, inputs=[x3],
                      train=False)
    want, after, _ = bn_reference(eval_state, [x3], False)
    expect_close(got["outs"][0], want[0], "BatchNorm output in evaluation mode", diagnoses={
        "batch statistics in evaluation mode (use running_mean and running_var)":
            affine(normalise(x3.double(), (0, 2, 3)), state)})
    expect_close(got["buffers"][0].get("running_mean"), eval_state["running_mean"],
                 "running_mean after an evaluation step (must not change)")
    # eps and momentum as the constructor got them, eps inside the square root
    got = student.run(probes.norm, kind="bn", num_channels=C, state=state, inputs=[x1, x2],
                      train=True, eps=EPS, momentum=MOMENTUM)
    outs, buffers, _ = bn_reference(state, [x1, x2], True, eps=EPS, momentum=MOMENTUM)
    expect_close(got["outs"][0], outs[0], f"BatchNorm(C, eps={EPS:g}) output in training",
                 diagnoses={
        "eps added to the standard deviation instead of the variance ((x - mean) / (std + eps); "
        "it goes inside: / sqrt(var + eps))": affine(normalise(xd, (0, 2, 3), EPS, eps_on_std=True), state),
        f"self.eps ignored (the default 1e-5 instead of {EPS:g})": affine(normalise(xd, (0, 2, 3)), state)})
    expect_close(got["buffers"][0].get("running_mean"), buffers[0]["running_mean"],
                 f"running_mean after one training step with momentum {MOMENTUM:g}", diagnoses={
        f"self.momentum ignored (the default 0.1 instead of {MOMENTUM:g})":
            0.9 * state["running_mean"].double() + 0.1 * mean1})
    eval_state = {**state, **{k: v.float() for k, v in buffers[1].items()}}
    got = student.run(probes.norm, kind="bn", num_channels=C, state=eval_state, inputs=[x3],
                      train=False, eps=EPS, momentum=MOMENTUM)
    want, _, _ = bn_reference(eval_state, [x3], False, eps=EPS)
    rm, rvar = (eval_state[k].double().view(1, -1, 1, 1) for k in ("running_mean", "running_var"))
    expect_close(got["outs"][0], want[0], f"BatchNorm(C, eps={EPS:g}) output in evaluation mode",
                 diagnoses={"eps added to the running standard deviation instead of the "
                            "variance": affine((x3.double() - rm) / (rvar.sqrt() + EPS), state),
                            "self.eps ignored in evaluation mode":
                                affine((x3.double() - rm) / (rvar + 1e-5).sqrt(), state)})
    expect_not_in_source(student, ["norms.py"], probes.NORM_BUILTINS, "norms")


BN_RIGHT = ("BatchNorm's statistics are over (B, H, W) for each channel: x.mean(dim=(0, 2, 3)) "
            "and the biased variance over the same dims")


def simple_norm_check(student, g, kind, make_ref, what, diagnoses_fn, dims, right,
                      num_groups=None):
    """Train and eval mode (the same: no running statistics) equal torch's layer; outputs,
    gradients; then with eps 0.5 given to the constructor."""
    C = C_NORM
    ref = make_ref(1e-5)
    state = affine_state(g)
    x1, x2 = norm_inputs(g, 2)
    grad_out = torch.randn(x1.shape, generator=g)
    for train in (True, False):
        got = student.run(probes.norm, kind=kind, num_channels=C, state=state, inputs=[x1, x2],
                          train=train, grad_out=grad_out, num_groups=num_groups)
        ref.load_state_dict({k: v.double() for k, v in state.items()})
        want, grads, input_grad = reference(ref.train(train), x1, grad_out)
        mode = "training" if train else "evaluation"
        expect_norm(got["outs"][0], want, f"{what} output in {mode} mode",
                    diagnoses_fn(x1.double(), state), right)
        expect_gradients(got.get("grads", {}), grads, what)
        expect_close(got.get("input_grad"), input_grad, f"{what}: gradient of the input")
    got = student.run(probes.norm, kind=kind, num_channels=C, state=state, inputs=[x1],
                      train=True, num_groups=num_groups, eps=EPS)
    ref = make_ref(EPS)
    ref.load_state_dict({k: v.double() for k, v in state.items()})
    with torch.no_grad():
        want = ref.train()(x1.double())
    xd = x1.double() if kind != "gn" else x1.double().reshape(len(x1), num_groups, -1, 1)
    shape = x1.shape

    def variant(**kw):
        return affine(normalise(xd, dims, **kw).reshape(shape), state)
    expect_close(got["outs"][0], want, f"{what} with eps={EPS:g} given to the constructor",
                 diagnoses={
        "eps added to the standard deviation instead of the variance ((x - mean) / (std + eps); "
        "it goes inside: / sqrt(var + eps))": variant(eps=EPS, eps_on_std=True),
        f"self.eps ignored (the default 1e-5 instead of {EPS:g})": variant()})


@lab.check("norms", points=1)
def instancenorm_matches_torch(student, g):
    """InstanceNorm equals torch.nn.InstanceNorm2d(C, affine=True), in training and evaluation."""
    simple_norm_check(student, g, "in",
                      lambda eps: nn.InstanceNorm2d(C_NORM, eps=eps, affine=True).double(),
                      "InstanceNorm", dims=(2, 3),
                      right="InstanceNorm's statistics are over (H, W) for each sample and "
                            "channel: x.mean(dim=(2, 3))", diagnoses_fn=lambda x, s: {
        "statistics over (B, H, W) of each channel (that is BatchNorm)": affine(normalise(x, (0, 2, 3)), s),
        "statistics over (C, H, W) of each sample (that is LayerNorm)": affine(normalise(x, (1, 2, 3)), s),
        "the unbiased variance (n - 1)": affine(normalise(x, (2, 3), unbiased=True), s)})


@lab.check("norms", points=1)
def layernorm_matches_torch(student, g):
    """LayerNorm (over C, H, W; per-channel scale and shift) equals torch.nn.GroupNorm(1, C)."""
    simple_norm_check(student, g, "ln", lambda eps: nn.GroupNorm(1, C_NORM, eps=eps).double(),
                      "LayerNorm", dims=(1, 2, 3),
                      right="LayerNorm's statistics are over (C, H, W) for each sample: "
                            "x.mean(dim=(1, 2, 3))", diagnoses_fn=lambda x, s: {
        "statistics over the channels at each position (ConvNeXt's LayerNorm2d), not over (C, H, W)":
            affine(normalise(x, (1,)), s),
        "statistics over (H, W) of each sample and channel (that is InstanceNorm)":
            affine(normalise(x, (2, 3)), s),
        "the unbiased variance (n - 1)": affine(normalise(x, (1, 2, 3), unbiased=True), s)})


def interleaved_groups(x, G):
    """Group g holding channels g, g + G, g + 2G, ... (a wrong grouping)."""
    B, C, H, W = x.shape
    y = x.view(B, C // G, G, H, W).transpose(1, 2)               # (B, G, C/G, H, W)
    y = normalise(y.reshape(B, G, -1)[..., None, None], (2,)).view(B, G, C // G, H, W)
    return y.transpose(1, 2).reshape(B, C, H, W)


@lab.check("norms", points=1)
def groupnorm_matches_torch(student, g):
    """GroupNorm equals torch.nn.GroupNorm with G = 3 groups of 2 consecutive channels."""
    G = 3
    simple_norm_check(student, g, "gn", lambda eps: nn.GroupNorm(G, C_NORM, eps=eps).double(),
                      "GroupNorm", dims=(2, 3),
                      right="GroupNorm's statistics are over each sample's group of C/G "
                            "consecutive channels and (H, W): x.reshape(B, G, -1).mean(dim=-1)",
                      diagnoses_fn=lambda x, s: {
        "group g holding channels g, g + G, g + 2G, ... instead of consecutive channels":
            affine(interleaved_groups(x, G), s),
        "statistics over (H, W) of each channel (that is InstanceNorm)": affine(normalise(x, (2, 3)), s),
        "statistics over all channels (that is LayerNorm)": affine(normalise(x, (1, 2, 3)), s)},
        num_groups=G)


def bin_reference(x, state, train, rho=None, eps=1e-5):
    x = x.double()
    rho = state["gate"].double().clamp(0, 1).view(1, -1, 1, 1) if rho is None else rho
    if train:
        bn = normalise(x, (0, 2, 3), eps)
    else:
        bn = ((x - state["running_mean"].double().view(1, -1, 1, 1))
              / torch.sqrt(state["running_var"].double().view(1, -1, 1, 1) + eps))
    return affine(rho * bn + (1 - rho) * normalise(x, (2, 3), eps), state)


@lab.check("norms", points=2)
def batch_instance_norm_matches_definition(student, g):
    """Batch-Instance Norm is BatchNorm at gate 1 and InstanceNorm at gate 0 (torch's layers);
    gamma * (rho x_BN + (1 - rho) x_IN) + beta for gates in between (training and evaluation,
    running statistics updated as BatchNorm's); gates outside [0, 1] are clamped."""
    C = C_NORM
    running = dict(running_mean=0.3 * torch.randn(C, generator=g),
                   running_var=0.5 + torch.rand(C, generator=g))
    x1, x2 = norm_inputs(g, 2)
    for gate, ref, name in ((1.0, nn.BatchNorm2d(C), "BatchNorm"),
                            (0.0, nn.InstanceNorm2d(C, affine=True), "InstanceNorm")):
        state = affine_state(g, gate=torch.full((C,), gate), **running)
        got = student.run(probes.norm, kind="bin", num_channels=C, state=state, inputs=[x1],
                          train=True)
        ref = ref.double().train()
        ref.load_state_dict({k: v.double() for k, v in state.items()
                             if k in ref.state_dict()}, strict=False)
        with torch.no_grad():
            want = ref(x1.double())
        expect_close(got["outs"][0], want, f"BatchInstanceNorm with gate {gate:g} (must equal "
                     f"{name})", diagnoses={
            "rho and 1 - rho swapped (the gate weighs the instance-normalised part)":
                bin_reference(x1, state, True, rho=1 - gate)})
    gates = torch.tensor([-0.5, 0.0, 0.3, 0.7, 1.0, 1.6])
    state = affine_state(g, gate=gates, **running)
    got = student.run(probes.norm, kind="bin", num_channels=C, state=state, inputs=[x1, x2],
                      train=True, eps=EPS, momentum=MOMENTUM)
    raw = gates.double().view(1, -1, 1, 1)
    expect_close(got["outs"][0], bin_reference(x1, state, True, eps=EPS),
                 f"BatchInstanceNorm(C, eps={EPS:g}) with gates -0.5, 0, 0.3, 0.7, 1, 1.6 "
                 f"(rho = clamp(gate, 0, 1))", diagnoses={
        "the gate not clamped to [0, 1]": bin_reference(x1, state, True, rho=raw, eps=EPS),
        "rho and 1 - rho swapped": bin_reference(x1, state, True, rho=1 - raw.clamp(0, 1), eps=EPS),
        f"self.eps ignored (the default 1e-5 instead of {EPS:g})": bin_reference(x1, state, True)})
    _, buffers, _ = bn_reference(affine_state(g, **running), [x1, x2], True, momentum=MOMENTUM)
    for k in ("running_mean", "running_var"):
        expect_close(got["buffers"][1].get(k), buffers[1][k],
                     f"BatchInstanceNorm's {k} after two training steps with momentum "
                     f"{MOMENTUM:g} (updated as BatchNorm's)")
    state = affine_state(g, gate=torch.rand(C, generator=g), **running)
    got = student.run(probes.norm, kind="bin", num_channels=C, state=state, inputs=[x2],
                      train=False, eps=EPS)
    expect_close(got["outs"][0], bin_reference(x2, state, False, eps=EPS),
                 "BatchInstanceNorm in evaluation mode (running statistics for the BatchNorm part)",
                 diagnoses={"batch statistics in evaluation mode": bin_reference(x2, state, True, eps=EPS)})


# -------------------------------------------------------------------------------- gradcam

def cam_reference(net, x, target, channels_last=False, relu=True, score="logit", pool="mean",
                  weights="pooled", normalised=False):
    """Grad-CAM by an explicit split of the network at its layer (no hooks), float64."""
    net = copy.deepcopy(net).double()
    x = x.double()
    if channels_last:
        A = net.mix(net.embed(x).permute(0, 2, 3, 1))             # (B, h, w, K)
        logits = net.head(F.gelu(A).mean(dim=(1, 2)))
    else:
        A = net.features[:3](x)                                   # (B, K, h, w)
        logits = net.head(net.features[3](A).mean(dim=(2, 3)))
    out = logits.softmax(-1) if score == "softmax" else logits
    grads, = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), A)
    if channels_last:
        A, grads = A.permute(0, 3, 1, 2), grads.permute(0, 3, 1, 2)
    if weights == "pixel":
        cam = (grads * A).sum(1)
    else:
        alpha = grads.mean((2, 3), keepdim=True) if pool == "mean" else grads.sum((2, 3), keepdim=True)
        cam = (alpha * A).sum(1)
    cam = F.relu(cam) if relu else cam
    if normalised:
        cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam.detach(), logits.detach()


def cam_setup(g, channels_last=False):
    net = randomize(probes.CamNetChannelsLast() if channels_last else probes.CamNet(), g).eval()
    x = torch.randn(6, 3, 8, 8, generator=g)
    with torch.no_grad():
        pred = net.double()(x.double()).argmax(-1)
    net.float()
    target = torch.where(torch.arange(6) % 2 == 0, (pred + 1 + torch.randint(0, 3, (6,), generator=g)) % 5,
                         pred)
    return net, x, target, pred


@lab.check("gradcam", points=2)
def gradcam_matches_reference(student, g):
    """For the given classes (not all predicted), cam = ReLU(sum_k alpha_k A_k) with alpha_k the
    spatial mean of d logit / d A_k, computed here by splitting the network at its layer."""
    net, x, target, pred = cam_setup(g)
    got = student.run(probes.grad_cam, state=floats(net.state_dict()), x=x, target=target)
    want, _ = cam_reference(net, x, target)
    expect_close(got["classes"], target, "the classes grad_cam used (it must use the given "
                 "target)", atol=0, rtol=0)
    expect_close(got["cam"], want, "Grad-CAM map (B, h, w)", diagnoses={
        "no ReLU on the weighted sum": cam_reference(net, x, target, relu=False)[0],
        "the gradient of the softmax probability instead of the logit":
            cam_reference(net, x, target, score="softmax")[0],
        "gradients summed over positions instead of averaged": cam_reference(net, x, target, pool="sum")[0],
        "gradient times activation at each position (no spatial average of the gradient)":
            cam_reference(net, x, target, weights="pixel")[0],
        "the map divided by its maximum (return the raw map; `upsample` normalises for display)":
            cam_reference(net, x, target, normalised=True)[0],
        "the predicted classes instead of the given target": cam_reference(net, x, pred)[0],
    })


@lab.check("gradcam", points=1)
def gradcam_defaults_layouts_and_cleanup(student, g):
    """target=None uses the predicted class; channels_last layers (B, h, w, K) work; no hook
    stays registered, no parameter gets a .grad, the model computes as before and keeps its
    mode (handed over in train mode), the map is detached."""
    net, x, _, pred = cam_setup(g, channels_last=True)
    got = student.run(probes.grad_cam, state=floats(net.state_dict()), x=x, target=None,
                      channels_last=True, train=True)
    want, _ = cam_reference(net, x, pred, channels_last=True)
    expect_close(got["classes"], pred, "the classes grad_cam used with target=None (the "
                 "predicted ones)", atol=0, rtol=0)
    expect_close(got["cam"], want, "Grad-CAM map of a channels-last layer (B, h, w)")
    expect(got["hooks_left"] == 0, f"{got['hooks_left']} forward hook(s) still registered after "
                                   f"grad_cam: remove the hook (handle.remove()), also on errors")
    left = [n for n, v in got["param_grads"].items() if v is not None]
    expect(not left, f"grad_cam left gradients in {left[:3]}: use "
                     f"torch.autograd.grad(score, A), not score.backward()")
    with torch.no_grad():
        logits = copy.deepcopy(net).double().eval()(x.double())
    expect_close(got["before"], logits, "the model's output before grad_cam")
    expect_close(got["after"], logits, "the model's output after grad_cam (it must compute as "
                 "before, in the mode it was in)")
    expect(not got["cam_requires_grad"], "grad_cam's map still carries the autograd graph: "
                                         "return cam.detach()", mistake="map not detached")
    expect(got["training"] == 1.0, "grad_cam changed the model's mode (it was handed over in "
                                   "train mode): leave it as it was, do not call model.eval()",
           mistake="model mode changed")


# --------------------------------------------------------------------------- swin.distill

def distill_setup(g):
    teacher = randomize(probes.Teacher(), g)
    student = randomize(probes.Student(), g)
    x = torch.randn(16, 12, generator=g)
    return teacher, student, x


def kd(s, t, T):
    return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                    reduction="batchmean") * T**2


@lab.check("swin.distill", points=2)
def distillation_step_matches_reference(student, g):
    """The loss is T^2 KL(teacher || student) at the asked temperature with the teacher in
    evaluation mode, and back-propagating it gives the student the reference gradients."""
    teacher, stud, x = distill_setup(g)
    T = 2.0
    got = student.run(probes.distillation_step, teacher_state=floats(teacher.state_dict()),
                      student_state=floats(stud.state_dict()), x=x, temperature=T)
    t_net, s_net = copy.deepcopy(teacher).double().eval(), copy.deepcopy(stud).double()
    xd = x.double()
    with torch.no_grad():
        t = t_net(xd)
        t_train = copy.deepcopy(teacher).double().train()(xd)  # BatchNorm's batch statistics
    s = s_net(xd)
    loss = kd(s, t, T)
    loss.backward()
    sd = s.detach()
    with torch.no_grad():
        diagnoses = {
            f"the default temperature 4 instead of the asked T = {T:g}": kd(sd, t, 4.0),
            "student and teacher swapped in distillation_loss (KL(student || teacher))": kd(t, sd, T),
            "cross-entropy with the teacher's top class as the label":
                F.cross_entropy(sd, t.argmax(-1)),
            "the teacher in training mode (BatchNorm's batch statistics)": kd(sd, t_train, T),
        }
    expect_close(got["loss"], loss.detach(), f"distillation loss at T = {T:g}", diagnoses=diagnoses)
    grads = {n: p.grad.float() for n, p in s_net.named_parameters()}
    if all(v is None for v in got["grads"].values()):
        raise CheckFailed("no gradient reached the student: compute its logits with gradients "
                          "enabled and pass them as distillation_loss's first argument")
    expect_gradients(got["grads"], grads, "the student")


@lab.check("swin.distill", points=1)
def teacher_stays_fixed(student, g):
    """The teacher runs in evaluation mode without gradients and is left in evaluation mode
    (its BatchNorm statistics and weights untouched; its outputs afterwards are eval-mode
    outputs); the student keeps the mode the caller gave it (train, then eval: its BatchNorm
    shows which); 'agreement' is the fraction of equal top classes."""
    teacher, stud, x = distill_setup(g)
    before = {k: v.clone() for k, v in teacher.named_buffers()}
    with torch.no_grad():
        t_eval = copy.deepcopy(teacher).double().eval()(x.double())
    for student_train in (True, False):
        mode = "training" if student_train else "evaluation"
        got = student.run(probes.distillation_step, teacher_state=floats(teacher.state_dict()),
                          student_state=floats(stud.state_dict()), x=x, temperature=4.0,
                          student_train=student_train)
        enabled = expect_tensor(got["teacher_grad_enabled"], "the teacher's runs")
        expect(len(enabled) > 0, "the teacher was never run")
        expect(not enabled.any().item(), "the teacher ran with gradients enabled: compute its "
                                         "logits under torch.no_grad()",
               mistake="the teacher's graph built")
        changed = [k for k, v in before.items() if not torch.equal(got["teacher_buffers"][k], v)]
        expect(not changed, f"the teacher's {changed[0] if changed else ''} changed: it ran in "
                            f"training mode; call teacher.eval() first",
               mistake="teacher in training mode")
        expect(all(v is None for v in got["teacher_grads"].values()),
               "the teacher's parameters received gradients")
        expect_close(got["teacher_after"], t_eval, "the teacher's output after the step (it "
                     "must be left in evaluation mode: teacher.eval(), not restored afterwards)")
        s_net = copy.deepcopy(stud).double().train(student_train)
        with torch.no_grad():
            s_out = s_net(x.double())
            wrong_mode = copy.deepcopy(stud).double().train(not student_train)(x.double())
        expect_close(got["student_after"], s_out, f"the student's output after the step (the "
                     f"caller put it in {mode} mode; leave its mode as it is)", diagnoses={
            f"the student's mode changed by distillation_step (it was in {mode} mode)": wrong_mode})
        with torch.no_grad():
            want = kd(s_out, t_eval, 4.0)
        expect_close(got["loss"], want, f"distillation loss with the student in {mode} mode",
                     diagnoses={f"the student switched out of {mode} mode before its logits":
                                kd(wrong_mode, t_eval, 4.0)})
        with torch.no_grad():
            agree = (s_out.argmax(-1) == t_eval.argmax(-1)).double().mean()
        expect(got["agreement"] is not None, "distillation_step must return 'agreement' as a tensor")
        expect_close(got["agreement"].reshape(()), agree,
                     "agreement (fraction of images where the student's top class is the teacher's)")
