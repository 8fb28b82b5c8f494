"""Point-cloud classification data: an embedded procedural shape set and ModelNet40 (HDF5).

``ProceduralShapes`` needs no download: parametric surfaces sampled uniformly over their area,
normalised to the unit sphere like ModelNet40. ``ModelNet40H5`` reads the official
``modelnet40_ply_hdf5_2048`` folder (the one used by PointNet, S-NET and SampleNet) and takes the
first ``num_points`` of the 2048 points of every shape, as the sampling papers do.

Augmentation follows the official ``provider.py`` of PointNet / S-NET / SampleNet: a random
rotation about the up axis (y) followed by per-point Gaussian jitter (sigma 0.01, clipped to
+-0.05). Random numbers come from a ``torch.Generator`` seeded from (seed, epoch, index), so a run
is reproducible whatever the DataLoader worker layout; call ``set_epoch`` every epoch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

__all__ = [
    "ProceduralShapes",
    "ModelNet40H5",
    "rotate_point_cloud_y",
    "jitter_point_cloud",
    "augment_point_cloud",
    "normalize_point_cloud",
]

_TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------------------------
# Augmentation and normalisation (shared by both datasets)
# --------------------------------------------------------------------------------------------


def rotate_point_cloud_y(points: torch.Tensor, angle: float | torch.Tensor) -> torch.Tensor:
    """Rotate (..., N, 3) points about the up axis y by ``angle`` radians.

    Same matrix and convention as the official ``rotate_point_cloud``: ``points @ R`` with
    ``R = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``; y is left unchanged.
    """
    angle = torch.as_tensor(angle, dtype=points.dtype, device=points.device)
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.stack(
        [torch.stack([c, zero, s], -1), torch.stack([zero, one, zero], -1), torch.stack([-s, zero, c], -1)],
        -2,
    )
    return points @ rot


def jitter_point_cloud(
    points: torch.Tensor, generator: torch.Generator | None = None, sigma: float = 0.01, clip: float = 0.05
) -> torch.Tensor:
    """Add per-point Gaussian noise ``clip(sigma * N(0, 1), -clip, clip)`` (official ``jitter_point_cloud``)."""
    if clip <= 0:
        raise ValueError(f"jitter clip must be > 0, got {clip}")
    noise = torch.randn(points.shape, generator=generator, dtype=points.dtype, device=points.device)
    return points + (sigma * noise).clamp_(-clip, clip)


def augment_point_cloud(
    points: torch.Tensor, generator: torch.Generator | None = None, sigma: float = 0.01, clip: float = 0.05
) -> torch.Tensor:
    """Random rotation about y (angle uniform in [0, 2 pi)) then jitter, as in the official training loop."""
    angle = torch.rand((), generator=generator, dtype=torch.float64) * _TWO_PI
    return jitter_point_cloud(rotate_point_cloud_y(points, angle.to(points.dtype)), generator, sigma, clip)


def normalize_point_cloud(points: torch.Tensor) -> torch.Tensor:
    """Centre (..., N, 3) points on their centroid and scale so the farthest point has norm 1."""
    centred = points - points.mean(dim=-2, keepdim=True)
    scale = centred.norm(dim=-1).amax(dim=-1, keepdim=True).clamp_min(1e-12)
    return centred / scale.unsqueeze(-1)


def _sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    # A distinct, well-mixed 63-bit seed per (seed, epoch, sample).
    mixed = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**63 - 1)
    return torch.Generator().manual_seed(mixed ^ 0x2545F4914F6CDD1D)


# --------------------------------------------------------------------------------------------
# Area-uniform samplers of parametric surfaces (vectorised over shapes and points).
# Every sampler: (n shapes, P points, generator) -> (n, P, 3) float32, up axis = y.
# --------------------------------------------------------------------------------------------

_DT = torch.float32


def _u(g: torch.Generator, *shape: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=_DT)


def _pick(areas: torch.Tensor, num_points: int, g: torch.Generator) -> torch.Tensor:
    """Component index per point, chosen with probability proportional to the (n, K) areas."""
    cum = areas.cumsum(dim=1)
    u = torch.rand(areas.shape[0], num_points, generator=g, dtype=areas.dtype) * cum[:, -1:]
    return torch.searchsorted(cum.contiguous(), u, right=True).clamp_(max=areas.shape[1] - 1)


def _unit_sphere(g: torch.Generator, *shape: int) -> torch.Tensor:
    v = torch.randn(*shape, 3, generator=g, dtype=_DT)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _rejection(
    n: int,
    num_points: int,
    g: torch.Generator,
    propose: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
    factor: float,
) -> torch.Tensor:
    """Rejection sampling per shape: ``propose(rows, M)`` gives (len(rows), M, 3) candidates and their
    acceptance probabilities; keeps the first ``num_points`` accepted candidates of each row and
    redraws the rows that fell short."""
    out = torch.empty(n, num_points, 3, dtype=_DT)
    todo = torch.arange(n)
    while todo.numel():
        m = int(num_points * factor) + 64
        pts, prob = propose(todo, m)
        accept = torch.rand(prob.shape, generator=g, dtype=prob.dtype) < prob
        ok = accept.sum(dim=1) >= num_points
        order = torch.argsort((~accept).to(torch.uint8), dim=1, stable=True)[:, :num_points]
        chosen = pts.gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
        out[todo[ok]] = chosen[ok]
        todo = todo[~ok]
    return out


def _random_axes(g: torch.Generator, n: int, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """n x 3 semi-axes: one axis 1, the others uniform in [lo, hi], in a random axis order."""
    second = lo[1] + (hi[1] - lo[1]) * _u(g, n)
    third = lo[2] + (hi[2] - lo[2]) * _u(g, n)
    axes = torch.stack([torch.ones(n, dtype=_DT), second, third], 1)
    perm = torch.argsort(torch.rand(n, 3, generator=g), dim=1)
    return axes.gather(1, perm)


def _ellipsoid_surface(g, n, num_points, axes, lower_half=False):
    # Map the unit sphere to the ellipsoid; the area stretch factor is proportional to
    # |u / axes| * prod(axes), so accept with probability |u / axes| * min(axes) <= 1.
    factor = float((axes.amax(1) / axes.amin(1)).max()) * 1.1

    def propose(rows, m):
        u = _unit_sphere(g, len(rows), m)
        if lower_half:
            u[..., 1] = -u[..., 1].abs()
        a = axes[rows].unsqueeze(1)
        prob = (u / a).norm(dim=-1) * a.amin(dim=-1)
        return u * a, prob

    return _rejection(n, num_points, g, propose, factor)


def _sphere(g, n, p):
    return _unit_sphere(g, n, p)


def _ellipsoid(g, n, p):
    axes = _random_axes(g, n, torch.tensor([1.0, 0.3, 0.3]), torch.tensor([1.0, 0.85, 1.0]))
    return _ellipsoid_surface(g, n, p, axes)


def _box_surface(g, n, p, half):
    # Faces +-x, +-y, +-z; the face normal to axis i has area 4 * prod(half) / half_i.
    face_area = 4.0 * half.prod(1, keepdim=True) / half
    face = _pick(face_area.repeat(1, 2), p, g)  # 0..5: axis = face % 3, sign from face // 3
    axis = face % 3
    sign = 1.0 - 2.0 * (face // 3).to(_DT)
    pts = (2.0 * _u(g, n, p, 3) - 1.0) * half.unsqueeze(1)
    on_face = half.gather(1, axis) * sign
    return pts.scatter(2, axis.unsqueeze(-1), on_face.unsqueeze(-1))


def _cube(g, n, p):
    return _box_surface(g, n, p, _u(g, n, 3, lo=0.88, hi=1.0))


def _cuboid(g, n, p):
    return _box_surface(g, n, p, _random_axes(g, n, torch.tensor([1.0, 0.2, 0.2]), torch.tensor([1.0, 0.8, 1.0])))


def _disk(g, n, p, radius):
    r = radius.unsqueeze(1) * torch.sqrt(_u(g, n, p))
    t = _u(g, n, p, hi=_TWO_PI)
    return r * torch.cos(t), r * torch.sin(t)


def _cylinder(g, n, p):
    r = torch.ones(n, dtype=_DT)
    h = _u(g, n, lo=0.2, hi=1.8)  # half height
    part = _pick(torch.stack([4 * math.pi * r * h, math.pi * r**2, math.pi * r**2], 1), p, g)
    t = _u(g, n, p, hi=_TWO_PI)
    side = torch.stack([torch.cos(t), (2 * _u(g, n, p) - 1) * h[:, None], torch.sin(t)], -1)
    dx, dz = _disk(g, n, p, r)
    cap_y = torch.where(part == 1, h[:, None], -h[:, None])
    cap = torch.stack([dx, cap_y, dz], -1)
    return torch.where((part == 0).unsqueeze(-1), side, cap)


def _capsule(g, n, p):
    r = torch.ones(n, dtype=_DT)
    h = _u(g, n, lo=0.1, hi=1.6)  # half length of the cylindrical part
    part = _pick(torch.stack([4 * math.pi * r * h, 4 * math.pi * r**2], 1), p, g)
    t = _u(g, n, p, hi=_TWO_PI)
    side = torch.stack([torch.cos(t), (2 * _u(g, n, p) - 1) * h[:, None], torch.sin(t)], -1)
    ball = _unit_sphere(g, n, p)  # a whole sphere split into two hemispheres pushed apart
    ball[..., 1] += torch.sign(ball[..., 1]) * h[:, None]
    return torch.where((part == 0).unsqueeze(-1), side, ball)


def _cone(g, n, p):
    r = torch.ones(n, dtype=_DT)
    height = _u(g, n, lo=0.6, hi=2.6)
    slant = torch.sqrt(r**2 + height**2)
    part = _pick(torch.stack([math.pi * r * slant, math.pi * r**2], 1), p, g)
    s = torch.sqrt(_u(g, n, p))  # fraction of the way from apex to base; density ~ s
    t = _u(g, n, p, hi=_TWO_PI)
    side = torch.stack([s * torch.cos(t), height[:, None] * (1 - s), s * torch.sin(t)], -1)
    dx, dz = _disk(g, n, p, r)
    base = torch.stack([dx, torch.zeros_like(dx), dz], -1)
    return torch.where((part == 0).unsqueeze(-1), side, base)


def _triangle(g, a, b, c):
    """Uniform points in triangles with (n, P, 3) corners."""
    n, p = a.shape[:2]
    r1 = torch.sqrt(_u(g, n, p, 1))
    r2 = _u(g, n, p, 1)
    return (1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c


def _pyramid(g, n, p):
    w = torch.ones(n, dtype=_DT)  # half width of the square base
    height = _u(g, n, lo=0.6, hi=2.6)
    side_area = w * torch.sqrt(height**2 + w**2)
    part = _pick(torch.stack([side_area, side_area, side_area, side_area, 4 * w**2], 1), p, g)
    # Base corners (x, z) in order around the square; side k uses corners k and k+1.
    corners = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=_DT)
    k = part.clamp(max=3)
    c0 = corners[k] * w[:, None, None]
    c1 = corners[(k + 1) % 4] * w[:, None, None]
    zeros = torch.zeros(n, p, 1, dtype=_DT)
    a = torch.cat([c0[..., :1], zeros, c0[..., 1:]], -1)
    b = torch.cat([c1[..., :1], zeros, c1[..., 1:]], -1)
    apex = torch.zeros(n, p, 3, dtype=_DT)
    apex[..., 1] = height[:, None]
    side = _triangle(g, a, b, apex)
    base_xz = (2 * _u(g, n, p, 2) - 1) * w[:, None, None]
    base = torch.stack([base_xz[..., 0], zeros[..., 0], base_xz[..., 1]], -1)
    return torch.where((part == 4).unsqueeze(-1), base, side)


def _torus(g, n, p):
    big = 1.0
    tube = _u(g, n, lo=0.15, hi=0.7)

    def propose(rows, m):
        r = tube[rows, None]
        phi = _u(g, len(rows), m, hi=_TWO_PI)
        theta = _u(g, len(rows), m, hi=_TWO_PI)
        ring = big + r * torch.cos(phi)  # area element ~ ring
        pts = torch.stack([ring * torch.cos(theta), r * torch.sin(phi), ring * torch.sin(theta)], -1)
        return pts, ring / (big + r)

    return _rejection(n, p, g, propose, factor=2.2)


def _helix_tube(g, n, p):
    big = 1.0
    pitch = _u(g, n, lo=0.12, hi=0.3)  # rise per radian
    turns = _u(g, n, lo=1.5, hi=3.0)
    tube = _u(g, n, lo=0.12, hi=0.25)
    length = torch.sqrt(big**2 + pitch**2)
    kappa = big / length**2  # curvature of the helix; kappa * tube < 1

    def propose(rows, m):
        c, rr, k, L = pitch[rows, None], tube[rows, None], kappa[rows, None], length[rows, None]
        t = _u(g, len(rows), m) * turns[rows, None] * _TWO_PI  # uniform in arc length
        phi = _u(g, len(rows), m, hi=_TWO_PI)
        ct, st = torch.cos(t), torch.sin(t)
        centre = torch.stack([big * ct, c * t, big * st], -1)
        tangent = torch.stack([-big * st, c.expand_as(t), big * ct], -1) / L.unsqueeze(-1)
        normal = torch.stack([-ct, torch.zeros_like(t), -st], -1)  # towards the axis
        binormal = torch.linalg.cross(tangent, normal)
        offset = torch.cos(phi).unsqueeze(-1) * normal + torch.sin(phi).unsqueeze(-1) * binormal
        prob = (1 - k * rr * torch.cos(phi)) / (1 + k * rr)
        return centre + rr.unsqueeze(-1) * offset, prob

    return _rejection(n, p, g, propose, factor=1.6)


def _bump_plane(g, n, p):
    amp = _u(g, n, lo=0.25, hi=0.8)
    width = _u(g, n, lo=0.2, hi=0.5)
    centre = _u(g, n, 2, lo=-0.3, hi=0.3)
    grad_max = amp / width * math.exp(-0.5)
    bound = torch.sqrt(1 + grad_max**2)

    def propose(rows, m):
        xz = 2 * _u(g, len(rows), m, 2) - 1
        d = xz - centre[rows, None, :]
        a, s = amp[rows, None], width[rows, None]
        y = a * torch.exp(-(d**2).sum(-1) / (2 * s**2))
        grad = y.unsqueeze(-1) * d / (s**2).unsqueeze(-1)  # |grad| of the height field
        prob = torch.sqrt(1 + (grad**2).sum(-1)) / bound[rows, None]
        return torch.stack([xz[..., 0], y, xz[..., 1]], -1), prob

    return _rejection(n, p, g, propose, factor=float(bound.max()) * 1.1)


def _bowl(g, n, p):
    depth = _u(g, n, lo=0.35, hi=1.0)
    axes = torch.stack([torch.ones(n, dtype=_DT), depth, torch.ones(n, dtype=_DT)], 1)
    return _ellipsoid_surface(g, n, p, axes, lower_half=True)


_SHAPES: list[tuple[str, Callable]] = [
    ("sphere", _sphere),
    ("ellipsoid", _ellipsoid),
    ("cube", _cube),
    ("cuboid", _cuboid),
    ("cylinder", _cylinder),
    ("capsule", _capsule),
    ("cone", _cone),
    ("pyramid", _pyramid),
    ("torus", _torus),
    ("helix_tube", _helix_tube),
    ("bump_plane", _bump_plane),
    ("bowl", _bowl),
]

_MAX_TILT = math.radians(20.0)


def _rotate_x(points: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    x, y, z = points.unbind(-1)
    return torch.stack([x, c * y - s * z, s * y + c * z], -1)


_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_CACHE_MAX = 8


def _generate(num_samples: int, num_points: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    num_classes = len(_SHAPES)
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=g)]
    points = torch.empty(num_samples, num_points, 3, dtype=_DT)
    for c, (_, sampler) in enumerate(_SHAPES):
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel():
            points[idx] = sampler(g, idx.numel(), num_points)
    # Objects are roughly upright (y up): a small random tilt (up to _MAX_TILT about a random
    # horizontal axis) and a random heading about y, then normalised as ModelNet40.
    tilt = torch.rand(num_samples, generator=g, dtype=torch.float64) * _MAX_TILT
    tilt_axis = torch.rand(num_samples, generator=g, dtype=torch.float64) * _TWO_PI
    heading = torch.rand(num_samples, generator=g, dtype=torch.float64) * _TWO_PI
    points = _rotate_x(points, tilt.to(_DT))
    points = rotate_point_cloud_y(points, tilt_axis.to(_DT))
    points = normalize_point_cloud(rotate_point_cloud_y(points, heading.to(_DT)))
    return points.contiguous(), labels.to(torch.int64)


class ProceduralShapes(Dataset):
    """Embedded point-cloud shape classification (12 classes of parametric surfaces, no download).

    Every sample is one surface with random aspect parameters (e.g. cylinder height, ellipsoid
    axes, torus tube radius), ``num_points`` points drawn uniformly over its area, a random heading
    about y, then centred and scaled into the unit sphere like ModelNet40. Train and test come from
    different seeds. ``augment`` (default: train only) applies the official rotation about y plus
    jitter, from a generator seeded by (seed, epoch, index); call :meth:`set_epoch` each epoch
    (with ``persistent_workers=True`` DataLoader workers keep the epoch they were started with).

    Items are ``(points float32 (num_points, 3), label int64)``; ``.points`` / ``.labels`` hold the
    whole split (un-augmented; shared with an in-memory cache, so treat them as read-only).
    """

    classes: list[str] = [name for name, _ in _SHAPES]

    def __init__(
        self,
        split: str = "train",
        num_points: int = 1024,
        num_samples: int | None = None,
        seed: int = 0,
        augment: bool | None = None,
        jitter_sigma: float = 0.01,
        jitter_clip: float = 0.05,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_samples is None:
            num_samples = 4096 if split == "train" else 1024
        if int(num_points) < 1 or int(num_samples) < 1:
            raise ValueError(f"num_points and num_samples must be >= 1, got {num_points}, {num_samples}")
        self.split = split
        self.num_points = int(num_points)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.augment = (split == "train") if augment is None else bool(augment)
        self.jitter_sigma = float(jitter_sigma)
        self.jitter_clip = float(jitter_clip)
        self.epoch = 0
        # Train and test use disjoint generator streams for every seed.
        self._data_seed = 2 * self.seed + (0 if split == "train" else 1)
        key = (self.num_samples, self.num_points, self._data_seed)
        if key not in _CACHE:
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = _generate(self.num_samples, self.num_points, self._data_seed)
        self.points, self.labels = _CACHE[key]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of this epoch (reproducible across runs and workers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        pts = self.points[index]
        if self.augment:
            g = _sample_generator(self._data_seed, self.epoch, index)
            pts = augment_point_cloud(pts, g, self.jitter_sigma, self.jitter_clip)
        else:
            pts = pts.clone()
        return pts, self.labels[index].clone()


# --------------------------------------------------------------------------------------------
# ModelNet40, official HDF5 release (modelnet40_ply_hdf5_2048)
# --------------------------------------------------------------------------------------------


class ModelNet40H5(Dataset):
    """ModelNet40 from the official ``modelnet40_ply_hdf5_2048`` folder.

    ``root`` holds ``train_files.txt`` / ``test_files.txt`` (entries such as
    ``data/modelnet40_ply_hdf5_2048/ply_data_train0.h5`` as shipped, or bare file names; both are
    resolved relative to ``root``), the ``.h5`` files with ``data`` (N, 2048, 3) and ``label``
    (N, 1), and optionally ``shape_names.txt``. The first ``num_points`` points of each shape are
    used (no resampling, as in S-NET / SampleNet). Items are ``(points float32 (num_points, 3),
    label int64)``.
    """

    MAX_POINTS = 2048

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        num_points: int = 1024,
        augment: bool = False,
        seed: int = 0,
        jitter_sigma: float = 0.01,
        jitter_clip: float = 0.05,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not 1 <= int(num_points) <= self.MAX_POINTS:
            raise ValueError(
                f"num_points must be between 1 and {self.MAX_POINTS} (ModelNet40 HDF5 shapes have "
                f"{self.MAX_POINTS} points), got {num_points}"
            )
        self.root = Path(root)
        self.split = split
        self.num_points = int(num_points)
        self.augment = bool(augment)
        self.seed = int(seed)
        self.jitter_sigma = float(jitter_sigma)
        self.jitter_clip = float(jitter_clip)
        self.epoch = 0

        if not self.root.is_dir():
            raise FileNotFoundError(f"ModelNet40 HDF5 root folder not found: {self.root}")
        list_file = self.root / f"{split}_files.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"ModelNet40 file list not found: {list_file}")
        entries = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
        if not entries:
            raise ValueError(f"ModelNet40 file list is empty: {list_file}")
        self.files = [self._resolve(entry, list_file) for entry in entries]

        names = self.root / "shape_names.txt"
        self.classes: list[str] | None = (
            [line.strip() for line in names.read_text().splitlines() if line.strip()] if names.is_file() else None
        )

        datas, labels = [], []
        for path in self.files:
            d, lab = self._load(path)
            datas.append(d)
            labels.append(lab)
        self.points = torch.cat(datas).contiguous()
        self.labels = torch.cat(labels)
        if self.classes is not None and self.labels.numel():
            bad = (self.labels < 0) | (self.labels >= len(self.classes))
            if bool(bad.any()):
                raise ValueError(
                    f"labels outside 0..{len(self.classes) - 1} (the {len(self.classes)} classes of "
                    f"{names}): {sorted(set(self.labels[bad].tolist()))[:10]}"
                )

    def _resolve(self, entry: str, list_file: Path) -> Path:
        p = Path(entry)
        candidates = [p] if p.is_absolute() else [self.root / p, self.root / p.name]
        for c in candidates:
            if c.is_file():
                return c
        tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
        raise FileNotFoundError(f"HDF5 file {entry!r} listed in {list_file} not found (tried {tried})")

    def _load(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            import h5py
        except ImportError as e:  # pragma: no cover - h5py is a dependency
            raise ImportError("ModelNet40H5 needs h5py (pip install h5py)") from e
        try:
            f = h5py.File(path, "r")
        except Exception as e:  # h5py raises OSError for missing signature / truncation
            raise OSError(f"cannot read HDF5 file {path}: {e}") from e
        with f:
            missing = [k for k in ("data", "label") if k not in f]
            if missing:
                raise ValueError(
                    f"HDF5 file {path} lacks dataset(s) {missing} (has {sorted(f.keys())}); "
                    "expected 'data' (N, 2048, 3) and 'label' (N, 1)"
                )
            dset, lset = f["data"], f["label"]
            if not isinstance(dset, h5py.Dataset) or not isinstance(lset, h5py.Dataset):
                raise ValueError(f"HDF5 file {path}: 'data' and 'label' must be datasets, not groups")
            if len(dset.shape) != 3 or dset.shape[2] != 3:
                raise ValueError(f"HDF5 file {path}: 'data' must have shape (N, P, 3), got {tuple(dset.shape)}")
            n, p = dset.shape[0], dset.shape[1]
            if p < self.num_points:
                raise ValueError(
                    f"HDF5 file {path}: shapes have {p} points, fewer than num_points={self.num_points}"
                )
            if not (len(lset.shape) == 1 or (len(lset.shape) == 2 and lset.shape[1] == 1)) or lset.shape[0] != n:
                raise ValueError(
                    f"HDF5 file {path}: 'label' must have shape ({n}, 1) or ({n},) to match 'data' "
                    f"{tuple(dset.shape)}, got {tuple(lset.shape)}"
                )
            try:
                data = dset[:, : self.num_points, :]
                label = lset[...]
            except Exception as e:
                raise OSError(f"cannot read HDF5 file {path}: {e}") from e
        if data.dtype.kind not in "fiu" or label.dtype.kind not in "iu":
            raise ValueError(
                f"HDF5 file {path}: expected numeric 'data' and integer 'label', got {data.dtype} and {label.dtype}"
            )
        return (
            torch.from_numpy(data.astype("float32", copy=False)),
            torch.from_numpy(label.reshape(-1).astype("int64", copy=False)),
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes is not None else int(self.labels.max()) + 1

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of this epoch (reproducible across runs and workers)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(index)
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        pts = self.points[index]
        if self.augment:
            g = _sample_generator(self.seed, self.epoch, index)
            pts = augment_point_cloud(pts, g, self.jitter_sigma, self.jitter_clip)
        else:
            pts = pts.clone()
        return pts, self.labels[index].clone()
