"""Pose data: the official box -> centre/scale and affine crop, COCO-keypoints folders (tiny
files written here), augmentation, targets, the embedded stick figures, and clear errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fastvision.data.pose import (
    COCO_KEYPOINT_NAMES,
    COCOKeypoints,
    PoseAugment,
    ProceduralPoses,
    affine_matrix,
    box_to_center_scale,
    warp_affine,
)
from fastvision.data.pose_targets import COCO_FLIP_PAIRS
from fastvision.metrics.pose import get_max_preds


def _official_affine(center, scale, rot, output_size, inv=False):
    """``lib/utils/transforms.py get_affine_transform``: three point pairs, solved exactly."""
    src_w = scale[0] * 200.0
    dst_w, dst_h = output_size
    r = math.pi * rot / 180
    sn, cs = math.sin(r), math.cos(r)
    src_dir = np.array([0 * cs - (src_w * -0.5) * sn, 0 * sn + (src_w * -0.5) * cs])
    dst_dir = np.array([0, dst_w * -0.5])
    src = np.zeros((3, 2))
    dst = np.zeros((3, 2))
    src[0], src[1] = center, np.asarray(center) + src_dir
    dst[0], dst[1] = [dst_w * 0.5, dst_h * 0.5], np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]])
    a, b = (dst, src) if inv else (src, dst)
    solved = np.linalg.solve(np.concatenate([a, np.ones((3, 1))], 1), b)  # (3, 2)
    return solved.T


@pytest.mark.parametrize("rot", [0.0, 30.0, -75.0])
def test_affine_matrix_is_the_official_transform(rot):
    center, scale = np.array([120.5, 80.0]), np.array([0.9, 1.2])
    for inverse in (False, True):
        np.testing.assert_allclose(affine_matrix(center, scale, rot, (192, 256), inverse),
                                   _official_affine(center, scale, rot, (192, 256), inverse),
                                   rtol=1e-10, atol=1e-9)


def test_box_to_center_scale_pads_to_the_aspect_ratio():
    center, scale = box_to_center_scale((10, 20, 30, 80), aspect_ratio=0.75)
    np.testing.assert_allclose(center, [25, 60])
    np.testing.assert_allclose(scale, [60 / 200 * 1.25, 80 / 200 * 1.25])
    _, scale = box_to_center_scale((0, 0, 100, 40), aspect_ratio=0.75)
    np.testing.assert_allclose(scale, [100 / 200 * 1.25, 100 / 0.75 / 200 * 1.25])


def test_warp_affine_samples_bilinearly_at_the_inverse_map():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 11, 13, generator=g)
    matrix = affine_matrix((6.3, 5.1), (0.05, 0.07), 20.0, (8, 12))
    out = warp_affine(image, matrix, (8, 12))
    inv = affine_matrix((6.3, 5.1), (0.05, 0.07), 20.0, (8, 12), inverse=True)
    img = image.double().numpy()
    for y in range(12):
        for x in range(8):
            sx, sy = inv @ [x, y, 1]
            x0, y0 = math.floor(sx), math.floor(sy)
            expected = np.zeros(3)
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                xi, yi = x0 + dx, y0 + dy
                if 0 <= xi < 13 and 0 <= yi < 11:
                    w = (1 - abs(sx - xi)) * (1 - abs(sy - yi))
                    expected += w * img[:, yi, xi]
            np.testing.assert_allclose(out[:, y, x].numpy(), expected, atol=1e-5)


def _keypoints(points: dict) -> list:
    kp = [0] * 51
    for name, (x, y, v) in points.items():
        j = COCO_KEYPOINT_NAMES.index(name)
        kp[3 * j:3 * j + 3] = [x, y, v]
    return kp


def _coco_folder(root, annotations=None, images=None, split="val2017", layout="images"):
    """A 2-picture COCO-keypoints folder: one person, one crowd, one without keypoints, one dog."""
    image_dir = root / "images" / split if layout == "images" else root / split
    image_dir.mkdir(parents=True)
    (root / "annotations").mkdir()
    for name in ("000000000001.jpg", "000000000002.jpg"):
        pixels = np.full((120, 160, 3), 40, dtype=np.uint8)
        pixels[48:53, 98:103] = 255  # a white square on the person's left shoulder
        Image.fromarray(pixels).save(image_dir / name, quality=100)
    person = _keypoints({"nose": (80, 30, 2), "left_shoulder": (100, 50, 2),
                         "right_shoulder": (60, 50, 1), "left_hip": (95, 90, 2)})
    anns = annotations if annotations is not None else [
        {"id": 10, "image_id": 1, "category_id": 1, "keypoints": person, "num_keypoints": 4,
         "bbox": [50, 20, 60, 80], "area": 3000.0, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 1, "keypoints": person, "num_keypoints": 4,
         "bbox": [0, 0, 40, 40], "area": 900.0, "iscrowd": 1},
        {"id": 12, "image_id": 2, "category_id": 1, "keypoints": [0] * 51, "num_keypoints": 0,
         "bbox": [10, 10, 20, 20], "area": 300.0, "iscrowd": 0},
        {"id": 13, "image_id": 2, "category_id": 18, "keypoints": person, "bbox": [1, 1, 5, 5],
         "area": 20.0, "iscrowd": 0},
    ]
    ims = images if images is not None else [
        {"id": 1, "file_name": "000000000001.jpg", "width": 160, "height": 120},
        {"id": 2, "file_name": "000000000002.jpg", "width": 160, "height": 120}]
    data = {"images": ims, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("layout", ["images", "flat"])
def test_coco_folder_samples_crop_and_targets(tmp_path, layout):
    ds = COCOKeypoints(_coco_folder(tmp_path, layout=layout), "val2017", image_size=(96, 128))
    assert len(ds) == 1  # crowd, keypoint-less and non-person annotations are not samples
    image, target, weight, meta = ds[0]
    assert image.shape == (3, 128, 96) and target.shape == (17, 32, 24) and weight.shape == (17, 1)
    j = COCO_KEYPOINT_NAMES.index
    assert weight[:, 0].tolist() == [1.0 if k in (j("nose"), j("left_shoulder"), j("right_shoulder"),
                                                  j("left_hip")) else 0.0 for k in range(17)]
    # The box (clipped as official: w - 1, h - 1) -> centre (79.5, 59.5).
    np.testing.assert_allclose(meta["center"].numpy(), [79.5, 59.5])
    matrix = affine_matrix(meta["center"].numpy(), meta["scale"].numpy(), 0, (96, 128))
    sx, sy = matrix @ [100, 50, 1]
    # The white square on the left shoulder lands where the shoulder's target peaks.
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(3, 1, 1)
    pixels = image * std + mean
    assert float(pixels[:, round(sy), round(sx)].min()) > 0.8
    preds, _ = get_max_preds(target[None])
    assert preds[0, j("left_shoulder")].tolist() == [int(sx / 4 + 0.5), int(sy / 4 + 0.5)]
    gt = ds.coco_ground_truth()
    assert {a["id"] for a in gt["annotations"]} == {10, 11, 12}
    assert meta["image_id"] == 1 and meta["score"] == 1.0


@pytest.mark.parametrize("broken, message", [
    ({"keypoints": [1, 2, 3]}, "field 'keypoints'"),
    ({"bbox": None}, "field 'bbox'"),
    ({"image_id": 99}, "field 'image_id'"),
])
def test_bad_annotations_name_the_file_and_field(tmp_path, broken, message):
    ann = {"id": 7, "image_id": 1, "category_id": 1, "keypoints": [0] * 50 + [2],
           "bbox": [1, 1, 10, 10], "area": 50.0, "iscrowd": 0}
    ann.update(broken)
    _coco_folder(tmp_path, annotations=[ann])
    with pytest.raises(ValueError, match=message) as err:
        COCOKeypoints(tmp_path, "val2017")
    assert "person_keypoints_val2017.json" in str(err.value) and "annotations[0]" in str(err.value)


def test_missing_or_unreadable_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="person_keypoints_val2017.json"):
        COCOKeypoints(tmp_path, "val2017")
    _coco_folder(tmp_path)
    (tmp_path / "annotations" / "person_keypoints_train2017.json").write_text("{not json")
    (tmp_path / "images" / "train2017").mkdir()
    with pytest.raises(ValueError, match="person_keypoints_train2017.json"):
        COCOKeypoints(tmp_path, "train2017")
    ds = COCOKeypoints(tmp_path, "val2017")
    (tmp_path / "images" / "val2017" / "000000000001.jpg").write_bytes(b"not an image")
    with pytest.raises(RuntimeError, match="000000000001.jpg"):
        ds[0]
    (tmp_path / "images" / "val2017" / "000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000000000001.jpg"):
        ds[0]


def test_flip_swaps_left_and_right_joints():
    plain = ProceduralPoses("train", 6, image_size=(96, 128), seed=3)
    flip_only = PoseAugment(scale_factor=0.0, rotation_prob=0.0, half_body_prob=0.0)
    flipped = ProceduralPoses("train", 6, image_size=(96, 128), seed=3, augment=flip_only)
    seen = 0
    for i in range(6):
        _, t0, w0, m0 = plain[i]
        _, t1, w1, m1 = flipped[i]
        if torch.equal(m0["center"], m1["center"]):
            assert torch.equal(t0, t1)  # not flipped this time: identical sample
            continue
        seen += 1
        p0, _ = get_max_preds(t0[None])
        p1, _ = get_max_preds(t1[None])
        for left, right in COCO_FLIP_PAIRS:
            for a, b in ((left, right), (right, left)):
                if w0[b] > 0 and w1[a] > 0:
                    # Mirrored about the crop's centre line; within a heatmap pixel (the flip
                    # is not aligned with the stride-4 grid, hence the official shift).
                    assert abs(float(p1[0, a, 0]) - (24 - float(p0[0, b, 0]))) <= 1
                    assert float(p1[0, a, 1]) == float(p0[0, b, 1])
    assert seen > 0


def test_augmentation_is_reproducible_per_epoch_and_changes_between_epochs():
    ds = ProceduralPoses("train", 3, image_size=(64, 64), seed=1, augment=PoseAugment())
    a = ds[2]
    assert torch.equal(a[0], ds[2][0])
    ds.set_epoch(1)
    assert not torch.equal(a[0], ds[2][0])


def test_half_body_crop_centres_on_a_body_half():
    augment = PoseAugment(scale_factor=0.0, rotation_prob=0.0, flip=False, half_body_prob=1.0)
    ds = ProceduralPoses("train", 8, image_size=(96, 128), seed=5, augment=augment)
    plain = ProceduralPoses("train", 8, image_size=(96, 128), seed=5)
    changed = 0
    for i in range(8):
        rec = plain.record(i)
        if rec["vis"].sum() <= 8:
            continue
        centre = ds[i][3]["center"].numpy()
        halves = [rec["joints"][[j for j in idx if rec["vis"][j] > 0]].mean(axis=0)
                  for idx in (range(11), range(11, 17))]
        assert min(np.abs(centre - h).max() for h in halves) < 1e-9
        changed += 1
    assert changed > 0


def test_procedural_poses_are_deterministic_and_match_their_ground_truth():
    ds = ProceduralPoses("val", 4, image_size=(96, 128), seed=2)
    again = ProceduralPoses("val", 4, image_size=(96, 128), seed=2)
    other = ProceduralPoses("val", 4, image_size=(96, 128), seed=3)
    assert torch.equal(ds[1][0], again[1][0]) and not torch.equal(ds[1][0], other[1][0])
    gt = ds.coco_ground_truth()
    rec = ds.record(1)
    kp = np.array(gt["annotations"][1]["keypoints"]).reshape(17, 3)
    np.testing.assert_allclose(kp[rec["vis"] > 0, :2], rec["joints"][rec["vis"] > 0])
    assert (kp[rec["vis"] == 0] == 0).all() and gt["annotations"][1]["image_id"] == 2
    with pytest.raises(ValueError, match="split must be"):
        ProceduralPoses("test")
    with pytest.raises(ValueError, match="image_size must be divisible by 4"):
        ProceduralPoses("train", image_size=(30, 40))
