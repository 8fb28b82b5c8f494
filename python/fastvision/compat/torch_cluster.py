"""torch_cluster's ``knn``, ``knn_graph`` and ``fps`` on fastvision's kernels: switch with one
import line.

Replace::

    from torch_cluster import knn, knn_graph, fps

with::

    from fastvision.compat.torch_cluster import knn, knn_graph, fps

Signatures, defaults, return layouts and the ``batch`` / ``ptr`` conventions are those of
torch_cluster 1.6.3 (its ``test_knn.py`` and ``test_fps.py`` pass against this module,
``torch.jit.script`` included; ``tests/test_compat_torch_cluster.py`` repeats their checks). A
ragged batch is turned into padded ``(B, P, F)`` clouds with lengths and handed to
:func:`fastvision.ops.knn_points` / :func:`fastvision.ops.farthest_point_sample` in one call: no
Python loop over the examples. The conventions, in full:

``knn(x, y, k, batch_x=None, batch_y=None, cosine=False, num_workers=1, batch_size=None)``
    For every row of ``y (M, F)`` its ``min(k, n)`` nearest rows of ``x (N, F)`` in the same
    example (``n``: the size of that example in ``x``), by squared Euclidean distance, or by
    cosine distance ``1 - cos`` with ``cosine=True``. 1-D ``x``/``y`` are read as ``F = 1``.
    Returns an int64 ``[2, E]`` edge index: row 0 indexes ``y`` (the query), row 1 indexes ``x``
    (the neighbour). Edges come grouped by query in increasing ``y`` order, and within a query by
    ascending distance, equal distances by increasing ``x`` index. ``batch_x``/``batch_y`` assign
    rows to examples ``0 .. B-1``, must be sorted, and may leave examples empty (those queries get
    no edge). Either may be ``None`` (all rows in example 0) while the other names one example
    only. ``batch_size`` is the number of examples when known. An empty ``x`` or ``y`` gives
    ``[2, 0]``.

``knn_graph(x, k, batch=None, loop=False, flow="source_to_target", cosine=False, num_workers=1,
batch_size=None)``
    ``knn(x, x, k + 1 (k with loop), batch, batch, ...)``, its rows swapped for
    ``flow="source_to_target"`` (row 0 the neighbour/source, row 1 the centre/target;
    ``"target_to_source"`` keeps knn's order), then, without ``loop``, every edge ``i -> i``
    dropped. As in torch_cluster, a point with more than ``k`` copies at lower indices is not
    among its own ``k + 1`` nearest (ties go to the lower index), so it keeps ``k + 1`` edges.

``fps(src, batch=None, ratio=None, random_start=True, batch_size=None, ptr=None)``
    Farthest point sampling per example of ``src (N, ...)`` (flattened to ``(N, F)``): returns
    the int64 indices into ``src`` of ``ceil(n * ratio)`` points of each example of ``n`` points,
    examples in order, each starting with its start point and continuing with the classic greedy
    sequence (the point with the largest squared distance to those chosen, lowest index on ties).
    ``ratio``: ``None`` (0.5), a float or a tensor (0-dim, or one ratio per example), each in
    ``(0, 1]``. The count is rounded as torch_cluster does, which depends on the device: on CPU
    ``ceil(float32(n) * ratio)`` (``ratio`` as a tensor of ``src``'s dtype, so float16 ``src``
    rounds the ratio to float16), on CUDA ``ceil(n * ratio)`` in the ratio's dtype. Examples
    come from ``ptr`` (CSR boundaries, a tensor or a list; example ``b`` is rows
    ``ptr[b] .. ptr[b+1]-1``; it overrides ``batch``), else from a sorted ``batch`` vector (with
    ``batch_size`` examples, or ``batch.max() + 1``), else all of ``src`` is one example. An
    empty example contributes nothing. ``random_start=False`` starts each example at its first
    row; ``random_start=True`` at ``floor(u * n)`` with ``u`` uniform (float64, drawn with
    torch's generator on ``src``'s device: ``torch.manual_seed`` reproduces it).

What differs from torch_cluster (no result that torch_cluster defines changes):

* Limits it has that these do not: ``cosine=True`` works on CPU (torch_cluster's CPU kernel
  raises); ``k`` is unbounded on CUDA (its CUDA kNN caps ``k`` at 100); its CUDA FPS starts the
  distances at 5e4, so all points farther than ~224 from the chosen set look equally far, here
  the sequence is exact; bfloat16 works on CUDA (its CUDA kernels take float16 but not bfloat16).
* Ties: kNN ties go to the lower ``x`` index, as in torch_cluster's CUDA kernel; its CPU k-d tree
  (nanoflann) leaves their order to the tree. float16/bfloat16 distances are computed in float32
  (torch_cluster's CPU computes in float16), so near-ties may order differently. Cosine neighbours
  are ranked by ``|u - v|^2 = 2 - 2 cos`` of the unit vectors: the same order as ``1 - cos`` up to
  rounding.
* Random starts cannot repeat torch_cluster's: its CPU kernel uses C's ``rand() % n`` (not seeded
  by torch), its CUDA kernel ``torch.rand`` in ``src``'s dtype; the draw here is its CUDA draw in
  float64.
* Bad input raises ``ValueError``/``TypeError`` naming the function, the argument and the value
  where torch_cluster fails a bare ``assert``, raises from C++, crashes or silently answers
  something else: batch vectors unsorted, negative, of the wrong length, or holding an example
  index ``>= batch_size`` (torch_cluster's knn drops those rows, or with ``batch_size=1`` ignores
  the batch vectors); one batch vector ``None`` while the other names several examples; ``x`` and
  ``y`` of different widths, dtypes or devices; integer coordinates (its CPU kNN accepts them);
  ``k < 0``; an unknown ``flow``; ``ratio`` outside ``(0, 1]`` (torch_cluster returns repeated,
  misplaced or out-of-example indices); an invalid ``ptr``; NaN or infinite coordinates, and zero
  vectors with ``cosine=True`` (its CUDA kernel silently drops both). Value checks use
  ``torch._assert_async`` or the one host read below. An empty example in ``fps`` yields nothing
  (torch_cluster's CPU kernel still writes a start index for it, into the next example's slot or
  past the end, and divides by zero with ``random_start``).
* ``num_workers`` is accepted and ignored: the CPU kernels use torch's thread pool.
* Outputs are indices, not differentiable here or in torch_cluster; inputs that require grad are
  accepted (the search runs on detached values).

Host synchronisation: ``knn`` without batch vectors: none. With batch vectors: one read of a few
integers (example count, largest example in ``x`` and ``y``, number of edges, validity flags),
needed for the padded shapes and the output size; torch_cluster reads the example count (unless
``batch_size``) and the output size (CUDA). ``knn_graph`` without ``loop``: one more (dropping
self-loops sizes the output, as in torch_cluster). ``fps``: one read (largest example, output
size, validity flags), plus the example count from ``batch`` when ``batch_size`` is not given, as
in torch_cluster. Padding costs ``B x (largest example) x F`` memory.
"""

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor

