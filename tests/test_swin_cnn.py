"""The Swin-vs-CNN lab: plausible mistakes lose points in the named task with a message that
helps; correct code written differently gets full marks; one unfinished task does not cost
another its points; the weight mappings reproduce torchvision's logits; `vislab train
swin_cnn` works end to end (small data, one epoch)."""
import json
import re
import shutil
import sys

import pytest
import torch

from conftest import by_task, variant
from vislab import LABS_DIR, SOLUTIONS_DIR
from vislab.cli import main
from vislab.grading import grade, load_lab, summarize
from vislab.impl import import_lab

LAB = "swin_cnn"
TRAINING_CHECK = "trains_on_mnist5k"


def grade_task(folder, task, skip_training=True) -> dict:
    """The task's row of the grade table; the seconds-long training check is left out unless
    asked for (the mistakes below are all caught by the exact checks)."""
    lab = load_lab(LAB)
    if skip_training:
        lab = type(lab)(lab.name, lab.tasks, [c for c in lab.checks if c.name != TRAINING_CHECK])
    rows = summarize(lab, grade(lab, folder, task))
    assert len(rows) == 1
    return rows[0]


# -------------------------------------------------------------------- plausible mistakes

BN_MEAN = "mean = x.sum(dim=(0, 2, 3), keepdim=True) / n               # (1, C, 1, 1)"
BN_VAR = "var = (x * x).sum(dim=(0, 2, 3), keepdim=True) / n - mean * mean  # (1, C, 1, 1), biased"
BN_RUNNING = ("                self.running_mean.lerp_(mean.flatten(), self.momentum)\n"
              "                self.running_var.lerp_(var.flatten() * n / max(n - 1, 1), self.momentum)\n")
BN_OUT = ("        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)  # (1, C, 1, 1)\n"
          "        shift = self.bias.view(1, -1, 1, 1) - mean * scale                 # (1, C, 1, 1)\n"
          "        return x * scale + shift                                            # (B, C, H, W)")


def bn_over(dims: str) -> list:
    """BatchNorm with its statistics over other axes (keepdim, so that the shapes still work;
    the running statistics, which would no longer fit, are left alone)."""
    return [(BN_MEAN, f"mean = x.mean(dim={dims}, keepdim=True)"),
            (BN_VAR, f"var = (x * x).mean(dim={dims}, keepdim=True) - mean * mean"),
            (BN_RUNNING, "                pass\n")]


