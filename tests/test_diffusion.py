"""The diffusion lab's checks: plausible mistakes lose points in the named task with a message
that helps, correct code written differently gets full marks, and the grader's closed-form
references agree with diffusers' DDPMScheduler (an independent implementation)."""
import pytest
import torch

from conftest import by_task, grade_task_messages, variant
from vislab import SOLUTIONS_DIR
from vislab.grading import Lab, grade, load_lab

# The training check takes seconds: mistakes in diffusion.loss are caught by the quick checks
# too, so they are graded without it (tests/test_grading.py runs it on the solution), except
# the one case that shows the training check itself catches a loss that targets x0.
SLOW = {"trains_a_denoiser"}


def grade_task(folder, task: str, quick: bool = True) -> tuple[dict, str]:
    """The task's row, and every failing check's message joined (the row shows the first)."""
    return grade_task_messages("diffusion", folder, task, SLOW if quick else ())


PAD = "abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])        # (T,)"
CAP = "betas = (1 - f(u[1:]) / f(u[:-1])).clamp(max=0.999)                       # (T,)"
LAST = """    if t == 0:
        return mean
    return mean + math.sqrt(s["posterior_variance"]) * noise"""
CLIP = """    if clip:
        x0_hat = x0_hat.clamp(-1, 1)
    mean = s["posterior_mean_coef1"] * x0_hat + s["posterior_mean_coef2"] * x_t"""
LOOP = "for t in reversed(range(T)):"
NOISE = "x = p_sample(schedule, eps, x, t, torch.randn_like(x), clip)\n        if callback"
EMB = "emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)      # (B, 2*half)"
NORM1 = "h = self.conv1(F.silu(self.norm1(x)))                        # (B, out, H, W)"
CONV2 = "h = self.conv2(self.dropout(F.silu(self.norm2(h))))          # (B, out, H, W)"
KEYS = "k = self.to_k(context).view(B, context.shape[1], h, D // h).transpose(1, 2)  # (B, h, L, d)"
SCALE = "att = (q @ k.transpose(-2, -1)) / math.sqrt(D // h)                    # (B, h, N, L)"
BLOCK = """        h = h + self.attn1(self.norm1(h))
        h = h + self.attn2(self.norm2(h), cond)
        h = h + self.mlp(self.norm3(h))"""
GUIDE = "return (1 + w) * eps_c - w * eps_u"
DROP = "drop = torch.rand(y.shape, device=y.device) < p                  # (B,)"
TDRAW = "t = torch.randint(0, T, (len(x0),), device=x0.device)           # (B,)"

