"""Probes for the UNet lab: run the student's modules on the grader's weights and inputs.

Each probe receives `lab` (the student's modules: lab.unet, lab.losses, lab.hybrid) and plain
inputs, and returns plain values: outputs, gradients, parameter shapes, trained weights. The
checks in autograder/unet.py compare them with references. Where a task's code calls another
task's (a Down calls a DoubleConv, the UNet calls Down and Up), the probe puts a stand-in built
from torch modules with the grader's weights in its place, so that one unfinished task does not
cost the next its points. Nothing here is secret.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.convnext import CNBlock
from torchvision.models.swin_transformer import PatchMerging, SwinTransformerBlock

from vislab.probing import ProbeFailed, gradients, load_weights, replaced, returned


def _shapes(module: nn.Module) -> dict:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def _loads(module: nn.Module, state: dict, what: str) -> bool:
    """Load the grader's weights when the names and shapes agree (True); False otherwise, so
    that the probe can return the module's own shapes for the check to explain."""
    if _shapes(module) != {k: list(v.shape) for k, v in state.items()}:
        return False
    load_weights(module, state, what)
    return True


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _run(module, inputs: list, grad_out, what: str) -> dict:
    """module(*inputs) and, with grad_out, the gradients of <output, grad_out>."""
    inputs = [t.clone().requires_grad_(grad_out is not None) for t in inputs]
    out = returned(module(*inputs), what)
    if grad_out is None or out.shape != grad_out.shape:
        return {"out": out}
    if not out.requires_grad:
        raise ProbeFailed(f"{what}'s output carries no gradient (torch.no_grad or .detach()?)")
    (out * grad_out).sum().backward()
    return {"out": out, "grads": gradients(module), "input_grads": [t.grad for t in inputs]}


# ------------------------------------------------------------------ reference stand-ins

