"""CUDA kernels of the point ops against the CPU kernels: knn_points (+ backward), nn_distance and
farthest_point_sample. For float32/float64 the CUDA results must equal the CPU results bit for bit
(same distance expression, same tie-breaking); half/bfloat16 are compared with the CPU run on the
same half data (both compute in float32 and round once). Skipped without a GPU."""

import pytest
import torch
from helpers import grid_cloud, separated_cloud

from fastvision.ops import farthest_point_sample, knn_points, nn_distance

pytestmark = pytest.mark.cuda

ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _cuda(*tensors):
    return [None if t is None else t.cuda() for t in tensors]


def _assert_same(cuda_out, cpu_out):
    for a, b in zip(cuda_out, cpu_out):
        assert a.device.type == "cuda"
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.cpu(), b), (a.cpu(), b)


# ------------------------------------------------------------------------------------------------
# knn_points


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("D", [3, 5])
@pytest.mark.parametrize("K", [1, 3, 8, 16, 33])
@pytest.mark.parametrize("norm", [1, 2])
def test_knn_cuda_equals_cpu(dtype, D, K, norm):
    B, P1, P2 = 4, 300, 70
    p1 = torch.rand(B, P1, D, dtype=dtype)
    p2 = torch.rand(B, P2, D, dtype=dtype)
    l1 = torch.tensor([P1, 0, 123, 1])
    l2 = torch.tensor([P2, K - 1 if K > 1 else 0, 5, 41])  # some clouds hold fewer than K points
    for lengths1, lengths2 in [(None, None), (l1, l2)]:
        cpu = knn_points(p1, p2, K, lengths1, lengths2, norm=norm)
        cuda = knn_points(*_cuda(p1, p2), K, *_cuda(lengths1, lengths2), norm=norm)
        _assert_same(cuda, cpu)


@pytest.mark.parametrize("K", [1, 4, 10, 40])
@pytest.mark.parametrize("norm", [1, 2])
def test_knn_cuda_ties_equal_cpu(K, norm):
    # Integer grid with repeated points: most distances tie exactly (lowest index must win).
    p1 = grid_cloud(3, 200, 3, side=4)
    p2 = grid_cloud(3, 300, 3, side=4, seed=1)
    cpu = knn_points(p1, p2, K, norm=norm)
    cuda = knn_points(*_cuda(p1, p2), K, norm=norm)
    _assert_same(cuda, cpu)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("D", [3, 5])
@pytest.mark.parametrize("K", [1, 8, 33])
def test_knn_cuda_half_equals_cpu_on_same_data(dtype, D, K):
    p1 = torch.rand(3, 150, D).to(dtype)
    p2 = torch.rand(3, 90, D).to(dtype)
    l2 = torch.tensor([90, 20, 60])
    cpu = knn_points(p1, p2, K, None, l2)
    cuda = knn_points(*_cuda(p1, p2), K, None, l2.cuda())
    _assert_same(cuda, cpu)
    assert cuda.dists.dtype == dtype


@pytest.mark.parametrize("K", [1, 8, 33])
@pytest.mark.parametrize("D", [3, 4])
def test_knn_cuda_few_queries_split_path(K, D):
    # B * ceil(P1 / threads) blocks is far below the SM count: the reference set is split across
    # blocks and the partial top-K lists are merged.
    p1 = torch.rand(1, 8, D)
    p2 = torch.rand(1, 100_000, D)
    cpu = knn_points(p1, p2, K, method="brute_force")
    cuda = knn_points(*_cuda(p1, p2), K)
    _assert_same(cuda, cpu)
    # Ragged: a length inside the split ranges, and queries past lengths1.
    l1, l2 = torch.tensor([5]), torch.tensor([70_001])
    cpu = knn_points(p1, p2, K, l1, l2, method="brute_force")
    cuda = knn_points(*_cuda(p1, p2), K, *_cuda(l1, l2))
    _assert_same(cuda, cpu)
    assert (cuda.idx[0, 5:] == -1).all() and torch.isinf(cuda.dists[0, 5:]).all()


def test_knn_cuda_few_queries_with_ties_split_path():
    # Exact duplicates spread over the whole reference range: the merge must keep the lowest index.
    p2 = grid_cloud(2, 60_000, 3, side=5)
    p1 = grid_cloud(2, 10, 3, side=5, seed=3)
    for K in (1, 5, 32, 50):
        cpu = knn_points(p1, p2, K, method="brute_force")
        cuda = knn_points(*_cuda(p1, p2), K)
        _assert_same(cuda, cpu)


