"""fastvision.data.pose_targets: heatmap targets, JointsMSELoss, flip test and decoding (official HRNet pose)."""

import math

import numpy as np
import pytest
import torch

from fastvision.data.pose_targets import (
    COCO_FLIP_PAIRS,
    JointsMSELoss,
    flip_back,
    flip_test,
    generate_target,
    get_final_preds,
    get_max_preds,
    transform_preds,
)


# ----------------------------------------------------------------------------- targets

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


# ----------------------------------------------------------------------------- loss

def test_joints_mse_loss_matches_official_per_joint_loop():
    g = torch.Generator().manual_seed(0)
    out, gt = torch.rand(2, 3, 4, 5, generator=g), torch.rand(2, 3, 4, 5, generator=g)
    tw = torch.tensor([[[1.0], [0.0], [0.5]], [[1.0], [1.0], [0.0]]])
    o, t, w = out.numpy(), gt.numpy(), tw.numpy()
    expected = sum(0.5 * np.mean((o[:, j].reshape(2, -1) * w[:, j]
                                  - t[:, j].reshape(2, -1) * w[:, j]) ** 2)
                   for j in range(3)) / 3
    assert JointsMSELoss(True)(out, gt, tw).item() == pytest.approx(expected, rel=1e-6)
    unweighted = sum(0.5 * np.mean((o[:, j] - t[:, j]) ** 2) for j in range(3)) / 3
    assert JointsMSELoss(False)(out, gt, tw).item() == pytest.approx(unweighted, rel=1e-6)


def test_joints_mse_loss_by_hand():
    out = torch.zeros(1, 2, 1, 2)
    gt = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])
    # joint 0: 0.5 * (1 + 9) / 2 = 2.5; joint 1 (weight 0.5): 0.5 * (1 + 1) / 2 = 0.5; mean 1.5
    assert JointsMSELoss()(out, gt, torch.tensor([[[1.0], [0.5]]])).item() == 1.5


def test_joints_mse_loss_shape_errors():
    with pytest.raises(ValueError, match="output and target"):
        JointsMSELoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 1))
    with pytest.raises(ValueError, match="target_weight must hold B\\*J = 2"):
        JointsMSELoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.ones(3))


# ----------------------------------------------------------------------------- flip test

def test_flip_back_mirrors_and_swaps_pairs():
    h = torch.arange(3 * 2 * 3, dtype=torch.float32).reshape(1, 3, 2, 3)
    out = flip_back(h, [(1, 2)])
    assert out[0, 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert out[0, 1].tolist() == [[14, 13, 12], [17, 16, 15]]  # from joint 2
    assert out[0, 2].tolist() == [[8, 7, 6], [11, 10, 9]]  # from joint 1


def test_flip_test_shifts_and_averages():
    # A "model" whose heatmaps are its input channels: flipping the input flips them.
    h = torch.arange(3 * 1 * 4, dtype=torch.float32).reshape(1, 3, 1, 4)
    out = flip_test(lambda x: x, h, flip_pairs=[(1, 2)])
    swapped = h[:, [0, 2, 1]]
    shifted = torch.cat([swapped[..., :1], swapped[..., :-1]], dim=3)  # columns 0,0,1,2
    torch.testing.assert_close(out, (h + shifted) / 2)
    assert out[0, 1, 0].tolist() == [(4 + 8) / 2, (5 + 8) / 2, (6 + 9) / 2, (7 + 10) / 2]
    no_shift = flip_test(lambda x: x, h, flip_pairs=[(1, 2)], shift_heatmap=False)
    torch.testing.assert_close(no_shift, (h + swapped) / 2)


def test_flip_pairs_validated():
    assert len(COCO_FLIP_PAIRS) == 8 and COCO_FLIP_PAIRS[0] == (1, 2)
    with pytest.raises(ValueError, match="flip_pairs"):
        flip_back(torch.zeros(1, 3, 2, 2), [(1, 3)])
    with pytest.raises(ValueError, match=r"heatmaps must have shape \(B, J, H, W\)"):
        flip_back(torch.zeros(3, 2, 2), [(1, 2)])


# ----------------------------------------------------------------------------- decoding

def test_get_max_preds():
    hm = torch.zeros(1, 3, 4, 5)
    hm[0, 0, 2, 3] = 0.9
    hm[0, 1] = -1.0
    hm[0, 1, 1, 1] = -0.5  # maximum <= 0: masked to (0, 0)
    hm[0, 2, 3, 4] = 0.7
    hm[0, 2, 0, 1] = 0.7  # ties: the first in row-major order wins
    preds, maxvals = get_max_preds(hm)
    assert preds.dtype == torch.float32
    assert preds[0].tolist() == [[3, 2], [0, 0], [1, 0]]
    torch.testing.assert_close(maxvals[0, :, 0], torch.tensor([0.9, -0.5, 0.7]))


def official_affine(center, scale, size):
    """The official inverse map (heatmap -> image) from its three point pairs, solved by numpy."""
    src_w = scale[0] * 200.0
    w, h = size
    src = np.array([center, center + np.array([0, -src_w / 2])])
    dst = np.array([[w / 2, h / 2], [w / 2, h / 2 - w / 2]])

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]])

    src = np.vstack([src, third(*src)])
    dst = np.vstack([dst, third(*dst)])
    a = np.hstack([dst, np.ones((3, 1))])
    return np.linalg.solve(a, src).T  # 2x3: image = M @ [x, y, 1]


