"""ARI and foreground ARI of segmentations (Slot Attention, diffusion), via scikit-learn.

Segment ids are arbitrary, so segmentations are compared as partitions of the pixels with the
adjusted Rand index (sklearn.metrics.adjusted_rand_score): 1 for the same partition whatever
the ids, about 0 for an unrelated one. The foreground ARI (Greff et al., 2019; Locatello et
al., 2020) leaves out the pixels whose TRUE id is the background: how well objects are told
apart, whatever a model does with the background. A scene with fewer than two foreground
pixels scores 1, sklearn's convention for a trivial partition.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score


def masks_to_ids(masks: torch.Tensor) -> torch.Tensor:
    """Masks (B, K, H, W) or (B, K, 1, H, W), soft or one-hot, one channel per segment ->
    ids (B, H * W) int64: the channel with the largest mask at each pixel (row-major)."""
    if masks.ndim == 5:
        masks = masks.squeeze(2)
    if masks.ndim != 4:
        raise ValueError(f"masks must be (B, K, H, W) or (B, K, 1, H, W), got {tuple(masks.shape)}")
    return masks.argmax(dim=1).flatten(1)


def ari(true_ids, pred_ids, foreground: bool = False, background: int = 0) -> np.ndarray:
    """ARI of each image's two labelings: true_ids and pred_ids (B, N) (tensors or arrays of
    integer ids). With foreground=True, only the pixels whose true id is not `background`
    count. Returns (B,) float64."""
    true_ids, pred_ids = np.asarray(true_ids), np.asarray(pred_ids)
    if true_ids.shape != pred_ids.shape or true_ids.ndim != 2:
        raise ValueError(f"expected two (B, N) labelings of the same shape, got "
                         f"{true_ids.shape} and {pred_ids.shape}")
    scores = np.empty(len(true_ids))
    for b, (t, p) in enumerate(zip(true_ids, pred_ids)):
        if foreground:
            keep = t != background
            t, p = t[keep], p[keep]
        scores[b] = adjusted_rand_score(t, p)
    return scores


def fg_ari(true_ids, pred_ids, background: int = 0) -> np.ndarray:
    """Foreground ARI per image, (B,) float64: `ari` over the true foreground pixels."""
    return ari(true_ids, pred_ids, foreground=True, background=background)


def segmentation_scores(true_masks: torch.Tensor, pred_masks: torch.Tensor) -> dict[str, float]:
    """Mean ARI and foreground ARI over a batch: true masks (B, K+1, H, W) one-hot with channel
    0 the background (as vislab.data's scenes), predicted masks (B, K, [1,] H, W)."""
    true, pred = masks_to_ids(true_masks), masks_to_ids(pred_masks)
    return {"ari": float(ari(true, pred).mean()), "fg_ari": float(fg_ari(true, pred).mean())}
