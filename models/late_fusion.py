"""Late fusion: every agent decodes its own detections; the ego maps them into its frame and merges them.

``detections_to_frame`` moves one agent's ``SceneDetections`` by a rigid 2-D transform (boxes, headings,
trajectories). ``merge_detections`` fuses the agents' lists by circle NMS per class across agents: a detection
is dropped when a higher-scored one of the same class from another agent lies within the class's radius. An
agent's own list has been through the same NMS when it was decoded, so a single agent's list comes out as it
went in.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.detections import SceneDetections


def detections_to_frame(det: SceneDetections, transform: Tensor) -> SceneDetections:
    """``det`` in another frame: transform [3, 3] is a rigid 2-D homogeneous map (source frame -> target frame).

    Box centres and every trajectory point are mapped; yaw turns by the transform's rotation; z, sizes, scores,
    labels and mode scores are unchanged.
    """
    rot, shift = transform[:2, :2].to(det.boxes.dtype), transform[:2, 2].to(det.boxes.dtype)
    boxes = det.boxes.clone()
    boxes[:, :2] = det.boxes[:, :2] @ rot.T + shift
    boxes[:, 6] = det.boxes[:, 6] + torch.atan2(rot[1, 0], rot[0, 0])
    trajectories = det.trajectories @ rot.T.to(det.trajectories.dtype) + shift.to(det.trajectories.dtype)
    return SceneDetections(boxes=boxes, scores=det.scores, labels=det.labels, trajectories=trajectories,
                           mode_scores=det.mode_scores)


def merge_detections(per_agent: list[SceneDetections], radii: Tensor) -> SceneDetections:
    """One list from the agents' lists (all in one frame): by descending score (ties: agent order, then list
    order), each detection is kept unless a kept detection of the same class from ANOTHER agent lies within
    ``radii[label]`` metres (radii: [K] per class). Needs at least one list."""
    if not per_agent:
        raise ValueError("merge_detections needs at least one agent's detections")
    boxes = torch.cat([d.boxes for d in per_agent])
    scores = torch.cat([d.scores for d in per_agent])
    labels = torch.cat([d.labels for d in per_agent])
    source = torch.cat([torch.full((len(d.scores),), i, dtype=torch.long) for i, d in enumerate(per_agent)])
    order = scores.argsort(descending=True, stable=True)
    dist = torch.cdist(boxes[:, :2].float(), boxes[:, :2].float())
    rival = (labels[:, None] == labels[None, :]) & (source[:, None] != source[None, :])
    rival &= dist < radii.to(dist.device)[labels][:, None]
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if not suppressed[i]:
            keep.append(i)
            suppressed |= rival[i]
    kept = torch.tensor(keep, dtype=torch.long)
    return SceneDetections(boxes=boxes[kept], scores=scores[kept], labels=labels[kept],
                           trajectories=torch.cat([d.trajectories for d in per_agent])[kept],
                           mode_scores=torch.cat([d.mode_scores for d in per_agent])[kept])
