"""`fastvision weights` and the `--weights` option (a shipped weights name or a path)."""

import json

from fastvision.cli import main
from fastvision.models import list_weights


def test_weights_lists_the_table(capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    for name in list_weights():
        assert f"{name}\n  model    " in out
    assert main(["weights", "--model", "padnet", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert list(table) == ["padnet.embedded"]
    row = table["padnet.embedded"]
    assert row["model"] == "padnet" and len(row["sha256"]) == 64 and row["metrics"]["f1"] > 0.9
    assert row["file"].endswith("padnet.embedded.safetensors")


def test_eval_takes_weights_by_name(capsys):
    # the name resolves to the shipped PAD-Net, which is not a segmentation or pose model
    assert main(["eval", "segmentation", "--weights", "padnet.embedded"]) == 2
    assert "cannot tell the recipe family of model 'padnet'" in capsys.readouterr().err
    assert main(["eval", "pose", "--weights", "padnet.embedded"]) == 2
    assert "holds 'padnet', not a pose model" in capsys.readouterr().err
    # the old spelling still works
    assert main(["eval", "pose", "--checkpoint", "padnet.embedded"]) == 2
    assert "holds 'padnet', not a pose model" in capsys.readouterr().err
