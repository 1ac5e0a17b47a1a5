"""Weights and target settings of the detection and prediction losses."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.box_coding import BOX_CODE_SIZE


@dataclass(kw_only=True)
class TaskLossConfig:
    """How the task losses are built and weighted."""

    heatmap_weight: float = 1.0
    """Weight of the centre-heatmap focal loss in the detection loss."""
    box_weight: float = 2.0
    """CenterPoint's ``loc_weight``: weight of the box loss (per-code L1 at object centres, weighted by
    ``code_weights`` and summed over the codes). OpenPCDet uses 0.25 (nuScenes) to 2.0 (Waymo)."""
    code_weights: list[float] = field(default_factory=lambda: [1.0] * BOX_CODE_SIZE)
    """Weight of each box code (dx, dy, z, log l, log w, log h, sin yaw, cos yaw) in the box loss."""
    iou_weight: float = 1.0
    """Weight of the IoU branch's loss (``model.iou_rectifier`` > 0; AFDetV2 uses 1)."""
    refine_weight: float = 1.0
    """Weight of the point refinement's residual L1 (``model.refine_points`` > 0)."""
    trajectory_weight: float = 1.0
    """Weight of the winner-takes-all trajectory regression in the prediction loss."""
    mode_weight: float = 0.5
    """Weight of the mode-classification cross-entropy in the prediction loss (the dense head's and, with
    ``model.track_decoder``, the track decoder's)."""
    past_weight: float = 1.0
    """Weight of the prediction head's past-position L1 (``model.track_decoder``)."""
    track_weight: float = 1.0
    """Weight of the track stage's refinement L1 at the past frames and of its decoder's winner-takes-all
    regression (``model.track_decoder``)."""
    min_overlap: float = 0.1
    """IoU the Gaussian radius keeps (CenterPoint's gaussian_overlap)."""
    min_radius_m: float = 1.6
    """Smallest Gaussian radius in metres, rounded to whole BEV cells (at least 1). CenterPoint's is 2
    cells of 0.8 m (Waymo); at the tiny preset's 1.6 m cells this is 1 cell."""

    def __post_init__(self) -> None:
        for name in ("heatmap_weight", "box_weight", "iou_weight", "refine_weight", "trajectory_weight", "mode_weight",
                     "past_weight", "track_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.code_weights) != BOX_CODE_SIZE or any(w < 0 for w in self.code_weights):
            raise ValueError(f"code_weights must be {BOX_CODE_SIZE} values >= 0, got {list(self.code_weights)}")
        if not 0 < self.min_overlap < 1:
            raise ValueError(f"min_overlap must be in (0, 1), got {self.min_overlap}")
        if self.min_radius_m < 0:
            raise ValueError(f"min_radius_m must be >= 0, got {self.min_radius_m}")

    def min_radius_cells(self, cell_size: float) -> int:
        """``min_radius_m`` in whole cells of ``cell_size`` metres (at least 1 when it is positive)."""
        return max(int(self.min_radius_m > 0), round(self.min_radius_m / cell_size))
