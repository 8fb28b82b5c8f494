"""ONNX translations of the fastvision ops, for the dynamo ONNX exporter.

Each op is an onnxscript function in the ``fastvision`` domain whose body is standard ONNX
(opset 18), so an exported file runs on a stock onnxruntime with no custom kernel (the exporter
inlines the function bodies into the graph). They compute what the kernels compute, in the same
arithmetic where it decides a result (distances as ``sum((a - b) ** 2)``, ties to the lower index:
ONNX ``TopK``, ``ArgMin`` and ``ArgMax`` return the first of equal values), not the kernels' speed:

* ``knn_points``: all pairwise distances + ``TopK`` (``lengths`` masked to ``+inf`` / ``-1``).
* ``nn_distance``: all pairwise distances + ``ReduceMin`` / ``ArgMin`` both ways.
* ``farthest_point_sample``: an ONNX ``Loop`` over the K picks (script function
  ``farthest_point_loop``), seeds compacted first; ``lengths`` exclude points past a cloud's end.
* ``soft_project``: the kNN above, ``GatherElements`` of the neighbours, softmax, weighted sums.
* ``padnet_encoder``: the folded encoder as ONNX ``Conv`` / ``HardSwish`` / ``HardSigmoid`` nodes on
  slices of the packed parameter tensor (the layout of ``fastvision.ops.padnet``).
* ``patch_conv2d``: pad + im2col by strided ``Slice``s + each output pixel's kernel gathered from
  its patch cell + ``MatMul`` (ragged patch grids included).
* ``patch_inverted_residual``: per kernel tap, the input shifted by the tap and expanded with the
  kernels of the output pixel's cell (HyperSeg expands halo pixels with the reading patch's
  weights), BN + ReLU6, multiplied by the tap's depthwise weight and summed; then project + BN.
  ``k * k`` expansions instead of one: correct for every grid, not fast.

The translations are registered for the exporter by :func:`translation_table`.
"""


from typing import Optional, Sequence, Tuple, TypeVar, Union

try:
    import onnxscript
    from onnxscript import DOUBLE, FLOAT, FLOAT16, INT64
    from onnxscript import opset18 as op
except ImportError as err:  # the optional 'deploy' extra
    raise ImportError("the ONNX translations need the 'deploy' extra (onnx, onnxscript, "
                      "onnxruntime): pip install 'fastvision[deploy]'") from err

__all__ = ["FASTVISION_DOMAIN", "translation_table"]

FASTVISION_DOMAIN = onnxscript.values.Opset(domain="fastvision", version=1)

TReal = TypeVar("TReal", bound=Union[FLOAT, DOUBLE, FLOAT16])

_PAD_MODES = {0: "constant", 1: "reflect", 2: "edge"}  # the ops' padding_mode codes
_INT64_MAX = 2**63 - 1


def _ints(*values: int):
    return op.Constant(value_ints=list(values))


def _like(value: float, ref):
    return op.CastLike(op.Constant(value_float=float(value)), ref)


def _dim(x, axis: int):
    return op.Shape(x, start=axis, end=axis + 1)


def _pairwise(p1, p2, norm: int):
    """(B, P1, P2) distances: sum over D of (a - b)^2 (norm 2) or |a - b| (norm 1)."""
    diff = op.Sub(op.Unsqueeze(p1, _ints(2)), op.Unsqueeze(p2, _ints(1)))
    terms = op.Mul(diff, diff) if norm == 2 else op.Abs(diff)
    return op.ReduceSum(terms, _ints(3), keepdims=0)


def _valid(lengths, points):
    """(B, P) bool: index < lengths[b] (P = points' dim 1)."""
    positions = op.Range(op.Constant(value_int=0), op.Squeeze(_dim(points, 1), _ints(0)),
                         op.Constant(value_int=1))
    return op.Less(op.Unsqueeze(positions, _ints(0)), op.Unsqueeze(lengths, _ints(1)))


def knn_points(p1: TReal, p2: TReal, lengths1: Optional[INT64] = None,
               lengths2: Optional[INT64] = None, K: int = 1, norm: int = 2,
               return_sorted: bool = True, method: int = -1) -> tuple[TReal, INT64]:
    d = _pairwise(p1, p2, norm)
    inf = _like(float("inf"), d)
    if lengths2 is not None:
        d = op.Where(op.Unsqueeze(_valid(lengths2, p2), _ints(1)), d, inf)
    if lengths1 is not None:
        d = op.Where(op.Unsqueeze(_valid(lengths1, p1), _ints(2)), d, inf)
    dists, idx = op.TopK(d, _ints(K), axis=2, largest=0, sorted=1)
    idx = op.Where(op.IsInf(dists), op.Constant(value_int=-1), idx)
    return dists, idx


