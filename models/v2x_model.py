"""The V2XPnP-style multi-agent perception + prediction model (encoder, temporal + agent fusion, heads)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from models.agent_fusion import AgentFusion
from models.batch import Batch
from models.bev import BevGeometry
from models.config import ModelConfig
from models.balancer.task_fork import TaskFork
from models.heads import DetectionHead, HeadNeck, PredictionHead, ReconstructionHead
from models.output import ModelOutput
from models.pillar_encoder import PillarEncoder
from models.point_refine import PointRefineHead, apply_residuals, scene_points
from models.track_decode import (TRACK_MARGIN_M, TRACK_PASSES, TrackDecoder, backward_prior, from_box_frame,
                                 to_box_frame)
from models.sparse_encoder import SparseEncoder
from models.temporal_fusion import TemporalFusion
from models.window_attention import WindowAttention

HEAD_NAMES = ("det", "pred", "recon")


class V2XModel(nn.Module):
    """Per agent-frame LiDAR encoder -> temporal fusion per agent -> agent fusion in the ego frame ->
    windowed spatial attention -> Z -> neck (``head_upsample``) -> ``task_fork`` -> detection / prediction
    heads (recon reads Z).

    ``geometry`` is the grid of the detection and prediction heads' maps (what losses and decoding read);
    ``fusion_geometry`` is Z's, where fusion, attention and the reconstruction decoder run.

    ``task_fork`` is a plain attribute: assign a ``models.balancer.TaskFork`` subclass to change how the
    detection and prediction gradients are combined.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.fusion_geometry = BevGeometry.from_grid(config.grid, config.bev_stride)
        self.geometry = BevGeometry.from_grid(config.grid, config.head_stride)
        c = config.bev_channels
        self.encoder = SparseEncoder(config) if config.encoder == "spconv" else PillarEncoder(config)
        self.temporal = TemporalFusion(c, config.history, config.num_heads, config.ffn_ratio)
        self.agent_fusion = AgentFusion(c, config.num_agent_types, config.num_heads, config.ffn_ratio)
        shifts = [0, config.window_size // 2] * config.window_blocks
        self.spatial = nn.Sequential(*(WindowAttention(c, config.num_heads, config.window_size, s, config.ffn_ratio)
                                       for s in shifts))
        self.neck = HeadNeck(c, config.head_upsample)
        self.task_fork: TaskFork = TaskFork()
        self.det_head = DetectionHead(c, config.head_channels, config.num_classes,
                                      iou_branch=config.iou_rectifier > 0, class_heads=config.class_heads)
        past_steps = config.history - 1 if config.track_decoder else 0
        self.pred_head = PredictionHead(c, config.head_channels, config.num_modes, config.future_steps, past_steps)
        self.refine_head = (PointRefineHead(config.num_classes, config.head_channels, config.refine_points)
                            if config.refine_points else None)
        self.track_head = (TrackDecoder(config.num_classes, 4 * config.head_channels, past_steps, config.num_modes,
                                        config.future_steps) if config.track_decoder else None)
        self.track_refine_head = (PointRefineHead(config.num_classes, config.head_channels, config.refine_points,
                                                  margin=TRACK_MARGIN_M) if config.track_decoder else None)
        z_half = 0.5 * (config.grid.z_range[1] - config.grid.z_range[0])
        self.recon_head = ReconstructionHead(c, config.head_channels, config.recon_points, self.fusion_geometry,
                                            z_half)

    def encode(self, batch: Batch, voxel_mask: Tensor | None = None, *, temporal_fusion: bool = True,
               spatial_fusion: bool = True, history_grad: bool = True) -> Tensor:
        """The shared fused feature Z [B, C, H, W] in the ego BEV frame now.

        voxel_mask: [V] bool, True = replace that voxel's features by the encoder's mask token (stage 1).
        temporal_fusion=False uses each agent's current-frame BEV map as is (history ignored);
        spatial_fusion=False uses the ego's own map (no agent fusion, no windowed attention). The
        manual multi-stage baseline trains with these switched off in its early stages.
        history_grad=False encodes the history frames without gradient (BEVFormer's previous BEV): only the
        current frame's features train the encoder, which saves most of the encoder's backward pass.
        """
        per_agent = self.agent_features(batch, voxel_mask, temporal_fusion=temporal_fusion, history_grad=history_grad)
        if not spatial_fusion:
            return per_agent[:, 0]
        return self.fuse(per_agent, batch)

    def agent_features(self, batch: Batch, voxel_mask: Tensor | None = None, *, temporal_fusion: bool = True,
                       history_grad: bool = True) -> Tensor:
        """Each agent's own feature now, in its own BEV frame: [B, A, C, H, W] (what a collaborator sends for
        fusion). The encoder per agent-frame, then temporal fusion (or the current frame's map); see ``encode``."""
        b, a, t = batch.frame_mask.shape
        if t != self.config.history:
            raise ValueError(f"batch has {t} history frames, model config.history is {self.config.history}")
        if history_grad or t == 1 or not torch.is_grad_enabled() or not temporal_fusion:
            bev = self.encoder(batch.voxels, batch.voxel_num_points, batch.voxel_coords, b * a * t, voxel_mask)
            bev = bev.view(b, a, t, *bev.shape[1:])
        else:
            bev = self._encode_history_frozen(batch, voxel_mask)
        if temporal_fusion:
            return self.temporal(bev, batch.frame_mask, batch.history_to_now, self.fusion_geometry)
        return bev[:, :, -1]

    def fuse(self, features: Tensor, batch: Batch, *, sent: Tensor | None = None) -> Tensor:
        """Z [B, C, H, W] from the agents' features [B, A, C, H, W] (``agent_features``, or what the ego received
        of them): agent fusion in the ego frame, then windowed spatial attention. ``batch`` gives the agents'
        mask, types and ``agent_to_ego``; ``sent`` [B, A, H, W] bool (each agent's own frame), when given, marks
        the cells the collaborators sent (the others take no part in the fusion)."""
        z = self.agent_fusion(features, batch.agent_mask, batch.agent_types, batch.agent_to_ego,
                              self.fusion_geometry, sent=sent)
        return self.spatial(z)

    def _encode_history_frozen(self, batch: Batch, voxel_mask: Tensor | None) -> Tensor:
        """BEV maps [B, A, T, C, H, W]: the current frames' with gradient, the history frames' without."""
        b, a, t = batch.frame_mask.shape
        agent, slot = batch.voxel_coords[:, 0].long().div(t, rounding_mode="floor"), batch.voxel_coords[:, 0] % t
        current = slot == t - 1
        with torch.no_grad():  # history frame (agent, k < t-1) -> flat index agent * (t-1) + k
            history = self._encode_rows(batch, voxel_mask, ~current, (agent * (t - 1) + slot)[~current], t - 1)
        now = self._encode_rows(batch, voxel_mask, current, agent[current], 1)
        return torch.cat((history, now), dim=2)

    def _encode_rows(self, batch: Batch, voxel_mask: Tensor | None, rows: Tensor, frame_index: Tensor,
                     frames: int) -> Tensor:
        """The encoder on the voxels ``rows`` [V] bool, renumbered to ``frame_index`` [V'] among
        ``B * A * frames`` agent-frames -> [B, A, frames, C, H, W]."""
        b, a, _ = batch.frame_mask.shape
        coords = batch.voxel_coords[rows].clone()
        coords[:, 0] = frame_index.to(coords.dtype)
        mask = voxel_mask[rows] if voxel_mask is not None else None
        bev = self.encoder(batch.voxels[rows], batch.voxel_num_points[rows], coords, b * a * frames, mask)
        return bev.view(b, a, frames, *bev.shape[1:])

    def refine_residuals(self, batch: Batch, proposals: Tensor, labels: Tensor) -> Tensor:
        """The point refinement's residuals [B, N, 8] for proposals [B, N, 7] of classes labels [B, N] (padded
        rows are refined too; their residuals are ignored by the caller). Needs ``config.refine_points`` > 0."""
        if self.refine_head is None:
            raise ValueError("this model has no point refinement (model.refine_points is 0)")
        points = scene_points(batch)
        return torch.stack([self.refine_head(points[s], proposals[s], labels[s]) for s in range(len(points))])

    def refine_boxes(self, points: Tensor, boxes: Tensor, labels: Tensor) -> Tensor:
        """One scene's boxes [N, 7] of classes labels [N], placed by the point refinement from that scene's
        points [P, 4] (``models.point_refine.scene_points``); as they are without a refinement."""
        if self.refine_head is None:
            return boxes
        return apply_residuals(boxes.float(), self.refine_head(points, boxes, labels).float())

    def track_futures(self, past_points: Sequence[Tensor], boxes: Tensor, labels: Tensor, past_offsets: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The track stage for one scene (``models.track_decode``; needs ``config.track_decoder``).

        past_points: the scene's points of each history frame before now, oldest first (S tensors [P_s, 4], ego
        frame now; ``scene_points(batch, s)``); boxes [N, 7] the objects now (refined); labels [N];
        past_offsets [N, S, 2] the prediction head's coarse past positions, metres from each centre.
        Frames are placed newest first, each in ``TRACK_PASSES`` refinement passes. Returns (proposals
        [N, S, TRACK_PASSES, 7] and residuals [N, S, TRACK_PASSES, 8] of every pass, trajectories
        [N, K, T_f, 2] metres from each centre in ego axes, mode logits [N, K]).
        """
        if self.track_head is None or self.track_refine_head is None:
            raise ValueError("this model has no track decoder (model.track_decoder is false)")
        boxes = boxes.detach().float()
        coarse = boxes[:, None, :2] + past_offsets.detach().float()  # [N, S, 2]
        steps = coarse.shape[1]
        placed: list[Tensor] = [boxes[:, :2]]  # positions from now backwards
        proposals, residuals, counts = [None] * steps, [None] * steps, [None] * steps
        for s in reversed(range(steps)):
            box = boxes.clone()
            box[:, :2] = coarse[:, s] if s == steps - 1 else backward_prior(placed[-1], placed[-2])
            frame_proposals, frame_residuals = [], []
            for _ in range(TRACK_PASSES):
                residual, counts[s] = self.track_refine_head.refine(past_points[s], box, labels)
                frame_proposals.append(box)
                frame_residuals.append(residual)
                box = box.clone()
                box[:, :2] = apply_residuals(box, residual.detach().float())[:, :2]
            proposals[s], residuals[s] = torch.stack(frame_proposals, 1), torch.stack(frame_residuals, 1)
            placed.append(box[:, :2])
        track = torch.stack(placed[:0:-1], dim=1)  # [N, S, 2], oldest first
        local, logits = self.track_head(to_box_frame(track, boxes), torch.stack(counts, 1), boxes, labels)
        trajectories = from_box_frame(local.float(), boxes) - boxes[:, None, None, :2]
        return torch.stack(proposals, 1), torch.stack(residuals, 1), trajectories, logits

    def forward(self, batch: Batch, *, heads: Sequence[str] = ("det", "pred"), voxel_mask: Tensor | None = None,
                temporal_fusion: bool = True, spatial_fusion: bool = True, history_grad: bool = True) -> ModelOutput:
        """Run the encoder and the requested heads (any of ``det``, ``pred``, ``recon``)."""
        unknown = set(heads) - set(HEAD_NAMES)
        if not heads or unknown:
            raise ValueError(f"heads must be a non-empty subset of {HEAD_NAMES}, got {tuple(heads)}")
        z = self.encode(batch, voxel_mask, temporal_fusion=temporal_fusion, spatial_fusion=spatial_fusion,
                        history_grad=history_grad)
        return self.run_heads(z, heads)

    def run_heads(self, z: Tensor, heads: Sequence[str]) -> ModelOutput:
        """The requested heads (any of ``det``, ``pred``, ``recon``) on Z [B, C, H, W]."""
        out = ModelOutput(z=z)
        if "det" in heads or "pred" in heads:
            z_det, z_pred = self.task_fork(self.neck(z))
            if "det" in heads:
                out.heatmap, out.box_codes, out.iou_logits = self.det_head(z_det)
            if "pred" in heads:
                out.trajectories, out.mode_logits, out.past_offsets = self.pred_head(z_pred)
        if "recon" in heads:
            out.recon_points = self.recon_head(z)
        return out
