"""fastvision.losses.pose: JointsMSELoss (official HRNet pose)."""

import numpy as np
import pytest
import torch

from fastvision.losses.pose import JointsMSELoss


def test_joints_mse_loss_matches_official_per_joint_loop():
    g = torch.Generator().manual_seed(0)
    out, gt = torch.rand(2, 3, 4, 5, generator=g), torch.rand(2, 3, 4, 5, generator=g)
    tw = torch.tensor([[[1.0], [0.0], [0.5]], [[1.0], [1.0], [0.0]]])
    o, t, w = out.numpy(), gt.numpy(), tw.numpy()
    expected = sum(0.5 * np.mean((o[:, j].reshape(2, -1) * w[:, j]
                                  - t[:, j].reshape(2, -1) * w[:, j]) ** 2)
                   for j in range(3)) / 3
    assert JointsMSELoss(True)(out, gt, tw).item() == pytest.approx(expected, rel=1e-6)
    unweighted = sum(0.5 * np.mean((o[:, j] - t[:, j]) ** 2) for j in range(3)) / 3
    assert JointsMSELoss(False)(out, gt, tw).item() == pytest.approx(unweighted, rel=1e-6)


def test_joints_mse_loss_by_hand():
    out = torch.zeros(1, 2, 1, 2)
    gt = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])
    # joint 0: 0.5 * (1 + 9) / 2 = 2.5; joint 1 (weight 0.5): 0.5 * (1 + 1) / 2 = 0.5; mean 1.5
    assert JointsMSELoss()(out, gt, torch.tensor([[[1.0], [0.5]]])).item() == 1.5


def test_joints_mse_loss_shape_errors():
    with pytest.raises(ValueError, match="output and target"):
        JointsMSELoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4), torch.ones(1, 2, 1))
    with pytest.raises(ValueError, match="target_weight must hold B\\*J = 2"):
        JointsMSELoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), torch.ones(3))
