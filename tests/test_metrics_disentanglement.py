"""MIG on constructed codes whose answer is known: a perfectly factorised code scores about 1,
a rotated one less, noise about 0; mutual information and entropy against hand computation."""
import math

import numpy as np
import pytest
import torch

from vislab.metrics.disentanglement import discretize, entropies, mig, mutual_information

N = 20000


def factors(rng, classes=(4, 5, 3)):
    return np.stack([rng.integers(0, c, N) for c in classes], axis=1)  # (N, K)


def test_entropy_and_mutual_information_by_hand():
    # v uniform on 4 values: H = log 4; a code that copies v has I = H; a constant has I = 0
    v = np.repeat(np.arange(4), 250)[:, None]
    assert entropies(v)[0] == pytest.approx(math.log(4))
    codes = np.stack([v[:, 0], np.zeros(1000, dtype=int)], axis=1)
    mi = mutual_information(codes, v)
    assert mi.shape == (2, 1)
    assert mi[0, 0] == pytest.approx(math.log(4)) and mi[1, 0] == pytest.approx(0.0)


def test_discretize_uses_equal_width_bins_over_the_range():
    codes = np.array([[0.0], [0.49], [0.51], [1.0]])
    assert discretize(codes, num_bins=2)[:, 0].tolist() == [1, 1, 2, 2]
    assert discretize(torch.tensor(codes), num_bins=2).shape == (4, 1)  # tensors too


def test_perfectly_factorised_code_scores_about_one():
    rng = np.random.default_rng(0)
    v = factors(rng)
    # each factor in its own latent, scaled, shifted and jittered within its class's bin
    codes = np.stack([2.0 * v[:, 0] + 0.1 * rng.random(N), -v[:, 1] + 3 + 0.1 * rng.random(N),
                      0.5 * v[:, 2] + 0.01 * rng.random(N),
                      rng.normal(size=N)], axis=1)                        # a 4th, unused latent
    out = mig(codes, v)
    assert out["mig"] > 0.97, out["per_factor"]
    assert out["mutual_info"].shape == (4, 3) and out["entropy"].shape == (3,)
    assert out["mig"] == pytest.approx(np.mean(out["per_factor"]))


def test_rotated_code_scores_less_and_noise_about_zero():
    rng = np.random.default_rng(1)
    v = factors(rng, classes=(8, 8))
    x = (v - 3.5) / 2.3                                   # centred factors, continuous codes
    perfect = mig(x + 0.01 * rng.normal(size=x.shape), v)["mig"]
    angle = math.pi / 4                                   # both latents mix both factors
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    rotated = mig(x @ rotation.T, v)["mig"]
    slight = mig(x @ np.array([[math.cos(0.2), -math.sin(0.2)],
                               [math.sin(0.2), math.cos(0.2)]]).T, v)["mig"]
    noise = mig(rng.normal(size=(N, 5)), v)["mig"]
    assert perfect > 0.95
    assert rotated < 0.1            # at 45 degrees each factor is shared equally
    assert rotated < slight < perfect
    assert abs(noise) < 0.02


def test_constant_factor_is_left_out():
    rng = np.random.default_rng(2)
    v = np.concatenate([np.zeros((N, 1), dtype=int), factors(rng, classes=(5,))], axis=1)
    out = mig(np.stack([v[:, 1], rng.normal(size=N)], axis=1), v)
    assert math.isnan(out["per_factor"][0]) and out["entropy"][0] == 0
    assert out["mig"] == pytest.approx(out["per_factor"][1]) and out["mig"] > 0.97


def test_mismatched_rows_are_refused():
    with pytest.raises(ValueError, match="rows"):
        mig(np.zeros((10, 2)), np.zeros((9, 1)))
