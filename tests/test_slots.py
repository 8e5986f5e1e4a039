"""The Slot Attention lab's checks: plausible mistakes lose points in the named task with a
message that helps, correct code written differently gets full marks; and the lab's model
matches a maintained implementation (lucidrains' slot-attention package) with copied weights."""
import pytest
import torch
from conftest import by_task


INIT = """        noise = torch.randn(batch_size, self.num_slots, self.dim,
                            device=self.slots_mu.device, dtype=self.slots_mu.dtype)  # (B, K, D)
        return self.slots_mu + self.slots_log_sigma.exp() * noise                   # (B, K, D)"""

STEP = """        q = self.to_q(self.norm_slots(slots))                   # (B, K, D)
        logits = q @ k.transpose(1, 2) / D**0.5                 # (B, K, N)
        attn = logits.softmax(dim=1)                            # (B, K, N), sums to 1 over K
        weights = attn + self.eps
        weights = weights / weights.sum(dim=-1, keepdim=True)   # (B, K, N), sums to 1 over N
        updates = weights @ v                                   # (B, K, D)
        slots = self.gru(updates.reshape(B * K, D), slots.reshape(B * K, D)).reshape(B, K, D)"""

DECODE = """        x = slots.reshape(B * K, 1, 1, D).expand(-1, h, w, -1)     # (B*K, h, w, D)
        x = self.pos(x).permute(0, 3, 1, 2)                         # (B*K, D, h, w)
        x = self.convs(x)                                           # (B*K, C+1, H, W)
        x = x.reshape(B, K, *x.shape[1:])                           # (B, K, C+1, H, W)
        rgb, alpha = x.split([self.out_channels, 1], dim=2)         # (B, K, C | 1, H, W)
        masks = alpha.softmax(dim=1)                                # (B, K, 1, H, W)
        return (masks * rgb).sum(dim=1), masks, rgb"""

