"""PAD-Net losses: AAL (Sect. 3.2) and Table 4's losses against numpy, and the SKT distillation."""

import numpy as np
import pytest
import torch

from fastvision.losses.particles import (
    AdaptiveAttentionLoss,
    StructuredKnowledgeTransfer,
    attention_matrix,
    dense_fsp,
    get_particle_loss,
)


def _example():
    # 1 image, 4 x 5 map: a particle covering 3 pixels, predictions in (0, 1)
    p = np.zeros((4, 5))
    p[1, 1] = p[1, 2] = p[2, 1] = 1.0
    q = np.array([[0.1, 0.2, 0.1, 0.0, 0.05],
                  [0.3, 0.9, 0.6, 0.1, 0.0],
                  [0.2, 0.7, 0.4, 0.2, 0.1],
                  [0.0, 0.1, 0.1, 0.3, 0.9]])
    return p, q


def _np_attention(p, k=5):
    r = k // 2
    padded = np.pad(p, r)
    m = np.empty_like(p)
    for y in range(p.shape[0]):
        for x in range(p.shape[1]):
            m[y, x] = 1.0 + padded[y:y + k, x:x + k].sum() / (k * k)
    return m


def _t(a):
    return torch.tensor(a, dtype=torch.float64).view(1, 1, *a.shape)


def test_attention_matrix_by_hand():
    p, _ = _example()
    m = attention_matrix(_t(p))[0, 0].numpy()
    np.testing.assert_allclose(m, _np_attention(p), rtol=0, atol=1e-12)
    assert m[1, 1] == pytest.approx(1 + 3 / 25)  # all three particle pixels in its window
    assert m[3, 4] == pytest.approx(1 + 1 / 25)  # only pixel (1, 2) lies in its 5x5 window


def test_aal_against_numpy():
    p, q = _example()
    eps = 1.0
    ce = -np.mean(p * np.log(q.clip(1e-300)) + (1 - p) * np.log(1 - q))
    ratio = (p * q + eps) / (p + q - p * q + eps)
    iou = np.mean(_np_attention(p) * (1 - ratio))
    loss = AdaptiveAttentionLoss(alpha_ce=0.7, alpha_iou=1.3, from_logits=False)(_t(q), _t(p))
    assert loss.item() == pytest.approx(0.7 * ce + 1.3 * iou, rel=1e-12)


def test_aal_logits_equal_probabilities():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 12, 7, dtype=torch.float64)
    target = (torch.rand(3, 1, 12, 7, dtype=torch.float64) > 0.8).double()
    for name in ("aal", "iou", "dice", "mse", "bce"):
        a = get_particle_loss(name)(logits, target)
        b = get_particle_loss(name, from_logits=False)(torch.sigmoid(logits), target)
        assert a.item() == pytest.approx(b.item(), rel=1e-10), name


def test_table4_losses_against_numpy():
    p, q = _example()
    eps = 1.0
    inter = (p * q).sum()
    expected = {
        "iou": 1 - (inter + eps) / ((p + q - p * q).sum() + eps),
        "dice": 1 - (2 * inter + eps) / (p.sum() + q.sum() + eps),
        "mse": np.mean((q - p) ** 2),
        "bce": -np.mean(p * np.log(q.clip(1e-300)) + (1 - p) * np.log(1 - q)),
    }
    for name, value in expected.items():
        got = get_particle_loss(name, from_logits=False)(_t(q), _t(p)).item()
        assert got == pytest.approx(value, rel=1e-12), name


def test_batch_mean_of_per_image_losses():
    p, q = _example()
    pair_q = torch.cat([_t(q), _t(np.flipud(q).copy())])
    pair_p = torch.cat([_t(p), _t(p)])
    for name in ("iou", "dice", "aal"):
        loss = get_particle_loss(name, from_logits=False)
        both = loss(pair_q, pair_p).item()
        single = (loss(pair_q[:1], pair_p[:1]).item() + loss(pair_q[1:], pair_p[1:]).item()) / 2
        assert both == pytest.approx(single, rel=1e-12), name


