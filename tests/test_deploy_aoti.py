"""AOTInductor packages of PAD-Net, BiSeNet V2 and HyperSeg-M (``fastvision.deploy.aoti_package``):
compiled on the CPU, loaded in a fresh Python process (which imports only fastvision and torch)
and run at two batch sizes; the outputs equal eager within 1e-4 of their largest magnitude
(Inductor fuses and reorders the float32 arithmetic around the fastvision ops). ``slow``: each
compile takes minutes on a small CPU."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from fastvision.deploy import aoti_package, deployment_input, export_program, prepare_for_deployment
from fastvision.models import get_model

pytestmark = [pytest.mark.slow, pytest.mark.deploy_full]

RUNNER = textwrap.dedent("""
    import sys, torch
    from fastvision.deploy import load_aoti_package
    runner = load_aoti_package(sys.argv[1])
    for i, path in enumerate(sys.argv[2:]):
        x = torch.load(path)
        with torch.no_grad():
            out = runner(x)
        out = out if isinstance(out, (list, tuple)) else [out]
        torch.save([t.contiguous() for t in out], path + ".out")
""")


@pytest.mark.parametrize("name", ["padnet", "bisenetv2", "hyperseg_m_cityscapes"])
def test_aoti_package_in_a_fresh_process(name, tmp_path):
    model = prepare_for_deployment(get_model(name))
    spec = deployment_input(name, model)
    package = aoti_package(export_program(model, spec), str(tmp_path / f"{name}.pt2"))
    inputs = []
    for b in (1, 3):
        path = tmp_path / f"x{b}.pt"
        torch.save(spec.example(batch=b, seed=b), path)
        inputs.append(str(path))
    subprocess.run([sys.executable, "-c", RUNNER, package, *inputs], check=True, timeout=600)
    for path in inputs:
        x = torch.load(path)
        with torch.no_grad():
            want = torch.utils._pytree.tree_leaves(model(x))
        got = torch.load(path + ".out")
        assert len(got) == len(want)
        for w, g in zip(want, got):
            assert w.shape == g.shape
            assert ((w - g).abs().max() / w.abs().max()).item() <= 1e-4
