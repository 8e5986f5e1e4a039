"""Probes for the ViT lab: run the student's modules on the grader's weights and inputs.

Each probe receives `lab` (the student's modules) and plain inputs, and returns plain values;
the checks in autograder/vit.py compare them with references. Nothing here is secret.
"""
import torch
import torch.nn as nn

from vislab.probing import (Forbid, ProbeFailed, forward_backward, gradients, load_weights,
                            returned, train_classifier)

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


def block(lab, dim, num_heads, mlp_dim, state, x, grad_out=None, own_parts=False,
          dropout=0.0, train=False, seed=0):
    """The student's Block (dropout rate `dropout`, train or eval mode); unless own_parts, with
    torch's attention and MLP (no dropout of their own) inside it, so that only the block's own
    wiring is graded."""
    m = lab.model.Block(dim, num_heads, mlp_dim, dropout)
    load_weights(m, state, "Block")
    if not own_parts:
        m.attn, m.mlp = _MHA(state, "attn.", num_heads), _MLP(state, "mlp.")
    m.train(train)
    torch.manual_seed(seed)
    return forward_backward(m, x, grad_out, "Block")


def model(lab, config, state, x, grad_out=None, own_parts=False, train=False, seed=0):
    """The student's ViT (train or eval mode); unless own_parts, with reference patch embedding
    and blocks (no dropout of their own) inside, so that only the model's own code (CLS,
    positions, dropout, norm, head) is graded."""
    m = lab.model.ViT(lab.model.ViTConfig(**config))
    load_weights(m, state, "ViT")
    if not own_parts:
        m.patch_embed = _PatchEmbed(state, config["patch_size"])
        m.blocks = nn.ModuleList([_Block(state, f"blocks.{i}.", config["num_heads"])
                                  for i in range(config["depth"])])
    m.train(train)
    torch.manual_seed(seed)
    return forward_backward(m, x, grad_out, "ViT")


def train_model(lab, config, x_train, y_train, seed, epochs, batch_size, lr):
    """Train the student's ViT (AdamW, warm-up then linear decay); return its trained weights.
    The grader loads them into its own reference ViT and tests it on images this process
    never sees."""
    torch.manual_seed(seed)
    m = lab.model.ViT(lab.model.ViTConfig(**config))
    train_classifier(m, "ViT", x_train, y_train, epochs, batch_size, lr)
    return {k: v for k, v in m.state_dict().items()}


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


def replace_head(lab, state, num_classes, x):
    """replace_head on a _TinyNet with the grader's weights; raw material only: what it
    returned, run on x (None if it is not a module), the net's state afterwards and the net's
    own output on x."""
    net = _TinyNet()
    net.load_state_dict(state)
    out = lab.finetune.replace_head(net, num_classes)
    net.eval()
    with torch.no_grad():
        returned_out = returned(out(x), "the model replace_head returned") \
            if isinstance(out, nn.Module) else None
        net_out = returned(net(x), "the model after replace_head")
    return {"returned_out": returned_out, "net_out": net_out,
            "state": {k: v for k, v in net.state_dict().items()}}


def trainable(lab, state, mode, x, y, lr):
    """Freeze per `mode`, take one SGD step (learning rate `lr`) on the returned parameters.

    Everything starts frozen, so the student's code must set requires_grad both ways. Raw
    material only: the values of the returned parameters (before the step), each parameter's
    gradient of the loss (None where none reached it) and the state after the step; the grader
    works out which parameters these are and what the step should have done."""
    net = _TinyNet()
    net.load_state_dict(state)
    net.requires_grad_(False)
    params = lab.finetune.trainable_parameters(net, mode)
    if not isinstance(params, (list, tuple)) and not hasattr(params, "__iter__"):
        raise ProbeFailed(f"trainable_parameters must return a list of parameters, "
                          f"got {type(params).__name__}")
    params = list(params)
    if not all(isinstance(p, torch.Tensor) for p in params):
        raise ProbeFailed("trainable_parameters must return the model's parameters (tensors), "
                          f"got {[type(p).__name__ for p in params][:3]}")
    values = [p.detach().clone() for p in params]
    loss = nn.functional.cross_entropy(net(x), y)
    if loss.requires_grad:  # nothing requires grad: the grader says which parameters are frozen
        loss.backward()
    if params and any(p.requires_grad for p in params):
        torch.optim.SGD([p for p in params if p.requires_grad], lr=lr).step()
    return {"returned": values, "grads": gradients(net),
            "state": {k: v for k, v in net.state_dict().items()}}
