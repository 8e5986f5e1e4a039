"""The ViT lab's checks: plausible mistakes lose points in the named task with a message that
helps, and correct code written differently gets full marks."""
import pytest
import torch

from conftest import by_task, grade_task
from vislab.grading import grade, load_lab, summarize


def grade_task_exact(folder, task) -> dict:
    """The task's row of the grade table without the seconds-long MNIST training check (every
    mistake below is caught by the exact checks; the alternatives keep it)."""
    lab = load_lab("vit")
    lab = type(lab)(lab.name, lab.tasks, [c for c in lab.checks if c.name != "trains_on_mnist5k"])
    rows = summarize(lab, grade(lab, folder, task))
    assert len(rows) == 1
    return rows[0]

# -------------------------------------------------------------------- plausible mistakes

QKV = """        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                        # each (B, H, N, d)
"""

MISTAKES = {
    # name: (task, file, old, new, words the message must contain)
    "patch tokens as (B, D, N)": (
        "vit.patch_embed", "model.py", "return x.flatten(2).transpose(1, 2)  # (B, N, D)",
        "return x.flatten(2)", "which is (B, D, N)"),
    "patches in column-major order": (
        "vit.patch_embed", "model.py", "return x.flatten(2).transpose(1, 2)  # (B, N, D)",
        "return x.transpose(2, 3).flatten(2).transpose(1, 2)", "column-major"),
    "ReLU instead of GELU": (
        "vit.mlp", "model.py", "F.gelu(self.fc1(x))", "F.relu(self.fc1(x))", "ReLU instead of GELU"),
    "tanh-approximate GELU": (
        "vit.mlp", "model.py", "F.gelu(self.fc1(x))", "F.gelu(self.fc1(x), approximate='tanh')",
        "tanh approximation"),
    "no dropout on the MLP's output": (
        "vit.mlp", "model.py", "return self.dropout(self.fc2(x))       # (B, N, D)",
        "return self.fc2(x)", "all zeros"),
    "dropout active in eval mode": (
        "vit.mlp", "model.py", "x = self.dropout(F.gelu(self.fc1(x)))",
        "x = F.dropout(F.gelu(self.fc1(x)), self.dropout.p)", "in eval mode too"),
    "missing 1/sqrt(d) scale": (
        "vit.attention", "model.py", " / math.sqrt(self.head_dim)", "", "1/sqrt(head_dim) scale"),
    "1/sqrt(D) scale": (
        "vit.attention", "model.py", " / math.sqrt(self.head_dim)", " / math.sqrt(D)",
        "1/sqrt(D) scale instead"),
    "softmax over the queries": (
        "vit.attention", "model.py", "attn = attn.softmax(dim=-1)", "attn = attn.softmax(dim=-2)",
        "softmax over the queries"),
    "heads split without transposing": (
        "vit.attention", "model.py", QKV,
        "        q, k, v = (t.reshape(B, self.num_heads, N, self.head_dim)"
        " for t in self.qkv(x).chunk(3, dim=-1))\n", "split by reshaping"),
    "heads merged without transposing": (
        "vit.attention", "model.py", "(attn @ v).transpose(1, 2).reshape(B, N, D)",
        "(attn @ v).reshape(B, N, D)", "merged by reshaping"),
    "switches the guard off and calls scaled_dot_product_attention": (
        "vit.attention", "model.py", "        attn = attn.softmax(dim=-1)\n"
        "        out = (attn @ v).transpose(1, 2).reshape(B, N, D)           # (B, N, D)",
        "        with torch._C.DisableTorchFunction():\n"
        "            out = F.scaled_dot_product_attention(q, k, v)\n"
        "        out = out.transpose(1, 2).reshape(B, N, D)",
        "without switching off the grader's guard; found model.py:"),
    "calls scaled_dot_product_attention": (
        "vit.attention", "model.py", "out = (attn @ v).transpose(1, 2).reshape(B, N, D)",
        "out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)",
        "called scaled_dot_product_attention"),
    "no residual around attention": (
        "vit.block", "model.py", "x = x + self.dropout(self.attn(self.norm1(x)))",
        "x = self.dropout(self.attn(self.norm1(x)))", "no residual around attention"),
    "post-norm block": (
        "vit.block", "model.py",
        "x = x + self.dropout(self.attn(self.norm1(x)))  # (B, N, D)\n"
        "        return x + self.mlp(self.norm2(x))",
        "x = self.norm1(x + self.dropout(self.attn(x)))\n"
        "        return self.norm2(x + self.mlp(x))", "post-norm"),
    "CLS token appended last": (
        "vit.model", "model.py", "torch.cat([cls, tokens], dim=1) + self.pos_embed   # (B, N+1, D)",
        "torch.cat([tokens, cls], dim=1) + self.pos_embed", "CLS token appended after the patches"),
    "no position embedding": (
        "vit.model", "model.py", "torch.cat([cls, tokens], dim=1) + self.pos_embed   # (B, N+1, D)",
        "torch.cat([cls, tokens], dim=1)", "no position embedding"),
    "mean pooling instead of CLS": (
        "vit.model", "model.py", "self.head(self.norm(x)[:, 0])", "self.head(self.norm(x).mean(1))",
        "mean of all tokens"),
    "position embedding not trained": (
        "vit.model", "model.py", "torch.cat([cls, tokens], dim=1) + self.pos_embed   # (B, N+1, D)",
        "torch.cat([cls, tokens], dim=1) + self.pos_embed.detach()", "pos_embed got no gradient"),
    "KD without T^2": (
        "vit.distill", "distill.py", "return kl * temperature**2", "return kl", "without the T^2"),
    "KD in the reversed direction": (
        "vit.distill", "distill.py", "kl = (log_p.exp() * (log_p - log_q))",
        "kl = (log_q.exp() * (log_q - log_p))", "reversed direction"),
    "KD averaged over classes": (
        "vit.distill", "distill.py", "kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()",
        "kl = (log_p.exp() * (log_p - log_q)).mean()", "reduction='mean'"),
    "teacher not detached": (
        "vit.distill", "distill.py", "teacher_logits.detach() / temperature",
        "teacher_logits / temperature", "detach them"),
    "head mode freezes nothing": (
        "vit.finetune", "finetune.py", "p.requires_grad_(mode == \"full\" or id(p) in head)",
        "p.requires_grad_(True)", "should return the head's parameters"),
    "replace_head returns nothing": (
        "vit.finetune", "finetune.py",
        "model.head = nn.Linear(model.head.in_features, num_classes)\n    return model",
        "model.head = nn.Linear(model.head.in_features, num_classes)", "must return the model"),
    # found by review (issue 11, item 5): settings the defaults never use
    "patch tokens counted from H alone (square images only)": (
        "vit.patch_embed", "model.py", "return x.flatten(2).transpose(1, 2)  # (B, N, D)",
        "return x.reshape(x.shape[0], x.shape[1], x.shape[2] ** 2).transpose(1, 2)", "shape"),
    "MLP without the dropout after GELU": (
        "vit.mlp", "model.py", "x = self.dropout(F.gelu(self.fc1(x)))", "x = F.gelu(self.fc1(x))",
        "never dropped"),
    "MLP with the dropout before GELU": (
        "vit.mlp", "model.py", "x = self.dropout(F.gelu(self.fc1(x)))",
        "x = F.gelu(self.dropout(self.fc1(x)))", "each hidden unit should be"),
    "MLP with a hard-coded dropout rate": (
        "vit.mlp", "model.py", "return self.dropout(self.fc2(x))       # (B, N, D)",
        "return F.dropout(self.fc2(x), 0.1, self.training)", "should output all zeros"),
    "MLP that returns zeros": (
        "vit.mlp", "model.py", "return self.dropout(self.fc2(x))       # (B, N, D)",
        "return torch.zeros_like(self.fc2(x))", "MLP output in eval mode"),
    "attention without the output projection": (
        "vit.attention", "model.py", "        return self.proj(out)\n        ### END SOLUTION",
        "        return out\n        ### END SOLUTION", "no output projection"),
    "Block without dropout on the attention branch": (
        "vit.block", "model.py", "x = x + self.dropout(self.attn(self.norm1(x)))",
        "x = x + self.attn(self.norm1(x))", "no dropout on the attention branch"),
    "Block with self.dropout on the MLP branch too": (
        "vit.block", "model.py", "return x + self.mlp(self.norm2(x))               # (B, N, D)",
        "return x + self.dropout(self.mlp(self.norm2(x)))", "on the MLP branch too"),
    "Block dropout active in eval mode": (
        "vit.block", "model.py", "x = x + self.dropout(self.attn(self.norm1(x)))",
        "x = x + F.dropout(self.attn(self.norm1(x)), self.dropout.p)", "Block output in eval mode"),
    "Block with F.layer_norm's default eps": (
        "vit.block", "model.py", "x = x + self.dropout(self.attn(self.norm1(x)))",
        "x = x + self.dropout(self.attn(F.layer_norm(x, x.shape[-1:], self.norm1.weight, "
        "self.norm1.bias)))", "F.layer_norm's default"),
    "ViT's final norm with F.layer_norm's default eps": (
        "vit.model", "model.py", "self.head(self.norm(x)[:, 0])",
        "self.head(F.layer_norm(x, x.shape[-1:], self.norm.weight, self.norm.bias)[:, 0])",
        "F.layer_norm's default"),
    "ViT without the dropout after the position embedding": (
        "vit.model", "model.py", "        x = self.dropout(x)\n", "",
        "no dropout after adding the position embedding"),
    "ViT dropout active in eval mode": (
        "vit.model", "model.py", "        x = self.dropout(x)\n", "        x = F.dropout(x, self.dropout.p)\n",
        "ViT logits in eval mode"),
    "trainable_parameters leaves the head frozen": (
        "vit.finetune", "finetune.py",
        "        p.requires_grad_(mode == \"full\" or id(p) in head)\n"
        "    return [p for p in model.parameters() if p.requires_grad]",
        "        p.requires_grad_(mode == \"full\")\n"
        "    return list(model.parameters()) if mode == \"full\" else list(model.head.parameters())",
        "got no gradient"),
    "replace_head on a copy of the model": (
        "vit.finetune", "finetune.py",
        "    model.head = nn.Linear(model.head.in_features, num_classes)",
        "    model = __import__('copy').deepcopy(model)\n"
        "    model.head = nn.Linear(model.head.in_features, num_classes)", "the new head's weight"),
}


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, make_variant):
    task, file, old, new, words = MISTAKES[name]
    row = grade_task_exact(make_variant("vit", {file: [(old, new)]}), task)
    assert row["status"] in ("failed", "error"), row
    assert row["earned"] < row["possible"]
    assert words in row["message"], row["message"]


