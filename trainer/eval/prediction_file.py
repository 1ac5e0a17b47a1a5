"""Predictions of one sample as a file record: detections (boxes, scores, classes) and K-mode trajectories
with mode scores, in the ego BEV frame and in the world frame (``launch/predict.py``'s output).

The ego BEV frame is the ego LiDAR's (x, y) at the sample time with its yaw, heights measured from the ego
LiDAR (docs/DATA_FORMAT.md); the world frame is the dataset's (OpenCOOD ``x_to_world``). A box maps to the
world by the ego pose's SE(2) (x, y, yaw) plus its height ``z``; roll and pitch are not part of a BEV box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.detections import SceneDetections
from trainer.data.geometry import bev_to_world, wrap_angle

DECIMALS = 4
"""Digits kept in the JSON Lines file (0.1 mm, 1e-4 rad, 1e-4 in scores); the npz keeps float32."""


def ego_to_world(boxes: np.ndarray, trajectories: np.ndarray, ego_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [N, 7] and trajectories [N, K, T_f, 2] in the ego BEV frame -> the same in the world frame
    (float64), for the ego LiDAR pose [6] (x, y, z, roll, yaw, pitch; degrees)."""
    m = bev_to_world(np.asarray(ego_pose, dtype=np.float64))  # [3, 3]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out = boxes.copy()
    out[:, :2] = boxes[:, :2] @ m[:2, :2].T + m[:2, 2]
    out[:, 2] = boxes[:, 2] + float(ego_pose[2])
    out[:, 6] = wrap_angle(boxes[:, 6] + np.radians(float(ego_pose[4])))
    traj = np.asarray(trajectories, dtype=np.float64)
    return out, traj @ m[:2, :2].T + m[:2, 2]


def prediction_arrays(det: SceneDetections, ego_pose: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of one sample's predictions (what the npz holds): ``boxes`` [N, 7], ``scores`` [N],
    ``labels`` [N], ``trajectories`` [N, K, T_f, 2], ``mode_scores`` [N, K] (ego frame), ``world_boxes``,
    ``world_trajectories`` and ``ego_pose`` [6]."""
    boxes = det.boxes.detach().cpu().double().numpy()
    trajectories = det.trajectories.detach().cpu().double().numpy()
    world_boxes, world_traj = ego_to_world(boxes, trajectories, ego_pose)
    return {
        "boxes": boxes.astype(np.float32), "scores": det.scores.detach().cpu().float().numpy(),
        "labels": det.labels.detach().cpu().numpy().astype(np.int64),
        "trajectories": trajectories.astype(np.float32),
        "mode_scores": det.mode_scores.detach().cpu().float().numpy(),
        "world_boxes": world_boxes, "world_trajectories": world_traj,
        "ego_pose": np.asarray(ego_pose, dtype=np.float64),
    }


def _rounded(array: np.ndarray) -> Any:
    return np.round(np.asarray(array, dtype=np.float64), DECIMALS).tolist()


def prediction_record(key: str, meta: dict, arrays: dict[str, np.ndarray], class_names: list[str]) -> dict:
    """One JSON Lines record: the sample's identity, then ``ego`` and ``world`` frames' detections."""
    labels = arrays["labels"].tolist()
    return {
        "key": key, "scenario": meta.get("scenario"), "ego_id": meta.get("ego_id"), "timestamp": meta.get("timestamp"),
        "ego_pose": _rounded(arrays["ego_pose"]), "classes": [class_names[i] for i in labels],
        "labels": labels, "scores": _rounded(arrays["scores"]), "mode_scores": _rounded(arrays["mode_scores"]),
        "ego": {"boxes": _rounded(arrays["boxes"]), "trajectories": _rounded(arrays["trajectories"])},
        "world": {"boxes": _rounded(arrays["world_boxes"]), "trajectories": _rounded(arrays["world_trajectories"])},
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """The arrays as an ``.npz`` (plain numeric arrays: ``np.load(..., allow_pickle=False)`` reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
