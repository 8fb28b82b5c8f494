"""HRNetV2Seg's ``representation="v1"`` option: the HRNetV1 representation head of the paper's
ablation (high-resolution branch only), next to the unchanged official V2 head."""

import pytest
import torch

from fastvision.models import get_model
from fastvision.models.hrnet import HRNetV2Seg


def test_v2_default_is_the_official_model():
    official = get_model("hrnetv2_w18_small_v1")
    explicit = get_model("hrnetv2_w18_small_v1", representation="v2")
    assert list(official.state_dict()) == list(explicit.state_dict())
    assert sum(p.numel() for p in official.parameters()) == 1_540_819
    assert official.last_layer[0].in_channels == 16 + 32 + 64 + 128


def test_v1_head_reads_only_the_high_resolution_branch():
    v1 = get_model("hrnetv2_w18_small_v1", representation="v1")
    v2 = get_model("hrnetv2_w18_small_v1")
    assert v1.representation == "v1" and v1.last_layer[0].in_channels == 16
    # Same backbone up to the last module, which fuses only into branch 0 (HRNetV1).
    v1_keys, v2_keys = set(v1.state_dict()), set(v2.state_dict())
    assert v1_keys < v2_keys | {k for k in v1_keys if k.startswith("last_layer")}
    dropped = {k for k in v2_keys - v1_keys if not k.startswith("last_layer")}
    assert dropped and all(k.startswith("stage4.0.fuse_layers.") for k in dropped)
    assert not any(k.startswith("stage4.0.fuse_layers.1") for k in v1_keys)


def test_v1_output_depends_only_on_the_fused_branch_0():
    torch.manual_seed(0)
    model = HRNetV2Seg("w18_small_v1", num_classes=5, representation="v1").eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        branch0 = super(HRNetV2Seg, model).forward(x)
    assert len(branch0) == 1 and branch0[0].shape == (1, 16, 16, 24)
    assert out.shape == (1, 5, 16, 24)
    with torch.no_grad():
        assert torch.equal(out, model.last_layer(branch0[0]))


def test_v1_trains():
    model = get_model("hrnetv2_w18_small_v1", num_classes=3, representation="v1").train()
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_representation():
    with pytest.raises(ValueError, match="representation must be 'v1' or 'v2', got 'v3'"):
        get_model("hrnetv2_w18_small_v1", representation="v3")
