"""Evaluation metrics of the papers fastvision implements."""

from fastvision.metrics.particles import ParticleMetrics, extract_peaks, match_points
from fastvision.metrics.segmentation import SegmentationMetrics, confusion_matrix, mean_iou

__all__ = ["ParticleMetrics", "extract_peaks", "match_points",
           "SegmentationMetrics", "confusion_matrix", "mean_iou"]
