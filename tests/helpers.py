"""Shared parametrisations and input factories for the op tests."""

import gzip
import os

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
FLOAT_DTYPES = [torch.float32, torch.float64]
HALF_DTYPES = [torch.float16, torch.bfloat16]


def separated_cloud(B, P, D, dtype=torch.float64, device="cpu", spacing=0.05, seed=0):
    """Points on a jittered grid: pairwise distances differ by far more than gradcheck's eps, so
    the neighbour sets are stable under its finite differences."""
    g = torch.Generator().manual_seed(seed)
    side = int(round(P ** (1.0 / D))) + 2
    clouds = []
    for _ in range(B):
        cells = torch.randperm(side**D, generator=g)[:P]
        coords = torch.stack([(cells // side**d) % side for d in range(D)], dim=1).to(dtype)
        jitter = (torch.rand(P, D, generator=g, dtype=dtype) - 0.5) * 0.3
        clouds.append((coords + jitter) * spacing)
    return torch.stack(clouds).to(device)


def grid_cloud(B, P, D, dtype=torch.float32, device="cpu", side=6, seed=0):
    """Integer-grid points (with repeats): many exactly equal distances, to test tie-breaking."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, side, (B, P, D), generator=g).to(dtype).to(device)


def ragged_lengths(B, P, device="cpu", seed=0, minimum=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(minimum, P + 1, (B,), generator=g)
    lengths[0] = P
    return lengths.to(device)


OFFICIAL_STATE_DICTS = os.path.join(os.path.dirname(__file__), "data", "official_state_dicts")


def official_listing(name):
    """The committed official state-dict listing of model ``name``: ``[(key, shape), ...]``."""
    with gzip.open(os.path.join(OFFICIAL_STATE_DICTS, f"{name}.txt.gz"), "rt") as f:
        rows = [line.rstrip("\n").split(" ") for line in f]
    return [(key, tuple(int(s) for s in shape.split(",") if s)) for key, shape in rows]


def listing(model):
    """``[(key, shape), ...]`` of ``model.state_dict()``, in order."""
    return [(key, tuple(v.shape)) for key, v in model.state_dict().items()]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# The deployment tests' matrix (issue 18). Registered models that repeat the architecture of a
# smaller official width (HRNet's wider widths, PAD-Net x2 / x4) export to the same graph with
# more channels: CI (the `slow` selection) covers each architecture at its smallest official
# width, and the `deploy_full` run by hand the wider ones (each costs tens of seconds of tracing).
WIDER_WIDTH_OF = {
    "hrnetv1_w48_pose": "hrnetv1_w32_pose",
    "hrnetv2_w32": "hrnetv2_w18", "hrnetv2_w40": "hrnetv2_w18", "hrnetv2_w48": "hrnetv2_w18",
    "hrnetv2p_w32": "hrnetv2p_w18", "hrnetv2p_w40": "hrnetv2p_w18", "hrnetv2p_w48": "hrnetv2p_w18",
    "padnet_x2": "padnet", "padnet_x4": "padnet",
}


def deploy_model_params(names):
    """``names`` as pytest params, the wider widths (``WIDER_WIDTH_OF``) marked ``deploy_full``."""
    return [pytest.param(n, marks=pytest.mark.deploy_full) if n in WIDER_WIDTH_OF else n for n in names]
