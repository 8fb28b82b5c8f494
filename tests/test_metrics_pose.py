"""fastvision.metrics.pose: flip test, decoding, PCK, OKS, OKS-NMS and the COCO keypoint AP
(official HRNet pose and pycocotools)."""

import math

import numpy as np
import pytest
import torch

from fastvision.data.pose import COCO_KEYPOINT_SIGMAS
from fastvision.data.pose_targets import COCO_FLIP_PAIRS
from fastvision.metrics.pose import (
    flip_back,
    flip_test,
    get_final_preds,
    get_max_preds,
    keypoint_ap,
    oks,
    oks_nms,
    pck_accuracy,
    transform_preds,
)


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


# ----------------------------------------------------------------------------- PCK, OKS, AP

def _heatmap_at(h, w, points):
    maps = torch.zeros(1, len(points), h, w)
    for j, (x, y) in enumerate(points):
        maps[0, j, y, x] = 1.0
    return maps


def test_pck_accuracy_is_the_official_one_with_its_normalisation():
    # 40x10 heatmaps: the official code divides x offsets by H / 10 = 4 and y offsets by W / 10 = 1.
    target = _heatmap_at(40, 10, [(5, 5), (5, 5), (1, 5), (5, 5)])
    output = _heatmap_at(40, 10, [(5, 5), (6, 5), (7, 7), (5, 6)])
    per_joint, avg, cnt = pck_accuracy(output, target)
    # joint 0: distance 0 -> hit; joint 1: dx 1 / 4 = 0.25 -> hit; joint 2: target x = 1 is not
    # > 1 -> left out; joint 3: dy 1 / 1 = 1 -> miss.
    assert per_joint.tolist() == [1.0, 1.0, -1.0, 0.0]
    assert cnt == 3 and avg == pytest.approx(2 / 3)


def _person(x0, y0, visible=range(17), shift=(0.0, 0.0)):
    kp = np.zeros((17, 3))
    for j in visible:
        kp[j] = [x0 + 3 * j + shift[0], y0 + 2 * j + shift[1], 2]
    return kp


def test_oks_of_one_labelled_keypoint_is_the_closed_form():
    gt = {"keypoints": _person(100, 100, visible=[0]).reshape(-1).tolist(), "area": 10000.0,
          "bbox": [90, 90, 40, 40]}
    det = _person(100, 100, visible=[0], shift=(5.2, 0.0))
    # e = d^2 / (2 sigma)^2 / area / 2 with sigma_nose = 0.026: 27.04 / 0.002704 / 10000 / 2 = 0.5.
    assert oks(gt, det.reshape(1, -1))[0] == pytest.approx(math.exp(-0.5), rel=1e-9)
    assert COCO_KEYPOINT_SIGMAS[0] == pytest.approx(0.026)


def test_keypoint_ap_hand_worked_example():
    """One image, two people: A (17 labelled joints) and B (nose only, area 10000).
    Detections: A exactly (score 0.9, OKS 1), one far away (0.8, OKS ~0), B's nose 5.2 px off
    (0.7, OKS exp(-0.5) = 0.6065: a true positive at OKS thresholds 0.50, 0.55, 0.60 only).
    Thresholds 0.50-0.60: TP, FP, TP -> recall 0.5, 0.5, 1; precision envelope 1, 2/3, 2/3 ->
    101-point AP = (51 * 1 + 50 * 2/3) / 101. Thresholds 0.65-0.95: TP, FP, FP -> AP = 51 / 101.
    AP@[.5:.95] = (3 * 0.834983 + 7 * 0.504950) / 10."""
    a = _person(200, 50)
    b = _person(100, 100, visible=[0])
    ground_truth = {"images": [{"id": 1, "width": 640, "height": 480}],
                    "categories": [{"id": 1, "name": "person"}],
                    "annotations": [
                        {"id": 1, "image_id": 1, "keypoints": a.reshape(-1).tolist(), "area": 5000.0,
                         "bbox": [200, 50, 48, 32], "iscrowd": 0, "num_keypoints": 17},
                        {"id": 2, "image_id": 1, "keypoints": b.reshape(-1).tolist(), "area": 10000.0,
                         "bbox": [90, 90, 40, 40], "iscrowd": 0, "num_keypoints": 1}]}
    far = _person(500, 400)
    detections = [{"image_id": 1, "keypoints": a, "score": 0.9},
                  {"image_id": 1, "keypoints": far, "score": 0.8},
                  {"image_id": 1, "keypoints": _person(100, 100, shift=(5.2, 0.0)), "score": 0.7}]
    stats = keypoint_ap(ground_truth, detections, backend="fastvision")
    ap_hit, ap_miss = (51 + 50 * 2 / 3) / 101, 51 / 101
    assert stats["AP50"] == pytest.approx(ap_hit)
    assert stats["AP75"] == pytest.approx(ap_miss)
    assert stats["AP"] == pytest.approx((3 * ap_hit + 7 * ap_miss) / 10)
    assert stats["AR50"] == pytest.approx(1.0) and stats["AR75"] == pytest.approx(0.5)
    assert stats["AR"] == pytest.approx((3 * 1.0 + 7 * 0.5) / 10)
    # Area ranges: A (5000) is medium, B (10000) large; every detection's keypoint extent is
    # 48x32 = 1536 (medium). Medium: A found at every threshold, B and the detection matching it
    # ignored -> 1. Large: only B counts, found at 0.50-0.60 only -> 3 / 10.
    assert stats["APm"] == pytest.approx(1.0) and stats["ARm"] == pytest.approx(1.0)
    assert stats["APl"] == pytest.approx(0.3) and stats["ARl"] == pytest.approx(0.3)
    # A crowd ground truth is ignored: B as crowd leaves A alone to find -> AP 1 at every threshold
    # (the far detection ranks below A, and the one matching the crowd is ignored).
    ground_truth["annotations"][1]["iscrowd"] = 1
    assert keypoint_ap(ground_truth, detections, backend="fastvision")["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in the ground truth"):
        keypoint_ap(ground_truth, [{**detections[0], "image_id": 5}], backend="fastvision")


def test_oks_nms_drops_duplicates_only():
    one = {"keypoints": _person(100, 100), "score": 0.9, "area": 4000.0}
    twin = {"keypoints": _person(100, 100, shift=(0.5, 0.0)), "score": 0.8, "area": 4000.0}
    other = {"keypoints": _person(300, 100), "score": 0.7, "area": 4000.0}
    assert oks_nms([twin, one, other]) == [1, 2]
