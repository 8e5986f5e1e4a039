"""Training speed of the VAE lab's reference model and objective against the same network
written with library parts, on the same input.

    python benchmarks/train_speed_vae.py [--repeats 5]

There is no maintained library VAE of this shape (torchvision has none), so the comparison is
the lab's VAE with the lab's losses (reparameterize, log_likelihood, kl_to_standard_normal,
elbo) against the same layers as plain nn.Sequential stacks with torch.distributions doing the
maths (Normal.rsample, Bernoulli(logits).log_prob, kl_divergence). One epoch of binarised
MNIST-5k (4,000 images, batch 64, AdamW), the default CPU config of `vislab train vae`, median
of --repeats epochs after one warm-up epoch each, the two taking turns epoch by epoch.
"""
import argparse

import torch
import torch.nn as nn
from torch.distributions import Bernoulli, Normal, kl_divergence

from timing import alternating_medians, cpu_name, steps_seconds
from vislab import SOLUTIONS_DIR
from vislab.data import mnist5k
from vislab.impl import import_lab


class LibraryVAE(nn.Module):
    """The lab's layers as Sequential stacks; the objective from torch.distributions."""

    def __init__(self, c):
        super().__init__()
        s = c.feature_size
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c.channels[0], 4, 2, 1), nn.ReLU(), nn.Conv2d(c.channels[0], c.channels[1], 4, 2, 1),
            nn.ReLU(), nn.Flatten(), nn.Linear(c.channels[1] * s * s, c.hidden), nn.ReLU(),
            nn.Linear(c.hidden, 2 * c.latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(c.latent_dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.channels[1] * s * s),
            nn.ReLU(), nn.Unflatten(1, (c.channels[1], s, s)),
            nn.ConvTranspose2d(c.channels[1], c.channels[0], 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(c.channels[0], 1, 4, 2, 1))

    def loss(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        q = Normal(mu, torch.exp(0.5 * logvar))
        logits = self.decoder(q.rsample())
        rec = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
        kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(1)
        return (kl - rec).mean()


def epoch_seconds(loss_fn, params, x, batch_size=64) -> float:
    return steps_seconds(params, [lambda i=i: loss_fn(x[i:i + batch_size])
                                  for i in range(0, len(x), batch_size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = (mnist5k("train")[0] > 127).float()
    lab = import_lab(SOLUTIONS_DIR / "vae")
    config = lab.model.VAEConfig(channels=(16, 32), hidden=256, latent_dim=16)  # train.py's default
    ours = lab.model.VAE(config)

    def our_loss(batch):
        decoded, mu, logvar = ours(batch)
        return -lab.losses.elbo(batch, decoded, mu, logvar)
    theirs = LibraryVAE(config)
    runs = [(our_loss, list(ours.parameters())), (theirs.loss, list(theirs.parameters()))]
    t_ours, t_theirs = alternating_medians(
        [lambda fn=fn, params=params: epoch_seconds(fn, params, x) for fn, params in runs], args.repeats)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<44} {'params':>9} {'s/epoch':>8}")
    print(f"{'vislab VAE + lab losses (solutions/vae)':<44} {count(ours):>9,} {t_ours:>8.3f}")
    print(f"{'Sequential + torch.distributions':<44} {count(theirs):>9,} {t_theirs:>8.3f}")
    print(f"ratio ours / library: {t_ours / t_theirs:.2f}x (budget 1.2x)")


if __name__ == "__main__":
    main()
