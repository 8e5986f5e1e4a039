"""Moving MNIST: shapes, frame counts, digits in the frame, bouncing, determinism from the seed."""
import numpy as np
import pytest
import torch

from vislab.data.moving_mnist import MovingMNIST, bounce, moving_mnist_sequence


def test_items_are_uint8_videos_of_three_frames_by_default():
    ds = MovingMNIST("train", n=5)
    video = ds[0]
    assert len(ds) == 5
    assert video.shape == (3, 1, 64, 64) and video.dtype == torch.uint8
    assert video.amax() > 200  # real digits, not an empty frame


@pytest.mark.parametrize("frames", [1, 20])
def test_frame_count_up_to_twenty(frames):
    assert MovingMNIST("test", n=2, frames=frames)[1].shape == (frames, 1, 64, 64)


@pytest.mark.parametrize("frames", [0, 21])
def test_frame_count_out_of_range_is_refused(frames):
    with pytest.raises(ValueError, match="frames"):
        MovingMNIST("train", frames=frames)


def test_one_or_two_digits_stay_inside_the_frame():
    ds = MovingMNIST("train", n=40, frames=20)
    counts = set()
    for i in range(len(ds)):
        video, corners = ds.sequence(i)
        counts.add(len(corners))
        assert corners.min() >= 0 and corners.max() <= 64 - 28
    assert counts == {1, 2}
    assert all(len(MovingMNIST("train", n=10, max_digits=1).sequence(i)[1]) == 1 for i in range(10))


def test_each_frame_is_the_digits_pasted_at_their_corners():
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[0, 5:20, 10:12], digits[1, 3:9, 3:25] = 255, 128
    video, corners = moving_mnist_sequence(digits, np.random.default_rng(0), frames=6)
    for t in range(6):
        expected = np.zeros((64, 64), np.uint8)
        for digit, (row, col) in zip(digits, corners[:, t]):
            window = expected[row:row + 28, col:col + 28]
            np.maximum(window, digit, out=window)
        np.testing.assert_array_equal(video[t, 0], expected)


def test_bounce_reflects_off_both_walls():
    positions = bounce(start=30.0, velocity=4.0, frames=40, high=36.0)
    assert positions.min() >= 0 and positions.max() <= 36
    steps = np.abs(np.diff(positions))
    assert steps.max() <= 4 + 1e-9
    np.testing.assert_allclose(positions[:3], [30, 34, 34])  # 38 is reflected to 34
    assert (np.diff(positions) < 0).any() and (np.diff(positions) > 0).any()


def test_same_seed_same_videos_different_seed_different_videos():
    a = MovingMNIST("train", n=4, frames=5, seed=0)
    b = MovingMNIST("train", n=4, frames=5, seed=0)
    c = MovingMNIST("train", n=4, frames=5, seed=1)
    assert all(torch.equal(a[i], b[i]) for i in range(4))
    assert not all(torch.equal(a[i], c[i]) for i in range(4))
    assert not torch.equal(a[0], MovingMNIST("test", n=4, frames=5, seed=0)[0])  # splits differ


def test_items_do_not_depend_on_reading_order():
    ds = MovingMNIST("train", n=6)
    forward = [ds[i] for i in range(6)]
    assert all(torch.equal(ds[i], forward[i]) for i in reversed(range(6)))