class _DoubleConv(nn.Module):
    """(conv -> BatchNorm -> ReLU) x 2 from torch modules, standing in for the lab's DoubleConv
    (same constructor, same parameter names). It checks the channels it receives, so that a
    missing skip is named."""

    def __init__(self, in_channels: int, out_channels: int, what: str = "DoubleConv"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.what = what

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.conv1.in_channels:
            raise ProbeFailed(f"{self.what} received a map of shape {tuple(x.shape)}, expected "
                              f"{self.conv1.in_channels} channels"
                              + (": in an Up block that is the skip's channels plus the "
                                 "upsampled map's (torch.cat([skip, x], dim=1)); was the skip "
                                 "concatenated, and were the channels halved by self.up?"
                                 if "Up" in self.what or "ups" in self.what else ""))
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class _Down(nn.Module):
    """The reference Down (same constructor and names as the lab's)."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "maxpool"):
        super().__init__()
        self.mode = mode
        if mode == "conv":
            self.pool = nn.Conv2d(in_channels, in_channels, 2, stride=2)
        self.conv = _DoubleConv(in_channels, out_channels)

    def forward(self, x):
        x = F.max_pool2d(x, 2) if self.mode == "maxpool" else self.pool(x)
        return self.conv(x)


class _Up(nn.Module):
    """The reference Up (same constructor and names as the lab's). It checks the skip it is
    given, so that a skip from the wrong level is named."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "transpose"):
        super().__init__()
        self.mode, self.name = mode, "Up"
        if mode == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
        else:
            self.up = nn.Conv2d(in_channels, in_channels // 2, 1)
        self.conv = _DoubleConv(in_channels, out_channels, "Up's DoubleConv")

    def forward(self, x, skip):
        h, w = x.shape[-2:]
        if (skip.ndim != 4 or skip.shape[1] != self.up.out_channels
                or skip.shape[-2] not in (2 * h, 2 * h + 1) or skip.shape[-1] not in (2 * w, 2 * w + 1)):
            raise ProbeFailed(
                f"{self.name} was called with x of shape {tuple(x.shape)} and a skip of shape "
                f"{tuple(skip.shape)}; its skip must be the encoder's map at twice x's size with "
                f"{self.up.out_channels} channels: the deepest up step takes the last down step's "
                f"input, the last up step takes inc's output (skips in reverse order)")
        if self.mode == "transpose":
            x = self.up(x)
        else:
            x = self.up(F.interpolate(x, scale_factor=2, mode="bilinear"))
        x = F.pad(x, (0, skip.shape[-1] - x.shape[-1], 0, skip.shape[-2] - x.shape[-2]))
        return self.conv(torch.cat([skip, x], dim=1))


class _UNetTemplate(nn.Module):
    """The reference UNet's modules for a config (dict): the handout's names and shapes."""

    def __init__(self, c: dict):
        super().__init__()
        self.inc = _DoubleConv(c["in_channels"], c["base"])
        self.downs = nn.ModuleList([_Down(c["base"] * 2**i, c["base"] * 2**(i + 1), c["down"])
                                    for i in range(c["depth"])])
        self.ups = nn.ModuleList([_Up(c["base"] * 2**(c["depth"] - i),
                                      c["base"] * 2**(c["depth"] - i - 1), c["up"])
                                  for i in range(c["depth"])])
        self.head = nn.Conv2d(c["base"], c["num_classes"], 1)


def _reference_conv(module: nn.Module, state: dict, prefix: str = "conv.") -> None:
    """Replace module.conv (the student's DoubleConv) by the reference with the same weights."""
    ref = _DoubleConv(module.conv.conv1.in_channels, module.conv.conv1.out_channels,
                      "Up's DoubleConv" if "Up" in type(module).__name__ else "DoubleConv")
    ref.load_state_dict(_sub(state, prefix))
    module.conv = ref


# --------------------------------------------------------------------------- the blocks

def double_conv(lab, in_channels, out_channels, state, x, grad_out=None, train=False):
    m = lab.unet.DoubleConv(in_channels, out_channels)
    if not _loads(m, state, "DoubleConv"):
        return {"shapes": _shapes(m)}
    m.train(train)
    return _run(m, [x], grad_out, "DoubleConv")


def down(lab, in_channels, out_channels, mode, state, x, grad_out=None):
    """The student's Down, with the grader's DoubleConv as its self.conv."""
    m = lab.unet.Down(in_channels, out_channels, mode)
    if not _loads(m, state, "Down"):
        return {"shapes": _shapes(m)}
    _reference_conv(m, state)
    m.eval()
    return _run(m, [x], grad_out, "Down")


def up(lab, in_channels, out_channels, mode, state, x, skip, grad_out=None):
    """The student's Up, with the grader's DoubleConv as its self.conv."""
    m = lab.unet.Up(in_channels, out_channels, mode)
    if not _loads(m, state, "Up"):
        return {"shapes": _shapes(m)}
    _reference_conv(m, state)
    m.eval()
    return _run(m, [x, skip], grad_out, "Up")


def model(lab, config, state, x, grad_out=None, own_parts=False, train=False):
    """The student's UNet; unless own_parts, with the grader's DoubleConv, Down and Up blocks
    inside, so that only the model's own wiring (skips, head) is graded."""
    if own_parts:
        m = lab.unet.UNet(lab.unet.UNetConfig(**config))
    else:
        with replaced(lab.unet, DoubleConv=_DoubleConv, Down=_Down, Up=_Up):
            m = lab.unet.UNet(lab.unet.UNetConfig(**config))
        for i, block in enumerate(m.ups if isinstance(m.ups, nn.ModuleList) else []):
            block.name = f"ups.{i}"
    if not _loads(m, state, "UNet"):
        return {"shapes": _shapes(m)}
    m.train(train)
    return _run(m, [x], grad_out, "UNet")


def shapes(lab, config):
    """The parameter names and shapes of the student's UNet for `config`."""
    return _shapes(lab.unet.UNet(lab.unet.UNetConfig(**config)))


def _soft_dice(logits, target):
    """1 - mean over images of (2 sum(p t) + 1) / (sum p + sum t + 1), p = sigmoid(logits)."""
    p, t = torch.sigmoid(logits).flatten(1), target.flatten(1)
    return 1 - ((2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def train_model(lab, config, x_train, y_train, seed, epochs, batch_size, lr):
    """Train the student's UNet with BCE + soft Dice (the grader's, not the student's) (AdamW, 10 warm-up steps, then a linear
    decay to zero)
    and return its trained weights (the grader evaluates them itself)."""
    torch.manual_seed(seed)
    m = lab.unet.UNet(lab.unet.UNetConfig(**config))
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (len(x_train) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1, (i + 1) / 10) * (1 - i / steps))
    m.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for i in range(len(x_train) // batch_size):
            idx = order[i * batch_size:(i + 1) * batch_size]
            logits = returned(m(x_train[idx]), "UNet")
            loss = F.binary_cross_entropy_with_logits(logits, y_train[idx]) + _soft_dice(
                logits, y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return {k: v for k, v in m.state_dict().items()}


# --------------------------------------------------------------------------- the losses

def loss(lab, name, logits, target, **kwargs):
    """lab.losses.<name>(logits, target, **kwargs) and its gradient wrt the logits."""
    logits = logits.clone().requires_grad_()
    value = returned(getattr(lab.losses, name)(logits, target, **kwargs), name)
    if value.requires_grad:
        value.backward()
    return {"loss": value, "grad": logits.grad}


# ------------------------------------------------------------------- the hybrid encoders

class _PatchEmbed(nn.Module):
    def __init__(self, state: dict):
        super().__init__()
        self.w, self.b = state["patch_embed.proj.weight"], state["patch_embed.proj.bias"]
        self.norm = nn.LayerNorm(self.w.shape[0])
        self.norm.load_state_dict(_sub(state, "patch_embed.norm."))

    def forward(self, x):
        return self.norm(F.conv2d(x, self.w, self.b, stride=2).permute(0, 2, 3, 1))


def _tv_swin_block(state: dict, prefix: str, heads: int, ws: int, shift: int, mlp_ratio: float):
    dim = state[prefix + "norm1.weight"].shape[0]
    block = SwinTransformerBlock(dim, heads, [ws, ws], [shift, shift], mlp_ratio)
    own = block.state_dict()
    names = {k: k.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.") for k in own}
    block.load_state_dict({k: state.get(prefix + names[k], own[k]) for k in own})
    return block


def _tv_merge(state: dict, prefix: str):
    dim = state[prefix + "norm.weight"].shape[0] // 4
    merge = PatchMerging(dim)
    merge.load_state_dict(_sub(state, prefix))
    return merge


def swin_encoder(lab, config, state, x, grad_outs, own_parts=False):
    """The student's SwinEncoder; unless own_parts, with torchvision's SwinTransformerBlock and
    PatchMerging (and a reference patch embedding) in place of the given swin.py's."""
    m = lab.hybrid.SwinEncoder(lab.hybrid.HybridConfig(**config))
    load_weights(m, state, "SwinEncoder")
    if not own_parts:
        c = config
        m.patch_embed = _PatchEmbed(state)
        m.stages = nn.ModuleList([nn.Sequential(*[
            _tv_swin_block(state, f"stages.{i}.{j}.", c["num_heads"][i], c["window_size"],
                           0 if j % 2 == 0 else c["window_size"] // 2, c["mlp_ratio"])
            for j in range(depth)]) for i, depth in enumerate(c["depths"])])
        m.merges = nn.ModuleList([_tv_merge(state, f"merges.{i}.")
                                  for i in range(len(c["depths"]) - 1)])
    return _features(m.eval(), x, grad_outs, "SwinEncoder")


def _tv_cn_block(state: dict, prefix: str):
    dim = state[prefix + "dwconv.weight"].shape[0]
    block = CNBlock(dim, 1e-6, 0.0)
    names = {"block.0.": "dwconv.", "block.2.": "norm.", "block.3.": "pwconv1.",
             "block.5.": "pwconv2.", "layer_scale": "layer_scale"}
    own = {}
    for k in block.state_dict():
        ours = k
        for theirs, mine in names.items():
            ours = ours.replace(theirs, mine)
        own[k] = state[prefix + ours]
    block.load_state_dict(own)
    return block


def convnext_encoder(lab, config, state, x, grad_outs, own_parts=False):
    """The student's ConvNeXtEncoder; unless own_parts, with torchvision's CNBlock in place of
    the given convnext.py's."""
    m = lab.hybrid.ConvNeXtEncoder(lab.hybrid.HybridConfig(**config))
    load_weights(m, state, "ConvNeXtEncoder")
    if not own_parts:
        m.stages = nn.ModuleList([nn.Sequential(*[_tv_cn_block(state, f"stages.{i}.{j}.")
                                                  for j in range(depth)])
                                  for i, depth in enumerate(config["depths"])])
    return _features(m.eval(), x, grad_outs, "ConvNeXtEncoder")


def _features(m, x, grad_outs, what):
    x = x.clone().requires_grad_()
    features = m(x)
    if not isinstance(features, (list, tuple)):
        raise ProbeFailed(f"{what} must return a list of feature maps, got {type(features).__name__}")
    features = [returned(f, what) for f in features]
    if (len(features) == len(grad_outs)
            and all(f.shape == g.shape for f, g in zip(features, grad_outs))
            and all(f.requires_grad for f in features)):
        sum((f * g).sum() for f, g in zip(features, grad_outs)).backward()
        return {"features": features, "input_grad": x.grad}
    return {"features": features}


def hybrid(lab, config, state, x):
    """The student's whole HybridUNet (own encoder, given blocks, own Up blocks), eval mode."""
    with replaced(lab.hybrid, DoubleConv=_DoubleConv, Up=_Up):  # the decoder is unet.up's
        m = lab.hybrid.HybridUNet(lab.hybrid.HybridConfig(**config))
    load_weights(m, state, "HybridUNet")
    with torch.no_grad():
        return returned(m.eval()(x), "HybridUNet")
