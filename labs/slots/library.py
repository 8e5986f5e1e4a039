"""Compositional generation (as in SLATE, Singh et al., 2022): new scenes from known objects.

1. Encode the training images; every slot of every image joins a library, (M, D).
2. Cluster the library with K-means (scikit-learn: the clustering is not the lesson). Slots that
   bind similar objects (a red square, the background) fall into the same cluster.
3. A new scene takes K DIFFERENT clusters, chosen uniformly at random, and one slot picked
   uniformly at random from each; the decoder renders the set as an image. Scenes made this way
   combine objects that never appeared together.
"""
from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def build_library(encode: Callable, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Every slot of every image, (len(images) * K, D): image 0's K slots first, then image 1's.

    `encode(batch)` returns (slots (b, K, D), attention); call it on batches of at most
    batch_size images, in order, without gradients."""
    # TODO(slots.library): encode images[i:i + batch_size] for i = 0, batch_size, ...;
    #   keep the slots, concatenate them and flatten (n, K, D) to (n * K, D).
    raise NotImplementedError('TODO(slots.library): encode images[i:i + batch_size] for i = 0, batch_size, ...; keep the slots, concatenate them and flatten (n, K, D) to (n * K, D).')


def cluster_library(library: torch.Tensor, num_clusters: int, seed: int = 0) -> torch.Tensor:
    """K-means cluster of each library slot, (M,) int64 in 0 .. num_clusters - 1
    (sklearn.cluster.KMeans with random_state=seed)."""
    # TODO(slots.library): sklearn.cluster.KMeans(num_clusters, n_init=..., random_state=seed)
    #   on the library as a float64 numpy array; return its labels_ as an int64 tensor.
    raise NotImplementedError('TODO(slots.library): sklearn.cluster.KMeans(num_clusters, n_init=..., random_state=seed) on the library as a float64 numpy array; return its labels_ as an int64 tensor.')


def sample_slots(library: torch.Tensor, labels: torch.Tensor, num_scenes: int, num_slots: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """New slot sets, (num_scenes, num_slots, D): per scene, num_slots different clusters chosen
    uniformly at random, and from each one library slot chosen uniformly at random among its
    members. Draw every random number from `generator`."""
    # TODO(slots.library): for each scene, torch.randperm(number of clusters)[:num_slots]
    #   gives distinct clusters; for each, a random index into that cluster's members
    #   ((labels == c).nonzero()).
    raise NotImplementedError("TODO(slots.library): for each scene, torch.randperm(number of clusters)[:num_slots] gives distinct clusters; for each, a random index into that cluster's members ((labels == c).nonzero()).")
