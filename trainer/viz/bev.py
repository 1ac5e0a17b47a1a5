"""Bird's-eye view of one sample: points by agent, agents, GT vs predicted boxes and trajectories.

The axes fill the whole image and span exactly the grid's x / y range (x to the right, y up), so a
point (x, y) in the ego frame lands at the pixel given by :func:`ego_to_pixel`. Rendering uses
matplotlib's object API on an Agg canvas (no pyplot state, headless).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from models.batch import Batch
from models.detections import SceneDetections
from models.grid import GridConfig
from trainer.eval.iou import box_corners_bev
from trainer.viz.points import scene_points_in_ego

GT_COLOUR = "#1a9641"
PRED_COLOUR = "#d7191c"
AGENT_COLOURS = ["#2c7bb6", "#fdae61", "#7b3294", "#636363", "#e66101", "#40b0c0", "#a6611a", "#f1b6da"]
DPI = 100
"""Figure dots per inch; sizes are set in pixels, so this only scales fonts and line widths."""
LEGEND_PX = 240
"""Width of the strip right of the scene that holds the legend (the scene itself is never covered)."""


@dataclass(kw_only=True)
class BevPlotConfig:
    """How a BEV picture is drawn."""

    pixels_per_metre: float = 12.5
    """Scene resolution; the scene is (x extent * ppm) x (y extent * ppm) pixels (800 x 800 for the tiny
    grid's 64 m, 1760 x 1000 for the base grid)."""
    all_frames: bool = False
    """Draw the points of every history frame (motion-compensated), not just the current one."""
    score_threshold: float = 0.3
    """Predicted boxes (and their trajectories) scoring below this are not drawn."""
    point_size: float = 0.5
    """Marker area of a LiDAR point (points^2)."""
    show_legend: bool = True
    """Draw a legend in a strip of ``LEGEND_PX`` pixels right of the scene."""

    def __post_init__(self) -> None:
        if self.pixels_per_metre <= 0:
            raise ValueError(f"viz.pixels_per_metre must be > 0, got {self.pixels_per_metre}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"viz.score_threshold must be in [0, 1], got {self.score_threshold}")
        if self.point_size <= 0:
            raise ValueError(f"viz.point_size must be > 0, got {self.point_size}")


def canvas_size(grid: GridConfig, pixels_per_metre: float) -> tuple[int, int]:
    """(width, height) in pixels of a BEV image of the grid's x / y range."""
    (x0, x1), (y0, y1) = grid.x_range, grid.y_range
    return int(round((x1 - x0) * pixels_per_metre)), int(round((y1 - y0) * pixels_per_metre))


def ego_to_pixel(xy: np.ndarray, grid: GridConfig, pixels_per_metre: float) -> np.ndarray:
    """[..., 2] ego-frame (x, y) metres -> [..., 2] (column, row) pixel coordinates (row 0 = top)."""
    xy = np.asarray(xy, dtype=np.float64)
    width, height = canvas_size(grid, pixels_per_metre)
    (x0, x1), (y0, y1) = grid.x_range, grid.y_range
    col = (xy[..., 0] - x0) / (x1 - x0) * width
    row = (y1 - xy[..., 1]) / (y1 - y0) * height
    return np.stack([col, row], axis=-1)


def new_bev_figure(grid: GridConfig, config: BevPlotConfig) -> tuple[Figure, Axes]:
    """An empty figure whose axes span the grid's x / y range on :func:`canvas_size` pixels, plus the
    legend strip on the right when the config shows a legend."""
    width, height = canvas_size(grid, config.pixels_per_metre)
    total = width + (LEGEND_PX if config.show_legend else 0)
    fig = Figure(figsize=(total / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, width / total, 1.0))
    prepare_axes(ax, grid)
    return fig, ax


def prepare_axes(ax: Axes, grid: GridConfig) -> None:
    """Fixed extent, no ticks or frame, white background."""
    ax.set_xlim(*grid.x_range)
    ax.set_ylim(*grid.y_range)
    ax.set_aspect("auto")
    ax.set_axis_off()
    ax.set_facecolor("white")


def _draw_boxes(ax: Axes, boxes: np.ndarray, colour: str, *, filled: bool, zorder: float) -> None:
    """boxes: [N, 7]; outline (and translucent fill) plus a heading tick from centre to the front."""
    if len(boxes) == 0:
        return
    corners = box_corners_bev(torch.as_tensor(boxes, dtype=torch.float64)).numpy()  # [N, 4, 2]
    ax.add_collection(PolyCollection(corners, closed=True, edgecolors=colour, linewidths=1.0, zorder=zorder,
                                     facecolors=colour if filled else "none", alpha=0.35 if filled else 1.0))
    if filled:  # fully opaque outline on top of the translucent fill
        ax.add_collection(PolyCollection(corners, closed=True, edgecolors=colour, facecolors="none",
                                         linewidths=1.0, zorder=zorder))
    front = corners[:, [0, 3]].mean(axis=1)
    ax.add_collection(LineCollection(np.stack([boxes[:, :2], front], axis=1), colors=colour, linewidths=1.0,
                                     zorder=zorder))


def draw_bev(ax: Axes, batch: Batch, scene: int, detections: SceneDetections | None = None, *,
             grid: GridConfig, config: BevPlotConfig, title: str | None = None) -> None:
    """Draw scene ``scene`` of ``batch`` (and optionally its decoded detections) on ``ax``."""
    points, agent = scene_points_in_ego(batch, scene, all_frames=config.all_frames)
    colours = np.array(AGENT_COLOURS, dtype=object)[agent % len(AGENT_COLOURS)]
    ax.scatter(points[:, 0], points[:, 1], s=config.point_size, c=list(colours), linewidths=0, zorder=1)

    agent_mask = batch.agent_mask[scene].detach().cpu().numpy()
    agent_types = batch.agent_types[scene].detach().cpu().numpy()
    to_ego = batch.agent_to_ego[scene].detach().cpu().float().numpy()  # [A, 3, 3]
    for a in np.nonzero(agent_mask)[0]:
        x, y = to_ego[a, :2, 2]
        heading = to_ego[a, :2, 0] / max(np.linalg.norm(to_ego[a, :2, 0]), 1e-9)
        ax.plot([x], [y], marker="s" if agent_types[a] == 1 else "o", markersize=7, color=AGENT_COLOURS[a % 8],
                markeredgecolor="black", zorder=6)
        ax.plot([x, x + 4 * heading[0]], [y, y + 4 * heading[1]], color="black", linewidth=1.0, zorder=6)

    gt_mask = batch.gt_mask[scene].detach().cpu().numpy().astype(bool)
    gt_boxes = batch.gt_boxes[scene].detach().cpu().float().numpy()[gt_mask]
    _draw_boxes(ax, gt_boxes, GT_COLOUR, filled=True, zorder=3)
    future = batch.gt_future[scene].detach().cpu().float().numpy()[gt_mask]
    future_valid = batch.gt_future_valid[scene].detach().cpu().numpy().astype(bool)[gt_mask]
    for centre, path, valid in zip(gt_boxes[:, :2], future, future_valid):
        if valid.any():
            line = np.concatenate([centre[None], path[valid]])
            ax.plot(line[:, 0], line[:, 1], color=GT_COLOUR, linewidth=1.2, linestyle="--", marker=".",
                    markersize=3, zorder=4)

    if detections is not None:
        scores = detections.scores.detach().cpu().float().numpy()
        keep = scores >= config.score_threshold
        boxes = detections.boxes.detach().cpu().float().numpy()[keep]
        trajectories = detections.trajectories.detach().cpu().float().numpy()[keep]  # [N, K, T_f, 2]
        mode_scores = detections.mode_scores.detach().cpu().float().numpy()[keep]  # [N, K]
        _draw_boxes(ax, boxes, PRED_COLOUR, filled=False, zorder=5)
        for box, score in zip(boxes, scores[keep]):
            ax.text(box[0] + 0.5 * box[3], box[1] + 0.5 * box[4], f"{score:.2f}", color=PRED_COLOUR, fontsize=6,
                    zorder=7, clip_on=True)
        if len(boxes):
            starts = np.broadcast_to(boxes[:, None, None, :2], (*trajectories.shape[:2], 1, 2))
            paths = np.concatenate([starts, trajectories], axis=2)  # [N, K, 1 + T_f, 2]
            ax.add_collection(LineCollection(paths.reshape(-1, *paths.shape[2:]), colors=PRED_COLOUR,
                                             linewidths=0.8, alpha=0.25, zorder=4))
            best = paths[np.arange(len(paths)), mode_scores.argmax(axis=1)]  # [N, 1 + T_f, 2]
            ax.add_collection(LineCollection(best, colors=PRED_COLOUR, linewidths=1.6, zorder=5))

    if title:
        ax.text(0.01, 0.99, title, transform=ax.transAxes, ha="left", va="top", fontsize=8, zorder=8)
    if config.show_legend:
        handles = [
            Line2D([], [], color=GT_COLOUR, linewidth=2, label="ground truth (box, future)"),
            Line2D([], [], color=PRED_COLOUR, linewidth=2, label="prediction (best mode)"),
            Line2D([], [], color="grey", marker="o", linestyle="none", markeredgecolor="black", label="vehicle agent"),
            Line2D([], [], color="grey", marker="s", linestyle="none", markeredgecolor="black", label="infrastructure"),
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8,
                  frameon=False)


def render_bev_png(path: str | Path, batch: Batch, scene: int, detections: SceneDetections | None = None, *,
                   grid: GridConfig, config: BevPlotConfig | None = None, title: str | None = None) -> Path:
    """Draw one scene and save it as a PNG: the scene on exactly :func:`canvas_size` pixels, the legend
    strip right of it; returns the path."""
    config = config or BevPlotConfig()
    fig, ax = new_bev_figure(grid, config)
    draw_bev(ax, batch, scene, detections, grid=grid, config=config,
             title=batch.keys[scene] if title is None else title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path
