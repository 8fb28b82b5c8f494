"""fastvision.models.checkpoint: every accepted format read by one reader, with one set of errors
(named shipped weights: tests/test_models_weights.py)."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from fastvision.models import get_model, load_model, read_checkpoint, write_safetensors


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


def test_safetensors_file_with_metadata_rebuilds_its_model(tmp_path):
    state = {k: v.half() if v.is_floating_point() else v for k, v in _snet_state().items()}
    spec = {"name": "snet", "kwargs": {"num_out_points": 8}}
    path = tmp_path / "snet.safetensors"
    write_safetensors(path, state, {"model_spec": spec, "recipe": "by hand"})
    model, meta = load_model(path)
    assert _same_weights(model, state) and all(p.dtype == torch.float32 for p in model.parameters())
    assert meta == {"model_spec": spec, "recipe": "by hand"}
    assert _same_weights(get_model("snet", num_out_points=8, weights=path), state)
    with pytest.raises(RuntimeError, match="snet.safetensors' does not match SNet"):
        get_model("snet", num_out_points=4, weights=path)
    with pytest.raises(ValueError, match="must hold model_spec"):
        write_safetensors(tmp_path / "x.safetensors", state, {"recipe": "no spec"})


def test_plain_safetensors_file_needs_the_model_name(tmp_path):
    state = _snet_state()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "plain.bin")  # any suffix
    with pytest.raises(ValueError, match="plain state dict"):
        load_model(tmp_path / "plain.bin")
    model, _ = load_model(tmp_path / "plain.bin", model="snet", num_out_points=8)
    assert _same_weights(model, state)


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_damaged_safetensors_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "snet.safetensors"
    write_safetensors(path, _snet_state(), {"model_spec": {"name": "snet", "kwargs": {}}})
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # a byte of the JSON header
        data[20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="could not read checkpoint .*snet.safetensors' as safetensors"):
        load_model(path)


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
