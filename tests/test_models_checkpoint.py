"""fastvision.models.checkpoint: every accepted format read by one reader, with one set of errors."""

import pickle

import pytest
import torch

from fastvision.models import get_model, load_model, read_checkpoint, shipped_path, shipped_weights


def _snet_state(**kwargs):
    return get_model("snet", num_out_points=8, **kwargs).state_dict()


def _same_weights(model, state):
    return all(torch.equal(v.float(), state[k].float()) for k, v in model.state_dict().items())


def test_training_checkpoint_rebuilds_its_model(tmp_path):
    state = _snet_state()
    spec = {"name": "snet", "kwargs": {"num_out_points": 8}}
    torch.save({"model": state, "model_spec": spec, "optimizer": {"state": {}}, "epoch": 3},
               tmp_path / "ckpt.pt")
    model, meta = load_model(tmp_path / "ckpt.pt")
    assert _same_weights(model, state) and not model.training
    assert meta == {"model_spec": spec, "epoch": 3}  # the optimizer is not metadata
    # naming the model is allowed when it agrees, refused when it does not
    load_model(tmp_path / "ckpt.pt", model="snet")
    with pytest.raises(ValueError, match="model 'progressivenet' does not match the checkpoint's "
                                         "model 'snet'"):
        load_model(tmp_path / "ckpt.pt", model="progressivenet")


def test_plain_state_dict_needs_the_model_name(tmp_path):
    state = _snet_state()
    for i, stored in enumerate([state, {"state_dict": state}, {"model_state_dict": state}]):
        path = tmp_path / f"plain{i}.pt"
        torch.save(stored, path)
        with pytest.raises(ValueError, match="plain state dict"):
            load_model(path)
        model, meta = load_model(path, model="snet", num_out_points=8)
        assert _same_weights(model, state)
        assert meta == {"model_spec": {"name": "snet", "kwargs": {"num_out_points": 8}}}


def test_official_checkpoint_goes_through_the_model_converter(tmp_path):
    state = get_model("bisenetv2", num_classes=3).state_dict()
    torch.save(state, tmp_path / "official.pt")
    # A training-mode checkpoint into an eval-mode model: only the converter drops the heads.
    with pytest.raises(RuntimeError, match="does not match bisenetv2"):
        load_model(tmp_path / "official.pt", model="bisenetv2", num_classes=3, aux_mode="eval")
    model, _ = load_model(tmp_path / "official.pt", model="bisenetv2", official=True,
                          num_classes=3, aux_mode="eval")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_shipped_weights_load_in_float32():
    assert "padnet_x1" in shipped_weights()
    model, meta = load_model(shipped_path("padnet_x1"))
    assert {"model_spec", "recipe", "metrics"} <= set(meta)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with pytest.raises(ValueError, match="no shipped weights named 'nope'; available: .*padnet_x1"):
        shipped_path("nope")


class _NotATensor:
    pass


def test_read_errors_name_the_file_and_never_unpickle_objects(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.pt"):
        read_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="could not read checkpoint .*corrupt.pt"):
        load_model(corrupt, model="snet")
    # An arbitrary pickled object is refused (weights_only=True), and the message does not tell
    # the user to switch that off.
    evil = tmp_path / "object.pt"
    torch.save({"model": _NotATensor()}, evil, pickle_module=pickle)
    with pytest.raises(RuntimeError, match="could not read checkpoint .*object.pt.*_NotATensor") as err:
        read_checkpoint(evil)
    assert "weights_only" not in str(err.value)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(RuntimeError, match="does not hold a state dict"):
        load_model(listed, model="snet")
    torch.save(_snet_state(output_bn=False), tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="other.pt' does not match snet"):
        load_model(tmp_path / "other.pt", model="snet", num_out_points=8)
