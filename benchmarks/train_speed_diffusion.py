"""Training and sampling speed of the diffusion lab's reference UNet against diffusers'
UNet2DConditionModel configured to the same widths and depths (built from a config: nothing is
downloaded).

    python benchmarks/train_speed_diffusion.py [--repeats 3] [--batches 10] [--sample-images 8]

The lab's default CPU model (`vislab train diffusion`, train.config_for): levels of 16, 32, 32
channels at 28, 14, 7 px, one ResBlock per down level (two per up level), a cross-attention
TransformerBlock at 7 x 7 and in the middle, 4 heads, a condition of one 32-wide token (the
class embedding), time embedding 64 wide, no dropout (both models get the config's dropout). diffusers' peer: DownBlock2D, DownBlock2D, CrossAttnDownBlock2D (and the
mirrored up blocks), UNetMidBlock2DCrossAttn, layers_per_block 1, GroupNorm(8),
cross_attention_dim 32. Its transformer has a GEGLU feed-forward and proj_in / proj_out
layers that ours lacks, so it does somewhat more work per step; the parameter counts are printed.

Training: --batches optimiser steps (AdamW, batch 64, the epsilon loss with the lab's
diffusion_loss), median of --repeats runs after a warm-up, the two models taking turns.
Sampling: images per second of the lab's `sample` (T = 1000 steps, and 100 and 50 respaced
steps, 50 being the default run's), --sample-images images at once, our UNet in eval mode.
"""
import argparse
import time

import torch

from timing import alternating_medians, cpu_name, steps_seconds
from vislab import SOLUTIONS_DIR
from vislab.impl import import_lab


def diffusers_peer(config):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=config.image_size, in_channels=config.in_channels,
        out_channels=config.in_channels, block_out_channels=config.channels,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", layers_per_block=config.blocks,
        norm_num_groups=config.groups, cross_attention_dim=config.cond_dim,
        attention_head_dim=config.heads,  # diffusers reads this as the number of heads here
        dropout=config.dropout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--sample-images", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    lab = import_lab(SOLUTIONS_DIR / "diffusion")
    ddpm, unet = lab.ddpm, lab.unet
    config = lab.train.config_for(False, 1)        # train.py's default CPU model
    ours = unet.UNet(config)
    theirs = diffusers_peer(config)
    schedule = ddpm.make_schedule(1000)
    x = torch.rand(args.batches, 64, 1, 28, 28) * 2 - 1
    cond = torch.randn(args.batches, 64, 1, 32)

    def our_run():
        ours.train()
        return steps_seconds(ours.parameters(), [
            lambda i=i: ddpm.diffusion_loss(ours, schedule, x[i], cond[i]) for i in range(args.batches)])

    def their_model(x_t, t, c):
        return theirs(x_t, t, encoder_hidden_states=c).sample

    def their_run():
        theirs.train()
        return steps_seconds(theirs.parameters(), [
            lambda i=i: ddpm.diffusion_loss(their_model, schedule, x[i], cond[i])
            for i in range(args.batches)])

    t_ours, t_theirs = alternating_medians([our_run, their_run], args.repeats)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"training, {args.batches} steps of batch 64 at 28 x 28, median of {args.repeats}:")
    print(f"{'model':<40} {'params':>9} {'s/step':>8}")
    print(f"{'vislab UNet (solutions/diffusion)':<40} {count(ours):>9,} {t_ours / args.batches:>8.3f}")
    print(f"{'diffusers UNet2DConditionModel':<40} {count(theirs):>9,} {t_theirs / args.batches:>8.3f}")
    print(f"ratio ours / diffusers: {t_ours / t_theirs:.2f}x (budget 1.2x)")

    ours.eval()
    c = torch.randn(args.sample_images, 1, 32)
    for steps in (1000, 100, 50):
        sched, model = schedule, ours
        if steps < 1000:
            sched, kept = ddpm.respace(schedule, steps)
            model = ddpm.respaced_model(ours, kept)
        start = time.perf_counter()
        ddpm.sample(model, sched, (args.sample_images, 1, 28, 28), c)
        seconds = time.perf_counter() - start
        print(f"sampling {args.sample_images} images with {steps} steps: {seconds:.1f} s, "
              f"{args.sample_images / seconds:.3f} images/s")


if __name__ == "__main__":
    main()