def _nearest(d, axis: int, rows_valid):
    """min / argmin of d along ``axis``; +inf / -1 where nothing is valid, 0 / -1 for invalid
    rows (``rows_valid`` None: every row valid)."""
    dmin = op.ReduceMin(d, _ints(axis), keepdims=0)
    imin = op.ArgMin(d, axis=axis, keepdims=0)
    imin = op.Where(op.IsInf(dmin), op.Constant(value_int=-1), imin)
    if rows_valid is not None:
        dmin = op.Where(rows_valid, dmin, _like(0.0, dmin))
        imin = op.Where(rows_valid, imin, op.Constant(value_int=-1))
    return dmin, imin


def nn_distance(p1: TReal, p2: TReal, lengths1: Optional[INT64] = None,
                lengths2: Optional[INT64] = None, norm: int = 2,
                method: int = -1) -> tuple[TReal, INT64, TReal, INT64]:
    d = _pairwise(p1, p2, norm)
    inf = _like(float("inf"), d)
    valid1 = None if lengths1 is None else _valid(lengths1, p1)
    valid2 = None if lengths2 is None else _valid(lengths2, p2)
    if valid1 is not None:
        d = op.Where(op.Unsqueeze(valid1, _ints(2)), d, inf)
    if valid2 is not None:
        d = op.Where(op.Unsqueeze(valid2, _ints(1)), d, inf)
    d12, i12 = _nearest(d, 2, valid1)
    d21, i21 = _nearest(d, 1, valid2)
    return d12, i12, d21, i21


@onnxscript.script(FASTVISION_DOMAIN, default_opset=op)
def farthest_point_loop(points: TReal, min_dist: TReal, seeds: INT64, num_seeds: INT64,
                        K: int) -> Tuple[INT64, TReal]:
    """K picks: the next compacted seed while any is left, else the first point of largest
    distance to the chosen set; ``min_dist`` starts at +inf (valid points) or -1 (excluded)."""
    batch = op.Shape(points, start=0, end=1)
    dims = op.Shape(points, start=2, end=3)
    last_seed = op.Sub(op.Shape(seeds, start=1, end=2), op.Constant(value_ints=[1]))
    idx = op.ConstantOfShape(op.Concat(batch, op.Constant(value_ints=[0]), axis=0))
    idx = op.Cast(idx, to=7)  # int64
    picked = op.CastLike(op.ConstantOfShape(op.Concat(batch, op.Constant(value_ints=[0]), axis=0)),
                         points)
    for step in range(K):
        farthest = op.ArgMax(min_dist, axis=1, keepdims=1)
        column = op.Expand(op.Reshape(op.Min(step, last_seed), op.Constant(value_ints=[1, 1])),
                           op.Concat(batch, op.Constant(value_ints=[1]), axis=0))
        seed = op.GatherElements(seeds, column, axis=1)
        chosen = op.Where(op.Less(step, num_seeds), seed, farthest)
        picked = op.Concat(picked, op.GatherElements(min_dist, chosen, axis=1), axis=1)
        where = op.Expand(op.Unsqueeze(chosen, [2]), op.Concat(batch, op.Constant(value_ints=[1]), dims, axis=0))
        diff = op.Sub(points, op.GatherElements(points, where, axis=1))
        min_dist = op.Min(min_dist, op.ReduceSum(op.Mul(diff, diff), [2], keepdims=0))
        idx = op.Concat(idx, chosen, axis=1)
    return idx, picked


def farthest_point_sample(points: TReal, lengths: Optional[INT64] = None, K: int = 1,
                          start_idx: INT64 = None, method: int = -1) -> tuple[INT64, TReal]:
    seeds = start_idx
    # Seeds compacted to the front in order (-1 entries skipped): sort by (is -1, position).
    count = op.Squeeze(_dim(seeds, 1), _ints(0))
    positions = op.Unsqueeze(op.Range(op.Constant(value_int=0), count, op.Constant(value_int=1)), _ints(0))
    skipped = op.Less(seeds, op.Constant(value_int=0))
    key = op.Where(skipped, op.Add(positions, count), positions)
    _, order = op.TopK(key, _dim(seeds, 1), axis=1, largest=0, sorted=1)
    compact = op.GatherElements(seeds, order, axis=1)
    num_seeds = op.ReduceSum(op.Cast(op.Not(skipped), to=7), _ints(1), keepdims=1)
    inf = op.Expand(_like(float("inf"), points), op.Shape(points, start=0, end=2))
    start = inf if lengths is None else op.Where(_valid(lengths, points), inf, _like(-1.0, points))
    return farthest_point_loop(points, start, compact, num_seeds, K=K)


