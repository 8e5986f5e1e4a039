"""Checks for the UNet lab. Run them with `vislab grade unet [--impl labs|solutions|PATH]`.

References are independent of the student's code and of the lab's solution: UNet blocks written
here from torch's functional ops (conv2d, batch_norm, max_pool2d, conv_transpose2d,
interpolate), torchvision's SwinTransformerBlock / PatchMerging / CNBlock with the same weights,
closed forms of the Dice loss, all in float64. Inputs and weights come from the generator `g`.
The training check evaluates the student's trained weights in the grader's own UNet, on test
images the student's code never sees.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.convnext import CNBlock
from torchvision.models.swin_transformer import PatchMerging, SwinTransformerBlock

from vislab.grading import (CheckFailed, Lab, expect, expect_close, expect_gradients, expect_shape,
                            expect_tensor)

from . import unet_probes as probes

lab = Lab("unet", {
    "unet.double_conv": "(3x3 conv -> BatchNorm -> ReLU) x 2",
    "unet.down": "downsampling: max-pool or strided conv, then a double conv",
    "unet.up": "upsampling: transposed conv or bilinear + 1x1 conv, pad, concatenate the skip",
    "unet.model": "the UNet: encoder, skips, decoder, 1x1 head",
    "unet.dice_loss": "soft Dice loss (binary, multi-class) and the training losses",
    "unet.swin_encoder": "Swin stages as a UNet encoder (channels-last -> channels-first)",
    "unet.convnext_encoder": "ConvNeXt stages as a UNet encoder",
})


# ------------------------------------------------------------------------------ weights

def random_state(module: nn.Module, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A state dict for `module`'s names and shapes, every entry random: conv weights scaled
    by their fan-in, norm weights near 1, running variances in [0.5, 1.5]."""
    out = {}
    for name, value in module.state_dict().items():
        if name.endswith("num_batches_tracked"):
            out[name] = value.clone()
        elif name.endswith("running_var"):
            out[name] = 0.5 + torch.rand(value.shape, generator=g)
        elif name.endswith("running_mean"):
            out[name] = 0.3 * torch.randn(value.shape, generator=g)
        elif value.ndim == 1 and name.endswith("weight"):  # BatchNorm / LayerNorm scales
            out[name] = 1 + 0.2 * torch.randn(value.shape, generator=g)
        elif value.ndim >= 2:
            fan_in = value[0].numel() if "up.weight" not in name or value.shape[-1] == 1 \
                else value.shape[0] * value.shape[-1] * value.shape[-2] / 4
            out[name] = torch.randn(value.shape, generator=g) * (2 / fan_in) ** 0.5
        else:
            out[name] = 0.3 * torch.randn(value.shape, generator=g)
    return out


def sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def d(t):
    return t.double()


# ------------------------------------------------------------- references (float64, ops)

def ref_bn(x, s, p, training):
    if training:  # batch statistics (biased variance), as nn.BatchNorm2d in train mode
        return F.batch_norm(x, None, None, d(s[p + "weight"]), d(s[p + "bias"]), True, 0.1, 1e-5)
    return F.batch_norm(x, d(s[p + "running_mean"]), d(s[p + "running_var"]), d(s[p + "weight"]),
                        d(s[p + "bias"]), False, 0.1, 1e-5)


def ref_double_conv(x, s, p="", training=False, variant=None):
    """relu(bn2(conv2(relu(bn1(conv1(x)))))) with known mistakes as variants."""
    x = d(x)
    bn_training = not training if variant == "wrong statistics" else training
    h = F.conv2d(x, d(s[p + "conv1.weight"]), padding=1)
    h = ref_bn(F.relu(h), s, p + "bn1.", bn_training) if variant == "relu before bn" \
        else F.relu(ref_bn(h, s, p + "bn1.", bn_training))
    h = F.conv2d(h, d(s[p + "conv2.weight"]), padding=1)
    if variant == "relu before bn":
        return ref_bn(F.relu(h), s, p + "bn2.", bn_training)
    h = ref_bn(h, s, p + "bn2.", bn_training)
    return h if variant == "no last relu" else F.relu(h)


def ref_down(x, s, p, mode, variant=None):
    x = d(x)
    if variant == "avgpool":
        x = F.avg_pool2d(x, 2)
    elif mode == "maxpool" or variant == "maxpool":
        x = F.max_pool2d(x, 2)
    else:
        x = F.conv2d(x, d(s[p + "pool.weight"]), d(s[p + "pool.bias"]), stride=2)
    return ref_double_conv(x, s, p + "conv.")


def ref_upsample(x, s, p, mode, variant=None):
    """x upsampled by 2 with half the channels (before padding)."""
    if mode == "transpose":
        return F.conv_transpose2d(x, d(s[p + "up.weight"]), d(s[p + "up.bias"]), stride=2)
    kind = dict(mode="nearest") if variant == "nearest" else dict(
        mode="bilinear", align_corners=variant == "align_corners")
    x = F.interpolate(x, scale_factor=2, **kind)
    return F.conv2d(x, d(s[p + "up.weight"]), d(s[p + "up.bias"]))


def ref_up(x, skip, s, p, mode, variant=None):
    x, skip = d(x), d(skip)
    H, W = skip.shape[-2:]
    if variant == "interpolate to size":
        x = F.interpolate(x, size=(H, W), mode="bilinear") if mode == "bilinear" else x
        x = F.conv2d(x, d(s[p + "up.weight"]), d(s[p + "up.bias"])) if mode == "bilinear" else \
            F.interpolate(ref_upsample(x, s, p, mode), size=(H, W), mode="bilinear")
    else:
        x = ref_upsample(x, s, p, mode, variant)
        dh, dw = H - x.shape[-2], W - x.shape[-1]
        pad = (dw, 0, dh, 0) if variant == "pad top left" else (0, dw, 0, dh)
        x = F.pad(x, pad)
    if variant == "cat reversed":
        cat = [x, skip]
    elif variant == "no skip":
        cat = [x, x]
    else:
        cat = [skip, x]
    return ref_double_conv(torch.cat(cat, dim=1), s, p + "conv.")


