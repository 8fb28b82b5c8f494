"""The point benchmark's verdicts: another implementation's answer against fastvision's."""

import torch

from fastvision.tasks.sampling.competitors import fps_verdict, knn_verdict


def _line(*xs):
    """One cloud of points on the x axis."""
    return torch.tensor([[[float(x), 0.0, 0.0] for x in xs]])


def test_knn_verdict_exact_tie_differs_and_shape():
    query, points = _line(0), _line(1, -1, 3)
    fastvision = torch.tensor([[[0]]])
    assert knn_verdict(query, points, fastvision, fastvision) == ("exact", "")
    assert knn_verdict(query, points, torch.tensor([[[1]]]), fastvision)[0] == "tie"
    assert knn_verdict(query, points, torch.tensor([[[2]]]), fastvision)[0] == "differs"
    assert knn_verdict(query, points, torch.tensor([[[0, 1]]]), fastvision) == (
        "differs", "shape (1, 1, 2) vs (1, 1, 1)")


def test_fps_verdict_exact_tie_differs():
    # From index 0, points 1 and 2 are equally far: either order is a valid FPS.
    ties = _line(0, -1, 1)
    fastvision = torch.tensor([[0, 1, 2]])
    assert fps_verdict(ties, fastvision, fastvision) == ("exact", "")
    assert fps_verdict(ties, torch.tensor([[0, 2, 1]]), fastvision)[0] == "tie"
    # Here the farthest point from 0 is 2 (at 3), so taking 1 (at 1) first is wrong.
    line = _line(0, 1, 3)
    assert fps_verdict(line, torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]]))[0] == "differs"
