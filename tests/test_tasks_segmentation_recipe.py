"""The segmentation recipe: official optimisers and schedules per family, the loss on tensor and
tuple outputs at low resolution, multi-scale + flip prediction, and `fastvision train / eval
segmentation` end to end (with exact resume) on tiny embedded data and a tiny registered model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from fastvision.cli import main
from fastvision.data.segmentation import CityscapesSegmentation
from fastvision.engine import Warmup
from fastvision.losses.segmentation import CITYSCAPES_CLASS_WEIGHTS, ohem_cross_entropy_bisenet
from fastvision.models import _registry, load_model, register_model
from fastvision.tasks.segmentation.inference import predict_probs
from fastvision.tasks.segmentation.recipe import SegmentationData, SegmentationTask, family_of

TINY = "tiny_seg_test"
TINY_AUX = "tiny_seg_aux_test"


class TinySeg(nn.Module):
    """Logits at 1/4 resolution; with ``aux`` also a booster-like head (a tuple, main first)."""

    def __init__(self, num_classes: int, aux: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux = nn.Conv2d(8, num_classes, 1) if aux else None

    def forward(self, x):
        feat = self.stem(x)
        if self.aux is not None and self.training:
            return self.head(feat), self.aux(feat)
        return self.head(feat)


@pytest.fixture(autouse=True, scope="module")
def tiny_models():
    register_model(TINY)(lambda num_classes=19: TinySeg(num_classes))
    register_model(TINY_AUX)(lambda num_classes=19: TinySeg(num_classes, aux=True))
    yield
    for name in (TINY, TINY_AUX):
        _registry._MODELS.pop(name, None)


def _data(**kw):
    return SegmentationData(image_size=(32, 64), train_samples=8, val_samples=4, **kw)


def test_family_from_name():
    assert family_of("hrnetv2_w48") == "hrnet" and family_of("bisenetv2") == "bisenetv2"
    assert family_of("hyperseg_s") == "hyperseg" and family_of(TINY, "hyperseg") == "hyperseg"
    with pytest.raises(ValueError, match=f"cannot tell the recipe family of model '{TINY}'"):
        family_of(TINY)
    with pytest.raises(ValueError, match="family must be one of"):
        family_of(TINY, "deeplab")


def test_bisenet_schedule_is_the_official_warmup_poly():
    task = SegmentationTask(TINY, _data(), total_samples=5000 * 16, batch_size=16, family="bisenetv2")
    lr = task.schedules()["lr"]

    def official(it, max_iter=5000, warmup=1000, ratio=0.1, power=0.9):  # WarmupPolyLrScheduler, 'exp'
        if it < warmup:
            return 5e-3 * ratio ** (1 - it / warmup)
        return 5e-3 * (1 - (it - warmup) / (max_iter - warmup)) ** power

    for it in (0, 1, 500, 999, 1000, 1001, 3000, 4999):
        assert lr(it * 16) == pytest.approx(official(it)), it
    short = SegmentationTask(TINY, _data(), 800, 4, family="bisenetv2", warmup_iters=0).schedules()["lr"]
    assert short(0) == 5e-3 and short(400) == pytest.approx(5e-3 * 0.5 ** 0.9)
    linear = Warmup(lambda x: 2.0, 10, 0.1, "linear")
    assert linear(0) == pytest.approx(0.2) and linear(5) == pytest.approx(1.1) and linear(10) == 2.0
    with pytest.raises(ValueError, match="warm-up mode must be 'linear' or 'exp'"):
        Warmup(lambda x: 1.0, 10, 0.1, "cosine")


def test_official_optimisers():
    model = TinySeg(19, aux=True)
    task = SegmentationTask(TINY_AUX, _data(), 800, 4, family="bisenetv2")
    opt = task.optimizer(model)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    # heads (and booster heads) at 10x the rate; 1-d parameters without weight decay
    assert by_param[id(model.head.weight)]["lr"] == pytest.approx(0.05)
    assert by_param[id(model.aux.bias)]["lr_scale"] == 10 and by_param[id(model.aux.bias)]["weight_decay"] == 0
    assert by_param[id(model.stem[0].weight)]["lr"] == pytest.approx(5e-3)
    assert by_param[id(model.stem[0].weight)]["weight_decay"] == 5e-4
    assert by_param[id(model.stem[1].weight)]["weight_decay"] == 0
    for g in opt.param_groups:
        g["lr"] = 1.0  # what the engine sets before apply_schedules
    task.apply_schedules(model, {"lr": 1.0})
    assert by_param[id(model.head.weight)]["lr"] == 10.0 and by_param[id(model.stem[0].weight)]["lr"] == 1.0

    hrnet = SegmentationTask(TINY, _data(), 800, 4, family="hrnet").optimizer(model)
    assert isinstance(hrnet, torch.optim.SGD) and {g["lr"] for g in hrnet.param_groups} == {0.01}
    assert {g["weight_decay"] for g in hrnet.param_groups} == {5e-4}
    hyperseg = SegmentationTask(TINY, _data(), 800, 4, family="hyperseg")
    adam = hyperseg.optimizer(model)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.5, 0.999)
    assert adam.defaults["lr"] == 1e-3
    assert hyperseg.schedules()["lr"](400) == pytest.approx(1e-3 * 0.5 ** 0.9)


def test_training_step_is_ohem_on_main_and_booster_outputs():
    torch.manual_seed(0)
    model = TinySeg(19, aux=True).train()
    task = SegmentationTask(TINY_AUX, _data(), 800, 2, family="bisenetv2")
    images, labels = torch.randn(2, 3, 32, 64), torch.randint(0, 19, (2, 32, 64))
    labels[:, :4] = 255
    loss, logs = task.training_step(model, (images, labels), 0)
    main_logits, aux_logits = model(images)
    expected = ohem_cross_entropy_bisenet(main_logits, labels) + ohem_cross_entropy_bisenet(aux_logits, labels)
    torch.testing.assert_close(loss, expected)
    assert set(logs) == {"main_loss", "aux_loss"}


def test_class_weight_and_loss_choices():
    with pytest.raises(ValueError, match="Cityscapes class weights need 19 classes, the data has 5"):
        SegmentationTask(TINY, _data(num_classes_embedded=5), 800, 4, family="hrnet", class_weights="cityscapes")
    with pytest.raises(ValueError, match="loss must be one of"):
        SegmentationTask(TINY, _data(), 800, 4, family="hrnet", loss="dice")
    with pytest.raises(ValueError, match="data must be 'embedded', 'cityscapes:PATH' or 'camvid:PATH'"):
        SegmentationData("cityscapes")


def test_multi_scale_flip_prediction():
    model = TinySeg(5).eval()
    images = torch.randn(1, 3, 40, 72)
    probs = predict_probs(model, images, (40, 72), scales=(0.5, 1.0), flip=True)
    assert probs.shape == (1, 5, 40, 72)
    torch.testing.assert_close(probs.sum(1), torch.full((1, 40, 72), 4.0))  # 2 scales x 2 flips
    # scale 1.0 feeds 40x72 rounded up to multiples of 32 (64x96), as CoinCheung's MscEvalV0
    up = F.interpolate(images, size=(64, 96), mode="bilinear", align_corners=False)
    single = predict_probs(model, images, (40, 72))
    expected = F.softmax(F.interpolate(model(up), size=(40, 72), mode="bilinear", align_corners=False), 1)
    torch.testing.assert_close(single, expected)


def _train(out, epochs, *extra):
    return main(["train", "segmentation", "--model", TINY_AUX, "--family", "bisenetv2",
                 "--image-size", "32x64", "--train-samples", "8", "--val-samples", "4",
                 "--num-classes", "5", "--epochs", str(epochs), "--batch-size", "4",
                 "--device", "cpu", "--quiet", "--out", str(out), *extra])


def test_cli_train_resume_and_eval(tmp_path):
    assert _train(tmp_path / "straight", 2) == 0
    assert _train(tmp_path / "resumed", 1) == 0
    assert _train(tmp_path / "resumed", 2, "--resume") == 0
    record = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2] and record["history"][-1]["step"] == 4
    assert 0 <= record["history"][-1]["val_miou"] <= 1
    assert record["best"]["monitor"] == "val_miou"
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, msg=key)  # exact resume

    model, meta = load_model(tmp_path / "straight" / "model_best.pt")
    assert meta["model_spec"] == {"name": TINY_AUX, "kwargs": {"num_classes": 5}}
    out = tmp_path / "eval"
    assert main(["eval", "segmentation", "--checkpoint", str(tmp_path / "straight" / "model_best.pt"),
                 "--family", "bisenetv2", "--image-size", "32x64", "--val-samples", "4",
                 "--num-classes", "5", "--multi-scale", "--flip", "--out", str(out), "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and results["flip"] is True
    assert results["images"] == 4 and set(results["iou"]) == {f"class{c}" for c in range(5)}
    present = [v for v in results["iou"].values() if v is not None]
    assert results["miou"] == pytest.approx(sum(present) / len(present))
    assert 0 <= results["pixel_acc"] <= 1
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"{i:04d}.png" for i in range(4)]
    assert "| **mIoU** |" in (out / "results.md").read_text()


def test_cli_eval_errors(tmp_path, capsys):
    # Each bad call: one error line on stderr and exit code 2 (issue 15).
    assert main(["eval", "segmentation", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert _train(tmp_path / "run", 1, "--max-steps-per-epoch", "1") == 0
    capsys.readouterr()
    assert main(["eval", "segmentation", "--checkpoint", str(tmp_path / "run" / "model_best.pt"),
                 "--family", "bisenetv2", "--image-size", "32x64", "--val-samples", "2", "--out", str(tmp_path)]) == 2
    assert "the checkpoint predicts 5 classes, the data 'embedded' has 19" in capsys.readouterr().err
    assert main(["eval", "segmentation", "--checkpoint", str(tmp_path / "run" / "model_best.pt"),
                 "--model", "bisenetv2", "--out", str(tmp_path)]) == 2
    assert f"--model 'bisenetv2' does not match the checkpoint's model '{TINY_AUX}'" in capsys.readouterr().err


def _tiny_cityscapes(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            stem = f"ulm_000000_00000{i}"
            for folder, name, array in (
                    ("leftImg8bit", f"{stem}_leftImg8bit.png", rng.integers(0, 256, (32, 64, 3))),
                    ("gtFine", f"{stem}_gtFine_labelIds.png", rng.choice([0, 7, 8, 26, 33], (32, 64)))):
                path = root / folder / split / "ulm" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array.astype(np.uint8)).save(path)
    return root


def test_real_data_sources_take_their_official_settings(tmp_path):
    root = _tiny_cityscapes(tmp_path / "cityscapes")
    task = SegmentationTask(TINY, SegmentationData(f"cityscapes:{root}"), 800, 4, family="hrnet")
    assert task.class_weights == CITYSCAPES_CLASS_WEIGHTS  # HRNet weights its Cityscapes CE
    train, val = task.datasets()
    assert isinstance(train, CityscapesSegmentation) and len(train) == 4 and len(val) == 2
    assert train.augment.crop_size == (512, 1024) and train.augment.scale_step == 0.1
    camvid = SegmentationData("camvid:/nowhere")
    hyperseg = camvid.augment("hyperseg", train=True)
    assert hyperseg.crop_size == (576, 576) and hyperseg.scale_range == (0.5, 2.0)
    assert hyperseg.scale_prob == 0.5 and hyperseg.color_jitter is None  # jitter: Cityscapes -S only
    assert camvid.poly_power("hyperseg") == 2.0 and camvid.poly_power("hrnet") == 0.9
    out = tmp_path / "run"
    assert main(["train", "segmentation", "--model", TINY, "--family", "hrnet", "--data", f"cityscapes:{root}",
                 "--crop-size", "32x64", "--epochs", "1", "--batch-size", "2", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["history"][0]["step"] == 2