def ref_unet(x, s, config, variant=None):
    """The whole UNet from its weights, eval mode."""
    skips = [ref_double_conv(x, s, "inc.")]
    for i in range(config["depth"]):
        skips.append(ref_down(skips[-1], s, f"downs.{i}.", config["down"]))
    h = skips.pop()
    for i in range(config["depth"]):
        h = ref_up(h, skips.pop(), s, f"ups.{i}.", config["up"])
    out = F.conv2d(h, d(s["head.weight"]), d(s["head.bias"]))
    if variant == "sigmoid":
        return torch.sigmoid(out)
    if variant == "relu":
        return F.relu(out)
    return out


def grads_of(fn, tensors: dict, grad_out):
    """Gradients of <fn(**tensors), grad_out> wrt each tensor (float64 leaves)."""
    leaves = {k: d(v).requires_grad_() for k, v in tensors.items()}
    (fn(**leaves) * d(grad_out)).sum().backward()
    return {k: v.grad for k, v in leaves.items()}


def explain_shapes(got: dict, want: dict, what: str, hints: dict[str, str]) -> None:
    """Fail with the differing parameter names and shapes, and a hint for the first known one."""
    if "shapes" not in got:
        return
    have = got["shapes"]
    want = {k: list(v.shape) for k, v in want.items()}
    parts = [f"missing {sorted(set(want) - set(have))[:4]}" if set(want) - set(have) else "",
             f"unexpected {sorted(set(have) - set(want))[:4]}" if set(have) - set(want) else ""]
    parts += [f"{k} has shape {tuple(have[k])}, expected {tuple(want[k])}"
              for k in sorted(set(have) & set(want)) if have[k] != want[k]][:3]
    message = f"{what}'s parameters differ from the handout's: " + "; ".join(p for p in parts if p)
    for key, hint in hints.items():
        if key in message:
            raise CheckFailed(f"{message}: {hint}", hint)
    raise CheckFailed(message + " (create exactly the modules the handout names)")


# --------------------------------------------------------------------- unet.double_conv

def double_conv_case(student, g, B, H, W, train, c_in=3, c_out=5):
    state = random_state(probes._DoubleConv(c_in, c_out), g)
    x = torch.randn(B, c_in, H, W, generator=g)
    grad_out = torch.randn(B, c_out, H, W, generator=g)
    got = student.run(probes.double_conv, in_channels=c_in, out_channels=c_out, state=state,
                      x=x, grad_out=grad_out, train=train)
    explain_shapes(got, state, "DoubleConv", {})
    mode = "train" if train else "eval"
    with torch.no_grad():
        want = ref_double_conv(x, state, training=train)
        diagnoses = {
            "ReLU before BatchNorm (conv -> ReLU -> BN); the order is conv -> BN -> ReLU":
                ref_double_conv(x, state, training=train, variant="relu before bn"),
            "no ReLU after the second BatchNorm": ref_double_conv(x, state, training=train,
                                                                 variant="no last relu"),
            ("BatchNorm with the batch's statistics in eval mode (use the nn.BatchNorm2d modules "
             "bn1, bn2, which switch with model.eval())" if not train else
             "BatchNorm with the running statistics in train mode (use the nn.BatchNorm2d modules "
             "bn1, bn2, which normalise with the batch's statistics in train mode)"):
                ref_double_conv(x, state, training=train, variant="wrong statistics"),
        }
    expect_close(got["out"], want, f"DoubleConv output in {mode} mode for x of shape "
                 f"{(B, c_in, H, W)}", diagnoses=diagnoses)
    names = ("conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight")
    grads = grads_of(lambda **t: ref_double_conv(x, {**state, **t}, training=train),
                     {k: state[k] for k in names}, grad_out)
    expect_gradients(got.get("grads", {}), {k: v.float() for k, v in grads.items()},
                     f"DoubleConv ({mode} mode)")
    x_grad = grads_of(lambda x: ref_double_conv(x, state, training=train), {"x": x}, grad_out)["x"]
    expect_close(got["input_grads"][0], x_grad, f"DoubleConv ({mode} mode): gradient of the input")


@lab.check("unet.double_conv", points=1)
def double_conv_eval_matches_reference(student, g):
    """Eval mode (running statistics) equals conv -> BN -> ReLU twice from torch ops, on an
    odd, non-square map and on a batch of one; gradients of the weights and the input."""
    double_conv_case(student, g, B=2, H=9, W=7, train=False)
    double_conv_case(student, g, B=1, H=5, W=6, train=False, c_in=4, c_out=3)


@lab.check("unet.double_conv", points=1)
def double_conv_train_uses_batch_statistics(student, g):
    """Train mode normalises with the batch's statistics; gradients."""
    double_conv_case(student, g, B=3, H=6, W=5, train=True)


# ---------------------------------------------------------------------------- unet.down

DOWN_HINTS = {
    "missing ['pool.bias', 'pool.weight']":
        "Down(mode='conv') must downsample with a learned 2x2 stride-2 convolution "
        "(self.pool = nn.Conv2d(in_channels, in_channels, kernel_size=2, stride=2)); it looks like "
        "a max-pool where a strided convolution was asked for",
    "unexpected ['pool.bias', 'pool.weight']":
        "Down(mode='maxpool') has no parameters of its own besides the DoubleConv: max-pooling, "
        "not a convolution",
    "pool.weight has shape": "the strided convolution is nn.Conv2d(in_channels, in_channels, "
                             "kernel_size=2, stride=2): it keeps the channels, the DoubleConv "
                             "changes them",
}


