"""The kit's one FID (Heusel et al., 2017): the Frechet distance between Gaussians fitted to the
features of real and generated images,

    FID = |mu_r - mu_g|^2 + trace(S_r + S_g - 2 (S_r S_g)^(1/2)),

computed by torchmetrics' FrechetInceptionDistance (in float64) with one of two feature networks:

- Inception-v3's 2048 pool features, the standard ones, when torch-fidelity is installed AND
  its weights file is present locally: data_root()/inception/pt_inception-2015-12-05-6726825d.pth
  (nothing is downloaded). Only these FIDs compare with published numbers.
- otherwise the kit's FeatureNet: a small convolutional autoencoder trained on the lab's own
  training images (seconds on a CPU), whose pooled bottleneck gives 128 features. Its FIDs
  rank models on the same data set and feature network only; they are NOT comparable with
  published FIDs, nor across feature networks.

Every result (FIDResult) says which network produced it; print it, or store `as_dict()`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislab.data.common import data_root

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def inception_weights() -> Path | None:
    """The local Inception weights file when it is there and torch-fidelity can read it."""
    path = data_root() / "inception" / INCEPTION_FILE
    if not path.is_file():
        return None
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return None
    return path


class FeatureNet(nn.Module):
    """A small conv autoencoder; features = its 32-channel bottleneck average-pooled to 2 x 2
    (128 numbers). Images (B, 3, H, W) in [0, 1] are resized to 32 x 32 first."""

    num_features = 128
    size = 32

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(),     # 16 x 16
            nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),    # 8 x 8
            nn.Conv2d(32, 32, 3, padding=1))                         # 8 x 8, the bottleneck
        self.decoder = nn.Sequential(
            nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 3, 3, padding=1))

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 128)
        z = self.encoder(self.resize(images.float()))
        return F.adaptive_avg_pool2d(z, 2).flatten(1)


def train_feature_net(images: torch.Tensor, steps: int = 200, batch_size: int = 32,
                      lr: float = 2e-3, seed: int = 0) -> FeatureNet:
    """Train a FeatureNet to reconstruct `images` (N, 3, H, W) in [0, 1] (MSE, Adam)."""
    if images.ndim != 4 or images.shape[1] != 3 or len(images) < 2:
        raise ValueError(f"expected RGB images (N >= 2, 3, H, W), got {tuple(images.shape)}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        batch = net.resize(images[torch.randint(0, len(images), (batch_size,), generator=generator)].float())
        loss = F.mse_loss(net.decoder(net.encoder(batch)), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


@dataclass
class FeatureExtractor:
    """A feature network and the sentence that says what it is."""
    net: nn.Module | None       # None: torchmetrics' Inception-v3 from `weights`
    description: str
    comparable: bool            # comparable with published FIDs (Inception only)
    weights: Path | None = None


def feature_extractor(train_images: torch.Tensor | None = None, dataset: str = "",
                      cache: Path | None = None, seed: int = 0, steps: int = 200,
                      use_inception: bool = True) -> FeatureExtractor:
    """Inception-v3 when its weights are present (and use_inception), else the kit's FeatureNet,
    read from `cache` when that file exists, otherwise trained on `train_images` (and saved to
    `cache` when given)."""
    weights = inception_weights() if use_inception else None
    if weights is not None:
        return FeatureExtractor(None, f"Inception-v3 pool features ({weights.name})", True, weights)
    net = FeatureNet()
    if cache is not None and Path(cache).is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state"])
        net.eval().requires_grad_(False)
        about = saved["about"]
    else:
        if train_images is None:
            raise ValueError("no Inception weights and no cached FeatureNet: pass train_images "
                             "to train the kit's feature network")
        net = train_feature_net(train_images, steps=steps, seed=seed)
        about = f"{len(train_images)} {dataset or 'training'} images ({steps} steps, seed {seed})"
        if cache is not None:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state": net.state_dict(), "about": about}, cache)
    return FeatureExtractor(net, f"the kit's FeatureNet trained on {about} (no Inception "
                                 f"weights at {data_root() / 'inception' / INCEPTION_FILE}; "
                                 f"not comparable with published FIDs)", False)


@dataclass
class FIDResult:
    fid: float
    feature_net: str       # which network produced the features
    comparable: bool       # with published FIDs (Inception-v3 only)
    num_real: int
    num_fake: int

    def __str__(self) -> str:
        return (f"FID {self.fid:.2f} ({self.num_fake} generated vs {self.num_real} real images; "
                f"features: {self.feature_net})")

    def as_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def fid(real: torch.Tensor, fake: torch.Tensor, extractor: FeatureExtractor,
        batch_size: int = 256) -> FIDResult:
    """FID between image sets real and fake, (N, 3, H, W) floats in [0, 1]."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    for name, images in (("real", real), ("fake", fake)):
        if images.ndim != 4 or images.shape[1] != 3 or len(images) < 2:
            raise ValueError(f"{name} images must be (N >= 2, 3, H, W), got {tuple(images.shape)}")
    if extractor.net is None:
        metric = FrechetInceptionDistance(2048, normalize=True,
                                          feature_extractor_weights_path=str(extractor.weights))
    else:
        metric = FrechetInceptionDistance(extractor.net.eval(), normalize=True)
    metric = metric.double() if extractor.net is None else metric
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            metric.update(images[i:i + batch_size].clamp(0, 1).float(), real=is_real)
    value = float(metric.compute())
    return FIDResult(max(value, 0.0), extractor.description, extractor.comparable, len(real), len(fake))
