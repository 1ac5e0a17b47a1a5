"""Training curves from metrics.jsonl and the visualize CLI."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.viz import metric_series, plot_training_curves, stage_changes
from trainer.viz.curves import panel_of


def write_run(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for step in range(0, 40, 4):
        stage = "pretrain" if step < 20 else "finetune"
        # each stage counts its steps from 0, as the loop logs them: finetune's 4..16 follow pretrain's 16
        record = {"step": step if stage == "pretrain" else step - 16, "stage": stage, "lr": 1e-3 / (1 + step)}
        if stage == "pretrain":
            record["loss/chamfer"] = 2.0 / (1 + step)
        else:
            record.update({"loss/det": 1.0 / step, "loss/pred": 3.0 / step, "balance/cosine": -0.1})
        records.append(record)
    records.append({"step": 20, "stage": "finetune", "eval/AP@0.5": 0.42, "eval/EPA": "nan", "note": "text"})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_metric_series_and_stage_changes(tmp_path):
    records = [json.loads(line) for line in (write_run(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    series = metric_series(records)
    assert set(series) == {"lr", "loss/chamfer", "loss/det", "loss/pred", "balance/cosine", "eval/AP@0.5", "eval/EPA"}
    steps, values = series["loss/chamfer"]
    assert steps.tolist() == [0, 4, 8, 12, 16] and values[1] == pytest.approx(0.4)
    assert math.isnan(series["eval/EPA"][1][0])  # non-finite floats are logged as strings
    assert stage_changes(records) == [(0.0, "pretrain"), (16.0, "finetune")]
    assert series["loss/det"][0].tolist() == [20, 24, 28, 32, 36]  # one continuous step axis
    assert series["eval/AP@0.5"][0].tolist() == [36]
    assert metric_series([{"loss/x": 1.0}, {"loss/x": 2.0, "flag": True}])["loss/x"][0].tolist() == [0.0, 1.0]


def test_quantities_of_different_scales_get_their_own_panels():
    panels = {key: panel_of(key) for key in ("eval/AP@0.5/vehicle", "eval/AP@0.3", "eval/EPA", "eval/MR",
                                               "eval/minADE", "eval/num_det", "loss/box", "lr")}
    assert panels["eval/AP@0.5/vehicle"] == panels["eval/AP@0.3"]
    assert panels["eval/EPA"] == panels["eval/MR"]
    assert len({panels[k] for k in ("eval/AP@0.3", "eval/EPA", "eval/minADE", "eval/num_det", "loss/box", "lr")}) == 6


def test_plot_training_curves_writes_a_png(tmp_path):
    run = write_run(tmp_path / "run")
    out = plot_training_curves(run)
    assert out == run / "curves.png"
    image = Image.open(out)
    assert image.size[0] >= 800 and image.size[1] >= 300
    pixels = np.asarray(image.convert("RGB"))
    assert (pixels < 200).any(axis=-1).mean() > 0.01  # something was drawn, not a blank page
    other = plot_training_curves(run / "metrics.jsonl", tmp_path / "elsewhere" / "c.png")
    assert other.is_file()


def test_plot_training_curves_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_training_curves(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "stage": "x"}) + "\n")
    with pytest.raises(ValueError, match="no numeric metrics"):
        plot_training_curves(tmp_path)
