"""Sampling-paper recipes: losses as the official code composes them, frozen task net,
temperature profiles, the `fastvision train` / `eval sampling` commands end to end."""

from __future__ import annotations

import json

import pytest
import torch

from fastvision.cli import main
from fastvision.engine import TrainConfig, fit
from fastvision.losses.sampling import sampling_loss
from fastvision.models import get_model, load_model, pointnet_cls_loss
from fastvision.tasks.sampling.recipe import (
    PointCloudData,
    SamplerTask,
    TemperatureProfile,
    match_points,
    progressive_sizes,
    sample_points,
)

N = 64


@pytest.fixture(scope="module")
def task_net_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasknet") / "task.pt"
    torch.manual_seed(3)
    model = get_model("pointnet_cls_vanilla", num_classes=12).eval()
    torch.save({"model": model.state_dict(), "task": "pointnet",
                "model_spec": {"name": "pointnet_cls_vanilla", "kwargs": {"num_classes": 12}}}, path)
    return str(path)


def _data():
    return PointCloudData(num_points=N, train_samples=64, test_samples=32)


def _batch():
    g = torch.Generator().manual_seed(0)
    cloud = torch.rand(4, N, 3, generator=g) * 2 - 1
    return cloud, torch.tensor([0, 3, 5, 11])


def test_progressive_sizes():
    assert progressive_sizes(1024) == [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert progressive_sizes(48) == [2, 4, 8, 16, 32, 48]


def test_temperature_profiles():
    lin = TemperatureProfile("linear", 1.0, 0.1, span_samples=100)
    assert lin(0) == 1.0 and lin(50) == pytest.approx(0.55) and lin(100) == lin(10**6) == pytest.approx(0.1)
    exp = TemperatureProfile("exponential", 1.0, 0.01, span_samples=100)
    assert exp(50) == pytest.approx(0.1) and exp(200) == pytest.approx(0.01)
    assert TemperatureProfile("constant", 0.7)(10**6) == 0.7
    with pytest.raises(ValueError, match="temperature profile must be"):
        TemperatureProfile("cosine")
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        TemperatureProfile("linear", 1.0, 0.0)


@pytest.mark.parametrize("kind", ["snet", "samplenet", "progressivenet", "samplenet-progressive"])
def test_training_step_is_the_official_loss(task_net_ckpt, kind):
    task = SamplerTask(kind, _data(), task_net_ckpt, num_out_points=16)
    model = task.build_model(torch.device("cpu")).train()
    cloud, labels = _batch()
    torch.manual_seed(0)
    loss, logs = task.training_step(model, (cloud, labels), 0)
    torch.manual_seed(0)
    out = model(cloud)
    simplified, projected = out if kind.startswith("samplenet") else (out, out)
    sizes = [2, 4, 8, 16, 32, 64] if task.progressive else [16]
    gamma, delta = (0.5, 1 / 30) if task.progressive else (1.0, 0.0)
    expected = 0.0
    for s in sizes:
        logits, _ = task.task_net(projected[:, :s])
        expected = expected + pointnet_cls_loss(logits, labels, None)
        expected = expected + 30.0 * sampling_loss(simplified[:, :s], cloud, gamma=gamma, delta=delta)
    if kind.startswith("samplenet"):
        expected = expected + 1.0 * model.project._temperature ** 2  # lambda * sigma, no clamp
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in task.task_net.parameters())  # frozen
    assert not task.task_net.training
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_samplenet_classification_settings(task_net_ckpt):
    task = SamplerTask("samplenet", _data(), task_net_ckpt, num_out_points=8)
    model = task.build_model(torch.device("cpu"))
    assert model.project.group_size == 7 and model.project._min_sigma is None
    assert model.bn_fc4 is not None  # TF classification code: BN on the output FC
    assert task.alpha == 30 and task.lmbda == 1


def test_fixed_temperature_profile_is_applied(task_net_ckpt, tmp_path):
    data = _data()
    profile = TemperatureProfile("linear", 1.0, 0.2, span_samples=64)
    task = SamplerTask("samplenet", data, task_net_ckpt, num_out_points=8, temperature=profile)
    fit(task, TrainConfig(out_dir=str(tmp_path), epochs=2, batch_size=16, device="cpu",
                          progress=False))
    model, _ = load_model(tmp_path / "checkpoint_last.pt")
    # the last step ran at 112 samples seen (8 steps of 16): past the span, so t = 0.2
    assert float(model.project._temperature.detach()) == pytest.approx(0.2)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["history"][-1]["val_temperature"] == pytest.approx(0.2)


