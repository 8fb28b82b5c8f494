"""PAD-Net recipes: `fastvision train padnet` / `padnet-teacher` end to end, knowledge
distillation from a frozen teacher (adapters kept out of the inference checkpoint), exact
resume, argument errors, and `fastvision eval padnet` on tiny settings."""

from __future__ import annotations

import json

import pytest
import torch

from fastvision.cli import main
from fastvision.engine import TrainConfig, fit
from fastvision.tasks.padnet.experiment import PadNetExperiment, paper_ordering
from fastvision.models import get_model, load_model
from fastvision.models.padnet import PADNet
from fastvision.tasks.padnet.recipe import DistilledStudent, PadNetTask, ParticleData

TINY = ["--train-images", "16", "--test-images", "4", "--quiet"]
VAL_KEYS = {"val_mae", "val_rmse", "val_precision", "val_recall", "val_f1"}


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    assert main(["train", "padnet-teacher", "--out", str(out), "--epochs", "1",
                 "--train-images", "8", "--test-images", "2", "--quiet"]) == 0
    return str(out / "checkpoint_last.pt")


def _history(out):
    return json.loads((out / "metrics.json").read_text())["history"]


def test_train_padnet_end_to_end(tmp_path):
    assert main(["train", "padnet", "--out", str(tmp_path), "--epochs", "1", *TINY]) == 0
    history = _history(tmp_path)
    assert len(history) == 1 and VAL_KEYS <= history[0].keys()
    assert history[0]["step"] == 2  # 16 pads, the paper's batch 8 (the recipe's default)
    model, meta = load_model(tmp_path / "model_best.pt")
    assert isinstance(model, PADNet) and meta["model_spec"]["name"] == "padnet"
    assert meta["monitor"] == "val_f1"


def test_teacher_checkpoint(teacher_ckpt):
    model, meta = load_model(teacher_ckpt)
    assert meta["model_spec"]["name"] == "padnet_teacher" and meta["task"] == "padnet-teacher"
    assert model.decoder.channels == 24


def test_kd_checkpoint_holds_bare_student_and_resumes_exactly(tmp_path, teacher_ckpt):
    args = ["train", "padnet", "--kd", "--teacher", teacher_ckpt, *TINY]
    assert main([*args, "--out", str(tmp_path / "straight"), "--epochs", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "resumed"), "--epochs", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "resumed"), "--epochs", "2", "--resume"]) == 0
    straight = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    # The inference weights are exactly PAD-Net's; the adapters live only in "training_model".
    assert straight["model"].keys() == get_model("padnet").state_dict().keys()
    assert straight["model_spec"] == {"name": "padnet", "kwargs": {}}
    assert any(k.startswith("transfer.adapters.") for k in straight["training_model"])
    for key, value in straight["training_model"].items():
        assert torch.equal(value, resumed["training_model"][key]), key
    history = _history(tmp_path / "resumed")
    assert [h["epoch"] for h in history] == [1, 2] and history[-1]["step"] == 4
    assert {"train_aal", "train_kd_intra", "train_kd_cross"} <= history[-1].keys()
    student, _ = load_model(tmp_path / "resumed" / "model_best.pt")
    assert isinstance(student, PADNet)


def test_kd_teacher_frozen_and_student_learns(teacher_ckpt):
    task = PadNetTask("padnet", ParticleData(train_images=8, test_images=2), teacher=teacher_ckpt)
    model = task.build_model(torch.device("cpu"))
    assert isinstance(model, DistilledStudent)
    assert task.inference_module(model) is model.student
    teacher_before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    train, _ = task.datasets()
    images, targets, index = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    model.train()
    loss, logs = task.training_step(model, (images, targets, index), 0)
    loss.backward()
    assert not task.teacher.training
    assert all(p.grad is None for p in task.teacher.parameters())
    assert all(p.grad is not None for p in model.transfer.parameters())
    assert float(loss.detach()) == pytest.approx(float(logs["aal"]) + 0.5 * float(logs["kd_intra"])
                                        + 0.5 * float(logs["kd_cross"]), rel=1e-5)
    # At initialisation the KD terms are of the order of the task loss, not ~100x (SKT's sums)
    kd_total = float(loss.detach()) - float(logs["aal"])
    assert 0.1 < kd_total / float(logs["aal"]) < 10, logs
    for k, v in task.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k  # BN statistics untouched (eval mode)


