"""Training curves from metrics.jsonl and the visualize CLI."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainer.viz import metric_series, plot_training_curves, stage_changes


def write_run(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for step in range(0, 40, 4):
        stage = "pretrain" if step < 20 else "finetune"
        record = {"step": step, "stage": stage, "lr": 1e-3 / (1 + step)}
        if stage == "pretrain":
            record["loss/chamfer"] = 2.0 / (1 + step)
        else:
            record.update({"loss/det": 1.0 / step, "loss/pred": 3.0 / step, "balance/cosine": -0.1})
        records.append(record)
    records.append({"step": 36, "stage": "finetune", "eval/AP@0.5": 0.42, "eval/EPA": "nan", "note": "text"})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_metric_series_and_stage_changes(tmp_path):
    records = [json.loads(line) for line in (write_run(tmp_path) / "metrics.jsonl").read_text().splitlines()]
    series = metric_series(records)
    assert set(series) == {"lr", "loss/chamfer", "loss/det", "loss/pred", "balance/cosine", "eval/AP@0.5", "eval/EPA"}
    steps, values = series["loss/chamfer"]
    assert steps.tolist() == [0, 4, 8, 12, 16] and values[1] == pytest.approx(0.4)
    assert math.isnan(series["eval/EPA"][1][0])  # non-finite floats are logged as strings
    assert stage_changes(records) == [(0.0, "pretrain"), (20.0, "finetune")]
    assert metric_series([{"loss/x": 1.0}, {"loss/x": 2.0, "flag": True}])["loss/x"][0].tolist() == [0.0, 1.0]


def test_plot_training_curves_writes_a_png(tmp_path):
    run = write_run(tmp_path / "run")
    out = plot_training_curves(run)
    assert out == run / "curves.png"
    image = Image.open(out)
    assert image.size[0] > 600 and image.size[1] > 300
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
