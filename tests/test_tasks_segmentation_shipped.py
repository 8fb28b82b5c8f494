"""The shipped segmentation weights (the best small model of the segmentation study) and the demo
section that segments embedded scenes with them."""

import pytest
import torch

from fastvision.models import load_model, shipped_path, shipped_weights
from fastvision.tasks.segmentation.demo import MIN_MIOU, SHIPPED_SEGMENTER, section
from fastvision.tasks.segmentation.inference import evaluate_segmentation
from fastvision.tasks.segmentation.recipe import SegmentationData, recipe_for


@pytest.fixture(scope="module")
def shipped():
    assert SHIPPED_SEGMENTER in shipped_weights()
    return load_model(shipped_path(SHIPPED_SEGMENTER))


def test_small_float16_file_with_its_recipe(shipped):
    _, meta = shipped
    assert shipped_path(SHIPPED_SEGMENTER).stat().st_size < 4.5e6
    raw = torch.load(shipped_path(SHIPPED_SEGMENTER), weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["model"].values() if v.is_floating_point())
    assert "segmentation-study" in meta["recipe"] and meta["metrics"]["miou"] > MIN_MIOU


def test_shipped_model_segments_the_held_out_scenes_as_recorded(shipped):
    model, meta = shipped
    name, data_meta = meta["model_spec"]["name"], meta["data"]
    data = SegmentationData("embedded", tuple(data_meta["image_size"]),
                            val_samples=meta["metrics"]["val_samples"],
                            num_classes_embedded=data_meta["num_classes"])
    recipe = recipe_for(name)
    loader = torch.utils.data.DataLoader(data.load(recipe, "val"), batch_size=16)
    metrics, _ = evaluate_segmentation(model, loader, torch.device("cpu"), data.num_classes,
                                       align_corners=recipe.eval_align_corners)
    # float16 weights, evaluated in float32: the recorded mIoU (float32 weights) within a point.
    assert metrics.compute()["miou"] == pytest.approx(meta["metrics"]["miou"], abs=0.01)


def test_demo_section_segments_and_says_what_the_random_init_part_checks(tmp_path):
    lines, rows, ok = section(tmp_path, ["cpu"])
    assert ok and rows[0]["op"].endswith("segmentation (shipped)") and rows[0]["ok"]
    text = "\n".join(lines)
    assert "mIoU" in text and "random initialisation" in text and "checks only" in text
    assert (tmp_path / "segmentation-shipped.png").stat().st_size > 0
