"""fastvision.models for PAD-Net (PRCV 2021): sizes against the paper, shapes, structure, FLOP counter."""

import pytest
import torch
import torch.nn as nn

from fastvision.models import get_model, list_models
from fastvision.models.flops import Resize, count_ops, count_params
from fastvision.models.padnet import PAPER_COUNTS, padnet_bnecks
from fastvision.nn.mobilenet import Bneck

PAD = (112, 48)  # the paper's pad images: 112 rows x 48 columns


@pytest.mark.parametrize(
    "name,kwargs,key,params,mmacs",
    [
        ("padnet", {}, "padnet", 5_765, 8.596734),
        ("padnet_x2", {}, "padnet_x2", 15_669, 18.360716),
        ("padnet_x4", {}, "padnet_x4", 51_605, 52.083288),
        ("padnet_x4", {"decoder_plus": True}, "padnet_x4_decoder_plus", 66_257, 93.532248),
        ("padnet_teacher", {}, "padnet_teacher", 464_181, 406.515964),
        ("mv3_11bn", {}, "mv3_11bn", 433_233, None),
        ("mv2_4bn", {}, "mv2_4bn", 240_501, None),
        ("mv2_7bn", {}, "mv2_7bn", 1_814_005, None),
        ("unet", {}, "unet", 8_577, 4.424448),
    ],
)
def test_sizes_match_paper_within_5_percent(name, kwargs, key, params, mmacs):
    model = get_model(name, **kwargs).eval()
    count = count_ops(model, torch.zeros(1, 1, *PAD))
    assert count_params(model) == params
    if mmacs is None:
        mmacs = count.mega
    else:
        assert count.mega == pytest.approx(mmacs, abs=1e-6)
    paper_params, paper_mflops = PAPER_COUNTS[key]
    assert abs(params / paper_params - 1) < 0.05
    assert abs(mmacs / paper_mflops - 1) < 0.05


def test_mv3_6bn_size():
    # 5x5 depthwise kernels as in MobileNetV3-Small: parameters match, operations 6% above
    model = get_model("mv3_6bn").eval()
    assert count_params(model) == 221_833
    assert count_ops(model, torch.zeros(1, 1, *PAD)).mega == pytest.approx(150.9, abs=0.05)
    paper_params, paper_mflops = PAPER_COUNTS["mv3_6bn"]
    assert abs(221_833 / paper_params - 1) < 0.05
    assert 150.9 / paper_mflops - 1 == pytest.approx(0.06, abs=0.005)
    # Table 1's 3x3 kernels everywhere: operations match, parameters 7% below (module docstring)
    small = get_model("mv3_6bn", depthwise_kernel=3).eval()
    assert count_params(small) == 204_553
    assert count_ops(small, torch.zeros(1, 1, *PAD)).mega == pytest.approx(141.58, abs=0.01)
    assert all(b.depthwise.kernel_size == (3, 3) for b in small.encoder.blocks)
    with pytest.raises(ValueError, match="depthwise_kernel must be None, 3 or 5, got 7"):
        get_model("mv3_6bn", depthwise_kernel=7)


@pytest.mark.parametrize("name", ["mv3_6bn", "mv3_11bn", "mv2_4bn", "mv2_7bn"])
def test_comparison_encoders_output_and_taps(name):
    model = get_model(name).eval()
    logits, feats = model(torch.randn(1, 1, 56, 24), return_features=True)
    assert logits.shape == (1, 1, 56, 24)
    assert [tuple(f.shape[-2:]) for f in feats] == [(14, 6), (28, 12), (56, 24)]


def test_registered():
    assert {"padnet", "padnet_x2", "padnet_x4", "padnet_teacher", "mv3_6bn", "mv3_11bn", "mv2_4bn",
            "mv2_7bn", "unet"} <= set(list_models())


def test_table1_widths():
    assert padnet_bnecks(1)[0] == (3, 2, 8, 4, True, "RE", 1)
    assert padnet_bnecks(4)[4] == (3, 32, 128, 64, True, "HS", 2)
    enc = get_model("padnet_x2").encoder
    assert enc.stem.out_channels == 4 and enc.stem.stride == (1, 1)
    assert [b.project.out_channels for b in enc.blocks] == [8, 8, 16, 16, 32, 32]
    assert [b.expand.out_channels for b in enc.blocks] == [16, 16, 32, 32, 64, 64]
    assert [b.se is not None for b in enc.blocks] == [True, False, True, True, True, True]
    assert [type(b.expand_act).__name__ for b in enc.blocks] == ["ReLU", "ReLU"] + ["Hardswish"] * 4
    with pytest.raises(ValueError, match="width"):
        padnet_bnecks(0)


@pytest.mark.parametrize("size", [PAD, (37, 21), (8, 8)])
def test_output_at_input_resolution(size):
    model = get_model("padnet").eval()
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