def down_case(student, g, mode, B=2, H=11, W=8, c_in=4, c_out=6):
    state = random_state(probes._Down(c_in, c_out, mode), g)
    x = torch.randn(B, c_in, H, W, generator=g)
    grad_out = torch.randn(B, c_out, H // 2, W // 2, generator=g)
    got = student.run(probes.down, in_channels=c_in, out_channels=c_out, mode=mode, state=state,
                      x=x, grad_out=grad_out)
    explain_shapes(got, state, f"Down(mode={mode!r})", DOWN_HINTS)
    out = expect_tensor_shape(got["out"], (B, c_out, H // 2, W // 2),
                              f"Down(mode={mode!r}) output for x of shape {(B, c_in, H, W)}",
                              "H and W halve, rounded down (2x2 windows with stride 2, no padding)")
    with torch.no_grad():
        want = ref_down(x, state, "", mode)
        diagnoses = {"average pooling instead of max-pooling": ref_down(x, state, "", mode, "avgpool")}
        if mode == "conv":
            diagnoses["max-pooling where the strided convolution self.pool was asked for"] = \
                ref_down(x, state, "", mode, "maxpool")
    expect_close(out, want, f"Down(mode={mode!r}) output", diagnoses=diagnoses)
    x_grad = grads_of(lambda x: ref_down(x, state, "", mode), {"x": x}, grad_out)["x"]
    expect_close(got["input_grads"][0], x_grad, f"Down(mode={mode!r}): gradient of the input")
    if mode == "conv":
        grads = grads_of(lambda **t: ref_down(x, {**state, **t}, "", mode),
                         {k: state[k] for k in ("pool.weight", "pool.bias")}, grad_out)
        expect_gradients(got.get("grads", {}), {k: v.float() for k, v in grads.items()},
                         "Down(mode='conv')")


def expect_tensor_shape(value, shape, what, hint):
    """`value` is a tensor of `shape`; otherwise say so, with `hint`."""
    value = expect_tensor(value, what)
    expect(tuple(value.shape) == tuple(shape),
           f"{what}: expected shape {tuple(shape)}, got {tuple(value.shape)} ({hint})")
    return value


@lab.check("unet.down", points=1)
def down_maxpool_matches_reference(student, g):
    """mode 'maxpool': 2x2 max-pooling (odd sizes floored), then the DoubleConv; no parameters
    of its own."""
    down_case(student, g, "maxpool")
    down_case(student, g, "maxpool", B=1, H=6, W=9, c_in=3, c_out=2)


@lab.check("unet.down", points=1)
def down_conv_matches_reference(student, g):
    """mode 'conv': a 2x2 stride-2 convolution (with its gradients), then the DoubleConv;
    a max-pool here loses the point."""
    down_case(student, g, "conv")
    down_case(student, g, "conv", B=1, H=7, W=10, c_in=3, c_out=2)


# ------------------------------------------------------------------------------ unet.up

UP_HINTS = {
    "up.weight has shape": "self.up must halve the channels: ConvTranspose2d(in_channels, "
                           "in_channels // 2, 2, stride=2) for 'transpose', Conv2d(in_channels, "
                           "in_channels // 2, kernel_size=1) for 'bilinear'",
    "missing ['up.bias', 'up.weight']": "create self.up (the transposed convolution, or the 1x1 "
                                        "convolution after the bilinear upsampling)",
}


def up_case(student, g, mode, B, h, w, H, W, c_in=8, c_out=5):
    state = random_state(probes._Up(c_in, c_out, mode), g)
    x = torch.randn(B, c_in, h, w, generator=g)
    skip = torch.randn(B, c_in // 2, H, W, generator=g)
    grad_out = torch.randn(B, c_out, H, W, generator=g)
    got = student.run(probes.up, in_channels=c_in, out_channels=c_out, mode=mode, state=state,
                      x=x, skip=skip, grad_out=grad_out)
    explain_shapes(got, state, f"Up(mode={mode!r})", UP_HINTS)
    what = f"Up(mode={mode!r}) output for x {(B, c_in, h, w)} and skip {(B, c_in // 2, H, W)}"
    out = expect_tensor_shape(got["out"], (B, c_out, H, W), what,
                              "the output has the skip's size: pad the upsampled map to the "
                              "skip's H x W, do not crop the skip")
    with torch.no_grad():
        want = ref_up(x, skip, state, "", mode)
        diagnoses = {
            "[upsampled, skip] concatenated in the wrong order (the skip comes first: "
            "torch.cat([skip, x], dim=1))": ref_up(x, skip, state, "", mode, "cat reversed"),
            "the upsampled map concatenated with itself: the skip is missing":
                ref_up(x, skip, state, "", mode, "no skip"),
        }
        if (H, W) != (2 * h, 2 * w):
            diagnoses["the padding put at the top and left; pad at the bottom and right "
                      "(F.pad(x, (0, W - w2, 0, H - h2)))"] = ref_up(x, skip, state, "", mode,
                                                                  "pad top left")
            diagnoses["resizing to the skip's size by interpolation instead of upsampling by 2 "
                      "and padding"] = ref_up(x, skip, state, "", mode, "interpolate to size")
        if mode == "bilinear":
            diagnoses["bilinear upsampling with align_corners=True (use the default, False)"] = \
                ref_up(x, skip, state, "", mode, "align_corners")
            diagnoses["nearest-neighbour upsampling instead of bilinear"] = \
                ref_up(x, skip, state, "", mode, "nearest")
    expect_close(out, want, what, diagnoses=diagnoses)
    grads = grads_of(lambda x, skip, **t: ref_up(x, skip, {**state, **t}, "", mode),
                     {"x": x, "skip": skip, "up.weight": state["up.weight"],
                      "up.bias": state["up.bias"]}, grad_out)
    expect_gradients(got.get("grads", {}), {k: grads[k].float() for k in ("up.weight", "up.bias")},
                     f"Up(mode={mode!r})")
    expect_close(got["input_grads"][0], grads["x"], f"Up(mode={mode!r}): gradient of x")
    expect_close(got["input_grads"][1], grads["skip"], f"Up(mode={mode!r}): gradient of the skip")


@lab.check("unet.up", points=1)
def up_transpose_matches_reference(student, g):
    """mode 'transpose': ConvTranspose2d halving the channels, zero padding to an odd skip's
    size (bottom, right), [skip, upsampled], DoubleConv; gradients of x, skip and weights."""
    up_case(student, g, "transpose", B=2, h=4, w=3, H=9, W=7)


@lab.check("unet.up", points=1)
def up_bilinear_matches_reference(student, g):
    """mode 'bilinear': bilinear x2 (align_corners=False), 1x1 conv halving the channels, the
    same padding and concatenation."""
    up_case(student, g, "bilinear", B=2, h=3, w=4, H=7, W=9)


@lab.check("unet.up", points=1)
def up_even_sizes_and_one_image(student, g):
    """Both modes with a skip of exactly twice x's size (no padding), a batch of one and
    other channel counts."""
    for mode in ("transpose", "bilinear"):
        up_case(student, g, mode, B=1, h=3, w=5, H=6, W=10, c_in=6, c_out=2)


# --------------------------------------------------------------------------- unet.model

WIRING = dict(in_channels=3, num_classes=2, base=4, depth=3, down="maxpool", up="transpose")


def model_case(student, g, config, B, H, W, own_parts, grads=True):
    state = random_state(probes._UNetTemplate(config), g)
    x = torch.randn(B, config["in_channels"], H, W, generator=g)
    grad_out = torch.randn(B, config["num_classes"], H, W, generator=g) if grads else None
    got = student.run(probes.model, config=config, state=state, x=x, grad_out=grad_out,
                      own_parts=own_parts)
    explain_shapes(got, state, "UNet", {})
    what = (f"UNet logits (down={config['down']!r}, up={config['up']!r}, depth "
            f"{config['depth']}) for x of shape {tuple(x.shape)}")
    out = expect_tensor_shape(got["out"], (B, config["num_classes"], H, W), what,
                              "one logit per class at every pixel of the input")
    with torch.no_grad():
        want = ref_unet(x, state, config)
        diagnoses = {
            "a sigmoid applied to the output: return logits, the loss applies the sigmoid "
            "(BCEWithLogits on a sigmoid applies it twice)": ref_unet(x, state, config, "sigmoid"),
            "a ReLU on the logits (after the 1x1 head): logits must be able to be negative":
                ref_unet(x, state, config, "relu"),
        }
    suffix = "" if not own_parts else (" with your own DoubleConv, Down and Up (if the first "
                                       "unet.model check passes, the difference is in those tasks)")
    expect_close(out, want, what + suffix, diagnoses=diagnoses)
    return got, state, x, grad_out


@lab.check("unet.model", points=1)
def model_wiring_matches_reference(student, g):
    """With the grader's DoubleConv, Down and Up inside, the logits equal the reference UNet's
    on an odd, non-square input; the skips come from the right levels; gradients."""
    got, state, x, grad_out = model_case(student, g, WIRING, 2, 19, 13, own_parts=False)
    names = ("head.weight", "head.bias", "inc.conv1.weight", "downs.0.conv.conv1.weight",
             "ups.2.up.weight")
    grads = grads_of(lambda **t: ref_unet(x, {**state, **t}, WIRING),
                     {k: state[k] for k in names}, grad_out)
    expect_gradients(got.get("grads", {}), {k: v.float() for k, v in grads.items()}, "UNet")


@lab.check("unet.model", points=1)
def every_variant_with_own_blocks(student, g):
    """The student's whole UNet (own blocks) for all four down/up combinations, depths 1 and 2,
    odd sizes and a batch of one, equals the reference."""
    for i, (down, up) in enumerate((("maxpool", "transpose"), ("maxpool", "bilinear"),
                                    ("conv", "transpose"), ("conv", "bilinear"))):
        config = dict(WIRING, down=down, up=up, depth=1 + i % 2, num_classes=1 + 2 * (i % 2))
        model_case(student, g, config, 1 + i % 2, 11 + i, 10 - i, own_parts=True, grads=False)


# The training check's recipe and pass mark. The mark sits well below the reference's worst
# seed (benchmarks/calibrate.py unet; docs/labs/unet.md) and far above what a model that does
# not learn gets (predicting background everywhere: Dice 0 on every image with a pet).
TRAIN_CONFIG = dict(in_channels=3, num_classes=1, base=8, depth=2, down="maxpool", up="transpose")
TRAIN = dict(epochs=4, batch_size=8, lr=5e-3)
TRAIN_SIZE = 32
TRAIN_THRESHOLD = 0.60


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> about zero mean and unit spread per channel (fixed numbers)."""
    return (images - 0.5) / 0.25


@functools.lru_cache(maxsize=2)
def pets_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """pets-synthetic at TRAIN_SIZE: normalised images (N, 3, S, S), masks (N, 1, S, S)."""
    from vislab.data import pets_synthetic

    data = pets_synthetic(split, TRAIN_SIZE)
    return (normalise(torch.stack([data[i][0] for i in range(len(data))])),
            torch.stack([data[i][1] for i in range(len(data))]))


def pets_dice(student, seed: int) -> float:
    """Mean test Dice of the student's UNet after the TRAIN recipe on pets-synthetic (32 x 32),
    computed by the grader's reference UNet from the trained weights."""
    from vislab.metrics.segmentation import dice_score

    template = probes._UNetTemplate(TRAIN_CONFIG).state_dict()
    shapes = student.run(probes.shapes, config=TRAIN_CONFIG)  # fails fast on unfinished code
    if shapes != {k: list(v.shape) for k, v in template.items()}:
        explain_shapes({"shapes": shapes}, template, "UNet", {})
    (x_train, y_train), (x_test, y_test) = pets_tensors("trainval"), pets_tensors("test")
    state = student.run(probes.train_model, config=TRAIN_CONFIG, x_train=x_train,
                        y_train=y_train, seed=seed, **TRAIN)
    expect(type(state) is dict and set(state) == set(template)
           and all(type(state[k]) is torch.Tensor and state[k].shape == v.shape
                   for k, v in template.items()),
           "the trained UNet's state_dict does not have the handout's parameter names and shapes")
    with torch.no_grad():
        logits = ref_unet(x_test, state, TRAIN_CONFIG)
    expect(torch.isfinite(logits).all().item(), "the trained UNet's weights give NaN or inf")
    return dice_score((logits > 0).long(), y_test.long())


@lab.check("unet.model", points=2, timeout=60)
def trains_on_pets_synthetic(student, g):
    """The student's UNet, trained for seconds on pets-synthetic, segments held-out pets:
    the grader computes the test Dice from the trained weights in its own UNet."""
    dice = pets_dice(student, seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
    expect(dice >= TRAIN_THRESHOLD,
           f"test Dice {dice:.3f} after {TRAIN['epochs']} epochs on pets-synthetic is below "
           f"{TRAIN_THRESHOLD}; the model computes but does not learn (are all parameters "
           f"trained? does BatchNorm follow train / eval mode?)")


# ----------------------------------------------------------------------- unet.dice_loss

def dice_reference(logits, target, eps, variant=None):
    """1 - mean_b (2 sum p t + eps) / (sum p + sum t + eps), float64, and known mistakes."""
    x = d(logits).flatten(1)
    p = x if variant == "logits" else torch.sigmoid(x)
    t = d(target).flatten(1)
    if variant == "batch":
        return 1 - (2 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)
    inter, total = (p * t).sum(1), p.sum(1) + t.sum(1)
    if variant == "squares":
        total = (p * p).sum(1) + (t * t).sum(1)
    if variant == "means":
        inter, total = (p * t).mean(1), p.mean(1) + t.mean(1)
    dice = {"denominator": 2 * inter / (total + eps),
            "numerator": (2 * inter + eps) / total,
            "outside": 2 * inter / total + eps}.get(variant, (2 * inter + eps) / (total + eps))
    if variant == "dice":
        return dice.mean()
    return 1 - dice.mean()


def dice_inputs(g, B=4, H=6, W=5):
    """Logits and targets for B images: one all-background image predicted as background
    (probabilities exactly 0), one all-pet image, the rest mixed."""
    logits = 2 * torch.randn(B, 1, H, W, generator=g)
    target = (torch.rand(B, 1, H, W, generator=g) < 0.4).float()
    logits[0], target[0] = -1e4, 0.0   # sigmoid(-1e4) is exactly 0 in float32
    target[1] = 1.0
    return logits, target


@lab.check("unet.dice_loss", points=1)
def dice_loss_matches_closed_form(student, g):
    """dice_loss equals 1 - mean over images of (2 sum(p t) + eps) / (sum p + sum t + eps),
    p = sigmoid(logits), for eps = 1 and 0.5, with an all-background image in the batch;
    the gradient wrt the logits."""
    for eps in (1.0, 0.5):
        logits, target = dice_inputs(g)
        got = student.run(probes.loss, name="dice_loss", logits=logits, target=target, eps=eps)
        want = dice_reference(logits, target, eps)
        diagnoses = {
            "Dice over the whole batch at once (per-batch); compute it per image, then average":
                dice_reference(logits, target, eps, "batch"),
            "Dice of the logits: apply torch.sigmoid first": dice_reference(logits, target, eps,
                                                                           "logits"),
            "eps in the denominator only (put it in the numerator too)":
                dice_reference(logits, target, eps, "denominator"),
            "squared terms in the denominator (sum p^2 + sum t^2); the handout's Dice sums p and t":
                dice_reference(logits, target, eps, "squares"),
            "means over the pixels instead of sums (eps then weighs differently)":
                dice_reference(logits, target, eps, "means"),
            "the Dice coefficient itself; the loss is 1 - Dice": dice_reference(logits, target,
                                                                               eps, "dice"),
        }
        loss = expect_shape(got["loss"], (), "dice_loss")
        expect(torch.isfinite(loss).item(),
               f"dice_loss is {loss.item()} on a batch with an all-background image predicted as "
               f"background (0/0): eps must sit inside the ratio, in the numerator and the "
               f"denominator", "eps outside the ratio")
        expect_close(loss, want, f"dice_loss (eps={eps:g}) on a batch with an all-background image",
                     diagnoses=diagnoses)
        ld = d(logits).requires_grad_()
        dice_reference(ld, target, eps).backward()
        expect(got["grad"] is not None, "no gradient reached the logits (is the loss detached?)")
        expect_close(got["grad"], ld.grad, f"dice_loss (eps={eps:g}): gradient wrt the logits")


@lab.check("unet.dice_loss", points=1)
def dice_loss_on_empty_masks(student, g):
    """Images without a pet, predicted as background everywhere, have Dice 1: the loss is
    exactly 0, not NaN, not 1 (eps in the numerator and the denominator). One image, too."""
    for B in (2, 1):
        logits = torch.full((B, 1, 4, 7), -1e4)
        got = student.run(probes.loss, name="dice_loss", logits=logits,
                          target=torch.zeros(B, 1, 4, 7), eps=1.0)["loss"]
        got = expect_shape(got, (), "dice_loss")
        value = got.item()
        expect(value == value, "dice_loss of an all-background image predicted as background is "
                               "NaN (0/0): add eps to the numerator and the denominator, inside "
                               "the ratio", "eps outside the ratio")
        expect(abs(value) < 1e-6,
               f"dice_loss of an all-background image predicted as background is {value:.4g}, "
               f"expected 0 (Dice = eps / eps = 1: a perfect match)"
               + ("; it matches eps in the denominator only" if abs(value - 1) < 1e-6 else
                  "; it matches eps added outside the ratio" if abs(value + 1) < 1e-6 else ""))
    # a little probability everywhere: the smoothing must sit inside the ratio
    logits = torch.full((1, 1, 4, 4), -3.0)
    got = student.run(probes.loss, name="dice_loss", logits=logits, target=torch.zeros(1, 1, 4, 4),
                      eps=1.0)["loss"]
    expect_close(expect_shape(got, (), "dice_loss"), dice_reference(logits, torch.zeros(1, 1, 4, 4), 1.0),
                 "dice_loss of an empty mask with small predicted probabilities", diagnoses={
                     "eps in the denominator only (put it in the numerator too)":
                         dice_reference(logits, torch.zeros(1, 1, 4, 4), 1.0, "denominator")})


def multiclass_reference(logits, target, eps, variant=None):
    K = logits.shape[1]
    p = d(logits).softmax(dim=0 if variant == "softmax over batch" else 1)
    if variant == "no softmax":
        p = d(logits)
    p = p.flatten(2)                                                 # (B, K, N)
    t = F.one_hot(target, K).permute(0, 3, 1, 2).flatten(2).double()
    if variant == "batch":
        dice = (2 * (p * t).sum((0, 2)) + eps) / (p.sum((0, 2)) + t.sum((0, 2)) + eps)
    else:
        dice = (2 * (p * t).sum(2) + eps) / (p.sum(2) + t.sum(2) + eps)
    if variant == "no background":
        dice = dice[:, 1:]
    return 1 - dice.mean()


@lab.check("unet.dice_loss", points=1)
def multiclass_dice_matches_closed_form(student, g):
    """multiclass_dice_loss: softmax over the classes, one-hot target, Dice per image and class
    (a class absent from an image and not predicted counts as 1), mean; gradient."""
    logits = 2 * torch.randn(3, 3, 5, 4, generator=g)
    target = torch.randint(0, 3, (3, 5, 4), generator=g)
    target[0] = 0                     # an image with background only
    got = student.run(probes.loss, name="multiclass_dice_loss", logits=logits, target=target,
                      eps=1.0)
    want = multiclass_reference(logits, target, 1.0)
    expect_close(expect_shape(got["loss"], (), "multiclass_dice_loss"), want,
                 "multiclass_dice_loss", diagnoses={
                     "Dice per class over the whole batch; compute it per image and class":
                         multiclass_reference(logits, target, 1.0, "batch"),
                     "no softmax over the classes": multiclass_reference(logits, target, 1.0,
                                                                         "no softmax"),
                     "softmax over the batch (dim 0) instead of the classes (dim 1)":
                         multiclass_reference(logits, target, 1.0, "softmax over batch"),
                     "the background class (0) left out of the mean; average over all K classes":
                         multiclass_reference(logits, target, 1.0, "no background"),
                 })
    ld = d(logits).requires_grad_()
    multiclass_reference(ld, target, 1.0).backward()
    expect(got["grad"] is not None, "no gradient reached the logits (is the loss detached?)")
    expect_close(got["grad"], ld.grad, "multiclass_dice_loss: gradient wrt the logits")


@lab.check("unet.dice_loss", points=1)
def segmentation_loss_kinds(student, g):
    """segmentation_loss: 'bce' is BCE with logits on the logits (no sigmoid before it), 'ce'
    cross-entropy, 'dice' the binary or the multi-class Dice loss by the number of channels."""
    logits, target = dice_inputs(g)
    logits[0] = -3.0
    got = student.run(probes.loss, name="segmentation_loss", logits=logits, target=target,
                      kind="bce")
    want = F.binary_cross_entropy_with_logits(d(logits), d(target))
    expect_close(expect_shape(got["loss"], (), "segmentation_loss(kind='bce')"), want,
                 "segmentation_loss(kind='bce')", diagnoses={
                     "a sigmoid applied before BCEWithLogits (the sigmoid twice): pass the logits":
                         F.binary_cross_entropy_with_logits(torch.sigmoid(d(logits)), d(target)),
                     "BCE summed instead of averaged over the pixels":
                         F.binary_cross_entropy_with_logits(d(logits), d(target), reduction="sum"),
                 })
    got = student.run(probes.loss, name="segmentation_loss", logits=logits, target=target,
                      kind="dice")
    expect_close(expect_shape(got["loss"], (), "segmentation_loss(kind='dice')"),
                 dice_reference(logits, target, 1.0), "segmentation_loss(kind='dice'), one channel")
    logits3 = torch.randn(2, 3, 4, 4, generator=g)
    target3 = torch.randint(0, 3, (2, 4, 4), generator=g)
    for kind, want in (("ce", F.cross_entropy(d(logits3), target3)),
                       ("dice", multiclass_reference(logits3, target3, 1.0))):
        got = student.run(probes.loss, name="segmentation_loss", logits=logits3, target=target3,
                          kind=kind)
        expect_close(expect_shape(got["loss"], (), f"segmentation_loss(kind={kind!r})"), want,
                     f"segmentation_loss(kind={kind!r}) with 3 classes")


# ----------------------------------------------------------------------- hybrid encoders

def randomize(module: nn.Module, g: torch.Generator) -> nn.Module:
    """Every parameter random (norm weights near 1), so that no term can hide as zero."""
    with torch.no_grad():
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                norm = isinstance(mod, nn.LayerNorm) and name == "weight"
                p.copy_(1 + 0.2 * noise if norm else 0.3 * noise)
    return module


# embed_dim 6 on 16 x 16 images: C differs from h and w, so channels-last maps show.
SWIN = dict(encoder="swin", in_channels=3, num_classes=2, embed_dim=6, depths=(2, 2, 1),
            num_heads=(2, 2, 4), window_size=4, mlp_ratio=2.0, up="transpose")
CONVNEXT = dict(encoder="convnext", in_channels=3, num_classes=2, embed_dim=8, depths=(2, 1, 1),
                up="bilinear")


class TVSwinEncoder(nn.Module):
    """torchvision's SwinTransformerBlock and PatchMerging after a 2x2 patch embedding; returns
    every stage's output, channels-first. `variant` reproduces known mistakes."""

    def __init__(self, c: dict):
        super().__init__()
        self.proj = nn.Conv2d(c["in_channels"], c["embed_dim"], 2, stride=2)
        self.norm = nn.LayerNorm(c["embed_dim"])
        self.stages, self.merges = nn.ModuleList(), nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(c["depths"], c["num_heads"])):
            dim = c["embed_dim"] * 2**i
            ws = c["window_size"]
            self.stages.append(nn.Sequential(*[
                SwinTransformerBlock(dim, heads, [ws, ws], [0 if j % 2 == 0 else ws // 2] * 2,
                                     c["mlp_ratio"]) for j in range(depth)]))
            if i < len(c["depths"]) - 1:
                self.merges.append(PatchMerging(dim))

    def forward(self, x, variant=None):
        x = self.norm(self.proj(x).permute(0, 2, 3, 1))
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            B, H, W, C = x.shape
            if i < len(self.merges):
                merged = self.merges[i](x)
            if variant == "after merge" and i < len(self.merges):
                features.append(merged.permute(0, 3, 1, 2))
            elif variant == "reshape":
                features.append(x.reshape(B, C, H, W))
            else:
                features.append(x.permute(0, 3, 1, 2))
            if i < len(self.merges):
                x = merged
        return features

    def lab_state(self) -> dict:
        out = {}
        for k, v in self.state_dict().items():
            if "relative_position_index" in k:
                continue
            k = k.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            k = {"proj.weight": "patch_embed.proj.weight", "proj.bias": "patch_embed.proj.bias",
                 "norm.weight": "patch_embed.norm.weight", "norm.bias": "patch_embed.norm.bias"
                 }.get(k, k)
            out[k] = v.float()
        return out


class TVConvNeXtEncoder(nn.Module):
    """torchvision's CNBlock between a 2x2 stem and 2x2 downsamplings (LayerNorm over the
    channels, channels-last); every stage's output."""

    def __init__(self, c: dict):
        super().__init__()
        dims = [c["embed_dim"] * 2**i for i in range(len(c["depths"]))]
        self.dims = dims
        self.stem = nn.Conv2d(c["in_channels"], dims[0], 2, stride=2)
        self.stem_norm = nn.LayerNorm(dims[0], eps=1e-6)
        self.stages = nn.ModuleList([nn.Sequential(*[CNBlock(dim, 1e-6, 0.0) for _ in range(n)])
                                     for dim, n in zip(dims, c["depths"])])
        self.down_norms = nn.ModuleList([nn.LayerNorm(dim, eps=1e-6) for dim in dims[:-1]])
        self.down_convs = nn.ModuleList([nn.Conv2d(a, b, 2, stride=2)
                                         for a, b in zip(dims[:-1], dims[1:])])

    @staticmethod
    def ln(norm, x):
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x, variant=None):
        x = self.ln(self.stem_norm, self.stem(x))
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.down_convs):
                merged = self.down_convs[i](self.ln(self.down_norms[i], x))
            features.append(merged if variant == "after downsample" and i < len(self.down_convs)
                            else x)
            if i < len(self.down_convs):
                x = merged
        return features

    def lab_state(self) -> dict:
        names = {"block.0": "dwconv", "block.2": "norm", "block.3": "pwconv1", "block.5": "pwconv2"}
        out = {}
        for k, v in self.state_dict().items():
            parts = k.split(".")
            if parts[0] == "stem":
                k = f"stem.0.{parts[1]}"
            elif parts[0] == "stem_norm":
                k = f"stem.1.{parts[1]}"
            elif parts[0] == "down_norms":
                k = f"downsamples.{parts[1]}.0.{parts[2]}"
            elif parts[0] == "down_convs":
                k = f"downsamples.{parts[1]}.1.{parts[2]}"
            else:
                for theirs, ours in names.items():
                    k = k.replace(theirs + ".", ours + ".")
            out[k] = v.float()
        return out


def encoder_case(student, g, config, probe, reference_cls, diagnoses_of, **kw):
    ref = randomize(reference_cls(config), g).double().eval()
    x = torch.randn(2, config["in_channels"], 16, 16, generator=g)
    with torch.no_grad():
        want = ref(d(x))
    grad_outs = [torch.randn(f.shape, generator=g) for f in want]
    got = student.run(probe, config=config, state=ref.lab_state(), x=x, grad_outs=grad_outs, **kw)
    name = "SwinEncoder" if config["encoder"] == "swin" else "ConvNeXtEncoder"
    features = got["features"]
    expect(len(features) == len(want), f"{name} returned {len(features)} feature maps, expected "
                                       f"{len(want)} (one per stage)")
    with torch.no_grad():
        wrong = {mistake: ref(d(x), variant) for mistake, variant in diagnoses_of.items()}
    for i, (f, w) in enumerate(zip(features, want)):
        if (type(f) is torch.Tensor and f.shape != w.shape
                and f.shape == (w.shape[0],) + tuple(w.shape[2:]) + (w.shape[1],)):
            expect(False, f"{name} feature {i} has shape {tuple(f.shape)}, channels-last: "
                          f"permute it to (B, C, h, w) = {tuple(w.shape)} for the decoder",
                   "channels-last features")
        for mistake, v in wrong.items():  # a mistake that changes the shapes is named too
            if type(f) is torch.Tensor and f.shape != w.shape and i < len(v) and f.shape == v[i].shape:
                expect(False, f"{name} feature map {i}: expected shape {tuple(w.shape)}, got "
                              f"{tuple(f.shape)}; it matches {mistake}", mistake)
        expect_close(f, w, f"{name} feature map {i}", diagnoses={
            m: v[i] for m, v in wrong.items() if v[i].shape == w.shape})
    xd = d(x).requires_grad_()
    sum((f * d(go)).sum() for f, go in zip(ref(xd), grad_outs)).backward()
    expect(got.get("input_grad") is not None, f"{name}: no gradient reached the input "
                                              f"(features detached?)")
    expect_close(got["input_grad"], xd.grad, f"{name}: gradient of the input")


def hybrid_case(student, g, config, reference_cls):
    """The whole hybrid UNet: the encoder as the reference computes it, the decoder from the
    weights by the reference functions."""
    enc = randomize(reference_cls(config), g).double().eval()
    dims = [config["embed_dim"] * 2**i for i in range(len(config["depths"]))]
    decoder = {f"stem.{k}": v for k, v in random_state(
        probes._DoubleConv(config["in_channels"], dims[0] // 2), g).items()}
    for i, dim in enumerate(reversed(dims)):
        decoder.update({f"ups.{i}.{k}": v for k, v in random_state(
            probes._Up(dim, dim // 2, config["up"]), g).items()})
    decoder["head.weight"] = 0.3 * torch.randn(config["num_classes"], dims[0] // 2, 1, 1, generator=g)
    decoder["head.bias"] = 0.3 * torch.randn(config["num_classes"], generator=g)
    state = {**{f"encoder.{k}": v for k, v in enc.lab_state().items()}, **decoder}
    # The given Swin block shifts only when the map is larger than a window along both axes
    # (torchvision decides per axis): square maps for the Swin, where both agree.
    size = (16, 16) if config["encoder"] == "swin" else (16, 32)
    x = torch.randn(1, config["in_channels"], *size, generator=g)
    got = student.run(probes.hybrid, config=config, state=state, x=x)
    with torch.no_grad():
        features = enc(d(x))
        skips = [ref_double_conv(x, decoder, "stem.")] + features[:-1]
        h = features[-1]
        for i in range(len(dims)):
            h = ref_up(h, skips.pop(), decoder, f"ups.{i}.", config["up"])
        want = F.conv2d(h, d(decoder["head.weight"]), d(decoder["head.bias"]))
    name = "Swin" if config["encoder"] == "swin" else "ConvNeXt"
    expect_close(got, want, f"{name}-UNet logits for x of shape {tuple(x.shape)} (your encoder "
                            f"and the given blocks, the grader's decoder)")


@lab.check("unet.swin_encoder", points=1)
def swin_encoder_matches_torchvision(student, g):
    """Every stage's output, before its merge, channels-first, equals torchvision's Swin
    blocks' (the grader's blocks in the student's encoder); the input's gradient."""
    encoder_case(student, g, SWIN, probes.swin_encoder, TVSwinEncoder, {
        "the feature taken after the patch merging instead of before it": "after merge",
        "(B, H, W, C) reshaped to (B, C, H, W) instead of permuted": "reshape"})


@lab.check("unet.swin_encoder", points=1)
def swin_unet_matches_reference(student, g):
    """The whole Swin-UNet (the student's encoder with the given swin.py blocks) equals torchvision's blocks feeding the reference decoder."""
    hybrid_case(student, g, SWIN, TVSwinEncoder)


@lab.check("unet.convnext_encoder", points=1)
def convnext_encoder_matches_torchvision(student, g):
    """Every stage's output, before its downsampling, equals torchvision's CNBlocks' between
    the stem and the downsamplings (the grader's blocks in the student's encoder)."""
    encoder_case(student, g, CONVNEXT, probes.convnext_encoder, TVConvNeXtEncoder, {
        "the feature taken after the downsampling instead of before it": "after downsample"})


@lab.check("unet.convnext_encoder", points=1)
def convnext_unet_matches_reference(student, g):
    """The whole ConvNeXt-UNet (the student's encoder with the given convnext.py blocks), on a
    non-square input, equals torchvision's CNBlocks feeding the reference decoder."""
    hybrid_case(student, g, CONVNEXT, TVConvNeXtEncoder)
