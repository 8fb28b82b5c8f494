"""The particle matching radius is inclusive: a prediction exactly ``radius`` from a true centre
matches (issue 15: the boundary was untested and the docstring said "closer than")."""

import numpy as np

from fastvision.metrics import ParticleMetrics, match_points


def test_a_pair_exactly_at_the_radius_matches():
    true = np.array([[10.0, 10.0]])
    pred = np.array([[13.0, 14.0]])  # a 3-4-5 triangle: exactly 5.0 away, no rounding
    assert match_points(pred, true, radius=5.0).tolist() == [[0, 0]]
    assert match_points(pred, true, radius=np.nextafter(5.0, 0.0)).tolist() == []


def test_metrics_count_a_detection_at_the_radius_as_true_positive():
    m = ParticleMetrics(radius=5.0)
    m.update([np.array([[13.0, 14.0]])], [np.array([[10.0, 10.0]])])
    r = m.compute()
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 0)