MISTAKES = {
    # name: (task, file, [(old, new), ...], words the message must contain)
    "partition without the permute": (
        "swin.window_partition", "swin.py",
        [("    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/ws, W/ws, ws, ws, C)\n", "")],
        "without bringing the window-grid axes together"),
    "tokens of a window in column-major order": (
        "swin.window_partition", "swin.py",
        [("x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/ws, W/ws, ws, ws, C)",
          "x = x.permute(0, 1, 3, 4, 2, 5)")], "column-major"),
    "reverse without undoing the permute": (
        "swin.window_partition", "swin.py",
        [("    x = x.permute(0, 1, 3, 2, 4, 5)                    # (B, H/ws, ws, W/ws, ws, C)\n", "")],
        "without undoing the permute"),
    "relative index with dy and dx swapped": (
        "swin.window_attention", "swin.py",
        [("return dy * (2 * window_size - 1) + dx", "return dx * (2 * window_size - 1) + dy")],
        "dy and dx swapped"),
    "relative index j - i": (
        "swin.window_attention", "swin.py",
        [("dy = ys[:, None] - ys[None, :]", "dy = ys[None, :] - ys[:, None]"),
         ("dx = xs[:, None] - xs[None, :]", "dx = xs[None, :] - xs[:, None]")], "the transpose"),
    "no relative position bias": (
        "swin.window_attention", "swin.py",
        [("        attn = attn + self.relative_position_bias()\n", "")], "no relative position bias"),
    "bias added after the softmax": (
        "swin.window_attention", "swin.py",
        [("        attn = attn + self.relative_position_bias()\n", ""),
         ("        attn = attn.softmax(dim=-1)\n",
          "        attn = attn.softmax(dim=-1) + self.relative_position_bias()\n")],
        "after the softmax"),
    "mask ignored by the attention": (
        "swin.window_attention", "swin.py",
        [("        if mask is not None:\n            nW = mask.shape[0]", "        if False:\n            nW = 0")],
        "the mask ignored"),
    "mask tiled window by window": (
        "swin.window_attention", "swin.py",
        [("            attn = attn.view(BW // nW, nW, self.num_heads, N, N) + mask[:, None]\n"
          "            attn = attn.view(BW, self.num_heads, N, N)\n",
          "            attn = attn + mask.repeat_interleave(BW // nW, dim=0)[:, None]\n")],
        "repeated window by window"),
    "window not rolled back": (
        "swin.shifted_window", "swin.py",
        [("        if shift:\n            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))\n", "")],
        "not rolled back"),
    "mask missing": (
        "swin.shifted_window", "swin.py",
        [("mask = shifted_window_mask(H, W, ws, shift).to(x) if shift else None", "mask = None")],
        "mask missing"),
    "rolled the wrong way": (
        "swin.shifted_window", "swin.py",
        [("torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))", "torch.roll(x, shifts=(shift, shift), dims=(1, 2))"),
         ("torch.roll(x, shifts=(shift, shift), dims=(1, 2))\n        return x",
          "torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))\n        return x")],
        "wrong direction"),
    "rolled along H only": (
        "swin.shifted_window", "swin.py",
        [("torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))", "torch.roll(x, -shift, dims=1)"),
         ("torch.roll(x, shifts=(shift, shift), dims=(1, 2))", "torch.roll(x, shift, dims=1)")],
        "along H only"),
    "shifted_window_attention using self.shift_size instead of its argument": (
        "swin.shifted_window", "swin.py",
        [("        if shift:\n            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))",
          "        shift = self.shift_size\n"
          "        if shift:\n            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))")],
        "instead of the `shift` argument"),
    "mask that blocks nothing": (
        "swin.shifted_window", "swin.py",
        [("return torch.zeros(same.shape).masked_fill(~same, -100.0)", "return torch.zeros(same.shape)")],
        "blocks nothing"),
    "patch merging in row-major order": (
        "swin.patch_merging", "swin.py",
        [("torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2],\n                       x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)",
          "torch.cat([x[:, 0::2, 0::2], x[:, 0::2, 1::2],\n                       x[:, 1::2, 0::2], x[:, 1::2, 1::2]], dim=-1)")],
        "row-major order"),
    "patch merging in pixel_unshuffle's order": (
        "swin.patch_merging", "swin.py",
        [("torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2],\n                       x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)",
          "F.pixel_unshuffle(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)")],
        "pixel_unshuffle"),
    "patch merging without its norm": (
        "swin.patch_merging", "swin.py",
        [("return self.reduction(self.norm(x))", "return self.reduction(x)")], "no LayerNorm"),
    "patch merging that does not pad": (
        "swin.patch_merging", "swin.py",
        [("        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))\n        x = torch.cat(", "        x = torch.cat(")],
        "patch_merging_pads_odd_sizes"),
    "no block shifted": (
        "swin.model", "swin.py", [("0 if j % 2 == 0 else c.window_size // 2", "0")],
        "no block shifted"),
    "even blocks shifted": (
        "swin.model", "swin.py", [("0 if j % 2 == 0 else c.window_size // 2",
                                   "c.window_size // 2 if j % 2 == 0 else 0")],
        "even blocks shifted"),
    "no final norm": (
        "swin.model", "swin.py", [("return self.norm(x)                           # (B, h, w, C_last)",
                                   "return x")], "no final LayerNorm"),
    "max pooling in the Swin": (
        "swin.model", "swin.py", [("self.features(x).mean(dim=(1, 2))", "self.features(x).amax(dim=(1, 2))")],
        "max pooling"),
    "constant stochastic depth": (
        "swin.model", "swin.py", [("c.drop_path * k / max(1, total - 1)", "c.drop_path")],
        "the same stochastic-depth rate config.drop_path in every block"),
    "no layer scale": (
        "convnext.block", "convnext.py",
        [("y = self.layer_scale * y.permute(0, 3, 1, 2)", "y = y.permute(0, 3, 1, 2)")],
        "no layer scale"),
    "ReLU in the ConvNeXt block": (
        "convnext.block", "convnext.py", [("self.pwconv2(F.gelu(", "self.pwconv2(F.relu(")],
        "ReLU instead of GELU"),
    "no residual in the ConvNeXt block": (
        "convnext.block", "convnext.py",
        [("return x + drop_path(y, self.drop_path, self.training)",
          "return drop_path(y, self.drop_path, self.training)")], "no residual"),
    "ConvNeXt LayerNorm over the whole map": (
        "convnext.block", "convnext.py",
        [("self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))",
          "self.pwconv2(F.gelu(self.pwconv1(F.layer_norm(y, y.shape[1:]) * self.norm.weight + self.norm.bias)))")],
        "LayerNorm over (H, W, C)"),
    "ConvNeXt block's LayerNorm with F.layer_norm's default eps": (
        "convnext.block", "convnext.py",
        [("self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))",
          "self.pwconv2(F.gelu(self.pwconv1(F.layer_norm(y, y.shape[-1:], self.norm.weight, self.norm.bias))))")],
        "F.layer_norm's default"),
    "stochastic depth not rescaled": (
        "convnext.block", "convnext.py", [("return x * keep.to(x.dtype) / (1 - p)", "return x * keep.to(x.dtype)")],
        "unscaled"),
    "stochastic depth per element": (
        "convnext.block", "convnext.py",
        [("keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < 1 - p",
          "keep = torch.rand(x.shape, device=x.device) < 1 - p")], "single elements"),
    "stochastic depth with the survival probability as p": (
        "convnext.block", "convnext.py",
        [("device=x.device) < 1 - p", "device=x.device) < p")], "1 - p instead of p"),
    "no shortcut in the basic block": (
        "resnet.model", "resnet.py", [("return self.relu(out + shortcut)", "return self.relu(out)")],
        "no shortcut"),
    "ReLU before the shortcut": (
        "resnet.model", "resnet.py", [("return self.relu(out + shortcut)", "return self.relu(out) + shortcut")],
        "before adding the shortcut"),
    "max pooling in the ResNet": (
        "resnet.model", "resnet.py", [("self.features(x).mean(dim=(2, 3))", "self.features(x).amax(dim=(2, 3))")],
        "max pooling"),
    "BatchNorm hard-wired into the blocks": (
        "resnet.model", "resnet.py",
        [("return nn.Sequential(BasicBlock(c_in, c_out, stride, norm_layer),",
          "return nn.Sequential(BasicBlock(c_in, c_out, stride),")], "differ from the skeleton's"),
    "BatchNorm statistics per sample (over C, H, W)": (
        "norms", "norms.py", bn_over("(1, 2, 3)"), "that is LayerNorm"),
    "BatchNorm statistics over H, W": (
        "norms", "norms.py", bn_over("(2, 3)"), "that is InstanceNorm); BatchNorm's statistics are over (B, H, W)"),
    "BatchNorm normalising with the unbiased variance": (
        "norms", "norms.py", [(BN_VAR, "var = x.var(dim=(0, 2, 3), keepdim=True)")], "unbiased variance"),
    "BatchNorm keeping the biased variance": (
        "norms", "norms.py",
        [("self.running_var.lerp_(var.flatten() * n / max(n - 1, 1), self.momentum)",
          "self.running_var.lerp_(var.flatten(), self.momentum)")], "biased batch variance in running_var"),
    "BatchNorm momentum the wrong way round": (
        "norms", "norms.py",
        [("self.running_mean.lerp_(mean.flatten(), self.momentum)",
          "self.running_mean.lerp_(mean.flatten(), 1 - self.momentum)")], "the wrong way round"),
    "BatchNorm with batch statistics in eval mode": (
        "norms", "norms.py", [("        if self.training:\n            # Sums of x", "        if True:\n            # Sums of x")],
        "batch statistics in evaluation mode"),
    "BatchNorm with detached statistics": (
        "norms", "norms.py", [(BN_MEAN, "mean = x.detach().sum(dim=(0, 2, 3), keepdim=True) / n"),
                              (BN_VAR, "var = (x * x).detach().sum(dim=(0, 2, 3), keepdim=True) / n - mean * mean")],
        "detached statistics"),
    "BatchNorm calling F.batch_norm": (
        "norms", "norms.py",
        [(BN_OUT, "        return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, "
                  "self.weight, self.bias, self.training, self.momentum, self.eps)")],
        "called batch_norm"),
    "LayerNorm calling F.group_norm with the guard switched off": (
        "norms", "norms.py",
        [("        return _affine(xc * torch.rsqrt(var + self.eps), self.weight, self.bias)\n"
          "        ### END SOLUTION\n\n\nclass GroupNorm",
          "        with torch._C.DisableTorchFunction():\n"
          "            return torch.nn.functional.group_norm(x, 1, self.weight, self.bias, self.eps)\n"
          "        ### END SOLUTION\n\n\nclass GroupNorm")],
        "without switching off the grader's guard; found norms.py:"),
    "InstanceNorm with batch statistics": (
        "norms", "norms.py",
        [("xc = x - x.mean(dim=(2, 3), keepdim=True)                # (B, C, H, W)",
          "xc = x - x.mean(dim=(0, 2, 3), keepdim=True)"),
         ("var = (xc * xc).mean(dim=(2, 3), keepdim=True)           # (B, C, 1, 1)",
          "var = (xc * xc).mean(dim=(0, 2, 3), keepdim=True)")], "that is BatchNorm"),
    "LayerNorm over the channels only": (
        "norms", "norms.py",
        [("xc = x - x.mean(dim=(1, 2, 3), keepdim=True)             # (B, C, H, W)",
          "xc = x - x.mean(dim=1, keepdim=True)"),
         ("var = (xc * xc).mean(dim=(1, 2, 3), keepdim=True)        # (B, 1, 1, 1)",
          "var = (xc * xc).mean(dim=1, keepdim=True)")], "ConvNeXt's LayerNorm2d"),
    "GroupNorm with interleaved groups": (
        "norms", "norms.py",
        [("        g = x.reshape(B, self.num_groups, -1)                         # (B, G, C/G*H*W)\n",
          "        G = self.num_groups\n"
          "        g = x.reshape(B, C // G, G, H * W).transpose(1, 2).reshape(B, G, -1)\n"),
         ("x_hat = (gc * torch.rsqrt(var + self.eps)).view(B, C, H, W)",
          "x_hat = (gc * torch.rsqrt(var + self.eps)).view(B, G, C // G, H * W)"
          ".transpose(1, 2).reshape(B, C, H, W)")], "g + G"),
    "Batch-Instance Norm without the clamp": (
        "norms", "norms.py", [("rho = self.gate.clamp(0, 1).view(1, -1, 1, 1)", "rho = self.gate.view(1, -1, 1, 1)")],
        "not clamped"),
    "Batch-Instance Norm with rho and 1 - rho swapped": (
        "norms", "norms.py", [("rho * bn + (1 - rho) * inst", "rho * inst + (1 - rho) * bn")],
        "swapped"),
    "Grad-CAM without the ReLU": (
        "gradcam", "gradcam.py", [("cam = F.relu((alpha * A).sum(dim=1))", "cam = (alpha * A).sum(dim=1)")],
        "no ReLU"),
    "Grad-CAM of the softmax": (
        "gradcam", "gradcam.py", [("score = logits.gather(", "score = logits.softmax(-1).gather(")],
        "softmax probability"),
    "Grad-CAM ignoring the target": (
        "gradcam", "gradcam.py", [("    if target is None:\n", "    if True:\n")],
        "must use the given target"),
    "Grad-CAM with pixel-wise weights": (
        "gradcam", "gradcam.py", [("alpha = grads.mean(dim=(2, 3), keepdim=True)", "alpha = grads")],
        "no spatial average"),
    "Grad-CAM normalising the map": (
        "gradcam", "gradcam.py", [("    return cam.detach(), target", "    return (cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).detach(), target")],
        "divided by its maximum"),
    "Grad-CAM leaving its hook": (
        "gradcam", "gradcam.py", [("    finally:\n        handle.remove()", "    finally:\n        pass")],
        "still registered"),
    "Grad-CAM by backward()": (
        "gradcam", "gradcam.py", [("grads, = torch.autograd.grad(score, A)",
                                   "A.retain_grad()\n    score.backward()\n    grads = A.grad")],
        "left gradients"),
    "distillation with the teacher in training mode": (
        "swin.distill", "distill.py", [("    teacher.eval()\n", "")], "training mode"),
    "distillation building the teacher's graph": (
        "swin.distill", "distill.py",
        [("    with torch.no_grad():\n        target = teacher(images)", "    target = teacher(images)")],
        "gradients enabled"),
    "distillation with the arguments swapped": (
        "swin.distill", "distill.py",
        [("distillation_loss(logits, target, temperature)", "distillation_loss(target, logits, temperature)")],
        "swapped"),
    "distillation ignoring the temperature": (
        "swin.distill", "distill.py",
        [("distillation_loss(logits, target, temperature)", "distillation_loss(logits, target)")],
        "default temperature 4"),
    "distillation by cross-entropy with the teacher's labels": (
        "swin.distill", "distill.py",
        [("loss = distillation_loss(logits, target, temperature)",
          "loss = F.cross_entropy(logits, target.argmax(-1))")], "cross-entropy"),
    # found by review (issue 11, item 5): settings the defaults never use
    "shifted-window mask built for a square map": (
        "swin.shifted_window", "swin.py",
        [("mask = shifted_window_mask(H, W, ws, shift)", "mask = shifted_window_mask(H, H, ws, shift)")],
        "the mask built for an H x H map"),
    "dropout not passed to the Swin blocks": (
        "swin.model", "swin.py",
        [("c.dropout, c.drop_path * k / max(1, total - 1),", "0.0, c.drop_path * k / max(1, total - 1),")],
        "dropout 1"),
    "norm_eps not passed to the Swin blocks": (
        "swin.model", "swin.py",
        [("c.drop_path * k / max(1, total - 1),\n                                        c.norm_eps))",
          "c.drop_path * k / max(1, total - 1)))")], "the blocks built without config.norm_eps"),
    "norm_eps not passed to the patch merging": (
        "swin.model", "swin.py",
        [("self.merges.append(PatchMerging(dim, c.norm_eps))", "self.merges.append(PatchMerging(dim))")],
        "the patch mergings built without config.norm_eps"),
    "stochastic depth divided by (blocks - 1)": (
        "swin.model", "swin.py", [("c.drop_path * k / max(1, total - 1)", "c.drop_path * k / (total - 1)")],
        "ZeroDivisionError"),
    "stochastic depth divided by the number of blocks": (
        "swin.model", "swin.py", [("c.drop_path * k / max(1, total - 1)", "c.drop_path * k / total")],
        "stochastic depth 1 over two blocks"),
    "drop_path at p = 1 dividing by zero": (
        "convnext.block", "convnext.py",
        [("    if p >= 1.0:\n        return torch.zeros_like(x)\n", "")], "p = 1"),
    "drop_path with a mask for 4-D maps only": (
        "convnext.block", "convnext.py",
        [("keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < 1 - p",
          "keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < 1 - p")], "(B, N, C)"),
    "BatchNorm with eps on the standard deviation": (
        "norms", "norms.py",
        [("scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)",
          "scale = self.weight.view(1, -1, 1, 1) / (var.sqrt() + self.eps)")],
        "standard deviation instead of the variance"),
    "BatchNorm ignoring self.momentum": (
        "norms", "norms.py",
        [("self.running_mean.lerp_(mean.flatten(), self.momentum)", "self.running_mean.lerp_(mean.flatten(), 0.1)"),
         ("self.running_var.lerp_(var.flatten() * n / max(n - 1, 1), self.momentum)",
          "self.running_var.lerp_(var.flatten() * n / max(n - 1, 1), 0.1)")], "self.momentum ignored"),
    "InstanceNorm ignoring self.eps": (
        "norms", "norms.py",
        [("        var = (xc * xc).mean(dim=(2, 3), keepdim=True)           # (B, C, 1, 1)\n"
          "        return _affine(xc * torch.rsqrt(var + self.eps)",
          "        var = (xc * xc).mean(dim=(2, 3), keepdim=True)\n"
          "        return _affine(xc * torch.rsqrt(var + 1e-5)")], "self.eps ignored"),
    "GroupNorm with eps on the standard deviation": (
        "norms", "norms.py",
        [("x_hat = (gc * torch.rsqrt(var + self.eps)).view(B, C, H, W)",
          "x_hat = (gc / (var.sqrt() + self.eps)).view(B, C, H, W)")], "standard deviation instead"),
    "Batch-Instance Norm with momentum 0.1 hard-coded": (
        "norms", "norms.py", [("                m = self.momentum\n", "                m = 0.1\n")],
        "momentum 0.3"),
    "distillation forcing the student into training mode": (
        "swin.distill", "distill.py", [("    teacher.eval()\n", "    teacher.eval()\n    student.train()\n")],
        "mode changed"),
    "distillation restoring the teacher's training mode": (
        "swin.distill", "distill.py",
        [("        target = teacher(images)                       # (B, classes)\n",
          "        target = teacher(images)                       # (B, classes)\n    teacher.train()\n")],
        "left in evaluation mode"),
    "Grad-CAM returning the map with its graph": (
        "gradcam", "gradcam.py", [("    return cam.detach(), target", "    return cam, target")],
        "carries the autograd graph"),
    "patch merging padding with F.pad's pairs in the wrong order": (
        "swin.patch_merging", "swin.py",
        [("x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))", "x = F.pad(x, (0, H % 2, 0, W % 2))")],
        "F.pad pads the last axis first"),
    "patch merging padding only when both sides are odd": (
        "swin.patch_merging", "swin.py",
        [("x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))", "x = F.pad(x, (0, 0, 0, 1, 0, 1)) if H % 2 and W % 2 else x")],
        "7 x 6"),
    "patch merging padding H by W's parity": (
        "swin.patch_merging", "swin.py",
        [("x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))", "x = F.pad(x, (0, 0, 0, H % 2, 0, W % 2))")],
        "7 x 6"),
    "Grad-CAM switching the model to eval mode": (
        "gradcam", "gradcam.py", [("    saved = []\n", "    model.eval()\n    saved = []\n")],
        "changed the model's mode"),
    "patch merging padding at the top and left": (
        "swin.patch_merging", "swin.py",
        [("x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))", "x = F.pad(x, (0, 0, W % 2, 0, H % 2, 0))")],
        "top and left"),
}


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, tmp_path):
    task, file, edits, words = MISTAKES[name]
    row = grade_task(variant(tmp_path, LAB, {file: edits}), task)
    assert row["status"] in ("failed", "error"), row
    assert row["earned"] < row["possible"]
    assert words in row["message"], row["message"]


