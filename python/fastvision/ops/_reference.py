"""Pure-PyTorch oracles of every fastvision op: the semantics in executable form, the test oracle
and a fallback. They favour clarity over speed (dense distance matrices, Python loops).

Distances are computed directly as ``sum((a - b) ** 2)`` (or ``|a - b|``) in the input dtype (float32
for half inputs, as the kernels do); ties go to the lower index.
"""

from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _full_lengths(lengths, B, P, device):
    if lengths is None:
        return torch.full((B,), P, dtype=torch.int64, device=device)
    return lengths


def pairwise_distances(p1: torch.Tensor, p2: torch.Tensor, norm: int = 2) -> torch.Tensor:
    """``(B, P1, D), (B, P2, D) -> (B, P1, P2)``, accumulated coordinate by coordinate."""
    ct = _compute_dtype(p1)
    a, b = p1.to(ct), p2.to(ct)
    out = None
    for d in range(a.shape[2]):
        diff = a[:, :, None, d] - b[:, None, :, d]
        term = diff * diff if norm == 2 else diff.abs()
        out = term if out is None else out + term
    return out


def knn_points(p1, p2, K, lengths1=None, lengths2=None, norm=2):
    """Reference of :func:`fastvision.ops.knn_points`: ``(dists, idx)``."""
    B, P1, P2 = p1.shape[0], p1.shape[1], p2.shape[1]
    l1 = _full_lengths(lengths1, B, P1, p1.device)
    l2 = _full_lengths(lengths2, B, P2, p1.device)
    d = pairwise_distances(p1, p2, norm)
    inf = torch.tensor(float("inf"), dtype=d.dtype, device=d.device)
    invalid_col = torch.arange(P2, device=d.device)[None, None, :] >= l2[:, None, None]
    d = torch.where(invalid_col, inf, d)
    sd, si = torch.sort(d, dim=2, stable=True)
    sd, si = sd[:, :, :K], si[:, :, :K]
    invalid_row = torch.arange(P1, device=d.device)[None, :, None] >= l1[:, None, None]
    missing = torch.isinf(sd) | invalid_row
    sd = torch.where(missing, inf, sd)
    si = torch.where(missing, torch.full_like(si, -1), si)
    return sd.to(p1.dtype), si


def knn_gather(x, idx):
    """Reference of :func:`fastvision.ops.knn_gather` (loops; -1 gathers zeros)."""
    B, P, K = idx.shape
    out = x.new_zeros(B, P, K, x.shape[2])
    for b in range(B):
        for p in range(P):
            for k in range(K):
                j = int(idx[b, p, k])
                if j >= 0:
                    out[b, p, k] = x[b, j]
    return out


def nn_distance(p1, p2, lengths1=None, lengths2=None, norm=2):
    """Reference of :func:`fastvision.ops.nn_distance`: ``(d12, i12, d21, i21)``."""
    B, P1, P2 = p1.shape[0], p1.shape[1], p2.shape[1]
    l1 = _full_lengths(lengths1, B, P1, p1.device)
    l2 = _full_lengths(lengths2, B, P2, p1.device)

    def one_way(a, b, la, lb):
        if b.shape[1] == 0:
            d = torch.full(a.shape[:2], float("inf"), dtype=a.dtype, device=a.device)
            i = torch.full(a.shape[:2], -1, dtype=torch.int64, device=a.device)
        else:
            d, i = knn_points(a, b, 1, la, lb, norm)
            d, i = d[:, :, 0], i[:, :, 0]
        pad = torch.arange(a.shape[1], device=a.device)[None, :] >= la[:, None]
        return d.masked_fill(pad, 0), i.masked_fill(pad, -1)

    d12, i12 = one_way(p1, p2, l1, l2)
    d21, i21 = one_way(p2, p1, l2, l1)
    return d12, i12, d21, i21


def chamfer_distance(p1, p2, lengths1=None, lengths2=None, norm=2):
    """Per-cloud Chamfer distance ``(B,)``: mean of both nearest-neighbour directions."""
    d12, _, d21, _ = nn_distance(p1, p2, lengths1, lengths2, norm)
    B = p1.shape[0]
    l1 = _full_lengths(lengths1, B, p1.shape[1], p1.device).clamp(min=1)
    l2 = _full_lengths(lengths2, B, p2.shape[1], p1.device).clamp(min=1)
    return d12.sum(1) / l1.to(d12.dtype) + d21.sum(1) / l2.to(d21.dtype)