def test_encoder_taps_and_features():
    model = get_model("padnet").eval()
    x = torch.randn(2, 1, *PAD)
    taps = model.encoder(x)
    assert isinstance(taps, tuple)
    assert [tuple(t.shape) for t in taps] == [(2, 4, 112, 48), (2, 8, 56, 24), (2, 16, 28, 12)]
    logits, feats = model(x, return_features=True)
    assert [tuple(f.shape) for f in feats] == [(2, 4, 28, 12), (2, 4, 56, 24), (2, 4, 112, 48)]
    assert torch.equal(logits, model(x))
    teacher = get_model("padnet_teacher").eval()
    _, tfeats = teacher(x, return_features=True)
    # Same resolutions as the student's chains, so distillation compares them position by position.
    assert [tuple(f.shape) for f in tfeats] == [(2, 24, 28, 12), (2, 24, 56, 24), (2, 24, 112, 48)]


def test_structure_for_the_fused_encoder():
    model = get_model("padnet")
    assert model.use_fused is True
    bns = [m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    # every conv is followed by its own BN module: stem, 3 per bneck, 2 per SE, shortcut of bneck 1
    assert len(bns) == len(convs) == 1 + 6 * 3 + 5 * 2 + 1
    assert all(c.bias is None for c in convs)


def test_bneck_residual_rules():
    b = Bneck(3, 2, 8, 4, True, "RE", 1)
    assert b.shortcut is not None  # stride 1, widths differ: 1x1 conv + BN
    assert Bneck(3, 4, 8, 4, False, "RE", 1).shortcut is None
    strided = Bneck(3, 4, 16, 8, True, "HS", 2).eval()
    assert strided.shortcut is None
    x = torch.randn(1, 4, 10, 6)
    assert strided(x).shape == (1, 8, 5, 3)
    # identity residual: zero the project BN and the output equals the input
    same = Bneck(3, 4, 8, 4, False, "RE", 1).eval()
    nn.init.zeros_(same.project_bn.weight)
    assert torch.equal(same(x), x)


def test_gradients_finite():
    model = get_model("padnet_x2").train()
    x = torch.randn(2, 1, 56, 24)
    model(x).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_bad_inputs():
    model = get_model("padnet")
    with pytest.raises(ValueError, match=r"x must be \(B, 1, H, W\), got shape \(2, 3, 112, 48\)"):
        model(torch.zeros(2, 3, *PAD))
    with pytest.raises(ValueError, match="x must be"):
        model(torch.zeros(1, *PAD))
    with pytest.raises(ValueError, match="floating-point.*torch.uint8"):
        model(torch.zeros(1, 1, *PAD, dtype=torch.uint8))
    with pytest.raises(ValueError, match="head_kernel must be 1 or 3, got 5"):
        get_model("padnet", head_kernel=5)
    with pytest.raises(ValueError, match="chain stages must be >= 1, got 0"):
        get_model("padnet", chain_stages=0)


def test_weights_roundtrip(tmp_path):
    model = get_model("padnet").eval()
    path = tmp_path / "padnet.pt"
    torch.save(model.state_dict(), path)
    loaded = get_model("padnet", weights=str(path)).eval()
    x = torch.randn(1, 1, *PAD)
    assert torch.equal(model(x), loaded(x))
    with pytest.raises(RuntimeError, match="does not match"):
        get_model("padnet_x2", weights=str(path))


def test_options_change_the_decoder():
    base = count_params(get_model("padnet"))
    assert count_params(get_model("padnet", head_kernel=3)) == base + 4 * 8
    assert count_params(get_model("padnet", chain_stages=3)) == base - 3 * (4 * 9 + 4 * 4)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, bias=True)
        self.dw = nn.Conv2d(3, 3, 3, stride=2, padding=1, groups=3, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.Hardswish()
        self.pool = nn.MaxPool2d(3, 1, 1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 5)
        self.up = Resize("bilinear")

    def forward(self, x):
        y = self.pool(self.act(self.bn(self.dw(self.conv(x)))))
        y = self.up(y, (8, 6))
        return self.fc(self.gap(y).flatten(1))


def test_op_counter_by_hand():
    count = count_ops(_Tiny().eval(), torch.zeros(1, 2, 8, 6))
    conv = 3 * 8 * 6 * (2 * 9 + 1)  # 864 outputs x (18 MACs + bias)
    dw = 3 * 4 * 3 * 9  # stride 2: 4x3 outputs per channel, 9 MACs each
    bn = 2 * 3 * 4 * 3
    up = 4 * 3 * 8 * 6  # bilinear, 4 per output element
    gap = 3 * 8 * 6 + 3  # sum every input, divide once per output
    fc = 5 * (3 + 1)
    assert count.by_type == {"Conv2d": conv + dw, "BatchNorm2d": bn, "Hardswish": 0, "MaxPool2d": 0,
                             "Resize": up, "AdaptiveAvgPool2d": gap, "Linear": fc}
    assert count.total == conv + dw + bn + up + gap + fc
    assert count.by_module["dw"] == dw
    with_acts = count_ops(_Tiny().eval(), torch.zeros(1, 2, 8, 6), activation_ops=1)
    assert with_acts.total == count.total + 3 * 4 * 3
    with pytest.raises(ValueError, match="activation_ops must be >= 0, got -1"):
        count_ops(_Tiny(), torch.zeros(1, 2, 8, 6), activation_ops=-1)
    with pytest.raises(ValueError, match="mode must be 'bilinear' or 'nearest', got 'cubic'"):
        Resize("cubic")


def test_encoder_argument_errors():
    from fastvision.nn.mobilenet import MobileNetV2Encoder, MobileNetV3Encoder

    with pytest.raises(ValueError, match=r"the last one 5, got \[1, 3\]"):
        MobileNetV3Encoder(padnet_bnecks(1), taps=(1, 3))
    with pytest.raises(ValueError, match="strides has 2 entries, bnecks 6"):
        MobileNetV3Encoder(padnet_bnecks(1), taps=(1, 3, 5), strides=(1, 2))
    with pytest.raises(ValueError, match=r"the last one 3, got \[2, 1, 3\]"):
        MobileNetV2Encoder(strides=(1, 1, 2, 2), taps=(2, 1, 3))
    with pytest.raises(ValueError, match="stride must be 1 or 2, got 3"):
        Bneck(3, 4, 8, 4, False, "RE", 3)
    with pytest.raises(ValueError, match="nonlinearity must be 'RE' or 'HS', got 'GELU'"):
        Bneck(3, 4, 8, 4, False, "GELU", 1)


# --- U-Net baseline (Table 6) -----------------------------------------------------------------


def test_unet_structure():
    model = get_model("unet")
    assert model.encoder.widths == (2, 4, 8, 16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # 4 encoder levels x 2 convs, 3 decoder steps x (up-conv + 2 convs), head
    assert len(convs) == 4 * 2 + 3 * 3 + 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(convs) - 1
    assert model.decoder.head.out_channels == 1 and model.decoder.head.bias is not None
    assert count_params(get_model("unet", head_kernel=3)) == 8_577 + 2 * 8
    assert count_params(get_model("unet", widths=(4, 8, 16))) != 8_577
    with pytest.raises(ValueError, match="widths needs >= 2 levels"):
        get_model("unet", widths=(4,))
    with pytest.raises(ValueError, match="head_kernel must be 1 or 3, got 5"):
        get_model("unet", head_kernel=5)


@pytest.mark.parametrize("size", [PAD, (37, 21), (4, 4), (1, 1)])
def test_unet_output_at_input_resolution(size):
    model = get_model("unet").eval()
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 1, *size) and torch.isfinite(out).all()


def test_unet_features_and_input_checks():
    model = get_model("unet").eval()
    x = torch.randn(2, 1, *PAD)
    logits, feats = model(x, return_features=True)
    assert torch.equal(logits, model(x))
    # the decoder steps, coarse to fine, at the resolutions of PAD-Net's three chains
    assert [tuple(f.shape) for f in feats] == [(2, 8, 28, 12), (2, 4, 56, 24), (2, 2, 112, 48)]
    assert [tuple(t.shape) for t in model.encoder(x)] == [(2, 2, 112, 48), (2, 4, 56, 24),
                                                          (2, 8, 28, 12), (2, 16, 14, 6)]
    with pytest.raises(ValueError, match=r"x must be \(B, 1, H, W\), got shape \(2, 3, 112, 48\)"):
        model(torch.zeros(2, 3, *PAD))
    with pytest.raises(ValueError, match="floating-point.*torch.uint8"):
        model(torch.zeros(1, 1, *PAD, dtype=torch.uint8))


def test_unet_trains_with_aal_and_is_evaluated_by_the_particle_metrics():
    from fastvision.data.particles import ProceduralParticles
    from fastvision.losses.particles import get_particle_loss
    from fastvision.metrics.particles import ParticleMetrics

    torch.manual_seed(0)
    data = ProceduralParticles("train", 8)
    images = torch.stack([data[i]["image"] for i in range(8)])
    targets = torch.stack([data[i]["target"] for i in range(8)])
    model = get_model("unet").train()
    loss_fn = get_particle_loss("aal")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = loss_fn(model(images), targets)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    metrics = ParticleMetrics()
    with torch.no_grad():
        centres = [data[i]["centres"] for i in range(8)]
        metrics.update_from_maps(torch.sigmoid(model(images)), centres)
    result = metrics.compute()
    assert result["images"] == 8 and result["tp"] + result["fn"] == sum(len(c) for c in centres)
