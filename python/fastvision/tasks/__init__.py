"""Training recipes: what ``fastvision train NAME`` runs, each a :class:`fastvision.engine.Task`.

A recipe is ``(add_arguments(parser), build(args, config) -> Task)``; model families add theirs
to :data:`RECIPES`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple


class Recipe(NamedTuple):
    help: str
    add_arguments: Callable
    build: Callable  # (args, TrainConfig) -> Task
    epochs: int  # default epochs on the embedded data


def _sampling_recipes() -> dict[str, Recipe]:
    from .sampling import recipe as s

    out = {"pointnet": Recipe("PointNet task network (point-cloud classification)",
                              s.add_pointnet_arguments, lambda a, c: s.build_pointnet(a), 12)}
    helps = {"snet": "S-NET sampler (Dovrat et al. 2019)",
             "progressivenet": "ProgressiveNet sampler (ordered points, all sizes)",
             "samplenet": "SampleNet sampler with soft projection (Lang et al. 2020)",
             "samplenet-progressive": "SampleNet-Progressive sampler"}
    for kind, text in helps.items():
        out[kind] = Recipe(text, (lambda p, k=kind: s.add_sampler_arguments(p, k)),
                           (lambda a, c, k=kind: s.build_sampler(k, a, c)), 8)
    return out


def _padnet_recipes() -> dict[str, Recipe]:
    from .padnet import recipe as p

    return {"padnet": Recipe("PAD-Net particle detector (x1/x2/x4; AAL or Table 4 losses; --kd)",
                             p.add_padnet_arguments, lambda a, c: p.build_padnet(a),
                             p.EMBEDDED_EPOCHS),
            "padnet-teacher": Recipe("PAD-Net's knowledge-distillation teacher",
                                     p.add_teacher_arguments, lambda a, c: p.build_teacher(a),
                                     p.EMBEDDED_TEACHER_EPOCHS)}


def _segmentation_recipes() -> dict[str, Recipe]:
    from .segmentation import recipe as seg

    return {"segmentation": Recipe("semantic segmentation: HRNetV2, BiSeNet V2, HyperSeg (--model)",
                                   seg.add_arguments, seg.build, 8)}


def _pose_recipes() -> dict[str, Recipe]:
    from .pose import recipe as pose

    return {"pose": Recipe("HRNetV1 top-down pose estimation (COCO keypoints or embedded stick "
                           f"figures; {pose.EMBEDDED_EPOCHS} epochs by default, CPU-sized: the "
                           "official recipe is 210)", pose.add_arguments, pose.build,
                           pose.EMBEDDED_EPOCHS)}


RECIPES: dict[str, Recipe] = {}
RECIPES.update(_sampling_recipes())
RECIPES.update(_padnet_recipes())
RECIPES.update(_segmentation_recipes())
RECIPES.update(_pose_recipes())

__all__ = ["Recipe", "RECIPES"]
