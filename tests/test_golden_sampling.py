"""Golden outputs of the sampling networks: PointNet (with its T-nets and end points), S-NET and
SampleNet, eval mode.

Generated from fastvision itself (``tools/gen_golden_outputs.py``): the official code of the
sampling papers is TensorFlow 1 and does not run here; the layer structure was checked against
the official graphs and the SampleNet PyTorch layout separately (``test_models_sampling.py``).
These pin the forward computation: any change of it fails here."""

import pytest

import golden


@pytest.mark.parametrize("name", ["pointnet_cls", "snet", "samplenet"])
def test_sampling_network_matches_golden_outputs(name):
    golden.check_case(name)