def test_knn_cuda_large_dimension():
    # D large enough that the generic-D path tiles few points, and one where p2 is read directly.
    for D, P2 in [(300, 50), (9000, 12)]:
        p1 = torch.rand(2, 7, D)
        p2 = torch.rand(2, P2, D)
        cpu = knn_points(p1, p2, 4)
        cuda = knn_points(*_cuda(p1, p2), 4)
        _assert_same(cuda, cpu)


def test_knn_cuda_non_contiguous_inputs():
    p1 = torch.rand(2, 3, 60).transpose(1, 2)  # (2, 60, 3), non-contiguous
    p2 = torch.rand(2, 80, 6)[:, :, ::2]  # (2, 80, 3), strided
    assert not p1.is_contiguous() and not p2.is_contiguous()
    cpu = knn_points(p1.contiguous(), p2.contiguous(), 5)
    cuda = knn_points(*_cuda(p1, p2), 5)  # .cuda() keeps the strides
    assert not p1.cuda().is_contiguous()
    _assert_same(cuda, cpu)


def test_knn_cuda_out_of_range_lengths_are_clamped_not_read_out_of_bounds():
    # The op itself does not check length values on CUDA (the wrapper does so asynchronously);
    # the kernels must still stay in bounds.
    p1, p2 = torch.rand(2, 20, 3).cuda(), torch.rand(2, 30, 3).cuda()
    bad1, bad2 = torch.tensor([25, -4]).cuda(), torch.tensor([31, -1]).cuda()
    d, i = torch.ops.fastvision.knn_points(p1, p2, bad1, bad2, 3, 2, True, -1)
    good = torch.ops.fastvision.knn_points(
        p1, p2, torch.tensor([20, 0]).cuda(), torch.tensor([30, 0]).cuda(), 3, 2, True, -1
    )
    torch.cuda.synchronize()
    assert torch.equal(d, good[0]) and torch.equal(i, good[1])