def _gather_neighbours(values, idx):
    """values (B, N, C), idx (B, M, k) -> (B, M, k, C)."""
    channels = _dim(values, 2)
    b_m_k = op.Shape(idx)
    flat = op.Reshape(idx, op.Concat(_dim(idx, 0), _ints(-1), _ints(1), axis=0))
    flat = op.Expand(flat, op.Concat(_dim(idx, 0), _ints(1), channels, axis=0))
    gathered = op.GatherElements(values, flat, axis=1)
    return op.Reshape(gathered, op.Concat(b_m_k, channels, axis=0))


def soft_project(query: TReal, points: TReal, temperature: TReal, k: int,
                 features: Optional[TReal] = None, min_sigma: Optional[float] = None,
                 hard: bool = False) -> tuple[TReal, TReal, INT64]:
    _, idx = knn_points(query, points, None, None, k, 2, True, -1)
    grouped = _gather_neighbours(points, idx)  # (B, M, k, 3)
    sigma = op.Mul(temperature, temperature)
    if min_sigma is not None:
        sigma = op.Max(sigma, _like(min_sigma, sigma))
    sigma = op.Reshape(sigma, _ints(-1, 1, 1))  # scalar or (B,)
    diff = op.Sub(grouped, op.Unsqueeze(query, _ints(2)))
    dist = op.Div(op.ReduceSum(op.Mul(diff, diff), _ints(3), keepdims=0), sigma)
    if hard:
        first = op.Equal(op.Range(op.Constant(value_int=0), op.Constant(value_int=k),
                                  op.Constant(value_int=1)), op.Constant(value_int=0))
        weights = op.Expand(op.CastLike(first, dist), op.Shape(dist))
    else:
        weights = op.Softmax(op.Neg(dist), axis=2)
    weights = op.Unsqueeze(weights, _ints(3))
    projected = op.ReduceSum(op.Mul(grouped, weights), _ints(2), keepdims=0)
    if features is None:
        empty = op.Concat(_dim(query, 0), _dim(query, 1), _ints(0), axis=0)
        projected_features = op.CastLike(op.ConstantOfShape(empty), query)
    else:
        projected_features = op.ReduceSum(op.Mul(_gather_neighbours(features, idx), weights),
                                          _ints(2), keepdims=0)
    return projected, projected_features, idx


def padnet_encoder(x: TReal, params: TReal, width: int) -> tuple[TReal, TReal, TReal]:
    import torch

    from fastvision.ops.padnet import padnet_bnecks, padnet_param_count, unpack_padnet_params

    # Where each named parameter sits in the packed vector: unpack a vector of its own positions.
    positions = torch.arange(padnet_param_count(width), dtype=torch.float64)
    offsets = {}
    for name, view in unpack_padnet_params(positions, width).items():
        start = int(view.reshape(-1)[0]) if view.numel() else 0
        offsets[name] = (start, start + view.numel(), tuple(view.shape))

    def conv(t, name, k=1, stride=1, groups=1):
        start, end, shape = offsets[name + ".w"]
        cout = shape[0]
        cin = (shape[1] // (k * k)) if groups == 1 else 1
        w = op.Reshape(op.Slice(params, _ints(start), _ints(end)), _ints(cout, cin, k, k))
        bstart, bend, _ = offsets[name + ".b"]
        b = op.Slice(params, _ints(bstart), _ints(bend))
        pad = k // 2
        return op.Conv(t, w, b, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad, pad, pad, pad], group=groups)

    y = op.HardSwish(conv(x, "stem", 3))
    taps = []
    for i, (k, cin, exp, out, se, nl, s) in enumerate(padnet_bnecks(width)):
        act = op.Relu if nl == "RE" else op.HardSwish
        b = f"blocks.{i}."
        z = act(conv(y, b + "expand"))
        z = act(conv(z, b + "depthwise", k, s, groups=exp))
        z = conv(z, b + "project")
        if se:
            g = op.Relu(conv(op.ReduceMean(z, _ints(2, 3), keepdims=1), b + "se.reduce"))
            # torch's hardsigmoid: relu6(x + 3) / 6 = ONNX HardSigmoid(alpha=1/6, beta=1/2).
            z = op.Mul(z, op.HardSigmoid(conv(g, b + "se.expand"), alpha=1.0 / 6.0, beta=0.5))
        if s == 1:
            z = op.Add(z, conv(y, b + "shortcut") if cin != out else y)
        y = z
        if i in (1, 3, 5):
            taps.append(y)
    return tuple(taps)


