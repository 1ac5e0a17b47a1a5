"""Visualisation: BEV pictures and GIFs of samples with predictions, training curves (matplotlib, headless)."""

from trainer.viz.animate import save_bev_gif
from trainer.viz.bev import BevPlotConfig, canvas_size, draw_bev, ego_to_pixel, new_bev_figure, render_bev_png
from trainer.viz.curves import metric_series, plot_training_curves, stage_changes
from trainer.viz.points import scene_points_in_ego
from trainer.viz.samples import render_samples

__all__ = [
    "BevPlotConfig",
    "canvas_size",
    "draw_bev",
    "ego_to_pixel",
    "metric_series",
    "new_bev_figure",
    "plot_training_curves",
    "render_bev_png",
    "render_samples",
    "save_bev_gif",
    "scene_points_in_ego",
    "stage_changes",
]