# ------------------------------------------------------------ correct, written differently

ALTERNATIVES = {
    "drop_path with bernoulli_ and a p = 1 guard by where": ("convnext.block", "convnext.py", [(
        """    if p >= 1.0:
        return torch.zeros_like(x)
    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < 1 - p
    return x * keep.to(x.dtype) / (1 - p)""",
        """    shape = (len(x),) + (1,) * (x.dim() - 1)
    keep = x.new_empty(shape).bernoulli_(1 - p)
    return torch.where(keep > 0, x / max(1 - p, 1e-12), torch.zeros_like(x))""")]),
    "Batch-Instance Norm with lerp_ and var_mean": ("norms", "norms.py", [(
        """            b_mean = x.mean(dim=(0, 2, 3))                                  # (C,)
            b_var = x.var(dim=(0, 2, 3), unbiased=False)                    # (C,)
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * b_mean)
                self.running_var.mul_(1 - m).add_(m * b_var * n / max(n - 1, 1))""",
        """            b_var, b_mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                self.running_mean.lerp_(b_mean, self.momentum)
                self.running_var.lerp_(b_var * (n / (n - 1)), self.momentum)""")]),
    "Grad-CAM map computed under no_grad": ("gradcam", "gradcam.py", [(
        """    alpha = grads.mean(dim=(2, 3), keepdim=True)                    # (B, K, 1, 1)
    cam = F.relu((alpha * A).sum(dim=1))                            # (B, h, w)
    return cam.detach(), target""",
        """    with torch.no_grad():
        cam = (grads.mean(dim=(2, 3), keepdim=True) * A).sum(dim=1).clamp_min(0)
    return cam, target""")]),
    "partition with unfold": ("swin.window_partition", "swin.py", [(
        """    x = x.view(B, H // ws, ws, W // ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/ws, W/ws, ws, ws, C)
    return x.reshape(-1, ws * ws, C)  # (B * nW, ws * ws, C)""",
        """    patches = x.unfold(1, ws, ws).unfold(2, ws, ws)   # (B, H/ws, W/ws, C, ws, ws)
    return patches.permute(0, 1, 2, 4, 5, 3).contiguous().view(-1, ws * ws, C)""")]),
    "reverse by stacking rows of windows": ("swin.window_partition", "swin.py", [(
        """    x = windows.view(-1, H // ws, W // ws, ws, ws, C)  # (B, H/ws, W/ws, ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5)                    # (B, H/ws, ws, W/ws, ws, C)
    return x.reshape(-1, H, W, C)                      # (B, H, W, C)""",
        """    grid = windows.view(-1, H // ws, W // ws, ws, ws, C)
    rows = [torch.cat(list(grid[:, i].unbind(1)), dim=2) for i in range(H // ws)]
    return torch.cat(rows, dim=1)""")]),
    "relative index with loops": ("swin.window_attention", "swin.py", [(
        """    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()                              # (N,)
    dy = ys[:, None] - ys[None, :] + window_size - 1                 # (N, N)
    dx = xs[:, None] - xs[None, :] + window_size - 1                 # (N, N)
    return dy * (2 * window_size - 1) + dx""",
        """    ws = window_size
    out = torch.empty(ws * ws, ws * ws, dtype=torch.long)
    for i in range(ws * ws):
        for j in range(ws * ws):
            out[i, j] = (i // ws - j // ws + ws - 1) * (2 * ws - 1) + (i % ws - j % ws + ws - 1)
    return out""")]),
    "window attention with scaled_dot_product_attention": ("swin.window_attention", "swin.py", [(
        """        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)           # (B*nW, H, N, N)
        attn = attn + self.relative_position_bias()
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(BW // nW, nW, self.num_heads, N, N) + mask[:, None]
            attn = attn.view(BW, self.num_heads, N, N)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(BW, N, C)                 # (B*nW, N, C)""",
        """        bias = self.relative_position_bias().expand(BW, -1, -1, -1)
        if mask is not None:
            bias = (bias.reshape(BW // mask.shape[0], mask.shape[0], -1, N, N)
                    + mask[None, :, None]).reshape(BW, -1, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(BW, N, C)""")]),
    "window attention with einsum and chunk": ("swin.window_attention", "swin.py", [(
        """        qkv = self.qkv(x).reshape(BW, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                               # each (B*nW, H, N, d)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)           # (B*nW, H, N, N)""",
        """        q, k, v = (t.view(BW, N, self.num_heads, -1).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        attn = torch.einsum("bhqd,bhkd->bhqk", q, k) / self.head_dim ** 0.5""")]),
    "mask from coordinates, with -inf": ("swin.shifted_window", "swin.py", [(
        """    ws, s = window_size, shift_size
    labels = torch.zeros(1, H, W, 1)
    bands = ((0, -ws), (-ws, -s), (-s, None))
    count = 0
    for h0, h1 in bands:
        for w0, w1 in bands:
            labels[:, h0:h1, w0:w1] = count
            count += 1
    labels = window_partition(labels, ws).squeeze(-1)           # (nW, N)
    same = labels[:, :, None] == labels[:, None, :]             # (nW, N, N)
    return torch.zeros(same.shape).masked_fill(~same, -100.0)""",
        """    rows = (torch.arange(H) >= H - shift_size).float()
    cols = (torch.arange(W) >= W - shift_size).float()
    region = (2 * rows[:, None] + cols[None, :])[None, :, :, None]   # (1, H, W, 1)
    r = window_partition(region, window_size)[..., 0]                 # (nW, N)
    blocked = r[:, :, None] != r[:, None, :]
    return torch.where(blocked, float("-inf"), 0.0)""")]),
    "shift by slicing instead of torch.roll": ("swin.shifted_window", "swin.py", [(
        """        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))""",
        """        if shift:
            x = torch.cat([x[:, shift:], x[:, :shift]], dim=1)
            x = torch.cat([x[:, :, shift:], x[:, :, :shift]], dim=2)"""), (
        """        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))""",
        """        if shift:
            x = torch.roll(torch.roll(x, shift, dims=1), shift, dims=2)""")]),
    "patch merging by reshape": ("swin.patch_merging", "swin.py", [(
        """        H, W = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2],
                       x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)  # (B, H/2, W/2, 4C)""",
        """        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = torch.cat([x, x.new_zeros(B, H % 2, W, C)], dim=1)
            x = torch.cat([x, x.new_zeros(B, x.shape[1], W % 2, C)], dim=2)
        B, H, W, C = x.shape
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5)  # (.., dw, dh, C)
        x = x.reshape(B, H // 2, W // 2, 4 * C)""")]),
    "model with a list of stages and zip": ("swin.model", "swin.py", [(
        """        x = self.patch_embed(x)                       # (B, H/P, W/P, C)
        for i, stage in enumerate(self.stages):
            x = stage(x)                              # (B, h, w, C_i)
            if i < len(self.merges):
                x = self.merges[i](x)                 # (B, h/2, w/2, 2 C_i)
        return self.norm(x)                           # (B, h, w, C_last)""",
        """        x = self.patch_embed(x)
        for stage, merge in zip(self.stages, list(self.merges) + [nn.Identity()]):
            for block in stage:
                x = block(x)
            x = merge(x)
        return self.norm(x)"""), (
        """        total, k = sum(c.depths), 0
        for i, (depth, heads) in enumerate(zip(c.depths, c.num_heads)):
            dim = c.embed_dim * 2 ** i
            blocks = []
            for j in range(depth):
                blocks.append(SwinBlock(dim, heads, c.window_size,
                                        0 if j % 2 == 0 else c.window_size // 2, c.mlp_ratio,
                                        c.dropout, c.drop_path * k / max(1, total - 1),
                                        c.norm_eps))
                k += 1
            self.stages.append(nn.Sequential(*blocks))
            if i < len(c.depths) - 1:
                self.merges.append(PatchMerging(dim, c.norm_eps))""",
        """        rates = torch.linspace(0, c.drop_path, sum(c.depths)).tolist()
        for i in reversed(range(len(c.depths) - 1)):  # a different creation order
            self.merges.insert(0, PatchMerging(c.embed_dim * 2 ** i, c.norm_eps))
        for i, depth in enumerate(c.depths):
            dim = c.embed_dim * 2 ** i
            self.stages.append(nn.Sequential(*[
                SwinBlock(dim, c.num_heads[i], c.window_size, (j % 2) * (c.window_size // 2),
                          c.mlp_ratio, c.dropout, rates.pop(0), c.norm_eps)
                for j in range(depth)]))""")]),
    "ConvNeXt block with F.conv2d, F.layer_norm and timm's drop path": ("convnext.block", "convnext.py", [(
        """        y = self.dwconv(x).permute(0, 2, 3, 1)              # (B, H, W, C)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))  # (B, H, W, C)
        y = self.layer_scale * y.permute(0, 3, 1, 2)        # (B, C, H, W)""",
        """        y = F.conv2d(x, self.dwconv.weight, self.dwconv.bias, padding=3, groups=x.shape[1])
        y = F.layer_norm(y.permute(0, 2, 3, 1), (y.shape[1],), self.norm.weight, self.norm.bias, 1e-6)
        y = torch.einsum("bhwc,dc->bhwd", F.gelu(self.pwconv1(y)), self.pwconv2.weight) + self.pwconv2.bias
        y = y.permute(0, 3, 1, 2) * self.layer_scale.view(1, -1, 1, 1)"""), (
        """    keep = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device) < 1 - p
    return x * keep.to(x.dtype) / (1 - p)""",
        """    keep_prob = 1 - p
    mask = (keep_prob + torch.rand(x.shape[0], *[1] * (x.ndim - 1), dtype=x.dtype)).floor_()
    return x.div(keep_prob) * mask""")]),
    "ResNet built in a loop, shortcut computed last": ("resnet.model", "resnet.py", [(
        """        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)""",
        """        out = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        if self.downsample is not None:
            x = self.downsample(x)
        return torch.relu(self.bn2(out) + x)"""), (
        """        return nn.Sequential(BasicBlock(c_in, c_out, stride, norm_layer),
                             *[BasicBlock(c_out, c_out, 1, norm_layer) for _ in range(blocks - 1)])""",
        """        layers = nn.Sequential()
        for i in range(blocks):
            layers.append(BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1,
                                     norm_layer))
        return layers"""), (
        """        self.layer1 = self.make_layer(c.widths[0], c.widths[0], n, 1, norm_layer)
        self.layer2 = self.make_layer(c.widths[0], c.widths[1], n, 2, norm_layer)
        self.layer3 = self.make_layer(c.widths[1], c.widths[2], n, 2, norm_layer)""",
        """        c_in = c.widths[0]
        for i, (width, stride) in enumerate(zip(c.widths, (1, 2, 2))):
            setattr(self, f"layer{i + 1}", self.make_layer(c_in, width, n, stride, norm_layer))
            c_in = width""")]),
    "norms with var_mean, flat views and in-place updates": ("norms", "norms.py", [(
        "            " + BN_MEAN + """
            """ + BN_VAR + """
            var = var.clamp_min(0)                                      # rounding can go below 0
            with torch.no_grad():
""" + BN_RUNNING.rstrip("\n"),
        """            flat = x.transpose(0, 1).reshape(x.shape[1], -1)      # (C, B*H*W)
            var, mean = torch.var_mean(flat, dim=1, unbiased=False)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(
                    self.momentum * flat.var(1, unbiased=True))
            mean, var = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)"""), (
        BN_OUT, """        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x_hat, self.weight.view(1, -1, 1, 1))"""), (
        """        g = x.reshape(B, self.num_groups, -1)                         # (B, G, C/G*H*W)
        gc = g - g.mean(dim=-1, keepdim=True)
        var = (gc * gc).mean(dim=-1, keepdim=True)                    # (B, G, 1)
        x_hat = (gc * torch.rsqrt(var + self.eps)).view(B, C, H, W)""",
        """        g = x.view(B, self.num_groups, C // self.num_groups, H, W)
        var, mean = torch.var_mean(g, dim=(2, 3, 4), unbiased=False, keepdim=True)
        x_hat = ((g - mean) / torch.sqrt(var + self.eps)).flatten(1, 2)"""), (
        """        xc = x - x.mean(dim=(1, 2, 3), keepdim=True)             # (B, C, H, W)
        var = (xc * xc).mean(dim=(1, 2, 3), keepdim=True)        # (B, 1, 1, 1)""",
        """        flat = x.flatten(1)
        xc = x - flat.mean(1).view(-1, 1, 1, 1)
        var = flat.var(1, unbiased=False).view(-1, 1, 1, 1)""")]),
    "Grad-CAM with a nonlocal and einsum": ("gradcam", "gradcam.py", [(
        """    saved = []
    handle = layer.register_forward_hook(lambda module, inputs, output: saved.append(output))
    try:
        with torch.enable_grad():
            logits = model(images)                                  # (B, classes)
    finally:
        handle.remove()
    if target is None:
        target = logits.argmax(dim=-1)
    score = logits.gather(1, target.view(-1, 1)).sum()
    A = saved[-1]
    grads, = torch.autograd.grad(score, A)                          # like A
    if channels_last:
        A, grads = A.permute(0, 3, 1, 2), grads.permute(0, 3, 1, 2)  # (B, K, h, w)
    alpha = grads.mean(dim=(2, 3), keepdim=True)                    # (B, K, 1, 1)
    cam = F.relu((alpha * A).sum(dim=1))                            # (B, h, w)
    return cam.detach(), target""",
        """    A = None

    def keep(module, inputs, output):
        nonlocal A
        A = output
    handle = layer.register_forward_hook(keep)
    logits = model(images)
    handle.remove()
    classes = logits.argmax(1) if target is None else target
    onehot = F.one_hot(classes, logits.shape[1]).to(logits.dtype)
    grads = torch.autograd.grad((logits * onehot).sum(), A)[0]
    if channels_last:
        weights = grads.mean(dim=(1, 2))                            # (B, K)
        cam = torch.einsum("bk,bhwk->bhw", weights, A)
    else:
        cam = torch.einsum("bk,bkhw->bhw", grads.mean(dim=(2, 3)), A)
    return cam.clamp(min=0).detach(), classes""")]),
    "distillation step with train(False) and eq": ("swin.distill", "distill.py", [(
        """    teacher.eval()
    with torch.no_grad():
        target = teacher(images)                       # (B, classes)
    logits = student(images)                           # (B, classes)
    loss = distillation_loss(logits, target, temperature)
    agreement = (logits.argmax(-1) == target.argmax(-1)).float().mean()
    return {"loss": loss, "agreement": agreement.detach()}""",
        """    logits = student(images)
    teacher.train(False)
    with torch.inference_mode():
        soft = teacher(images).clone()
    loss = distillation_loss(student_logits=logits, teacher_logits=soft.clone(),
                             temperature=temperature)
    with torch.no_grad():
        agreement = torch.eq(logits.argmax(1), soft.argmax(1)).double().mean()
    return dict(loss=loss, agreement=agreement)""")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, tmp_path):
    task, file, edits = ALTERNATIVES[name]
    row = grade_task(variant(tmp_path, LAB, {file: edits}), task,
                     skip_training=task != "swin.model")
    assert row["status"] == "passed", row
    assert row["earned"] == row["possible"]


# ----------------------------------------------------------------- isolation of the tasks

BLOCK = re.compile(r"(?P<indent>[ \t]*)### BEGIN SOLUTION\n(?P<body>.*?)[ \t]*### END SOLUTION\n",
                   re.S)
# The checks that legitimately use other tasks' code: the whole-model checks.
NEEDS_ALL = {"swin_block_with_own_parts": {"swin.window_partition", "swin.window_attention"},
             "swin_with_own_parts_matches_torchvision": {"swin.window_partition",
                                                         "swin.window_attention",
                                                         "swin.shifted_window",
                                                         "swin.patch_merging"},
             "trains_on_mnist5k": {"swin.window_partition", "swin.window_attention",
                                   "swin.shifted_window", "swin.patch_merging"}}


def without_task(tmp_path, task):
    """The solution with only `task`'s blocks turned into the skeleton's raise."""
    folder = tmp_path / LAB
    shutil.copytree(SOLUTIONS_DIR / LAB, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for path in folder.glob("*.py"):
        def strip(m):
            if f"TODO({task})" not in m.group("body").splitlines()[0]:
                return m.group(0)
            return f'{m.group("indent")}raise NotImplementedError("TODO({task})")\n'
        path.write_text(BLOCK.sub(strip, path.read_text()))
    return folder


@pytest.mark.parametrize("task", list(load_lab(LAB).tasks))
def test_an_unfinished_task_costs_only_its_own_points(task, tmp_path):
    lab = load_lab(LAB)
    checks = [c for c in lab.checks if c.name != TRAINING_CHECK]
    results = grade(type(lab)(lab.name, lab.tasks, checks), without_task(tmp_path, task))
    for r in results:
        if r.task == task:
            assert r.status == "not implemented", r
        elif task in NEEDS_ALL.get(r.check, ()):
            assert r.status == "not implemented" and f"needs {task}" in r.message, r
        else:
            assert r.status == "passed", r


# ------------------------------------------------------ torchvision's weights, references

def randomized(module):
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)
    return module.eval()


def test_swin_t_layout_state_dict_loads_with_matching_logits():
    """A torchvision SwinTransformer with swin_t's key names (4 stages, patch 4, window 7),
    tiny widths, random weights: the lab's Swin gets the same logits, at two image sizes."""
    from torchvision.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    tv = randomized(SwinTransformer([4, 4], 8, [2, 2, 4, 2], [1, 2, 2, 4], [7, 7], num_classes=6,
                                    stochastic_depth_prob=0.0))
    swin = import_lab(SOLUTIONS_DIR / LAB).swin
    config = swin.config_from_torchvision(tv.state_dict())
    assert (config.embed_dim, config.depths, config.num_heads, config.window_size,
            config.patch_size, config.num_classes) == (8, (2, 2, 4, 2), (1, 2, 2, 4), 7, 4, 6)
    model = swin.load_torchvision_weights(swin.Swin(config), tv.state_dict()).eval()
    for size in (56, 40):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(model(x), tv(x), atol=1e-5, rtol=1e-4)
    bad = dict(tv.state_dict())
    bad.pop("features.1.0.norm1.weight")
    with pytest.raises(KeyError, match="lacks"):
        swin.load_torchvision_weights(swin.Swin(config), bad)


def test_convnext_tiny_layout_state_dict_loads_with_matching_logits():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    torch.manual_seed(0)
    tv = randomized(ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, 24, 1),
                              CNBlockConfig(24, 32, 3), CNBlockConfig(32, None, 1)], num_classes=6))
    convnext = import_lab(SOLUTIONS_DIR / LAB).convnext
    config = convnext.config_from_torchvision(tv.state_dict())
    assert (config.dims, config.depths, config.stem_size) == ((8, 16, 24, 32), (1, 1, 3, 1), 4)
    model = convnext.load_torchvision_weights(convnext.ConvNeXt(config), tv.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), atol=1e-5, rtol=1e-4)


