"""nn_match: the official S-NET/SampleNet matching (nearest point, order-preserving unique, FPS
completion), on the device, as indices."""

import pytest
import torch
from helpers import DEVICES
from hypothesis import given, settings
from hypothesis import strategies as st

from fastvision.tasks.sampling.benchmark import official_nn_matching
from fastvision.ops import _reference as ref
from fastvision.ops import nn_match


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("complete", ["fps", None])
def test_nn_match_equals_official_numpy_procedure(device, complete):
    g = torch.Generator().manual_seed(3)
    points = torch.rand(6, 300, 3, generator=g)
    # Generated points near input points, many of them collapsing onto the same input point.
    generated = points[:, torch.randint(0, 40, (32,), generator=g)] + 0.01 * torch.randn(6, 32, 3, generator=g)
    idx = nn_match(generated.to(device), points.to(device), 32, complete=complete)
    expected = official_nn_matching(points, generated, 32, complete_fps=complete == "fps")
    matched = points.double()[torch.arange(6)[:, None], idx.cpu()]
    assert torch.equal(matched, expected)
    assert torch.equal(idx.cpu(), ref.nn_match(generated, points, 32, complete=complete))


def test_nn_match_unique_count_and_first_occurrence():
    points = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [5, 5, 5]]])
    generated = torch.tensor([[[0.9, 0, 0], [0.1, 0, 0], [1.1, 0, 0], [0, 0.8, 0]]])
    idx, n = nn_match(generated, points, 4, return_num_unique=True)
    assert n.tolist() == [3]
    assert idx[0, :3].tolist() == [1, 0, 2]  # generation order, the duplicate of 1 dropped
    assert idx[0, 3].item() == 4  # FPS completion takes the farthest point
    raw = nn_match(generated, points, 4, complete=None)
    assert raw[0].tolist() == [1, 0, 1, 2]


def test_nn_match_ragged_lengths_and_truncation():
    points = torch.rand(2, 50, 3)
    lengths = torch.tensor([50, 20])
    generated = torch.rand(2, 16, 3)
    idx = nn_match(generated, points, 10, lengths=lengths)
    assert (idx[1] < 20).all() and (idx >= 0).all()
    for row in idx:
        assert len(set(row.tolist())) == 10


def test_nn_match_compiles_without_graph_breaks():
    points, generated = torch.rand(2, 40, 3), torch.rand(2, 8, 3)
    compiled = torch.compile(lambda g, p: nn_match(g, p, 8), fullgraph=True)
    assert torch.equal(compiled(generated, points), nn_match(generated, points, 8))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: nn_match(torch.rand(2, 4, 3), torch.rand(2, 5, 3), 6), "num_out = 6 is larger"),
        (lambda: nn_match(torch.rand(2, 4, 3), torch.rand(2, 9, 3), 5, complete=None), "cannot exceed"),
        (lambda: nn_match(torch.rand(2, 4, 3), torch.rand(2, 9, 3), 3, complete="emd"), "complete must be"),
        (lambda: nn_match(torch.rand(2, 4, 3), torch.rand(2, 0, 3), 0), "no points"),
        (lambda: nn_match(torch.rand(4, 3), torch.rand(2, 9, 3), 3), "generated must have shape"),
    ],
)
def test_nn_match_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 3), M=st.integers(1, 12), N=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_nn_match_property(B, M, N, seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.randint(0, 4, (B, N, 3), generator=g).float()  # duplicates and ties
    generated = torch.rand(B, M, 3, generator=g) * 3
    num_out = min(N, M)
    idx = nn_match(generated, points, num_out)
    assert torch.equal(idx, ref.nn_match(generated, points, num_out))
