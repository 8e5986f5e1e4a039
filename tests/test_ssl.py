"""The self-supervised lab's checks: plausible mistakes lose points in the named task with a
message that helps, and correct code written differently gets full marks."""
import pytest
import torch

from conftest import by_task
from vislab.grading import grade, load_lab, summarize


def grade_task_exact(folder, task) -> dict:
    """The task's row without the seconds-long pretraining check (every mistake below is caught
    by the exact checks)."""
    lab = load_lab("ssl")
    lab = type(lab)(lab.name, lab.tasks, [c for c in lab.checks if c.name != "mae_pretrains"])
    rows = summarize(lab, grade(lab, folder, task))
    assert len(rows) == 1
    return rows[0]


# -------------------------------------------------------------------- plausible mistakes

MASK_END = """    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)                           # (B, N)"""

MISTAKES = {
    # name: (task, file, old, new, words the message must contain)
    "the same mask for every image": (
        "ssl.random_masking", "mae.py", "noise = torch.rand(B, N, device=x.device)",
        "noise = torch.rand(N, device=x.device).expand(B, N)", "got the same mask"),
    "the mask convention flipped": (
        "ssl.random_masking", "mae.py", MASK_END,
        "    mask[:, :keep] = 0\n    mask = 1 - torch.gather(mask, 1, ids_restore)",
        "flipped"),
    "K rounded down": (
        "ssl.random_masking", "mae.py", "keep = round(N * (1 - mask_ratio))",
        "keep = int(N * (1 - mask_ratio))", "not int(N (1 - r))"),
    "the mask ratio kept instead of removed": (
        "ssl.random_masking", "mae.py", "keep = round(N * (1 - mask_ratio))",
        "keep = round(N * mask_ratio)", "you kept the masked share"),
    "K rounded up (N minus the masked count rounded down)": (
        "ssl.random_masking", "mae.py", "    noise = torch.rand(B, N, device=x.device)",
        "    keep = N - int(N * mask_ratio)\n    noise = torch.rand(B, N, device=x.device)",
        "which rounds K up"),
    "the same masks on every call (a seeded generator of its own)": (
        "ssl.random_masking", "mae.py", "noise = torch.rand(B, N, device=x.device)",
        "noise = torch.rand(B, N, generator=torch.Generator().manual_seed(0))",
        "two calls gave the same masks"),
    "negative slices, which keep nothing at mask ratio 0": (
        "ssl.random_masking", "mae.py",
        "    ids_keep = ids_shuffle[:, :keep]                                    # (B, K)\n"
        "    x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))  # (B, K, D)\n"
        "    mask = torch.ones(B, N, device=x.device)\n    mask[:, :keep] = 0\n"
        "    mask = torch.gather(mask, 1, ids_restore)                           # (B, N)",
        "    n_mask = N - keep\n    ids_keep = ids_shuffle[:, :-n_mask]\n"
        "    x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))\n"
        "    mask = torch.zeros(B, N).scatter_(1, ids_shuffle[:, -n_mask:], 1.0)",
        "with mask_ratio 0 all N"),
    "x_kept gathered from x.detach()": (
        "ssl.random_masking", "mae.py", "x_kept = torch.gather(x, 1,",
        "x_kept = torch.gather(x.detach(), 1,", "no gradient reaches x through x_kept"),
    "ids_shuffle returned as ids_restore": (
        "ssl.random_masking", "mae.py", "    return x_kept, mask, ids_restore\n    ### END",
        "    return x_kept, mask, ids_shuffle\n    ### END", "argsort(ids_shuffle)"),
    "masked tokens passed to the encoder": (
        "ssl.mae_encoder", "mae.py",
        "tokens, mask, ids_restore = random_masking(tokens, mask_ratio)        # (B, K, D)",
        "_, mask, ids_restore = random_masking(tokens, mask_ratio)",
        "passed to the encoder"),
    "all tokens encoded, the kept ones picked afterwards": (
        "ssl.mae_encoder", "mae.py",
        "        for block in self.blocks:\n            h = block(h)\n        return self.norm(h), mask, ids_restore",
        "        full = torch.cat([h[:, :1], self.patch_embed(x) + self.pos_embed[:, 1:]], 1)\n"
        "        for block in self.blocks:\n            full = block(full)\n"
        "        keep = torch.argsort(ids_restore, 1)[:, :tokens.shape[1]] + 1\n"
        "        h = torch.cat([full[:, :1], torch.gather(full, 1, keep[..., None].expand(-1, -1, full.shape[-1]))], 1)\n"
        "        return self.norm(h), mask, ids_restore", "must never reach the blocks"),
    "positions added after masking": (
        "ssl.mae_encoder", "mae.py",
        "        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]                  # (B, N, D)\n"
        "        tokens, mask, ids_restore = random_masking(tokens, mask_ratio)        # (B, K, D)",
        "        tokens, mask, ids_restore = random_masking(self.patch_embed(x), mask_ratio)\n"
        "        tokens = tokens + self.pos_embed[:, 1:1 + tokens.shape[1]]",
        "positions added after masking"),
    "the encoder masks with the config's ratio, not its argument": (
        "ssl.mae_encoder", "mae.py", "random_masking(tokens, mask_ratio)        # (B, K, D)",
        "random_masking(tokens, self.config.mask_ratio)", "pass the mask_ratio argument on"),
    "no CLS position": (
        "ssl.mae_encoder", "mae.py", "cls = (self.cls_token + self.pos_embed[:, :1])",
        "cls = (self.cls_token)", "no position for the CLS token"),
    "mask tokens not unshuffled": (
        "ssl.mae_decoder", "mae.py",
        "        patches = torch.gather(patches, 1, index)                     # (B, N, Dd) image order\n",
        "", "mask tokens not unshuffled"),
    "unshuffled with ids_shuffle": (
        "ssl.mae_decoder", "mae.py", "index = ids_restore[..., None]",
        "index = torch.argsort(ids_restore, 1)[..., None]", "argsort(ids_restore)"),
    "mask tokens put first": (
        "ssl.mae_decoder", "mae.py", "patches = torch.cat([h[:, 1:], masks], dim=1)",
        "patches = torch.cat([masks, h[:, 1:]], dim=1)", "mask tokens put before"),
    "the decoder runs its first block only": (
        "ssl.mae_decoder", "mae.py",
        "        for block in self.blocks:\n            h = block(h)\n        return self.pred(",
        "        h = self.blocks[0](h)\n        return self.pred(", "only the first of the decoder's blocks"),
    "CLS output kept": (
        "ssl.mae_decoder", "mae.py", "return self.pred(self.norm(h))[:, 1:]",
        "return self.pred(self.norm(h))", "drop the CLS token's output"),
    "loss over all patches": (
        "ssl.mae_loss", "mae.py", "return (per_patch * mask).sum() / mask.sum()",
        "return per_patch.mean()", "the loss over all patches"),
    "loss with the mask flipped": (
        "ssl.mae_loss", "mae.py", "return (per_patch * mask).sum() / mask.sum()",
        "return (per_patch * (1 - mask)).sum() / (1 - mask).sum()", "mask convention flipped"),
    "loss divided by N": (
        "ssl.mae_loss", "mae.py", "return (per_patch * mask).sum() / mask.sum()",
        "return (per_patch * mask).mean()", "divided by all N patches"),
    "loss as a mean of per-image means": (
        "ssl.mae_loss", "mae.py", "return (per_patch * mask).sum() / mask.sum()",
        "return ((per_patch * mask).sum(1) / mask.sum(1)).mean()", "mean of per-image means"),
    "patch targets flattened (C, P, P)": (
        "ssl.mae_loss", "mae.py", "x = x.permute(0, 2, 4, 3, 5, 1)                    # (B, h, w, P, P, C)",
        "x = x.permute(0, 2, 4, 1, 3, 5)", "(channel, row, column)"),
    "patch targets transposed": (
        "ssl.mae_loss", "mae.py", "x = x.permute(0, 2, 4, 3, 5, 1)                    # (B, h, w, P, P, C)",
        "x = x.permute(0, 2, 4, 5, 3, 1)", "column by column"),
    "InfoNCE without the positive in the denominator": (
        "ssl.infonce", "contrastive.py", "sim = sim.masked_fill(eye, float(\"-inf\"))",
        "sim = sim.masked_fill(eye, float(\"-inf\"))\n"
        "    pos = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(sim.device)\n"
        "    positive = sim[torch.arange(2 * B), pos]\n"
        "    negatives = sim.masked_fill(torch.nn.functional.one_hot(pos, 2 * B).bool(), float('-inf'))\n"
        "    return (torch.logsumexp(negatives, 1) - positive).mean()",
        "positive left out of the denominator"),
    "InfoNCE with the diagonal not masked": (
        "ssl.infonce", "contrastive.py", "sim = sim.masked_fill(eye, float(\"-inf\"))", "pass",
        "diagonal not masked"),
    "InfoNCE with the temperature applied twice": (
        "ssl.infonce", "contrastive.py", "sim = u @ u.T / temperature ",
        "sim = u @ u.T / temperature / temperature ", "temperature applied twice"),
    "InfoNCE in one direction only": (
        "ssl.infonce", "contrastive.py", "return F.cross_entropy(sim, targets)",
        "return F.cross_entropy(sim[:B], targets[:B])", "one direction only"),
    "InfoNCE without normalising": (
        "ssl.infonce", "contrastive.py", "u = F.normalize(torch.cat([z1, z2]), dim=1)",
        "u = torch.cat([z1, z2])", "not normalised"),
    "combined with the weights swapped": (
        "ssl.combined", "contrastive.py", "(1 - weight) * mae + weight * nce",
        "weight * mae + (1 - weight) * nce", "weights swapped"),
    "combined MAE of view1 only": (
        "ssl.combined", "contrastive.py", "mae = (maes[0] + maes[1]) / 2", "mae = maes[0]",
        "view1 only"),
    "combined with the config's mask ratio, not its argument": (
        "ssl.combined", "contrastive.py", "encoder(view, mask_ratio)     # (B, 1+K, D)",
        "encoder(view, encoder.config.mask_ratio)", "instead of the mask_ratio argument"),
    "combined InfoNCE without the head": (
        "ssl.combined", "contrastive.py", "cls.append(head(latent[:, 0]))",
        "cls.append(latent[:, 0])", "without the projection head"),
    "classifier on mean-pooled tokens": (
        "ssl.finetune", "finetune.py", "return self.head(latent[:, 0])",
        "return self.head(latent.mean(1))", "mean of all tokens"),
    "classifier that masks patches in train mode": (
        "ssl.finetune", "finetune.py", "latent, _, _ = self.encoder(x, 0.0)",
        "latent, _, _ = self.encoder(x, self.encoder.config.mask_ratio if self.training else 0.0)",
        "in train mode"),
    "linear probe that trains the encoder": (
        "ssl.finetune", "finetune.py", "model.encoder.requires_grad_(mode == \"finetune\")",
        "model.encoder.requires_grad_(True)", "should return 2 parameters"),
    "linear probe that never freezes the encoder (only returns the head)": (
        "ssl.finetune", "finetune.py",
        "    model.encoder.requires_grad_(mode == \"finetune\")\n    model.head.requires_grad_(True)\n"
        "    return [p for p in model.parameters() if p.requires_grad]",
        "    if mode == \"linear\":\n        model.head.requires_grad_(True)\n"
        "        return list(model.head.parameters())\n    model.requires_grad_(True)\n"
        "    return list(model.parameters())", "set requires_grad=False on the encoder"),
    "video frames mixed into patches by a reshape": (
        "ssl.video_tokens", "video.py", "x = self.proj(video.permute(0, 2, 1, 3, 4))",
        "x = self.proj(video.reshape(video.shape[0], video.shape[2], video.shape[1], *video.shape[3:]))",
        "frames and channels mixed"),
    "video tokens ordered space first": (
        "ssl.video_tokens", "video.py", "        return x.reshape(B, -1, D)                                     # (B, N, D)",
        "        return x.transpose(1, 2).reshape(B, -1, D)", "patch first, then time"),
    "video tokens without time positions": (
        "ssl.video_tokens", "video.py",
        "x = x + self.time_embed[None, :, None] + self.space_embed[None, None]",
        "x = x + self.space_embed[None, None]", "no time embedding"),
    "video targets flattened (C, t, P, P)": (
        "ssl.video_tokens", "video.py", "x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)                 # (B, T/t, h, w, t, P, P, C)",
        "x = x.permute(0, 1, 4, 6, 3, 2, 5, 7)", "(channel, frame, row, column)"),
    "video MAE with an L2 loss": (
        "ssl.video_mae", "video.py", "per_token = (pred - target).abs().mean(dim=-1)",
        "per_token = ((pred - target) ** 2).mean(dim=-1)", "L2 loss instead of L1"),
    "video MAE loss over all tokens": (
        "ssl.video_mae", "video.py", "return (per_token * mask).sum() / mask.sum(), pred, mask",
        "return per_token.mean(), pred, mask", "over all tokens"),
    "video MAE masks with the config's ratio, not its argument": (
        "ssl.video_mae", "video.py", "random_masking(tokens, ratio)",
        "random_masking(tokens, self.config.mask_ratio)", "pass the mask_ratio argument on"),
    "video MAE encoder runs its first block only": (
        "ssl.video_mae", "video.py",
        "        for block in self.blocks:\n            h = block(h)\n        h = self.decoder_embed",
        "        h = self.blocks[0](h)\n        h = self.decoder_embed", "only the first encoder block"),
    "video MAE mask tokens not unshuffled": (
        "ssl.video_mae", "video.py",
        "        h = torch.gather(h, 1, ids_restore[..., None].expand(-1, -1, h.shape[-1]))\n", "",
        "not unshuffled"),
}


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, make_variant):
    task, file, old, new, words = MISTAKES[name]
    row = grade_task_exact(make_variant("ssl", {file: [(old, new)]}), task)
    assert row["status"] in ("failed", "error"), row
    assert row["earned"] < row["possible"]
    assert words in row["message"], row["message"]


