"""Probes for the self-supervised lab: run the student's code on the grader's weights and inputs.

Each probe receives `lab` (the student's modules) and plain inputs, and returns plain values;
the checks in autograder/ssl.py compare them with references. Where a task's code calls another
task's (the encoder calls random_masking, the combined loss calls the encoder, mae_loss and
info_nce, ...), the probe puts the reference below in its place, so one unfinished task does not
cost the next its points. The reference masking draws its order from noise the grader sends, so
the grader knows every mask. Nothing here is secret.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.probing import (ProbeFailed, forward_backward, gradients, load_weights, replaced,
                            returned)


# ------------------------------------------------------------ the reference parts (torch ops)

def masking_from_noise(noise: torch.Tensor, mask_ratio: float):
    """MAE's masking with a given noise (B, N): (ids_keep (B, K), mask (B, N), ids_restore)."""
    B, N = noise.shape
    keep = round(N * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(B, N, dtype=noise.dtype)
    mask[:, :keep] = 0
    return ids_shuffle[:, :keep], torch.gather(mask, 1, ids_restore), ids_restore


def noise_masking(noises: list[torch.Tensor] | None):
    """A random_masking that takes its noise from the grader's list, one per call (or, with
    None, draws it from torch's generator)."""
    queue = list(noises) if noises is not None else None

    def random_masking(x, mask_ratio):
        if queue is None:
            noise = torch.rand(x.shape[:2])
        elif not queue:
            raise ProbeFailed("random_masking was called more often than the task says (once per "
                              "encoder call)")
        else:
            noise = queue.pop(0)
        if noise.shape != x.shape[:2]:
            raise ProbeFailed(f"random_masking was called on tokens of shape {tuple(x.shape)}; "
                              f"expected (B, N, D) = ({', '.join(map(str, noise.shape))}, D)")
        ids_keep, mask, ids_restore = masking_from_noise(noise, mask_ratio)
        kept = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, x.shape[-1]).to(x.device))
        return kept, mask.to(x), ids_restore.to(x.device)
    return random_masking


class _Block(nn.Module):
    """A pre-norm transformer block under the handout's names (the ViT lab's Block)."""

    def __init__(self, dim, heads, mlp_dim):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, D)
        x = x + self.attn.proj(a)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class Encoder(nn.Module):
    """The reference MAE encoder (handout names), with a given masking function."""

    def __init__(self, config: dict, masking=None):
        super().__init__()
        c = self.c = config
        self.config = type("Config", (), config)  # encoder.config.patch_size, .dim
        n = (c["image_size"] // c["patch_size"]) ** 2
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(c["in_channels"], c["dim"], c["patch_size"], c["patch_size"])
        self.patch_embed.patch_size = c["patch_size"]  # as the ViT lab's PatchEmbed
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c["dim"]))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, c["dim"]) * 0.02)
        self.blocks = nn.ModuleList([_Block(c["dim"], c["num_heads"], c["mlp_dim"])
                                     for _ in range(c["depth"])])
        self.norm = nn.LayerNorm(c["dim"], eps=1e-6)
        self.masking = masking or noise_masking(None)

    def forward(self, x, mask_ratio):
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        t, mask, ids_restore = self.masking(t, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(len(x), -1, -1)
        h = torch.cat([cls, t], 1)
        for b in self.blocks:
            h = b(h)
        return self.norm(h), mask, ids_restore


class Decoder(nn.Module):
    """The reference MAE decoder (handout names)."""

    def __init__(self, config: dict):
        super().__init__()
        c = config
        self.config = type("Config", (), config)
        n, Dd = (c["image_size"] // c["patch_size"]) ** 2, c["decoder_dim"]
        self.embed = nn.Linear(c["dim"], Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, Dd) * 0.02)
        self.blocks = nn.ModuleList([_Block(Dd, c["decoder_heads"], c["decoder_mlp_dim"])
                                     for _ in range(c["decoder_depth"])])
        self.norm = nn.LayerNorm(Dd, eps=1e-6)
        self.pred = nn.Linear(Dd, c["patch_size"] ** 2 * c["in_channels"])

    def forward(self, latent, ids_restore):
        h = self.embed(latent)
        B, N = ids_restore.shape
        p = torch.cat([h[:, 1:], self.mask_token.expand(B, N + 1 - h.shape[1], -1)], 1)
        p = torch.gather(p, 1, ids_restore[..., None].expand(-1, -1, h.shape[-1]))
        h = torch.cat([h[:, :1], p], 1) + self.pos_embed
        for b in self.blocks:
            h = b(h)
        return self.pred(self.norm(h))[:, 1:]


class Head(nn.Sequential):
    """The reference projection head: fc1 -> GELU -> fc2."""

    def __init__(self, dim, hidden, out):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out)


