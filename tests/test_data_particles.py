"""PAD-Net data: procedural pads (determinism, sizes, ranges) and the real-data folder reader."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastvision.data import ParticleFolder, ProceduralParticles, collate_particles
from fastvision.data.particles import render_targets


def test_split_sizes_without_generating():
    train, test = ProceduralParticles("train"), ProceduralParticles("test")
    assert (len(train), len(test)) == (1952, 1000)
    assert train._images is None  # generated on first access only


def test_deterministic_per_seed_and_index():
    a = ProceduralParticles("train", num_images=4, seed=7)
    b = ProceduralParticles("train", num_images=9, seed=7)
    for i in range(4):
        assert torch.equal(a[i]["image"], b[i]["image"])
        assert torch.equal(a[i]["centres"], b[i]["centres"])
    _, centres = b.generate(2)
    assert torch.equal(centres, b[2]["centres"])
    assert not torch.equal(ProceduralParticles("train", num_images=1, seed=8)[0]["image"], a[0]["image"])
    assert not torch.equal(ProceduralParticles("test", num_images=1, seed=7)[0]["image"], a[0]["image"])


def test_values_shapes_and_targets():
    raw = ProceduralParticles("test", num_images=20, seed=1, normalize=False)
    counts = []
    for i in range(len(raw)):
        item = raw[i]
        image, t, c = item["image"], item["target"][0], item["centres"]
        assert image.shape == item["target"].shape == (1, 112, 48)
        assert image.dtype == torch.float32
        assert 0.0 <= image.min().item() and image.max().item() <= 1.0
        assert c.shape == (item["count"], 2)
        assert (c[:, 0] >= 0).all() and (c[:, 0] <= 47).all() and (c[:, 1] >= 0).all() and (c[:, 1] <= 111).all()
        if len(c) > 1:
            assert torch.cdist(c, c).add(torch.eye(len(c)) * 100).min() >= 3.0  # min_separation
        assert set(t.unique().tolist()) <= {0.0, 1.0}
        near = c.round().long()
        assert (t[near[:, 1], near[:, 0]] == 1).all()  # every centre lies in its disk
        # particles are brighter than the background on average
        assert image[0][t.bool()].mean() > image[0][~t.bool()].mean()
        counts.append(item["count"])
    assert 20 < np.mean(counts) < 30  # Poisson(25): the paper's 73,819 / 2,952 = 25.0
    normalized = ProceduralParticles("test", num_images=2, seed=1)
    for i in range(2):
        image = normalized[i]["image"]
        assert abs(image.mean().item()) < 1e-4 and image.std().item() == pytest.approx(1, abs=1e-4)
        assert torch.equal(normalized[i]["centres"], raw[i]["centres"])
        assert torch.allclose(image, (raw[i]["image"] - raw[i]["image"].mean()) / raw[i]["image"].std())


def test_render_targets_disks():
    t = render_targets(torch.tensor([[2.0, 3.0]]), 7, 6, radius=1.0)
    expected = torch.zeros(7, 6)
    expected[3, 1:4] = 1
    expected[2:5, 2] = 1
    assert torch.equal(t[0], expected)
    assert render_targets(torch.zeros(0, 2), 4, 4).sum() == 0
    with pytest.raises(ValueError, match="radius must be > 0, got 0"):
        render_targets(torch.zeros(0, 2), 4, 4, radius=0)


def test_collate_and_loader():
    ds = ProceduralParticles("train", num_images=5)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_particles)
    batch = next(iter(loader))
    assert batch["image"].shape == batch["target"].shape == (2, 1, 112, 48)
    assert len(batch["centres"]) == 2 and batch["count"].tolist() == [ds[0]["count"], ds[1]["count"]]


def test_procedural_errors():
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        ProceduralParticles("val")
    with pytest.raises(ValueError, match=r"num_images must be in \[0, 1000\] for split 'test', got 1001"):
        ProceduralParticles("test", num_images=1001)
    with pytest.raises(ValueError, match="target_radius must be > 0, got -1"):
        ProceduralParticles(target_radius=-1)
    with pytest.raises(ValueError, match="height and width must be >= 8, got 4 x 48"):
        ProceduralParticles(height=4)
    with pytest.raises(IndexError, match="index 3 out of range for 3 images"):
        ProceduralParticles(num_images=3)[3]


# ---- real data from a folder --------------------------------------------------------------------


def _pad_array(h=20, w=10):
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.float64)


def test_folder_formats(tmp_path):
    a8 = _pad_array().astype(np.uint8)
    Image.fromarray(a8).save(tmp_path / "a.png")
    (tmp_path / "a.csv").write_text("x,y\n1.5,2\n9,19\n")
    a16 = (_pad_array() * 200).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "b.tif")
    (tmp_path / "b.json").write_text(json.dumps({"centres": [[0, 0], [4, 5]]}))
    Image.fromarray(np.stack([a8] * 3, axis=-1)).save(tmp_path / "c.bmp")
    (tmp_path / "c.json").write_text(json.dumps([{"x": 3, "y": 7}]))
    (tmp_path / "notes.txt").write_text("ignored")

    ds = ParticleFolder(tmp_path, normalize=False)
    assert [p.name for p in ds.files] == ["a.png", "b.tif", "c.bmp"]
    a, b, c = ds[0], ds[1], ds[2]
    np.testing.assert_allclose(a["image"][0].numpy(), a8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(b["image"][0].numpy(), a16 / 65535.0, atol=1e-6)
    np.testing.assert_allclose(c["image"][0].numpy(), a8 / 255.0, atol=1e-6)
    assert a["centres"].tolist() == [[1.5, 2.0], [9.0, 19.0]] and a["count"] == 2
    assert b["centres"].tolist() == [[0.0, 0.0], [4.0, 5.0]]
    assert c["centres"].tolist() == [[3.0, 7.0]]
    assert torch.equal(b["target"], render_targets(b["centres"], 20, 10))
    normalized = ParticleFolder(tmp_path)[1]["image"]
    assert abs(normalized.mean().item()) < 1e-5


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        ParticleFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no PNG/BMP/TIFF images"):
        ParticleFolder(tmp_path)

    Image.fromarray(_pad_array().astype(np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a.png' has no annotation \(a.csv or a.json\)"):
        ParticleFolder(tmp_path)

    (tmp_path / "a.csv").write_text("1,2\n10,3\n")  # x = 10 is outside a 10-column image
    with pytest.raises(ValueError, match=r"a.csv': centre 1 \(x=10.0, y=3.0\) is outside the 10 x 20 image"):
        ParticleFolder(tmp_path)

    (tmp_path / "a.csv").write_text("1,2\n3,abc\n")
    with pytest.raises(ValueError, match=r"a.csv' line 2: non-numeric centre"):
        ParticleFolder(tmp_path)

    (tmp_path / "a.csv").unlink()
    (tmp_path / "a.json").write_text("[[1, 2], [3]]")
    with pytest.raises(ValueError, match=r"a.json': centre 1 is not \[x, y\]"):
        ParticleFolder(tmp_path)
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"a.json': invalid JSON"):
        ParticleFolder(tmp_path)

    (tmp_path / "a.json").write_text("[]")
    (tmp_path / "broken.png").write_bytes(b"this is not a PNG")
    with pytest.raises(ValueError, match=r"could not read image '.*broken.png'"):
        ParticleFolder(tmp_path)