import fastvision  # noqa: F401  (loads the extension that registers torch.ops.fastvision)

__all__ = ["knn", "knn_graph", "fps"]

# Everything here is TorchScript-compatible (torch_cluster's own tests script knn, knn_graph and a
# caller of fps): annotated helpers, no module-level constants (the ops' method arguments are left
# at their default, -1: let the op pick its CPU algorithm).


def _empty_edges(device: torch.device) -> Tensor:
    return torch.empty((2, 0), dtype=torch.long, device=device)


def _check_floating(t: Tensor, fn: str, name: str) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {t.dtype}")


def _assert_finite(t: Tensor, fn: str, name: str) -> None:
    if t.numel() > 0:
        message = fn + ": " + name + " contains NaN or infinite values"
        torch._assert_async(torch.isfinite(t).all(), message)


def _as_rows(t: Tensor, fn: str, name: str) -> Tensor:
    """torch_cluster's kNN reading of a point matrix: 1-D means one feature per row."""
    if t.dim() == 1:
        t = t.view(-1, 1)
    if t.dim() != 2:
        raise ValueError(f"{fn}: {name} must have shape (N, F) or (N,), got {t.shape}")
    return t


def _unit_rows(t: Tensor, fn: str, name: str) -> Tensor:
    """Rows scaled to unit length (half precision upcast to float32 first): the squared
    Euclidean distance of unit vectors is 2 - 2 cos, so its order is the cosine distance's."""
    t = t.to(torch.promote_types(t.dtype, torch.float32))
    norm = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    message = fn + ": cosine=True needs non-zero vectors, but a row of " + name + " is zero"
    torch._assert_async((norm > 0).all(), message)
    return t / norm