def test_grader_references_agree_with_torchvision():
    """The grader's own float64 re-implementations (used to name mistakes) reproduce
    torchvision exactly when no mistake is asked for."""
    load_lab(LAB)
    checks = sys.modules["_vislab_autograder.swin_cnn"]
    g = torch.Generator().manual_seed(0)
    tv = checks.tv_swin_block(g, 8, 2, 4, 2)
    x = torch.randn(2, 8, 8, 8, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(checks.block_variant(tv, x, 2), tv(x.double()))
        attn = checks.tv_window_attention(g, 8, 2, 2)
        w = torch.randn(4, 4, 8, generator=g)
        torch.testing.assert_close(checks.window_attention_variant(attn, w),
                                   checks.WindowsAsImages(attn)(w.double()))
        tv = checks.tv_swin(g)
        x = torch.randn(2, 3, 16, 16, generator=g)
        torch.testing.assert_close(checks.swin_variant(tv, x), tv(x.double()))
        block = checks.tv_cn_block(g, 4)
        x = torch.randn(2, 4, 6, 6, generator=g)
        torch.testing.assert_close(checks.cn_variant(block, x), block(x.double()))


def test_the_distillation_loss_is_the_vit_labs():
    """distill.py ships the ViT lab's loss (a lab folder imports no other lab); both agree."""
    ours = import_lab(SOLUTIONS_DIR / LAB).distill.distillation_loss
    vit = import_lab(SOLUTIONS_DIR / "vit").distill.distillation_loss
    s, t = 3 * torch.randn(6, 10), 3 * torch.randn(6, 10)
    for T in (1.0, 4.0):
        torch.testing.assert_close(ours(s, t, T), vit(s, t, T))
    skeleton = (LABS_DIR / LAB / "distill.py").read_text()
    assert "def distillation_loss" in skeleton and "TODO(swin.distill)" in skeleton
    imports = [line for line in skeleton.splitlines() if line.startswith(("import ", "from "))]
    assert imports and not [line for line in imports if "vit" in line], imports


def test_classification_metrics_from_the_confusion_matrix():
    train = import_lab(SOLUTIONS_DIR / LAB).train
    counts = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # class 2: no images, no predictions
    m = train.classification_metrics(counts)
    assert m["accuracy"] == pytest.approx(8 / 11)
    assert m["micro_f1"] == pytest.approx(m["accuracy"])  # one label per image
    f1 = [2 * 5 / (10 + 2 + 1), 2 * 3 / (6 + 1 + 2), 0.0]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)