def test_perfect_prediction_zero_overlap_terms():
    p, _ = _example()
    aal = AdaptiveAttentionLoss(from_logits=False)
    assert aal.iou_term(_t(p), _t(p)).item() == 0.0
    for name in ("iou", "dice", "mse"):
        assert get_particle_loss(name, from_logits=False)(_t(p), _t(p)).item() == pytest.approx(0.0, abs=1e-15)


def test_gradients_finite_at_extreme_logits():
    logits = torch.tensor([-40.0, -5.0, 0.0, 5.0, 40.0]).view(1, 1, 1, 5).requires_grad_()
    target = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 5)
    for name in ("aal", "iou", "dice", "mse", "bce"):
        logits.grad = None
        loss = get_particle_loss(name)(logits, target)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), name


def test_loss_errors():
    with pytest.raises(ValueError, match="unknown loss 'focal'; available: aal, iou, dice, mse, bce"):
        get_particle_loss("focal")
    with pytest.raises(ValueError, match=r"target shape \(1, 1, 4, 4\) must equal pred shape \(1, 1, 4, 5\)"):
        get_particle_loss("aal")(torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"pred must be \(B, C, H, W\), got shape \(4, 5\)"):
        get_particle_loss("bce")(torch.zeros(4, 5), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="eps must be > 0, got 0"):
        AdaptiveAttentionLoss(eps=0)
    with pytest.raises(ValueError, match="kernel_size must be odd and >= 1, got 4"):
        attention_matrix(torch.zeros(1, 1, 3, 3), 4)


# ---- structured knowledge transfer ------------------------------------------------------------


def _np_fsp(a, b):
    def inorm(f):
        mu = f.mean(axis=(1, 2), keepdims=True)
        var = f.var(axis=(1, 2), keepdims=True)
        return ((f - mu) / np.sqrt(var + 1e-5)).reshape(f.shape[0], -1)

    fa, fb = inorm(a), inorm(b)
    return fa @ fb.T / fa.shape[1]


def test_dense_fsp_by_hand():
    torch.manual_seed(1)
    coarse = torch.randn(2, 3, 4, 2, dtype=torch.float64)
    fine = torch.randn(2, 5, 8, 4, dtype=torch.float64)
    (g,) = dense_fsp([coarse, fine])
    assert g.shape == (2, 3, 5)
    pooled = fine.numpy().reshape(2, 5, 4, 2, 2, 2).max(axis=(3, 5))  # 2x2 max pooling
    for b in range(2):
        np.testing.assert_allclose(g[b].numpy(), _np_fsp(coarse[b].numpy(), pooled[b]), atol=1e-10)
    assert len(dense_fsp([coarse, fine, fine])) == 3
    with pytest.raises(ValueError, match="at least 2 feature maps, got 1"):
        dense_fsp([coarse])


def _identity_kd(c):
    kd = StructuredKnowledgeTransfer([c, c, c], [c, c, c]).double()
    for adapter in kd.adapters:
        torch.nn.init.eye_(adapter[0].weight.view(c, c))
        torch.nn.init.zeros_(adapter[0].bias)
    return kd