def _cells(n_out, cells: int):
    """int64 (n_out,) patch cell of each output coordinate: floor(((o + 1) f - 1) / n_out)."""
    n = op.Squeeze(n_out, _ints(0))
    o = op.Range(op.Constant(value_int=0), n, op.Constant(value_int=1))
    return op.Div(op.Sub(op.Mul(op.Add(o, op.Constant(value_int=1)), op.Constant(value_int=cells)),
                         op.Constant(value_int=1)), n)


def _per_pixel(weight, rows, cols):
    """(B, K, fh, fw) per-cell kernels -> (B, Ho, Wo, K): each output pixel's cell's kernel."""
    w = op.Gather(op.Gather(weight, rows, axis=2), cols, axis=3)
    return op.Transpose(w, perm=[0, 2, 3, 1])


def _pad(x, pads_hw: Sequence[int], mode: int):
    ph, pw = pads_hw
    if ph == 0 and pw == 0:
        return x
    return op.Pad(x, _ints(0, 0, ph, pw, 0, 0, ph, pw), mode=_PAD_MODES[mode])


def _tap(xp, ky: int, kx: int, kernel, stride, dilation):
    """The strided window of padded input xp for tap (ky, kx): (B, C, Ho, Wo)."""
    starts, ends = [], []
    for tap, k, d in ((ky, kernel[0], dilation[0]), (kx, kernel[1], dilation[1])):
        starts.append(tap * d)
        end = tap * d - d * (k - 1)  # relative to the end; 0 means up to the end
        ends.append(end if end < 0 else _INT64_MAX)
    return op.Slice(xp, _ints(*starts), _ints(*ends), _ints(2, 3), _ints(*stride))


def patch_conv2d(x: TReal, weight: TReal, bias: Optional[TReal], kernel_size: Sequence[int],
                 stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                 groups: int, padding_mode: int) -> TReal:
    kh, kw = kernel_size
    xp = _pad(x, padding, padding_mode)
    taps = [_tap(xp, ky, kx, kernel_size, stride, dilation) for ky in range(kh) for kx in range(kw)]
    # cols (B, C, kh*kw, Ho, Wo): channel-major then tap, the kernels' (c, ky, kx) order.
    cols = op.Concat(*[op.Unsqueeze(t, _ints(2)) for t in taps], axis=2)
    ho, wo = _dim(taps[0], 2), _dim(taps[0], 3)
    wpix = _per_pixel(weight, _cells_of(weight, 2, ho), _cells_of(weight, 3, wo))  # (B, Ho, Wo, K)
    batch = _dim(x, 0)
    # (B, Ho, Wo, groups, Cout/g, Cin/g*kh*kw) @ (B, Ho, Wo, groups, Cin/g*kh*kw, 1)
    per_group = op.Div(op.Mul(_dim(x, 1), _ints(kh * kw)), _ints(groups))
    wpix = op.Reshape(wpix, op.Concat(batch, ho, wo, _ints(groups, -1), per_group, axis=0))
    cols = op.Transpose(op.Reshape(cols, op.Concat(batch, _ints(groups, -1), ho, wo, axis=0)),
                        perm=[0, 3, 4, 1, 2])
    out = op.MatMul(wpix, op.Unsqueeze(cols, _ints(5)))  # (B, Ho, Wo, g, Cout/g, 1)
    out = op.Reshape(out, op.Concat(batch, ho, wo, _ints(-1), axis=0))
    if bias is not None:
        out = op.Add(out, bias)
    return op.Transpose(out, perm=[0, 3, 1, 2])


def _cells_of(weight, axis: int, n_out):
    """Cells of n_out output coordinates on the grid of weight's ``axis`` (a static grid size
    when the shape is known, else read from the graph)."""
    grid = weight.shape[axis] if weight.shape is not None else None
    if not isinstance(grid, int):
        raise ValueError("patch ops: the patch grid (weight's last two dims) must be static to export to ONNX")
    return _cells(n_out, grid)


