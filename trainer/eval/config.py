"""Evaluation settings: IoU thresholds, class names and the prediction-metric match rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from trainer.data.latency import LatencyConfig
from trainer.data.pose_noise import PoseNoiseConfig
from trainer.eval.cooperative_config import FUSION_MODES, CommConfig

PRED_MATCH_RULES = ("iou", "distance")


@dataclass(kw_only=True)
class EvalConfig:
    """Detection AP and prediction (minADE / minFDE / MR / EPA) settings; see docs/METRICS.md."""

    class_names: list[str] = field(default_factory=lambda: ["vehicle", "pedestrian", "truck"])
    """Name of each training class index (labels and gt_classes index into this list); keep equal to
    the names of ``DataConfig.classes``."""
    iou_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    """Rotated BEV IoU thresholds at which detection AP is reported."""
    pred_match: str = "distance"
    """How detections are matched to ground truth for prediction metrics: "distance" (BEV centre
    distance <= ``pred_match_distance``, as ViP3D does) or "iou" (BEV IoU >= ``pred_match_iou``)."""
    pred_match_iou: float = 0.5
    """Minimum BEV IoU for a prediction match when pred_match == "iou"."""
    pred_match_distance: float = 2.0
    """Maximum BEV centre distance (m) for a prediction match when pred_match == "distance"."""
    pred_score_threshold: float = 0.3
    """Detections scoring below this are ignored by prediction metrics (neither matched nor FP)."""
    miss_threshold: float = 2.0
    """minFDE (m) above which a matched object is a miss (MR) and not an EPA hit."""
    epa_fp_weight: float = 0.5
    """Weight of each false positive in EPA = max(0, (hits - w * FP) / N_GT)."""
    fusion: str = "intermediate"
    """What is evaluated: ``intermediate`` (the model's feature fusion), ``none`` (the ego alone) or ``late``
    (each agent's own detections merged by NMS in the ego frame); see ``trainer.eval.cooperative``."""
    comm: CommConfig = field(default_factory=CommConfig)
    """The collaborators' messages: precision and sparsification; their bytes are reported."""
    pose_noise: PoseNoiseConfig = field(default_factory=PoseNoiseConfig)
    """Gaussian errors on the collaborators' poses during evaluation (seeded per sample: every evaluation of a
    sample draws the same errors)."""
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    """Collaborators' frames delayed by raw frames during evaluation (seeded per sample like ``pose_noise``)."""

    def __post_init__(self) -> None:
        if len(self.class_names) == 0 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"eval.class_names must be non-empty and unique, got {list(self.class_names)}")
        if len(self.iou_thresholds) == 0 or not all(0.0 < t <= 1.0 for t in self.iou_thresholds):
            raise ValueError(f"eval.iou_thresholds must be non-empty values in (0, 1], got {list(self.iou_thresholds)}")
        if self.pred_match not in PRED_MATCH_RULES:
            raise ValueError(f"eval.pred_match must be one of {PRED_MATCH_RULES}, got {self.pred_match!r}")
        if not 0.0 < self.pred_match_iou <= 1.0:
            raise ValueError(f"eval.pred_match_iou must be in (0, 1], got {self.pred_match_iou}")
        if self.pred_match_distance <= 0:
            raise ValueError(f"eval.pred_match_distance must be > 0, got {self.pred_match_distance}")
        if not 0.0 <= self.pred_score_threshold <= 1.0:
            raise ValueError(f"eval.pred_score_threshold must be in [0, 1], got {self.pred_score_threshold}")
        if self.miss_threshold <= 0:
            raise ValueError(f"eval.miss_threshold must be > 0, got {self.miss_threshold}")
        if self.epa_fp_weight < 0:
            raise ValueError(f"eval.epa_fp_weight must be >= 0, got {self.epa_fp_weight}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"eval.fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
