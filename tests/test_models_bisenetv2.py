"""fastvision.models.bisenetv2: BiSeNet V2 in the official CoinCheung layout."""

import pytest
import torch

from helpers import listing, n_params, official_listing
from fastvision.models import get_model
from fastvision.models.bisenetv2 import BiSeNetV2, GELayerS1, GELayerS2, drop_booster_heads


@pytest.fixture(scope="module")
def train_model():
    return get_model("bisenetv2")


@pytest.fixture(scope="module")
def eval_model():
    return get_model("bisenetv2", aux_mode="eval").eval()


def test_param_counts(train_model, eval_model):
    # tools/gen_official_keys.py: official BiSeNetV2(19, aux_mode='train' / 'eval')
    assert n_params(train_model) == 5_231_487
    assert n_params(eval_model) == 3_358_627
    # the 1024-wide main head: 3x3 conv 128->1024, BN, 1x1 conv 1024->19 with bias
    assert n_params(train_model.head) == 128 * 1024 * 9 + 2 * 1024 + 1024 * 19 + 19


def test_state_dicts_match_official(train_model, eval_model):
    assert listing(train_model) == official_listing("bisenetv2")
    assert listing(eval_model) == official_listing("bisenetv2_eval")


def test_num_classes_changes_only_classifiers():
    m = BiSeNetV2(num_classes=5, aux_mode="train")
    # main head: 1024 -> classes; boosters: up^2 -> classes (16, 64, 256, 1024)
    per_class = (1024 + 1) + (16 + 1) + (64 + 1) + (256 + 1) + (1024 + 1)
    assert n_params(m) == 5_231_487 - 14 * per_class


def test_train_mode_outputs(train_model):
    train_model.train()
    out = train_model(torch.randn(2, 3, 64, 96))
    assert isinstance(out, tuple) and len(out) == 5
    assert all(o.shape == (2, 19, 64, 96) for o in out)


def test_eval_and_pred_outputs(eval_model):
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        logits = eval_model(x)
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, 19, 64, 96)
        assert torch.equal(logits, eval_model(x))  # eval-mode determinism
        eval_model.aux_mode = "pred"
        try:
            pred = eval_model(x)
        finally:
            eval_model.aux_mode = "eval"
    assert pred.dtype == torch.int32 and pred.shape == (2, 64, 96)
    assert torch.equal(pred, logits.argmax(1).int())


def test_train_checkpoint_loads_into_eval_model(tmp_path, train_model):
    train_model.eval()
    path = tmp_path / "bisenetv2_train.pt"
    torch.save(drop_booster_heads(train_model.state_dict()), path)
    m = get_model("bisenetv2", aux_mode="eval", weights=str(path)).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(m(x), train_model(x)[0])
    train_model.train()


def test_booster_heads_are_trained():
    m = BiSeNetV2(aux_mode="train").train()
    sum(o.square().mean() for o in m(torch.randn(2, 3, 64, 96))).backward()
    no_grad = [n for n, p in m.named_parameters() if p.grad is None]
    assert no_grad == []


def test_init_follows_official():
    m = BiSeNetV2(aux_mode="eval")
    ge = [x for x in m.modules() if isinstance(x, (GELayerS1, GELayerS2))]
    assert len(ge) == 8  # S3: 2, S4: 2, S5_4: 4
    for layer in ge:
        assert torch.count_nonzero(layer.conv2[1].weight) == 0  # zero-init last BN
        assert torch.all(layer.conv1.bn.weight == 1)
    assert torch.all(m.head.conv_out[1].bias == 0)


def test_bga_upsamples_nearest_x4():
    bga = BiSeNetV2(aux_mode="eval").bga.eval()
    x_d, x_s = torch.randn(1, 128, 8, 8), torch.randn(1, 128, 2, 2)
    with torch.no_grad():
        out = bga(x_d, x_s)

        def up4(t):
            return t.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)

        left = bga.left1(x_d) * torch.sigmoid(up4(bga.right1(x_s)))
        right = up4(bga.left2(x_d) * torch.sigmoid(bga.right2(x_s)))
        torch.testing.assert_close(out, bga.conv(left + right))


def test_bad_inputs_raise(eval_model):
    with pytest.raises(ValueError, match=r"x must be .*\(1, 4, 64, 64\)"):
        eval_model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="divisible by 32, got 60x64"):
        eval_model(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="aux_mode must be one of .* got 'aux'"):
        BiSeNetV2(aux_mode="aux")
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        BiSeNetV2(num_classes=0)
    eval_model.aux_mode = "train"
    try:
        with pytest.raises(ValueError, match="booster heads"):
            eval_model(torch.randn(1, 3, 64, 64))
    finally:
        eval_model.aux_mode = "eval"