def _check_batch(batch: Tensor, rows: int, device: torch.device, fn: str, name: str) -> Tensor:
    if batch.dim() != 1 or batch.numel() != rows:
        raise ValueError(
            f"{fn}: {name} must be a 1-D vector with one entry per row ({rows}), "
            f"got shape {batch.shape}"
        )
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise TypeError(f"{fn}: {name} must hold integer example indices, got {batch.dtype}")
    if batch.device != device:
        raise ValueError(f"{fn}: {name} is on {batch.device} but the points are on {device}")
    return batch.to(torch.long)


def _is_sorted(v: Tensor) -> Tensor:
    return (v[1:] >= v[:-1]).all()


def _pad(points: Tensor, ptr: Tensor, width: int) -> Tensor:
    """``(B, width, F)`` clouds: row ``j`` of cloud ``b`` is ``points[ptr[b] + j]``. Slots past a
    cloud's length copy some real row (kept in bounds); the kernels ignore them via lengths."""
    slots = ptr[:-1, None] + torch.arange(width, device=points.device)[None, :]
    return points[slots.clamp(max=points.size(0) - 1)]


def _expand_counts(counts: Tensor, total: int) -> Tuple[Tensor, Tensor]:
    """For segments of ``counts[i]`` items, ``total`` of them: each item's segment and its slot in
    it (no host read: ``total`` is known)."""
    segment = torch.repeat_interleave(
        torch.arange(counts.numel(), device=counts.device), counts, dim=0, output_size=total
    )
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(total, device=counts.device) - first[segment]
    return segment, slot


# ---------------------------------------------------------------------------------------------
# k nearest neighbours


def _knn_one_example(x: Tensor, y: Tensor, k: int) -> Tensor:
    found = min(k, x.size(0))
    if found == 0:
        return _empty_edges(x.device)
    _, idx = torch.ops.fastvision.knn_points(y[None], x[None], None, None, found, 2, True)
    query = torch.arange(y.size(0), device=x.device).repeat_interleave(found)
    return torch.stack([query, idx.reshape(-1)], dim=0)


