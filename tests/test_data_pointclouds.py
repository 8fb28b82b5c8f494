"""fastvision.data point clouds: ProceduralShapes (embedded) and ModelNet40H5 (official HDF5 layout)."""

import math
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fastvision.data import (
    ModelNet40H5,
    ProceduralShapes,
    augment_point_cloud,
    jitter_point_cloud,
    normalize_point_cloud,
    rotate_point_cloud_y,
)
from fastvision.data import pointclouds as pc

try:
    import h5py
except ImportError:  # only the ModelNet40H5 tests need it
    h5py = None


def _binom_tol(p, n, sigmas=5.0):
    return sigmas * math.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------------
# ProceduralShapes
# ------------------------------------------------------------------------------------------


def test_classes_sizes_dtypes():
    classes = ProceduralShapes.classes
    assert len(classes) >= 10 and len(set(classes)) == len(classes)
    for name in ("sphere", "ellipsoid", "cube", "cylinder", "capsule", "cone", "pyramid", "torus"):
        assert name in classes
    train, test = ProceduralShapes("train"), ProceduralShapes("test")
    assert len(train) == 4096 and len(test) == 1024
    assert train.num_classes == len(classes)
    assert train.points.shape == (4096, 1024, 3) and train.points.dtype == torch.float32
    assert train.labels.shape == (4096,) and train.labels.dtype == torch.int64
    x, y = test[5]
    assert x.shape == (1024, 3) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.shape == () and 0 <= int(y) < len(classes)
    assert torch.isfinite(train.points).all() and torch.isfinite(test.points).all()
    small = ProceduralShapes("test", num_points=256, num_samples=30, seed=3)
    assert small.points.shape == (30, 256, 3) and small[-1][0].shape == (256, 3)
    with pytest.raises(IndexError):
        small[30]
    with pytest.raises(ValueError, match="split"):
        ProceduralShapes("val")


def test_deterministic_by_seed_and_splits_differ():
    a = pc._generate(120, 128, seed=11)
    b = pc._generate(120, 128, seed=11)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = pc._generate(120, 128, seed=12)
    assert not torch.equal(a[0], c[0])
    # Through the dataset (cached or not, same result); train and test differ for the same seed.
    tr1 = ProceduralShapes("train", num_points=128, num_samples=120, seed=5)
    pc._CACHE.clear()
    tr2 = ProceduralShapes("train", num_points=128, num_samples=120, seed=5)
    assert torch.equal(tr1.points, tr2.points) and torch.equal(tr1.labels, tr2.labels)
    te = ProceduralShapes("test", num_points=128, num_samples=120, seed=5)
    assert not torch.equal(tr1.points, te.points)
    # No test cloud is a copy of a train cloud.
    d = torch.cdist(tr1.points.flatten(1), te.points.flatten(1))
    assert d.min() > 1.0
    other = ProceduralShapes("train", num_points=128, num_samples=120, seed=6)
    assert not torch.equal(tr1.points, other.points)


def test_class_balance():
    for n in (4096, 100, 25):
        ds = ProceduralShapes("train", num_points=64, num_samples=n, seed=1)
        counts = torch.bincount(ds.labels, minlength=ds.num_classes)
        assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == n
    # Labels are shuffled, not in class order.
    ds = ProceduralShapes("train", num_points=64, num_samples=100, seed=1)
    assert not torch.equal(ds.labels, torch.arange(100) % ds.num_classes)


def test_normalised_to_unit_sphere_like_modelnet40():
    ds = ProceduralShapes("test", num_points=1024, num_samples=240, seed=2)
    norms = ds.points.norm(dim=-1)
    torch.testing.assert_close(norms.amax(1), torch.ones(240), atol=1e-5, rtol=0)
    torch.testing.assert_close(ds.points.mean(1), torch.zeros(240, 3), atol=1e-5, rtol=0)
    # Sphere samples: every point lies on the unit sphere, up to the centroid's sampling error.
    sphere = ds.points[ds.labels == ds.classes.index("sphere")]
    assert sphere.shape[0] >= 10
    assert sphere.norm(dim=-1).min() > 0.9
    assert (sphere.norm(dim=-1) - 1).abs().mean() < 0.03
    x = torch.randn(4, 50, 3) * 3 + 7
    y = normalize_point_cloud(x)
    torch.testing.assert_close(y.norm(dim=-1).amax(-1), torch.ones(4))