MISTAKES = {
    # name: (task, file, old, new, words the message must contain)
    "abar_{t-1} padded on the wrong side": (
        "diffusion.schedule", "ddpm.py", PAD,
        "abar_prev = torch.cat([abar[:-1], torch.ones(1, dtype=torch.float64)])", "padded"),
    "posterior variance without / (1 - abar_t)": (
        "diffusion.schedule", "ddpm.py", '\n        "posterior_variance": betas * (1 - abar_prev) / (1 - abar),',
        '\n        "posterior_variance": betas * (1 - abar_prev),', "without the division by (1 - abar_t)"),
    "cosine betas not capped": (
        "diffusion.schedule", "ddpm.py", CAP, "betas = 1 - f(u[1:]) / f(u[:-1])", "0.999"),
    "sqrt missing on abar": (
        "diffusion.q_sample", "ddpm.py", "return abar.sqrt() * x0 + (1 - abar).sqrt() * noise",
        "return abar * x0 + (1 - abar).sqrt() * noise", "sqrt missing on abar"),
    "t indexed 1..T in q_sample": (
        "diffusion.q_sample", "ddpm.py", 'abar = gather(schedule["alphas_cumprod"], t, x0)',
        'abar = gather(schedule["alphas_cumprod"], t - 1, x0)', "off by one"),
    "the loss targets x0": (
        "diffusion.loss", "ddpm.py", "return F.mse_loss(model(x_t, t, cond), noise)",
        "return F.mse_loss(model(x_t, t, cond), x0)", "targets x0"),
    "t drawn from 1..T-1": (
        "diffusion.loss", "ddpm.py", TDRAW, "t = torch.randint(1, T, (len(x0),), device=x0.device)",
        "never took the value 0"),
    "t drawn from 0..T-2": (
        "diffusion.loss", "ddpm.py", TDRAW, "t = torch.randint(0, T - 1, (len(x0),), device=x0.device)",
        "excludes T"),
    "one t for the whole batch": (
        "diffusion.loss", "ddpm.py", TDRAW,
        "t = torch.randint(0, T, (1,), device=x0.device).expand(len(x0))", "same t"),
    "a sum instead of the mean": (
        "diffusion.loss", "ddpm.py", "return F.mse_loss(model(x_t, t, cond), noise)",
        "return ((model(x_t, t, cond) - noise) ** 2).sum()", "a sum instead of the mean"),
    "noise added at the final step": (
        "diffusion.p_sample", "ddpm.py", LAST,
        '    return mean + math.sqrt(s["posterior_variance"]) * noise', "final step"),
    "x0_hat clipped after the mean": (
        "diffusion.p_sample", "ddpm.py", CLIP,
        '    mean = s["posterior_mean_coef1"] * x0_hat + s["posterior_mean_coef2"] * x_t\n'
        '    if clip:\n        x0_hat = x0_hat.clamp(-1, 1)', "clip then does nothing"),
    "variance beta_t (fixed large)": (
        "diffusion.p_sample", "ddpm.py", 'math.sqrt(s["posterior_variance"]) * noise',
        'math.sqrt(schedule["betas"][t].item()) * noise', "sqrt(beta_t)"),
    "the loop runs upwards": (
        "diffusion.sample", "ddpm.py", LOOP, "for t in range(T):", "from T-1"),
    "the loop runs T..1": (
        "diffusion.sample", "ddpm.py", LOOP, "for t in reversed(range(1, T + 1)):", "0..T-1"),
    "one noise for every step": (
        "diffusion.sample", "ddpm.py", NOISE,
        "x = p_sample(schedule, eps, x, t, torch.randn(shape, generator=torch.Generator().manual_seed(1)), clip)\n        if callback",
        "same noise"),
    "sin and cos halves swapped": (
        "diffusion.time_embedding", "unet.py", EMB,
        "emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)", "swapped"),
    "GroupNorm after the activation": (
        "diffusion.resblock", "unet.py", NORM1, "h = self.conv1(self.norm1(F.silu(x)))",
        "GroupNorm after the activation"),
    "dropout after conv2": (
        "diffusion.resblock", "unet.py", CONV2,
        "h = self.dropout(self.conv2(F.silu(self.norm2(h))))", "dropout after conv2"),
    "keys from the image": (
        "diffusion.cross_attention", "unet.py", KEYS,
        "k = self.to_k(x).view(B, N, h, D // h).transpose(1, 2)", "keys from the image"),
    "no 1/sqrt(d) scaling": (
        "diffusion.cross_attention", "unet.py", SCALE, "att = q @ k.transpose(-2, -1)",
        "no 1/sqrt(head_dim)"),
    "post-norm transformer block": (
        "diffusion.cross_attention", "unet.py", BLOCK,
        "        h = self.norm1(h + self.attn1(h))\n        h = self.norm2(h + self.attn2(h, cond))\n"
        "        h = self.norm3(h + self.mlp(h))", "post-norm"),
    "guidance w eps_c + (1 - w) eps_u": (
        "diffusion.guidance", "ddpm.py", GUIDE, "return w * eps_c + (1 - w) * eps_u",
        "(1 + w) eps_c - w eps_u"),
    "p taken as the keep probability": (
        "diffusion.guidance", "ddpm.py", DROP, "drop = torch.rand(y.shape, device=y.device) >= p",
        "not of keeping it"),
    # red-team round (2026-12-02): each of these kept full marks before its check was added,
    # or is a plausible variant of a caught one
    "cosine offset s = 0.08": (
        "diffusion.schedule", "ddpm.py", "f = lambda u: torch.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2",
        "f = lambda u: torch.cos((u + 0.08) / 1.08 * math.pi / 2) ** 2", "'cosine')['betas']"),
    "abar with cumsum": (
        "diffusion.schedule", "ddpm.py", "abar = torch.cumprod(alphas, dim=0)  ",
        "abar = 1 - torch.cumsum(betas, dim=0)  ", "['alphas_cumprod']"),
    "posterior mean coefficients swapped": (
        "diffusion.schedule", "ddpm.py",
        '"posterior_mean_coef1": betas * abar_prev.sqrt() / (1 - abar),\n'
        '        "posterior_mean_coef2": (1 - abar_prev) * alphas.sqrt() / (1 - abar),',
        '"posterior_mean_coef2": betas * abar_prev.sqrt() / (1 - abar),\n'
        '        "posterior_mean_coef1": (1 - abar_prev) * alphas.sqrt() / (1 - abar),',
        "['posterior_mean_coef1']"),
    "q_sample with the first image's t for all": (
        "diffusion.q_sample", "ddpm.py", 'abar = gather(schedule["alphas_cumprod"], t, x0)',
        'abar = gather(schedule["alphas_cumprod"], t[:1].expand(len(t)), x0)', "q_sample(schedule, x0, t, noise)"),
    "one noise broadcast over the batch in the loss": (
        "diffusion.loss", "ddpm.py", "noise = torch.randn_like(x0)  ",
        "noise = torch.randn_like(x0[:1]).expand_as(x0)  ", "randn_like(x0)"),
    "the loss drops the condition": (
        "diffusion.loss", "ddpm.py", "return F.mse_loss(model(x_t, t, cond), noise)",
        "return F.mse_loss(model(x_t, t), noise)", "did not give the model the condition"),
    "the same noise on every call of the loss": (
        "diffusion.loss", "ddpm.py", "noise = torch.randn_like(x0)  ",
        "noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))  ", "same noise"),
    "an L1 loss": (
        "diffusion.loss", "ddpm.py", "return F.mse_loss(model(x_t, t, cond), noise)",
        "return F.l1_loss(model(x_t, t, cond), noise)", "diffusion_loss"),
    "the noise not scaled in p_sample": (
        "diffusion.p_sample", "ddpm.py", 'return mean + math.sqrt(s["posterior_variance"]) * noise',
        "return mean + noise", "p_sample at t = 999"),
    "posterior coefficients swapped in p_sample": (
        "diffusion.p_sample", "ddpm.py",
        'mean = s["posterior_mean_coef1"] * x0_hat + s["posterior_mean_coef2"] * x_t',
        'mean = s["posterior_mean_coef2"] * x0_hat + s["posterior_mean_coef1"] * x_t', "p_sample at t"),
    "p_sample returns float64 (schedule tensors of shape (1,))": (
        "diffusion.p_sample", "ddpm.py",
        'mean = s["posterior_mean_coef1"] * x0_hat + s["posterior_mean_coef2"] * x_t',
        'mean = schedule["posterior_mean_coef1"][t].view(1) * x0_hat '
        '+ schedule["posterior_mean_coef2"][t].view(1) * x_t', "keep x_t's dtype"),
    "the loop skips t = 0": (
        "diffusion.sample", "ddpm.py", LOOP, "for t in reversed(range(1, T)):", "visit every t"),
    "callback never called": (
        "diffusion.sample", "ddpm.py", "        if callback is not None:\n            callback(t, x)",
        "        pass", "callback(t, x) was called"),
    "callback before the step": (
        "diffusion.sample", "ddpm.py", "x = p_sample(schedule, eps, x, t, torch.randn_like(x), clip)\n"
        "        if callback is not None:\n            callback(t, x)",
        "callback(t, x) if callback is not None else None\n"
        "        x = p_sample(schedule, eps, x, t, torch.randn_like(x), clip)", "after the step"),
    "one noise broadcast over the batch in sample": (
        "diffusion.sample", "ddpm.py", NOISE,
        "x = p_sample(schedule, eps, x, t, torch.randn_like(x[:1]).expand_as(x), clip)\n        if callback",
        "two images got the same noise"),
    "frequencies over dim, not half": (
        "diffusion.time_embedding", "unet.py", "device=t.device) / half)", "device=t.device) / dim)",
        "timestep_embedding(t, 16)"),
    "max_period ignored": (
        "diffusion.time_embedding", "unet.py", "torch.exp(-math.log(max_period) *",
        "torch.exp(-math.log(10000.0) *", "max_period ignored"),
    "t rounded to an integer": (
        "diffusion.time_embedding", "unet.py", "args = t.float()[:, None] * freqs[None]",
        "args = t.long().float()[:, None] * freqs[None]", "fractional t"),
    "dropout before the SiLU": (
        "diffusion.resblock", "unet.py", CONV2, "h = self.conv2(F.silu(self.dropout(self.norm2(h))))",
        "dropout goes after the silu"),
    "F.dropout left on in eval mode": (
        "diffusion.resblock", "unet.py", CONV2,
        "h = self.conv2(F.dropout(F.silu(self.norm2(h)), self.dropout.p))", "ResBlock(8, 8)"),
    "softmax over the queries": (
        "diffusion.cross_attention", "unet.py", "out = att.softmax(dim=-1) @ v ", "out = att.softmax(dim=-2) @ v ",
        "softmax over the queries"),
    "heads merged without the transpose": (
        "diffusion.cross_attention", "unet.py", "return self.to_out(out.transpose(1, 2).reshape(B, N, D))",
        "return self.to_out(out.reshape(B, N, D))", "Attention(8, 6, heads=2)"),
    "attn2 skipped without a condition": (
        "diffusion.cross_attention", "unet.py", "        h = h + self.attn2(self.norm2(h), cond)\n",
        "        if cond is not None:\n            h = h + self.attn2(self.norm2(h), cond)\n", "attn2 still runs"),
    "attn2 on norm1": (
        "diffusion.cross_attention", "unet.py", "h = h + self.attn2(self.norm2(h), cond)",
        "h = h + self.attn2(self.norm1(h), cond)", "TransformerBlock(x, cond)"),
    "the unconditional pass keeps the labels": (
        "diffusion.guidance", "ddpm.py", "eps_u = model(x, t, torch.full_like(y, null_label))",
        "eps_u = model(x, t, y)", "null label"),
    "y filled with the null label in place": (
        "diffusion.guidance", "ddpm.py", "eps_u = model(x, t, torch.full_like(y, null_label))",
        "eps_u = model(x, t, y.fill_(null_label))", "changed y in place"),
    "one drop decision for the whole batch": (
        "diffusion.guidance", "ddpm.py", DROP, "drop = (torch.rand(1) < p).expand(y.shape)",
        "expected about 30%"),
    "the cosine schedule in float32 (the handout: float64)": (
        "diffusion.schedule", "ddpm.py", "u = torch.arange(T + 1, dtype=torch.float64) / T",
        "u = torch.arange(T + 1) / T", "compute the cosine schedule in float64"),
    "the model called with cond= as a keyword (ClassConditionalUNet names it y)": (
        "diffusion.loss", "ddpm.py", "return F.mse_loss(model(x_t, t, cond), noise)",
        "return F.mse_loss(model(x_t, t, cond=cond), noise)", "positional-only"),
    "the unconditional pass at t = 0": (
        "diffusion.guidance", "ddpm.py", "eps_u = model(x, t, torch.full_like(y, null_label))",
        "eps_u = model(x, torch.zeros_like(t), torch.full_like(y, null_label))", "guided_eps(w = 1.5)"),
    "p_sample assumes images (coefficients viewed as (1, 1, 1, 1))": (
        "diffusion.p_sample", "ddpm.py",
        'mean = s["posterior_mean_coef1"] * x0_hat + s["posterior_mean_coef2"] * x_t',
        'c1, c2 = (schedule[k][t].float().view(1, 1, 1, 1) for k in ("posterior_mean_coef1", '
        '"posterior_mean_coef2"))\n    mean = c1 * x0_hat + c2 * x_t', "p_sample on vectors (5, 9)"),
    "drop_labels with the null label hard-coded as 10": (
        "diffusion.guidance", "ddpm.py", "return torch.where(drop, torch.full_like(y, null_label), y)",
        "return torch.where(drop, torch.full_like(y, 10), y)", "labels other than y or null_label"),
    "drop_labels returns float labels": (
        "diffusion.guidance", "ddpm.py", "return torch.where(drop, torch.full_like(y, null_label), y)",
        "return torch.where(drop, null_label * torch.ones(len(y)), y)", "keep y's dtype"),
    "x0_hat clipped only for t > 0": (
        "diffusion.p_sample", "ddpm.py", "    if clip:\n        x0_hat", "    if clip and t > 0:\n        x0_hat",
        "p_sample(clip=True) at t = 0"),
    "callback(x, t)": (
        "diffusion.sample", "ddpm.py", "            callback(t, x)", "            callback(x, t)",
        "callback(t, x) was called at t = [None"),
    "the posterior variance is beta_t (abar_t for abar_{t-1})": (
        "diffusion.schedule", "ddpm.py", '"posterior_variance": betas * (1 - abar_prev) / (1 - abar),\n        "posterior_mean_coef1"',
        '"posterior_variance": betas * (1 - abar) / (1 - abar),\n        "posterior_mean_coef1"', "posterior_variance[0] is"),
    "codes not standardised": (
        "diffusion.latent", "latent.py", "return (vae.encode(x) - mean) / std",
        "return vae.encode(x)", "not standardised"),
    "from_latent returns logits": (
        "diffusion.latent", "latent.py", "return torch.sigmoid(vae.decode(z * std + mean))",
        "return vae.decode(z * std + mean)", "logits returned"),
    "the biased std": (
        "diffusion.latent", "latent.py", "return z.mean(0), z.std(0)",
        "return z.mean(0), z.std(0, unbiased=False)", "biased"),
    "stats in train mode": (
        "diffusion.latent", "latent.py", "    vae.eval()\n", "", "vae.eval()"),
    "time added outside the block's SiLU": (
        "diffusion.latent", "latent.py",
        "return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.time(F.silu(temb))))",
        "return h + self.fc2(F.silu(self.fc1(self.norm(h)))) + self.time(F.silu(temb))",
        "outside the block's SiLU"),
    "the label unused": (
        "diffusion.latent", "latent.py", "h = self.proj_in(z) + self.label_embed(y)",
        "h = self.proj_in(z)", "label not used"),
}


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, tmp_path):
    task, file, old, new, words = MISTAKES[name]
    folder = variant(tmp_path, "diffusion", {file: [(old, new)]})
    row, messages = grade_task(folder, task)
    assert row["earned"] < row["possible"], f"{name}: not caught"
    assert words.lower() in messages.lower(), f"{name}: {messages}"


