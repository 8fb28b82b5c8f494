"""Every model family exported to ONNX (``fastvision.deploy.onnx.export_onnx``: the dynamo
exporter with the fastvision ops translated to standard ONNX), checked by ``onnx.checker`` and run
on a stock onnxruntime at batch 1 and 2 (the file has a dynamic batch): outputs within 1e-4 of
PyTorch's largest magnitude (float32; the translations reorder sums and the exporter's graph
fuses differently, so not bit-equal), index outputs equal.

SampleNet (kNN + FPS matching) runs in the default selection. The ``slow`` selection (CI) runs
one architecture per family at its smallest official width and a small input, and every
point-cloud model (cheap): ``CI_ARCHITECTURES``. The other registered models (HRNet V1 pose,
HRNetV2 / V2p, the other HyperSeg variants, PAD-Net's teacher, comparison encoders and U-Net,
the wider widths) are ``deploy_full``: each ONNX export of an HRNet costs minutes of exporter
time on a small CPU, and they use the same translated ops as the CI models."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime", reason="the deploy extra (also in [test]) is not installed")

from fastvision.deploy import deployment_input, export_program, prepare_for_deployment  # noqa: E402
from fastvision.deploy.onnx import export_onnx, run_onnxruntime  # noqa: E402
from fastvision.models import get_model, list_models  # noqa: E402

TOL = 1e-4


def check_family(name, tmp_path, **kwargs):
    model = prepare_for_deployment(get_model(name, **kwargs))
    spec = deployment_input(name, model)
    path = export_onnx(export_program(model, spec), str(tmp_path / f"{name}.onnx"))
    for b in (1, 2):
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


CI_ARCHITECTURES = ["snet", "progressivenet", "pointnet_cls", "pointnet_cls_vanilla",
                    "samplenet_progressive", "hrnetv2_w18_small_v1", "bisenetv2",
                    "hyperseg_m_cityscapes", "padnet"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CI_ARCHITECTURES + [
    pytest.param(n, marks=pytest.mark.deploy_full) for n in list_models()
    if n != "samplenet" and n not in CI_ARCHITECTURES])
def test_every_registered_model(name, tmp_path):
    check_family(name, tmp_path)
