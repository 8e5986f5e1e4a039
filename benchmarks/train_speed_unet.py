"""Training speed of the UNet lab's reference UNet against MONAI's BasicUNet, same depth and widths.

    pip install -e '.[bench]'      # MONAI, for this script only
    python benchmarks/train_speed_unet.py [--repeats 5] [--threads N] [--size 64]

segmentation_models_pytorch's Unet cannot be configured to this network: its encoders are
classification backbones (ResNet, EfficientNet, ...) and its decoder blocks differ. MONAI's
BasicUNet is the nearest maintained match: a double-conv encoder with max-pooling, 4 down steps,
transposed-conv up steps with concatenated skips, BatchNorm and ReLU, widths (16, 32, 64, 128,
256) -- the lab's UNet with base 16, depth 4, down=maxpool, up=transpose. Two differences
remain and are reported, not hidden: BasicUNet's last up step does not halve the channels
(a 32 -> 32 transposed conv, then a 48 -> 16 double conv; ours 32 -> 16, then 32 -> 16), and it
pads odd sizes by replication (unused here: 64 is a multiple of 16). Its convolutions are made
bias-free like ours (bias=False).

One epoch of pets-synthetic trainval (200 images), batch 64, AdamW, pixel-wise cross-entropy
over 2 classes (benchmarks/timing.py's loop), median of --repeats epochs after one warm-up
epoch each, the models taking turns. The forward FLOPs of one image (torch's FlopCounterMode)
are printed too, so that the architectural difference is visible next to the time.
"""
import argparse
from datetime import date

import torch
from torch.utils.flop_counter import FlopCounterMode

from timing import cpu_name, timed
from vislab import SOLUTIONS_DIR
from vislab.data import pets_synthetic
from vislab.impl import import_lab


def flops(model, shape) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(shape))
    model.train()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    try:
        from monai.networks.nets import BasicUNet
    except ImportError:
        raise SystemExit("this benchmark compares with MONAI's BasicUNet: pip install -e '.[bench]'")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = pets_synthetic("trainval", args.size)
    x = (torch.stack([data[i][0] for i in range(len(data))]) - 0.5) / 0.25
    y = torch.stack([data[i][1] for i in range(len(data))])[:, 0].long()  # (N, H, W) in {0, 1}
    lab = import_lab(SOLUTIONS_DIR / "unet")
    ours = lab.unet.UNet(lab.unet.UNetConfig(num_classes=2, base=16, depth=4))
    theirs = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2,
                       features=(16, 32, 64, 128, 256, 16), act="relu", norm="batch",
                       bias=False, upsample="deconv")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    shape = (1, 3, args.size, args.size)
    print(f"{date.today()}, {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    t_ours, t_theirs = timed([ours, theirs], x, y, args.repeats)
    print(f"{'model':<24} {'params':>10} {'GFLOPs/img':>11} {'s/epoch':>8}")
    print(f"{'ours (base 16, depth 4)':<24} {count(ours):>10,} {flops(ours, shape) / 1e9:>11.3f} "
          f"{t_ours:>8.2f}")
    print(f"{'MONAI BasicUNet':<24} {count(theirs):>10,} {flops(theirs, shape) / 1e9:>11.3f} "
          f"{t_theirs:>8.2f}")
    print(f"ratio ours / MONAI: {t_ours / t_theirs:.2f}x (budget 1.2x)")


if __name__ == "__main__":
    main()