def test_gradcam_figures_take_one_image_per_class_in_turn():
    train = import_lab(SOLUTIONS_DIR / LAB).train
    labels = torch.tensor([0] * 5 + [1] * 5 + [2] * 5)  # sorted by class, like the test set
    mask = torch.ones(15, dtype=torch.bool)
    mask[5:10] = False  # no selected image of class 1
    picked = train.spread(mask, labels, 4)
    assert picked.tolist() == [0, 1, 10, 11]  # classes 0, 2, 0, 2: not the first four zeros
    assert train.spread(mask, labels, 50).tolist() == mask.nonzero().flatten().tolist()
    assert len(train.spread(torch.zeros(15, dtype=torch.bool), labels, 4)) == 0


# ----------------------------------------------------------------------- vislab train

def train(*argv):
    return main(["train", LAB, "--impl", "solutions", *argv])


@pytest.fixture
def small(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLAB_RUNS", str(tmp_path / "runs"))
    return ["--epochs", "1", "--per-class", "8", "--classes", "0-2"]


def test_train_each_model_writes_results_and_figures(tmp_path, small, capsys):
    out = tmp_path / "all"
    assert train("--model", "all", "--out", str(out), *small) == 0
    for kind in ("swin", "convnext", "resnet"):
        results = json.loads((out / kind / "results.json").read_text())
        for split in ("train", "val", "test"):
            assert set(results[split]) == {"accuracy", "micro_f1", "macro_f1"}
        assert 2.5e5 < results["params"] < 3.2e5
        for name in ("curves.png", "confusion.png", "gradcam_correct.png", "metrics.jsonl",
                     "checkpoint.pt"):
            assert (out / kind / name).exists(), (kind, name)
    assert (out / "comparison.png").exists()
    assert "| swin |" in (out / "comparison.md").read_text()
    assert "macro-F1" in capsys.readouterr().out


def test_train_the_five_norms(tmp_path, small):
    out = tmp_path / "norms"
    assert train("--model", "resnet", "--norm", "all", "--out", str(out), *small) == 0
    table = (out / "comparison.md").read_text()
    for norm in ("bn", "in", "bin", "ln", "gn"):
        assert f"| {norm} |" in table
        state = torch.load(out / norm / "checkpoint.pt", weights_only=True)
        assert state["meta"]["config"]["norm"] == norm
    assert "layer1.0.bn1.gate" in torch.load(out / "bin" / "checkpoint.pt", weights_only=True)["model"]


def test_distil_a_swin_from_a_vit_checkpoint_without_labels(tmp_path, small):
    teacher = tmp_path / "vit"
    assert main(["train", "vit", "--impl", "solutions", "--out", str(teacher), *small]) == 0
    out = tmp_path / "distilled"
    assert train("--teacher", str(teacher / "checkpoint.pt"), "--out", str(out), *small) == 0
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "train_agreement" in row and "train_acc" not in row  # the labels were not used


def test_finetune_from_a_torchvision_swin_state_dict_head_only(tmp_path, small):
    from torchvision.models.swin_transformer import SwinTransformer
    torch.manual_seed(0)
    tv = SwinTransformer([4, 4], 8, [2, 2], [1, 2], [4, 4], num_classes=1000)
    torch.save(tv.state_dict(), tmp_path / "swin_tiny.pth")
    out = tmp_path / "ft"
    assert train("--finetune", str(tmp_path / "swin_tiny.pth"), "--finetune-mode", "head",
                 "--out", str(out), *small) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["model"]["head.weight"].shape == (3, 16)
    torch.testing.assert_close(state["model"]["stages.1.0.attn.qkv.weight"],
                               tv.state_dict()["features.3.0.attn.qkv.weight"])  # frozen


def test_full_without_cifar_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "nothing"))
    assert train("--full", "--epochs", "1", "--out", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert "CIFAR-10" in err and "Traceback" not in err


@pytest.mark.parametrize("option", ["--teacher", "--finetune"])
def test_a_missing_checkpoint_is_named_before_the_data_loads(option, tmp_path, monkeypatch,
                                                             capsys):
    """--teacher / --finetune files are read first: with CIFAR-10 absent (loading it would
    fail with its own message), the missing checkpoint is what the one line names."""
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "nothing"))
    missing = tmp_path / "no-such.pt"
    assert train("--full", option, str(missing), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint at {missing}" in err and "CIFAR" not in err, err


def test_full_runs_on_a_cifar_layout_fixture(tmp_path, monkeypatch, small):
    """The --full path (3-channel 32 x 32 models, augmentation) on a CIFAR-10 fixture; the md5
    check torchvision does cannot pass on a fixture, so it is trusted inside this test only."""
    import pickle

    import numpy as np
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: __import__("os").path.isfile(fpath))
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (20, 3 * 32 * 32), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 20).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "data"))
    out = tmp_path / "cifar"
    assert train("--full", "--model", "swin", "--device", "cpu", "--epochs", "1",
                 "--out", str(out)) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["meta"]["config"]["in_channels"] == 3 and state["meta"]["config"]["image_size"] == 32


