"""fastvision.nn.fold (convolution + BatchNorm folded for inference) and the folded inference
path of the EfficientNet backbone (HyperSeg's CPU inference)."""

import pytest
import torch
import torch.nn as nn

from fastvision.models.efficientnet import EfficientNetFeatures, SamePadConv2d
from fastvision.nn import fold


def _random_bn(bn: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.1)
        if bn.affine:
            bn.weight.copy_(torch.randn(bn.num_features, generator=g))
            bn.bias.copy_(torch.randn(bn.num_features, generator=g))
    return bn


PAIRS = {
    "1x1 no bias": lambda: nn.Conv2d(6, 5, 1, bias=False),
    "3x3 bias padded": lambda: nn.Conv2d(6, 5, 3, padding=1),
    "depthwise stride 2": lambda: nn.Conv2d(6, 6, 3, stride=2, groups=6, bias=False),
    "same pad symmetric": lambda: SamePadConv2d(6, 6, 3, 1, groups=6, bias=False, nominal_size=(16, 16)),
    "same pad asymmetric": lambda: SamePadConv2d(6, 5, 3, 2, bias=False, nominal_size=(16, 16)),
    "same pad 5x5 stride 2": lambda: SamePadConv2d(6, 6, 5, 2, groups=6, bias=False, nominal_size=(15, 15)),
}


@pytest.mark.parametrize("size", [(12, 18), (13, 17)])  # even sizes reach the right/bottom pad
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("name", list(PAIRS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conv_bn_folds_to_the_same_function(name, dtype, affine, size):
    torch.manual_seed(0)
    conv = PAIRS[name]().to(dtype).eval()
    bn = _random_bn(nn.BatchNorm2d(conv.out_channels, eps=1e-3, affine=affine), 1).to(dtype).eval()
    x = torch.randn(2, 6, *size, dtype=dtype)
    expected = torch.nn.functional.silu(bn(conv(x)))
    with torch.no_grad():
        assert fold.folding_active(conv, bn)
        for inp in (x, x.contiguous(memory_format=torch.channels_last)):
            got = fold.conv_bn(inp, conv, bn, silu=True)
            tol = 1e-12 if dtype == torch.float64 else 2e-5
            torch.testing.assert_close(got, expected.detach(), rtol=tol, atol=tol)
    assert "_fastvision_folded_bn" in conv.__dict__
    assert set(conv.state_dict()) == {k for k in ("weight", "bias") if getattr(conv, k) is not None}


def test_folded_cache_follows_parameter_and_statistic_updates():
    conv = nn.Conv2d(4, 3, 1, bias=False).eval()
    bn = _random_bn(nn.BatchNorm2d(3), 2).eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        first = fold.conv_bn(x, conv, bn)
        bn.running_mean.add_(1.0)  # in place: the version counter moves
        torch.testing.assert_close(fold.conv_bn(x, conv, bn), bn(conv(x)))
        assert not torch.allclose(first, fold.conv_bn(x, conv, bn))
        bn.load_state_dict(_random_bn(nn.BatchNorm2d(3), 3).state_dict())
        conv.weight.mul_(2.0)
        torch.testing.assert_close(fold.conv_bn(x, conv, bn), bn(conv(x)))
    conv.double(), bn.double()  # new storages and dtype
    with torch.no_grad():
        torch.testing.assert_close(fold.conv_bn(x.double(), conv, bn), bn(conv(x.double())))


def test_no_folding_where_gradients_training_or_compilation_need_the_modules():
    conv = nn.Conv2d(4, 3, 3, padding=1).eval()
    bn = _random_bn(nn.BatchNorm2d(3), 4).eval()
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    assert not fold.folding_active(conv, bn)  # grad mode on
    y = fold.conv_bn(x, conv, bn, silu=True)
    assert torch.equal(y, torch.nn.functional.silu(bn(conv(x))))
    y.sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and bn.weight.grad is not None
    assert "_fastvision_folded_bn" not in conv.__dict__
    with torch.no_grad():
        bn.train()
        assert not fold.folding_active(conv, bn)  # batch statistics in training
        bn.eval()
        assert fold.folding_active(conv, bn)

    seen = []

    def traced(inp):
        seen.append(fold.folding_active(conv, bn))
        return fold.conv_bn(inp, conv, bn)

    with torch.no_grad():
        out = torch.compile(traced, backend="eager", fullgraph=True)(x.detach())
    assert seen == [False]  # dynamo traces the modules, not the cached tensors
    torch.testing.assert_close(out, bn(conv(x.detach())))


def test_efficientnet_folded_inference_matches_the_official_execution():
    torch.manual_seed(0)
    net = EfficientNetFeatures("efficientnet-b0", 0.25).eval()
    for i, m in enumerate(net.modules()):
        if isinstance(m, nn.BatchNorm2d):
            _random_bn(m, 10 + i)
            with torch.no_grad():  # keep activations in a moderate range through 16 blocks
                m.weight.mul_(0.3)
    keys = set(net.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        official = net(x)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        with torch.inference_mode():
            folded = net(inp, fold_batchnorm=True)
        assert len(folded) == len(official)
        for a, b in zip(folded, official):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    assert set(net.state_dict()) == keys
    # Training and gradient-recording calls ignore the flag: the same result as the modules, and
    # the input is not modified by the in-place steps of the folded path.
    x2 = x.clone()
    with torch.enable_grad():
        for a, b in zip(net(x2, fold_batchnorm=True), net(x)):
            assert torch.equal(a, b)
    assert torch.equal(x2, x)


def test_hyperseg_cpu_inference_folds_only_where_enabled():
    from fastvision.models import get_model

    x = torch.randn(1, 3, 64, 64)
    for fold_flag, channels_last in ((False, True), (True, False), (True, True)):
        model = get_model("hyperseg_m_cityscapes").eval()
        model.fold_backbone_batchnorm, model.channels_last_backbone = fold_flag, channels_last
        stem = model.backbone._conv_stem
        with torch.inference_mode():
            model(x)
        assert ("_fastvision_folded_bn" in stem.__dict__) == (fold_flag and channels_last)
