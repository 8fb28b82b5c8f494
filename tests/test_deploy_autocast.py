"""Every model's forward under CPU autocast (bfloat16) against float32 (``fastvision.ops.autocast``
registers the ops' policies; without them the models that mix the fastvision ops with autocast
convolutions or linears stop with a dtype mismatch).

Tolerance: the largest error of each floating output over its largest magnitude <= 0.1 (deep
randomly initialised networks in bfloat16: each layer rounds to 2^-9; the measured errors are a
few percent at most). Index outputs (SampleNet's matching) are equal where the generated points
round to the same neighbours: at least 80% of the matched points are equal; PointNet's
critical-set indices (the argmax over the points of each feature, where bfloat16 rounding makes
near-ties flip) at least 50%.

The default selection runs one model per family; the ``slow`` selection (CI) every registered
architecture at its smallest official width; ``deploy_full`` (by hand) the wider widths
(``helpers.WIDER_WIDTH_OF``)."""

from __future__ import annotations

import pytest
import torch

from helpers import deploy_model_params
from fastvision.deploy import deployment_input, prepare_for_deployment
from fastvision.models import get_model, list_models

TOL = 0.1


def compare_under_autocast(name, **kwargs):
    torch.manual_seed(0)
    model = prepare_for_deployment(get_model(name, **kwargs))
    x = deployment_input(name, model).example(seed=3)
    with torch.no_grad():
        want = torch.utils._pytree.tree_leaves(model(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = torch.utils._pytree.tree_leaves(model(x))
    assert len(want) == len(got)
    matched = name.startswith("samplenet")
    for i, (w, g) in enumerate(zip(want, got)):
        assert w.shape == g.shape
        if matched and i == 1:  # input points chosen by nn_match: compare as points
            assert (w == g.float()).all(dim=1).float().mean() >= 0.8
            continue
        if not w.is_floating_point():  # PointNet's critical-set indices (argmax over points)
            assert g.dtype == w.dtype and (g == w).float().mean() >= 0.5
            continue
        scale = w.double().abs().max().clamp_min(1e-12)
        err = ((g.double() - w.double()).abs().max() / scale).item()
        assert err <= TOL, f"{name} output {i}: relative error {err:.3g}"
    return got


ONE_PER_FAMILY = [
    ("pointnet_cls", {}),
    ("samplenet", dict(num_out_points=16)),
    ("hrnetv2_w18_small_v1", {}),
    ("bisenetv2", {}),
    ("hyperseg_m_cityscapes", {}),
    ("padnet", {}),
]
# The default selection already runs these as built by default (SampleNet with other kwargs).
RUN_BY_DEFAULT = {name for name, kwargs in ONE_PER_FAMILY if not kwargs}


@pytest.mark.parametrize("name,kwargs", ONE_PER_FAMILY)
def test_one_model_per_family(name, kwargs):
    got = compare_under_autocast(name, **kwargs)
    if name in ("hrnetv2_w18_small_v1", "bisenetv2", "hyperseg_m_cityscapes"):
        assert got[0].dtype == torch.bfloat16  # the convolutions did run in bfloat16


@pytest.mark.slow
@pytest.mark.parametrize("name", deploy_model_params(
    [n for n in list_models() if n not in RUN_BY_DEFAULT]))
def test_every_registered_model(name):
    compare_under_autocast(name)
