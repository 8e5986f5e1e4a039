"""vislab.metrics.clustering: ARI and foreground ARI against known answers."""
import numpy as np
import pytest
import torch

from vislab.metrics.clustering import ari, fg_ari, masks_to_ids, segmentation_scores


def test_same_partition_with_other_ids_scores_one():
    true = torch.tensor([[0, 0, 1, 1, 2, 2]])
    assert ari(true, torch.tensor([[5, 5, 3, 3, 0, 0]]))[0] == pytest.approx(1.0)


def test_degenerate_labelings_follow_sklearn_conventions():
    one = np.zeros((1, 6), dtype=int)
    assert ari(one, one + 4)[0] == 1.0                                   # one segment in both
    assert ari(one, np.arange(6)[None])[0] == 0.0                        # one in the truth only
    assert ari(np.arange(6)[None], np.arange(6)[::-1][None])[0] == 1.0   # every pixel alone
    fewer = ari(np.array([[0, 0, 1, 1, 2, 2]]), np.array([[0, 0, 0, 0, 1, 1]]))[0]
    assert 0 < fewer < 1                                                 # fewer predicted segments


def test_random_labelings_score_about_zero():
    g = np.random.default_rng(0)
    scores = ari(g.integers(0, 4, (20, 400)), g.integers(0, 4, (20, 400)))
    assert abs(scores.mean()) < 0.02


def test_foreground_ari_leaves_out_exactly_the_true_background():
    true = np.array([[0, 0, 0, 1, 1, 2, 2]])
    pred = np.array([[3, 1, 2, 0, 0, 1, 1]])           # background labelled anyhow
    assert fg_ari(true, pred)[0] == 1.0
    assert ari(true, pred)[0] < 1.0                    # the background counted: not 1
    changed = pred.copy()
    changed[0, 3] = 1                                  # a foreground pixel changes the score
    assert fg_ari(true, changed)[0] < 1.0


def test_foreground_ari_without_foreground_is_one():
    assert fg_ari(np.zeros((1, 5), int), np.arange(5)[None])[0] == 1.0
    assert fg_ari(np.array([[0, 0, 3, 0]]), np.array([[1, 2, 0, 3]]))[0] == 1.0


def test_masks_to_ids_and_scores_from_masks():
    labels = torch.tensor([[[0, 1], [2, 2]]])                              # (1, 2, 2)
    true = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()  # (1, 3, 2, 2)
    pred = true[:, [2, 0, 1]][:, :, None]                                  # (1, 3, 1, 2, 2)
    assert masks_to_ids(true).tolist() == [[0, 1, 2, 2]]
    assert segmentation_scores(true, pred) == {"ari": 1.0, "fg_ari": 1.0}
    with pytest.raises(ValueError, match="same shape"):
        ari(np.zeros((1, 3)), np.zeros((1, 4)))
