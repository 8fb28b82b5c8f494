"""fastvision.models for the point-cloud sampling papers: PointNet task nets, S-NET, ProgressiveNet."""

import math

import pytest
import torch

from fastvision import models
from fastvision.models import get_model, list_models, pointnet_cls_loss


def n_params(m):
    return sum(p.numel() for p in m.parameters())


# Official counts (models-facts sections 1-2, computed from the official TF layer lists).
@pytest.mark.parametrize(
    "name,kwargs,expected",
    [
        ("pointnet_cls", {}, 3_480_049),
        ("pointnet_cls_vanilla", {}, 819_624),
        ("snet", {"num_out_points": 32}, 225_312),
        ("snet", {"num_out_points": 32, "output_bn": False}, 225_120),
        # 200,448 + 256*3k + 3k + 2*3k  (formula of models-facts section 2)
        ("snet", {"num_out_points": 64}, 200_448 + 256 * 192 + 192 + 2 * 192),
        ("snet", {}, 200_448 + 256 * 192 + 192 + 2 * 192),  # official default k = 64
        ("progressivenet", {}, 200_448 + 256 * 3072 + 3072 + 2 * 3072),
    ],
)
def test_param_counts(name, kwargs, expected):
    assert n_params(get_model(name, **kwargs)) == expected


def test_pointnet_tnet_param_split():
    m = get_model("pointnet_cls")
    assert n_params(m.transform_net1) == 803_081
    assert n_params(m.transform_net2) == 1_857_344


def test_pointnet_num_classes():
    m = get_model("pointnet_cls", num_classes=10)
    assert n_params(m) == 3_480_049 - 30 * 257
    assert n_params(get_model("pointnet_cls_vanilla", num_classes=10)) == 819_624 - 30 * 257


def test_bn_eps_and_dropout():
    for name in ("pointnet_cls", "pointnet_cls_vanilla", "snet"):
        m = get_model(name)
        bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm1d)]
        assert bns and all(bn.eps == 1e-3 for bn in bns)
    drops = [mod for mod in get_model("pointnet_cls").modules() if isinstance(mod, torch.nn.Dropout)]
    assert [d.p for d in drops] == [0.3, 0.3]
    drops = [mod for mod in get_model("pointnet_cls_vanilla").modules() if isinstance(mod, torch.nn.Dropout)]
    assert [d.p for d in drops] == [0.3]


def test_pointnet_forward_shapes_and_identity_transforms():
    torch.manual_seed(0)
    m = get_model("pointnet_cls")
    x = torch.randn(4, 128, 3)
    logits, ep = m(x)
    assert logits.shape == (4, 40)
    eye64 = torch.eye(64).expand(4, 64, 64)
    assert ep["transform"].shape == (4, 64, 64)
    assert torch.equal(ep["transform"], eye64)  # zero weight + identity bias at init
    assert torch.equal(ep["input_transform"], torch.eye(3).expand(4, 3, 3))
    assert ep["GFV"].shape == (4, 1024)
    assert ep["retrieval_vectors"].shape == (4, 256)
    assert ep["critical_set_idx"].shape == (4, 1024)
    logits_v, ep_v = get_model("pointnet_cls_vanilla")(x)
    assert logits_v.shape == (4, 40) and "transform" not in ep_v


def test_feature_transform_applied_as_tf_matmul():
    # tf.matmul(net (B,N,64), T): make T a permutation and check against a manual computation.
    torch.manual_seed(1)
    m = get_model("pointnet_cls").eval()
    perm = torch.randperm(64)
    P = torch.eye(64)[perm]
    with torch.no_grad():
        m.transform_net2.transform.bias.copy_(P.flatten())
    x = torch.randn(2, 32, 3)
    feats = {}
    m.conv3.register_forward_hook(lambda mod, inp, out: feats.setdefault("in", inp[0]))
    m.conv2.register_forward_hook(lambda mod, inp, out: feats.setdefault("c2", out))
    m(x)
    expected = torch.matmul(feats["c2"].transpose(1, 2), P).transpose(1, 2)
    torch.testing.assert_close(feats["in"], expected)


def test_loss_regulariser_hand_example():
    logits = torch.zeros(2, 40)
    labels = torch.tensor([3, 7])
    t = torch.stack([2 * torch.eye(64), torch.eye(64)])
    # A A^T - I = 3 I for the first, 0 for the second: l2_loss = 64 * 9 / 2 = 288
    loss = pointnet_cls_loss(logits, labels, t)
    assert loss.item() == pytest.approx(math.log(40) + 0.001 * 288, rel=1e-6)
    loss = pointnet_cls_loss(logits, labels, t, reg_weight=0.01)
    assert loss.item() == pytest.approx(math.log(40) + 2.88, rel=1e-6)
    assert pointnet_cls_loss(logits, labels, None).item() == pytest.approx(math.log(40), rel=1e-6)
    # off-diagonal example: A = [[1, 1], [0, 1]] -> A A^T - I = [[1, 1], [1, 0]], l2 = 3/2
    a = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    assert pointnet_cls_loss(torch.zeros(1, 5), torch.tensor([0]), a, reg_weight=1.0).item() == \
        pytest.approx(math.log(5) + 1.5, rel=1e-6)


