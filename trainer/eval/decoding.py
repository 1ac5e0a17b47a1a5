"""Model outputs -> decoded detections on the CPU, with the point refinement when the model has one."""

from __future__ import annotations

import dataclasses

from models.batch import Batch
from models.decode import decode_detections
from models.detections import SceneDetections
from models.output import ModelOutput
from models.point_refine import scene_points
from models.v2x_model import V2XModel


def detections_to_cpu(det: SceneDetections) -> SceneDetections:
    return SceneDetections(**{f.name: getattr(det, f.name).cpu() for f in dataclasses.fields(det)})


def decode_scenes(model: V2XModel, out: ModelOutput, view: Batch, *, score_threshold: float) -> list[SceneDetections]:
    """One ``SceneDetections`` per scene (CPU) from ``out``, the det + pred heads of ``model`` run on ``view``
    (whose points the point refinement reads, in ``view``'s ego frame)."""
    refine = None
    if model.refine_head is not None:
        points = scene_points(view)
        refine = lambda scene, boxes, labels: model.refine_boxes(points[scene], boxes, labels)  # noqa: E731
    return [detections_to_cpu(d) for d in decode_detections(out, model.geometry, score_threshold=score_threshold,
                                                             iou_rectifier=model.config.iou_rectifier, refine=refine)]
