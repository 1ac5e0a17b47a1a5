"""Render samples of a data stream to PNGs (and optionally one GIF), with or without a model."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from models.batch import Batch
from models.detections import SceneDetections
from models.grid import GridConfig
from trainer.viz.animate import save_bev_gif
from trainer.viz.bev import BevPlotConfig, render_bev_png

Predict = Callable[[Batch], list[SceneDetections]]
"""Decoded detections of every scene of a batch (e.g. model forward + decode, under no_grad)."""


def render_samples(batches: Iterable[Batch], out_dir: str | Path, *, grid: GridConfig,
                   predict: Predict | None = None, config: BevPlotConfig | None = None, max_samples: int = 8,
                   gif: bool = False, fps: float = 2.0) -> list[Path]:
    """Draw up to ``max_samples`` distinct scenes (by key) as ``<out_dir>/<key>.png`` (+ ``<out_dir>/samples.gif``).

    predict: called once per batch; None draws ground truth only. Returns the written files.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    config = config or BevPlotConfig()
    out_dir = Path(out_dir)
    written: list[Path] = []
    frames: list[tuple[Batch, int, SceneDetections | None]] = []
    for batch in batches:
        detections = predict(batch) if predict is not None else None
        if detections is not None and len(detections) != batch.num_scenes:
            raise ValueError(f"predict returned {len(detections)} SceneDetections for {batch.num_scenes} scenes")
        for scene in range(batch.num_scenes):
            if len(frames) == max_samples:
                break
            if any(b.keys[s] == batch.keys[scene] for b, s, _ in frames):  # a loader's padding repeats samples
                continue
            det = detections[scene] if detections is not None else None
            written.append(render_bev_png(out_dir / f"{batch.keys[scene]}.png", batch, scene, det,
                                          grid=grid, config=config))
            frames.append((batch, scene, det))
        if len(frames) == max_samples:
            break
    if not frames:
        raise ValueError("render_samples got no samples to draw")
    if gif:
        save_bev_gif(out_dir / "samples.gif", frames, grid=grid, config=config, fps=fps)
        written.append(out_dir / "samples.gif")
    return written
