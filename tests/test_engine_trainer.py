"""The training engine: outputs, exact resume, DDP replicas (two gloo processes), errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from fastvision.engine import (
    BNMomentumDecay,
    PolyDecay,
    StaircaseDecay,
    Task,
    TrainConfig,
    fit,
    run_finished,
    set_bn_momentum,
)
from fastvision.models import load_model


class _RegressionTask(Task):
    """y = x @ w with BN + dropout, so resume must restore buffers, Adam state and RNG streams."""

    name = "toy"
    monitor = "val_mse"
    monitor_mode = "min"

    def model_spec(self):
        return {"name": "_toy", "kwargs": {}}

    def build_model(self, device):
        return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2),
                             nn.Linear(8, 1)).to(device)

    def datasets(self):
        g = torch.Generator().manual_seed(1)
        x = torch.randn(96, 4, generator=g)
        y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])

    def optimizer(self, model):
        return torch.optim.Adam(model.parameters(), lr=1e-2)

    def schedules(self):
        return {"lr": StaircaseDecay(1e-2, decay_samples=64, rate=0.5)}

    def training_step(self, model, batch, step):
        x, y = batch
        return nn.functional.mse_loss(model(x), y), {}

    @torch.no_grad()
    def evaluate(self, model, loader, device):
        errs = [nn.functional.mse_loss(model(x.to(device)), y.to(device), reduction="sum")
                for x, y in loader]
        return {"mse": float(sum(errs)) / 32}


def _config(tmp_path, **kw):
    return TrainConfig(out_dir=str(tmp_path), batch_size=16, device="cpu", progress=False, **kw)


def test_fit_writes_checkpoints_metrics_and_curves(tmp_path):
    record = fit(_RegressionTask(), _config(tmp_path, epochs=3))
    for name in ("checkpoint_last.pt", "model_best.pt", "metrics.json", "curves.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [1, 2, 3]
    assert saved["history"][-1]["step"] == 12 and saved["history"][-1]["samples"] == 192
    # staircase: lr halves every 64 samples; the logged lr is the last step's
    assert saved["history"][0]["lr"] == pytest.approx(1e-2 * 0.5 ** (48 // 64))
    assert saved["history"][2]["lr"] == pytest.approx(1e-2 * 0.5 ** (176 // 64))
    assert saved["history"][-1]["val_mse"] < saved["history"][0]["val_mse"]
    best = min(h["val_mse"] for h in saved["history"])
    assert saved["best"] == {"monitor": "val_mse", "value": best} == record["best"]
    ckpt = torch.load(tmp_path / "model_best.pt", weights_only=True)
    assert ckpt["history"][ckpt["epoch"] - 1]["val_mse"] == best
    assert saved["replica_max_abs_diff"] == 0.0


def test_resume_equals_uninterrupted_run(tmp_path):
    fit(_RegressionTask(), _config(tmp_path / "straight", epochs=3))
    fit(_RegressionTask(), _config(tmp_path / "resumed", epochs=1))
    fit(_RegressionTask(), _config(tmp_path / "resumed", epochs=3, resume=True))
    a = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert [h["val_mse"] for h in a["history"]] == [h["val_mse"] for h in b["history"]]


def test_run_finished_reads_the_epochs_a_run_trained(tmp_path):
    assert not run_finished(tmp_path / "none", 1)
    fit(_RegressionTask(), _config(tmp_path, epochs=1))
    assert run_finished(tmp_path, 1) and not run_finished(tmp_path, 2)
    (tmp_path / "checkpoint_last.pt").unlink()
    assert not run_finished(tmp_path, 1)


def test_resume_refuses_another_tasks_checkpoint(tmp_path):
    fit(_RegressionTask(), _config(tmp_path, epochs=1))
    other = _RegressionTask()
    other.name = "other"
    with pytest.raises(RuntimeError, match="written by task 'toy'"):
        fit(other, _config(tmp_path, epochs=2, resume=True))


@pytest.mark.parametrize("kw,match", [({"epochs": 0}, "epochs must be >= 1"),
                                      ({"epochs": 1, "batch_size": 0}, "batch_size")])
def test_bad_config(tmp_path, kw, match):
    cfg = TrainConfig(out_dir=str(tmp_path), device="cpu", progress=False, **kw)
    with pytest.raises(ValueError, match=match):
        fit(_RegressionTask(), cfg)


def test_training_set_smaller_than_a_batch(tmp_path):
    with pytest.raises(ValueError, match="smaller than one batch"):
        fit(_RegressionTask(), TrainConfig(out_dir=str(tmp_path), batch_size=128, device="cpu",
                                           progress=False))


def test_non_finite_loss_is_reported(tmp_path):
    class Diverging(_RegressionTask):
        def training_step(self, model, batch, step):
            return model(batch[0]).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1, step 0"):
        fit(Diverging(), _config(tmp_path, epochs=1))


def test_schedules():
    lr = StaircaseDecay(1e-2, decay_samples=600_000)
    assert lr(0) == 1e-2 and lr(599_999) == 1e-2 and lr(600_000) == pytest.approx(7e-3)
    assert lr(10**9) == 1e-5  # floor
    bn = BNMomentumDecay(decay_samples=200_000)
    assert bn(0) == pytest.approx(0.5) and bn(200_000) == pytest.approx(0.25)
    assert bn(10**9) == pytest.approx(0.01)  # TF decay clipped at 0.99
    poly = PolyDecay(0.01, total=100)
    assert poly(0) == 0.01 and poly(100) == 0.0 and poly(50) == pytest.approx(0.01 * 0.5 ** 0.9)
    m = nn.Sequential(nn.BatchNorm1d(3), nn.Sequential(nn.BatchNorm2d(2)))
    set_bn_momentum(m, 0.3)
    assert all(b.momentum == 0.3 for b in (m[0], m[1][0]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_gloo_processes_keep_identical_replicas(tmp_path):
    """torchrun, 2 CPU processes (gloo), PointNet for a few steps: replicas stay identical and
    the global batch is split between the processes."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "fastvision", "train", "pointnet",
           "--out", str(out), "--epochs", "2", "--batch-size", "8", "--device", "cpu",
           "--num-points", "64", "--train-samples", "32", "--test-samples", "16", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["world_size"] == 2
    assert record["replica_max_abs_diff"] == 0.0
    assert record["history"][-1]["step"] == 8  # 32 samples / global batch 8, twice
    model, meta = load_model(out / "model_best.pt")
    assert meta["task"] == "pointnet" and not model.training
