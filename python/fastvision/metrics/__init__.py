"""Evaluation metrics of the papers fastvision implements."""

from fastvision.metrics.particles import ParticleMetrics, extract_peaks, match_points

__all__ = ["ParticleMetrics", "extract_peaks", "match_points"]