def patchify(images, P):
    """(B, C, H, W) -> (B, N, P*P*C) by F.unfold (which orders each patch (C, P, P))."""
    B, C = images.shape[:2]
    u = F.unfold(images, P, stride=P)                        # (B, C*P*P, N)
    return u.reshape(B, C, P * P, -1).permute(0, 3, 2, 1).reshape(B, u.shape[-1], -1)


def mae_loss(pred, images, mask, patch_size):
    per_patch = ((pred - patchify(images, patch_size)) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum()


def info_nce(z1, z2, temperature=0.1):
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    s = u @ u.T / temperature
    s = s - torch.eye(len(u), dtype=s.dtype) * 1e9
    B = len(z1)
    return F.cross_entropy(s, torch.cat([torch.arange(B, 2 * B), torch.arange(B)]))


# ------------------------------------------------------------------------------------ probes

def masking(lab, x, mask_ratio, seed, calls=1, grad_out=None):
    """random_masking's (x_kept, mask, ids_restore); with calls=2 also the mask of a second
    call on the same tokens (torch's generator seeded once, before the first); with grad_out
    also the gradient of <x_kept, grad_out> wrt x (None where none reaches x)."""
    torch.manual_seed(seed)
    results = []
    for call in range(calls):
        leaf = x.clone().requires_grad_()
        out = lab.mae.random_masking(leaf, mask_ratio)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise ProbeFailed("random_masking must return (x_kept, mask, ids_restore)")
        out = [returned(o, "random_masking") for o in out]
        results.extend(out if call == 0 else out[1:2])
        if call == 0 and grad_out is not None:
            kept = out[0]
            if kept.requires_grad and kept.shape == grad_out.shape:
                (kept * grad_out).sum().backward()
            grad = leaf.grad
    return results + [grad] if grad_out is not None else results


def _mae_modules(lab, noises):
    return replaced(lab.mae, random_masking=noise_masking(noises))


def encoder(lab, config, state, x, noises, mask_ratio, grad_out=None):
    """The student's MAEEncoder with the grader's weights and masks (random_masking replaced);
    its latent, mask, ids_restore and, with grad_out, gradients of <latent, grad_out>."""
    with _mae_modules(lab, noises):
        m = load_weights(lab.mae.MAEEncoder(lab.mae.MAEConfig(**config)), state, "MAEEncoder")
        out = m(x, mask_ratio)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise ProbeFailed("MAEEncoder must return (latent, mask, ids_restore)")
        latent, mask, ids = (returned(o, "MAEEncoder") for o in out)
        grads = None
        if grad_out is not None and latent.shape == grad_out.shape and latent.requires_grad:
            (latent * grad_out).sum().backward()
            grads = gradients(m)
    return {"latent": latent, "mask": mask, "ids_restore": ids, "grads": grads}


def decoder(lab, config, state, latent, ids_restore, grad_out=None):
    m = load_weights(lab.mae.MAEDecoder(lab.mae.MAEConfig(**config)), state, "MAEDecoder")
    return forward_backward(m, latent, grad_out, "MAEDecoder", ids_restore)


def patchify_probe(lab, images, patch_size):
    return returned(lab.mae.patchify(images, patch_size), "patchify")


def loss_probe(lab, pred, images, mask, patch_size):
    pred = pred.clone().requires_grad_()
    loss = returned(lab.mae.mae_loss(pred, images, mask, patch_size), "mae_loss")
    if loss.requires_grad:
        loss.backward()
    return {"loss": loss, "grad": pred.grad}


def pretrain(lab, config, images, seed, steps, batch_size, lr):
    """Pretrain the reference MAE (masking, encoder, decoder) with the student's mae_loss;
    return the trained weights. The grader loads them into its own MAE and measures the masked
    loss on images this process never receives."""
    torch.manual_seed(seed)
    enc, dec = Encoder(config), Decoder(config)
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1, (i + 1) / 10) * (1 - i / steps))
    for _ in range(steps):
        x = images[torch.randint(0, len(images), (batch_size,))]
        latent, mask, ids = enc(x, config["mask_ratio"])
        loss = returned(lab.mae.mae_loss(dec(latent, ids), x, mask, config["patch_size"]), "mae_loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return {"encoder": dict(enc.state_dict()), "decoder": dict(dec.state_dict())}


def nce(lab, z1, z2, temperature):
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = returned(lab.contrastive.info_nce(a, b, temperature), "info_nce")
    if loss.requires_grad:
        loss.backward()
    return {"loss": loss, "grad1": a.grad, "grad2": b.grad}


def combined(lab, config, state, view1, view2, noises, mask_ratio, weight, temperature,
             head_dims):
    """The student's combined_loss with the grader's reference encoder (masks from the grader's
    noise), decoder and head, and reference mae_loss and info_nce in place of the student's."""
    enc = Encoder(config, noise_masking(noises))
    dec, head = Decoder(config), Head(*head_dims)
    for prefix, m in (("encoder.", enc), ("decoder.", dec), ("head.", head)):
        m.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    refs = {"mae_loss": mae_loss, "info_nce": info_nce}
    with replaced(lab.contrastive, **refs), replaced(lab.mae, mae_loss=mae_loss):
        out = lab.contrastive.combined_loss(enc, dec, head, view1, view2, mask_ratio=mask_ratio,
                                            weight=weight, temperature=temperature)
    if type(out) is not dict or not {"loss", "mae", "nce"} <= set(out):
        raise ProbeFailed('combined_loss must return a dict with "loss", "mae" and "nce"')
    values = {k: returned(out[k], f"combined_loss's {k!r}") for k in ("loss", "mae", "nce")}
    grads = None
    if values["loss"].requires_grad:
        values["loss"].backward()
        grads = {p + k: v for p, m in (("encoder.", enc), ("decoder.", dec), ("head.", head))
                 for k, v in gradients(m).items()}
    return {**values, "grads": grads}


def classifier(lab, config, state, num_classes, x, grad_out=None, train=False):
    """The student's Classifier around the reference encoder (the grader's weights), in train
    or eval mode."""
    enc = Encoder(config)
    enc.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
    m = lab.finetune.Classifier(enc, num_classes)
    load_weights(m, state, "Classifier")
    torch.manual_seed(0)
    return forward_backward(m.train(train), x, grad_out, "Classifier")


def trainable(lab, config, state, mode, x, y, lr, frozen=True):
    """trainable_parameters on a Classifier (reference encoder; everything frozen first, or with
    frozen=False everything trainable first, as a new model), one SGD step: names of the
    returned parameters (found by identity), gradients, state after."""
    enc = Encoder(config)
    m = lab.finetune.Classifier(enc, 3)
    load_weights(m, state, "Classifier")
    m.requires_grad_(not frozen)
    params = lab.finetune.trainable_parameters(m, mode)
    if not hasattr(params, "__iter__"):
        raise ProbeFailed(f"trainable_parameters must return a list of parameters, got "
                          f"{type(params).__name__}")
    params = list(params)
    ids = {id(p): n for n, p in m.named_parameters()}
    names = [ids.get(id(p), "<not a parameter of the model>") for p in params]
    loss = F.cross_entropy(m(x), y)
    if loss.requires_grad:
        loss.backward()
    trained = [p for p in params if isinstance(p, torch.Tensor) and p.requires_grad]
    if trained:
        torch.optim.SGD(trained, lr=lr).step()
    return {"returned": names, "grads": gradients(m), "state": dict(m.state_dict())}


# --------------------------------------------------------------------------------- video

class VideoTokens(nn.Module):
    """The reference VideoPatchEmbed (handout names)."""

    def __init__(self, config: dict):
        super().__init__()
        c = config
        t, P = c["tubelet"], c["patch_size"]
        steps, patches = c["frames"] // t, (c["image_size"] // P) ** 2
        self.proj = nn.Conv3d(c["in_channels"], c["dim"], (t, P, P), (t, P, P))
        self.time_embed = nn.Parameter(torch.zeros(steps, c["dim"]))
        self.space_embed = nn.Parameter(torch.zeros(patches, c["dim"]))

    def forward(self, video):
        x = self.proj(video.transpose(1, 2))                          # (B, D, S, h, w)
        x = x.flatten(3).permute(0, 2, 3, 1)                          # (B, S, hw, D)
        x = x + self.time_embed[:, None] + self.space_embed[None]
        return x.flatten(1, 2)


def video_patchify(video, tubelet, patch_size):
    B, T, C, H, W = video.shape
    t, P = tubelet, patch_size
    x = video.reshape(B, T // t, t, C, H // P, P, W // P, P).permute(0, 1, 4, 6, 2, 5, 7, 3)
    return x.reshape(B, -1, t * P * P * C)


def video_tokens(lab, config, state, video, grad_out=None):
    m = load_weights(lab.video.VideoPatchEmbed(lab.video.VideoMAEConfig(**config)), state,
                     "VideoPatchEmbed")
    return forward_backward(m, video, grad_out, "VideoPatchEmbed")


def video_patchify_probe(lab, video, tubelet, patch_size):
    return returned(lab.video.video_patchify(video, tubelet, patch_size), "video_patchify")


def video_mae(lab, config, state, video, noises, mask_ratio, backward=False):
    """The student's VideoMAE.forward with reference tokens, patchify and masking (the
    grader's noise) in place: loss, pred, mask and, with backward, the loss's gradients."""
    masking = noise_masking(noises)
    refs = {"VideoPatchEmbed": lambda c: VideoTokens(vars(c) if not isinstance(c, dict) else c),
            "video_patchify": video_patchify, "random_masking": masking}
    # random_masking in mae.py too: `from . import mae; mae.random_masking(...)` calls it by name
    with replaced(lab.video, **refs), replaced(lab.mae, random_masking=masking):
        m = lab.video.VideoMAE(lab.video.VideoMAEConfig(**config))
        load_weights(m, state, "VideoMAE")
        out = m(video, mask_ratio)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise ProbeFailed("VideoMAE.forward must return (loss, pred, mask)")
        loss, pred, mask = (returned(o, "VideoMAE") for o in out)
        grads = None
        if backward and loss.requires_grad:
            loss.backward()
            grads = gradients(m)
    return {"loss": loss, "pred": pred, "mask": mask, "grads": grads}


# ------------------------------------- float64 references the grader computes with the parts above

def reference_encoder(state, config, x, noise, ratio, variant=None):
    """The grader's encoder in float64 with the masks of `noise`; variants are known mistakes."""
    ref = Encoder(config, noise_masking([noise.double()]))
    ref.load_state_dict(state)
    ref = ref.double()
    xd = x.double()
    if variant is None:
        return ref(xd, ratio)[0].detach()
    t = ref.patch_embed.proj(xd).flatten(2).transpose(1, 2)          # (B, N, D)
    ids_keep, _, _ = masking_from_noise(noise, ratio)
    if variant == "pos after masking":
        t = torch.gather(t, 1, ids_keep[..., None].expand(-1, -1, t.shape[-1]))
        t = t + ref.pos_embed[:, 1:1 + t.shape[1]]
    else:
        t = t + ref.pos_embed[:, 1:]
        t = torch.gather(t, 1, ids_keep[..., None].expand(-1, -1, t.shape[-1]))
    cls = ref.cls_token if variant == "no cls position" else ref.cls_token + ref.pos_embed[:, :1]
    h = torch.cat([cls.expand(len(x), -1, -1), t], 1)
    for b in ref.blocks:
        h = b(h)
    return (h if variant == "no norm" else ref.norm(h)).detach()


def reference_decoder(state, config, latent, ids_restore, variant=None):
    ref = Decoder(config)
    ref.load_state_dict(state)
    ref = ref.double()
    h = ref.embed(latent.double())
    B, N = ids_restore.shape
    p = torch.cat([h[:, 1:], ref.mask_token.expand(B, N + 1 - h.shape[1], -1)], 1)
    if variant == "mask tokens first":
        p = torch.cat([ref.mask_token.expand(B, N + 1 - h.shape[1], -1), h[:, 1:]], 1)
    index = ids_restore
    if variant == "ids_shuffle":
        index = torch.argsort(ids_restore, 1)
    if variant != "no unshuffle":
        p = torch.gather(p, 1, index[..., None].expand(-1, -1, h.shape[-1]))
    h = torch.cat([h[:, :1], p], 1)
    if variant != "no pos":
        h = h + ref.pos_embed
    for b in ref.blocks[:1] if variant == "first block" else ref.blocks:
        h = b(h)
    return ref.pred(ref.norm(h))[:, 1:].detach()


def nce_loop(z1, z2, tau, variant=None):
    """NT-Xent by a float64 loop over the 2B anchors; variants are known mistakes."""
    u = torch.cat([z1, z2]).double()
    if variant != "no normalise":
        u = u / u.norm(dim=1, keepdim=True)
    B = len(z1)
    t = tau * tau if variant == "tau twice" else tau
    anchors = range(B) if variant == "one direction" else range(2 * B)
    losses = []
    for i in anchors:
        pos = (i + B) % (2 * B)
        s = lambda k: (u[i] @ u[k]) / t  # noqa: E731
        if variant == "cross only":
            others = [k for k in (range(B, 2 * B) if i < B else range(B))]
        elif variant == "positive left out":
            others = [k for k in range(2 * B) if k not in (i, pos)]
        elif variant == "diagonal kept":
            others = list(range(2 * B))
        else:
            others = [k for k in range(2 * B) if k != i]
        denom = torch.logsumexp(torch.stack([s(k) for k in others]), 0) if others \
            else torch.tensor(float("-inf"), dtype=torch.float64)
        losses.append(denom - s(pos))
    return torch.stack(losses).mean()


def combined_reference(config, head_dims, state, view1, view2, noise_list, ratio, weight, tau,
                       variant=None, grads=False):
    """The combined loss in float64 from the grader's own parts and masks; a dict of tensors
    (and gradients by name with `grads`)."""
    c = config
    enc = Encoder(c, noise_masking([n.double() for n in noise_list]))
    dec, head = Decoder(c), Head(*head_dims)
    for p, m in (("encoder.", enc), ("decoder.", dec), ("head.", head)):
        m.load_state_dict({k[len(p):]: v for k, v in state.items() if k.startswith(p)})
        m.double()
    maes, cls = [], []
    for view in (view1.double(), view2.double()):
        latent, mask, ids = enc(view, ratio)
        maes.append(mae_loss(dec(latent, ids), view, mask, c["patch_size"]))
        cls.append(latent[:, 0] if variant == "no head" else head(latent[:, 0]))
    mae = maes[0] if variant == "view1 only" else (maes[0] + maes[1]) / 2
    nce = info_nce(cls[0], cls[1], tau)
    w = 1 - weight if variant == "swapped" else weight
    loss = (1 - w) * mae + w * nce
    out = {"loss": loss, "mae": mae, "nce": nce}
    if grads:
        loss.backward()
        out["grads"] = {f"{p}{k}": v.grad.float() for p, m in
                        (("encoder.", enc), ("decoder.", dec), ("head.", head))
                        for k, v in m.named_parameters()}
    return out


def video_mae_reference(state, config, video, noise, ratio, variant=None, grads=False):
    """The video MAE in float64 from the grader's parts and masks: (loss, pred[, grads])."""
    c = config
    tokens = VideoTokens(c)
    tokens.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("patch_embed.")})
    blocks = nn.ModuleList([_Block(c["dim"], c["num_heads"], c["mlp_dim"])
                            for _ in range(c["depth"])])
    dblocks = nn.ModuleList([_Block(c["decoder_dim"], c["decoder_heads"],
                                           c["decoder_mlp_dim"]) for _ in range(c["decoder_depth"])])
    m = nn.Module()
    m.patch_embed, m.blocks, m.decoder_blocks = tokens, blocks, dblocks
    m.norm, m.decoder_norm = nn.LayerNorm(c["dim"], eps=1e-6), nn.LayerNorm(c["decoder_dim"], eps=1e-6)
    m.decoder_embed = nn.Linear(c["dim"], c["decoder_dim"])
    m.mask_token = nn.Parameter(torch.zeros(1, 1, c["decoder_dim"]))
    N = (c["frames"] // c["tubelet"]) * (c["image_size"] // c["patch_size"]) ** 2
    m.decoder_pos_embed = nn.Parameter(torch.zeros(1, N, c["decoder_dim"]))
    m.pred = nn.Linear(c["decoder_dim"], c["tubelet"] * c["patch_size"] ** 2 * c["in_channels"])
    m.load_state_dict(state)
    m.double()
    v = video.double()
    ids_keep, mask, ids_restore = masking_from_noise(noise.double(), ratio)
    h = m.patch_embed(v)
    h = torch.gather(h, 1, ids_keep[..., None].expand(-1, -1, h.shape[-1]))
    for b in m.blocks[:1] if variant == "first block" else m.blocks:
        h = b(h)
    h = m.decoder_embed(m.norm(h))
    B = len(v)
    h = torch.cat([h, m.mask_token.expand(B, N - h.shape[1], -1)], 1)
    if variant != "no unshuffle":
        h = torch.gather(h, 1, ids_restore[..., None].expand(-1, -1, h.shape[-1]))
    if variant != "no pos":
        h = h + m.decoder_pos_embed
    for b in m.decoder_blocks[:1] if variant == "first decoder block" else m.decoder_blocks:
        h = b(h)
    pred = m.pred(m.decoder_norm(h))
    diff = pred - video_patchify(v, c["tubelet"], c["patch_size"])
    per = (diff ** 2 if variant == "l2" else diff.abs()).mean(-1)
    loss = per.mean() if variant == "all" else (per * mask).sum() / mask.sum()
    if grads:
        loss.backward()
        return loss, pred, {n: p.grad.float() for n, p in m.named_parameters()}
    return loss.detach(), pred.detach()
