"""Training speed of the Swin-vs-CNN lab's reference models against torchvision's, same input.

    python benchmarks/train_speed_swin_cnn.py [--repeats 5] [--threads N]

One epoch of MNIST-5k (4,000 images, batch 64, AdamW, cross-entropy), the same plain loop for
every model, median of --repeats epochs after one warm-up epoch; ours and torchvision's
alternate epoch by epoch, so that a change in the machine's load hits both alike.

- Swin: torchvision's SwinTransformer with the lab's MNIST config (4x4 patches, C = 48, depths
  (2, 2), heads (3, 6), 4x4 windows, MLP ratio 4, stochastic depth 0.1) and a 1-channel patch
  projection (torchvision's is fixed at 3 channels).
- ConvNeXt: torchvision's ConvNeXt with the same stages (48 and 96 channels, 2 and 3 blocks,
  layer scale 1e-6, stochastic depth 0.1) and the lab's 1-channel 2x2 stem.
- ResNet-20: torchvision has no 6n+2 CIFAR-style ResNet (its ResNets are ImageNet-shaped: a 7x7
  stride-2 stem, max pooling, 64-512 filters), so the same 6n+2 net is built from torchvision's
  BasicBlock (the grader's reference, autograder/swin_cnn.py's CifarResNet, is what runs). The lab's ResNet
  normalises with the lab's own BatchNorm (norms.py, tensor operations: the lesson), torch's
  nn.BatchNorm2d is one fused kernel; row resnet-torchbn gives the lab's ResNet torch's
  BatchNorm too, which separates the architecture's cost from the norm's.
"""
import argparse
import sys
from datetime import date

import torch
import torch.nn as nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d
from torchvision.models.swin_transformer import SwinTransformer

from timing import cpu_name, timed
from vislab import SOLUTIONS_DIR
from vislab.data import mnist5k
from vislab.data.mnist import normalise
from vislab.grading import load_lab
from vislab.impl import import_lab


def tv_swin(c) -> nn.Module:
    m = SwinTransformer([c.patch_size] * 2, c.embed_dim, list(c.depths), list(c.num_heads),
                        [c.window_size] * 2, mlp_ratio=c.mlp_ratio, stochastic_depth_prob=c.drop_path,
                        num_classes=c.num_classes)
    m.features[0][0] = nn.Conv2d(c.in_channels, c.embed_dim, c.patch_size, c.patch_size)
    return m


def tv_convnext(c) -> nn.Module:
    settings = [CNBlockConfig(d, c.dims[i + 1] if i + 1 < len(c.dims) else None, n)
                for i, (d, n) in enumerate(zip(c.dims, c.depths))]
    m = ConvNeXt(settings, stochastic_depth_prob=c.drop_path, layer_scale=c.layer_scale,
                 num_classes=c.num_classes)
    m.features[0] = nn.Sequential(nn.Conv2d(c.in_channels, c.dims[0], c.stem_size, c.stem_size),
                                  LayerNorm2d(c.dims[0], eps=1e-6))
    return m


def tv_resnet(norm_layer=nn.BatchNorm2d) -> nn.Module:
    """The grader's reference ResNet-20 (autograder/swin_cnn.py): torchvision BasicBlocks."""
    load_lab("swin_cnn")
    reference = sys.modules["_vislab_autograder.swin_cnn"].CifarResNet
    return reference((16, 32, 64), 3, 1, 10, norm_layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--models", default="swin,convnext,resnet,resnet-torchbn")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, labels = mnist5k("train")
    x = normalise(images)
    lab = import_lab(SOLUTIONS_DIR / "swin_cnn")
    pairs = {}
    swin_config = lab.swin.SwinConfig(drop_path=0.1)
    pairs["swin"] = (lab.swin.Swin(swin_config), tv_swin(swin_config), "SwinTransformer")
    cn_config = lab.convnext.ConvNeXtConfig(drop_path=0.1)
    pairs["convnext"] = (lab.convnext.ConvNeXt(cn_config), tv_convnext(cn_config), "ConvNeXt")
    pairs["resnet"] = (lab.resnet.ResNet(lab.resnet.ResNetConfig()), tv_resnet(),
                       "BasicBlock 6n+2 (no tv ResNet-20)")
    pairs["resnet-torchbn"] = (lab.resnet.ResNet(lab.resnet.ResNetConfig(), norm_layer=nn.BatchNorm2d),
                               tv_resnet(), "the same, both with nn.BatchNorm2d")
    print(f"{date.today()}, {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<14} {'params ours':>11} {'params tv':>10} {'ours s/epoch':>12} "
          f"{'tv s/epoch':>10} {'ratio':>6}  torchvision model")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for name in args.models.split(","):
        ours, theirs, what = pairs[name]
        t_ours, t_theirs = timed([ours, theirs], x, labels, args.repeats)
        print(f"{name:<14} {count(ours):>11,} {count(theirs):>10,} {t_ours:>12.2f} {t_theirs:>10.2f} "
              f"{t_ours / t_theirs:>5.2f}x  {what}", flush=True)
    print("budget: ours / torchvision <= 1.2x")


if __name__ == "__main__":
    main()
