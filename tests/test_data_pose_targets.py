"""fastvision.data.pose_targets: the official HRNet heatmap targets."""

import math

import pytest
import torch

from fastvision.data.pose_targets import generate_target


def test_target_peak_and_gaussian_values():
    # 192x256 image, 48x64 heatmap: stride 4; joint (21, 30) -> centre (int(5.75), int(8.0))
    target, weight = generate_target([[21.0, 30.0]], [1], (192, 256), (48, 64), sigma=2)
    assert target.shape == (1, 64, 48) and target.dtype == torch.float32
    assert weight.tolist() == [[1.0]]
    assert target[0, 8, 5] == 1.0
    assert target[0].argmax() == 8 * 48 + 5
    torch.testing.assert_close(target[0, 8, 6], torch.tensor(math.exp(-1 / 8)))
    torch.testing.assert_close(target[0, 10, 4], torch.tensor(math.exp(-(4 + 1) / 8)))
    # window of 6 sigma + 1 = 13: 6 pixels each side, nothing beyond
    torch.testing.assert_close(target[0, 14, 5], torch.tensor(math.exp(-36 / 8)))
    assert target[0, 15, 5] == 0 and target[0, 8, 12] == 0
    # columns 5 - 6 = -1 .. 11: column -1 falls off the map
    assert torch.count_nonzero(target) == 13 * 12


def test_target_centre_truncates_toward_zero_at_the_border():
    # x = -6 -> -6/4 + 0.5 = -1.0 -> centre column -1 (off the map); x = -5 -> -0.75 -> int() = 0
    t1, w1 = generate_target([[-6.0, 30.0]], [1])
    t0, w0 = generate_target([[-5.0, 30.0]], [1])
    assert w1.item() == 1 and w0.item() == 1
    torch.testing.assert_close(t1[0, 8, 0], torch.tensor(math.exp(-1 / 8)))  # 1 px from -1
    assert t0[0, 8, 0] == 1.0  # int(-0.75) == 0, not floor == -1
    assert torch.count_nonzero(t1) == 13 * 6  # columns 0..5 of the window survive


def test_target_weight_zero_outside_and_for_invisible_joints():
    joints = [[-40.0, 30.0], [100.0, 1100.0], [50.0, 50.0], [50.0, 50.0]]
    target, weight = generate_target(joints, [[1, 1], [1, 1], [0, 0], [1, 1]])
    # -40/4 + 0.5 = -9.5 -> -9: window columns -15..-3, wholly outside -> weight 0
    assert weight.flatten().tolist() == [0.0, 0.0, 0.0, 1.0]
    assert target[:3].abs().sum() == 0 and target[3].max() == 1.0


def test_target_argument_errors():
    with pytest.raises(ValueError, match="joints must have shape"):
        generate_target([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="joints_vis must hold one visibility per joint"):
        generate_target([[1.0, 2.0]], [1, 1])
    with pytest.raises(ValueError, match="heatmap_size must be a positive"):
        generate_target([[1.0, 2.0]], [1], heatmap_size=(0, 64))
