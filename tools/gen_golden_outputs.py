"""Write the golden model outputs of ``tests/data/golden/`` (run once by hand, not in CI).

For every case of ``tests/golden.py`` (``CASES``): build the model, fill its parameters and BN
statistics with the seeded values of ``golden.seed_weights``, run it in eval mode on the seeded
input and store the compact record (strided values, sum, sum of magnitudes) of each output.

Source of the outputs:

* ``official`` cases (HRNet V1 pose / V2 seg / V2p det, BiSeNet V2, HyperSeg v1_0 / unify / v0_1):
  the official model classes, built from the official repositories exactly as
  ``tools/gen_official_keys.py`` builds them (same commits, same shims; the repositories come
  through the session's ``fetch`` into /work/.mirror). The tool also seeds the fastvision twin,
  checks that both state dicts are equal entry for entry (same keys, same draws) and prints the
  largest output difference between the two.
* ``fastvision`` cases (PointNet, S-NET, SampleNet, PAD-Net and its teacher): fastvision's own
  models (the sampling papers' official code is TensorFlow; PAD-Net has no public code).

Usage: python tools/gen_golden_outputs.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import gen_official_keys as official  # noqa: E402
import golden  # noqa: E402

from fastvision.models import get_model  # noqa: E402

# Which official builder (gen_official_keys) yields each official case, by listing name.
FAMILY = {
    "hrnetv2_w18_small_v1": official.seg_models,
    "hrnetv1_w32_pose": official.pose_models,
    "hrnetv2p_w18": official.det_models,
    "bisenetv2": official.bisenet_models,
    "bisenetv2_eval": official.bisenet_models,
    "hyperseg_m_cityscapes": official.hyperseg_models,
    "hyperseg_s_cityscapes": official.hyperseg_models,
    "hyperseg_l_voc": official.hyperseg_models,
}


def official_model(name: str, tmp: str) -> torch.nn.Module:
    for listed, model in FAMILY[name](tmp):
        if listed == name:
            if name.startswith("hrnetv2p"):  # the detector's backbone + neck, as compared
                seq = torch.nn.Sequential()
                seq.backbone, seq.neck = model.backbone, model.neck
                return seq
            return model
    raise KeyError(name)


def fastvision_model(name: str) -> torch.nn.Module:
    model_name, kwargs, _, _ = golden.CASES[name]
    model = get_model(model_name, **kwargs)
    golden.seed_weights(model, golden.WEIGHT_SEED)
    return model.eval()


@torch.no_grad()
def run(model: torch.nn.Module, name: str) -> list[torch.Tensor]:
    shape = golden.CASES[name][2]
    return golden.flatten_outputs(model.eval()(golden.seeded_input(shape, golden.INPUT_SEED)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", choices=sorted(golden.CASES), help="only these cases")
    args = ap.parse_args()
    names = args.only or list(golden.CASES)
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        for name in names:
            source = golden.CASES[name][3]
            ours = fastvision_model(name)
            if source == "official":
                model = official_model(name, tmp)
                golden.seed_weights(model, golden.WEIGHT_SEED)
                theirs, mine = model.state_dict(), ours.state_dict()
                assert list(theirs) == list(mine), f"{name}: state-dict keys differ"
                for key in theirs:
                    assert torch.equal(theirs[key], mine[key]), f"{name}: seeded {key} differs"
                outputs = run(model, name)
                diff = max(float((a - b).abs().max()) for a, b in zip(outputs, run(ours, name)))
                print(f"{name}: official outputs; max |official - fastvision| = {diff:.3g}")
            else:
                outputs = run(ours, name)
                print(f"{name}: fastvision outputs")
            entry = {"source": source, "outputs": golden.record(outputs)}
            golden.save(name, entry)
            sizes = [tuple(t.shape) for t in outputs]
            print(f"  {sizes}, max |output| {max(float(t.abs().max()) for t in outputs):.3g}")


if __name__ == "__main__":
    main()