def farthest_point_sample(points, K, lengths=None, start_idx=None):
    """Reference of :func:`fastvision.ops.farthest_point_sample`: ``(idx, min_dists)``.

    ``start_idx`` is ``(B, S)`` (``-1`` skipped) or None (start at index 0).
    """
    B, P = points.shape[:2]
    ct = _compute_dtype(points)
    pts = points.to(ct)
    lens = _full_lengths(lengths, B, P, points.device)
    idx = torch.full((B, K), -1, dtype=torch.int64)
    md = torch.zeros((B, K), dtype=ct)
    for b in range(B):
        n = int(lens[b])
        if n == 0 or K == 0:
            continue
        cloud = pts[b, :n]
        mind = torch.full((n,), float("inf"), dtype=ct)
        chosen = []
        seeds = [] if start_idx is None else [int(s) for s in start_idx[b] if int(s) >= 0]
        for s in seeds[:K]:
            chosen.append((s, mind[s].item()))
            mind = torch.minimum(mind, pairwise_distances(cloud[None, s : s + 1], cloud[None])[0, 0])
        if not chosen:
            chosen.append((0, float("inf")))
            mind = torch.minimum(mind, pairwise_distances(cloud[None, 0:1], cloud[None])[0, 0])
        while len(chosen) < min(K, max(n, len(chosen))):
            j = int(torch.argmax(mind))  # first maximal index
            chosen.append((j, mind[j].item()))
            mind = torch.minimum(mind, pairwise_distances(cloud[None, j : j + 1], cloud[None])[0, 0])
        for k, (j, d) in enumerate(chosen):
            idx[b, k] = j
            md[b, k] = d
    return idx.to(points.device), md.to(points.dtype).to(points.device)


def sampling_loss_terms(generated, points, lengths_g=None, lengths_p=None):
    """S-NET sampling-loss terms per cloud (eqs. 2-4): ``(L_f, L_m, L_b)``, each ``(B,)``."""
    d12, _, d21, _ = nn_distance(generated, points, lengths_g, lengths_p)
    B = generated.shape[0]
    lg = _full_lengths(lengths_g, B, generated.shape[1], generated.device).clamp(min=1)
    lp = _full_lengths(lengths_p, B, points.shape[1], points.device).clamp(min=1)
    return d12.sum(1) / lg.to(d12.dtype), d12.max(dim=1).values, d21.sum(1) / lp.to(d21.dtype)


def nn_match(generated, points, num_out, complete="fps"):
    """Reference of :func:`fastvision.ops.nn_match`: the official per-cloud procedure, in float64
    (nearest point, order-preserving unique, FPS seeded with the matched set)."""
    B = generated.shape[0]
    out = torch.empty(B, num_out, dtype=torch.int64)
    d = pairwise_distances(generated.float(), points.float())
    nearest = [[int(torch.argmin(row)) for row in d[b]] for b in range(B)]
    for b in range(B):
        if complete is None:
            out[b] = torch.tensor(nearest[b][:num_out])
            continue
        unique = list(dict.fromkeys(nearest[b]))[:num_out]
        pts = points[b].double()
        chosen = list(unique)
        dist = torch.full((pts.shape[0],), float("inf"), dtype=torch.float64)
        for j in chosen:
            dist = torch.minimum(dist, ((pts - pts[j]) ** 2).sum(dim=1))
        while len(chosen) < num_out:
            j = int(torch.argmax(dist))
            chosen.append(j)
            dist = torch.minimum(dist, ((pts - pts[j]) ** 2).sum(dim=1))
        out[b] = torch.tensor(chosen)
    return out.to(points.device)


def soft_project(query, points, temperature, k, features=None, min_sigma=None, hard=False):
    """Reference of :func:`fastvision.ops.soft_project` (``"bnc"`` layout): the official SampleNet
    ``SoftProjection`` formulation. Returns ``projected (B, M, 3)`` or, with features ``(B, N, F)``,
    ``(projected, projected_features)``.

    Gather the k nearest points (by ``knn_points``), distances as the sum of squares of
    ``grouped - query`` divided by ``sigma = max(t**2, min_sigma)`` (``t**2`` without a clamp),
    softmax of the negated distances over the k neighbours, weighted sum. Differentiable with
    respect to every tensor input by plain autograd (the neighbour selection is not).
    """
    B, M = query.shape[:2]
    _, idx = knn_points(query.detach(), points.detach(), k)
    batch = torch.arange(B, device=query.device)[:, None, None]
    grouped = points[batch, idx]  # (B, M, k, 3)
    t = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(temperature)
    sigma = t**2
    if min_sigma is not None:
        sigma = torch.max(sigma, torch.tensor(min_sigma, dtype=sigma.dtype, device=sigma.device))
    if sigma.dim() == 1:
        sigma = sigma[:, None, None]
    deltas = grouped - query.unsqueeze(2).expand_as(grouped)
    dist = torch.sum(deltas**2, dim=3) / sigma  # (B, M, k)
    weights = torch.softmax(-dist, dim=2)
    if hard:
        weights = torch.nn.functional.one_hot(weights.new_zeros(B, M, dtype=torch.int64), k).to(weights.dtype)
    projected = torch.sum(grouped * weights.unsqueeze(3), dim=2)
    if features is None:
        return projected
    grouped_features = features[batch, idx]  # (B, M, k, F)
    return projected, torch.sum(grouped_features * weights.unsqueeze(3), dim=2)


