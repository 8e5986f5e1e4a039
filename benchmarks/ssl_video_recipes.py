"""Which video-MAE recipe reconstructs Moving MNIST digits on the CPU (docs/labs/ssl.md)?

Trains solutions.ssl.video.VideoMAE with a given config and reports, on held-out test clips
with fixed masks:
  l1        the masked-token L1 (the training loss)
  black     the L1 of predicting black (0) for the same masked tokens
  ink_l1    the L1 on the masked tokens that hold ink (a pixel > 0.5), and ink_black, predicting
            black there
  recall    the fraction of the masked ink pixels (> 0.5) predicted above 0.25
  other     the masked-token L1 when the model sees another clip's visible tokens (same masks)
A model that predicts black has l1 == black and recall 0; one that predicts where digits
usually are, whatever the clip shows (a position prior), has other == l1.

    OMP_NUM_THREADS=1 python benchmarks/ssl_video_recipes.py --patch 8 --ratio 0.5 --epochs 10
    ... --tube   # the same spatial mask in every frame (a script-only option, not the lab's)
"""
from __future__ import annotations

import argparse
import time

import torch

from vislab import SOLUTIONS_DIR
from vislab.impl import import_lab
from vislab.training import warmup_cosine

lab = import_lab(SOLUTIONS_DIR / "ssl")
video, Clips = lab.video, lab.train.Clips


def sincos(n, dim):
    """(n, dim) fixed sin-cos codes of positions 0..n-1 (Vaswani et al., 2017)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = 10_000 ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1).float()


def split_dims(dim):
    """How a width is shared: (time, row, column) dims of a sin-cos position code."""
    space = dim * 3 // 8
    return dim - 2 * space, space, space


def space_time_codes(steps, side, dim):
    """(steps, side*side, dim): [time code | row code | column code] of every token."""
    dt, ds, _ = split_dims(dim)
    hw = side * side
    t = sincos(steps, dt)[:, None].expand(steps, hw, dt)
    r = sincos(side, ds)
    rows = r[:, None].expand(side, side, ds).reshape(1, hw, ds).expand(steps, hw, ds)
    cols = r[None, :].expand(side, side, ds).reshape(1, hw, ds).expand(steps, hw, ds)
    return torch.cat([t, rows, cols], dim=-1)


def init_sincos(model):
    """Sin-cos starting values for the (still learned) positions: time_embed holds the time
    code, space_embed the row and column codes (disjoint dims, so their sum is the full code),
    decoder_pos_embed the full code of every token."""
    c = model.config
    steps, hw = c.grid
    side = c.image_size // c.patch_size
    dt = split_dims(c.dim)[0]
    codes = space_time_codes(steps, side, c.dim)                          # (S, hw, D)
    with torch.no_grad():
        model.patch_embed.time_embed.zero_()[:, :dt] = codes[:, 0, :dt]
        model.patch_embed.space_embed.zero_()[:, dt:] = codes[0, :, dt:]
        model.decoder_pos_embed.copy_(space_time_codes(steps, side, c.decoder_dim)
                                      .reshape(1, -1, c.decoder_dim))


def scaled_clips(split, n, frames, size, two=False):
    """Prototype: MovingMNIST's clips with the digits resized to size x size."""
    import numpy as np
    import torch.nn.functional as F
    from vislab.data.mnist import mnist5k
    from vislab.data.moving_mnist import SPLITS, moving_mnist_sequence
    d = mnist5k(split)[0].float()
    d = F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False)
    d = d[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    out = []
    for i in range(n):
        rng = np.random.default_rng([0, SPLITS.index(split), i])
        k = 2 if two else rng.integers(1, 3)
        out.append(moving_mnist_sequence(d[rng.choice(len(d), size=k, replace=False)], rng,
                                         frames)[0])
    return torch.from_numpy(np.stack(out)).float() / 255


def tube_masking(x, mask_ratio, frames):
    """random_masking with one spatial mask per clip, repeated in every time step."""
    B, N, D = x.shape
    hw = N // frames
    noise = torch.rand(B, 1, hw).expand(B, frames, hw).reshape(B, N)
    noise = noise + torch.arange(frames).repeat_interleave(hw)[None] * 1e-6  # ties: any order
    keep = round(N * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, D))
    mask = torch.ones(B, N)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


