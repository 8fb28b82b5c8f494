"""Issue 15: the command line and the model registry answer bad input with one clear line.

A corrupt or foreign checkpoint never gets the advice to unpickle it (``weights_only=False``),
``fastvision eval`` prints one line and exits 2 (as ``detect`` does), ``detect`` refuses huge
images before decoding them and warns when it converts colour to grayscale, and ``get_model``
checks class counts."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fastvision.cli import main
from fastvision.models import get_model


class NotAWeight:
    """A pickled object of a foreign class: a weights-only load must refuse it."""


@pytest.fixture
def files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02 definitely not a checkpoint" * 4)
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(pickle.dumps({"model": NotAWeight()}))
    student = tmp_path / "student.pt"
    torch.save({"model": get_model("padnet").state_dict(), "model_spec": {"name": "padnet", "kwargs": {}}}, student)
    pad = tmp_path / "pad.png"
    Image.fromarray((np.random.default_rng(0).random((48, 112)) * 255).astype(np.uint8)).save(pad)
    return {"garbage": garbage, "foreign": foreign, "student": student, "pad": pad, "dir": tmp_path}


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("which", ["garbage", "foreign"])
def test_detect_with_a_bad_model_file_never_advises_unpickling(capsys, files, which):
    code, err = _run(capsys, ["detect", files["pad"], "--out", files["dir"] / "o", "--model", files[which], "--quiet"])
    assert code == 2
    assert f"could not read checkpoint {str(files[which])!r} as a torch checkpoint of tensors" in err
    assert "weights_only" not in err.replace("weights-only", "") and "likely succeed" not in err


@pytest.mark.parametrize("argv, message", [
    (["eval", "segmentation", "--checkpoint", "{garbage}"], "could not read checkpoint"),
    (["eval", "segmentation", "--checkpoint", "{student}"], "cannot tell the recipe family of model 'padnet'"),
    (["eval", "pose", "--checkpoint", "{foreign}"], "could not read checkpoint"),
    (["eval", "pose", "--checkpoint", "{student}"], "holds 'padnet', not a pose model"),
    (["eval", "padnet", "--teacher", "{garbage}", "--out", "{dir}/o", "--quiet"], "could not read checkpoint"),
    (["eval", "padnet", "--teacher", "{student}", "--out", "{dir}/o", "--quiet"],
     "--teacher '{student}' holds 'padnet', not a training checkpoint of 'padnet_teacher'"),
])
def test_eval_with_a_bad_checkpoint_prints_one_line_and_exits_2(capsys, files, argv, message):
    argv = [a.format(**files) for a in argv]
    code, err = _run(capsys, argv)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"fastvision eval {argv[1]}: error: ") and message.format(**files) in err


def test_detect_refuses_a_huge_image_before_decoding_it(capsys, files):
    huge = files["dir"] / "huge.png"
    Image.new("L", (2049, 2048)).save(huge)  # one column over 2048 x 2048
    code, err = _run(capsys, ["detect", huge, "--out", files["dir"] / "o", "--quiet"])
    assert code == 2
    assert "is 2049 x 2048 pixels; detect supports up to 4194304 pixels" in err


def test_detect_converts_colour_with_a_warning(capsys, files):
    rgba = files["dir"] / "colour.png"
    Image.open(files["pad"]).convert("RGBA").save(rgba)
    with pytest.warns(UserWarning, match=r"colour.png' is RGBA, not grayscale: converted to grayscale"):
        code, _ = _run(capsys, ["detect", rgba, "--out", files["dir"] / "o", "--quiet"])
    assert code == 0
    assert (files["dir"] / "o" / "counts.csv").is_file()


def test_detect_takes_grayscale_without_a_warning(capsys, files, recwarn):
    code, _ = _run(capsys, ["detect", files["pad"], "--out", files["dir"] / "o", "--quiet"])
    assert code == 0
    assert not [w for w in recwarn if "not grayscale" in str(w.message)]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"num_classes": 0}, ValueError, "get_model('pointnet_cls'): num_classes must be at least 1, got 0"),
    ({"num_classes": -1}, ValueError, "num_classes must be at least 1, got -1"),
    ({"num_classes": "ten"}, TypeError, "num_classes must be an int, got str 'ten'"),
    ({"num_classes": 2.0}, TypeError, "num_classes must be an int, got float 2.0"),
])
def test_get_model_checks_class_counts(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_model("pointnet_cls", **kwargs)


def test_get_model_checks_joint_and_point_counts():
    with pytest.raises(ValueError, match="get_model\\('hrnetv1_w32_pose'\\): num_joints must be at least 1, got 0"):
        get_model("hrnetv1_w32_pose", num_joints=0)
    with pytest.raises(ValueError, match="get_model\\('snet'\\): num_out_points must be at least 1, got 0"):
        get_model("snet", num_out_points=0)
    assert get_model("pointnet_cls", num_classes=1) is not None
