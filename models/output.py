"""What the model's forward returns: the shared feature Z and the dense predictions of the heads that ran."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class TrackOutputs:
    """The track stage (``models.track_decode``) for M objects per scene: what its losses read."""

    proposals: Tensor
    """[B, M, S, P, 7] (detached) each object's box at its past position before each of the P refinement
    passes at each past frame (the refinement's inputs)."""
    residuals: Tensor
    """[B, M, S, P, 8] the track refinement's residuals for ``proposals``."""
    origin: Tensor
    """[B, M, 7] (detached) the boxes the tracks and trajectories are relative to (refined current boxes)."""
    trajectories: Tensor
    """[B, M, K, T_f, 2] decoded futures, metres from ``origin``'s centre, ego frame axes."""
    mode_logits: Tensor
    """[B, M, K] their mode logits."""


@dataclass
class ModelOutput:
    """Dense per-cell outputs on the ego BEV grid (H along y, W along x); heads not run are None."""

    z: Tensor
    """[B, C, H, W] fused spatio-temporal multi-agent feature (before the task fork)."""
    heatmap: Tensor | None = None
    """[B, num_classes, H, W] centre heatmap logits."""
    box_codes: Tensor | None = None
    """[B, 8, H, W] box codes relative to each cell (``models.box_coding``); [B, K*8, H, W] with
    ``model.class_heads`` (class k's at channels 8k..8k+7; ``box_coding.class_codes`` selects them)."""
    iou_logits: Tensor | None = None
    """[B, 1, H, W] predicted BEV IoU (logits) of each cell's decoded box (``model.iou_rectifier`` > 0)."""
    trajectories: Tensor | None = None
    """[B, K, T_f, 2, H, W] future (x, y) offsets in metres from the object centre read out at that cell."""
    mode_logits: Tensor | None = None
    """[B, K, H, W] trajectory mode logits."""
    past_offsets: Tensor | None = None
    """[B, S, 2, H, W] past (x, y) offsets in metres from the object centre at that cell, one per history frame
    before now, oldest first (``model.track_decoder``)."""
    track: "TrackOutputs | None" = None
    """The track stage's outputs at the ground-truth objects (``model.track_decoder``; filled by the supervised
    task, not by ``forward``)."""
    refine_proposals: Tensor | None = None
    """[B, M, 7] (detached) boxes decoded at each ground-truth object's centre cell: the point refinement's
    training proposals (``model.refine_points`` > 0; filled by the supervised task, not by ``forward``)."""
    refine_residuals: Tensor | None = None
    """[B, M, 8] the point refinement's residuals for ``refine_proposals`` (``models.point_refine``)."""
    recon_points: Tensor | None = None
    """[B, P, 3, H, W] reconstructed points per cell, metric offsets from the cell centre (z from grid centre)."""