def test_box_faces_area_weighted_and_uniform():
    g = torch.Generator().manual_seed(0)
    half = torch.tensor([[1.0, 0.5, 0.25]])
    n = 70000
    pts = pc._box_surface(g, 1, n, half)[0]
    on_face = (pts.abs() - half[0]).abs() < 1e-6  # (n, 3): which +-axis face
    assert torch.all(on_face.sum(1) >= 1)
    areas = torch.tensor([0.5, 1.0, 2.0])  # faces normal to x, y, z: 2b*2c, 2a*2c, 2a*2b
    for axis in range(3):
        for sign in (1.0, -1.0):
            frac = ((pts[:, axis] * sign - half[0, axis]).abs() < 1e-6).float().mean().item()
            expected = float(areas[axis] / (2 * areas.sum()))
            assert abs(frac - expected) < _binom_tol(expected, n), (axis, sign, frac, expected)
    # Uniform within a face: on the +z face x is uniform in [-1, 1] (variance 1/3).
    face = pts[(pts[:, 2] - 0.25).abs() < 1e-6]
    assert abs(face[:, 0].mean().item()) < 0.02
    assert abs(face[:, 0].var().item() - 1 / 3) < 0.02


def test_cone_and_cylinder_area_weighted():
    g = torch.Generator().manual_seed(1)
    n = 20000
    cone = pc._cone(g, 4, n)
    for pts in cone:
        height = pts[:, 1].max()
        side = pts[pts[:, 1] > 1e-6]
        slant = math.sqrt(1 + float(height) ** 2)
        expected_side = slant / (slant + 1)  # pi r s / (pi r s + pi r^2), r = 1
        assert abs(side.shape[0] / n - expected_side) < _binom_tol(expected_side, n)
        s = side[:, [0, 2]].norm(dim=-1)  # radius = fraction of the way from apex to base
        assert abs((s < 0.5).float().mean().item() - 0.25) < _binom_tol(0.25, side.shape[0])  # area ~ s^2
        # On the lateral surface: y = H (1 - s) with one height H for every point.
        h_fit = (side[:, 1] / (1 - s).clamp_min(1e-3))[s < 0.9].median()
        torch.testing.assert_close(side[:, 1], h_fit * (1 - s), atol=2e-4, rtol=0)
        assert float(height) <= float(h_fit) + 1e-4  # the apex is the highest point
    cyl = pc._cylinder(g, 4, n)
    for pts in cyl:
        h = pts[:, 1].max()
        caps = (pts[:, 1].abs() - h).abs() < 1e-6
        expected_caps = 2 * math.pi / (4 * math.pi * float(h) + 2 * math.pi)
        assert abs(caps.float().mean().item() - expected_caps) < _binom_tol(expected_caps, n)
        side = pts[~caps]
        torch.testing.assert_close(side[:, [0, 2]].norm(dim=-1), torch.ones(side.shape[0]), atol=1e-5, rtol=0)


def test_rejection_samplers_area_weighted():
    g = torch.Generator().manual_seed(2)
    n = 20000
    # Torus: area element ~ (R + r cos(phi)); the outer half (rho > R) holds (pi R + 2 r) / (2 pi R).
    for pts in pc._torus(g, 4, n):
        rho = pts[:, [0, 2]].norm(dim=-1)
        big, r = (rho.max() + rho.min()) / 2, (rho.max() - rho.min()) / 2
        expected = float((math.pi * big + 2 * r) / (2 * math.pi * big))
        assert abs((rho > big).float().mean().item() - expected) < _binom_tol(expected, n)
    # Prolate spheroid (1, 0.4, 0.4): fraction of area with |x| < 0.5 by numerical integration.
    pts = pc._ellipsoid_surface(g, 1, 100000, torch.tensor([[1.0, 0.4, 0.4]]))[0]
    xs = torch.linspace(-1, 1, 200001, dtype=torch.float64)
    radius = 0.4 * torch.sqrt((1 - xs**2).clamp_min(0))
    ring = torch.sqrt(radius**2 + (0.16 * xs) ** 2)  # r * sqrt(1 + r'^2) with r r' = -0.16 x
    expected = float(ring[xs.abs() < 0.5].sum() / ring.sum())
    assert abs((pts[:, 0].abs() < 0.5).float().mean().item() - expected) < _binom_tol(expected, 100000)
    on_surface = (pts / torch.tensor([1.0, 0.4, 0.4])).norm(dim=-1)
    torch.testing.assert_close(on_surface, torch.ones(100000), atol=1e-5, rtol=0)
    # Every sampler returns finite float32 points of the requested size.
    for name, sampler in pc._SHAPES:
        out = sampler(g, 3, 100)
        assert out.shape == (3, 100, 3) and out.dtype == torch.float32 and torch.isfinite(out).all(), name