# ------------------------------------------------------------ correct, written differently

MASKING_BODY = """    noise = torch.rand(B, N, device=x.device)                           # (B, N)
    ids_shuffle = torch.argsort(noise, dim=1)                           # (B, N)
    ids_restore = torch.argsort(ids_shuffle, dim=1)                     # (B, N)
    ids_keep = ids_shuffle[:, :keep]                                    # (B, K)
    x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))  # (B, K, D)
    mask = torch.ones(B, N, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)                           # (B, N)
    return x_kept, mask, ids_restore"""

ALTERNATIVES = {
    "masking with torch.randperm per image and indexing": ("ssl.random_masking", "mae.py", [(
        MASKING_BODY,
        """    ids_shuffle = torch.stack([torch.randperm(N) for _ in range(B)])
    ids_restore = torch.empty_like(ids_shuffle)
    ids_restore.scatter_(1, ids_shuffle, torch.arange(N).expand(B, N))
    rows = torch.arange(B)[:, None]
    x_kept = x[rows, ids_shuffle[:, :keep]]
    mask = (ids_restore >= keep).float()
    return x_kept, mask, ids_restore""")]),
    "decoder unshuffling by indexing instead of gather": ("ssl.mae_decoder", "mae.py", [(
        """        index = ids_restore[..., None].expand(-1, -1, h.shape[-1])
        patches = torch.gather(patches, 1, index)                     # (B, N, Dd) image order""",
        """        patches = patches[torch.arange(B)[:, None], ids_restore]""")]),
    "encoder with CLS and positions concatenated first": ("ssl.mae_encoder", "mae.py", [(
        """        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(x), -1, -1)  # (B, 1, D)
        h = torch.cat([cls, tokens], dim=1)                                   # (B, 1+K, D)""",
        """        cls = self.cls_token.repeat(x.shape[0], 1, 1) + self.pos_embed[:, 0:1]
        h = torch.cat((cls, tokens), 1)""")]),
    "InfoNCE as cross_entropy on the B x B blocks of a similarity matrix": ("ssl.infonce",
                                                                           "contrastive.py", [(
        """    B = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=1)                         # (2B, E)
    sim = u @ u.T / temperature                                         # (2B, 2B)
    eye = torch.eye(2 * B, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye, float("-inf"))
    targets = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(sim.device)
    return F.cross_entropy(sim, targets)""",
        """    a, b = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    eye = torch.eye(len(a), dtype=torch.bool)
    ab = torch.einsum("ie,je->ij", a, b) / temperature
    aa = (a @ a.T / temperature).masked_fill(eye, -1e9)
    bb = (b @ b.T / temperature).masked_fill(eye, -1e9)
    labels = torch.arange(len(a))
    first = F.cross_entropy(torch.cat([ab, aa], 1), labels, reduction="sum")
    second = F.cross_entropy(torch.cat([ab.T, bb], 1), labels, reduction="sum")
    return (first + second) / (2 * len(a))""")]),
    "InfoNCE with the diagonal filled in place": ("ssl.infonce", "contrastive.py", [(
        """    sim = sim.masked_fill(eye, float("-inf"))""",
        """    sim.fill_diagonal_(float("-inf"))""")]),
    "patchify by Tensor.unfold": ("ssl.mae_loss", "mae.py", [(
        """    x = images.reshape(B, C, H // P, P, W // P, P)
    x = x.permute(0, 2, 4, 3, 5, 1)                    # (B, h, w, P, P, C)
    return x.reshape(B, (H // P) * (W // P), P * P * C)""",
        """    x = images.unfold(2, P, P).unfold(3, P, P)         # (B, C, h, w, P, P)
    return x.permute(0, 2, 3, 4, 5, 1).reshape(B, -1, P * P * C)""")]),
    "InfoNCE as an explicit log-softmax": ("ssl.infonce", "contrastive.py", [(
        """    targets = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(sim.device)
    return F.cross_entropy(sim, targets)""",
        """    logp = sim.log_softmax(dim=1)
    idx = torch.arange(2 * B)
    return -logp[idx, (idx + B) % (2 * B)].mean()""")]),
    "patchify with einsum and a per-image loss": ("ssl.mae_loss", "mae.py", [(
        """    x = x.permute(0, 2, 4, 3, 5, 1)                    # (B, h, w, P, P, C)
    return x.reshape(B, (H // P) * (W // P), P * P * C)""",
        """    x = torch.einsum("bchpwq->bhwpqc", x)
    return x.flatten(1, 2).flatten(2)"""), (
        """    per_patch = ((pred - target) ** 2).mean(dim=-1)    # (B, N)
    return (per_patch * mask).sum() / mask.sum()""",
        """    se = F.mse_loss(pred, target, reduction="none").mean(-1)
    return se[mask.bool()].mean()"""), (
        "import torch.nn as nn\n", "import torch.nn as nn\nimport torch.nn.functional as F\n")]),
    "video tokens with an einsum tube projection": ("ssl.video_tokens", "video.py", [(
        """        x = self.proj(video.permute(0, 2, 1, 3, 4))                    # (B, D, T/t, h, w)
        B, D, S = x.shape[:3]
        x = x.flatten(3).permute(0, 2, 3, 1)                           # (B, T/t, hw, D)
        x = x + self.time_embed[None, :, None] + self.space_embed[None, None]
        return x.reshape(B, -1, D)                                     # (B, N, D)""",
        """        t, P = self.proj.kernel_size[0], self.proj.kernel_size[1]
        tubes = video_patchify(video, t, P)                            # (B, N, t*P*P*C)
        W = self.proj.weight.permute(0, 2, 3, 4, 1).flatten(1)         # (D, t*P*P*C)
        x = tubes @ W.T + self.proj.bias
        S, hw = self.time_embed.shape[0], self.space_embed.shape[0]
        pos = (self.time_embed[:, None] + self.space_embed[None]).reshape(S * hw, -1)
        return x + pos""")]),
    "masking with a scattered mask and advanced indexing": ("ssl.random_masking", "mae.py", [(
        """    x_kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))  # (B, K, D)
    mask = torch.ones(B, N, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)                           # (B, N)""",
        """    x_kept = x[torch.arange(B)[:, None], ids_keep]
    mask = torch.ones(B, N).scatter_(1, ids_keep, 0.0)""")]),
    "encoder adding the kept tokens' positions after masking, gathered": ("ssl.mae_encoder",
                                                                         "mae.py", [(
        """        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]                  # (B, N, D)
        tokens, mask, ids_restore = random_masking(tokens, mask_ratio)        # (B, K, D)""",
        """        tokens, mask, ids_restore = random_masking(self.patch_embed(x), mask_ratio)
        keep = torch.argsort(ids_restore, 1)[:, :tokens.shape[1]]
        pos = self.pos_embed[:, 1:].expand(len(x), -1, -1)
        tokens = tokens + torch.gather(pos, 1, keep[..., None].expand(-1, -1, pos.shape[-1]))""")]),
    "decoder gathering CLS and patches in one index": ("ssl.mae_decoder", "mae.py", [(
        """        patches = torch.cat([h[:, 1:], masks], dim=1)                 # (B, N, Dd) shuffled
        index = ids_restore[..., None].expand(-1, -1, h.shape[-1])
        patches = torch.gather(patches, 1, index)                     # (B, N, Dd) image order
        h = torch.cat([h[:, :1], patches], dim=1) + self.pos_embed    # (B, 1+N, Dd)""",
        """        seq = torch.cat([h, masks], dim=1)
        idx = torch.cat([torch.zeros(B, 1, dtype=torch.long), ids_restore + 1], 1)
        h = seq.gather(1, idx.unsqueeze(-1).repeat(1, 1, seq.shape[-1])) + self.pos_embed""")]),
    "MAE loss per pixel in float64": ("ssl.mae_loss", "mae.py", [(
        """    per_patch = ((pred - target) ** 2).mean(dim=-1)    # (B, N)
    return (per_patch * mask).sum() / mask.sum()""",
        """    se = (pred.double() - target.double()) ** 2
    m = mask.double()[..., None].expand_as(se)
    return ((se * m).sum() / m.sum()).float()""")]),
    "InfoNCE by a float64 loop over the anchors": ("ssl.infonce", "contrastive.py", [(
        """    u = F.normalize(torch.cat([z1, z2]), dim=1)                         # (2B, E)
    sim = u @ u.T / temperature                                         # (2B, 2B)
    eye = torch.eye(2 * B, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye, float("-inf"))
    targets = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(sim.device)
    return F.cross_entropy(sim, targets)""",
        """    u = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    total = 0
    for i in range(2 * B):
        s = (u @ u[i]) / temperature
        others = torch.cat([s[:i], s[i + 1:]])
        total = total + torch.logsumexp(others, 0) - s[(i + B) % (2 * B)]
    return (total / (2 * B)).to(z1.dtype)""")]),
    "InfoNCE by logsumexp, a manual norm and rolled targets": ("ssl.infonce", "contrastive.py", [(
        """    u = F.normalize(torch.cat([z1, z2]), dim=1)                         # (2B, E)
    sim = u @ u.T / temperature                                         # (2B, 2B)
    eye = torch.eye(2 * B, dtype=torch.bool, device=sim.device)
    sim = sim.masked_fill(eye, float("-inf"))
    targets = torch.cat([torch.arange(B, 2 * B), torch.arange(B)]).to(sim.device)
    return F.cross_entropy(sim, targets)""",
        """    z = torch.cat([z1, z2])
    u = z / z.norm(dim=1, keepdim=True)
    sim = torch.einsum("ie,je->ij", u, u) / temperature - 1e9 * torch.eye(2 * B)
    pos = torch.arange(2 * B).roll(B)
    return (torch.logsumexp(sim, 1) - sim[torch.arange(2 * B), pos]).mean()""")]),
    "combined reading the patch size from the patch embedding": ("ssl.combined", "contrastive.py", [(
        "    p = encoder.config.patch_size", "    p = encoder.patch_embed.patch_size")]),
    "masking with the mask read off ids_restore": ("ssl.random_masking", "mae.py", [(
        """    mask = torch.ones(B, N, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)                           # (B, N)""",
        """    mask = (ids_restore >= keep).float()""")]),
    "MAE loss as F.mse_loss on the masked patches selected": ("ssl.mae_loss", "mae.py", [(
        """    per_patch = ((pred - target) ** 2).mean(dim=-1)    # (B, N)
    return (per_patch * mask).sum() / mask.sum()""",
        """    m = mask.bool()
    return torch.nn.functional.mse_loss(pred[m], target[m])""")]),
    "combined with torch.lerp and a stacked mean": ("ssl.combined", "contrastive.py", [(
        """    mae = (maes[0] + maes[1]) / 2
    nce = info_nce(cls[0], cls[1], temperature)
    return {"loss": (1 - weight) * mae + weight * nce, "mae": mae, "nce": nce}""",
        """    mae = torch.stack(maes).mean()
    nce = info_nce(*cls, temperature=temperature)
    return dict(loss=torch.lerp(mae, nce, weight), mae=mae, nce=nce)""")]),
    "trainable parameters chosen by name in a loop": ("ssl.finetune", "finetune.py", [(
        """    model.encoder.requires_grad_(mode == "finetune")
    model.head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]""",
        """    out = []
    for name, p in model.named_parameters():
        p.requires_grad = mode == "finetune" or name.startswith("head.")
        if p.requires_grad:
            out.append(p)
    return out""")]),
    "video MAE calling random_masking through the mae module": ("ssl.video_mae", "video.py", [(
        "h, mask, ids_restore = random_masking(tokens, ratio)",
        "from . import mae\n        h, mask, ids_restore = mae.random_masking(tokens, ratio)")]),
    "video MAE with F.l1_loss on the masked tokens selected": ("ssl.video_mae", "video.py", [(
        """        per_token = (pred - target).abs().mean(dim=-1)                    # (B, N)
        return (per_token * mask).sum() / mask.sum(), pred, mask""",
        """        err = torch.nn.functional.l1_loss(pred, target, reduction="none").mean(-1)
        return err[mask.bool()].mean(), pred, mask""")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, make_variant):
    task, file, edits = ALTERNATIVES[name]
    folder = make_variant("ssl", {file: edits})
    # the exact checks; the pretraining check runs on the solution in tests/test_grading.py
    row = grade_task_exact(folder, task)
    assert row["status"] == "passed", row
    assert row["earned"] == row["possible"]


# ------------------------------------------------------------------------ the given code

def test_given_helpers_invert_patchify_and_views_differ():
    """unpatchify / video_unpatchify invert the students' patchify (the reconstructions in the
    figures depend on it); augment draws a different view per image."""
    from vislab import SOLUTIONS_DIR
    from vislab.impl import import_lab

    lab = import_lab(SOLUTIONS_DIR / "ssl")
    x = torch.randn(2, 3, 8, 12)
    assert torch.equal(lab.mae.unpatchify(lab.mae.patchify(x, 4), 4, 3, 8, 12), x)
    for t, p in ((1, 16), (3, 8)):
        c = lab.video.VideoMAEConfig(tubelet=t, patch_size=p)
        v = torch.randn(2, 3, 1, 64, 64)
        assert torch.equal(lab.video.video_unpatchify(lab.video.video_patchify(v, t, p), c), v)
    img = torch.rand(1, 1, 28, 28).expand(4, 1, 28, 28)
    views = lab.contrastive.augment(img, torch.Generator().manual_seed(0))
    assert views.shape == img.shape and not torch.equal(views[0], views[1])


# ------------------------------------------------------------------------- vislab train ssl

@pytest.mark.parametrize("argv, words", [
    (["--impl", "labs", "--encoders", "scratch", "--no-video"], "TODO(ssl.finetune)"),
    (["--impl", "labs", "--encoders", "none"], "TODO(ssl.random_masking)"),
    (["--impl", "solutions", "--mask-ratio", "1.5"], "--mask-ratio must be between 0 and 1"),
    (["--impl", "solutions", "--encoders", "mea"], "--encoders takes a comma list"),
    (["--impl", "solutions", "--encoders", "none", "--no-video"], "leaves nothing to train"),
])
def test_train_refuses_bad_runs_in_one_line(argv, words, tmp_path, capsys):
    """The skeleton's TODOs that a run needs, and bad options: one line before any training."""
    from vislab.cli import main
    code = None
    try:
        code = main(["train", "ssl", *argv, "--out", str(tmp_path / "run")])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err, err