def test_knn_cuda_empty_sizes():
    for B, P1 in [(0, 5), (2, 0)]:
        p1 = torch.rand(B, P1, 3, device="cuda")
        p2 = torch.rand(B, 6, 3, device="cuda")
        d, i = knn_points(p1, p2, 2)
        assert d.shape == i.shape == (B, P1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("D", [3, 5])
@pytest.mark.parametrize("K", [1, 4, 33])
@pytest.mark.parametrize("norm", [1, 2])
def test_knn_cuda_backward_matches_cpu(dtype, D, K, norm):
    p1 = separated_cloud(3, 50, D, dtype=dtype, seed=1)
    p2 = separated_cloud(3, 60, D, dtype=dtype, seed=2)
    l2 = torch.tensor([60, 2, 35])  # some rows padded with idx -1
    w = torch.rand(3, 50, K, dtype=dtype)

    def grads(device):
        a = p1.to(device).requires_grad_()
        b = p2.to(device).requires_grad_()
        d, i = knn_points(a, b, K, None, l2.to(device), norm=norm)
        loss = (torch.where(i >= 0, d, torch.zeros_like(d)) * w.to(device)).sum()
        loss.backward()
        return i.cpu(), a.grad.cpu(), b.grad.cpu()

    ic, g1c, g2c = grads("cpu")
    ig, g1g, g2g = grads("cuda")
    assert torch.equal(ic, ig)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(g1g, g1c, rtol=tol, atol=tol)
    torch.testing.assert_close(g2g, g2c, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", [3, 5])
def test_knn_cuda_backward_op_direct(dtype, D):
    p1 = torch.rand(2, 40, D).to(dtype)
    p2 = torch.rand(2, 30, D).to(dtype)
    idx = torch.randint(-1, 30, (2, 40, 6))  # -1 entries are skipped
    grad = torch.randn(2, 40, 6).to(dtype)
    cpu = torch.ops.fastvision._knn_points_backward(p1, p2, idx, grad, 2)
    cuda = torch.ops.fastvision._knn_points_backward(*_cuda(p1, p2, idx, grad), 2)
    for a, b in zip(cuda, cpu):
        assert a.dtype == dtype and a.shape == b.shape
        if dtype in (torch.float32, torch.float64):
            torch.testing.assert_close(a.cpu(), b)
        else:  # rounded once from float32 sums accumulated in a different order
            torch.testing.assert_close(a.cpu().float(), b.float(), rtol=2e-2, atol=2e-2)
    # grad_p1 is accumulated per query in the CPU's order: bitwise equal for float32/float64.
    if dtype in (torch.float32, torch.float64):
        assert torch.equal(cuda[0].cpu(), cpu[0])


# ------------------------------------------------------------------------------------------------
# nn_distance


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", [3, 5])
@pytest.mark.parametrize("norm", [1, 2])
def test_nn_distance_cuda_equals_cpu(dtype, D, norm):
    p1 = torch.rand(4, 70, D).to(dtype)
    p2 = torch.rand(4, 50, D).to(dtype)
    l1 = torch.tensor([70, 0, 33, 12])
    l2 = torch.tensor([50, 17, 0, 1])  # an empty other cloud gives +inf / -1
    for lengths1, lengths2 in [(None, None), (l1, l2)]:
        cpu = nn_distance(p1, p2, lengths1, lengths2, norm=norm)
        cuda = nn_distance(*_cuda(p1, p2), *_cuda(lengths1, lengths2), norm=norm)
        _assert_same(cuda, cpu)


def test_nn_distance_cuda_ties_and_split_path():
    p1 = grid_cloud(1, 16, 3, side=4)
    p2 = grid_cloud(1, 50_000, 3, side=4, seed=1)
    cpu = nn_distance(p1, p2, method="brute_force")
    cuda = nn_distance(*_cuda(p1, p2))
    _assert_same(cuda, cpu)


def test_nn_distance_cuda_multi_pass_and_column_split():
    # 2000 x 200000 pairs: the column partials' budget (2^22 entries) leaves 16 row groups of two
    # 64-row passes each, and 16 blocks on a GPU of 100+ SMs split the columns too
    # (nn_distance_kernels.cuh, plan_nn_distance).
    p1 = grid_cloud(1, 2000, 3, side=6, seed=2)
    p2 = grid_cloud(1, 200_000, 3, side=6, seed=3)
    cpu = nn_distance(p1, p2, method="brute_force")
    cuda = nn_distance(*_cuda(p1, p2))
    _assert_same(cuda, cpu)


def test_nn_distance_cuda_gradients_match_cpu():
    p1 = separated_cloud(2, 40, 3, seed=1)
    p2 = separated_cloud(2, 30, 3, seed=2)
    l1, l2 = torch.tensor([40, 25]), torch.tensor([30, 9])

    def grads(device):
        a = p1.to(device).requires_grad_()
        b = p2.to(device).requires_grad_()
        d12, _, d21, _ = nn_distance(a, b, l1.to(device), l2.to(device))
        (d12.sum() + 2 * d21.sum()).backward()
        return a.grad.cpu(), b.grad.cpu()

    for g, c in zip(grads("cuda"), grads("cpu")):
        torch.testing.assert_close(g, c, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# farthest_point_sample


def _fps_op(points, lengths, K, seeds):
    return torch.ops.fastvision.farthest_point_sample(points, lengths, K, seeds, -1)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("D", [2, 3, 5])
def test_fps_cuda_equals_cpu(dtype, D):
    pts = torch.rand(4, 200, D).to(dtype)
    lengths = torch.tensor([200, 37, 120, 64])
    seeds = torch.tensor([[5, -1, 9], [-1, -1, -1], [2, 2, 30], [-1, 63, -1]])
    cpu = _fps_op(pts, lengths, 30, seeds)
    cuda = _fps_op(*_cuda(pts, lengths), 30, seeds.cuda())
    _assert_same(cuda, cpu)
    assert torch.isinf(cuda[1][:, 0].float()).all()  # the first pick (seeded or not): +inf


def test_fps_cuda_pads_when_k_exceeds_the_cloud():
    pts = torch.rand(3, 10, 3)
    lengths = torch.tensor([10, 3, 0])
    seeds = torch.tensor([[0], [-1], [-1]])
    cpu = _fps_op(pts, lengths, 7, seeds)
    cuda = _fps_op(*_cuda(pts, lengths), 7, seeds.cuda())
    _assert_same(cuda, cpu)
    idx, md = cuda
    assert (idx[1, 3:] == -1).all() and (md[1, 3:] == 0).all() and (idx[2] == -1).all()


def test_fps_cuda_seeds_fill_k_and_empty_seed_set():
    pts = torch.rand(2, 40, 3)
    for seeds in (torch.tensor([[1, 2, 3, 4], [7, -1, 7, 9]]), torch.empty(2, 0, dtype=torch.int64)):
        for K in (2, 4, 9):
            cpu = _fps_op(pts, None, K, seeds)
            cuda = _fps_op(pts.cuda(), None, K, seeds.cuda())
            _assert_same(cuda, cpu)


def test_fps_cuda_ties_and_duplicates():
    pts = grid_cloud(2, 300, 3, side=3, dtype=torch.float64)  # 27 distinct positions
    cpu = _fps_op(pts, None, 60, torch.zeros(2, 1, dtype=torch.int64))
    cuda = _fps_op(pts.cuda(), None, 60, torch.zeros(2, 1, dtype=torch.int64, device="cuda"))
    _assert_same(cuda, cpu)


@pytest.mark.parametrize("P", [3000, 30_000, 90_000])
def test_fps_cuda_large_clouds(P):
    # 3000: points and min-distances in shared memory; 30000: min-distances only; 90000: global
    # scratch (more than any GPU's shared memory per block).
    pts = torch.rand(2, P, 3)
    lengths = torch.tensor([P, P // 2 + 1])
    seeds = torch.tensor([[-1, 17], [-1, -1]])
    cpu = _fps_op(pts, lengths, 64, seeds)
    cuda = _fps_op(*_cuda(pts, lengths), 64, seeds.cuda())
    _assert_same(cuda, cpu)


# The multi-block path (one cloud over many blocks, cooperative launch): planned for clouds of
# >= 16384 points when the clouds are at most half the SM count.
@pytest.mark.parametrize("B,P,D,K", [
    (1, 200_000, 3, 300),     # every block's points and distances in shared memory
    (1, 2_000_000, 3, 40),    # distances only in shared memory
    (1, 8_000_000, 3, 6),     # distances in global memory
    (3, 40_000, 5, 200),      # generic D, ragged, seeded
])
def test_fps_cuda_multi_block_equals_cpu(B, P, D, K):
    pts = torch.rand(B, P, D)
    lengths = torch.tensor([P, P // 3 + 7, 20_000][:B])
    seeds = torch.tensor([[-1, 17], [5, -1], [-1, -1]][:B])
    cpu = _fps_op(pts, lengths, K, seeds)
    cuda = _fps_op(*_cuda(pts, lengths), K, seeds.cuda())
    _assert_same(cuda, cpu)


def test_fps_cuda_multi_block_ties_and_forced_single_block(monkeypatch):
    pts = grid_cloud(1, 50_000, 3, side=3, dtype=torch.float32)  # ties across the blocks
    seeds = torch.zeros(1, 1, dtype=torch.int64)
    cpu = _fps_op(pts, None, 27, seeds)
    multi = _fps_op(pts.cuda(), None, 27, seeds.cuda())
    monkeypatch.setenv("FASTVISION_FPS_SINGLE_BLOCK", "1")
    single = _fps_op(pts.cuda(), None, 27, seeds.cuda())
    _assert_same(multi, cpu)
    _assert_same(single, cpu)


def test_fps_cuda_multi_block_graph_capture():
    pts = torch.rand(1, 60_000, 3, device="cuda")
    seeds = torch.tensor([[-1]], device="cuda")
    lengths = torch.tensor([60_000], device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        _fps_op(pts, lengths, 64, seeds)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _fps_op(pts, lengths, 64, seeds)
    pts.copy_(torch.rand_like(pts))
    graph.replay()
    torch.cuda.synchronize()
    for x, y in zip(captured, _fps_op(pts, lengths, 64, seeds)):
        assert torch.equal(x, y)


def test_fps_cuda_wrapper_and_non_contiguous():
    pts = torch.rand(3, 3, 500).transpose(1, 2)  # (3, 500, 3) non-contiguous
    idx_c, md_c = farthest_point_sample(pts, 16, start=4, return_min_dists=True)
    idx_g, md_g = farthest_point_sample(pts.cuda(), 16, start=4, return_min_dists=True)
    assert torch.equal(idx_g.cpu(), idx_c) and torch.equal(md_g.cpu(), md_c)


# ------------------------------------------------------------------------------------------------
# torch.compile and CUDA graphs


def test_knn_cuda_torch_compile_fullgraph():
    p1, p2 = torch.rand(2, 64, 3, device="cuda"), torch.rand(2, 80, 3, device="cuda")
    l2 = torch.tensor([80, 40], device="cuda")

    def f(a, b, lengths2):
        d, i = knn_points(a, b, 4, None, lengths2)
        return d, i

    compiled = torch.compile(f, fullgraph=True)
    for x, y in zip(compiled(p1, p2, l2), f(p1, p2, l2)):
        assert torch.equal(x, y)


def test_point_ops_cuda_graph_capture():
    p1 = torch.rand(2, 64, 3, device="cuda")
    p2 = torch.rand(2, 5000, 3, device="cuda")
    l2 = torch.tensor([5000, 1234], device="cuda")
    seeds = torch.tensor([[3], [-1]], device="cuda")

    def run():
        knn = knn_points(p1, p2, 8, None, l2)
        nn = nn_distance(p1, p2, None, l2)
        fps = _fps_op(p2, l2, 32, seeds)
        few = knn_points(p1[:1, :4], p2[:1], 3)  # the split path (scratch + merge) under capture
        return knn + tuple(nn) + fps + few

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run()
    # New inputs in place, replay, compare with eager.
    p1.copy_(torch.rand_like(p1))
    p2.copy_(torch.rand_like(p2))
    graph.replay()
    torch.cuda.synchronize()
    for x, y in zip(captured, run()):
        assert torch.equal(x, y)