def test_sample_points_matches_input_points(task_net_ckpt):
    cloud, _ = _batch()
    for name, kwargs in [("snet", {"num_out_points": 8}),
                         ("samplenet", {"num_out_points": 8, "input_shape": "bnc"}),
                         ("samplenet", {"num_out_points": 8})]:  # bcn layout
        sampler = get_model(name, **kwargs).eval()
        sampled = sample_points(sampler, cloud)
        assert sampled.shape == (4, 8, 3)
        # every sampled point is an input point, and no point is taken twice
        assert (sampled[:, :, None] == cloud[:, None]).all(-1).any(-1).all()
        assert all(len(set(map(tuple, s.tolist()))) == 8 for s in sampled)


def test_match_points_is_nearest_then_fps():
    cloud = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]]])
    generated = torch.tensor([[[0.9, 0, 0], [1.1, 0, 0]]])  # both nearest to point 1
    out = match_points(generated, cloud, 2)
    torch.testing.assert_close(out, torch.tensor([[[1.0, 0, 0], [3, 0, 0]]]))  # FPS completes with 3


def test_sampler_task_errors(task_net_ckpt, tmp_path):
    with pytest.raises(ValueError, match="sampler kind must be one of"):
        SamplerTask("pointnet", _data(), task_net_ckpt)
    with pytest.raises(ValueError, match=r"num_out_points must be in \[1, 64\]"):
        SamplerTask("snet", _data(), task_net_ckpt, num_out_points=65)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        SamplerTask("snet", _data(), str(tmp_path / "none.pt"))


def test_cli_train_every_recipe(tmp_path, capsys):
    common = ["--num-points", str(N), "--train-samples", "32", "--test-samples", "16",
              "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet"]
    assert main(["train", "pointnet", "--out", str(tmp_path / "pn"), *common]) == 0
    task_net = str(tmp_path / "pn" / "model_best.pt")
    for kind, extra in [("snet", ["--num-out-points", "8"]), ("progressivenet", []),
                        ("samplenet", ["--num-out-points", "8", "--temperature-profile", "exponential"]),
                        ("samplenet-progressive", [])]:
        out = tmp_path / kind
        assert main(["train", kind, "--task-net", task_net, "--out", str(out), *common, *extra]) == 0
        record = json.loads((out / "metrics.json").read_text())
        assert record["task"] == kind and record["history"][0]["step"] == 2
        model, _ = load_model(out / "model_best.pt")
        assert model.num_out_points == (8 if "--num-out-points" in extra else N)


def test_cli_eval_sampling_end_to_end(tmp_path):
    out = tmp_path / "exp"
    args = ["eval", "sampling", "--out", str(out), "--num-points", "32", "--train-samples", "32",
            "--test-samples", "16", "--ratios", "4,16", "--task-epochs", "1", "--sampler-epochs", "1",
            "--progressive-epochs", "1", "--jobs", "1", "--quiet"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["accuracy"]) == {"random", "fps", "snet", "progressivenet", "samplenet"}
    for per_ratio in results["accuracy"].values():
        assert set(per_ratio) == {"4", "16"} and all(0 <= v[0] <= 1 for v in per_ratio.values())
    assert (out / "accuracy_vs_ratio.png").stat().st_size > 0
    assert "| FPS |" in (out / "results.md").read_text()
    # a second run reuses every finished training
    mtime = (out / "seed0" / "snet_r4" / "model_best.pt").stat().st_mtime
    assert main(args) == 0
    assert (out / "seed0" / "snet_r4" / "model_best.pt").stat().st_mtime == mtime


def test_cli_eval_sampling_bad_ratio(tmp_path, capsys):
    assert main(["eval", "sampling", "--out", str(tmp_path), "--num-points", "32", "--ratios", "3"]) == 2
    assert "sampling ratio 3 must divide num_points" in capsys.readouterr().err
