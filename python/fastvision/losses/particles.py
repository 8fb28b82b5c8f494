"""PAD-Net losses (Wang et al., PRCV 2021): the adaptive attention loss (AAL, Sect. 3.2), the
losses it is compared with in Table 4, and the structured knowledge distillation of Sect. 3.3.

Predictions are **logits** (B, 1, H, W) as returned by :class:`fastvision.models.padnet.PADNet`
(``from_logits=False``: probabilities in [0, 1]); targets are particle maps of the same shape with
values in [0, 1] (the paper's binary ground truth P, e.g. :mod:`fastvision.data.particles`).
With p the target and q = sigmoid(logits) the prediction, per image of h x w pixels:

* AAL (eqs. 1-2): ``a1 * L_CE + a2 * L_IoU`` with
  ``L_CE = -1/(hw) sum (p log q + (1 - p) log(1 - q))``,
  ``L_IoU = 1/(hw) sum M (1 - (p q + eps) / (p + q - p q + eps))``,
  ``M = 1 + AvgPool(5x5, stride 1)(P)``. Open in the paper, chosen here: a1 = a2 = 1, eps = 1
  (the pixel term then stays smooth where p = q = 0: eps -> 0 would give background pixels a
  loss of ~1 for any q > 0), and the pooling zero-pads by 2 and divides by 25 everywhere
  (``count_include_pad=True``) so that M has the size of P.
* ``iou``: image-level soft IoU, ``1 - (sum p q + eps) / (sum (p + q - p q) + eps)``.
* ``dice``: ``1 - (2 sum p q + eps) / (sum p + sum q + eps)``.
* ``mse``: mean of (q - p)^2. ``bce``: L_CE.

Every loss is averaged over the batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "attention_matrix",
    "AdaptiveAttentionLoss",
    "SoftIoULoss",
    "DiceLoss",
    "MSEMapLoss",
    "BCEMapLoss",
    "get_particle_loss",
    "StructuredKnowledgeTransfer",
    "dense_fsp",
]


def _check_maps(pred: torch.Tensor, target: torch.Tensor, who: str) -> None:
    if pred.dim() != 4:
        raise ValueError(f"{who}: pred must be (B, C, H, W), got shape {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(f"{who}: target shape {tuple(target.shape)} must equal pred shape "
                         f"{tuple(pred.shape)}")
    if not pred.is_floating_point():
        raise ValueError(f"{who}: pred must be floating point, got {pred.dtype}")


def attention_matrix(target: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """AAL's coefficient matrix ``M = 1 + AvgPool(kernel x kernel, stride 1)(target)``, same shape."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"attention_matrix: kernel_size must be odd and >= 1, got {kernel_size}")
    pooled = F.avg_pool2d(target, kernel_size, stride=1, padding=kernel_size // 2,
                          count_include_pad=True)
    return 1.0 + pooled


