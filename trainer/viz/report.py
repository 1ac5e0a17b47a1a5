"""The pictures a finished run leaves for a person: the training curves and BEV pictures of a few
validation samples with the final model's detections and predicted trajectories."""

from __future__ import annotations

from pathlib import Path

from trainer.config import TrainConfig
from trainer.data.loader import build_loader
from trainer.checkpointing.export import final_weights, load_exported
from trainer.viz.bev import BevPlotConfig
from trainer.viz.curves import plot_training_curves
from trainer.viz.samples import render_samples

SAMPLES_DIR = "samples"
"""Folder of the run directory that holds the BEV pictures."""


def write_run_pictures(run_dir: Path, cfg: TrainConfig, *, num_samples: int) -> list[Path]:
    """``<run>/curves.png`` plus ``<run>/samples/<key>.png`` for the first ``num_samples`` validation
    samples, drawn with the final weights of the run's last stage that detects (none if no stage does).
    Returns the written files."""
    from trainer.checkpointing.checkpoint_io import make_predictor  # imports the evaluation stack; keep curves-only use light

    written = [plot_training_curves(run_dir)]
    detecting = [name for name, stage in cfg.stages.items() if stage.task in ("detection", "multitask")]
    if not detecting or num_samples < 1:
        return written
    name = detecting[-1]
    model, _ = load_exported(final_weights(run_dir / name))
    predict = make_predictor(model, stage=cfg.stages[name], score_threshold=cfg.eval.score_cut)
    loader = build_loader(cfg.data, cfg.model.grid, split="val", rank=0, world_size=1, seed=cfg.run.seed)
    plot = BevPlotConfig(score_threshold=cfg.eval.score_cut)
    written += render_samples(loader, run_dir / SAMPLES_DIR, grid=cfg.model.grid, predict=predict, config=plot,
                              max_samples=num_samples)
    return written
