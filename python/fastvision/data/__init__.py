"""Datasets: embedded procedural data (no download) and readers for the real formats."""

from fastvision.data.pointclouds import (
    ModelNet40H5,
    ProceduralShapes,
    augment_point_cloud,
    jitter_point_cloud,
    normalize_point_cloud,
    rotate_point_cloud_y,
)
from fastvision.data.particles import (
    ParticleFolder,
    ProceduralParticles,
    collate_particles,
    render_targets,
)
from fastvision.data.segmentation import (
    CamVidSegmentation,
    CityscapesSegmentation,
    ProceduralSegmentation,
    SegmentationAugment,
)
from fastvision.data.pose import (
    COCOKeypoints,
    PoseAugment,
    ProceduralPoses,
)

__all__ = [
    "ProceduralShapes",
    "ModelNet40H5",
    "augment_point_cloud",
    "jitter_point_cloud",
    "normalize_point_cloud",
    "rotate_point_cloud_y",
    "ProceduralParticles",
    "ParticleFolder",
    "collate_particles",
    "render_targets",
    "ProceduralSegmentation",
    "CityscapesSegmentation",
    "CamVidSegmentation",
    "SegmentationAugment",
    "COCOKeypoints",
    "PoseAugment",
    "ProceduralPoses",
]
