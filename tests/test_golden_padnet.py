"""Golden outputs of PAD-Net (x1 at batch 2, x2) and its MobileNetV3 + LW-RefineNet teacher,
eval mode (PAD-Net's eval forward runs the fused encoder op).

Generated from fastvision itself (``tools/gen_golden_outputs.py``): PAD-Net has no public code;
the layers follow the paper's description (``fastvision.models.padnet``). These pin the forward
computation: any change of it fails here."""

import pytest

import golden


@pytest.mark.parametrize("name", ["padnet", "padnet_x2", "padnet_teacher"])
def test_padnet_matches_golden_outputs(name):
    golden.check_case(name)