def test_the_training_check_catches_a_loss_that_targets_x0(tmp_path):
    """Only the training check: a denoiser trained to output x0 fails the mark."""
    folder = variant(tmp_path, "diffusion", {"ddpm.py": [(
        "return F.mse_loss(model(x_t, t, cond), noise)", "return F.mse_loss(model(x_t, t, cond), x0)")]})
    lab = load_lab("diffusion")
    lab = Lab(lab.name, lab.tasks, [c for c in lab.checks if c.name in SLOW])
    [result] = grade(lab, folder, "diffusion.loss")
    assert result.status == "failed" and "epsilon MSE" in result.message


ALTERNATIVES = {
    # name: (task, file, [(old, new), ...])
    "betas stored in float32 (as diffusers stores them)": ("diffusion.schedule", "ddpm.py", [
        ("betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)     # (T,)",
         "betas = torch.linspace(beta_start, beta_end, T)"),
        ("    alphas = 1 - betas\n    abar", "    betas = betas.float()\n    alphas = 1 - betas\n    abar"),
        (PAD, "abar_prev = torch.cat([torch.ones(1), abar[:-1]])")]),
    "the linear schedule all in float32": ("diffusion.schedule", "ddpm.py", [
        ("betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)     # (T,)",
         "betas = torch.linspace(beta_start, beta_end, T)"),
        (PAD, "abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])")]),
    "abar_prev with F.pad": ("diffusion.schedule", "ddpm.py", [
        (PAD, "abar_prev = F.pad(abar[:-1], (1, 0), value=1.0)")]),
    "q_sample without gather": ("diffusion.q_sample", "ddpm.py", [
        ('abar = gather(schedule["alphas_cumprod"], t, x0)                # (B, 1, 1, 1)',
         'abar = schedule["alphas_cumprod"][t].to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))')]),
    "loss written out, t from torch.randint(T, ...)": ("diffusion.loss", "ddpm.py", [
        (TDRAW, "t = torch.randint(T, size=(x0.shape[0],))"),
        ("return F.mse_loss(model(x_t, t, cond), noise)",
         "return (model(x_t, t, cond) - noise).pow(2).mean()")]),
    "the mean from eps (no x0_hat) when not clipping": ("diffusion.p_sample", "ddpm.py", [
        (CLIP, """    if clip:
        x0_hat = x0_hat.clamp(-1, 1)
        mean = s["posterior_mean_coef1"] * x0_hat + s["posterior_mean_coef2"] * x_t
    else:
        beta = schedule["betas"][t].item()
        mean = (x_t - beta / math.sqrt(1 - s["alphas_cumprod"]) * eps) / math.sqrt(1 - beta)""")]),
    "a while loop with t as a tensor": ("diffusion.sample", "ddpm.py", [
        ("""    for t in reversed(range(T)):
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=x.device)   # (B,)""",
         """    t = T
    while t > 0:
        t -= 1
        t_batch = torch.ones(shape[0], dtype=torch.long, device=x.device) * t""")]),
    "embedding with torch.outer and a power": ("diffusion.time_embedding", "unet.py", [
        ("""    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / half)   # (half,)
    args = t.float()[:, None] * freqs[None]                          # (B, half)""",
         """    freqs = max_period ** (-torch.arange(half, dtype=torch.float64) / half)
    args = torch.outer(t.double(), freqs)"""),
        ("    return emb\n", "    return emb.float()\n")]),
    "ResBlock with the skip made first and nn.SiLU modules": ("diffusion.resblock", "unet.py", [
        ("""        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1""", """        self.skip = (nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels
                     else nn.Identity())
        self.act = nn.SiLU()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1"""),
        (NORM1, "h = self.conv1(self.act(self.norm1(x)))"),
        ("h = h + self.time_proj(F.silu(temb))[:, :, None, None]",
         "h = h + self.time_proj(self.act(temb)).unsqueeze(-1).unsqueeze(-1)")]),
    "einsum attention": ("diffusion.cross_attention", "unet.py", [
        (SCALE, "att = torch.einsum('bhnd,bhld->bhnl', q, k) * (D // h) ** -0.5"),
        ("out = att.softmax(dim=-1) @ v ", "out = torch.einsum('bhnl,bhld->bhnd', att.softmax(-1), v)")]),
    "scaled_dot_product_attention": ("diffusion.cross_attention", "unet.py", [
        (SCALE, "att = None"),
        ("out = att.softmax(dim=-1) @ v ", "out = F.scaled_dot_product_attention(q, k, v)")]),
    "guidance in one batched call": ("diffusion.guidance", "ddpm.py", [
        ("""    eps_c = model(x, t, y)                                           # (B, C, H, W)
    eps_u = model(x, t, torch.full_like(y, null_label))              # (B, C, H, W)""",
         """    both = model(torch.cat([x, x]), torch.cat([t, t]),
                 torch.cat([y, torch.full_like(y, null_label)]))
    eps_c, eps_u = both.chunk(2)"""),
        (GUIDE, "return eps_c + w * (eps_c - eps_u)")]),
    "drop_labels with bernoulli and masked_fill": ("diffusion.guidance", "ddpm.py", [
        (DROP, "drop = torch.bernoulli(torch.full(y.shape, float(p))).bool()"),
        ("return torch.where(drop, torch.full_like(y, null_label), y)",
         "return y.masked_fill(drop, null_label)")]),
    # red-team round (2026-12-02)
    "cosine betas from abar = f(u) / f(0)": ("diffusion.schedule", "ddpm.py", [
        (CAP, "ab = f(u) / f(u[:1])\n        betas = (1 - ab[1:] / ab[:-1]).clamp(max=0.999)")]),
    "abar in log space": ("diffusion.schedule", "ddpm.py", [
        ("abar = torch.cumprod(alphas, dim=0)  ", "abar = torch.exp(torch.cumsum(torch.log(alphas), dim=0))  ")]),
    "q_sample in float64, cast back": ("diffusion.q_sample", "ddpm.py", [
        ('abar = gather(schedule["alphas_cumprod"], t, x0)',
         'abar = schedule["alphas_cumprod"][t].view(-1, *[1] * (x0.ndim - 1))'),
        ("return abar.sqrt() * x0 + (1 - abar).sqrt() * noise",
         "return (abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise.double()).to(x0.dtype)")]),
    "p_sample with gather and a clamped log-variance": ("diffusion.p_sample", "ddpm.py", [
        (LAST, """    if t == 0:
        return mean
    tt = torch.full((len(x_t),), t, dtype=torch.long)
    logvar = torch.log(gather(schedule["posterior_variance"], tt, x_t).double().clamp(min=1e-20))
    return mean + torch.exp(0.5 * logvar).to(x_t.dtype) * noise""")]),
    "zero noise passed at t = 0, range(T - 1, -1, -1)": ("diffusion.sample", "ddpm.py", [
        (LOOP, "for t in range(T - 1, -1, -1):"),
        (NOISE, "x = p_sample(schedule, eps, x, t, torch.randn(x.shape) if t > 0 else torch.zeros_like(x), "
                "clip)\n        if callback")]),
    "F.dropout with self.training": ("diffusion.resblock", "unet.py", [
        (CONV2, "h = self.conv2(F.dropout(F.silu(self.norm2(h)), self.dropout.p, self.training))")]),
    "attention with baddbmm over B * heads": ("diffusion.cross_attention", "unet.py", [
        (SCALE, "att = torch.baddbmm(torch.zeros(B * h, N, k.shape[2]), q.reshape(B * h, N, -1), "
                "k.reshape(B * h, k.shape[2], -1).transpose(1, 2), beta=0, alpha=(D // h) ** -0.5"
                ").view(B, h, N, -1)")]),
    "tokens column-major both ways (attention does not see the order)": ("diffusion.cross_attention", "unet.py", [
        ("h = x.flatten(2).transpose(1, 2)", "h = x.transpose(2, 3).flatten(2).transpose(1, 2)"),
        ("return h.transpose(1, 2).reshape(B, C, H, W)",
         "return h.transpose(1, 2).reshape(B, C, W, H).transpose(2, 3)")]),
    "guidance as eps_u + (1 + w)(eps_c - eps_u)": ("diffusion.guidance", "ddpm.py", [
        (GUIDE, "return eps_u + (1 + w) * (eps_c - eps_u)")]),
    "the posterior variance clamped at 1e-20 (as improved DDPM logs it)": ("diffusion.schedule", "ddpm.py", [
        ('"posterior_variance": betas * (1 - abar_prev) / (1 - abar),\n        "posterior_mean_coef1"',
         '"posterior_variance": (betas * (1 - abar_prev) / (1 - abar)).clamp(min=1e-20),\n'
         '        "posterior_mean_coef1"')]),
    "the scale applied to q before the product": ("diffusion.cross_attention", "unet.py", [
        (SCALE, "att = (q * (D // h) ** -0.5) @ k.transpose(-2, -1)")]),
    "latent stats with torch.var_mean, SiLU written out": ("diffusion.latent", "latent.py", [
        ("return z.mean(0), z.std(0)", "var, m = torch.var_mean(z, dim=0)\n    return m, var.sqrt()"),
        ("return self.proj_out(F.silu(self.norm_out(h)))",
         "h = self.norm_out(h)\n        return self.proj_out(h * torch.sigmoid(h))")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, tmp_path):
    task, file, edits = ALTERNATIVES[name]
    folder = variant(tmp_path, "diffusion", {file: edits})
    row, messages = grade_task(folder, task)
    assert row["earned"] == row["possible"], f"{name}: {messages}"


# ------------------------------------------------- the references against diffusers

def _grader():
    load_lab("diffusion")
    import sys
    return sys.modules["_vislab_autograder.diffusion"]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_reference_schedule_and_q_sample_equal_diffusers(kind):
    diffusers = pytest.importorskip("diffusers")
    ref = _grader()
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule={
        "linear": "linear", "cosine": "squaredcos_cap_v2"}[kind])
    mine = ref.ref_schedule(1000, kind)
    assert torch.allclose(sched.betas.double(), mine["betas"], rtol=1e-5, atol=1e-9)
    assert torch.allclose(sched.alphas_cumprod.double(), mine["alphas_cumprod"], rtol=1e-4, atol=1e-9)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 2, 5, 3, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 17, 500, 998, 999])
    sched.alphas_cumprod = torch.cumprod(1 - mine["betas"], 0)     # float64 inside diffusers
    want = sched.add_noise(x0, noise, t)
    assert torch.allclose(ref.ref_q(mine, x0, t, noise), want, atol=1e-12)