def test_rotation_matches_official_matrix():
    x = torch.randn(2, 64, 3, dtype=torch.float64)
    angle = 0.7
    c, s = math.cos(angle), math.sin(angle)
    official = x.numpy() @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # provider.rotate_point_cloud
    torch.testing.assert_close(rotate_point_cloud_y(x, angle), torch.from_numpy(official))
    angles = torch.tensor([0.3, 2.0], dtype=torch.float64)
    per_cloud = rotate_point_cloud_y(x, angles)
    torch.testing.assert_close(per_cloud[1], rotate_point_cloud_y(x[1], 2.0))


def test_augmentation_rotation_about_y_and_clipped_jitter():
    ds = ProceduralShapes("train", num_points=512, num_samples=48, seed=4)
    assert ds.augment  # train augments by default
    for i in range(0, 48, 7):
        orig = ds.points[i]
        aug, _ = ds[i]
        # y changes only by the jitter, which is clipped to 0.05.
        dy = (aug[:, 1] - orig[:, 1]).abs()
        assert dy.max() <= 0.05 + 1e-6
        # Without jitter the same stream gives an exact rotation about y.
        pure = augment_point_cloud(orig, pc._sample_generator(ds._data_seed, 0, i), sigma=0.0)
        torch.testing.assert_close(pure[:, 1], orig[:, 1])
        torch.testing.assert_close(pure[:, [0, 2]].norm(dim=-1), orig[:, [0, 2]].norm(dim=-1), atol=1e-5, rtol=0)
        noise = aug - pure
        assert noise.abs().max() <= 0.05 + 1e-6
        assert 0.008 < noise.std().item() < 0.012  # sigma 0.01
    # The rotation is not the identity and the angles vary over samples.
    angles = []
    for i in range(48):
        pure = augment_point_cloud(ds.points[i], pc._sample_generator(ds._data_seed, 0, i), sigma=0.0)
        a = torch.linalg.lstsq(ds.points[i][:, [0, 2]].double(), pure[:, [0, 2]].double()).solution
        angles.append(math.atan2(float(a[1, 0]), float(a[0, 0])))
    assert np.std(angles) > 1.0
    # Clipping at the tails: a large sigma saturates at +-clip.
    big = jitter_point_cloud(torch.zeros(1000, 3), torch.Generator().manual_seed(0), sigma=1.0, clip=0.05)
    assert big.abs().max() == pytest.approx(0.05) and (big.abs() == 0.05).float().mean() > 0.9
    with pytest.raises(ValueError, match="clip"):
        jitter_point_cloud(torch.zeros(3, 3), clip=0.0)


def test_augmentation_reproducible_per_epoch_and_sample():
    a = ProceduralShapes("train", num_points=128, num_samples=40, seed=9)
    b = ProceduralShapes("train", num_points=128, num_samples=40, seed=9)
    torch.manual_seed(123)  # global RNG must not matter
    x1 = a[3][0]
    torch.manual_seed(456)
    assert torch.equal(x1, a[3][0]) and torch.equal(x1, b[3][0])
    assert not torch.equal(a[3][0], a[4][0])
    a.set_epoch(1)
    assert not torch.equal(x1, a[3][0])
    b.set_epoch(1)
    assert torch.equal(a[3][0], b[3][0])
    # Test split: no augmentation by default, returns a copy of the cached cloud.
    te = ProceduralShapes("test", num_points=128, num_samples=40, seed=9)
    assert not te.augment
    x, _ = te[2]
    assert torch.equal(x, te.points[2])
    x += 1
    assert not torch.equal(x, te.points[2])
    te_aug = ProceduralShapes("test", num_points=128, num_samples=40, seed=9, augment=True)
    assert not torch.equal(te_aug[2][0], te.points[2])