# ------------------------------------------------------------ correct, written differently

ALTERNATIVES = {
    "patch embedding with unfold": ("vit.patch_embed", "model.py", [(
        """        x = self.proj(x)                     # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)""",
        """        patches = F.unfold(x, self.patch_size, stride=self.patch_size)  # (B, C*P*P, N)
        weight = self.proj.weight.flatten(1)                            # (D, C*P*P)
        return patches.transpose(1, 2) @ weight.T + self.proj.bias""")]),
    "patch embedding with reshape and einsum": ("vit.patch_embed", "model.py", [(
        """        x = self.proj(x)                     # (B, D, H/P, W/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)""",
        """        B, C, H, W = x.shape
        P = self.patch_size
        x = x.reshape(B, C, H // P, P, W // P, P)
        out = torch.einsum("bchpwq,dcpq->bhwd", x, self.proj.weight) + self.proj.bias
        return out.reshape(B, -1, out.shape[-1])""")]),
    "MLP with nn.GELU and a second dropout call": ("vit.mlp", "model.py", [(
        """        x = self.dropout(F.gelu(self.fc1(x)))  # (B, N, hidden)
        return self.dropout(self.fc2(x))       # (B, N, D)""",
        """        hidden = nn.GELU()(self.fc1(x))
        hidden = self.dropout(hidden)
        out = self.fc2(hidden)
        return self.dropout(out)""")]),
    "attention with einsum and chunk": ("vit.attention", "model.py", [(
        QKV + """        attn = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, N, N)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)           # (B, N, D)""",
        """        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.view(B, N, self.num_heads, self.head_dim) for t in (q, k, v))
        scores = torch.einsum("bqhd,bkhd->bhqk", q * self.head_dim**-0.5, k)
        weights = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(B, N, D)""")]),
    "attention with sliced weights and a loop over heads": ("vit.attention", "model.py", [(
        QKV + """        attn = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, N, N)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)           # (B, N, D)""",
        """        W, b = self.qkv.weight, self.qkv.bias
        q, k, v = (F.linear(x, W[i * D:(i + 1) * D], b[i * D:(i + 1) * D]) for i in range(3))
        heads = []
        for h in range(self.num_heads):
            s = slice(h * self.head_dim, (h + 1) * self.head_dim)
            scores = q[..., s] @ k[..., s].transpose(1, 2) / self.head_dim**0.5
            heads.append(F.softmax(scores, dim=2) @ v[..., s])
        out = torch.cat(heads, dim=-1)""")]),
    "block with named intermediates": ("vit.block", "model.py", [(
        """        x = x + self.dropout(self.attn(self.norm1(x)))  # (B, N, D)
        return x + self.mlp(self.norm2(x))               # (B, N, D)""",
        """        attended = self.dropout(self.attn(self.norm1(x)))
        x = attended + x
        return self.mlp(self.norm2(x)).add(x)""")]),
    "model with positions added to CLS and patches apart": ("vit.model", "model.py", [(
        """        cls = self.cls_token.expand(tokens.shape[0], -1, -1)   # (B, 1, D)
        x = torch.cat([cls, tokens], dim=1) + self.pos_embed   # (B, N+1, D)""",
        """        cls = (self.cls_token + self.pos_embed[:, :1]).repeat(len(tokens), 1, 1)
        x = torch.cat([cls, tokens + self.pos_embed[:, 1:]], dim=1)""")]),
    "distillation with F.kl_div": ("vit.distill", "distill.py", [(
        """    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()
    return kl * temperature**2""",
        """    p = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    return F.kl_div(log_q, p, reduction="batchmean") * temperature * temperature""")]),
    "Block and ViT with functional dropout": ("vit.block", "model.py", [(
        "x = x + self.dropout(self.attn(self.norm1(x)))  # (B, N, D)",
        "x = F.dropout(self.attn(self.norm1(x)), self.dropout.p, self.training) + x"), (
        "        x = self.dropout(x)\n",
        "        x = F.dropout(x, p=self.dropout.p, training=self.training)\n")]),
    "Block and ViT with F.layer_norm and the norms' own eps": ("vit.model", "model.py", [(
        "x = x + self.dropout(self.attn(self.norm1(x)))  # (B, N, D)",
        "n1 = self.norm1\n"
        "        x = x + self.dropout(self.attn(F.layer_norm(x, n1.normalized_shape, n1.weight, "
        "n1.bias, n1.eps)))"), (
        "self.head(self.norm(x)[:, 0])",
        "self.head(F.layer_norm(x[:, 0], (x.shape[-1],), self.norm.weight, self.norm.bias, "
        "eps=self.norm.eps))")]),
    "MLP with functional dropout and nn.GELU": ("vit.mlp", "model.py", [(
        """        x = self.dropout(F.gelu(self.fc1(x)))  # (B, N, hidden)
        return self.dropout(self.fc2(x))       # (B, N, D)""",
        """        p = self.dropout.p
        h = F.dropout(nn.GELU(approximate="none")(self.fc1(x)), p, self.training)
        return F.dropout(F.linear(h, self.fc2.weight, self.fc2.bias), p, self.training)""")]),
    "new head matched to the old one's dtype and device": ("vit.finetune", "finetune.py", [(
        "    model.head = nn.Linear(model.head.in_features, num_classes)",
        "    old = model.head\n"
        "    model.head = nn.Linear(old.weight.shape[1], num_classes, bias=True).to(old.weight)")]),
    "fine-tuning by parameter names": ("vit.finetune", "finetune.py", [(
        """    head = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        p.requires_grad_(mode == "full" or id(p) in head)
    return [p for p in model.parameters() if p.requires_grad]""",
        """    params = []
    for name, p in model.named_parameters():
        p.requires_grad = mode == "full" or name.startswith("head.")
        if p.requires_grad:
            params.append(p)
    return tuple(params)""")]),
    "fine-tuning with a requires_grad loop": ("vit.finetune", "finetune.py", [(
        """    head = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        p.requires_grad_(mode == "full" or id(p) in head)
    return [p for p in model.parameters() if p.requires_grad]""",
        """    for p in model.parameters():
        p.requires_grad = mode == "full"
    for p in model.head.parameters():
        p.requires_grad = True
    return list(model.parameters()) if mode == "full" else list(model.head.parameters())""")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, make_variant):
    task, file, edits = ALTERNATIVES[name]
    row = grade_task("vit", make_variant("vit", {file: edits}), task)
    assert row["status"] == "passed", row
    assert row["earned"] == row["possible"]


# ------------------------------------------------- the lab's mapping of torchvision weights

def test_load_torchvision_weights_gives_torchvision_logits():
    """The solution's ViT with torchvision's weights (mapped by the lab's own function)
    computes torchvision's logits: how a student fine-tunes vit_b_16's weights."""
    from torchvision.models import VisionTransformer

    from vislab import SOLUTIONS_DIR
    from vislab.impl import import_lab

    model_py = import_lab(SOLUTIONS_DIR / "vit").model
    torch.manual_seed(0)
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=4,
                           hidden_dim=64, mlp_dim=96, num_classes=7).eval()
    with torch.no_grad():
        for p in tv.parameters():
            p.add_(0.1 * torch.randn_like(p))  # no zero head or class token to hide behind
    config = model_py.ViTConfig(image_size=32, patch_size=8, in_channels=3, num_classes=7,
                                dim=64, depth=3, num_heads=4, mlp_dim=96)
    ours = model_py.load_torchvision_weights(model_py.ViT(config), tv.state_dict()).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5, rtol=1e-5)

    deeper = model_py.ViT(model_py.ViTConfig(**{**config.__dict__, "depth": 2}))
    with pytest.raises(KeyError, match="weights this ViT has no place for"):
        model_py.load_torchvision_weights(deeper, tv.state_dict())
    wider = model_py.ViT(model_py.ViTConfig(**{**config.__dict__, "mlp_dim": 64}))
    with pytest.raises(ValueError, match="make the configs agree"):
        model_py.load_torchvision_weights(wider, tv.state_dict())