MISTAKES = {
    # name: (task, file, old, new, words the message must contain)
    "grid x and y swapped": (
        "slots.position_embed", "model.py", "torch.stack([x, y, 1 - x, 1 - y], dim=-1)",
        "torch.stack([y, x, 1 - y, 1 - x], dim=-1)", "x and y swapped"),
    "grid in [-1, 1]": (
        "slots.position_embed", "model.py", "torch.stack([x, y, 1 - x, 1 - y], dim=-1)",
        "torch.stack([2 * x - 1, 2 * y - 1, 1 - x, 1 - y], dim=-1)", "build_grid"),
    "embedding added after flattening, grid in the wrong orientation": (
        "slots.position_embed", "model.py", "return x + self.proj(grid)                       # (B, H, W, D)",
        "B, H, W, E = x.shape\n        return (x.flatten(1, 2) + self.proj(grid.transpose(0, 1)"
        ".reshape(-1, 4))).reshape(B, H, W, E)", "column by column"),
    "grid left in float32 for a float64 input": (
        "slots.position_embed", "model.py", "grid = build_grid(x.shape[1], x.shape[2]).to(x)",
        "grid = build_grid(x.shape[1], x.shape[2])", "x's dtype"),
    "torch.normal for the initial slots": (
        "slots.init", "model.py", INIT,
        "        shape = (batch_size, self.num_slots, self.dim)\n"
        "        return torch.normal(self.slots_mu.expand(shape), self.slots_log_sigma.exp().expand(shape))",
        "torch.normal"),
    "sigma = log_sigma": (
        "slots.init", "model.py", "self.slots_mu + self.slots_log_sigma.exp() * noise",
        "self.slots_mu + self.slots_log_sigma * noise", "exp(log_sigma)"),
    "one noise draw shared by the batch": (
        "slots.init", "model.py", "dtype=self.slots_mu.dtype)  # (B, K, D)",
        "dtype=self.slots_mu.dtype)[:1].expand(batch_size, -1, -1)", "same slot twice"),
    "softmax over the inputs": (
        "slots.attention", "model.py", "attn = logits.softmax(dim=1) ", "attn = logits.softmax(dim=2) ",
        "softmax over the inputs"),
    "no renormalisation over the inputs": (
        "slots.attention", "model.py",
        "        weights = weights / weights.sum(dim=-1, keepdim=True)   # (B, K, N), sums to 1 over N\n",
        "", "no renormalisation"),
    "no LayerNorm on the slots before q": (
        "slots.attention", "model.py", "q = self.to_q(self.norm_slots(slots))", "q = self.to_q(slots)",
        "no LayerNorm on the slots"),
    "no residual MLP": (
        "slots.attention", "model.py", "slots = slots + self.mlp(self.norm_mlp(slots))",
        "slots = self.mlp(self.norm_mlp(slots))", "no residual"),
    "no 1/sqrt(D)": (
        "slots.attention", "model.py", "logits = q @ k.transpose(1, 2) / D**0.5",
        "logits = q @ k.transpose(1, 2)", "1/sqrt(D)"),
    "GRU input and hidden swapped": (
        "slots.attention", "model.py", "self.gru(updates.reshape(B * K, D), slots.reshape(B * K, D))",
        "self.gru(slots.reshape(B * K, D), updates.reshape(B * K, D))", "swapped"),
    "renormalised weights returned as the attention": (
        "slots.attention", "model.py", "        return slots, attn\n        ### END SOLUTION\n\n    def forward",
        "        return slots, weights\n        ### END SOLUTION\n\n    def forward", "renormalised weights"),
    "inputs not LayerNormed": (
        "slots.attention", "model.py", "x = self.norm_inputs(inputs)", "x = inputs", "not LayerNormed"),
    "one iteration too many": (
        "slots.attention", "model.py", "for _ in range(self.iters):", "for _ in range(self.iters + 1):",
        "iterations instead of T"),
    "attention detached": (
        "slots.attention", "model.py", "updates = weights @ v ", "updates = weights.detach() @ v ",
        "gradient"),
    "masks softmaxed over the pixels": (
        "slots.decoder", "model.py", "masks = alpha.softmax(dim=1) ",
        "masks = alpha.flatten(3).softmax(-1).reshape(alpha.shape) ", "over the pixels"),
    "sigmoid masks": (
        "slots.decoder", "model.py", "masks = alpha.softmax(dim=1) ", "masks = alpha.sigmoid() ",
        "sigmoid"),
    "decoder without the position embedding": (
        "slots.decoder", "model.py", "x = self.pos(x).permute(0, 3, 1, 2) ", "x = x.permute(0, 3, 1, 2) ",
        "no position embedding"),
    "pairs counted as m^2 / 2": (
        "slots.ari", "metrics.py", "return m * (m - 1) / 2", "return m * m / 2", "squared"),
    "degenerate cases give 0": (
        "slots.ari", "metrics.py", "return torch.where(denominator == 0, 1.0, ari)", "return ari",
        "degenerate"),
    "foreground ARI with the background kept": (
        "slots.ari", "metrics.py", "adjusted_rand_index(true_ids, pred_ids, weights=true_ids != background)",
        "adjusted_rand_index(true_ids, pred_ids)", "background pixels kept"),
    "library ordered slot-major": (
        "slots.library", "library.py", "return torch.cat(slots).flatten(0, 1)",
        "return torch.cat(slots).transpose(0, 1).flatten(0, 1)", "slot-major"),
    "library built with gradients on": (
        "slots.library", "library.py", "@torch.no_grad()\ndef build_library", "def build_library",
        "torch.no_grad"),
    "sampling from the global generator": (
        "slots.library", "library.py", "chosen = torch.randperm(len(clusters), generator=generator)",
        "chosen = torch.randperm(len(clusters))", "seeded alike"),
    "clusters drawn with replacement": (
        "slots.library", "library.py", "torch.randperm(len(clusters), generator=generator)[:num_slots]",
        "torch.randint(len(clusters), (num_slots,), generator=generator)", "two slots from one cluster"),
    "always the cluster's first member": (
        "slots.library", "library.py",
        "members[c][torch.randint(len(members[c]), (1,), generator=generator)]", "members[c][:1]",
        "not always the same one"),
}


def grade_fast(folder, task):
    """The task's row, without the training check (it takes seconds; tested once below)."""
    from vislab.grading import grade, load_lab, summarize

    lab = load_lab("slots")
    fast = type(lab)(lab.name, lab.tasks, [c for c in lab.checks if c.name != "learns_to_reconstruct"])
    rows = summarize(fast, grade(fast, folder, task))
    return rows[0]


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, make_variant):
    task, file, old, new, words = MISTAKES[name]
    row = grade_fast(make_variant("slots", {file: [(old, new)]}), task)
    assert row["status"] == "failed", row
    assert row["earned"] < row["possible"]
    assert words in row["message"], row["message"]


# ------------------------------------------------------------ correct, written differently

