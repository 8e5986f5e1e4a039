"""Training speed of the ssl lab's MAE against Hugging Face transformers' ViTMAE, same config.

    python benchmarks/train_speed_ssl.py [--repeats 5]

One epoch of MNIST-5k (4,000 images, batch 64, AdamW, mask ratio 0.5), the same plain loop for
both models, median of --repeats epochs after one warm-up epoch, the models taking turns epoch
by epoch. transformers' ViTMAEForPreTraining is built from a ViTMAEConfig with the lab's numbers
(28 x 28 x 1 images, 7 x 7 patches, encoder 2 blocks of D = 64 with 4 heads and MLP 128, decoder
1 block of 32 with 4 heads and MLP 64; no pixel normalisation of the targets); its loss is the
same masked MSE. Differences that remain: its positions are fixed sin-cos tables (ours are
learned) and its attention is torch's scaled_dot_product_attention (ours is the ViT lab's,
written from matmuls).
"""
import argparse

import torch

from timing import alternating_medians, cpu_name, steps_seconds
from vislab import SOLUTIONS_DIR
from vislab.data import mnist5k
from vislab.data.mnist import normalise
from vislab.impl import import_lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    torch.manual_seed(0)
    x = normalise(mnist5k("train")[0])
    lab = import_lab(SOLUTIONS_DIR / "ssl")
    c = lab.mae.MAEConfig()
    ours = lab.mae.MAE(c)
    theirs = ViTMAEForPreTraining(ViTMAEConfig(
        image_size=c.image_size, patch_size=c.patch_size, num_channels=c.in_channels,
        hidden_size=c.dim, num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
        intermediate_size=c.mlp_dim, decoder_hidden_size=c.decoder_dim,
        decoder_num_hidden_layers=c.decoder_depth, decoder_num_attention_heads=c.decoder_heads,
        decoder_intermediate_size=c.decoder_mlp_dim, mask_ratio=c.mask_ratio,
        norm_pix_loss=False, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    batches = [x[i:i + 64] for i in range(0, len(x), 64)]

    def epoch(model, loss):
        model.train()
        return steps_seconds(model.parameters(), [lambda b=b: loss(b) for b in batches])

    runs = [lambda: epoch(ours, lambda b: ours(b)[0]),
            lambda: epoch(theirs, lambda b: theirs(pixel_values=b).loss)]
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    t_ours, t_theirs = alternating_medians(runs, args.repeats)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"{'model':<40} {'params':>8} {'s/epoch':>8}")
    print(f"{'vislab MAE (solutions/ssl)':<40} {count(ours):>8,} {t_ours:>8.3f}")
    print(f"{'transformers ViTMAEForPreTraining':<40} {count(theirs):>8,} {t_theirs:>8.3f}")
    print(f"MAE ratio ours / transformers: {t_ours / t_theirs:.2f}x (budget 1.2x)")


if __name__ == "__main__":
    main()