# ------------------------------------------------------------------------- vislab train vit

@pytest.mark.parametrize("option", ["--teacher", "--finetune"])
def test_a_missing_checkpoint_is_named_before_the_data_loads(option, tmp_path, monkeypatch,
                                                             capsys):
    """--teacher / --finetune files are read first: with full MNIST absent (loading it would
    fail with its own message), the missing checkpoint is what the one line names."""
    from vislab.cli import main
    monkeypatch.setenv("VISLAB_DATA", str(tmp_path / "nothing"))
    missing = tmp_path / "no-such.pt"
    assert main(["train", "vit", "--impl", "solutions", "--full", option, str(missing),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"no checkpoint at {missing}" in err and "Traceback" not in err, err


# -------------------------------------------------------------- attention.png and the plots

def test_attention_png_reads_your_attention(tmp_path):
    """attention.png's weights come from the lab's own Attention (its softmax as it runs), so a
    student's bug shows in the figure: softmax over the queries gives columns summing to 1."""
    import math

    from conftest import variant
    from vislab import SOLUTIONS_DIR
    from vislab.impl import import_lab

    lab = import_lab(SOLUTIONS_DIR / "vit")
    torch.manual_seed(0)
    attn = lab.model.Attention(16, 4)
    x = torch.randn(2, 5, 16)
    q, k, _ = attn.qkv(x).reshape(2, 5, 3, 4, 4).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) / math.sqrt(4)                     # (B, H, N, N)
    with torch.no_grad():
        torch.testing.assert_close(lab.train.attention_weights(attn, x), scores.softmax(-1).mean(1))
    buggy = import_lab(variant(tmp_path, "vit", {"model.py": [
        ("attn = attn.softmax(dim=-1)", "attn = attn.softmax(dim=-2)")]}))
    wrong = buggy.model.Attention(16, 4)
    wrong.load_state_dict(attn.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(buggy.train.attention_weights(wrong, x), scores.softmax(-2).mean(1))
    loop = import_lab(variant(tmp_path / "loop", "vit", {"model.py": ALTERNATIVES[
        "attention with sliced weights and a loop over heads"][2]}))
    per_head = loop.model.Attention(16, 4)
    per_head.load_state_dict(attn.state_dict())
    with torch.no_grad():  # one softmax per head: averaged all the same
        torch.testing.assert_close(loop.train.attention_weights(per_head, x), scores.softmax(-1).mean(1))


def test_heat_map_grids_have_square_panels_and_a_colour_bar(tmp_path, monkeypatch):
    from vislab import plots
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.overlay_grid(torch.rand(3, 1, 8, 8), torch.rand(3, 8, 8), ["a", "b", "c"],
                       tmp_path / "grid.png", colorbar_label="weight")
    fig = figures.pop()
    panels, bars = fig.axes[:6], fig.axes[6:]
    assert len(bars) == 1 and bars[0].get_ylabel() == "weight"
    assert all(ax.get_box_aspect() == 1 for ax in panels)
    plots.curves([{"epoch": e, "train_loss": 1.0 / e} for e in (1, 2, 3)], tmp_path / "c.png")
    ticks = figures.pop().axes[0].xaxis.get_major_locator()
    assert type(ticks).__name__ == "MaxNLocator" and ticks._integer
    plt = plots.plt
    plt.close("all")


def test_finetuning_with_a_frozen_head_says_what_to_fix(tmp_path, monkeypatch, capsys):
    """A trainable_parameters that leaves the head frozen: one line naming the task, not
    torch's 'element 0 of tensors does not require grad'."""
    from conftest import variant
    from vislab.cli import main
    monkeypatch.setenv("VISLAB_RUNS", str(tmp_path / "runs"))
    small = ["--epochs", "1", "--per-class", "4", "--classes", "0-2"]
    assert main(["train", "vit", "--impl", "solutions", "--out", str(tmp_path / "pre"), *small]) == 0
    frozen = variant(tmp_path, "vit", {"finetune.py": [(
        "p.requires_grad_(mode == \"full\" or id(p) in head)", "p.requires_grad_(mode == \"full\")")]})
    capsys.readouterr()
    assert main(["train", "vit", "--impl", str(frozen), "--finetune",
                 str(tmp_path / "pre" / "checkpoint.pt"), "--finetune-mode", "head",
                 "--out", str(tmp_path / "ft"), *small]) == 2
    err = capsys.readouterr().err
    assert "vit.finetune" in err and "Traceback" not in err, err
