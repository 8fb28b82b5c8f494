"""Losses of the papers fastvision implements."""

from fastvision.losses.sampling import sampling_loss, sampling_loss_terms

__all__ = ["sampling_loss", "sampling_loss_terms"]
