"""Adjusted Rand index (Hubert & Arabie, 1985) of segmentations, and the foreground ARI.

Both labelings of an image's N pixels are compared through their contingency table
n_ij = number of pixels in true segment i and predicted segment j, with row sums a_i, column
sums b_j and n pixels in all. Counting pairs of pixels, C(m, 2) = m (m - 1) / 2:

    index    = sum_ij C(n_ij, 2)                     pairs together in both labelings
    expected = sum_i C(a_i, 2) * sum_j C(b_j, 2) / C(n, 2)
    maximum  = (sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2
    ARI      = (index - expected) / (maximum - expected)

ARI is 1 for identical partitions (whatever the ids), about 0 for random ones. Where the
denominator is 0 (both labelings one segment, or both every pixel alone, or fewer than 2
pixels) ARI is 1, as in sklearn.metrics.adjusted_rand_score.

The foreground ARI (Slot Attention's metric) leaves out the pixels whose TRUE id is the
background: how well objects are told apart, whatever the model does with the background.
"""
import torch


def contingency_table(true_ids: torch.Tensor, pred_ids: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """true_ids and pred_ids (B, N) integer ids >= 0 -> the tables n_ij, (B, I, J) float64 with
    I = true_ids.max() + 1 and J = pred_ids.max() + 1. weights (B, N) of 0 / 1, when given:
    a pixel of weight 0 is left out of its image's table."""
    ### BEGIN SOLUTION
    # TODO(slots.ari): one-hot both labelings (F.one_hot, as float64), weight the pixels, and
    #   sum the outer products over the pixels: n_ij = sum_n [true_n = i] [pred_n = j] w_n.
    true = torch.nn.functional.one_hot(true_ids.long(), int(true_ids.max()) + 1).double()  # (B, N, I)
    pred = torch.nn.functional.one_hot(pred_ids.long(), int(pred_ids.max()) + 1).double()  # (B, N, J)
    if weights is not None:
        true = true * weights.double()[..., None]
    return true.transpose(1, 2) @ pred                                                  # (B, I, J)
    ### END SOLUTION


def adjusted_rand_index(true_ids: torch.Tensor, pred_ids: torch.Tensor,
                        weights: torch.Tensor | None = None) -> torch.Tensor:
    """ARI of each image's two labelings, (B,) float64, from the contingency table (pixels of
    weight 0 left out). Do not call sklearn: the grader compares with it."""
    ### BEGIN SOLUTION
    # TODO(slots.ari): from the table: index, expected and maximum as in the module's
    #   docstring; ARI = (index - expected) / (maximum - expected), and 1 where that
    #   denominator is 0.
    table = contingency_table(true_ids, pred_ids, weights)       # (B, I, J)

    def pairs(m):
        return m * (m - 1) / 2

    n = table.sum(dim=(1, 2))                                    # (B,)
    index = pairs(table).sum(dim=(1, 2))                         # (B,)
    rows, cols = pairs(table.sum(2)).sum(1), pairs(table.sum(1)).sum(1)  # (B,) each
    all_pairs = pairs(n)
    expected = torch.where(all_pairs > 0, rows * cols / all_pairs.clamp(min=1), 0.0)
    maximum = (rows + cols) / 2
    denominator = maximum - expected
    ari = (index - expected) / torch.where(denominator == 0, 1.0, denominator)
    return torch.where(denominator == 0, 1.0, ari)
    ### END SOLUTION


def foreground_ari(true_ids: torch.Tensor, pred_ids: torch.Tensor,
                   background: int = 0) -> torch.Tensor:
    """ARI over the pixels whose true id is not `background`, (B,) float64 (1 for an image
    with fewer than 2 foreground pixels, by the convention above)."""
    ### BEGIN SOLUTION
    # TODO(slots.ari): the ARI with weight 0 on exactly the true background pixels.
    return adjusted_rand_index(true_ids, pred_ids, weights=true_ids != background)
    ### END SOLUTION


def masks_to_ids(masks: torch.Tensor) -> torch.Tensor:
    """Masks (B, K, H, W) or (B, K, 1, H, W), one channel per segment -> ids (B, H * W): the
    segment with the largest mask at each pixel (row-major)."""
    if masks.ndim == 5:
        masks = masks.squeeze(2)
    return masks.argmax(dim=1).flatten(1)