ALTERNATIVES = {
    "grid from arange and meshgrid(indexing='xy')": ("slots.position_embed", "model.py", [(
        """    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width),
                          indexing="ij")                      # each (H, W)
    return torch.stack([x, y, 1 - x, 1 - y], dim=-1)          # (H, W, 4)""",
        """    xs = torch.arange(width, dtype=torch.float32) / (width - 1)
    ys = torch.arange(height, dtype=torch.float32) / (height - 1)
    x, y = torch.meshgrid(xs, ys, indexing="xy")
    grid = torch.stack([x, y], dim=-1)
    return torch.cat([grid, 1 - grid], dim=-1)""")]),
    "embedding as a matmul, added after flattening row-major": ("slots.position_embed", "model.py", [(
        """        grid = build_grid(x.shape[1], x.shape[2]).to(x)  # (H, W, 4)
        return x + self.proj(grid)                       # (B, H, W, D)""",
        """        B, H, W, E = x.shape
        grid = build_grid(H, W).reshape(H * W, 4).to(x.dtype)
        emb = grid @ self.proj.weight.T + self.proj.bias
        return (x.reshape(B, H * W, E) + emb).reshape(B, H, W, E)""")]),
    "init with randn_like and expand": ("slots.init", "model.py", [(INIT,
        """        mu = self.slots_mu.expand(batch_size, self.num_slots, -1)
        sigma = torch.exp(self.slots_log_sigma).expand_as(mu)
        return mu + sigma * torch.randn_like(mu)""")]),
    "step with einsum": ("slots.attention", "model.py", [(STEP,
        """        q = self.to_q(self.norm_slots(slots)) * D**-0.5
        attn = torch.einsum("bkd,bnd->bkn", q, k).softmax(dim=1)
        weights = (attn + self.eps) / (attn + self.eps).sum(-1, keepdim=True)
        updates = torch.einsum("bkn,bnd->bkd", weights, v)
        slots = self.gru(updates.flatten(0, 1), slots.flatten(0, 1)).view(B, K, D)""")]),
    "attention in log space, layout (B, N, K)": ("slots.attention", "model.py", [(STEP,
        """        q = self.to_q(self.norm_slots(slots))
        logits = torch.bmm(k, q.transpose(1, 2)) / D**0.5          # (B, N, K)
        log_attn = torch.log_softmax(logits, dim=2)                # over the slots
        attn = log_attn.exp().transpose(1, 2)                      # (B, K, N)
        log_w = torch.log(attn + self.eps)
        weights = torch.exp(log_w - torch.logsumexp(log_w, dim=2, keepdim=True))
        updates = torch.bmm(weights, v)
        slots = self.gru(updates.reshape(-1, D), slots.reshape(-1, D)).reshape(B, K, D)""")]),
    "loop with the slots sampled in the loop's preamble": ("slots.attention", "model.py", [(
        """        x = self.norm_inputs(inputs)                           # (B, N, D)
        k, v = self.to_k(x), self.to_v(x)                      # (B, N, D) each
        attn = None
        for _ in range(self.iters):
            slots, attn = self.step(slots, k, v)
        return slots, attn""",
        """        k = self.to_k(self.norm_inputs(inputs))
        v = self.to_v(self.norm_inputs(inputs))
        out = [slots, None]
        for _ in range(self.iters):
            out = list(self.step(out[0], k, v))
        return tuple(out)""")]),
    "decoder with repeat, permute and indexing": ("slots.decoder", "model.py", [(DECODE,
        """        x = slots.flatten(0, 1)[:, None, None, :].repeat(1, h, w, 1)
        x = self.convs(self.pos(x).permute(0, 3, 1, 2).contiguous())
        x = x.view(B, K, self.out_channels + 1, x.shape[-2], x.shape[-1])
        rgb, alpha = x[:, :, :-1], x[:, :, -1:]
        masks = torch.exp(alpha - torch.logsumexp(alpha, dim=1, keepdim=True))
        image = torch.einsum("bkchw,bkchw->bchw", masks.expand_as(rgb), rgb)
        return image, masks, rgb""")]),
    "ARI with bincount, one image at a time": ("slots.ari", "metrics.py", [(
        """    true = torch.nn.functional.one_hot(true_ids.long(), int(true_ids.max()) + 1).double()  # (B, N, I)
    pred = torch.nn.functional.one_hot(pred_ids.long(), int(pred_ids.max()) + 1).double()  # (B, N, J)
    if weights is not None:
        true = true * weights.double()[..., None]
    return true.transpose(1, 2) @ pred                                                  # (B, I, J)""",
        """    I, J = int(true_ids.max()) + 1, int(pred_ids.max()) + 1
    w = torch.ones_like(true_ids, dtype=torch.float64) if weights is None else weights.double()
    tables = [torch.bincount(t * J + p, weights=wb, minlength=I * J).reshape(I, J)
              for t, p, wb in zip(true_ids.long(), pred_ids.long(), w)]
    return torch.stack(tables)"""), (
        """    n = table.sum(dim=(1, 2))                                    # (B,)""",
        """    n = table.flatten(1).sum(1)"""), (
        """    ari = (index - expected) / torch.where(denominator == 0, 1.0, denominator)
    return torch.where(denominator == 0, 1.0, ari)""",
        """    return torch.tensor([1.0 if d == 0 else ((i - e) / d).item()
                         for i, e, d in zip(index, expected, denominator)], dtype=torch.float64)""")]),
    "foreground ARI by selecting pixels": ("slots.ari", "metrics.py", [(
        "    return adjusted_rand_index(true_ids, pred_ids, weights=true_ids != background)",
        """    out = []
    for t, p in zip(true_ids, pred_ids):
        keep = t != background
        if keep.sum() < 2:
            out.append(torch.ones(1, dtype=torch.float64))
        else:
            out.append(adjusted_rand_index(t[keep][None], p[keep][None]))
    return torch.cat(out)""")]),
    "sampling with multinomial": ("slots.library", "library.py", [(
        """        chosen = torch.randperm(len(clusters), generator=generator)[:num_slots]
        picks = [members[c][torch.randint(len(members[c]), (1,), generator=generator)]
                 for c in chosen.tolist()]""",
        """        chosen = torch.multinomial(torch.ones(len(clusters)), num_slots, generator=generator)
        picks = []
        for c in chosen:
            pool = members[int(c)]
            picks.append(pool[torch.multinomial(torch.ones(len(pool)), 1, generator=generator)])""")]),
    "library by reshape": ("slots.library", "library.py", [(
        "    return torch.cat(slots).flatten(0, 1)  # (n * K, D)",
        "    every = torch.cat(slots, dim=0)\n    return every.reshape(-1, every.shape[-1])")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, make_variant):
    task, file, edits = ALTERNATIVES[name]
    row = grade_fast(make_variant("slots", {file: edits}), task)
    assert row["status"] == "passed", row
    assert row["earned"] == row["possible"]


# ------------------------------------------- the lab's module vs a maintained implementation

def test_slot_attention_equals_lucidrains_package_with_copied_weights():
    """solutions/slots' SlotAttention computes what lucidrains' slot-attention package does
    (same weights, same initial noise), forward and backward: the module the speed benchmark
    (benchmarks/train_speed_slots.py) times is the same computation."""
    pytest.importorskip("slot_attention")
    import sys

    from vislab import REPO_ROOT, SOLUTIONS_DIR
    from vislab.impl import import_lab

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        from train_speed_slots import NAMES, lucidrains_copy
    finally:
        sys.path.pop(0)
    model = import_lab(SOLUTIONS_DIR / "slots").model
    torch.manual_seed(0)
    ours = model.SlotAttention(num_slots=5, dim=16, iters=3, mlp_dim=32).double()
    theirs = lucidrains_copy(ours.float()).double()
    ours.double()
    inputs = torch.randn(3, 20, 16, dtype=torch.float64)
    torch.manual_seed(1)
    a = ours(inputs)[0]
    torch.manual_seed(1)
    b = theirs(inputs)
    assert torch.allclose(a, b, atol=1e-10)
    a.sum().backward()
    b.sum().backward()
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert torch.allclose(p.grad, theirs_params[NAMES.get(name, name)].grad, atol=1e-10), name


def test_training_check_fails_when_the_slots_carry_nothing(make_variant):
    """The training check can fail: slots zeroed before they leave SlotAttention (the decoder
    then sees nothing of the scene) leave the held-out MSE at the constant image's."""
    from vislab.grading import grade, load_lab

    lab = load_lab("slots")
    folder = make_variant("slots", {"model.py": [(
        "            slots, attn = self.step(slots, k, v)\n        return slots, attn",
        "            slots, attn = self.step(slots, k, v)\n        return slots * 0, attn")]})
    only = type(lab)(lab.name, lab.tasks, [c for c in lab.checks if c.name == "learns_to_reconstruct"])
    result = grade(only, folder)[0]
    assert result.status == "failed", result
    assert "reconstruction MSE" in result.message and "constant image" in result.message
