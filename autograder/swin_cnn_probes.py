"""Probes for the Swin-vs-CNN lab: run the student's modules on the grader's weights and inputs.

Each probe receives `lab` (the student's modules: lab.swin, lab.convnext, lab.resnet,
lab.norms, lab.gradcam, lab.distill) and plain inputs, and returns plain values; the checks in
autograder/swin_cnn.py compare them with references. Where a task's code calls another task's,
the probe substitutes a reference for the other task (torchvision's blocks, or a reference
function put in place of the student's for the duration of the probe), so that one unfinished
task does not cost the next one its points. Nothing here is secret.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.swin_transformer import (PatchMerging, ShiftedWindowAttention,
                                                 SwinTransformerBlock)

from vislab.probing import (Forbid, ProbeFailed, forward_backward, gradients, load_weights,
                            replaced, returned, train_classifier)

NORM_BUILTINS = {"batch_norm", "instance_norm", "layer_norm", "group_norm", "native_batch_norm",
                 "native_layer_norm", "native_group_norm", "_native_batch_norm_legit",
                 "_batch_norm_impl_index", "batch_norm_update_stats"}


# ------------------------------------------------------------------ reference stand-ins

def _partition(x, ws):
    B, H, W, C = x.shape
    return x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)


def _reverse(windows, ws, H, W):
    C = windows.shape[-1]
    return windows.view(-1, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


class _WindowAttention(nn.Module):
    """Window attention with torchvision's relative position bias, standing in for the lab's
    WindowAttention (same weights, same call: windows (B*nW, N, C) and a mask (nW, N, N))."""

    def __init__(self, state: dict, prefix: str, window_size: int, num_heads: int):
        super().__init__()
        dim = state[prefix + "proj.weight"].shape[0]
        self.tv = ShiftedWindowAttention(dim, [window_size] * 2, [0, 0], num_heads)
        own = self.tv.state_dict()
        self.tv.load_state_dict({k: state.get(prefix + k, own[k]) for k in own})
        self.num_heads = num_heads

    def forward(self, x, mask=None):
        BW, N, C = x.shape
        H, d = self.num_heads, C // self.num_heads
        qkv = self.tv.qkv(x).reshape(BW, N, 3, H, d).permute(2, 0, 3, 1, 4)
        attn = qkv[0] * d**-0.5 @ qkv[1].transpose(-2, -1) + self.tv.get_relative_position_bias()
        if mask is not None:
            nW = mask.shape[0]
            attn = (attn.view(BW // nW, nW, H, N, N) + mask[:, None]).view(BW, H, N, N)
        out = (attn.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(BW, N, C)
        return self.tv.proj(out)


def _tv_block(state: dict, prefix: str, dim: int, num_heads: int, window_size: int,
              shift_size: int, mlp_ratio: float, eps: float, dropout: float = 0.0,
              drop_path: float = 0.0) -> SwinTransformerBlock:
    """torchvision's SwinTransformerBlock with the lab-named weights under `prefix`."""
    block = SwinTransformerBlock(dim, num_heads, [window_size] * 2, [shift_size] * 2, mlp_ratio,
                                 dropout=dropout, stochastic_depth_prob=drop_path,
                                 norm_layer=partial(nn.LayerNorm, eps=eps))
    names = {"mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    own = block.state_dict()
    weights = {}
    for key in own:
        ours = key
        for theirs, lab_name in names.items():
            ours = ours.replace(theirs + ".", lab_name + ".")
        weights[key] = state.get(prefix + ours, own[key]) if "relative_position_index" not in key \
            else own[key]
    block.load_state_dict(weights)
    return block.eval()


# ------------------------------------------------------------------- swin.window_partition

def partition(lab, x, window_size):
    return returned(lab.swin.window_partition(x, window_size), "window_partition")


def reverse(lab, windows, window_size, H, W, x=None):
    out = {"reversed": returned(lab.swin.window_reverse(windows, window_size, H, W),
                                "window_reverse")}
    if x is not None:
        parts = returned(lab.swin.window_partition(x, window_size), "window_partition")
        out["round_trip"] = returned(lab.swin.window_reverse(parts, window_size, *x.shape[1:3]),
                                     "window_reverse")
    return out


# ------------------------------------------------------------------- swin.window_attention

def position_index(lab, window_size):
    return returned(lab.swin.relative_position_index(window_size), "relative_position_index")


def window_attention(lab, dim, window_size, num_heads, state, x, mask=None, grad_out=None):
    m = lab.swin.WindowAttention(dim, window_size, num_heads)
    load_weights(m, state, "WindowAttention")
    return forward_backward(m, x, grad_out, "WindowAttention", mask)


# ---------------------------------------------------------------------- swin.shifted_window

def window_mask(lab, H, W, window_size, shift_size):
    with replaced(lab.swin, window_partition=_partition, window_reverse=_reverse):
        return returned(lab.swin.shifted_window_mask(H, W, window_size, shift_size),
                        "shifted_window_mask")


def swin_block(lab, dim, num_heads, window_size, shift_size, state, x, grad_out=None,
               own_parts=False):
    """The student's SwinBlock; unless own_parts, with reference window attention and
    reference window_partition / window_reverse, so that only the shifting is graded."""
    m = lab.swin.SwinBlock(dim, num_heads, window_size, shift_size)
    load_weights(m, state, "SwinBlock")
    m.eval()
    if own_parts:
        return forward_backward(m, x, grad_out, "SwinBlock")
    m.attn = _WindowAttention(state, "attn.", window_size, num_heads)
    with replaced(lab.swin, window_partition=_partition, window_reverse=_reverse):
        return forward_backward(m, x, grad_out, "SwinBlock")


# ----------------------------------------------------------------------- swin.patch_merging

def patch_merging(lab, dim, state, x, grad_out=None):
    m = lab.swin.PatchMerging(dim)
    load_weights(m, state, "PatchMerging")
    return forward_backward(m, x, grad_out, "PatchMerging")


# ------------------------------------------------------------------------------ swin.model

def _block_settings(lab, m) -> list:
    out = []
    for i, stage in enumerate(m.stages):
        for j, block in enumerate(stage):
            if not isinstance(block, lab.swin.SwinBlock):
                raise ProbeFailed(f"stages[{i}][{j}] is a {type(block).__name__}, not a SwinBlock")
            out.append({"stage": i, "block": j, "shift_size": block.shift_size,
                        "window_size": block.window_size, "num_heads": block.attn.num_heads,
                        "drop_path": float(block.drop_path.p), "dropout": float(block.dropout.p),
                        "eps": float(block.norm1.eps)})
    return out


def swin_model(lab, config, state, x, grad_out=None, own_parts=False, train=False, seed=0):
    """The student's Swin (train or eval mode); unless own_parts, every SwinBlock and
    PatchMerging is replaced by torchvision's with the same weights and with the settings each
    student block and merge was built with (shift, heads, dropout, stochastic depth, the norms'
    eps), so that only the model's own code (stages, the settings it passes, merging, norm,
    pooling, head) is graded -- by the outputs, which the grader compares."""
    m = lab.swin.Swin(lab.swin.SwinConfig(**config))
    load_weights(m, state, "Swin")
    settings = _block_settings(lab, m)
    if not own_parts:
        for s in settings:
            i, j = s["stage"], s["block"]
            dim = m.stages[i][j].norm1.weight.shape[0]
            m.stages[i][j] = _tv_block(state, f"stages.{i}.{j}.", dim, s["num_heads"],
                                       s["window_size"], s["shift_size"],
                                       m.stages[i][j].mlp.fc1.out_features / dim, s["eps"],
                                       s["dropout"], s["drop_path"])
        for i, merge in enumerate(m.merges):
            dim = merge.reduction.weight.shape[1] // 4
            ref = PatchMerging(dim, partial(nn.LayerNorm, eps=merge.norm.eps))
            ref.load_state_dict({k: state[f"merges.{i}.{k}"] for k in ref.state_dict()})
            m.merges[i] = ref
    m.train(train)
    torch.manual_seed(seed)
    return forward_backward(m, x, grad_out, "Swin")


def train_swin(lab, config, x_train, y_train, seed, epochs, batch_size, lr):
    """Train the student's Swin (AdamW, warm-up then linear decay); return its trained weights.
    The grader loads them into its own reference Swin and tests it on images this process
    never sees."""
    torch.manual_seed(seed)
    m = lab.swin.Swin(lab.swin.SwinConfig(**config))
    train_classifier(m, "Swin", x_train, y_train, epochs, batch_size, lr)
    return {k: v for k, v in m.state_dict().items()}


# -------------------------------------------------------------------------- convnext.block

def cn_block(lab, dim, state, x, grad_out=None, drop_path=0.0, train=False, seed=0):
    m = lab.convnext.CNBlock(dim, 1e-6, drop_path)
    load_weights(m, state, "CNBlock")
    m.train(train)
    torch.manual_seed(seed)
    return forward_backward(m, x, grad_out, "CNBlock")


def drop_path(lab, x, p, training, seed=0):
    torch.manual_seed(seed)
    return returned(lab.convnext.drop_path(x.clone(), p, training), "drop_path")


def convnext(lab, config, state, x):
    """The lab's ConvNeXt (given code) with the student's CNBlocks."""
    m = lab.convnext.ConvNeXt(lab.convnext.ConvNeXtConfig(**config))
    load_weights(m, state, "ConvNeXt")
    m.eval()
    with torch.no_grad():
        return returned(m(x), "ConvNeXt")


# --------------------------------------------------------------------------- resnet.model

NORM_LAYERS = {"bn": nn.BatchNorm2d, "gn2": partial(nn.GroupNorm, 2)}


def basic_block(lab, c_in, c_out, stride, norm, state, x, grad_out=None):
    m = lab.resnet.BasicBlock(c_in, c_out, stride, NORM_LAYERS[norm])
    load_weights(m, state, "BasicBlock")
    m.eval()
    return forward_backward(m, x, grad_out, "BasicBlock")


def resnet(lab, config, norm, state, x, grad_out=None):
    """The student's ResNet with torch's norm layers (not the student's norms)."""
    m = lab.resnet.ResNet(lab.resnet.ResNetConfig(**config), norm_layer=NORM_LAYERS[norm])
    load_weights(m, state, "ResNet")
    m.eval()
    return forward_backward(m, x, grad_out, "ResNet")


# ---------------------------------------------------------------------------------- norms

NORM_CLASSES = {"bn": "BatchNorm", "in": "InstanceNorm", "ln": "LayerNorm", "gn": "GroupNorm",
                "bin": "BatchInstanceNorm"}


def norm(lab, kind, num_channels, state, inputs, train, grad_out=None, num_groups=None,
         eps=None, momentum=None):
    """Build the student's norm (with `eps` and `momentum` where given, else the defaults),
    load `state`, run it on each of `inputs` in turn (train or eval mode); the outputs, the
    buffers after each call, and the gradients of the first."""
    cls = getattr(lab.norms, NORM_CLASSES[kind])
    options = {k: v for k, v in (("eps", eps), ("momentum", momentum)) if v is not None}
    m = cls(num_groups, num_channels, **options) if kind == "gn" else cls(num_channels, **options)
    load_weights(m, state, cls.__name__)
    m.train(train)
    outs, buffers, first = [], [], None
    with Forbid("norms", NORM_BUILTINS):
        for k, x in enumerate(inputs):
            if k == 0 and grad_out is not None:
                first = forward_backward(m, x, grad_out, cls.__name__)
                outs.append(first["out"])
            else:
                outs.append(returned(m(x), cls.__name__))
            buffers.append({k: v.clone() for k, v in m.named_buffers()})
    out = {"outs": outs, "buffers": buffers}
    if first is not None:
        out.update(grads=first.get("grads", {}), input_grad=first.get("input_grad"))
    return out


# --------------------------------------------------------------------------------- gradcam

class CamNet(nn.Module):
    """A small CNN for Grad-CAM checks; layer = features[2] (the second conv's output)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


class CamNetChannelsLast(nn.Module):
    """A small net whose Grad-CAM layer (`mix`) outputs channels-last maps (B, h, w, K)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 6, 2, stride=2)
        self.mix = nn.Linear(6, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        h = self.mix(self.embed(x).permute(0, 2, 3, 1))      # (B, h, w, 8)
        return self.head(F.gelu(h).mean(dim=(1, 2)))


def grad_cam(lab, state, x, target, channels_last=False, train=False):
    """grad_cam on a small net (in train or eval mode, which grad_cam must leave as it is);
    raw material: the map, the classes, whether the map still carries a graph, the hooks left,
    every parameter's .grad, the net's outputs before and after, and its mode afterwards."""
    net = CamNetChannelsLast() if channels_last else CamNet()
    net.load_state_dict(state)
    net.train(train)
    layer = net.mix if channels_last else net.features[2]
    before = net(x).detach()
    result = lab.gradcam.grad_cam(net, layer, x, target, channels_last=channels_last)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise ProbeFailed("grad_cam must return a pair (cam, classes)")
    cam, classes = (returned(r, "grad_cam") for r in result)
    with torch.no_grad():
        after = net(x)
    return {"cam": cam, "classes": classes, "cam_requires_grad": float(cam.requires_grad),
            "hooks_left": sum(len(mod._forward_hooks) for mod in net.modules()),
            "param_grads": gradients(net), "before": before, "after": after,
            "training": float(net.training)}


# ----------------------------------------------------------------------------- swin.distill

class Teacher(nn.Module):
    """A stand-in teacher with BatchNorm, so that its mode shows in its outputs and its running
    statistics. It records whether gradients were enabled each time it ran."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5))
        self.grad_enabled = []

    def forward(self, x):
        self.grad_enabled.append(torch.is_grad_enabled())
        return self.net(x)


class Student(nn.Module):
    """A stand-in student with BatchNorm, so that its mode shows in its outputs."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 16), nn.BatchNorm1d(16), nn.GELU(), nn.Linear(16, 5))

    def forward(self, x):
        return self.net(x)


def distillation_step(lab, teacher_state, student_state, x, temperature, student_train=True,
                      seed=0):
    """The student's step on a teacher handed over in *training* mode and a student in the
    mode `student_train` asks for; then the probe back-propagates the returned loss and runs
    both nets once more, in whatever mode the step left them. Raw material only: the loss,
    the agreement, the gradients, the teacher's buffers after the step, both nets' outputs
    afterwards, and whether gradients were enabled each time the teacher ran."""
    torch.manual_seed(seed)
    teacher, student = Teacher(), Student()
    teacher.load_state_dict(teacher_state)
    student.load_state_dict(student_state)
    teacher.train()
    student.train(student_train)
    out = lab.distill.distillation_step(student, teacher, x, temperature)
    if type(out) is not dict or "loss" not in out:
        raise ProbeFailed("distillation_step must return a dict with a 'loss' (and 'agreement')")
    loss = returned(out["loss"], "distillation_step's loss")
    if loss.requires_grad:
        loss.backward()
    agreement = out.get("agreement")
    grad_enabled = [float(e) for e in teacher.grad_enabled]
    buffers = {k: v.clone() for k, v in teacher.named_buffers()}
    with torch.no_grad():
        teacher_after, student_after = teacher(x), student(x)
    return {"loss": loss, "agreement": agreement if type(agreement) is torch.Tensor else None,
            "grads": gradients(student), "teacher_grads": gradients(teacher),
            "teacher_grad_enabled": torch.tensor(grad_enabled), "teacher_buffers": buffers,
            "teacher_after": teacher_after, "student_after": student_after}
