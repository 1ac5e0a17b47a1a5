"""Evaluation settings: IoU thresholds, class names and the prediction-metric match rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from trainer.eval.protocols import AP_PROTOCOLS, PRED_PROTOCOLS, APRules, PredictionRules

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
    pred_score_threshold: Optional[float] = None
    """Detections scoring below this are ignored by prediction metrics (neither matched nor FP); None: the
    prediction protocol's (0.3 turbotrain, 0.35 vip3d)."""
    miss_threshold: float = 2.0
    """minFDE (m) above which a matched object is a miss (MR) and not an EPA hit."""
    epa_fp_weight: float = 0.5
    """Weight of each false positive in EPA = max(0, (hits - w * FP) / N_GT)."""
    ap_protocol: str = "turbotrain"
    """Detection-AP rules (``trainer.eval.protocols.AP_PROTOCOLS``): ``turbotrain`` or ``opencood``."""
    pred_protocol: str = "turbotrain"
    """Prediction-metric rules (``trainer.eval.protocols.PRED_PROTOCOLS``): ``turbotrain`` or ``vip3d``."""
    range: Optional[list[float]] = None
    """Evaluation range [x_min, y_min, x_max, y_max] (m, ego BEV frame), separate from the model's grid:
    ground truth and detections outside it are left out of every metric (kept by the AP protocol's rule:
    centre for turbotrain, all corners for opencood). None: everything the grid holds."""
    distance_bins: list[float] = field(default_factory=list)
    """Edges (m) of distance ranges for ``AP[<lo>-<hi>m]@<t>`` besides the overall AP, e.g. [0, 30, 50] for
    0-30, 30-50 and 50+ m; a box's distance is its BEV centre's from the ego. Empty: none."""

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

    @property
    def ap_rules(self) -> APRules:
        """The rules of ``ap_protocol``."""
        return AP_PROTOCOLS[self.ap_protocol]

    @property
    def pred_rules(self) -> PredictionRules:
        """The rules of ``pred_protocol``."""
        return PRED_PROTOCOLS[self.pred_protocol]

    @property
    def score_cut(self) -> float:
        """The detection score threshold of the prediction metrics in force."""
        return self.pred_rules.score_threshold if self.pred_score_threshold is None else self.pred_score_threshold

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
        if self.pred_score_threshold is not None and not 0.0 <= self.pred_score_threshold <= 1.0:
            raise ValueError(f"eval.pred_score_threshold must be in [0, 1], got {self.pred_score_threshold}")
        if self.ap_protocol not in AP_PROTOCOLS:
            raise ValueError(f"eval.ap_protocol must be one of {tuple(AP_PROTOCOLS)}, got {self.ap_protocol!r}")
        if self.pred_protocol not in PRED_PROTOCOLS:
            raise ValueError(f"eval.pred_protocol must be one of {tuple(PRED_PROTOCOLS)}, got {self.pred_protocol!r}")
        if self.pred_rules.hungarian and self.pred_match != "distance":
            raise ValueError(f"eval.pred_protocol={self.pred_protocol} matches by centre distance: it needs "
                             f"eval.pred_match=distance, got {self.pred_match!r}")
        if self.range is not None and (len(self.range) != 4 or not (self.range[0] < self.range[2]
                                                                    and self.range[1] < self.range[3])):
            raise ValueError(f"eval.range must be [x_min, y_min, x_max, y_max] or null, got {list(self.range)}")
        edges = list(self.distance_bins)
        if edges and (edges[0] < 0 or any(b <= a for a, b in zip(edges, edges[1:]))):
            raise ValueError(f"eval.distance_bins must be increasing edges >= 0, got {edges}")
        if self.miss_threshold <= 0:
            raise ValueError(f"eval.miss_threshold must be > 0, got {self.miss_threshold}")
        if self.epa_fp_weight < 0:
            raise ValueError(f"eval.epa_fp_weight must be >= 0, got {self.epa_fp_weight}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"eval.fusion must be one of {FUSION_MODES}, got {self.fusion!r}")
