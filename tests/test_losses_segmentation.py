"""Segmentation losses against hand-worked examples and numpy ports of the official code
(HyperSeg BootstrappedCrossEntropyLoss, HRNet OhemCrossEntropy / CrossEntropy, CoinCheung OhemCELoss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastvision.losses.segmentation import (
    CITYSCAPES_CLASS_WEIGHTS,
    bootstrapped_cross_entropy,
    class_weighted_cross_entropy,
    multi_output_loss,
    ohem_cross_entropy,
    ohem_cross_entropy_bisenet,
)


def _two_class(p_true, target=None):
    """Logits (1, 2, 1, n) whose softmax gives class 0 the probabilities ``p_true``; target 0."""
    p = torch.tensor(p_true, dtype=torch.float64)
    logits = torch.stack([torch.log(p / (1 - p)), torch.zeros_like(p)]).reshape(1, 2, 1, -1)
    if target is None:
        target = torch.zeros(1, 1, p.numel(), dtype=torch.long)
    return logits, target


def _np_pixel_losses(logits, target, weight=None, ignore=255):
    x = logits.detach().double().numpy()
    t = target.numpy()
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    valid = t != ignore
    tt = np.where(valid, t, 0)
    nll = -np.take_along_axis(logp, tt[:, None], 1)[:, 0]
    w = np.ones(x.shape[1]) if weight is None else np.asarray(weight)
    return np.where(valid, nll * w[tt], 0.0), valid, w[tt], np.exp(logp)


def _np_bootstrapped(logits, target, k, thresh):
    losses, *_ = _np_pixel_losses(logits, target)
    out = 0.0
    for image in losses.reshape(losses.shape[0], -1):
        s = np.sort(image)[::-1]
        kept = s[s > thresh] if s[k] > thresh else s[:k]
        out += kept.mean()
    return out / losses.shape[0]


def _np_ohem_hrnet(logits, target, thresh, min_kept, weight=None):
    losses, valid, _, prob = _np_pixel_losses(logits, target, weight)
    tt = np.where(valid, target.numpy(), 0)
    pred = np.take_along_axis(prob, tt[:, None], 1)[:, 0].reshape(-1)[valid.reshape(-1)]
    order = np.argsort(pred, kind="stable")
    pred = pred[order]
    min_value = pred[min(min_kept, pred.size - 1)]
    threshold = max(min_value, thresh)
    pixel = losses.reshape(-1)[valid.reshape(-1)][order]
    return pixel[pred < threshold].mean()


def _np_ohem_bisenet(logits, target, thresh):
    losses, valid, *_ = _np_pixel_losses(logits, target)
    n_min = int(valid.sum()) // 16
    flat = losses.reshape(-1)
    hard = flat[flat > -math.log(thresh)]
    if hard.size < n_min:
        hard = np.sort(flat)[::-1][:n_min]
    return hard.mean()


def _random_case(seed, b=2, c=5, h=6, w=8, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def test_bootstrapped_hand_worked():
    # class-0 logits 0 against class-1 logits [2, 0, -2, -9]: CE = log(1 + e^x)
    logits = torch.tensor([0.0, 0, 0, 0, 2, 0, -2, -9], dtype=torch.float64).reshape(1, 2, 1, 4)
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    ce = [math.log1p(math.exp(v)) for v in (2, 0, -2, -9)]  # 2.127, 0.693, 0.127, 0.0001
    # k=1: the 2nd largest (0.693) > 0.3 -> every loss above 0.3
    assert float(bootstrapped_cross_entropy(logits, target, k=1, threshold=0.3)) == pytest.approx((ce[0] + ce[1]) / 2)
    # k=2: the 3rd largest (0.127) <= 0.3 -> top 2
    assert float(bootstrapped_cross_entropy(logits, target, k=2, threshold=0.3)) == pytest.approx((ce[0] + ce[1]) / 2)
    # threshold 1.0: 0.693 <= 1 -> top 1
    assert float(bootstrapped_cross_entropy(logits, target, k=1, threshold=1.0)) == pytest.approx(ce[0])
    # an ignored pixel is a 0 loss in the ranking: [0.693, 0.127, 0.0001, 0] -> 0.127 <= 0.3 -> top 1
    target[0, 0, 0] = 255
    assert float(bootstrapped_cross_entropy(logits, target, k=1, threshold=0.3)) == pytest.approx(ce[1])


@pytest.mark.parametrize("seed,k,thresh", [(0, 10, 0.3), (1, 40, 0.3), (2, 5, 2.5), (3, 30, 0.05)])
def test_bootstrapped_matches_official_port(seed, k, thresh):
    logits, target = _random_case(seed)
    got = bootstrapped_cross_entropy(logits, target, k=k, threshold=thresh)
    assert float(got) == pytest.approx(_np_bootstrapped(logits, target, k, thresh), rel=1e-10)


def test_bootstrapped_small_image_keeps_everything():
    logits, target = _random_case(4, b=1, h=4, w=4, ignore_frac=0.0)
    losses = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(bootstrapped_cross_entropy(logits, target, k=4096), losses.mean())


def test_ohem_hrnet_hand_worked():
    logits, target = _two_class([0.9, 0.6, 0.2, 0.8])
    nll = {p: -math.log(p) for p in (0.9, 0.6, 0.2, 0.8)}
    # min_kept 1: sorted p [0.2, 0.6, 0.8, 0.9], p_(1) = 0.6 < 0.7 -> keep p < 0.7
    assert float(ohem_cross_entropy(logits, target, 0.7, min_kept=1)) == pytest.approx((nll[0.6] + nll[0.2]) / 2)
    # min_kept 3: p_(3) = 0.9 -> keep p < 0.9
    assert float(ohem_cross_entropy(logits, target, 0.7, min_kept=3)) == pytest.approx(
        (nll[0.6] + nll[0.2] + nll[0.8]) / 3)


@pytest.mark.parametrize("seed,thresh,min_kept,weighted", [(0, 0.7, 10, False), (1, 0.7, 1000, False),
                                                           (2, 0.3, 5, True), (3, 0.9, 40, True)])
def test_ohem_hrnet_matches_official_port(seed, thresh, min_kept, weighted):
    logits, target = _random_case(seed, c=19 if weighted else 5)
    weight = CITYSCAPES_CLASS_WEIGHTS if weighted else None
    got = ohem_cross_entropy(logits, target, thresh, min_kept, weight=weight)
    assert float(got) == pytest.approx(_np_ohem_hrnet(logits, target, thresh, min_kept, weight), rel=1e-10)


def test_ohem_bisenet_hand_worked():
    # 32 valid pixels -> n_min 2; one hard pixel (p 0.2 < 0.7) -> the top 2 losses
    p = [0.9] * 31 + [0.2]
    logits, target = _two_class(p)
    assert float(ohem_cross_entropy_bisenet(logits, target, 0.7)) == pytest.approx(
        (-math.log(0.2) - math.log(0.9)) / 2)
    # three hard pixels >= n_min -> their mean
    logits, target = _two_class([0.9] * 29 + [0.2, 0.5, 0.6])
    assert float(ohem_cross_entropy_bisenet(logits, target, 0.7)) == pytest.approx(
        -(math.log(0.2) + math.log(0.5) + math.log(0.6)) / 3)


@pytest.mark.parametrize("seed,thresh", [(0, 0.7), (1, 0.05), (2, 0.99)])
def test_ohem_bisenet_matches_official_port(seed, thresh):
    logits, target = _random_case(seed, h=12, w=16)
    got = ohem_cross_entropy_bisenet(logits, target, thresh)
    assert float(got) == pytest.approx(_np_ohem_bisenet(logits, target, thresh), rel=1e-10)


def test_class_weighted_ce_matches_numpy():
    logits, target = _random_case(5, c=19)
    losses, valid, w, _ = _np_pixel_losses(logits, target, CITYSCAPES_CLASS_WEIGHTS)
    expected = losses[valid].sum() / w[valid].sum()
    assert float(class_weighted_cross_entropy(logits, target)) == pytest.approx(expected, rel=1e-10)
    plain = class_weighted_cross_entropy(logits, target, weight=None)
    torch.testing.assert_close(plain, F.cross_entropy(logits, target, ignore_index=255))


@pytest.mark.parametrize("align_corners", [False, True])
def test_low_resolution_logits_are_upsampled(align_corners):
    logits, target = _random_case(6, h=12, w=16)
    low = logits[:, :, ::4, ::4].contiguous()
    up = F.interpolate(low, size=(12, 16), mode="bilinear", align_corners=align_corners)
    for fn in (ohem_cross_entropy, ohem_cross_entropy_bisenet, class_weighted_cross_entropy,
               bootstrapped_cross_entropy):
        kwargs = {"weight": None} if fn is class_weighted_cross_entropy else {}
        torch.testing.assert_close(fn(low, target, align_corners=align_corners, **kwargs),
                                   fn(up, target, align_corners=align_corners, **kwargs))


def test_all_ignored_gives_a_zero_that_backpropagates():
    logits = torch.randn(2, 19, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255, dtype=torch.long)
    for fn in (ohem_cross_entropy, ohem_cross_entropy_bisenet, class_weighted_cross_entropy,
               bootstrapped_cross_entropy):
        loss = fn(logits, target)
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.count_nonzero(logits.grad) == 0


def test_multi_output_loss_main_plus_aux():
    logits, target = _random_case(7, h=8, w=8)
    aux = logits[:, :, ::2, ::2].flip(1).contiguous()
    loss, logs = multi_output_loss((logits, aux), target, ohem_cross_entropy_bisenet, aux_weight=0.4)
    main = ohem_cross_entropy_bisenet(logits, target)
    aux_loss = ohem_cross_entropy_bisenet(aux, target)
    torch.testing.assert_close(loss, main + 0.4 * aux_loss)
    torch.testing.assert_close(logs["aux_loss"], aux_loss)
    single, logs = multi_output_loss(logits, target, ohem_cross_entropy_bisenet)
    torch.testing.assert_close(single, main)
    assert set(logs) == {"main_loss"}


def test_bad_inputs():
    logits, target = _random_case(8)
    with pytest.raises(ValueError, match="target must be int64"):
        ohem_cross_entropy(logits, target.int())
    with pytest.raises(ValueError, match=r"target must be \(B, H, W\) with B = 2"):
        bootstrapped_cross_entropy(logits, target[:1])
    with pytest.raises(ValueError, match=r"logits must be \(B, C, h, w\)"):
        class_weighted_cross_entropy(logits[0], target)
    with pytest.raises(ValueError, match=r"weight must have one entry per class \(5\)"):
        class_weighted_cross_entropy(logits, target)  # the Cityscapes weights are 19
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        bootstrapped_cross_entropy(logits, target, k=0)
    with pytest.raises(ValueError, match="threshold must be a probability"):
        ohem_cross_entropy_bisenet(logits, target, threshold=0.0)
    with pytest.raises(ValueError, match="model outputs must be a tensor"):
        multi_output_loss([], target, ohem_cross_entropy)