def test_kd_zero_when_student_matches_teacher():
    torch.manual_seed(2)
    feats = [torch.rand(2, 3, 2 * s, s, dtype=torch.float64) for s in (3, 6, 12)]
    out = _identity_kd(3)(feats, [f.clone() for f in feats])
    assert out["intra"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["cross"].item() == pytest.approx(0.0, abs=1e-12)


def test_kd_terms_by_hand():
    torch.manual_seed(3)
    student = [torch.rand(1, 3, 2 * s, s, dtype=torch.float64) for s in (2, 4)]
    teacher = [torch.rand(1, 3, 2 * s, s, dtype=torch.float64) for s in (2, 4)]
    kd = StructuredKnowledgeTransfer([3, 3], [3, 3], lambda_intra=2.0, lambda_cross=0.25).double()
    for adapter in kd.adapters:
        torch.nn.init.eye_(adapter[0].weight.view(3, 3))
        torch.nn.init.zeros_(adapter[0].bias)
    out = kd(student, teacher)
    layer_means = []
    for s, t in zip(student, teacher):
        s, t = s[0].numpy(), t[0].numpy()
        cos = (s * t).sum(0) / np.maximum(np.linalg.norm(s, axis=0) * np.linalg.norm(t, axis=0), 1e-8)
        layer_means.append(np.mean(1 - cos))
    intra = np.mean(layer_means)  # mean over the 2 layers
    pool = lambda f: f[0].numpy().reshape(3, 4, 2, 2, 2).max(axis=(2, 4))  # noqa: E731
    gs = _np_fsp(student[0][0].numpy(), pool(student[1]))
    gt = _np_fsp(teacher[0][0].numpy(), pool(teacher[1]))
    cross = ((gt - gs) ** 2).mean()  # one pair: mean over the C_i x C_j = 3 x 3 FSP entries
    assert out["intra"].item() == pytest.approx(intra, rel=1e-10)
    assert out["cross"].item() == pytest.approx(cross, rel=1e-10)
    assert out["total"].item() == pytest.approx(2.0 * intra + 0.25 * cross, rel=1e-10)
    # SKT's own reductions sum over positions, layers, FSP entries and pairs
    summed = StructuredKnowledgeTransfer([3, 3], [3, 3], reduction="sum").double()
    summed.load_state_dict(kd.state_dict())
    sizes = [s.shape[-2] * s.shape[-1] for s in student]
    expected = sum(n * m for n, m in zip(sizes, layer_means))
    assert summed(student, teacher)["intra"].item() == pytest.approx(expected, rel=1e-10)
    assert summed(student, teacher)["cross"].item() == pytest.approx(9 * cross, rel=1e-10)


def _worked_example():
    # Two 2-channel layers of 2 x 4 positions, u a half-filled 0/1 pattern (instance norm -> +-1).
    # Teacher channels (1 + u, 1 + u): correlated, G^t = [[1, 1], [1, 1]].
    # Student channels (1 + u, 2 - u): anti-correlated, G^a = [[1, -1], [-1, 1]].
    # Every position: cos((1 + u, 2 - u), (1 + u, 1 + u)) = 3 / sqrt(10) (u = 0: (1,2).(1,1);
    # u = 1: (2,1).(2,2) / (sqrt 5 sqrt 8)).
    u = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    student = torch.stack([1 + u, 2 - u]).unsqueeze(0)
    teacher = torch.stack([1 + u, 1 + u]).unsqueeze(0)
    return [student, student.clone()], [teacher, teacher.clone()]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_kd_worked_example(reduction):
    student, teacher = _worked_example()
    kd = StructuredKnowledgeTransfer([2, 2], [2, 2], reduction=reduction).double()
    for adapter in kd.adapters:
        torch.nn.init.eye_(adapter[0].weight.view(2, 2))
        torch.nn.init.zeros_(adapter[0].bias)
    out = kd(student, teacher)
    dissim = 1 - 3 / np.sqrt(10)  # 0.0513 at each of the 8 positions of both layers
    # one FSP pair (layer 0, layer 1): off-diagonal entries differ by 2, diagonal ones by 0
    if reduction == "mean":  # ours: means over positions and layers, entries and pairs
        intra, cross = dissim, (0 + 4 + 4 + 0) / 4  # 0.0513, 2.0
    else:  # SKT: sums over positions and layers, entries and pairs
        intra, cross = 2 * 8 * dissim, 0 + 4 + 4 + 0  # 0.8211, 8.0
    # instance norm's eps = 1e-5 on a variance of 0.25 shifts G by ~4e-5
    assert out["intra"].item() == pytest.approx(intra, rel=1e-6)
    assert out["cross"].item() == pytest.approx(cross, rel=1e-3)
    assert out["total"].item() == pytest.approx(0.5 * intra + 0.5 * cross, rel=1e-3)


def test_kd_mean_is_skt_sum_over_sizes():
    # The default divides SKT's intra term of layer k by K h_k w_k and its cross term of a pair
    # by |P| C_i C_j (K = 3 layers, |P| = 3 pairs; batch of 2: per sample, then batch mean).
    torch.manual_seed(4)
    student = [torch.rand(2, 4, 6 * s, 2 * s) for s in (1, 2, 4)]
    teacher = [torch.rand(2, 24, 6 * s, 2 * s) for s in (1, 2, 4)]
    mean = StructuredKnowledgeTransfer([4] * 3, [24] * 3)
    summed = StructuredKnowledgeTransfer([4] * 3, [24] * 3, reduction="sum")
    summed.load_state_dict(mean.state_dict())
    m, s = mean(student, teacher), summed(student, teacher)
    assert s["cross"].item() == pytest.approx(3 * 24 * 24 * m["cross"].item(), rel=1e-5)
    adapted = [a(f) for a, f in zip(mean.adapters, student)]
    per_layer = [(1 - torch.nn.functional.cosine_similarity(a, t, dim=1)).mean().item()
                 for a, t in zip(adapted, teacher)]
    assert m["intra"].item() == pytest.approx(sum(per_layer) / 3, rel=1e-5)
    assert s["intra"].item() == pytest.approx(
        sum(t.shape[-2] * t.shape[-1] * v for t, v in zip(teacher, per_layer)), rel=1e-5)


def test_kd_at_initialisation_same_order_as_aal():
    # The regression that broke PAD-Net (KD): SKT's summed FSP entries were ~100x the AAL, so the
    # student never learnt to detect. With the default means the KD total at initialisation
    # (random student, random teacher, embedded pads) is of the order of the AAL.
    from fastvision.data.particles import ProceduralParticles
    from fastvision.models import get_model

    torch.manual_seed(0)
    data = ProceduralParticles("train", 16, seed=0)
    x = torch.stack([data[i]["image"] for i in range(16)])
    y = torch.stack([data[i]["target"] for i in range(16)])
    student, teacher = get_model("padnet").train(), get_model("padnet_teacher").eval()
    logits, s_feats = student(x, return_features=True)
    with torch.no_grad():
        _, t_feats = teacher(x, return_features=True)
    aal = AdaptiveAttentionLoss()(logits, y).item()
    kd = StructuredKnowledgeTransfer([4] * 3, [24] * 3)(s_feats, t_feats)
    assert 0.1 < kd["total"].item() / aal < 10, (kd, aal)
    assert kd["intra"].item() <= 2 and kd["cross"].item() <= 4  # the means' bounds
    skt = StructuredKnowledgeTransfer([4] * 3, [24] * 3, reduction="sum")
    assert skt(s_feats, t_feats)["total"].item() / aal > 100  # SKT's sums would swamp AAL


def test_kd_with_padnet_and_teacher_gradients():
    from fastvision.models import get_model

    student = get_model("padnet").train()
    teacher = get_model("padnet_teacher").eval()
    x = torch.randn(2, 1, 28, 12)
    _, s_feats = student(x, return_features=True)
    with torch.no_grad():
        _, t_feats = teacher(x, return_features=True)
    kd = StructuredKnowledgeTransfer([4, 4, 4], [24, 24, 24])
    out = kd(s_feats, t_feats)
    out["total"].backward()
    assert torch.isfinite(out["total"])
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in kd.parameters())
    assert student.decoder.chain1.convs[0][0].weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_kd_errors():
    with pytest.raises(ValueError, match="2 student and 3 teacher feature maps"):
        StructuredKnowledgeTransfer([4, 4], [8, 8, 8])
    kd = StructuredKnowledgeTransfer([4, 4], [8, 8])
    s = [torch.rand(1, 4, 4, 4), torch.rand(1, 4, 8, 8)]
    with pytest.raises(ValueError, match=r"feature 1: adapted student shape \(1, 8, 8, 8\) "
                                         r"!= teacher shape \(1, 8, 4, 4\)"):
        kd(s, [torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4)])
    with pytest.raises(ValueError, match="expected 2 student and teacher feature maps, got 1 and 2"):
        kd(s[:1], s)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'max'"):
        StructuredKnowledgeTransfer([4], [8], reduction="max")
