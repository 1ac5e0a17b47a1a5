"""Model outputs -> decoded detections on the CPU, with the point refinement and the track decoder when the model
has them."""

from __future__ import annotations

import dataclasses
from functools import partial

from torch import Tensor

from models.batch import Batch
from models.decode import decode_detections
from models.detections import SceneDetections
from models.output import ModelOutput
from models.point_refine import scene_points
from models.track_decode import read_past_offsets
from models.v2x_model import V2XModel


def detections_to_cpu(det: SceneDetections) -> SceneDetections:
    return SceneDetections(**{f.name: getattr(det, f.name).cpu() for f in dataclasses.fields(det)})


def scene_tracks(model: V2XModel, out: ModelOutput, frames: list[list[Tensor]], scene: int, boxes: Tensor,
                 labels: Tensor) -> tuple[Tensor, Tensor]:
    """The track decoder's (trajectories [N, K, T_f, 2] from each centre, mode logits [N, K]) for one scene's
    boxes [N, 7]; ``frames[s][scene]``: that scene's points of past frame s (``scene_points``)."""
    offsets = read_past_offsets(out.past_offsets[scene:scene + 1].float(), boxes[None, :, :2], model.geometry)
    _, _, trajectories, logits = model.track_futures([f[scene] for f in frames], boxes, labels, offsets[0])
    return trajectories, logits


def decode_scenes(model: V2XModel, out: ModelOutput, view: Batch, *, score_threshold: float) -> list[SceneDetections]:
    """One ``SceneDetections`` per scene (CPU) from ``out``, the det + pred heads of ``model`` run on ``view``
    (whose points the point refinement and the track decoder read, in ``view``'s ego frame)."""
    refine = tracks = None
    if model.refine_head is not None:
        points = scene_points(view)
        refine = lambda scene, boxes, labels: model.refine_boxes(points[scene], boxes, labels)  # noqa: E731
    if model.track_head is not None and out.past_offsets is not None:
        frames = [scene_points(view, step) for step in range(out.past_offsets.shape[1])]
        tracks = partial(scene_tracks, model, out, frames)
    return [detections_to_cpu(d) for d in decode_detections(out, model.geometry, score_threshold=score_threshold,
                                                             iou_rectifier=model.config.iou_rectifier, refine=refine,
                                                             tracks=tracks)]
