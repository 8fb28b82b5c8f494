"""HyperSeg's per-model training recipes (YuvalNirkin/hyperseg configs/train/*.py) on the
segmentation engine."""

import pytest

from fastvision.engine.schedules import PolyDecay
from fastvision.tasks.segmentation.recipe import FAMILIES, SegmentationData, recipe_for


@pytest.mark.parametrize(
    "model,expected",
    [
        ("hyperseg_m_cityscapes", dict(lr=1e-3, loss="bootstrapped", scale_range=(0.25, 2.0), scale_prob=0.5,
                                       color_jitter=None, cityscapes_crop=(512, 1024), poly_power=0.9)),
        ("hyperseg_s_cityscapes", dict(lr=1e-3, loss="bootstrapped", scale_range=(0.375, 1.5), scale_prob=0.5,
                                       color_jitter=(0.25, 0.25, 0.25, 0.25), cityscapes_crop=(768, 768))),
        ("hyperseg_s_camvid", dict(camvid_scale_range=(0.5, 2.0), camvid_crop=(576, 576), camvid_poly_power=2.0)),
        ("hyperseg_l_camvid", dict(camvid_scale_range=(0.75, 2.0), camvid_crop=(768, 768), camvid_poly_power=2.0)),
        ("hyperseg_l_voc", dict(lr=1e-4, loss="ce", poly_power=3.0, poly_per_epoch=True, betas=(0.5, 0.999))),
    ],
)
def test_hyperseg_recipes_follow_the_official_configs(model, expected):
    rec = recipe_for(model)
    assert rec.optimizer == "adam" and rec.betas == (0.5, 0.999)
    for key, value in expected.items():
        assert getattr(rec, key) == value, key
    assert FAMILIES["hyperseg"].scale_range == (0.375, 1.5)  # the family entry is not modified


def test_camvid_augment_uses_the_model_crop_and_scale():
    data = SegmentationData(source="camvid:/nonexistent")
    aug = data.augment(recipe_for("hyperseg_l_camvid"), train=True)
    assert tuple(aug.crop_size) == (768, 768) and tuple(aug.scale_range) == (0.75, 2.0)
    assert data.poly_power(recipe_for("hyperseg_l_camvid")) == 2.0


def test_poly_decay_per_epoch():
    per_step = PolyDecay(1.0, 100, 3.0)
    per_epoch = PolyDecay(1.0, 100, 3.0, every=25)
    assert per_epoch(24) == 1.0 and per_epoch(25) == per_step(25) == pytest.approx(0.75 ** 3)
    assert per_epoch(49) == per_step(25) and per_step(49) < per_step(25)