def _knn_batched(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Optional[Tensor],
    batch_y: Optional[Tensor],
    batch_size: Optional[int],
    fn: str,
) -> Tensor:
    device = x.device
    bx = torch.zeros(x.size(0), dtype=torch.long, device=device)
    by = torch.zeros(y.size(0), dtype=torch.long, device=device)
    if batch_x is not None:
        bx = _check_batch(batch_x, x.size(0), device, fn, "batch_x")
    if batch_y is not None:
        by = _check_batch(batch_y, y.size(0), device, fn, "batch_y")

    # Everything the shapes need, computed per row without knowing the example count (searchsorted
    # on the sorted vectors; garbage but in bounds when unsorted, which the read below reports).
    x_rank = torch.arange(x.size(0), device=device) - torch.searchsorted(bx, bx)
    y_rank = torch.arange(y.size(0), device=device) - torch.searchsorted(by, by)
    first_candidate = torch.searchsorted(bx, by)
    candidates = torch.searchsorted(bx, by, right=True) - first_candidate
    edges_per_query = candidates.clamp(max=k)
    stats: List[int] = torch.stack(
        [
            torch.maximum(bx.max(), by.max()) + 1,
            torch.minimum(bx.min(), by.min()),
            x_rank.max() + 1,
            y_rank.max() + 1,
            edges_per_query.sum(),
            _is_sorted(bx).long(),
            _is_sorted(by).long(),
        ]
    ).tolist()
    examples, lowest, width_x, width_y, num_edges = stats[0], stats[1], stats[2], stats[3], stats[4]
    x_sorted, y_sorted = stats[5], stats[6]
    if lowest < 0:
        raise ValueError(f"{fn}: batch vectors must hold example indices >= 0, got {lowest}")
    if x_sorted == 0:
        raise ValueError(f"{fn}: batch_x must be sorted")
    if y_sorted == 0:
        raise ValueError(f"{fn}: batch_y must be sorted")
    if batch_size is not None and examples > batch_size:
        raise ValueError(
            f"{fn}: batch_size = {batch_size}, but the batch vectors hold example index "
            f"{examples - 1}"
        )
    if examples > 1 and (batch_x is None or batch_y is None):
        given = "batch_y" if batch_x is None else "batch_x"
        missing = "batch_x" if batch_x is None else "batch_y"
        raise ValueError(
            f"{fn}: {missing} is None but {given} holds {examples} examples; pass both"
        )
    if num_edges == 0:
        return _empty_edges(device)

    bounds = torch.arange(examples + 1, device=device)
    ptr_x = torch.searchsorted(bx, bounds)
    ptr_y = torch.searchsorted(by, bounds)
    _, idx = torch.ops.fastvision.knn_points(
        _pad(y, ptr_y, width_y),
        _pad(x, ptr_x, width_x),
        ptr_y[1:] - ptr_y[:-1],
        ptr_x[1:] - ptr_x[:-1],
        min(k, width_x),
        2,
        True,
    )
    # A query's valid neighbours fill the first slots of its row (the rest is -1 padding).
    query, slot = _expand_counts(edges_per_query, num_edges)
    neighbour = idx[by[query], y_rank[query], slot] + first_candidate[query]
    return torch.stack([query, neighbour], dim=0)


