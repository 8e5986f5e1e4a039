"""vislab.metrics.segmentation: Dice and IoU of hard masks against scikit-learn's F1 and
Jaccard scores (pixel by pixel, per image), and the empty-mask convention."""
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score

from vislab.metrics.segmentation import (dice_per_image, dice_score, iou_per_image, iou_score,
                                         to_masks)


def test_binary_dice_and_iou_equal_sklearn_per_image():
    g = torch.Generator().manual_seed(0)
    pred = (torch.rand(5, 1, 7, 6, generator=g) < 0.4).long()
    target = (torch.rand(5, 1, 7, 6, generator=g) < 0.3).long()
    dice, iou = dice_per_image(pred, target), iou_per_image(pred, target)
    assert dice.shape == iou.shape == (5, 1)
    for b in range(5):
        t, p = target[b].flatten().numpy(), pred[b].flatten().numpy()
        assert dice[b, 0].item() == pytest.approx(f1_score(t, p))
        assert iou[b, 0].item() == pytest.approx(jaccard_score(t, p))
    assert dice_score(pred, target) == pytest.approx(dice.mean().item())
    assert torch.allclose(dice, 2 * iou / (1 + iou))


def test_multiclass_scores_average_the_classes_of_each_image():
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 3, (4, 5, 5), generator=g)
    target = torch.randint(0, 3, (4, 5, 5), generator=g)
    dice = dice_per_image(pred, target, num_classes=3)
    assert dice.shape == (4, 3)
    for b in range(4):
        want = f1_score(target[b].flatten(), pred[b].flatten(), average=None, labels=[0, 1, 2])
        assert torch.allclose(dice[b], torch.tensor(want, dtype=torch.float64))
    assert iou_score(pred, target, 3) == pytest.approx(
        jaccard_score(target[0].flatten(), pred[0].flatten(), average=None).mean() / 4
        + sum(jaccard_score(target[b].flatten(), pred[b].flatten(), average=None).mean()
              for b in range(1, 4)) / 4)


def test_empty_prediction_of_an_empty_mask_is_perfect_and_a_miss_is_zero():
    empty = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    full = torch.ones(2, 1, 4, 4, dtype=torch.long)
    assert dice_score(empty, empty) == iou_score(empty, empty) == 1.0
    assert dice_score(empty, full) == iou_score(full, empty) == 0.0


def test_to_masks_thresholds_one_channel_and_argmaxes_several():
    logits = torch.tensor([[[[-1.0, 0.5]]]])
    assert to_masks(logits).tolist() == [[[[0, 1]]]]
    logits = torch.tensor([[[[0.0]], [[2.0]], [[1.0]]]])  # (1, 3, 1, 1)
    assert to_masks(logits).tolist() == [[[1]]]


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="differ in shape"):
        dice_score(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 4))
