"""Every model family exported to ONNX (``fastvision.deploy.onnx.export_onnx``: the dynamo
exporter with the fastvision ops translated to standard ONNX), checked by ``onnx.checker`` and run
on a stock onnxruntime at two batch sizes: outputs within 1e-4 of PyTorch's largest magnitude
(float32; index outputs equal). SampleNet (kNN + FPS matching) runs in the default selection; the
other families export for minutes on a small CPU and are ``slow``."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the deploy extra (also in [test]) is not installed")

from fastvision.deploy import deployment_input, export_program, prepare_for_deployment  # noqa: E402
from fastvision.deploy.onnx import export_onnx, run_onnxruntime  # noqa: E402
from fastvision.models import get_model  # noqa: E402

TOL = 1e-4


def check_family(name, tmp_path, **kwargs):
    model = prepare_for_deployment(get_model(name, **kwargs))
    spec = deployment_input(name, model)
    path = export_onnx(export_program(model, spec), str(tmp_path / f"{name}.onnx"))
    for b in (1, 3):
        x = spec.example(batch=b, seed=b)
        with torch.no_grad():
            want = torch.utils._pytree.tree_leaves(model(x))
        got = run_onnxruntime(path, x)
        assert len(got) == len(want)
        for w, g in zip(want, got):
            assert w.shape == g.shape
            if not w.is_floating_point():
                assert torch.equal(w, g)
            else:
                assert ((w - g).abs().max() / w.abs().max().clamp_min(1e-30)).item() <= TOL


def test_samplenet_matching(tmp_path):
    check_family("samplenet", tmp_path, num_out_points=16)


@pytest.mark.slow
@pytest.mark.deploy_full
@pytest.mark.parametrize("name", ["snet", "pointnet_cls", "samplenet_progressive", "hrnetv2_w18_small_v1",
                                  "hrnetv1_w32_pose", "hrnetv2p_w18", "bisenetv2", "hyperseg_m_cityscapes",
                                  "padnet"])
def test_family(name, tmp_path):
    check_family(name, tmp_path)
