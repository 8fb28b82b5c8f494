"""Golden outputs of HRNet (V1 pose, V2 segmentation, V2p detection neck), BiSeNet V2 (with and
without the booster heads) and HyperSeg (v1_0, v1_0_unify, v0_1).

The expected outputs were produced once by the *official* model code (HRNet-Semantic-
Segmentation, HRNet-Human-Pose-Estimation, HRNet-Object-Detection, CoinCheung/BiSeNet,
YuvalNirkin/hyperseg, at the commits of ``tools/gen_official_keys.py``) with the seeded weights
and input of ``tests/golden.py``, by ``tools/gen_golden_outputs.py``; fastvision matched them to
<= 5e-7 then. Parameter counts, keys and shapes cannot see an activation or an interpolation
mode; these outputs can (e.g. removing a ReLU of BiSeNet V2's GELayerS1 fails here)."""

import pytest

import golden

CASES = [name for name, case in golden.CASES.items() if case[3] == "official"]


@pytest.mark.parametrize("name", CASES)
def test_segmentation_model_matches_official_golden_outputs(name):
    golden.check_case(name)


def test_the_official_cases_cover_every_segmentation_family():
    assert {n.split("_")[0] for n in CASES} == {"hrnetv2", "hrnetv1", "hrnetv2p", "bisenetv2", "hyperseg"}
