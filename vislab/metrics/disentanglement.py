"""Disentanglement from ground-truth factors: the Mutual Information Gap (Chen et al., 2018).

    MIG = 1/K sum_k ( I(z_(1); v_k) - I(z_(2); v_k) ) / H(v_k)

where v_k is the k-th ground-truth factor, H(v_k) its entropy, and z_(1), z_(2) the two code
dimensions with the largest mutual information with v_k. A code in which every factor is
carried by one latent alone scores 1; one that spreads each factor over several latents (a
rotated code) scores less; noise scores about 0.

As in Chen et al.'s and disentanglement_lib's implementations: each code dimension is
discretised into `num_bins` equal-width bins over its range (np.histogram edges, np.digitize),
and mutual informations and entropies (in nats) are sklearn.metrics.mutual_info_score on the
discrete values. A factor with a single value (dSprites' colour; orientation in a subset that
fixes it) has no entropy and is left out of the mean.

The plug-in estimate of mutual information is biased upwards by about (bins_z - 1)(bins_v - 1)
/ (2N) nats, so use many more samples than bins x classes (thousands, for dSprites' factors).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import mutual_info_score


def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def discretize(codes, num_bins: int = 20) -> np.ndarray:
    """Each column of codes (N, D) as integer bins of equal width over its range: (N, D)."""
    codes = _numpy(codes).astype(np.float64)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (N, D), got shape {codes.shape}")
    out = np.zeros(codes.shape, dtype=np.int64)
    for d in range(codes.shape[1]):
        edges = np.histogram(codes[:, d], num_bins)[1][:-1]
        out[:, d] = np.digitize(codes[:, d], edges)
    return out


def mutual_information(discrete_codes, factors) -> np.ndarray:
    """I(z_d; v_k) in nats for every code dimension d and factor k: (D, K)."""
    codes, factors = _numpy(discrete_codes), _numpy(factors)
    return np.array([[mutual_info_score(factors[:, k], codes[:, d])
                      for k in range(factors.shape[1])] for d in range(codes.shape[1])])


def entropies(factors) -> np.ndarray:
    """H(v_k) in nats of every factor column (N, K): (K,)."""
    factors = _numpy(factors)
    return np.array([mutual_info_score(factors[:, k], factors[:, k])
                     for k in range(factors.shape[1])])


def mig(codes, factors, num_bins: int = 20) -> dict:
    """The MIG of codes (N, D) (e.g. posterior means) against discrete factors (N, K).

    Returns {"mig": the mean over factors with entropy, "per_factor": (K,) normalised gaps (NaN
    for a constant factor), "mutual_info": (D, K) nats, "entropy": (K,) nats}.
    """
    codes, factors = _numpy(codes), _numpy(factors)
    if factors.ndim != 2 or len(factors) != len(codes):
        raise ValueError(f"factors must be (N, K) with N = {len(codes)} rows, got {factors.shape}")
    mi = mutual_information(discretize(codes, num_bins), factors)   # (D, K)
    h = entropies(factors)                                          # (K,)
    top = np.sort(mi, axis=0)[::-1]                                 # (D, K), largest first
    second = top[1] if len(top) > 1 else np.zeros(mi.shape[1])
    gaps = np.full(mi.shape[1], np.nan)
    used = h > 0
    gaps[used] = (top[0, used] - second[used]) / h[used]
    return {"mig": float(np.mean(gaps[used])) if used.any() else float("nan"),
            "per_factor": gaps, "mutual_info": mi, "entropy": h}