def _knn(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Optional[Tensor],
    batch_y: Optional[Tensor],
    cosine: bool,
    batch_size: Optional[int],
    fn: str,
) -> Tensor:
    if k < 0:
        raise ValueError(f"{fn}: k must be non-negative, got {k}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be at least 1, got {batch_size}")
    if x.numel() == 0 or y.numel() == 0:
        return _empty_edges(x.device)
    x = _as_rows(x, fn, "x").detach()
    y = _as_rows(y, fn, "y").detach()
    _check_floating(x, fn, "x")
    if y.dtype != x.dtype:
        raise TypeError(f"{fn}: x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if y.device != x.device:
        raise ValueError(f"{fn}: x is on {x.device} but y is on {y.device}")
    if y.size(1) != x.size(1):
        raise ValueError(
            f"{fn}: x and y must have the same number of features, got {x.size(1)} and {y.size(1)}"
        )
    _assert_finite(x, fn, "x")
    _assert_finite(y, fn, "y")
    if cosine:
        x = _unit_rows(x, fn, "x")
        y = _unit_rows(y, fn, "y")
    x = x.contiguous()
    y = y.contiguous()
    if batch_x is None and batch_y is None:
        if batch_size is not None and batch_size > 1:
            raise ValueError(f"{fn}: batch_size = {batch_size} needs batch vectors, got none")
        return _knn_one_example(x, y, k)
    return _knn_batched(x, y, k, batch_x, batch_y, batch_size, fn)


def knn(
    x: Tensor,
    y: Tensor,
    k: int,
    batch_x: Optional[Tensor] = None,
    batch_y: Optional[Tensor] = None,
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: Optional[int] = None,
) -> Tensor:
    """torch_cluster's ``knn``: for each row of ``y`` its ``k`` nearest rows of ``x``.

    Args:
        x: ``(N, F)`` (or ``(N,)``) points searched.
        y: ``(M, F)`` (or ``(M,)``) queries, same dtype and device.
        k: neighbours per query (fewer where an example of ``x`` has fewer rows).
        batch_x, batch_y: optional sorted int vectors assigning rows to examples.
        cosine: rank by cosine distance instead of Euclidean distance.
        num_workers: accepted and ignored.
        batch_size: the number of examples, if known.

    Returns:
        int64 ``[2, E]``: row 0 the query index into ``y``, row 1 the neighbour index into ``x``,
        grouped by query, nearest first (see the module docstring).
    """
    return _knn(x, y, k, batch_x, batch_y, cosine, batch_size, "knn")


def knn_graph(
    x: Tensor,
    k: int,
    batch: Optional[Tensor] = None,
    loop: bool = False,
    flow: str = "source_to_target",
    cosine: bool = False,
    num_workers: int = 1,
    batch_size: Optional[int] = None,
) -> Tensor:
    """torch_cluster's ``knn_graph``: edges from each point's ``k`` nearest points.

    Args:
        x: ``(N, F)`` (or ``(N,)``) points.
        k: neighbours per point (self excluded unless ``loop``).
        batch: optional sorted int vector assigning rows to examples.
        loop: keep self-loops (the point itself counts among its ``k``).
        flow: ``"source_to_target"`` (row 0 the neighbour, row 1 the centre) or
            ``"target_to_source"`` (row 0 the centre).
        cosine: rank by cosine distance instead of Euclidean distance.
        num_workers: accepted and ignored.
        batch_size: the number of examples, if known.

    Returns:
        int64 ``[2, E]`` edge index (see the module docstring).
    """
    fn = "knn_graph"
    if flow != "source_to_target" and flow != "target_to_source":
        raise ValueError(
            f"{fn}: flow must be 'source_to_target' or 'target_to_source', got '{flow}'"
        )
    if k < 0:
        raise ValueError(f"{fn}: k must be non-negative, got {k}")
    edge_index = _knn(x, x, k if loop else k + 1, batch, batch, cosine, batch_size, fn)
    if flow == "source_to_target":
        row, col = edge_index[1], edge_index[0]
    else:
        row, col = edge_index[0], edge_index[1]
    if not loop:
        keep = row != col
        row, col = row[keep], col[keep]
    return torch.stack([row, col], dim=0)


# ---------------------------------------------------------------------------------------------
# Farthest point sampling


def _ratio_tensor(ratio: Optional[Union[Tensor, float]], src: Tensor, fn: str) -> Tensor:
    if ratio is None:
        return torch.tensor(0.5, dtype=src.dtype, device=src.device)
    if isinstance(ratio, Tensor):
        if not ratio.is_floating_point() or ratio.dim() > 1:
            raise ValueError(
                f"{fn}: a ratio tensor must be floating-point, 0-dim or 1-D, got {ratio.dtype} "
                f"of shape {ratio.shape}"
            )
        return ratio.to(src.device)
    value = float(ratio)
    if not (value > 0.0 and value <= 1.0):
        raise ValueError(f"{fn}: ratio must lie in (0, 1], got {value}")
    return torch.tensor(value, dtype=src.dtype, device=src.device)


def _ptr_tensor(ptr: Union[Tensor, List[int]], device: torch.device, fn: str) -> Tensor:
    if isinstance(ptr, Tensor):
        if ptr.is_floating_point() or ptr.is_complex() or ptr.dtype == torch.bool:
            raise TypeError(f"{fn}: ptr must hold integer row offsets, got {ptr.dtype}")
        if ptr.device != device:
            raise ValueError(f"{fn}: ptr is on {ptr.device} but src is on {device}")
        p = ptr.to(torch.long)
    else:
        p = torch.tensor(ptr, dtype=torch.long, device=device)
    if p.dim() != 1 or p.numel() < 2:
        raise ValueError(
            f"{fn}: ptr must be 1-D with at least 2 entries (B + 1 boundaries), got shape {p.shape}"
        )
    return p


def fps(
    src: Tensor,
    batch: Optional[Tensor] = None,
    ratio: Optional[Union[Tensor, float]] = None,
    random_start: bool = True,
    batch_size: Optional[int] = None,
    ptr: Optional[Union[Tensor, List[int]]] = None,
) -> Tensor:
    """torch_cluster's ``fps``: farthest point sampling of ``ceil(n * ratio)`` points per example.

    Args:
        src: ``(N, ...)`` points (flattened to ``(N, F)``).
        batch: optional sorted int vector assigning rows to examples.
        ratio: ``None`` (0.5), a float, or a 0-dim / per-example tensor, in ``(0, 1]``.
        random_start: start each example at a random row instead of its first.
        batch_size: the number of examples of ``batch``, if known.
        ptr: optional CSR boundaries (tensor or list), used instead of ``batch``.

    Returns:
        int64 ``(S,)`` indices into ``src``, example after example, each in sampling order.
    """
    fn = "fps"
    if src.dim() < 1:
        raise ValueError(f"{fn}: src must have shape (N, ...), got a 0-dim tensor")
    _check_floating(src, fn, "src")
    points = src.detach().view(-1, 1) if src.dim() == 1 else src.detach().flatten(1)
    points = points.contiguous()
    n = points.size(0)
    if n > 0 and points.size(1) == 0:
        raise ValueError(
            f"{fn}: src must have at least one feature per row, got shape {src.shape}"
        )
    _assert_finite(points, fn, "src")
    r = _ratio_tensor(ratio, src, fn)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"{fn}: batch_size must be at least 1, got {batch_size}")
    device = points.device

    # The layout vector (ptr or batch) and whether it is valid, read back with the sizes.
    layout = torch.zeros(0, dtype=torch.long, device=device)
    layout_ok = torch.ones((), dtype=torch.bool, device=device)
    if ptr is not None:
        bounds = _ptr_tensor(ptr, device, fn)
        layout = bounds
        layout_ok = (bounds[0] >= 0) & _is_sorted(bounds) & (bounds[-1] <= n)
    elif batch is not None:
        layout = _check_batch(batch, n, device, fn, "batch")
        if n == 0:
            return torch.empty(0, dtype=torch.long, device=device)
        examples = batch_size if batch_size is not None else int(layout.max()) + 1
        if examples < 1:
            raise ValueError(
                f"{fn}: batch must hold example indices >= 0, got {int(layout.max())}"
            )
        bounds = torch.searchsorted(layout, torch.arange(examples + 1, device=device))
        layout_ok = (layout.min() >= 0) & _is_sorted(layout) & (layout.max() < examples)
    else:
        bounds = torch.tensor([0, n], dtype=torch.long, device=device)
    num_examples = bounds.numel() - 1
    if r.numel() != 1 and r.numel() != num_examples:
        raise ValueError(
            f"{fn}: ratio must hold one value or one per example ({num_examples}), "
            f"got shape {r.shape}"
        )

    sizes = bounds[1:] - bounds[:-1]
    # torch_cluster's rounding: float32 counts on CPU, the ratio's dtype on CUDA. A float32 size
    # above 2**24 can round up past the example, hence the minimum.
    sizes_as_float = sizes.to(r.dtype) if device.type == "cuda" else sizes.to(torch.float32)
    counts = torch.minimum(torch.ceil(sizes_as_float * r).long(), sizes)
    ratio_ok = ((r > 0) & (r <= 1)).all()
    stats: List[int] = torch.stack(
        [sizes.max(), counts.max(), counts.sum(), layout_ok.long(), ratio_ok.long()]
    ).tolist()
    width, most_samples, total = stats[0], stats[1], stats[2]
    if stats[3] == 0:
        low, high = int(layout.min()), int(layout.max())
        if ptr is not None:
            raise ValueError(
                f"{fn}: ptr must be non-decreasing offsets in [0, {n}], "
                f"got values from {low} to {high}"
            )
        raise ValueError(
            f"{fn}: batch must be sorted example indices in [0, {num_examples}), "
            f"got values from {low} to {high}"
        )
    if stats[4] == 0:
        raise ValueError(
            f"{fn}: ratio must lie in (0, 1], got values from {float(r.min())} to {float(r.max())}"
        )
    if total == 0:
        return torch.empty(0, dtype=torch.long, device=device)

    if random_start:
        u = torch.rand(num_examples, dtype=torch.float64, device=device)
        start = torch.minimum((u * sizes).long(), sizes - 1)
    else:
        start = torch.zeros(num_examples, dtype=torch.long, device=device)
    seeds = torch.where(sizes > 0, start, -1)[:, None]  # an empty example has no start
    idx, _ = torch.ops.fastvision.farthest_point_sample(
        _pad(points, bounds, width), sizes, most_samples, seeds
    )
    example, slot = _expand_counts(counts, total)
    return idx[example, slot] + bounds[example]