@pytest.mark.parametrize("clip", [False, True])
def test_reference_step_equals_diffusers_fixed_small(clip):
    diffusers = pytest.importorskip("diffusers")
    ref = _grader()
    mine = ref.ref_schedule(1000)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, variance_type="fixed_small",
                                    clip_sample=clip)
    sched.betas = mine["betas"].clone()
    sched.alphas = 1 - sched.betas
    sched.alphas_cumprod = torch.cumprod(sched.alphas, 0)
    sched.one = torch.tensor(1.0, dtype=torch.float64)
    sched.set_timesteps(1000)
    g = torch.Generator().manual_seed(1)
    for t in (999, 500, 1, 0):
        x_t = 3 * torch.randn(2, 1, 4, 5, generator=g, dtype=torch.float64)
        eps = torch.randn(x_t.shape, generator=g, dtype=torch.float64)
        state = torch.Generator().manual_seed(t)
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        want = sched.step(eps, t, x_t, generator=state).prev_sample
        got = ref.ref_step(mine, eps, x_t, t, noise, clip=clip)
        assert torch.allclose(got, want, atol=1e-10), t
    assert mine["posterior_variance"][0] == 0


def test_the_solution_samples_with_a_respaced_schedule():
    """respace keeps the chosen abar and the last step; the sampler visits each kept step."""
    from vislab.impl import import_lab

    ddpm = import_lab(SOLUTIONS_DIR / "diffusion").ddpm
    sched = ddpm.make_schedule(1000)
    new, kept = ddpm.respace(sched, 10)
    assert kept[0] == 0 and kept[-1] == 999 and len(kept) == 10
    assert torch.allclose(new["alphas_cumprod"], sched["alphas_cumprod"][kept])
    seen = []
    model = ddpm.respaced_model(lambda x, t, c: seen.append(int(t[0])) or torch.zeros_like(x), kept)
    out = ddpm.sample(model, new, (2, 1, 3, 3))
    assert seen == kept.flip(0).tolist() and out.shape == (2, 1, 3, 3)