@torch.no_grad()
def measure(model, clips, seed=0):
    model.eval()
    torch.manual_seed(seed)
    loss, pred, mask = model(clips)
    c = model.config
    target = video.video_patchify(clips, c.tubelet, c.patch_size)      # (B, N, p)
    m = mask.bool()
    err = (pred - target).abs().mean(-1)                                  # (B, N)
    black = target.abs().mean(-1)
    ink = m & (target.amax(-1) > 0.5)
    ink_px = (target > 0.5) & m[..., None]
    torch.manual_seed(seed)                    # the same masks, another clip's visible tokens
    _, other, _ = model(clips.roll(1, 0))
    other = (other - target).abs().mean(-1)
    model.train()
    return dict(l1=err[m].mean().item(), black=black[m].mean().item(),
                other=other[m].mean().item(),
                ink_l1=err[ink].mean().item(), ink_black=black[ink].mean().item(),
                recall=(pred[ink_px] > 0.25).float().mean().item(),
                mse=((pred - target) ** 2).mean(-1)[m].mean().item(),
                mse_black=(target ** 2).mean(-1)[m].mean().item())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--tubelet", type=int, default=1)
    p.add_argument("--ratio", type=float, default=0.75)
    p.add_argument("--tube", action="store_true")
    p.add_argument("--digit-size", type=int, default=28)
    p.add_argument("--bias", type=float, default=None, help="initial pred.bias")
    p.add_argument("--two", action="store_true", help="always two digits")
    p.add_argument("--l2", action="store_true", help="diagnostic only: an L2 loss")
    p.add_argument("--sincos", action="store_true", help="sin-cos initial positions")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--ddim", type=int, default=32)
    p.add_argument("--ddepth", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--clips", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", type=int, default=64)
    p.add_argument("--save", default=None, help="save the trained state_dict here")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    c = video.VideoMAEConfig(patch_size=a.patch, tubelet=a.tubelet, mask_ratio=a.ratio,
                             dim=a.dim, depth=a.depth, mlp_dim=2 * a.dim, decoder_dim=a.ddim,
                             decoder_depth=a.ddepth, decoder_mlp_dim=2 * a.ddim)
    if a.tube:
        video.random_masking = lambda x, r: tube_masking(x, r, c.grid[0])
    t0 = time.time()
    if a.digit_size == 28 and not a.two:
        train = Clips("train", a.clips, c.frames).videos.float() / 255
        test = Clips("test", a.test, c.frames).videos.float() / 255
    else:
        train, test = (scaled_clips(s, n, c.frames, a.digit_size, a.two)
                       for s, n in (("train", a.clips), ("test", a.test)))
    print(f"data {time.time() - t0:.1f}s; {vars(a)}", flush=True)
    model = video.VideoMAE(c)
    if a.sincos:
        init_sincos(model)
    if a.bias is not None:
        torch.nn.init.constant_(model.pred.bias, a.bias)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=a.wd)
    steps = a.epochs * (len(train) // a.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(max(1, int(a.warmup * steps)),
                                                                 steps))
    t0 = time.time()
    for epoch in range(a.epochs):
        order = torch.randperm(len(train))
        for i in range(len(train) // a.batch):
            batch = train[order[i * a.batch:(i + 1) * a.batch]]
            loss, pred, mask = model(batch)
            if a.l2:
                target = video.video_patchify(batch, c.tubelet, c.patch_size)
                loss = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        r = measure(model, test)
        print(f"epoch {epoch + 1} {time.time() - t0:.0f}s train {loss.item():.4f} "
              + " ".join(f"{k} {v:.4f}" for k, v in r.items()), flush=True)
    if a.save:
        torch.save({"config": vars(a), "state": model.state_dict()}, a.save)


if __name__ == "__main__":
    main()
