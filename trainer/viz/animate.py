"""Animated BEV sequences: one GIF frame per sample (matplotlib PillowWriter)."""

from __future__ import annotations

from itertools import chain
from pathlib import Path
from typing import Iterable

from matplotlib.animation import PillowWriter

from models.batch import Batch
from models.detections import SceneDetections
from models.grid import GridConfig
from trainer.viz.bev import BevPlotConfig, DPI, draw_bev, new_bev_figure, prepare_axes


def save_bev_gif(path: str | Path, samples: Iterable[tuple[Batch, int, SceneDetections | None]], *,
                 grid: GridConfig, config: BevPlotConfig | None = None, fps: float = 2.0) -> int:
    """Write a GIF with one frame per (batch, scene index, detections or None); returns the frame count.

    Raises ValueError when ``samples`` is empty (no GIF is written).
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    config = config or BevPlotConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iterator = iter(samples)
    first = next(iterator, None)
    if first is None:
        raise ValueError("save_bev_gif needs at least one sample")
    fig, ax = new_bev_figure(grid, config)
    writer = PillowWriter(fps=fps)
    count = 0
    with writer.saving(fig, str(path), dpi=DPI):
        for batch, scene, detections in chain([first], iterator):
            ax.clear()
            prepare_axes(ax, grid)
            draw_bev(ax, batch, scene, detections, grid=grid, config=config, title=batch.keys[scene])
            writer.grab_frame(facecolor="white")
            count += 1
    return count
