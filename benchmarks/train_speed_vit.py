"""Training speed of the ViT lab's reference models against torchvision's, on the same input.

    python benchmarks/train_speed_vit.py [--repeats 5]

One epoch of MNIST-5k (4,000 images, batch 64, AdamW), the same plain loop for every model,
median of --repeats epochs after one warm-up epoch, the three models taking turns epoch by
epoch. torchvision's VisionTransformer gets the
same config (7x7 patches, 2 blocks, D = 64, 4 heads, MLP 128) and a 1-channel patch
projection so that both read the same images. The CNN baseline has no torchvision
counterpart (torchvision's CNNs are ImageNet-sized), so it is timed for reference only.
"""
import argparse

import torch
import torch.nn as nn
from torchvision.models import VisionTransformer

from timing import cpu_name, timed
from vislab import SOLUTIONS_DIR
from vislab.data import mnist5k
from vislab.data.mnist import normalise
from vislab.impl import import_lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, labels = mnist5k("train")
    x = normalise(images)
    lab = import_lab(SOLUTIONS_DIR / "vit")
    config = lab.model.ViTConfig()
    ours = lab.model.ViT(config)
    theirs = VisionTransformer(config.image_size, config.patch_size, config.depth,
                               config.num_heads, config.dim, config.mlp_dim,
                               num_classes=config.num_classes)
    theirs.conv_proj = nn.Conv2d(1, config.dim, config.patch_size, config.patch_size)
    cnn = lab.cnn.SmallCNN()
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    t_ours, t_theirs, t_cnn = timed([ours, theirs, cnn], x, labels, args.repeats)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"{'model':<34} {'params':>8} {'s/epoch':>8}")
    print(f"{'vislab ViT (solutions/vit)':<34} {count(ours):>8,} {t_ours:>8.3f}")
    print(f"{'torchvision VisionTransformer':<34} {count(theirs):>8,} {t_theirs:>8.3f}")
    print(f"{'vislab SmallCNN (no tv equivalent)':<34} {count(cnn):>8,} {t_cnn:>8.3f}")
    print(f"ViT ratio ours / torchvision: {t_ours / t_theirs:.2f}x (budget 1.2x)")


if __name__ == "__main__":
    main()
