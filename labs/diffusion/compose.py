"""Compositional generation with a slot-conditioned decoder (given, nothing to write).

    slot library  L = the slots of the training scenes, (N K, D)
    K-means       K clusters of L (scikit-learn), K = the slots per scene
    a new scene   one slot drawn at random from each of the K clusters -> (K, D)
    its image     DDPM in latent space conditioned on those slots (the respaced sampler),
                  then the autoencoder's decode(z / scale)

This follows LSD's recipe (Jiang et al., 2023) as we read it: slots of one cluster tend to
play one role (the background, an object at some place, in some colour), so one slot per
cluster gives a plausible scene that is none of the training scenes. The images are scored
with the kit's FID against held-out real scenes, beside the scenes redrawn from their own slots.
"""
from __future__ import annotations

import torch

from .ddpm import respace, respaced_model, sample


@torch.no_grad()
def slot_library(model, images: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
    """The slots of every scene, flattened: (N K, D)."""
    device = next(model.parameters()).device
    slots = [model.encode(images[i:i + batch_size].to(device))[0].float().cpu()
             for i in range(0, len(images), batch_size)]
    return torch.cat(slots).flatten(0, 1)                                # (N K, D)


def cluster_slots(library: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """K-means (scikit-learn, k-means++, 4 restarts) of the library; the cluster of each slot,
    (N K,) int64, every cluster non-empty."""
    from sklearn.cluster import KMeans

    if len(library) < k:
        raise ValueError(f"a library of {len(library)} slots cannot make {k} clusters")
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(library.double().numpy())
    return torch.from_numpy(labels).long()


def compose_slots(library: torch.Tensor, labels: torch.Tensor, n: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n new slot sets, each one slot drawn uniformly from each cluster (in cluster order):
    slots (n, K, D) and the library index of every slot (n, K)."""
    k = int(labels.max()) + 1
    picks = torch.empty(n, k, dtype=torch.long)
    for c in range(k):
        members = (labels == c).nonzero().flatten()                     # (M_c,)
        if len(members) == 0:
            raise ValueError(f"cluster {c} is empty")
        picks[:, c] = members[torch.randint(0, len(members), (n,), generator=generator)]
    return library[picks], picks                                        # (n, K, D), (n, K)


@torch.no_grad()
def decode_slots(model, autoencoder, scale: float, schedule: dict, slots: torch.Tensor,
                 latent_shape: tuple[int, int, int], steps: int = 50,
                 batch_size: int = 100) -> torch.Tensor:
    """Images (n, 3, H, W) in [0, 1] from slot sets (n, K, D): the respaced sampler (`steps`
    of the T steps, no clipping: latents are not in [-1, 1]) in latent space, then decode."""
    device = next(model.parameters()).device
    sched, kept = respace(schedule, steps)
    out = []
    for i in range(0, len(slots), batch_size):
        cond = slots[i:i + batch_size].to(device)
        z = sample(respaced_model(model.unet, kept), sched, (len(cond), *latent_shape), cond,
                   clip=False, device=device)                            # (b, c, h, w)
        out.append(autoencoder.decode(z.float() / scale).clamp(0, 1).cpu())
    return torch.cat(out)
