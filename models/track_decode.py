"""Object tracks from the history frames' points, and futures decoded from them (a second stage for prediction).

Why: the dense prediction head reads each object's motion from BEV cells of 0.8-1.6 m, which is too coarse
for speed and acceleration. On the built-in data a small MLP that sees only an object's true past track (five
positions over 2 s) and its class misses the 2 m final-displacement rule for 12% of validation vehicles; the
default job's model misses it for 55% (``bench/prediction_errors.py``). So this stage estimates the track:
1. the prediction head also regresses each object's past positions, one per history frame (coarse);
2. a point refinement of its own (``models.point_refine.PointRefineHead`` with a wider margin,
   ``TRACK_MARGIN_M``) places the object in each history frame's points, newest frame first, as the
   detection's refinement places the current box: the newest past frame from the coarse position, each older
   one from the constant-velocity extrapolation of the two newer placed positions (``backward_prior``), each in
   ``TRACK_PASSES`` passes (a pass starts where the previous one placed the box). A fast car's coarse position
   half a second back is off by about a metre, and the velocity the decoder needs is that of the placed track;
3. ``TrackDecoder`` decodes K future modes from the placed track, in the object's own frame.

The pieces are pure functions (``backward_prior``, ``to_box_frame``, ``from_box_frame``) around one small MLP.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.bev import BevGeometry
from models.warp import sample_at_points

TRACK_MARGIN_M = 1.5
"""The track refinement reads the points up to this far outside each past proposal (along its length and width):
the coarse past positions are off by a metre or more, where the current boxes are off by tenths."""
TRACK_PASSES = 2
"""Refinement passes per past frame."""
TRACK_SCALE_M = 10.0
"""Track positions enter the decoder divided by this (metres), so its inputs are of order one."""


def backward_prior(next_xy: Tensor, after_xy: Tensor) -> Tensor:
    """Where an object was at frame s, at constant velocity, from its positions at frames s+1 (``next_xy``) and
    s+2 (``after_xy``), both [N, 2] -> [N, 2]."""
    return 2 * next_xy - after_xy


def read_past_offsets(past_offsets: Tensor, centres: Tensor, geometry: BevGeometry) -> Tensor:
    """Bilinear read-out of the prediction head's past positions past_offsets [B, S, 2, H, W] at metric centres
    [B, M, 2] -> [B, M, S, 2] metres from each centre."""
    b, s, _, h, w = past_offsets.shape
    return sample_at_points(past_offsets.reshape(b, s * 2, h, w), centres, geometry).reshape(b, -1, s, 2)


def to_box_frame(xy: Tensor, boxes: Tensor) -> Tensor:
    """Points xy [N, ..., 2] (ego frame) -> (u, v) [N, ..., 2] in the frame of boxes [N, 7] (origin at the centre,
    u along the heading)."""
    cos, sin = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    shape = (-1,) + (1,) * (xy.dim() - 2)
    cos, sin = cos.view(shape), sin.view(shape)
    dx, dy = xy[..., 0] - boxes[:, 0].view(shape), xy[..., 1] - boxes[:, 1].view(shape)
    return torch.stack((dx * cos + dy * sin, -dx * sin + dy * cos), dim=-1)


def from_box_frame(uv: Tensor, boxes: Tensor) -> Tensor:
    """Inverse of ``to_box_frame``: (u, v) [N, ..., 2] in the frame of boxes [N, 7] -> ego-frame xy [N, ..., 2]."""
    cos, sin = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    shape = (-1,) + (1,) * (uv.dim() - 2)
    cos, sin = cos.view(shape), sin.view(shape)
    x = boxes[:, 0].view(shape) + uv[..., 0] * cos - uv[..., 1] * sin
    y = boxes[:, 1].view(shape) + uv[..., 0] * sin + uv[..., 1] * cos
    return torch.stack((x, y), dim=-1)


class TrackDecoder(nn.Module):
    """An MLP from an object's track to K future modes, all in the object's frame.

    Input per object: its past positions (u, v) in its current box frame, one per history frame, and the
    points the refinement saw there (log1p), its log size and class. Output: K trajectories of T_f steps
    (step displacements, accumulated) in the box frame, and K mode logits.
    """

    def __init__(self, num_classes: int, hidden: int, past_steps: int, num_modes: int, future_steps: int) -> None:
        super().__init__()
        self.num_classes, self.num_modes, self.future_steps = num_classes, num_modes, future_steps
        inputs = past_steps * 3 + 3 + num_classes
        self.mlp = nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_modes * (future_steps * 2 + 1)))

    def forward(self, track_uv: Tensor, counts: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """track_uv [N, S, 2] metres in the box frame, counts [N, S] points per past frame, boxes [N, 7],
        labels [N] -> (trajectories [N, K, T_f, 2] metres in the box frame from its centre, logits [N, K])."""
        n = track_uv.shape[0]
        classes = nn.functional.one_hot(labels.long().clamp(0, self.num_classes - 1), self.num_classes)
        features = torch.cat((track_uv.flatten(1) / TRACK_SCALE_M, torch.log1p(counts.float()),
                              torch.log(boxes[:, 3:6].float().clamp_min(1e-3)), classes.float()), dim=1)
        raw = self.mlp(features.to(self.mlp[0].weight.dtype))
        k, t = self.num_modes, self.future_steps
        steps = raw[:, : k * t * 2].view(n, k, t, 2)
        return steps.cumsum(dim=2), raw[:, k * t * 2:]
