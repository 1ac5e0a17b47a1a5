"""Point-based box refinement (a LiDAR R-CNN-style second stage): a PointNet reads the LiDAR points inside
each proposal box, in the box's own frame, and regresses a residual that places the box more precisely than
the BEV cells can.

Why: the BEV heads code a centre as an offset inside a cell of 0.8-1.6 m, from voxel means, while a
pedestrian's box is about 0.56 m across and IoU 0.5 needs its centre within about 0.1 m. The points on the
object carry that position directly (tens of points per pedestrian in the current frame of the agents).

The pieces are pure functions (``scene_points``, ``proposal_points``, ``encode_residuals``,
``apply_residuals``) around one small module (``PointRefineHead``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.batch import Batch

RESIDUAL_SIZE = 8
"""(du, dv, dz) metres in the proposal's frame, (dlog l, dlog w, dlog h), (sin, cos) of the yaw residual."""
POINT_FEATURES = 6
"""Per point: (u, v, z - z_box) metres in the box frame, intensity, and u, v over the box's half extents."""
REFINE_MARGIN_M = 0.5
"""Points up to this far outside a proposal box (in its frame, along each axis) are read: proposals are off
by a few tenths of a metre, and the points just outside show where the object really ends."""


def scene_points(batch: Batch, step: int = -1) -> list[Tensor]:
    """The points of history frame ``step`` (default -1: the current frame) of every real agent of each scene,
    in the ego BEV frame now (a history frame goes through its ``history_to_now``, then ``agent_to_ego``).

    Returns B tensors [P_b, 4] (x, y, z, intensity), read from ``batch.voxels`` (the points the encoder sees).
    """
    b, a, t = batch.frame_mask.shape
    step = step % t
    n = batch.voxel_coords[:, 0].long()
    in_step = n % t == step
    agent = n // t  # flat (scene, agent) index
    valid = torch.arange(batch.voxels.shape[1], device=n.device)[None] < batch.voxel_num_points[:, None].long()
    rows = in_step[:, None] & valid  # [V, P]
    points = batch.voxels[rows].float()  # [sum, 4] agent BEV frame at that step
    owner = agent[:, None].expand_as(rows)[rows]  # [sum] flat (scene, agent)
    to_ego = (batch.agent_to_ego.float() @ batch.history_to_now[:, :, step].float()).reshape(b * a, 3, 3)[owner]
    xy = (to_ego[:, :2, :2] @ points[:, :2, None]).squeeze(-1) + to_ego[:, :2, 2]
    ego = torch.cat((xy, points[:, 2:]), dim=1)
    scene = owner // a
    return [ego[scene == s] for s in range(b)]


def proposal_points(points: Tensor, boxes: Tensor, num: int, margin: float = REFINE_MARGIN_M,
                    margin_z: float = REFINE_MARGIN_M) -> tuple[Tensor, Tensor, Tensor]:
    """The points in and around each box, in the box's frame: up to ``margin`` metres outside it along its length
    and width, ``margin_z`` above and below.

    points: [P, 4] (x, y, z, intensity); boxes: [N, 7] (x, y, z, l, w, h, yaw) -> (features [N, num, 6],
    mask [N, num] bool, count [N] int64: points in reach before sampling). A box with more than ``num`` points
    in reach keeps ``num`` of them evenly spaced in their input order (deterministic); unused slots are zero.
    """
    n = boxes.shape[0]
    features = points.new_zeros(n, num, POINT_FEATURES)
    mask = torch.zeros(n, num, dtype=torch.bool, device=points.device)
    if n == 0 or points.shape[0] == 0:
        return features, mask, torch.zeros(n, dtype=torch.long, device=points.device)
    half = boxes[:, 3:6] / 2 + torch.tensor([margin, margin, margin_z], dtype=boxes.dtype, device=boxes.device)
    reach = half[:, :2].norm(dim=1)
    near = torch.cdist(boxes[:, :2].float(), points[:, :2].float()) <= reach[:, None]  # [N, P]
    box_idx, point_idx = near.nonzero(as_tuple=True)  # sorted by box, then by point
    box, pt = boxes[box_idx], points[point_idx]
    cos, sin = torch.cos(box[:, 6]), torch.sin(box[:, 6])
    dx, dy = pt[:, 0] - box[:, 0], pt[:, 1] - box[:, 1]
    u, v, dz = dx * cos + dy * sin, -dx * sin + dy * cos, pt[:, 2] - box[:, 2]
    keep = (u.abs() <= half[box_idx, 0]) & (v.abs() <= half[box_idx, 1]) & (dz.abs() <= half[box_idx, 2])
    box_idx, u, v, dz, intensity = box_idx[keep], u[keep], v[keep], dz[keep], pt[keep, 3]
    count = torch.bincount(box_idx, minlength=n)
    start = torch.cumsum(count, 0) - count
    rank = torch.arange(box_idx.shape[0], device=points.device) - start[box_idx]
    span = count.clamp_min(num)[box_idx]
    picked = (rank * num) % span < num  # the first of each run of span/num ranks
    slot = (rank * num) // span
    box_idx, slot = box_idx[picked], slot[picked]
    l_half, w_half = boxes[box_idx, 3] / 2, boxes[box_idx, 4] / 2
    u, v, dz, intensity = u[picked], v[picked], dz[picked], intensity[picked]
    features[box_idx, slot] = torch.stack((u, v, dz, intensity, u / l_half.clamp_min(1e-3),
                                           v / w_half.clamp_min(1e-3)), dim=1).to(features.dtype)
    mask[box_idx, slot] = True
    return features, mask, count


