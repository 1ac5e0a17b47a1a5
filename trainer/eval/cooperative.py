"""Cooperative inference for evaluation: one checkpoint, three ways to cooperate, and what each agent sends.

- ``intermediate``: the model as trained. Each collaborator's own feature (``V2XModel.agent_features``) is
  sent through ``models.communication`` (precision, optional sparsification by its own detection confidence),
  then fused in the ego frame (``V2XModel.fuse``).
- ``none``: the ego alone (its own feature through the fusion and heads as a one-agent scene).
- ``late``: every agent runs the model alone in its own frame (as ``none`` does for the ego), decodes its
  detections, and sends them all; the ego maps them into its frame, keeps those on its grid and merges them
  with its own by NMS across agents (``trainer.eval.late_fusion``).

The encoder and temporal fusion run once per batch for all three. With the default ``eval.comm`` (fp32, dense)
``intermediate`` computes exactly what ``trainer.eval.model_eval.predict_scenes`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from models.batch import Batch
from models.communication import (MESSAGE_DTYPES, cell_confidence, detection_message_bytes, detection_values,
                                  feature_message_bytes, select_cells, transmit, value_bytes)
from models.detections import SceneDetections
from trainer.eval.late_fusion import detections_inside, detections_to_frame, merge_detections
from models.output import ModelOutput
from models.v2x_model import V2XModel
from trainer.engine.batch_ops import agent_view
from trainer.eval.config import EvalConfig
from trainer.eval.cooperative_config import FUSION_MODES
from trainer.eval.decoding import decode_scenes
from trainer.tasks import stage_switches, stage_view

if TYPE_CHECKING:
    from trainer.config import StageConfig


@dataclass
class CooperativePrediction:
    """What the ego ends up with for one batch, and what it cost."""

    detections: list[SceneDetections]
    """One per scene, on the CPU, in the ego frame."""
    message_bytes: Tensor
    """[B, A] int64 bytes each agent sent to the ego (0 for the ego and absent agents), on the CPU."""


@dataclass
class _Scene:
    """One batch on its way through a fusion mode."""

    model: V2XModel
    view: Batch
    features: Tensor
    """[B, A, C, H, W] every agent's own feature."""
    spatial_fusion: bool
    cfg: EvalConfig
    score_threshold: float

    def alone(self, agent: int, heads: tuple[str, ...] = ("det", "pred")) -> tuple[Batch, ModelOutput]:
        """Agent slot ``agent`` as the ego of a one-agent scene: (its view, the heads' outputs in its frame)."""
        view = agent_view(self.view, agent)
        mine = self.features[:, agent:agent + 1]
        z = self.model.fuse(mine, view) if self.spatial_fusion else mine[:, 0]
        return view, self.model.run_heads(z, heads)

    def decode(self, out: ModelOutput, view: Batch) -> list[SceneDetections]:
        return decode_scenes(self.model, out, view, score_threshold=self.score_threshold)

    def no_messages(self) -> Tensor:
        return torch.zeros(self.view.agent_mask.shape, dtype=torch.int64)


def _sent_cells(scene: _Scene) -> Tensor | None:
    """[B, A, H, W] the cells each collaborator sends (None: all), by its own detection confidence."""
    comm = scene.cfg.comm
    if comm.sparsify == "none":
        return None
    b, a, _, h, w = scene.features.shape
    confidence = torch.ones(b, a, h, w, device=scene.features.device)
    for agent in range(1, a):
        _, out = scene.alone(agent, heads=("det",))
        confidence[:, agent] = cell_confidence(out.heatmap, scene.model.config.head_upsample)
    sent = select_cells(confidence.flatten(0, 1), mode=comm.sparsify, keep_ratio=comm.keep_ratio,
                        threshold=comm.threshold)
    return sent.view(b, a, h, w)


def _intermediate(scene: _Scene) -> CooperativePrediction:
    if not scene.spatial_fusion:  # a stage without agent fusion: the ego's own map, nothing is sent
        out = scene.model.run_heads(scene.features[:, 0], ("det", "pred"))
        return CooperativePrediction(scene.decode(out, scene.view), scene.no_messages())
    comm = scene.cfg.comm
    sent = _sent_cells(scene)
    received = transmit(scene.features, sent, MESSAGE_DTYPES[comm.precision])
    out = scene.model.run_heads(scene.model.fuse(received, scene.view, sent=sent), ("det", "pred"))
    _, _, c, h, w = scene.features.shape
    sizes = feature_message_bytes(sent, scene.view.agent_mask, channels=c, height=h, width=w,
                                  bytes_per_value=value_bytes(comm.precision))
    return CooperativePrediction(scene.decode(out, scene.view), sizes.cpu())


def _no_fusion(scene: _Scene) -> CooperativePrediction:
    view, out = scene.alone(0)
    return CooperativePrediction(scene.decode(out, view), scene.no_messages())


def _rounded(det: SceneDetections, dtype: torch.dtype) -> SceneDetections:
    """``det`` as it arrives when its float values travel at ``dtype``."""
    trip = {name: getattr(det, name).to(dtype).to(getattr(det, name).dtype)
            for name in ("boxes", "scores", "trajectories", "mode_scores")}
    return SceneDetections(labels=det.labels, **trip)


def _late(scene: _Scene) -> CooperativePrediction:
    mask, to_ego = scene.view.agent_mask.cpu(), scene.view.agent_to_ego.cpu()
    dtype = MESSAGE_DTYPES[scene.cfg.comm.precision]
    collected: list[list[SceneDetections]] = [[] for _ in range(mask.shape[0])]
    counts = torch.zeros(mask.shape, dtype=torch.int64)
    for agent in range(mask.shape[1]):
        if not mask[:, agent].any():
            continue
        view, out = scene.alone(agent)
        for b, det in enumerate(scene.decode(out, view)):
            if not mask[b, agent]:
                continue
            counts[b, agent] = len(det.scores)
            if agent == 0:
                collected[b].append(det)
                continue
            received = detections_to_frame(_rounded(det, dtype), to_ego[b, agent])
            collected[b].append(detections_inside(received, scene.model.geometry))
    sizes = detection_message_bytes(counts, mask, bytes_per_value=value_bytes(scene.cfg.comm.precision),
                                    values_per_detection=detection_values(scene.model.config.num_modes,
                                                                          scene.model.config.future_steps))
    return CooperativePrediction([merge_detections(dets) for dets in collected], sizes)


FUSIONS: dict[str, Callable[[_Scene], CooperativePrediction]] = {
    "intermediate": _intermediate, "none": _no_fusion, "late": _late}
"""``eval.fusion`` -> how the ego's detections are made (the names are ``FUSION_MODES``)."""
assert tuple(FUSIONS) == FUSION_MODES


@torch.no_grad()
def predict_cooperative(model: V2XModel, batch: Batch, cfg: EvalConfig, *, stage: StageConfig | None = None,
                        score_threshold: float = 0.1) -> CooperativePrediction:
    """The ego's detections for every scene of ``batch`` (on the model's device) under ``cfg.fusion`` and
    ``cfg.comm``, with ``stage``'s input view and forward switches, and the bytes each agent sent."""
    view = stage_view(batch, stage) if stage is not None else batch
    switches = stage_switches(stage) if stage is not None else {}
    features = model.agent_features(view, temporal_fusion=switches.get("temporal_fusion", True))
    scene = _Scene(model=model, view=view, features=features, spatial_fusion=switches.get("spatial_fusion", True),
                   cfg=cfg, score_threshold=score_threshold)
    return FUSIONS[cfg.fusion](scene)