@pytest.mark.parametrize("argv, words", [
    (["--p-uncond", "1.5"], "--p-uncond must be"),
    (["--sample-steps", "20", "--T", "10"], "more than --T"),
    (["--part", "latent", "--vae", "/nonexistent/checkpoint.pt"], "no such file"),
])
def test_bad_options_get_one_line(argv, words, capsys):
    from vislab.cli import main

    assert main(["train", "diffusion", "--impl", "solutions", *argv]) == 2
    assert words in capsys.readouterr().err


def test_a_file_that_is_not_a_vae_checkpoint_gets_one_line(tmp_path, capsys):
    from vislab.cli import main

    path = tmp_path / "checkpoint.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    code = main(["train", "diffusion", "--impl", "solutions", "--part", "latent", "--vae", str(path),
                 "--out", str(tmp_path / "run")])
    assert code == 2 and "is not a VAE run's checkpoint" in capsys.readouterr().err


def test_the_kits_vae_is_read_from_its_folder_and_never_overwritten(tmp_path, monkeypatch):
    """A finished VAE in runs/diffusion/vae-mnist5k-d16-seed<seed>/ is loaded as it is (no
    training, the file untouched); a VAE run's checkpoint given with --vae loads the same way."""
    import argparse

    from vislab.impl import import_lab
    from vislab.training import Dist

    lab = import_lab(SOLUTIONS_DIR / "diffusion")
    lt = lab.latent_train
    monkeypatch.setattr(lt, "RUNS_DIR", tmp_path)
    vae = lab.vae_model.VAE(lab.vae_model.VAEConfig(channels=(16, 32), hidden=256, latent_dim=16))
    folder = tmp_path / "diffusion" / "vae-mnist5k-d16-seed3"
    folder.mkdir(parents=True)
    path = folder / "checkpoint.pt"
    torch.save({"model": vae.state_dict(), "epoch": lt.VAE_EPOCHS,
                "meta": {"kind": "vae", "config": vae.config.__dict__}}, path)
    before = path.stat().st_mtime_ns
    args = argparse.Namespace(seed=3)
    loaded, source = lt.kit_vae(args, Dist(torch.device("cpu")), None, None)
    assert source == path and path.stat().st_mtime_ns == before
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values()))
    assert torch.equal(lt.load_vae(path).fc_mu.weight, vae.fc_mu.weight)
