"""Probes for the ViT lab: run the student's modules on the grader's weights and inputs.

Each probe receives `lab` (the student's modules) and plain inputs, and returns plain values;
the checks in autograder/vit.py compare them with references. Nothing here is secret.
"""
import torch
import torch.nn as nn

from vislab.probing import (Forbid, ProbeFailed, forward_backward, load_weights, returned,
                            train_classifier)

ATTENTION_BUILTINS = {"scaled_dot_product_attention", "multi_head_attention_forward",
                      "_native_multi_head_attention"}


def patch_embed(lab, config, state, x, grad_out=None):
    m = lab.model.PatchEmbed(config["image_size"], config["patch_size"], config["in_channels"],
                             config["dim"])
    load_weights(m, state, "PatchEmbed")
    return forward_backward(m, x, grad_out, "PatchEmbed")


def mlp(lab, dim, hidden_dim, dropout, state, x, train=False, seed=0):
    m = lab.model.MLP(dim, hidden_dim, dropout)
    load_weights(m, state, "MLP")
    m.train(train)
    torch.manual_seed(seed)
    return {"out": returned(m(x), "MLP"), "again": returned(m(x), "MLP")}


def attention(lab, dim, num_heads, state, x, grad_out=None):
    m = lab.model.Attention(dim, num_heads)
    load_weights(m, state, "Attention")
    with Forbid("vit.attention", ATTENTION_BUILTINS):
        return forward_backward(m, x, grad_out, "Attention")


class _MHA(nn.Module):
    """torch's nn.MultiheadAttention standing in for the lab's Attention, same weights."""

    def __init__(self, state: dict, prefix: str, num_heads: int):
        super().__init__()
        dim = state[prefix + "proj.weight"].shape[0]
        self.mha = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.mha.load_state_dict({
            "in_proj_weight": state[prefix + "qkv.weight"], "in_proj_bias": state[prefix + "qkv.bias"],
            "out_proj.weight": state[prefix + "proj.weight"],
            "out_proj.bias": state[prefix + "proj.bias"]})

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


class _MLP(nn.Sequential):
    """Linear -> GELU -> Linear standing in for the lab's MLP, same weights."""

    def __init__(self, state: dict, prefix: str):
        fc1 = nn.Linear(*reversed(state[prefix + "fc1.weight"].shape))
        fc2 = nn.Linear(*reversed(state[prefix + "fc2.weight"].shape))
        super().__init__(fc1, nn.GELU(), fc2)
        for name, layer in (("fc1", fc1), ("fc2", fc2)):
            layer.load_state_dict({"weight": state[f"{prefix}{name}.weight"],
                                   "bias": state[f"{prefix}{name}.bias"]})


class _Block(nn.Module):
    """A reference pre-norm block standing in for the lab's Block, same weights."""

    def __init__(self, state: dict, prefix: str, num_heads: int):
        super().__init__()
        dim = state[prefix + "norm1.weight"].shape[0]
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        for name in ("norm1", "norm2"):
            getattr(self, name).load_state_dict({"weight": state[f"{prefix}{name}.weight"],
                                                 "bias": state[f"{prefix}{name}.bias"]})
        self.attn = _MHA(state, prefix + "attn.", num_heads)
        self.mlp = _MLP(state, prefix + "mlp.")

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    """Conv patches standing in for the lab's PatchEmbed, same weights."""

    def __init__(self, state: dict, patch_size: int):
        super().__init__()
        self.weight, self.bias = state["patch_embed.proj.weight"], state["patch_embed.proj.bias"]
        self.patch_size = patch_size

    def forward(self, x):
        x = nn.functional.conv2d(x, self.weight, self.bias, stride=self.patch_size)
        return x.flatten(2).transpose(1, 2)


def block(lab, dim, num_heads, mlp_dim, state, x, grad_out=None, own_parts=False):
    """The student's Block; unless own_parts, with torch's attention and MLP inside it, so
    that only the block's own wiring is graded."""
    m = lab.model.Block(dim, num_heads, mlp_dim, 0.0)
    load_weights(m, state, "Block")
    if not own_parts:
        m.attn, m.mlp = _MHA(state, "attn.", num_heads), _MLP(state, "mlp.")
    return forward_backward(m, x, grad_out, "Block")


def model(lab, config, state, x, grad_out=None, own_parts=False):
    """The student's ViT; unless own_parts, with reference patch embedding and blocks inside,
    so that only the model's own code (CLS, positions, norm, head) is graded."""
    m = lab.model.ViT(lab.model.ViTConfig(**config))
    load_weights(m, state, "ViT")
    if not own_parts:
        m.patch_embed = _PatchEmbed(state, config["patch_size"])
        m.blocks = nn.ModuleList([_Block(state, f"blocks.{i}.", config["num_heads"])
                                  for i in range(config["depth"])])
    return forward_backward(m, x, grad_out, "ViT")


def train_model(lab, config, x_train, y_train, x_test, seed, epochs, batch_size, lr):
    """Train the student's ViT (AdamW, warm-up then linear decay); return its predicted
    classes on x_test."""
    torch.manual_seed(seed)
    m = lab.model.ViT(lab.model.ViTConfig(**config))
    return train_classifier(m, "ViT", x_train, y_train, x_test, epochs, batch_size, lr)


def distill(lab, student_logits, teacher_logits, temperature):
    s = student_logits.clone().requires_grad_()
    t = teacher_logits.clone().requires_grad_()
    loss = returned(lab.distill.distillation_loss(s, t, temperature), "distillation_loss")
    if loss.requires_grad:
        loss.backward()
    return {"loss": loss, "student_grad": s.grad, "teacher_grad": t.grad}


class _TinyNet(nn.Module):
    """A stand-in for a trained network: a body and a `head`, as in the ViT."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


def replace_head(lab, state, num_classes):
    net = _TinyNet()
    net.load_state_dict(state)
    old_head = net.head
    out = lab.finetune.replace_head(net, num_classes)
    return {"returned_model": out is net, "head_is_linear": type(net.head) is nn.Linear,
            "head_is_new": net.head is not old_head,
            "state": {k: v for k, v in net.state_dict().items()}}


def trainable(lab, state, mode, x, y):
    """Freeze per `mode`, take one SGD step on the returned parameters; report what changed.

    Everything starts frozen, so the student's code must set requires_grad both ways."""
    net = _TinyNet()
    net.load_state_dict(state)
    net.requires_grad_(False)
    params = lab.finetune.trainable_parameters(net, mode)
    if not isinstance(params, (list, tuple)) and not hasattr(params, "__iter__"):
        raise ProbeFailed(f"trainable_parameters must return a list of parameters, "
                          f"got {type(params).__name__}")
    params = list(params)
    names = {id(p): n for n, p in net.named_parameters()}
    returned_names = sorted(names.get(id(p), "<not a parameter of the model>") for p in params)
    requires = {n: p.requires_grad for n, p in net.named_parameters()}
    if params:
        opt = torch.optim.SGD(params, lr=0.1)
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    got_grad = {n: p.grad is not None for n, p in net.named_parameters()}
    return {"returned": returned_names, "requires_grad": requires, "got_grad": got_grad,
            "state": {k: v for k, v in net.state_dict().items()}}
