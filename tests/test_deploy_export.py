"""``torch.export`` of the registered models (``fastvision.deploy``): inference mode, a dynamic
batch (the exported program run at two other batch sizes) and dynamic height / width for the
models that allow it, outputs equal to eager (the same kernels run: exact; PAD-Net's family to
float32 rounding, see ``check_program``). The default selection exports one small model per
family; the ``slow`` selection (CI) every registered architecture at its smallest official width
and a small input, at batch 1 and 2; ``deploy_full`` (by hand) the wider widths
(``helpers.WIDER_WIDTH_OF``) and the full official resolution of the three deployment models."""

from __future__ import annotations

import pytest
import torch

from helpers import WIDER_WIDTH_OF, deploy_model_params
from fastvision.deploy import deployment_input, export_program, family_of, prepare_for_deployment
from fastvision.models import get_model, list_models


def leaves(out):
    return torch.utils._pytree.tree_leaves(out)


def eager_as_exported(model):
    """The model as the exported graph computes it: HyperSeg's eager CPU inference folds the
    backbone's BatchNorms into its convolutions (equal to float rounding, tested in
    test_models_efficientnet_fold.py), while export keeps the modules and their parameters."""
    if hasattr(model, "fold_backbone_batchnorm"):
        model.fold_backbone_batchnorm = False
    return model


def check_program(name, model, spec, batches=(1, 3), sizes=None):
    program = export_program(model, spec)
    runner = program.module()
    for b in batches:
        x = spec.example(batch=b, seed=b)
        if sizes is not None:
            x = torch.rand(b, spec.shape[1], *sizes)
        with torch.no_grad():
            want, got = leaves(eager_as_exported(model)(x)), leaves(runner(x))
        assert len(want) == len(got)
        for w, g in zip(want, got):
            assert w.shape == g.shape, name
            if family_of(name) == "padnet":
                # Eager CPU inference runs the fused padnet_decoder op; the exported graph keeps
                # the decoder's modules (the op is CPU-only, without an ONNX translation): the
                # same sums in another order, equal to float32 rounding.
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6, msg=name)
            else:
                assert torch.equal(w, g), name
    return program


def custom_ops(program):
    return sorted({str(n.target) for n in program.graph.nodes if str(n.target).startswith("fastvision.")})


SMALL = {
    "samplenet": dict(num_out_points=16),
    "hrnetv2_w18_small_v1": {},
    "bisenetv2": {},
    "hyperseg_m_cityscapes": {},
    "padnet": {},
}


@pytest.mark.parametrize("name", list(SMALL))
def test_export_one_model_per_family(name):
    model = prepare_for_deployment(get_model(name, **SMALL[name]))
    spec = deployment_input(name, model)
    program = check_program(name, model, spec)
    expected_ops = {
        "samplenet": ["fastvision.farthest_point_sample.default", "fastvision.knn_points.default"],
        "hyperseg_m_cityscapes": ["fastvision.patch_conv2d.default", "fastvision.patch_inverted_residual.default"],
        "padnet": ["fastvision.padnet_encoder.default"],
    }.get(name, [])
    assert custom_ops(program) == expected_ops  # the fused / point ops are exported as themselves


def test_export_dynamic_height_and_width():
    for name, other in (("bisenetv2", (96, 128)), ("padnet", (64, 40))):
        model = prepare_for_deployment(get_model(name))
        check_program(name, model, deployment_input(name, model), batches=(2,), sizes=other)


def test_hyperseg_height_and_width_are_static():
    model = prepare_for_deployment(get_model("hyperseg_m_cityscapes"))
    spec = deployment_input("hyperseg_m_cityscapes", model)
    assert spec.spatial_multiples == {}


def test_soft_projection_exports():
    """SampleNet's soft projection (its training-mode output) as a module of its own."""
    model = get_model("samplenet", num_out_points=16).eval()
    points, query = torch.rand(2, 3, 64), torch.rand(2, 3, 16)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model.project, (points, query),
                                  dynamic_shapes=({0: batch}, {0: batch}))
    assert custom_ops(program) == ["fastvision.soft_project.default"]
    p3, q3 = torch.rand(3, 3, 64), torch.rand(3, 3, 16)
    assert torch.equal(program.module()(p3, q3), model.project(p3, q3))


def test_every_registered_model_has_a_family():
    for name in list_models():
        family_of(name)
    with pytest.raises(ValueError, match="no deployment input"):
        family_of("resnet50")


def test_bisenet_booster_heads_are_dropped():
    model = prepare_for_deployment(get_model("bisenetv2"))
    assert model.aux_mode == "eval" and not model.training


def test_wider_widths_repeat_a_registered_architecture():
    """The deploy_full-only models each name a registered smaller width that CI exports."""
    registered = set(list_models())
    for wider, smallest in WIDER_WIDTH_OF.items():
        assert wider in registered and smallest in registered, (wider, smallest)
        assert smallest not in WIDER_WIDTH_OF
        assert family_of(wider) == family_of(smallest)


# The default selection already exports these as built by default (SampleNet with other kwargs).
EXPORTED_BY_DEFAULT = {name for name, kwargs in SMALL.items() if not kwargs}


@pytest.mark.slow
@pytest.mark.parametrize("name", deploy_model_params(
    [n for n in list_models() if n not in EXPORTED_BY_DEFAULT]))
def test_export_every_registered_model(name):
    model = prepare_for_deployment(get_model(name))
    check_program(name, model, deployment_input(name, model), batches=(1, 2))


@pytest.mark.slow
@pytest.mark.deploy_full
@pytest.mark.parametrize("name", ["padnet", "bisenetv2", "hyperseg_m_cityscapes"])
def test_export_full_resolution(name):
    model = prepare_for_deployment(get_model(name))
    check_program(name, model, deployment_input(name, model, size="full"), batches=(1,))
