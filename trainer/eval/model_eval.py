"""Detection + prediction evaluation of a model over the validation split, on every rank."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import torch

from models.batch import Batch
from models.detections import SceneDetections
from models.decode import decode_detections
from models.point_refine import scene_points
from models.track_decode import read_past_offsets
from models.v2x_model import V2XModel
from trainer.config import StageConfig, TrainConfig
from trainer.eval.evaluator import Evaluator
from trainer.tasks import stage_switches, stage_view


def inner_model(engine: Any) -> V2XModel:
    """The ``V2XModel`` inside an engine / DDP wrapper / TrainingModule."""
    module = engine
    while not isinstance(module, V2XModel):
        if hasattr(module, "module"):
            module = module.module
        elif hasattr(module, "model"):
            module = module.model
        else:
            raise TypeError(f"no V2XModel inside {type(engine).__name__}")
    return module


def detections_to_cpu(det: SceneDetections) -> SceneDetections:
    return SceneDetections(**{f.name: getattr(det, f.name).cpu() for f in dataclasses.fields(det)})


@torch.no_grad()
def predict_scenes(model: V2XModel, batch: Batch, *, stage: StageConfig | None = None,
                   score_threshold: float = 0.1) -> list[SceneDetections]:
    """Decoded detections + trajectories (on the CPU) for every scene of ``batch`` (already on the model's
    device), with ``stage``'s input view and forward switches."""
    view = stage_view(batch, stage) if stage is not None else batch
    switches = stage_switches(stage) if stage is not None else {}
    out = model(view, heads=("det", "pred"), **switches)
    refine = tracks = None
    if model.refine_head is not None:
        points = scene_points(view)
        refine = lambda scene, boxes, labels: model.refine_boxes(points[scene], boxes, labels)  # noqa: E731
    if model.track_head is not None and out.past_offsets is not None:
        frames = [scene_points(view, step) for step in range(out.past_offsets.shape[1])]

        def tracks(scene: int, boxes: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            offsets = read_past_offsets(out.past_offsets[scene:scene + 1].float(), boxes[None, :, :2], model.geometry)
            _, _, trajectories, logits = model.track_futures([f[scene] for f in frames], boxes, labels, offsets[0])
            return trajectories, logits
    return [detections_to_cpu(d) for d in decode_detections(out, model.geometry, score_threshold=score_threshold,
                                                             iou_rectifier=model.config.iou_rectifier, refine=refine,
                                                             tracks=tracks)]


@torch.no_grad()
def evaluate_model(model: V2XModel, batches: Iterable[Batch], cfg: TrainConfig, *, device: torch.device,
                   gather: Any = None, stage: StageConfig | None = None, max_batches: int = 0) -> dict[str, float]:
    """Metrics of ``model`` on ``batches`` (every rank calls this; results are identical on all ranks)."""
    evaluator = Evaluator(cfg.eval, gather=gather)
    was_training = model.training
    model.eval()
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        batch = batch.to(device)
        evaluator.update(predict_scenes(model, batch, stage=stage), batch)
    model.train(was_training)
    return evaluator.compute()