def test_dataloader_round_trip_batch_32():
    ds = ProceduralShapes("train", num_points=256, num_samples=100, seed=0)
    loader = DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [32, 32, 32, 4]
    x, y = batches[0]
    assert x.shape == (32, 256, 3) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(ds.labels.tolist())
    # Same batches with two worker processes (augmentation does not depend on the worker layout).
    loader2 = DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0), num_workers=2)
    for (xa, ya), (xb, yb) in zip(batches, loader2):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _shape_features(points):
    """Rotation-about-y-invariant histograms: distance to centroid, pairwise distances, height."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, points.shape[1], (2, 512), generator=g)
    d2 = (points[:, idx[0]] - points[:, idx[1]]).norm(dim=-1)

    def hist(v, lo, hi, bins=12):
        b = ((v - lo) / (hi - lo) * bins).long().clamp(0, bins - 1)
        return torch.nn.functional.one_hot(b, bins).float().mean(1)

    return torch.cat([hist(points.norm(dim=-1), 0, 1), hist(d2, 0, 2), hist(points[..., 1], -1, 1)], 1)


def test_classes_separable_cheap_check():
    tr = ProceduralShapes("train", num_points=256, num_samples=720, seed=0, augment=False)
    te = ProceduralShapes("test", num_points=256, num_samples=240, seed=0)
    pred = tr.labels[torch.cdist(_shape_features(te.points), _shape_features(tr.points)).argmin(1)]
    acc = (pred == te.labels).float().mean().item()
    assert acc > 0.8  # far above chance (1/12) with a trivial 1-NN on histograms


# ------------------------------------------------------------------------------------------
# ModelNet40H5
# ------------------------------------------------------------------------------------------

NAMES = [f"class{i:02d}" for i in range(40)]


def _write_h5(path, data, label, **extra):
    with h5py.File(path, "w") as f:
        if data is not None:
            f.create_dataset("data", data=data)
        if label is not None:
            f.create_dataset("label", data=label)
        for k, v in extra.items():
            f.create_dataset(k, data=v)


@pytest.fixture
def mn40(tmp_path):
    if h5py is None:
        pytest.skip("h5py is not installed")
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    rng = np.random.default_rng(0)
    files = {}
    for name, n in (("ply_data_train0.h5", 3), ("ply_data_train1.h5", 2), ("ply_data_test0.h5", 4)):
        data = rng.standard_normal((n, 2048, 3)).astype(np.float32)
        label = rng.integers(0, 40, (n, 1)).astype(np.uint8)
        _write_h5(root / name, data, label, normal=np.zeros((n, 2048, 3), np.float32))
        files[name] = (data, label)
    # Official entries for train, bare names for test.
    (root / "train_files.txt").write_text(
        "data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\ndata/modelnet40_ply_hdf5_2048/ply_data_train1.h5\n"
    )
    (root / "test_files.txt").write_text("ply_data_test0.h5\n")
    (root / "shape_names.txt").write_text("\n".join(NAMES) + "\n")
    return root, files


def test_modelnet40_reads_official_layout(mn40):
    root, files = mn40
    ds = ModelNet40H5(root, "train")
    assert len(ds) == 5 and ds.classes == NAMES and ds.num_classes == 40
    data = np.concatenate([files["ply_data_train0.h5"][0], files["ply_data_train1.h5"][0]])
    label = np.concatenate([files["ply_data_train0.h5"][1], files["ply_data_train1.h5"][1]])
    assert ds.points.shape == (5, 1024, 3) and ds.points.dtype == torch.float32
    np.testing.assert_array_equal(ds.points.numpy(), data[:, :1024])  # first 1024 of 2048, in order
    assert ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.labels.numpy(), label[:, 0].astype(np.int64))
    x, y = ds[4]
    assert x.shape == (1024, 3) and y.dtype == torch.int64 and int(y) == int(label[4, 0])
    test = ModelNet40H5(str(root), "test", num_points=2048)
    assert len(test) == 4 and test.points.shape == (4, 2048, 3)
    np.testing.assert_array_equal(test.points.numpy(), files["ply_data_test0.h5"][0])
    # Without shape_names.txt the class list is unknown.
    (root / "shape_names.txt").unlink()
    assert ModelNet40H5(root, "test", num_points=16).classes is None


def test_modelnet40_augment_and_loader(mn40):
    root, _ = mn40
    plain = ModelNet40H5(root, "train")
    aug = ModelNet40H5(root, "train", augment=True)
    assert not plain.augment
    assert torch.equal(plain[0][0], plain.points[0])
    x = aug[0][0]
    assert torch.equal(x, aug[0][0])  # reproducible
    assert (x[:, 1] - plain.points[0][:, 1]).abs().max() <= 0.05 + 1e-6
    assert not torch.allclose(x, plain.points[0], atol=0.05)
    batch = next(iter(DataLoader(plain, batch_size=32)))
    assert batch[0].shape == (5, 1024, 3) and batch[1].shape == (5,)


def _err(exc, *fragments):
    return pytest.raises(exc, match=".*".join(re.escape(str(f)) for f in fragments))


def test_modelnet40_errors(mn40, tmp_path):
    root, files = mn40
    missing = tmp_path / "nowhere"
    with _err(FileNotFoundError, "root folder not found", missing):
        ModelNet40H5(missing)
    with _err(ValueError, "num_points", "2048"):
        ModelNet40H5(root, num_points=4096)
    with _err(ValueError, "split"):
        ModelNet40H5(root, split="val")

    (root / "test_files.txt").unlink()
    with _err(FileNotFoundError, "file list not found", root / "test_files.txt"):
        ModelNet40H5(root, "test")

    (root / "test_files.txt").write_text("\n")
    with _err(ValueError, "empty", root / "test_files.txt"):
        ModelNet40H5(root, "test")

    (root / "test_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_test9.h5\n")
    with _err(FileNotFoundError, "ply_data_test9.h5", root / "test_files.txt", root / "ply_data_test9.h5"):
        ModelNet40H5(root, "test")

    bad = root / "bad.h5"
    (root / "test_files.txt").write_text("bad.h5\n")
    bad.write_bytes(b"this is not an HDF5 file" * 10)
    with _err(OSError, "cannot read HDF5 file", bad):
        ModelNet40H5(root, "test")
    # Truncated real file.
    bad.write_bytes((root / "ply_data_test0.h5").read_bytes()[:3000])
    with _err(OSError, "cannot read HDF5 file", bad):
        ModelNet40H5(root, "test")

    data, label = files["ply_data_test0.h5"]
    _write_h5(bad, data, None)
    with _err(ValueError, bad, "'label'"):
        ModelNet40H5(root, "test")
    _write_h5(bad, None, label)
    with _err(ValueError, bad, "'data'"):
        ModelNet40H5(root, "test")

    _write_h5(bad, data[..., :2], label)
    with _err(ValueError, bad, "'data' must have shape (N, P, 3)", "(4, 2048, 2)"):
        ModelNet40H5(root, "test")
    _write_h5(bad, data, label[:3])
    with _err(ValueError, bad, "'label' must have shape", "(3, 1)"):
        ModelNet40H5(root, "test")
    _write_h5(bad, data, np.zeros((4, 2), np.uint8))
    with _err(ValueError, bad, "'label' must have shape"):
        ModelNet40H5(root, "test")
    _write_h5(bad, data[:, :512], label)
    with _err(ValueError, bad, "512 points", "num_points=1024"):
        ModelNet40H5(root, "test")
    assert len(ModelNet40H5(root, "test", num_points=512)) == 4
    _write_h5(bad, data, np.full((4, 1), 45, np.uint8))
    with _err(ValueError, "labels outside 0..39", root / "shape_names.txt", "45"):
        ModelNet40H5(root, "test")
