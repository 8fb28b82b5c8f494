"""fastvision.models for the point-cloud sampling papers: PointNet task nets, S-NET, ProgressiveNet."""

import math

import numpy as np
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
        models._registry._MODELS.pop(name)


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
    with pytest.raises(RuntimeError, match="could not read checkpoint"):
        get_model("snet", weights=str(bad))
    # truncated real checkpoint
    good = tmp_path / "good.pt"
    torch.save(get_model("snet", num_out_points=8).state_dict(), good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(RuntimeError, match="could not read checkpoint"):
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


# ---------------------------------------------------------------------------------------------
# SampleNet (official PyTorch layout, itailang/SampleNet registration/src/samplenet.py)

OFFICIAL_SAMPLENET_KEYS = (
    [f"conv{i}.{p}" for i in range(1, 6) for p in ("weight", "bias")]
    + [f"bn{i}.{p}" for i in range(1, 6)
       for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    + [f"fc{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")]
    + [f"bn_fc{i}.{p}" for i in range(1, 4)
       for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    + ["project._temperature"]
)


@pytest.mark.parametrize("k,expected", [(32, 225_121), (64, 249_793), (1024, 989_953)])
def test_samplenet_param_counts(k, expected):
    assert n_params(get_model("samplenet", num_out_points=k)) == expected


def test_samplenet_state_dict_keys_and_defaults():
    m = get_model("samplenet", num_out_points=32)
    assert sorted(m.state_dict()) == sorted(OFFICIAL_SAMPLENET_KEYS)
    assert m.project.group_size == 8 and m.project._min_sigma == 1e-2
    assert m.project._temperature.item() == 1.0 and m.project._temperature.requires_grad
    assert all(bn.eps == 1e-5 for bn in m.modules() if isinstance(bn, torch.nn.BatchNorm1d))
    # output_bn=True adds BN(3k) on fc4 (TF classification layout): +2*3k parameters
    assert n_params(get_model("samplenet", num_out_points=32, output_bn=True)) == 225_121 + 192


def _reference_soft_projection(x_bcn, q_bcn, t, k, min_sigma):
    pts, q = x_bcn.transpose(1, 2), q_bcn.transpose(1, 2)  # B x N x 3, B x M x 3
    d = ((q[:, :, None, :] - pts[:, None, :, :]) ** 2).sum(-1)  # B x M x N
    dk, idx = torch.topk(d, k, dim=2, largest=False)
    sigma = torch.clamp(t ** 2, min=min_sigma)
    w = torch.softmax(-dk / sigma, dim=2)
    grouped = torch.gather(pts[:, None].expand(-1, q.shape[1], -1, -1), 2,
                           idx[..., None].expand(-1, -1, -1, 3))
    return (w[..., None] * grouped).sum(2).transpose(1, 2)


def test_samplenet_train_forward_projection_and_layout():
    torch.manual_seed(7)
    m = get_model("samplenet", num_out_points=16, group_size=4)
    x = torch.randn(2, 3, 200)
    feats = {}
    m.fc4.register_forward_hook(lambda mod, inp, out: feats.setdefault("fc4", out))
    simp, proj = m(x)
    assert simp.shape == proj.shape == (2, 3, 16)
    # official quirk: fc4 output viewed as (B, 3, k), coordinate-major
    assert torch.equal(simp, feats["fc4"].view(2, 3, 16))
    ref = _reference_soft_projection(x, simp.detach(), m.project._temperature.detach(), 4, 1e-2)
    torch.testing.assert_close(proj, ref, rtol=1e-5, atol=1e-5)
    # gradients reach the temperature and the network
    (proj.sum() + m.get_projection_loss()).backward()
    assert m.project._temperature.grad is not None and m.fc4.weight.grad is not None
    # skip_projection: projected = simplified
    m2 = get_model("samplenet", num_out_points=16, skip_projection=True)
    s2, p2 = m2(x)
    assert torch.equal(s2, p2)


def test_samplenet_projection_loss():
    m = get_model("samplenet", num_out_points=8, initial_temperature=0.05)
    assert m.get_projection_loss().item() == pytest.approx(1e-2)  # clamped at min_sigma
    m = get_model("samplenet", num_out_points=8, initial_temperature=0.5)
    assert m.get_projection_loss().item() == pytest.approx(0.25)
    m.eval()
    assert m.get_projection_loss().item() == 0.0


def _sqdist(a, b):  # exact squared distances (torch.cdist uses a matmul form for large inputs)
    return ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("complete_fps", [True, False])
def test_samplenet_eval_matching(complete_fps):
    torch.manual_seed(8)
    m = get_model("samplenet", num_out_points=12, complete_fps=complete_fps,
                  input_shape="bnc", output_shape="bnc")
    x = torch.randn(3, 150, 3)
    m.train()
    m(x)
    m.eval()
    simp, match = m(x)
    assert simp.shape == match.shape == (3, 12, 3)
    d = _sqdist(match, x)  # every matched point is an input point
    assert torch.all(d.min(dim=2).values == 0)
    nn_idx = _sqdist(simp, x).argmin(dim=2)  # nearest input point of each simplified point
    for b in range(3):
        rows = [int(i) for i in d[b].argmin(dim=1)]
        if complete_fps:
            assert len(set(rows)) == 12  # distinct points, completed by FPS
            uniq = list(dict.fromkeys(int(i) for i in nn_idx[b]))
            assert rows[: len(uniq)] == uniq  # matched set first, generation order kept
        else:
            assert rows == [int(i) for i in nn_idx[b]]
    m2 = get_model("samplenet", num_out_points=12, complete_fps=complete_fps)
    m2.load_state_dict(m.state_dict())
    m2.eval()
    s_bcn, m_bcn = m2(x.transpose(1, 2))
    assert torch.equal(s_bcn, simp.transpose(1, 2)) and torch.equal(m_bcn, match.transpose(1, 2))
    assert torch.equal(m(x)[1], match)  # deterministic


def test_samplenet_weights_round_trip_and_errors(tmp_path):
    torch.manual_seed(9)
    src = get_model("samplenet", num_out_points=8)
    src.train()
    src(torch.randn(2, 3, 64))
    with torch.no_grad():
        src.project._temperature.fill_(0.3)
    path = tmp_path / "sn.pt"
    torch.save(src.state_dict(), path)
    dst = get_model("samplenet", num_out_points=8, weights=str(path))
    assert dst.project._temperature.item() == pytest.approx(0.3)
    src.eval(), dst.eval()
    x = torch.randn(2, 3, 64)
    assert all(torch.equal(a, b) for a, b in zip(src(x), dst(x)))
    with pytest.raises(RuntimeError, match="does not match"):
        get_model("samplenet", num_out_points=8, output_bn=True, weights=str(path))
    with pytest.raises(ValueError):
        get_model("samplenet", input_shape="nbc")
    with pytest.raises(ValueError):
        get_model("samplenet", num_out_points=8)(torch.randn(2, 64, 3))  # bcn expected


# ---------------------------------------------------------------------------------------------
# convert_official_state_dict (TF checkpoints of learning_to_sample / SampleNet classification)
# Verified outside the test suite against real TF checkpoints of the official graphs (eval outputs
# equal to 2e-5); here: the naming/layout rules on a synthetic TF variable dict.

def _fake_tf_vars(model, scope):
    """Official TF variable dict equivalent to ``model`` (the inverse of the conversion)."""
    out = {"global_step": np.array(5), f"{scope}/conv1/weights/Adam": np.zeros(1)}
    for key, v in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        leaf = parts[-1]
        mods = parts[:-1]
        a = v.detach().numpy().copy()
        if mods[-1] in ("bn", "fc14b_bn"):
            layer = "/".join(mods[:-1]) if mods[-1] == "bn" else "fc14b"
            if mods[-1] == "bn" and mods[-2] in ("conv", "fc"):
                layer = "/".join(mods[:-2])
            full = f"{scope}/{layer}/bn"
            name = {"weight": f"{full}/gamma", "bias": f"{full}/beta",
                    "running_mean": f"{full}/{full}/moments/Squeeze/ExponentialMovingAverage",
                    "running_var": f"{full}/{full}/moments/Squeeze_1/ExponentialMovingAverage"}[leaf]
        else:
            if mods[-1] in ("conv", "fc"):
                mods = mods[:-1]
            if mods[-1] == "transform":
                mods = mods[:-1] + ["transform_XYZ" if mods[0] == "transform_net1" else "transform_feat"]
                if leaf == "bias":
                    k = int(round(a.size ** 0.5))
                    a = a - np.eye(k, dtype=a.dtype).flatten()
            name = f"{scope}/{'/'.join(mods)}/{'weights' if leaf == 'weight' else 'biases'}"
            if leaf == "weight":
                if a.ndim == 3:  # Conv1d (cout, cin, 1) -> [1, kw, 1, cout] / [1, 1, cin, cout]
                    a = a[:, :, 0].T
                    a = a[None, :, None, :] if a.shape[0] == 3 else a[None, None, :, :]
                else:
                    a = a.T
        out[name + ":0"] = a
    return out


@pytest.mark.parametrize("name,kwargs", [("pointnet_cls", {"num_classes": 10}),
                                         ("pointnet_cls_vanilla", {}),
                                         ("snet", {"num_out_points": 8})])
def test_convert_official_tf_state_dict(name, kwargs):
    torch.manual_seed(10)
    src = get_model(name, **kwargs)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for b in src.buffers():
            if b.dtype.is_floating_point:
                b.add_(0.5 * torch.rand_like(b))
    tfvars = _fake_tf_vars(src, "classifier")
    sd = models.convert_official_state_dict(name, tfvars, scope="classifier", **kwargs)
    dst = get_model(name, **kwargs)
    dst.load_state_dict(sd, strict=True)
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=1e-6)
    # the conv1 kernel [1, 3, 1, 64] is the Conv1d (64, 3, 1) weight transposed
    k1 = tfvars["classifier/conv1/weights:0"]
    assert k1.shape == (1, 3, 1, 64)
    assert torch.equal(sd["conv1.conv.weight"][5, 2, 0], torch.tensor(k1[0, 2, 0, 5]))
    # missing variable / wrong scope / wrong size
    del tfvars["classifier/conv2/biases:0"]
    with pytest.raises(KeyError, match="conv2.conv.bias"):
        models.convert_official_state_dict(name, tfvars, scope="classifier", **kwargs)
    with pytest.raises(KeyError):
        models.convert_official_state_dict(name, tfvars, scope="sampler", **kwargs)


def test_convert_official_errors_and_samplenet_passthrough():
    src = get_model("snet", num_out_points=8)
    tfvars = _fake_tf_vars(src, "s")
    with pytest.raises(ValueError, match="expects"):
        models.convert_official_state_dict("snet", tfvars, scope="s", num_out_points=16)
    with pytest.raises(ValueError, match="no official checkpoint conversion"):
        models.convert_official_state_dict("nope", {})
    sd = get_model("samplenet", num_out_points=8).state_dict()
    assert models.convert_official_state_dict("samplenet", sd).keys() == sd.keys()


def test_convert_official_hrnet_and_bisenetv2_wrappers():
    """HRNet / BiSeNetV2 checkpoints keep the official keys: only the training wrappers go."""
    with torch.device("meta"):
        seg = get_model("hrnetv2_w18_small_v1").state_dict()
        bise = get_model("bisenetv2").state_dict()
    wrapped = {**{f"model.{k}": v for k, v in seg.items()}, "loss.criterion.weight": torch.ones(19)}
    assert list(models.convert_official_state_dict("hrnetv2_w18_small_v1", wrapped)) == list(seg)
    assert models.convert_official_state_dict("bisenetv2", bise).keys() == bise.keys()
    with torch.device("meta"):
        eval_keys = get_model("bisenetv2", aux_mode="eval").state_dict().keys()
    assert models.convert_official_state_dict("bisenetv2", bise, aux_mode="eval").keys() == eval_keys