def encode_residuals(proposals: Tensor, targets: Tensor) -> Tensor:
    """The residuals that move ``proposals`` [..., 7] onto ``targets`` [..., 7] -> [..., 8] (``RESIDUAL_SIZE``)."""
    cos, sin = torch.cos(proposals[..., 6]), torch.sin(proposals[..., 6])
    dx, dy = targets[..., 0] - proposals[..., 0], targets[..., 1] - proposals[..., 1]
    du, dv = dx * cos + dy * sin, -dx * sin + dy * cos
    dz = targets[..., 2] - proposals[..., 2]
    dlog = torch.log(targets[..., 3:6].clamp_min(1e-3) / proposals[..., 3:6].clamp_min(1e-3))
    dyaw = targets[..., 6] - proposals[..., 6]
    return torch.cat((torch.stack((du, dv, dz), -1), dlog, torch.stack((torch.sin(dyaw), torch.cos(dyaw)), -1)), -1)


def apply_residuals(proposals: Tensor, residuals: Tensor) -> Tensor:
    """Inverse of ``encode_residuals``: proposals [..., 7], residuals [..., 8] -> refined boxes [..., 7]."""
    cos, sin = torch.cos(proposals[..., 6]), torch.sin(proposals[..., 6])
    du, dv = residuals[..., 0], residuals[..., 1]
    x = proposals[..., 0] + du * cos - dv * sin
    y = proposals[..., 1] + du * sin + dv * cos
    z = proposals[..., 2] + residuals[..., 2]
    size = proposals[..., 3:6] * torch.exp(residuals[..., 3:6].clamp(-3.0, 3.0))
    yaw = proposals[..., 6] + torch.atan2(residuals[..., 6], residuals[..., 7])
    return torch.cat((torch.stack((x, y, z), -1), size, yaw[..., None]), -1)


class PointRefineHead(nn.Module):
    """PointNet over each proposal's points (shared MLP, masked max-pool) plus the proposal's size, class and
    point count -> residuals [N, 8] (``encode_residuals``' coding). The output layer starts at zero, with the
    yaw residual's cosine at 1, so an untrained head leaves its proposals as they are."""

    def __init__(self, num_classes: int, hidden: int, points: int, margin: float = REFINE_MARGIN_M) -> None:
        super().__init__()
        self.points, self.num_classes, self.margin = points, num_classes, margin
        self.point_mlp = nn.Sequential(nn.Linear(POINT_FEATURES, hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, 2 * hidden), nn.ReLU(inplace=True))
        self.box_mlp = nn.Sequential(nn.Linear(2 * hidden + 4 + num_classes, 2 * hidden), nn.ReLU(inplace=True),
                                     nn.Linear(2 * hidden, RESIDUAL_SIZE))
        nn.init.zeros_(self.box_mlp[-1].weight)
        with torch.no_grad():
            self.box_mlp[-1].bias.copy_(torch.tensor([0.0] * (RESIDUAL_SIZE - 1) + [1.0]))

    def forward(self, points: Tensor, boxes: Tensor, labels: Tensor) -> Tensor:
        """points [P, 4] of one scene (ego frame), boxes [N, 7] (detached proposals), labels [N] -> residuals
        [N, 8]."""
        return self.refine(points, boxes, labels)[0]

    def refine(self, points: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``forward``'s residuals [N, 8] and the points each proposal had in reach [N] (int64)."""
        features, mask, count = proposal_points(points, boxes.detach().float(), self.points, self.margin)
        per_point = self.point_mlp(features.to(self.point_mlp[0].weight.dtype))  # [N, S, 2h]
        pooled = per_point.masked_fill(~mask[..., None], 0.0).amax(dim=1)  # ReLU outputs: 0 is the floor
        classes = nn.functional.one_hot(labels.long().clamp(0, self.num_classes - 1), self.num_classes)
        context = torch.cat((torch.log(boxes[:, 3:6].detach().float().clamp_min(1e-3)),
                             torch.log1p(count.float())[:, None], classes.float()), dim=1).to(pooled.dtype)
        return self.box_mlp(torch.cat((pooled, context), dim=1)), count