@pytest.mark.parametrize("argv, words", [
    (["--model", "all", "--norm", "all"], "pick one"),
    (["--norm", "gn"], "--model resnet"),
    (["--teacher", "/no/such.pt"], "no checkpoint at /no/such.pt"),
    (["--finetune", __file__], "as a PyTorch checkpoint"),
])
def test_train_usage_errors_are_one_line(argv, words, capsys):
    assert train(*argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


# --------------------------------------------------------------- with the student isolated

def test_checks_run_with_the_student_isolated(tmp_path):
    """The same checks through vislab.sandbox's worker process: the solution passes (the
    training check aside, for time), a mistake fails with its named message."""
    from vislab.sandbox import IsolatedStudent
    lab = load_lab(LAB)
    lab = type(lab)(lab.name, lab.tasks, [c for c in lab.checks if c.name != TRAINING_CHECK])
    with IsolatedStudent(SOLUTIONS_DIR / LAB) as student:
        results = grade(lab, SOLUTIONS_DIR / LAB, student=student)
    assert all(r.status == "passed" for r in results), [r for r in results if r.status != "passed"]
    task, file, edits, words = MISTAKES["window not rolled back"]
    folder = variant(tmp_path, LAB, {file: edits})
    with IsolatedStudent(folder) as student:
        row = summarize(lab, grade(lab, folder, task, student=student))[0]
    assert row["status"] == "failed" and words in row["message"], row
