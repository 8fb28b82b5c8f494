"""``fastvision export MODEL --format onnx|pt2|aoti``: the written file loads and gives the model's
outputs; a missing ``deploy`` extra and bad arguments give one-line errors (exit code 2)."""

from __future__ import annotations

import sys

import pytest
import torch

from fastvision.cli import main
from fastvision.deploy import deployment_input, prepare_for_deployment
from fastvision.models import get_model


def test_export_pt2_with_weights(tmp_path, capsys):
    model = get_model("padnet")
    torch.nn.init.normal_(model.decoder.head.weight)  # weights that differ from the builder's
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "padnet.pt2"
    assert main(["export", "padnet", "--format", "pt2", "--weights", str(weights), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    program = torch.export.load(str(out))
    model = prepare_for_deployment(model)
    x = torch.rand(3, 1, 112, 48)
    with torch.no_grad():
        # eager CPU inference runs the fused padnet_decoder, the exported graph the decoder's
        # modules (see tests/test_deploy_export.py): equal to float32 rounding
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-6)


def test_export_onnx_runs_on_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from fastvision.deploy.onnx import run_onnxruntime

    model = get_model("snet")
    weights = tmp_path / "snet.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "s.onnx"
    assert main(["export", "snet", "--format", "onnx", "--weights", str(weights), "--out", str(out),
                 "--no-dynamic-hw"]) == 0
    model = prepare_for_deployment(model)
    x = deployment_input("snet", model).example(batch=4)
    with torch.no_grad():
        want = model(x)
    got = run_onnxruntime(out, x)[0]
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-4


def test_missing_deploy_extra_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    assert main(["export", "padnet", "--format", "onnx", "--out", str(tmp_path / "p.onnx")]) == 2
    err = capsys.readouterr().err
    assert "fastvision[deploy]" in err and "onnxscript" in err
    assert not (tmp_path / "p.onnx").exists()


def test_unknown_model_and_bad_weights(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "resnet50", "--format", "pt2"])
    bad = tmp_path / "bad.pt"
    torch.save({"nothing": torch.zeros(1)}, bad)
    assert main(["export", "padnet", "--format", "pt2", "--weights", str(bad),
                 "--out", str(tmp_path / "p.pt2")]) == 2
    assert "fastvision export: error:" in capsys.readouterr().err