def padnet_encoder(x, params, width):
    """Reference of :func:`fastvision.ops.padnet_encoder`: the folded arithmetic with
    ``torch.nn.functional`` (convs with the folded biases, activations, SE on the block output,
    residuals), on the packed parameters unpacked by name. Returns the three taps."""
    import torch.nn.functional as F

    from fastvision.ops.padnet import padnet_bnecks, unpack_padnet_params

    p = unpack_padnet_params(params, width)

    def conv(t, name, k=1, stride=1, groups=1):
        w = p[name + ".w"]
        w = w.reshape(w.shape[0], w.shape[1] // (k * k) if groups == 1 else 1, k, k)
        return F.conv2d(t, w, p[name + ".b"], stride, k // 2, groups=groups)

    y = F.hardswish(conv(x, "stem", 3))
    taps = []
    for i, (k, cin, exp, out, se, nl, s) in enumerate(padnet_bnecks(width)):
        act = F.relu if nl == "RE" else F.hardswish
        b = f"blocks.{i}."
        z = act(conv(y, b + "expand"))
        z = act(conv(z, b + "depthwise", k, s, groups=exp))
        z = conv(z, b + "project")
        if se:
            g = F.relu(conv(z.mean((2, 3), keepdim=True), b + "se.reduce"))
            z = z * F.hardsigmoid(conv(g, b + "se.expand"))
        if s == 1:
            z = z + (conv(y, b + "shortcut") if cin != out else y)
        y = z
        if i in (1, 3, 5):
            taps.append(y)
    return tuple(taps)


def padnet_decoder(fine, middle, deep, params, channels, chain_stages, head_kernel):
    """Reference of :func:`fastvision.ops.padnet_decoder`: the decoder's arithmetic with
    ``torch.nn.functional`` on the packed parameters unpacked by name (max-pool 5x5, depthwise and
    pointwise convs, bilinear upsampling, concat, 3x3 conv, ReLU6, head). Returns the logits."""
    import torch.nn.functional as F

    from fastvision.ops.padnet import unpack_padnet_decoder

    p = unpack_padnet_decoder(params, channels, (fine.shape[1], middle.shape[1], deep.shape[1]),
                              chain_stages, head_kernel)

    def chain(x, i):
        top = x
        for s in range(chain_stages):
            top = F.max_pool2d(top, 5, 1, 2)
            top = F.conv2d(top, p[f"chain{i}.{s}.dw"], padding=1, groups=channels)
            top = F.conv2d(top, p[f"chain{i}.{s}.pw"])
            x = x + top
        return x

    def fusion(coarse, tap, i):
        up = F.conv2d(coarse, p[f"fusion{i}.coarse"])
        if up.shape[-2:] != tap.shape[-2:]:
            up = F.interpolate(up, size=tap.shape[-2:], mode="bilinear", align_corners=False)
        merged = torch.cat([up, F.conv2d(tap, p[f"fusion{i}.fine"])], dim=1)
        return F.relu6(F.conv2d(merged, p[f"fusion{i}.merge"], padding=1))

    c1 = chain(F.conv2d(deep, p["project"]), 1)
    c2 = chain(fusion(c1, middle, 1), 2)
    c3 = chain(fusion(c2, fine, 2), 3)
    return F.conv2d(c3, p["head.w"], p["head.b"], padding=head_kernel // 2)


# --- HyperSeg's patch-wise dynamic convolutions -------------------------------------------------

_TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


def patch_cells(n_out: int, f: int, device=None) -> torch.Tensor:
    """The patch cell of each of ``n_out`` output coordinates split into ``f`` cells (cell ``i``
    covers ``[floor(i n / f), floor((i + 1) n / f))``)."""
    o = torch.arange(n_out, device=device)
    return torch.div((o + 1) * f - 1, n_out, rounding_mode="floor")


def patch_conv2d(x, weight, kernel_size, stride=1, padding=None, padding_mode="reflect", dilation=1,
                 groups=1, bias=None):
    """Reference of :func:`fastvision.ops.patch_conv2d`: a full-image im2col (pad + unfold) and a
    per-output-pixel weight lookup, ``out[b, o, y, x] = sum_k W_cell(y, x)[o, k] col[b, k, y, x]``."""
    from torch.nn.modules.utils import _pair

    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    ph, pw = _pair(padding) if padding is not None else (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    ct = _compute_dtype(x)
    xc, wc = x.to(ct), weight.to(ct)
    B, C, H, W = xc.shape
    fh, fw = wc.shape[-2:]
    cin_g = C // groups
    cout = wc.shape[1] // (cin_g * kh * kw)
    xp = torch.nn.functional.pad(xc, (pw, pw, ph, ph), mode=_TORCH_PAD_MODE[padding_mode])
    cols = torch.nn.functional.unfold(xp, (kh, kw), dilation=(dh, dw), stride=(sh, sw))
    Ho = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    Wo = (W + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    wpix = wc[:, :, patch_cells(Ho, fh, x.device)][:, :, :, patch_cells(Wo, fw, x.device)]
    wpix = wpix.reshape(B, groups, cout // groups, cin_g * kh * kw, Ho * Wo)
    cols = cols.reshape(B, groups, cin_g * kh * kw, Ho * Wo)
    out = torch.einsum("bgokp,bgkp->bgop", wpix, cols).reshape(B, cout, Ho, Wo)
    if bias is not None:
        out = out + bias.to(ct).view(1, -1, 1, 1)
    return out.to(x.dtype)


def hyperpatch_conv2d_unfold(x, weight, kernel_size, padding, padding_mode="reflect", groups=1):
    """HyperSeg's own formulation of a patch-wise convolution (``HyperPatchConv2d`` for
    ``padding > 0``, ``HyperPatchNoPadding`` for 0; stride and dilation 1): pad the image, unfold
    overlapping patches with their halos, one grouped convolution with ``B * patches * groups``
    groups, fold back. Needs the patch size to divide the image. The benchmark's baseline."""
    B, C, H, W = x.shape
    fh, fw = weight.shape[-2:]
    ph, pw = H // fh, W // fw
    k, p = kernel_size, padding
    kh, kw = ph + 2 * p, pw + 2 * p
    w = weight.permute(0, 2, 3, 1).reshape(B * fh * fw * (weight.shape[1] // (C // groups * k * k)),
                                           C // groups, k, k)
    if p > 0:
        xp = torch.nn.functional.pad(x, (p, p, p, p), mode=_TORCH_PAD_MODE[padding_mode])
        cols = torch.nn.functional.unfold(xp, (kh, kw), stride=(ph, pw))
        xs = cols.transpose(1, 2).reshape(1, -1, kh, kw).contiguous()
    else:
        xs = x.view(B, C, fh, ph, fw, pw).permute(0, 2, 4, 1, 3, 5).reshape(1, -1, ph, pw)
    y = torch.nn.functional.conv2d(xs, w, groups=B * fh * fw * groups)
    cout = y.shape[1] // (B * fh * fw)
    if p > 0:
        y = y.view(B, fh * fw, cout * ph * pw).permute(0, 2, 1)
        return torch.nn.functional.fold(y, (H, W), kernel_size=(ph, pw), stride=(ph, pw))
    return y.view(B, fh, fw, cout, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(B, cout, H, W)


def hyperpatch_inverted_residual_unfold(x, weight, hidden_channels, out_channels, bn1, bn2, bn3,
                                        act=None, kernel_size=3, padding_mode="reflect"):
    """HyperSeg's ``HyperPatchInvertedResidual.conv`` formulation (stride 1): pad by 1, unfold
    the patches with their halos, per-patch 1x1 expand on the halo too, ``bn1`` + ``act``, per-patch
    depthwise ``kernel_size`` (valid), ``bn2`` + ``act``, per-patch 1x1 project, ``bn3``, fold. The
    ``bn*`` are callables on ``(patches, C, h, w)`` views: BatchNorm modules in training (their
    batch statistics then include the halo pixels, as HyperSeg's) or folded affines.
    ``weight``: ``(B, >= K, fh, fw)``, the first ``K`` channels used. No residual."""
    act = act if act is not None else (lambda t: torch.clamp(t, 0, 6))
    B, C, H, W = x.shape
    fh, fw = weight.shape[-2:]
    ph, pw = H // fh, W // fw
    hid, out, k = hidden_channels, out_channels, kernel_size
    r = 1  # HyperSeg pads by (1, 1) whatever the kernel size
    kh, kw = ph + 2 * r, pw + 2 * r
    P = B * fh * fw
    xp = torch.nn.functional.pad(x, (r, r, r, r), mode=_TORCH_PAD_MODE[padding_mode])
    xs = xp.permute(0, 2, 3, 1).unfold(1, kh, ph).unfold(2, kw, pw).reshape(1, -1, kh, kw)
    w = weight.permute(0, 2, 3, 1).reshape(P, weight.shape[1])
    n1, n2 = C * hid, hid * k * k
    y = torch.nn.functional.conv2d(xs, w[:, :n1].reshape(P * hid, C, 1, 1), groups=P)
    y = act(bn1(y.view(P, hid, kh, kw))).reshape(1, -1, kh, kw)
    y = torch.nn.functional.conv2d(y, w[:, n1:n1 + n2].reshape(P * hid, 1, k, k), groups=P * hid)
    y = act(bn2(y.view(P, hid, ph, pw))).reshape(1, -1, ph, pw)
    y = torch.nn.functional.conv2d(y, w[:, n1 + n2:n1 + n2 + hid * out].reshape(P * out, hid, 1, 1),
                                   groups=P)
    y = bn3(y.view(P, out, ph, pw))
    return y.view(B, fh, fw, out, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(B, out, H, W)


def patch_inverted_residual(x, weight, hidden_channels, bn1, bn2, bn3, kernel_size=3,
                            padding_mode="reflect", residual=False):
    """Reference of :func:`fastvision.ops.patch_inverted_residual`, patch by patch: the patch's
    tile with a ``kernel_size // 2`` halo (border-mapped), expanded with the patch's weights, BN +
    ReLU6 (zero padding: the hidden map is zero off the image), depthwise (valid), BN + ReLU6,
    project, BN (+ ``x``). ``bn*`` are ``(scale, shift)`` pairs."""
    ct = _compute_dtype(x)
    xc, wc = x.to(ct), weight.to(ct)
    (s1, b1), (s2, b2), (s3, b3) = [(s.to(ct), b.to(ct)) for s, b in (bn1, bn2, bn3)]
    B, C, H, W = xc.shape
    fh, fw = wc.shape[-2:]
    hid, k, r = hidden_channels, kernel_size, kernel_size // 2
    out_c = s3.shape[0]
    n1, n2 = C * hid, hid * k * k
    mode = _TORCH_PAD_MODE[padding_mode]
    xp = torch.nn.functional.pad(xc, (r, r, r, r), mode=mode) if r > 0 else xc
    inside = torch.nn.functional.pad(torch.ones(1, 1, H, W, dtype=ct, device=x.device), (r, r, r, r))
    ys = [int(v) for v in (torch.arange(fh + 1) * H // fh)]
    xs = [int(v) for v in (torch.arange(fw + 1) * W // fw)]
    out = xc.new_empty((B, out_c, H, W))
    for i in range(fh):
        for j in range(fw):
            y0, y1, x0, x1 = ys[i], ys[i + 1], xs[j], xs[j + 1]
            tile = xp[:, :, y0:y1 + 2 * r, x0:x1 + 2 * r]
            wp = wc[:, :, i, j]
            w1 = wp[:, :n1].reshape(B, hid, C)
            w2 = wp[:, n1:n1 + n2].reshape(B * hid, 1, k, k)
            w3 = wp[:, n1 + n2:].reshape(B, out_c, hid)
            e = torch.einsum("bhc,bcyx->bhyx", w1, tile)
            e = torch.clamp(e * s1.view(1, -1, 1, 1) + b1.view(1, -1, 1, 1), 0, 6)
            if padding_mode == "zeros":
                e = e * inside[:, :, y0:y1 + 2 * r, x0:x1 + 2 * r]
            th, tw = e.shape[-2:]
            d = torch.nn.functional.conv2d(e.reshape(1, B * hid, th, tw), w2, groups=B * hid)
            d = torch.clamp(d.view(B, hid, y1 - y0, x1 - x0) * s2.view(1, -1, 1, 1) + b2.view(1, -1, 1, 1), 0, 6)
            o = torch.einsum("boh,bhyx->boyx", w3, d) * s3.view(1, -1, 1, 1) + b3.view(1, -1, 1, 1)
            if residual:
                o = o + xc[:, :, y0:y1, x0:x1]
            out[:, :, y0:y1, x0:x1] = o
    return out.to(x.dtype)