def patch_inverted_residual(x: TReal, weight: TReal, bn1_scale: TReal, bn1_shift: TReal,
                            bn2_scale: TReal, bn2_shift: TReal, bn3_scale: TReal,
                            bn3_shift: TReal, hidden_channels: int, kernel_size: int,
                            padding_mode: int, residual: bool) -> TReal:
    k, r, hid = kernel_size, kernel_size // 2, hidden_channels
    cin = x.shape[1]
    cout = bn3_scale.shape[0]
    if not isinstance(cin, int) or not isinstance(cout, int):
        raise ValueError("patch_inverted_residual: channel counts must be static to export to ONNX")
    n1, n2, n3 = cin * hid, hid * k * k, hid * cout
    batch, height, width = _dim(x, 0), _dim(x, 2), _dim(x, 3)
    wpix = _per_pixel(weight, _cells_of(weight, 2, height), _cells_of(weight, 3, width))  # (B,H,W,K)
    hw = op.Concat(batch, height, width, axis=0)
    w1 = op.Reshape(op.Slice(wpix, _ints(0), _ints(n1), _ints(3)), op.Concat(hw, _ints(hid, cin), axis=0))
    w2 = op.Reshape(op.Slice(wpix, _ints(n1), _ints(n1 + n2), _ints(3)), op.Concat(hw, _ints(hid, k * k), axis=0))
    w3 = op.Reshape(op.Slice(wpix, _ints(n1 + n2), _ints(n1 + n2 + n3), _ints(3)),
                    op.Concat(hw, _ints(cout, hid), axis=0))
    zeros_mode = padding_mode == 0
    xp = _pad(x, (r, r), padding_mode)
    inside = None
    if zeros_mode and r > 0:
        # HyperSeg-style zeros padding is of the hidden map: off-image taps contribute zero.
        ones = op.Expand(_like(1.0, x), op.Concat(_ints(1, 1), height, width, axis=0))
        inside = _pad(ones, (r, r), 0)
    s1, b1 = op.Reshape(bn1_scale, _ints(1, 1, 1, hid)), op.Reshape(bn1_shift, _ints(1, 1, 1, hid))
    depthwise = None
    for ky in range(k):
        for kx in range(k):
            tap = op.Transpose(_tap(xp, ky, kx, (k, k), (1, 1), (1, 1)), perm=[0, 2, 3, 1])  # (B,H,W,C)
            e = op.Squeeze(op.MatMul(w1, op.Unsqueeze(tap, _ints(4))), _ints(4))  # (B,H,W,hid)
            e = op.Clip(op.Add(op.Mul(e, s1), b1), _like(0.0, e), _like(6.0, e))
            if inside is not None:
                mask = op.Transpose(_tap(inside, ky, kx, (k, k), (1, 1), (1, 1)), perm=[0, 2, 3, 1])
                e = op.Mul(e, mask)
            term = op.Mul(e, op.Squeeze(op.Slice(w2, _ints(ky * k + kx), _ints(ky * k + kx + 1), _ints(4)), _ints(4)))
            depthwise = term if depthwise is None else op.Add(depthwise, term)
    s2, b2 = op.Reshape(bn2_scale, _ints(1, 1, 1, hid)), op.Reshape(bn2_shift, _ints(1, 1, 1, hid))
    d = op.Clip(op.Add(op.Mul(depthwise, s2), b2), _like(0.0, depthwise), _like(6.0, depthwise))
    out = op.Squeeze(op.MatMul(w3, op.Unsqueeze(d, _ints(4))), _ints(4))  # (B,H,W,Cout)
    out = op.Add(op.Mul(out, op.Reshape(bn3_scale, _ints(1, 1, 1, cout))),
                 op.Reshape(bn3_shift, _ints(1, 1, 1, cout)))
    out = op.Transpose(out, perm=[0, 3, 1, 2])
    return op.Add(out, x) if residual else out


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(..., dynamo=True)``: every fastvision
    op (the backward ops are training only and are not exported) -> its translation, each an
    onnxscript function of the ``fastvision`` domain."""
    import torch

    import fastvision  # noqa: F401  (registers the ops)

    ops = torch.ops.fastvision
    table = {
        ops.knn_points.default: knn_points,
        ops.nn_distance.default: nn_distance,
        ops.farthest_point_sample.default: farthest_point_sample,
        ops.soft_project.default: soft_project,
        ops.padnet_encoder.default: padnet_encoder,
        ops.patch_conv2d.default: patch_conv2d,
        ops.patch_inverted_residual.default: patch_inverted_residual,
    }
    return {target: onnxscript.values.TracedOnnxFunction(FASTVISION_DOMAIN, fn) for target, fn in table.items()}

