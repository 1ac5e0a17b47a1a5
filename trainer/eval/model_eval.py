"""Detection + prediction evaluation of a model over the validation split, on every rank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from models.batch import Batch
from models.detections import SceneDetections
from models.v2x_model import V2XModel
from trainer.config import StageConfig, TrainConfig
from trainer.data.conditions import Conditions
from trainer.eval.communication import CommunicationLog, MessageRecord
from trainer.eval.cooperative import predict_cooperative
from trainer.eval.decoding import decode_scenes
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


@torch.no_grad()
def predict_scenes(model: V2XModel, batch: Batch, *, stage: StageConfig | None = None,
                   score_threshold: float = 0.1) -> list[SceneDetections]:
    """Decoded detections + trajectories (on the CPU) for every scene of ``batch`` (already on the model's
    device), with ``stage``'s input view and forward switches."""
    view = stage_view(batch, stage) if stage is not None else batch
    switches = stage_switches(stage) if stage is not None else {}
    out = model(view, heads=("det", "pred"), **switches)
    return decode_scenes(model, out, view, score_threshold=score_threshold)


@dataclass
class EvaluationResult:
    """What an evaluation gives: the metrics (the communication summary ``comm/*`` included) and the bytes each
    collaborator of each sample sent (one ``MessageRecord`` per sample, sorted by key)."""

    metrics: dict[str, float]
    messages: list[MessageRecord]


@torch.no_grad()
def run_evaluation(model: V2XModel, batches: Iterable[Batch], cfg: TrainConfig, *, device: torch.device,
                   gather: Any = None, stage: StageConfig | None = None, max_batches: int = 0) -> EvaluationResult:
    """Evaluate ``model`` on ``batches`` under ``cfg.eval`` (its fusion mode and messages; the pose noise and
    latency are the loader's). Every rank calls this; the results are identical on all ranks."""
    evaluator = Evaluator(cfg.eval, gather=gather)
    messages = CommunicationLog(gather=gather)
    was_training = model.training
    model.eval()
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        batch = batch.to(device)
        prediction = predict_cooperative(model, batch, cfg.eval, stage=stage)
        evaluator.update(prediction.detections, batch)
        messages.update(batch, prediction.message_bytes)
    model.train(was_training)
    metrics = evaluator.compute()
    comm_metrics, records = messages.compute()
    return EvaluationResult(metrics={**metrics, **comm_metrics}, messages=records)


def evaluate_model(model: V2XModel, batches: Iterable[Batch], cfg: TrainConfig, *, device: torch.device,
                   gather: Any = None, stage: StageConfig | None = None, max_batches: int = 0) -> dict[str, float]:
    """The metrics of :func:`run_evaluation`."""
    return run_evaluation(model, batches, cfg, device=device, gather=gather, stage=stage,
                          max_batches=max_batches).metrics


def evaluation_conditions(cfg: TrainConfig) -> Conditions:
    """The pose noise and latency the evaluation's loader applies (``eval.pose_noise``, ``eval.latency``)."""
    return Conditions(pose_noise=cfg.eval.pose_noise, latency=cfg.eval.latency)
