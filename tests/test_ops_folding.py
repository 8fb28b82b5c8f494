"""fastvision.ops.folding.fold_batch_norm: the BN folding shared by the fused inference ops."""

import pytest
import torch

from fastvision.ops.folding import fold_batch_norm


def _trained_bn(channels=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm2d(channels, eps=1e-3).to(dtype)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g, dtype=dtype) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=g, dtype=dtype))
        bn.running_mean.copy_(torch.randn(channels, generator=g, dtype=dtype))
        bn.running_var.copy_(torch.rand(channels, generator=g, dtype=dtype) + 0.1)
    return bn.eval()


def test_scale_and_shift_reproduce_the_eval_mode_bn():
    bn = _trained_bn()
    x = torch.randn(2, 5, 3, 4)
    scale, shift = fold_batch_norm(bn)
    assert scale.dtype == shift.dtype == torch.float32
    torch.testing.assert_close(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1), bn(x))


def test_float64_folding_of_a_float32_bn():
    bn = _trained_bn()
    scale, shift = fold_batch_norm(bn, torch.float64)
    assert scale.dtype == shift.dtype == torch.float64
    expected = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    torch.testing.assert_close(scale, expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(shift, bn.bias.double() - bn.running_mean.double() * expected,
                               rtol=1e-15, atol=1e-15)


def test_needs_running_statistics():
    with pytest.raises(ValueError, match="fold_batch_norm: the BatchNorm must track running statistics"):
        fold_batch_norm(torch.nn.BatchNorm2d(3, track_running_stats=False))
