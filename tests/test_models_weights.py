"""Named shipped weights (fastvision.models.weights + the one reader in checkpoint.py): names and
tags, the table against the files, sha256 checks, and clear errors for a wrong or damaged file."""

import hashlib
import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fastvision.models import get_model, get_weights, list_weights, load_model
from fastvision.models import weights as weights_table

SHIPPED = ["hrnetv2_w18_small_v1.embedded", "padnet.embedded", "pointnet_cls_vanilla.embedded", "samplenet.embedded_r32",
           "snet.embedded_r32"]


def _same_weights(model, state):
    return all(torch.equal(v.float(), state[k].float()) for k, v in model.state_dict().items())


def test_list_weights():
    assert list_weights() == SHIPPED
    assert list_weights("padnet") == ["padnet.embedded"]
    assert list_weights("bisenetv2") == []
    assert list_weights("hrnetv2_w18_small_v1") == ["hrnetv2_w18_small_v1.embedded"]


def test_get_model_by_tag_or_full_name_and_load_model_by_name():
    state = load_file(get_weights("padnet.embedded").path)
    by_tag = get_model("padnet", weights="embedded")
    by_name = get_model("padnet", weights="padnet.embedded")
    model, meta = load_model("padnet.embedded")
    for m in (by_tag, by_name, model):
        assert _same_weights(m, state)
        assert all(p.dtype == torch.float32 for p in m.parameters())  # float16 file, float32 model
    assert meta["weights"] == "padnet.embedded" and meta["model_spec"] == {"name": "padnet", "kwargs": {}}
    assert {"recipe", "data", "metrics", "evaluation", "license"} <= set(meta)
    # the weights' builder arguments are used, and one that disagrees is refused
    assert get_model("snet", weights="embedded_r32").num_out_points == 16
    with pytest.raises(ValueError, match="num_out_points=8 does not match the weights 'snet.embedded_r32', "
                                         "made with num_out_points=16"):
        get_model("snet", weights="embedded_r32", num_out_points=8)
    # a builder called directly takes the full name
    from fastvision.models.padnet import padnet
    assert _same_weights(padnet(weights="padnet.embedded"), state)


def test_unknown_or_foreign_names():
    with pytest.raises(ValueError, match="no shipped weights named 'nope'; available: hrnetv2_w18_small_v1.embedded, padnet.embedded"):
        get_weights("nope")
    with pytest.raises(ValueError, match="weights 'padnet.embedded' are for model 'padnet', not 'padnet_x2'"):
        get_model("padnet_x2", weights="padnet.embedded")
    with pytest.raises(ValueError, match="weights 'padnet.embedded' are for model 'padnet', not 'snet'"):
        load_model("padnet.embedded", model="snet")
    # not a name: a path, and a missing one
    with pytest.raises(FileNotFoundError, match="checkpoint not found: 'embedded' .nor is it the "
                                                "name of shipped weights"):
        load_model("embedded")
    with pytest.raises(FileNotFoundError, match="checkpoint not found: 'embedded' .nor"):
        get_model("snet", weights="embedded")  # not a tag of snet


@pytest.mark.parametrize("name", SHIPPED)
def test_table_matches_the_files(name):
    entry = get_weights(name)
    assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.sha256
    with safe_open(entry.path, "pt") as f:
        header = json.loads(f.metadata()["fastvision"])
    assert header["model_spec"] == entry.model_spec
    for key in ("recipe", "data", "metrics", "evaluation", "license"):
        assert header[key] == getattr(entry, key), key
    assert entry.tag and entry.metrics and entry.license
    model, _ = load_model(name)
    assert isinstance(model, torch.nn.Module) and not model.training


def test_nothing_pickled_ships():
    files = sorted(p.name for p in weights_table.SHIPPED_DIR.iterdir())
    assert files == sorted(["index.json"] + [get_weights(n).file for n in SHIPPED])


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """The shipped files copied to a folder that the table reads instead (to damage them)."""
    for path in weights_table.SHIPPED_DIR.iterdir():
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setattr(weights_table, "SHIPPED_DIR", tmp_path)
    return tmp_path


@pytest.mark.parametrize("damage", ["truncated", "flipped byte"])
def test_a_damaged_shipped_file_fails_its_hash(shipped_copy, damage):
    path = shipped_copy / "padnet.embedded.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:-100]
    else:  # a byte of a tensor: still valid safetensors, wrong weights
        data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"shipped weights 'padnet.embedded' .*corrupt or was changed: "
                                           r"sha256 [0-9a-f]{64}, expected [0-9a-f]{64} \(reinstall"):
        get_model("padnet", weights="embedded")
    with pytest.raises(RuntimeError, match="corrupt or was changed"):
        load_model("padnet.embedded")


def test_a_missing_shipped_file(shipped_copy):
    (shipped_copy / "padnet.embedded.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="shipped weights 'padnet.embedded' .*missing"):
        load_model("padnet.embedded")


def test_a_shipped_file_of_another_model(shipped_copy):
    """A file whose hash the table accepts but whose header names another model (a row edited
    by hand after a wrong copy) is refused before any weight is loaded."""
    snet = get_weights("snet.embedded_r32")
    wrong = replace(get_weights("padnet.embedded"), file=snet.file, sha256=snet.sha256)
    with pytest.raises(RuntimeError, match=r"was made for .*'snet'.*the table says .*'padnet'"):
        load_model(wrong)
    with pytest.raises(RuntimeError, match="was made for"):
        get_model("padnet", weights=wrong)
