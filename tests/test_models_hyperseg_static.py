"""HyperSeg's static-decoder baseline (``decoder="static"``): the same network with ordinary
convolutions in place of the patch-wise dynamic ones, at a similar parameter count; and the MAC
counter's rule for the dynamic layers."""

import pytest
import torch

from fastvision.models import get_model
from fastvision.models.flops import count_ops, count_params
from fastvision.models.hyperseg import StaticMultiScaleDecoder
from fastvision.nn import HyperPatchConv2d, HyperPatchInvertedResidual, HyperPatchNoPadding
from fastvision.tasks.segmentation.study import HYPERSEG_STATIC_WIDTH

DYNAMIC = (HyperPatchConv2d, HyperPatchInvertedResidual, HyperPatchNoPadding)


def test_static_decoder_has_no_dynamic_layer_and_a_similar_size():
    dynamic = get_model("hyperseg_m_cityscapes")
    static = get_model("hyperseg_m_cityscapes", decoder="static", static_width=HYPERSEG_STATIC_WIDTH)
    assert isinstance(static.decoder, StaticMultiScaleDecoder) and static.hyper_params == 0
    assert not any(isinstance(m, DYNAMIC) for m in static.modules())
    # Same backbone and context head, key for key.
    shared = [k for k in dynamic.state_dict() if k.startswith(("backbone.", "weight_mapper."))]
    assert shared == [k for k in static.state_dict() if k.startswith(("backbone.", "weight_mapper."))]
    n_dyn, n_static = count_params(dynamic), count_params(static)
    assert n_dyn == 10_311_214
    assert abs(n_static - n_dyn) / n_dyn < 0.05, (n_static, n_dyn)
    # The official configuration is untouched by the new option.
    assert count_params(get_model("hyperseg_m_cityscapes", decoder="dynamic")) == n_dyn


def test_static_forward_backward_and_context_input():
    torch.manual_seed(0)
    model = get_model("hyperseg_m_cityscapes", num_classes=4, decoder="static").train()
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out.shape == (2, 4, 64, 96)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    # The context head feeds level 0 (1280 signal + 2 coordinates + the stride-16 features).
    level0 = model.decoder.level_0[0]
    assert level0.in_channels == 1280 + 2 + model.backbone.feat_channels[-2]
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x[:1])).all()


def test_static_option_errors():
    with pytest.raises(ValueError, match="decoder must be 'dynamic' or 'static', got 'fixed'"):
        get_model("hyperseg_m_cityscapes", decoder="fixed")
    with pytest.raises(ValueError, match="decoder='static' is built for the 'v1_0' design"):
        get_model("hyperseg_s_cityscapes", decoder="static")
    with pytest.raises(ValueError, match="width must be > 0, got 0"):
        get_model("hyperseg_m_cityscapes", decoder="static", static_width=0)


def test_macs_count_the_dynamic_layers_as_their_static_twins():
    torch.manual_seed(0)
    layer = HyperPatchConv2d(6, 4, 3, padding=1).eval()
    x, w = torch.randn(1, 6, 16, 32), torch.randn(1, layer.hyper_params, 2, 4)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x, w)

    static = torch.nn.Conv2d(6, 4, 3, padding=1, bias=False)
    assert count_ops(Wrap(), x).total == count_ops(static, x).total == 16 * 32 * 4 * 6 * 9
    model = get_model("hyperseg_m_cityscapes").eval()
    ops = count_ops(model, torch.zeros(1, 3, 64, 128))
    assert ops.by_type["HyperPatchInvertedResidual"] > 0 and ops.by_type["HyperPatchNoPadding"] > 0
