"""Segmentation data: Cityscapes and CamVid readers on tiny generated trees, the procedural
scenes, and the seeded augmentations."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image

from fastvision.data.segmentation import (
    CAMVID_CLASSES,
    CITYSCAPES_CLASSES,
    CamVidSegmentation,
    CityscapesSegmentation,
    ProceduralSegmentation,
    SegmentationAugment,
    _hsv_to_rgb,
    _rgb_to_hsv,
    colorize,
)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _cityscapes(root, label_ids):
    for split, cities in (("train", ("aachen", "bochum")), ("val", ("lindau",))):
        for i, city in enumerate(cities):
            stem = f"{city}_000000_00001{i}"
            _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _image(4, 6, i))
            _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label_ids)
    return root


LABEL_IDS = np.array([[0, 7, 8, 11, 26, 33], [9, 24, 1, 21, 23, 6]] * 2)


def test_cityscapes_reads_and_maps_train_ids(tmp_path):
    root = _cityscapes(tmp_path, LABEL_IDS)
    train = CityscapesSegmentation(root, "train")
    assert len(train) == 2 and train.num_classes == 19 and train.class_names == CITYSCAPES_CLASSES
    assert [p.parent.name for p in train.images] == ["aachen", "bochum"]
    image, label = train[0]
    assert image.shape == (3, 4, 6) and image.dtype == torch.float32 and label.dtype == torch.int64
    expected = torch.tensor([[255, 0, 1, 2, 13, 18], [255, 11, 255, 8, 10, 255]] * 2)
    assert torch.equal(label, expected)
    raw_image, _ = train.raw(0)
    torch.testing.assert_close(image, (torch.from_numpy(raw_image).permute(2, 0, 1) / 255 - MEAN) / STD)
    assert len(CityscapesSegmentation(root, "val")) == 1


def test_cityscapes_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="Cityscapes 'train' image folder not found: .*leftImg8bit/train"):
        CityscapesSegmentation(tmp_path, "train")
    root = _cityscapes(tmp_path / "a", LABEL_IDS)
    missing = root / "gtFine" / "train" / "bochum" / "bochum_000000_000011_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="label file not found: .*bochum_000000_000011_gtFine_labelIds.png"):
        CityscapesSegmentation(root, "train")
    root = _cityscapes(tmp_path / "b", LABEL_IDS[:, :5])  # labels 4x5, images 4x6
    with pytest.raises(ValueError, match=r"image .*aachen_000000_000010_leftImg8bit.png' is 4x6 but its label .* is 4x5"):
        CityscapesSegmentation(root, "train")[0]
    root = _cityscapes(tmp_path / "c", LABEL_IDS)
    broken = root / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000010_leftImg8bit.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(RuntimeError, match="could not read image .*lindau_000000_000010_leftImg8bit.png"):
        CityscapesSegmentation(root, "val")[0]
    root = _cityscapes(tmp_path / "d", np.zeros((4, 6, 3)))  # an RGB label
    with pytest.raises(ValueError, match="must be a single-channel image of class ids"):
        CityscapesSegmentation(root, "train")[0]
    (tmp_path / "e" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no \*/\*_leftImg8bit.png under"):
        CityscapesSegmentation(tmp_path / "e", "train")


def _camvid(root, annot):
    for split in ("train", "val", "test"):
        for i in range(2):
            _png(root / split / f"0001TP_{i:06d}.png", _image(3, 5, i))
            _png(root / f"{split}annot" / f"0001TP_{i:06d}.png", annot)
    return root


def test_camvid_reads_segnet_layout(tmp_path):
    annot = np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 11, 0, 3]])
    ds = CamVidSegmentation(_camvid(tmp_path, annot), "test")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.class_names == CAMVID_CLASSES
    image, label = ds[1]
    assert image.shape == (3, 3, 5)
    expected = annot.copy()
    expected[expected == 11] = 255
    assert torch.equal(label, torch.from_numpy(expected))


def test_camvid_errors(tmp_path):
    with pytest.raises(ValueError, match="CamVid split must be 'train', 'val' or 'test', got 'trainval'"):
        CamVidSegmentation(tmp_path, "trainval")
    root = _camvid(tmp_path / "a", np.full((3, 5), 12))
    with pytest.raises(ValueError, match="holds 12; CamVid annotations are 0..10 and 11"):
        CamVidSegmentation(root, "train")[0]
    (tmp_path / "b" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="CamVid 'val' annotation folder not found: .*valannot"):
        CamVidSegmentation(tmp_path / "b", "val")


def test_procedural_scenes_are_deterministic_and_valid():
    a = ProceduralSegmentation("train", 3, 32, 48, num_classes=7, seed=5)
    b = ProceduralSegmentation("train", 3, 32, 48, num_classes=7, seed=5)
    for i in range(3):
        (ia, la), (ib, lb) = a.raw(i), b.raw(i)
        assert ia.shape == (32, 48, 3) and ia.dtype == np.uint8 and la.shape == (32, 48)
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)
        assert la.min() >= 0 and la.max() < 7
    assert not np.array_equal(a.raw(0)[1], ProceduralSegmentation("train", 3, 32, 48, 7, seed=6).raw(0)[1])
    assert not np.array_equal(a.raw(0)[1], ProceduralSegmentation("val", 3, 32, 48, 7, seed=5).raw(0)[1])
    # one appearance per class: textures scale a class colour, so its chromaticity (r, g, b) /
    # (r + g + b) is the same in every scene
    chroma = {}
    for i in range(3):
        image, label = a.raw(i)
        rgb = image.astype(np.float64) + 1.0
        for c in np.unique(label):
            chroma.setdefault(int(c), []).append(np.median((rgb / rgb.sum(-1, keepdims=True))[label == c], axis=0))
    spread = [np.ptp(np.array(m), axis=0).max() for m in chroma.values() if len(m) > 1]
    assert spread and max(spread) < 0.03
    assert ProceduralSegmentation().raw(0)[0].shape == (128, 256, 3)  # the documented default


def test_procedural_errors():
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'dev'"):
        ProceduralSegmentation("dev")
    with pytest.raises(ValueError, match="num_samples must be >= 1, got 0"):
        ProceduralSegmentation(num_samples=0)
    with pytest.raises(ValueError, match="num_classes must be in"):
        ProceduralSegmentation(num_classes=1)
    with pytest.raises(IndexError, match="index 4 out of range for 4 samples"):
        ProceduralSegmentation(num_samples=4).raw(4)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_augment_is_deterministic_and_crops_with_ignore_padding():
    image, label = ProceduralSegmentation("train", 1, 32, 48, seed=1).raw(0)
    aug = SegmentationAugment(crop_size=(32, 48), scale_range=(0.5, 2.0), flip=True,
                              color_jitter=(0.25, 0.25, 0.25, 0.25))
    x1, y1 = aug(image, label, _gen(3))
    x2, y2 = aug(image, label, _gen(3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (3, 32, 48)
    shrink = SegmentationAugment(crop_size=(32, 48), scale_range=(0.5, 0.5))
    x, y = shrink(image, label, _gen(0))
    assert (y[16:] == 255).all() and (y[:, 24:] == 255).all() and (y[:16, :24] != 255).all()
    torch.testing.assert_close(x[:, 16:], (-MEAN / STD).expand(3, 16, 48))  # image padded with 0


def test_augment_scale_steps_and_flip():
    image, label = ProceduralSegmentation("train", 1, 20, 30, seed=2).raw(0)
    hrnet = SegmentationAugment(scale_range=(0.5, 2.1), scale_step=0.1)
    heights = {hrnet(image, label, _gen(s))[1].shape[0] for s in range(60)}
    assert heights <= {round(20 * (0.5 + k / 10)) for k in range(17)} and len(heights) > 8
    flip = SegmentationAugment(flip=True)
    labels = [flip(image, label, _gen(s))[1] for s in range(12)]
    plain = torch.from_numpy(label)
    assert all(torch.equal(y, plain) or torch.equal(y, plain.flip(-1)) for y in labels)
    assert any(torch.equal(y, plain.flip(-1)) for y in labels) and any(torch.equal(y, plain) for y in labels)


def test_colour_jitter_changes_only_the_image():
    image, label = ProceduralSegmentation("train", 1, 16, 16, seed=3).raw(0)
    x, y = SegmentationAugment(color_jitter=(0.4, 0.4, 0.4, 0.1))(image, label, _gen(1))
    x0, _ = SegmentationAugment()(image, label, _gen(1))
    assert torch.equal(y, torch.from_numpy(label)) and not torch.allclose(x, x0)
    rgb = torch.rand(3, 5, 7, generator=_gen(0), dtype=torch.float64)
    hsv = _rgb_to_hsv(rgb)
    expected = [colorsys.rgb_to_hsv(*rgb[:, 0, j].tolist()) for j in range(7)]
    torch.testing.assert_close(hsv[:, 0].T, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(_hsv_to_rgb(hsv), rgb)


def test_epochs_draw_new_but_reproducible_augmentations():
    ds = ProceduralSegmentation("train", 2, 32, 32, seed=0,
                                augment=SegmentationAugment(crop_size=(24, 24), scale_range=(0.5, 2.0), flip=True))
    first = ds[1]
    ds.set_epoch(1)
    second = ds[1]
    ds.set_epoch(0)
    assert torch.equal(ds[1][0], first[0]) and not torch.equal(second[0], first[0])


def test_augment_argument_errors():
    with pytest.raises(ValueError, match="crop_size must be"):
        SegmentationAugment(crop_size=(0, 4))
    with pytest.raises(ValueError, match="scale_range must be"):
        SegmentationAugment(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="color_jitter must be"):
        SegmentationAugment(color_jitter=(0.1, 0.1, 0.1, 0.7))


def test_colorize_uses_cityscapes_colours():
    colours = colorize(np.array([[0, 10, 255]]), 19)
    assert colours.tolist() == [[[128, 64, 128], [70, 130, 180], [0, 0, 0]]]
