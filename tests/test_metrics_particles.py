"""PAD-Net metrics: peak extraction, one-to-one matching, MAE / RMSE / Precision / Recall."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastvision.metrics import ParticleMetrics, extract_peaks, match_points

TRUE = [[5.0, 5.0], [20.0, 8.0], [30.0, 40.0]]


def _metrics(pred, true, **kw):
    m = ParticleMetrics(**kw)
    m.update(pred, true)
    return m.compute()


def test_perfect_prediction():
    r = _metrics([torch.tensor(TRUE)], [torch.tensor(TRUE)])
    assert (r["precision"], r["recall"], r["mae"], r["rmse"]) == (1.0, 1.0, 0.0, 0.0)
    assert (r["tp"], r["fp"], r["fn"], r["images"]) == (3, 0, 0, 1)


def test_miss_and_shifted_within_radius():
    pred = [[6.0, 7.0], [21.0, 8.5]]  # first two found (distances 2.24 and 1.12), third missed
    r = _metrics([pred], [TRUE], radius=3.0)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 0, 1)
    assert r["precision"] == 1.0 and r["recall"] == pytest.approx(2 / 3)
    assert r["mae"] == 1.0 and r["rmse"] == 1.0
    # a tighter radius turns the 2.24-pixel detection into a miss plus a false positive
    r = _metrics([pred], [TRUE], radius=2.0)
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 2)


def test_false_positive_and_duplicates():
    pred = TRUE + [[40.0, 100.0]]
    r = _metrics([pred], [TRUE])
    assert (r["tp"], r["fp"], r["fn"]) == (3, 1, 0)
    assert r["precision"] == pytest.approx(0.75) and r["recall"] == 1.0
    # two detections of the same particle: one true positive, one false positive
    dup = [[5.0, 5.0], [5.5, 5.0], [20.0, 8.0], [30.0, 40.0]]
    r = _metrics([dup], [TRUE])
    assert (r["tp"], r["fp"], r["fn"]) == (3, 1, 0)


def test_hungarian_maximises_the_number_of_matches():
    true = [[0.0, 0.0], [3.0, 0.0]]
    pred = [[1.6, 0.0], [4.5, 0.0]]
    # nearest-first would give pred 0 to true 1 (1.4 < 1.6) and leave pred 1 unmatched
    pairs = match_points(pred, true, radius=3.0)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 0), (1, 1)]


def test_counting_errors_over_images():
    true = [TRUE, TRUE, TRUE]
    pred = [TRUE + [[0.0, 0.0]], TRUE[:1], TRUE]  # count errors +1, -2, 0
    r = _metrics(pred, true)
    assert r["mae"] == pytest.approx(1.0)
    assert r["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert r["images"] == 3


def test_empty_images():
    r = _metrics([torch.zeros(0, 2), []], [torch.zeros(0, 2), TRUE])
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 3)
    assert r["precision"] == 1.0 and r["recall"] == 0.0 and r["f1"] == 0.0
    assert match_points([], TRUE).shape == (0, 2)


def _blob(h, w, x, y, amp, sigma=1.2):
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    return amp * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))


def test_extract_peaks():
    h, w = 30, 20
    prob = _blob(h, w, 4, 6, 0.9) + _blob(h, w, 15, 20, 0.8) + _blob(h, w, 10, 27, 0.3)
    prob[0, 19] = 0.7  # a corner peak
    prob[12, 5:7] = 0.95  # a plateau of two equal maxima: one particle
    peaks = extract_peaks(prob[None, None], threshold=0.5, window=5)
    assert len(peaks) == 1
    got = sorted(map(tuple, peaks[0].tolist()))
    assert got == [(4.0, 6.0), (5.0, 12.0), (15.0, 20.0), (19.0, 0.0)]
    assert len(extract_peaks(prob, threshold=0.2)[0]) == 5  # the weak blob appears
    batch = extract_peaks(torch.stack([prob, torch.zeros(h, w)]), window=3)
    assert len(batch) == 2 and batch[1].shape == (0, 2)


def test_update_from_maps_end_to_end():
    h, w = 40, 30
    centres = [[5.0, 5.0], [20.0, 10.0], [12.0, 33.0]]
    prob = sum(_blob(h, w, x, y, 0.9) for x, y in centres)
    m = ParticleMetrics()
    m.update_from_maps(prob[None, None], [torch.tensor(centres)])
    r = m.compute()
    assert (r["precision"], r["recall"], r["mae"]) == (1.0, 1.0, 0.0)


def test_metric_errors():
    with pytest.raises(ValueError, match="radius must be > 0, got 0"):
        ParticleMetrics(radius=0)
    with pytest.raises(ValueError, match="radius must be > 0, got -1"):
        match_points(TRUE, TRUE, radius=-1)
    with pytest.raises(ValueError, match=r"pred must be \(N, 2\) \(x, y\) points, got shape \(3,\)"):
        match_points([1.0, 2.0, 3.0], TRUE)
    with pytest.raises(ValueError, match="window must be odd and >= 1, got 4"):
        extract_peaks(torch.zeros(4, 4), window=4)
    with pytest.raises(ValueError, match=r"one channel, got shape \(1, 2, 4, 4\)"):
        extract_peaks(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="2 predicted and 1 true images"):
        ParticleMetrics().update([TRUE, TRUE], [TRUE])
    with pytest.raises(ValueError, match="no images were added"):
        ParticleMetrics().compute()
    m = ParticleMetrics()
    m.update([TRUE], [TRUE])
    m.reset()
    with pytest.raises(ValueError, match="no images"):
        m.compute()


def test_matching_is_one_to_one_on_random_points():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 20, (30, 2))
    true = rng.uniform(0, 20, (25, 2))
    pairs = match_points(pred, true, radius=2.0)
    assert len(set(pairs[:, 0])) == len(pairs) == len(set(pairs[:, 1]))
    assert (np.linalg.norm(pred[pairs[:, 0]] - true[pairs[:, 1]], axis=1) <= 2.0).all()


def _greedy_peaks(prob: torch.Tensor, threshold: float, window: int) -> list[torch.Tensor]:
    # The definition, image by image: candidates by score (ties by raster order), each kept
    # unless a kept one lies within window // 2 (Chebyshev).
    import torch.nn.functional as F

    local_max = F.max_pool2d(prob[:, None], window, stride=1, padding=window // 2)[:, 0]
    candidates = (prob >= threshold) & (prob == local_max)
    out = []
    for b in range(prob.shape[0]):
        ys, xs = torch.nonzero(candidates[b], as_tuple=True)
        order = torch.argsort(-prob[b, ys, xs], stable=True).tolist()
        kept = []
        for i in order:
            x, y = int(xs[i]), int(ys[i])
            if all(max(abs(x - kx), abs(y - ky)) > window // 2 for kx, ky in kept):
                kept.append((x, y))
        out.append(torch.tensor(kept, dtype=torch.float32).reshape(-1, 2))
    return out


@pytest.mark.parametrize("window", [1, 3, 5, 7])
@pytest.mark.parametrize("levels", [4, 16, 10**6])
def test_extract_peaks_equals_the_greedy_definition_with_plateaus(window, levels):
    # Few grey levels make plateaus and equal maxima within a window: the greedy path runs.
    g = torch.Generator().manual_seed(levels + window)
    prob = (torch.rand(6, 23, 17, generator=g) * levels).floor() / levels
    prob[2] = 0.0  # an image without peaks
    got = extract_peaks(prob, threshold=0.3, window=window)
    expected = _greedy_peaks(prob, 0.3, window)
    assert len(got) == 6 and sum(len(p) for p in got) > 0 and len(got[2]) == 0
    for a, e in zip(got, expected):
        assert a.dtype == torch.float32 and a.shape == e.shape
        assert torch.equal(a, e)


@pytest.mark.parametrize("shape", [(3, 112, 48), (2, 3, 2), (1, 1, 1), (4, 7, 9)])
@pytest.mark.parametrize("reach", [0, 1, 2, 3])
def test_window_reduce_equals_pooling(shape, reach):
    from fastvision.metrics.particles import window_reduce

    g = torch.Generator().manual_seed(sum(shape) + reach)
    maps = torch.rand(shape, generator=g).mul(8).floor().div(8)  # many ties
    maps[0, 0, 0] = float("nan")  # propagates as in max_pool2d
    k = 2 * reach + 1
    want = F.max_pool2d(maps[:, None], k, stride=1, padding=reach)[:, 0]
    torch.testing.assert_close(window_reduce(maps, reach, torch.maximum, -math.inf), want,
                               rtol=0, atol=0, equal_nan=True)
    ones = (maps > 0.5).to(torch.int32)
    count = F.conv2d(ones[:, None].double(), torch.ones(1, 1, k, k, dtype=torch.float64),
                     padding=reach)[:, 0].round().to(torch.int32)
    assert torch.equal(window_reduce(ones, reach, torch.add, 0), count)


def test_extract_peaks_with_ties_matches_the_pooling_formulation():
    # Plateaus and crowded maxima go through the greedy pass: the result must not change.
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(4, 40, 30, generator=g).mul(4).floor().div(4)
    peaks = extract_peaks(prob, threshold=0.5, window=5)
    for image, got in zip(prob, peaks):
        local_max = F.max_pool2d(image[None, None], 5, 1, 2)[0, 0]
        candidates = (image >= 0.5) & (image == local_max)
        # every peak is a candidate, and no two peaks share a window
        assert all(candidates[int(y), int(x)] for x, y in got.tolist())
        d = (got[:, None] - got[None]).abs().amax(-1) + 99 * torch.eye(len(got))
        assert len(got) > 0 and bool((d > 2).all())