def test_kd_step_uses_means_of_skt_terms(teacher_ckpt):
    # The recipe's KD terms are SKT's with means: L_intra = mean over the 3 MDR outputs and
    # their positions of (1 - cos), L_cross = mean over the 3 FSP pairs and their 24 x 24 entries.
    from fastvision.losses.particles import dense_fsp

    task = PadNetTask("padnet", ParticleData(train_images=8, test_images=2), teacher=teacher_ckpt)
    torch.manual_seed(0)
    model = task.build_model(torch.device("cpu")).train()
    train, _ = task.datasets()
    images, targets, index = next(iter(torch.utils.data.DataLoader(train, batch_size=4)))
    loss, logs = task.training_step(model, (images, targets, index), 0)
    with torch.no_grad():
        _, t_feats = task.teacher(images, return_features=True)
        _, s_feats = model.student(images, return_features=True)
        adapted = [a(f) for a, f in zip(model.transfer.adapters, s_feats)]
        intra = sum((1 - torch.nn.functional.cosine_similarity(a, t, dim=1)).mean()
                    for a, t in zip(adapted, t_feats)) / 3
        pairs = list(zip(dense_fsp(adapted), dense_fsp(list(t_feats))))
        assert len(pairs) == 3 and pairs[0][0].shape == (4, 24, 24)
        cross = sum((gt - gs).pow(2).sum() / (4 * 24 * 24) for gs, gt in pairs) / 3
    assert float(logs["kd_intra"]) == pytest.approx(float(intra), rel=1e-5)
    assert float(logs["kd_cross"]) == pytest.approx(float(cross), rel=1e-5)
    assert float(logs["kd_intra"]) <= 2 and float(logs["kd_cross"]) <= 4


@pytest.mark.parametrize("loss", ["iou", "dice", "mse", "bce"])
def test_table4_losses_train(tmp_path, loss):
    task = PadNetTask("padnet", ParticleData(train_images=8, test_images=2), loss)
    record = fit(task, TrainConfig(out_dir=str(tmp_path), epochs=1, batch_size=8, progress=False))
    assert record["history"][0]["train_loss"] > 0 and VAL_KEYS <= record["history"][0].keys()


def test_width_option(tmp_path):
    assert main(["train", "padnet", "--width", "x2", "--out", str(tmp_path), "--epochs", "1",
                 "--max-steps-per-epoch", "1", *TINY]) == 0
    _, meta = load_model(tmp_path / "checkpoint_last.pt")
    assert meta["model_spec"]["name"] == "padnet_x2"


def test_argument_errors(tmp_path, teacher_ckpt):
    with pytest.raises(SystemExit, match="--kd needs --teacher"):
        main(["train", "padnet", "--kd", "--out", str(tmp_path), *TINY])
    with pytest.raises(SystemExit, match="--teacher is used only with --kd"):
        main(["train", "padnet", "--teacher", teacher_ckpt, "--out", str(tmp_path), *TINY])
    with pytest.raises(SystemExit):
        main(["train", "padnet", "--loss", "focal", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="model must be one of"):
        PadNetTask("unet")
    with pytest.raises(ValueError, match="loss must be one of"):
        PadNetTask("padnet", loss="focal")
    with pytest.raises(ValueError, match="threshold must be in"):
        PadNetTask("padnet", threshold=1.5)
    with pytest.raises(ValueError, match="teacher is trained without distillation"):
        PadNetTask("padnet_teacher", teacher=teacher_ckpt)
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        ParticleData(str(tmp_path)).load()
    with pytest.raises(ValueError, match="unknown models"):
        PadNetExperiment(models=("unet",))
    with pytest.raises(ValueError, match="padnet_kd needs the teacher"):
        PadNetExperiment(models=("padnet_kd",))


def test_eval_padnet_tiny_and_cached(tmp_path, teacher_ckpt):
    out = tmp_path / "eval"
    args = ["eval", "padnet", "--out", str(out), "--teacher", teacher_ckpt, "--models",
            "teacher,padnet_kd,padnet", "--train-images", "8", "--test-images", "4",
            "--student-epochs", "1", "--val-images", "2", "--quiet"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert list(rows) == ["teacher", "padnet_kd", "padnet"]
    assert rows["padnet"]["params"] == 5_765
    assert rows["padnet"]["mflops"] == pytest.approx(8.60, abs=0.01)
    assert rows["teacher"]["params"] == 464_181
    for row in rows.values():
        assert {"mae", "rmse", "precision", "recall", "f1"} <= row.keys()
    assert set(results["paper_ordering"]) == {"mae", "rmse", "precision", "recall", "f1"}
    assert "| PAD-Net (KD) | 5,765 | 8.60 |" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 0 and (out / "overlay.png").stat().st_size > 0
    stamp = (out / "padnet" / "checkpoint_last.pt").stat().st_mtime_ns
    assert main(args) == 0  # cached: nothing is retrained
    assert (out / "padnet" / "checkpoint_last.pt").stat().st_mtime_ns == stamp


def test_paper_ordering():
    def row(mae, p):
        return {"mae": mae, "rmse": mae + 0.5, "precision": p, "recall": p, "f1": p}

    good = {"teacher": row(0.8, 0.97), "padnet_kd": row(1.6, 0.93), "padnet": row(1.9, 0.89)}
    assert all(paper_ordering(good).values())
    bad = {**good, "padnet": row(1.5, 0.95)}
    assert not any(paper_ordering(bad).values())