def test_loss_backward_through_model():
    torch.manual_seed(2)
    m = get_model("pointnet_cls", num_classes=5)
    logits, ep = m(torch.randn(3, 64, 3))
    loss = pointnet_cls_loss(logits, torch.tensor([0, 1, 4]), ep["transform"])
    loss.backward()
    assert m.transform_net2.transform.weight.grad is not None


@pytest.mark.parametrize("name,k", [("snet", 32), ("snet", 5), ("progressivenet", 1024)])
def test_snet_forward_shape(name, k):
    torch.manual_seed(3)
    m = get_model(name) if name == "progressivenet" else get_model(name, num_out_points=k)
    y = m(torch.randn(2, 256, 3))
    assert y.shape == (2, k, 3)


def test_snet_output_layout_point_major():
    # TF tf.reshape(fc14b, [B, -1, 3]): output feature 3*i + c is coordinate c of point i
    torch.manual_seed(4)
    m = get_model("snet", num_out_points=4, output_bn=False).eval()
    x = torch.randn(2, 50, 3)
    feats = {}
    m.fc14b.register_forward_hook(lambda mod, inp, out: feats.setdefault("fc", out))
    y = m(x)
    torch.testing.assert_close(y, feats["fc"].reshape(2, 4, 3))
    assert torch.equal(y[:, 1, 2], feats["fc"][:, 5])
    assert m.fc14b_bn is None
    assert isinstance(get_model("snet").fc14b_bn, torch.nn.BatchNorm1d)


@pytest.mark.parametrize("name", ["pointnet_cls", "pointnet_cls_vanilla", "snet", "progressivenet"])
def test_eval_determinism(name):
    torch.manual_seed(5)
    m = get_model(name)
    x = torch.randn(3, 100, 3)
    m.train()
    m(x)  # update BN running stats (so eval is not the trivial init state)
    m.eval()
    out1, out2 = m(x), m(x)
    if isinstance(out1, tuple):
        out1, out2 = out1[0], out2[0]
    assert torch.equal(out1, out2)
    # per-sample independence in eval: batch result equals single-sample results
    single = m(x[1:2])
    single = single[0] if isinstance(single, tuple) else single
    torch.testing.assert_close(out1[1:2], single, rtol=1e-5, atol=1e-5)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        get_model("snet")(torch.randn(2, 3, 100)[:, :, :2])
    with pytest.raises(ValueError):
        get_model("pointnet_cls")(torch.randn(10, 3))
    with pytest.raises(ValueError):
        get_model("snet", num_out_points=0)


def test_registry():
    names = list_models()
    for n in ("pointnet_cls", "pointnet_cls_vanilla", "snet", "progressivenet"):
        assert n in names
    assert names == sorted(names)
    with pytest.raises(ValueError) as ei:
        get_model("pointnet_cls_typo")
    msg = str(ei.value)
    assert "pointnet_cls_typo" in msg and all(n in msg for n in names)
    with pytest.raises(TypeError):
        get_model("snet", no_such_kwarg=1)
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("snet")(lambda **kw: None)


def test_register_model_decorator():
    name = "_test_tiny_model"

    @models.register_model(name)
    def _tiny(*, num_classes=3, weights=None):
        return torch.nn.Linear(2, num_classes)

    try:
        assert name in list_models()
        assert get_model(name, num_classes=4).out_features == 4
    finally:
        models._MODELS.pop(name)


@pytest.mark.parametrize(
    "name,kwargs",
    [("pointnet_cls", {"num_classes": 7}), ("pointnet_cls_vanilla", {}),
     ("snet", {"num_out_points": 16})],
)
def test_weights_round_trip(tmp_path, name, kwargs):
    torch.manual_seed(6)
    src = get_model(name, **kwargs)
    src.train()
    src(torch.randn(2, 40, 3))  # non-trivial running stats
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    src.eval()
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = get_model(name, weights=str(path), **kwargs).eval()
    x = torch.randn(2, 40, 3)
    a, b = src(x), dst(x)
    a = a[0] if isinstance(a, tuple) else a
    b = b[0] if isinstance(b, tuple) else b
    assert torch.equal(a, b)
    # wrapped in {"state_dict": ...} and as a pathlib.Path
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, tmp_path / "w2.pt")
    dst2 = get_model(name, weights=tmp_path / "w2.pt", **kwargs)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst2.state_dict()[k])


def test_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        get_model("snet", weights=str(tmp_path / "missing.pt"))
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a torch checkpoint \x00\x01\x02")
    with pytest.raises(RuntimeError, match="could not read weights file"):
        get_model("snet", weights=str(bad))
    # truncated real checkpoint
    good = tmp_path / "good.pt"
    torch.save(get_model("snet", num_out_points=8).state_dict(), good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(RuntimeError, match="could not read weights file"):
        get_model("snet", num_out_points=8, weights=str(trunc))
    # strict=True: a checkpoint of another shape / architecture is refused
    with pytest.raises(RuntimeError, match="does not match"):
        get_model("snet", num_out_points=16, weights=str(good))
    with pytest.raises(RuntimeError, match="does not match"):
        get_model("snet", num_out_points=8, output_bn=False, weights=str(good))
    notsd = tmp_path / "list.pt"
    torch.save([1, 2, 3], notsd)
    with pytest.raises(RuntimeError, match="state dict"):
        get_model("snet", weights=str(notsd))