class _MapLoss(nn.Module):
    def __init__(self, from_logits: bool = True):
        super().__init__()
        self.from_logits = bool(from_logits)

    def _prob(self, pred: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(pred) if self.from_logits else pred

    def _bce(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.from_logits:
            return F.binary_cross_entropy_with_logits(pred, target)
        return F.binary_cross_entropy(pred, target)


class AdaptiveAttentionLoss(_MapLoss):
    """AAL = ``alpha_ce * L_CE + alpha_iou * L_IoU`` (module docstring)."""

    def __init__(self, alpha_ce: float = 1.0, alpha_iou: float = 1.0, eps: float = 1.0,
                 kernel_size: int = 5, from_logits: bool = True):
        super().__init__(from_logits)
        if eps <= 0:
            raise ValueError(f"AdaptiveAttentionLoss: eps must be > 0, got {eps}")
        self.alpha_ce = float(alpha_ce)
        self.alpha_iou = float(alpha_iou)
        self.eps = float(eps)
        self.kernel_size = int(kernel_size)

    def iou_term(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``L_IoU`` of eq. 2 (mean over pixels and batch)."""
        q = self._prob(pred)
        inter = target * q
        ratio = (inter + self.eps) / (target + q - inter + self.eps)
        return (attention_matrix(target, self.kernel_size) * (1.0 - ratio)).mean()

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_maps(pred, target, "AdaptiveAttentionLoss")
        return self.alpha_ce * self._bce(pred, target) + self.alpha_iou * self.iou_term(pred, target)


class SoftIoULoss(_MapLoss):
    """Image-level soft IoU loss, ``1 - (sum p q + eps) / (sum (p + q - p q) + eps)``."""

    def __init__(self, eps: float = 1.0, from_logits: bool = True):
        super().__init__(from_logits)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_maps(pred, target, "SoftIoULoss")
        q = self._prob(pred).flatten(1)
        p = target.flatten(1)
        inter = (p * q).sum(1)
        return (1.0 - (inter + self.eps) / ((p + q).sum(1) - inter + self.eps)).mean()


class DiceLoss(_MapLoss):
    """Soft Dice loss, ``1 - (2 sum p q + eps) / (sum p + sum q + eps)``."""

    def __init__(self, eps: float = 1.0, from_logits: bool = True):
        super().__init__(from_logits)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_maps(pred, target, "DiceLoss")
        q = self._prob(pred).flatten(1)
        p = target.flatten(1)
        return (1.0 - (2.0 * (p * q).sum(1) + self.eps) / (p.sum(1) + q.sum(1) + self.eps)).mean()


class MSEMapLoss(_MapLoss):
    """Mean squared error between the probability map and the target."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_maps(pred, target, "MSEMapLoss")
        return F.mse_loss(self._prob(pred), target)


class BCEMapLoss(_MapLoss):
    """Pixel-wise binary cross-entropy (eq. 1)."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_maps(pred, target, "BCEMapLoss")
        return self._bce(pred, target)


_LOSSES = {"aal": AdaptiveAttentionLoss, "iou": SoftIoULoss, "dice": DiceLoss,
           "mse": MSEMapLoss, "bce": BCEMapLoss}


def get_particle_loss(name: str, **kwargs) -> nn.Module:
    """The loss ``name`` of Table 4: ``"aal"``, ``"iou"``, ``"dice"``, ``"mse"`` or ``"bce"``;
    ``kwargs`` go to its constructor (``from_logits``, ``eps``, ``alpha_ce``, ...)."""
    try:
        cls = _LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"get_particle_loss: unknown loss {name!r}; available: "
                         f"{', '.join(_LOSSES)}") from None
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# Structured knowledge distillation (Sect. 3.3)
# --------------------------------------------------------------------------------------------


def dense_fsp(features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """FSP matrices of every pair i < j of ``features`` (list of (B, C_k, H_k, W_k)).

    Each map is max-pooled to the smallest spatial size among the features (kernel = stride =
    the size ratio when it divides), instance-normalised, and ``G_ij = F_i F_j^T / (h w)``
    per sample: (B, C_i, C_j).
    """
    if len(features) < 2:
        raise ValueError(f"dense_fsp: needs at least 2 feature maps, got {len(features)}")
    h = min(f.shape[-2] for f in features)
    w = min(f.shape[-1] for f in features)
    pooled = [F.instance_norm(F.adaptive_max_pool2d(f, (h, w))).flatten(2) for f in features]
    return [torch.bmm(pooled[i], pooled[j].transpose(1, 2)) / (h * w)
            for i in range(len(pooled)) for j in range(i + 1, len(pooled))]


class StructuredKnowledgeTransfer(nn.Module):
    """Intra-layer + cross-layer knowledge transfer of Liu et al., "Efficient crowd counting via
    structured knowledge transfer" (ACM MM 2020; PAD-Net's ref. 9), after its code
    (``HCPLab-SYSU/SKT``: ``models/distillation.py``, ``SKT_distill.py``).

    The student's K feature maps s_k (PAD-Net: the three MDR outputs, 4 channels) are first mapped
    to the teacher's width by training-only adapters ``a_k = ReLU(Conv1x1(s_k))`` (SKT's
    ``feature_transform``; they belong to this module, not to the student, so PAD-Net's size is
    unchanged). With t_k the teacher's maps (its CRP outputs, same resolutions), P the set of
    pairs i < j and ``G_ij`` the dense FSP matrices of :func:`dense_fsp` (instance-normalised
    maps, ``F_i F_j^T / (h w)``: entries are channel correlations in [-1, 1], as SKT's ``gram``):

    * ``reduction="mean"`` (default, ours): means everywhere,
      ``L_intra = mean_k mean_{b,x,y} (1 - cos(a_k[b,:,x,y], t_k[b,:,x,y]))`` and
      ``L_cross = mean_{(i,j) in P} mean_{b,c,c'} (G^t_ij - G^a_ij)^2``;
    * ``reduction="sum"`` (SKT's own reductions, batch mean instead of its batch of 1):
      ``L_intra = sum_k mean_b sum_{x,y} (1 - cos)`` (SKT's ``cosine_similarity``: ``.sum()``,
      summed over layers) and ``L_cross = sum_{(i,j) in P} mean_b sum_{c,c'} (G^t_ij - G^a_ij)^2``
      (SKT: ``nn.MSELoss(size_average=False)`` per FSP pair, summed over pairs);
    * ``total = lambda_intra * L_intra + lambda_cross * L_cross`` (SKT's ``-lac 0.5 -laf 0.5``).
      The paper trains PAD-Net with the task loss (AAL) plus these terms; add the AAL outside.

    What SKT does and why we do not copy its sums: SKT's task loss is a *summed* MSE over the
    density map and every KD term is a sum too (1-cos over all positions of each layer, squared
    FSP differences over all C_i x C_j entries, summed over layers and pairs), so the relative
    weights of its terms are set by CSRNet's sizes (64-512 channels, feature maps of ShanghaiTech
    crops) and do not carry over. PAD-Net's AAL is a per-pixel *mean* (~1 at initialisation);
    with SKT's sums the cross term of PAD-Net's three 24 x 24 FSP pairs is ~300 and the intra term
    ~6 x 10^3 per image at initialisation, and even with the position mean alone the summed FSP
    entries (~150 per step over the first epoch on the embedded pads) swamp AAL (~0.9): the
    student then never learnt to detect (F1 0.0001 after 3 epochs, measured). We keep SKT's
    terms and weights (0.5 / 0.5) and make every reduction a mean: SKT's intra term is divided
    by K h_k w_k (layers x positions) and its cross term by |P| C_i C_j (pairs x FSP entries),
    so neither grows with the number of taps, their sizes or widths. At initialisation on the
    embedded pads (3-epoch teacher) this gives L_intra ~0.93 (<= 2), L_cross ~0.19 (<= 4),
    total ~0.56 against AAL ~1.15. Chosen on a held-out part of the *training* pads (train on
    the first 1600, validate on the other 352, 3 epochs; the test split was not used): with
    means over positions / entries but sums over layers / pairs (KD total ~1.7 at
    initialisation) the KD student tied the plain one (F1 0.961 / 0.960, MAE 1.70 / 1.80 for
    seeds 0 / 1 against plain PAD-Net's F1 0.962 / 0.962, MAE 1.66 / 1.60); with means
    everywhere it was ahead in seed 0 and level in seed 1 (F1 0.966 / 0.963, MAE 1.48 / 1.60).
    (SKT's training also adds an output-level term, MSE(student output, teacher output); the
    PAD-Net paper names only the intra- and cross-layer terms, so it is not included.)

    ``forward(student_features, teacher_features)`` returns ``{"intra", "cross", "total"}``;
    teacher features should be computed under ``torch.no_grad()`` (they are detached here).
    """

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 lambda_intra: float = 0.5, lambda_cross: float = 0.5, reduction: str = "mean"):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"StructuredKnowledgeTransfer: {len(student_channels)} student and "
                             f"{len(teacher_channels)} teacher feature maps")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"StructuredKnowledgeTransfer: reduction must be 'mean' or 'sum', "
                             f"got {reduction!r}")
        self.adapters = nn.ModuleList(
            nn.Sequential(nn.Conv2d(int(cs), int(ct), 1), nn.ReLU())
            for cs, ct in zip(student_channels, teacher_channels))
        self.lambda_intra = float(lambda_intra)
        self.lambda_cross = float(lambda_cross)
        self.reduction = reduction

    def forward(self, student_features: Sequence[torch.Tensor],
                teacher_features: Sequence[torch.Tensor]) -> dict:
        if len(student_features) != len(self.adapters) or len(teacher_features) != len(self.adapters):
            raise ValueError(f"StructuredKnowledgeTransfer: expected {len(self.adapters)} student "
                             f"and teacher feature maps, got {len(student_features)} and "
                             f"{len(teacher_features)}")
        adapted = [a(s) for a, s in zip(self.adapters, student_features)]
        teacher = [t.detach() for t in teacher_features]
        for k, (a, t) in enumerate(zip(adapted, teacher)):
            if a.shape != t.shape:
                raise ValueError(f"StructuredKnowledgeTransfer: feature {k}: adapted student shape "
                                 f"{tuple(a.shape)} != teacher shape {tuple(t.shape)}")
        # per sample: mean (ours) or sum (SKT) over positions / FSP entries, then the batch
        # mean; then mean (ours) or sum (SKT) over layers / pairs
        reduce = torch.mean if self.reduction == "mean" else torch.sum
        intra = torch.stack([reduce(1.0 - F.cosine_similarity(a, t, dim=1), dim=(1, 2)).mean()
                             for a, t in zip(adapted, teacher)])  # per layer; (B, H, W) inside
        cross = torch.stack([reduce((gt - gs).pow(2), dim=(1, 2)).mean()
                             for gs, gt in zip(dense_fsp(adapted), dense_fsp(teacher))])  # per pair
        intra, cross = reduce(intra), reduce(cross)  # over layers / pairs
        total = self.lambda_intra * intra + self.lambda_cross * cross
        return {"intra": intra, "cross": cross, "total": total}