def test_transform_preds_equals_official_affine():
    center, scale, size = np.array([321.5, 210.25]), np.array([1.1, 1.4666]), (48, 64)
    coords = np.array([[0.0, 0.0], [10.25, 19.75], [47.0, 63.0], [24.0, 32.0]])
    m = official_affine(center, scale, size)
    expected = (m @ np.hstack([coords, np.ones((4, 1))]).T).T
    got = transform_preds(torch.tensor(coords), center, scale, size)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)
    assert got[3].tolist() == pytest.approx(center.tolist())  # heatmap centre -> box centre


def test_get_final_preds_quarter_offset_and_transform():
    hm = torch.zeros(1, 2, 64, 48)
    # joint 0: peak at (x=10, y=20); right > left and up > down: (10.25, 19.75)
    hm[0, 0, 20, 10] = 1.0
    hm[0, 0, 20, 11], hm[0, 0, 20, 9] = 0.6, 0.2
    hm[0, 0, 19, 10], hm[0, 0, 21, 10] = 0.5, 0.1
    # joint 1: peak at x = 1: outside the official strict bounds 1 < x, so no offset
    hm[0, 1, 30, 1] = 1.0
    hm[0, 1, 30, 2] = 0.5
    center, scale = [[100.0, 150.0]], [[0.96, 1.28]]  # s = 0.96 * 200 / 48 = 4 image px / hm px
    preds, maxvals = get_final_preds(hm, center, scale)
    assert preds.dtype == torch.float64 and maxvals.shape == (1, 2, 1)
    # x: 100 + (10.25 - 24) * 4 = 45; y: 150 + (19.75 - 32) * 4 = 101
    assert preds[0, 0].tolist() == pytest.approx([45.0, 101.0])
    assert preds[0, 1].tolist() == pytest.approx([100 + (1 - 24) * 4, 150 + (30 - 32) * 4])
    raw, _ = get_final_preds(hm, center, scale, post_process=False)
    assert raw[0, 0].tolist() == pytest.approx([100 + (10 - 24) * 4, 150 + (20 - 32) * 4])


def test_get_final_preds_matches_official_loop_on_random_heatmaps():
    g = torch.Generator().manual_seed(1)
    hm = torch.rand(3, 5, 16, 12, generator=g)
    center = torch.rand(3, 2, generator=g, dtype=torch.float64) * 300
    scale = torch.rand(3, 2, generator=g, dtype=torch.float64) + 0.5
    preds, _ = get_final_preds(hm, center, scale)
    h = hm.numpy()
    for n in range(3):
        for p in range(5):
            idx = int(np.argmax(h[n, p]))
            x, y = float(idx % 12), float(idx // 12)
            px, py = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            if 1 < px < 11 and 1 < py < 15:
                x += np.sign(h[n, p, py, px + 1] - h[n, p, py, px - 1]) * 0.25
                y += np.sign(h[n, p, py + 1, px] - h[n, p, py - 1, px]) * 0.25
            m = official_affine(center[n].numpy(), scale[n].numpy(), (12, 16))
            expected = m @ np.array([x, y, 1.0])
            np.testing.assert_allclose(preds[n, p].numpy(), expected, atol=1e-9)


def test_get_final_preds_argument_errors():
    with pytest.raises(ValueError, match="one \\(x, y\\) pair per image \\(2\\)"):
        get_final_preds(torch.zeros(2, 1, 4, 4), [[0.0, 0.0]], [[1.0, 1.0]])
