"""bench/robustness.py on a tiny checkpoint: every sweep point, the clean point shared by all sweeps, the byte
counts of the bandwidth sweep, the plots, and bad input."""

from __future__ import annotations

import json
import math

import pytest

from bench.robustness import delay_frames, main


def test_sweeps_tables_and_plots(tiny_exported_weights, toy_conditions_data, tmp_path, capsys):
    _, delayed, _ = toy_conditions_data
    out = tmp_path / "results"
    assert main(["--checkpoint", str(tiny_exported_weights), "--data", delayed, "--noise", "0", "0.6",
                 "--seeds", "0", "1", "--latency-ms", "0", "300", "--keep-ratios", "0.1", "--thresholds", "1.0",
                 "--out", str(out), "data.num_workers=0"]) == 0
    report = json.loads((out / "robustness.json").read_text())
    fusion = report["fusion"]
    assert set(fusion) == {"none", "late", "intermediate"} and report["raw_rate_hz"] == 10.0
    clean = fusion["intermediate"]
    rows = {(r["sigma"], r["fusion"]): r["metrics"] for r in report["pose_noise"]}
    assert set(rows) == {(s, f) for s in (0.0, 0.6) for f in ("intermediate", "late")}
    assert rows[(0.0, "intermediate")] == clean and rows[(0.0, "late")] == fusion["late"]
    assert rows[(0.6, "intermediate")]["num_det"] != clean["num_det"]  # 2 seeds averaged: not one of them
    latency = {(r["ms"], r["fusion"]): r for r in report["latency"]}
    assert latency[(300.0, "late")]["frames"] == 3 and latency[(0.0, "intermediate")]["metrics"] == clean
    bandwidth = {r["setting"]: r["metrics"] for r in report["bandwidth"]}
    assert list(bandwidth) == ["dense fp32", "dense fp16", "top 0.1 fp32", "conf >= 1 fp32", "late fusion"]
    dense = bandwidth["dense fp32"]["comm/bytes_mean"]
    assert dense == 40 * 40 * 16 * 4 and bandwidth["dense fp32"] == clean  # the tiny model's map: 40 x 40 x 16
    assert bandwidth["dense fp16"]["comm/bytes_mean"] == dense / 2
    assert bandwidth["top 0.1 fp32"]["comm/bytes_mean"] == 160 * 16 * 4 + 200
    assert bandwidth["conf >= 1 fp32"]["comm/bytes_mean"] == 200  # no cell is that sure: the map of cells only
    assert fusion["none"]["comm/bytes_mean"] == 0 and fusion["late"]["comm/bytes_mean"] > 0
    markdown = (out / "robustness.md").read_text()
    for heading in ("Fusion baselines", "Pose noise", "Latency", "Bandwidth", "| no fusion |", "| late fusion |"):
        assert heading in markdown
    for name in ("pose_noise", "latency", "bandwidth"):
        assert (out / f"robustness_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Latency" in capsys.readouterr().out


@pytest.mark.parametrize("which, extra, message", [
    ("plain", ["--latency-ms", "100"], "--delay-frames >= 1"),
    ("delayed", ["--latency-ms", "150"], "not a whole number of raw frames"),
])
def test_bad_input_is_exit_2(tiny_exported_weights, toy_conditions_data, tmp_path, capsys, which, extra, message):
    _, delayed, plain = toy_conditions_data
    data = plain if which == "plain" else delayed
    assert main(["data.num_workers=0", "--checkpoint", str(tiny_exported_weights), "--data", data, "--noise", "0",
                 "--keep-ratios", "0.5", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "robustness.json").exists()


def test_latency_in_raw_frames():
    assert [delay_frames(ms, 10.0) for ms in (0, 100, 200, 300)] == [0, 1, 2, 3]
    assert delay_frames(100, 20.0) == 2
    with pytest.raises(ValueError, match="whole number"):
        delay_frames(50, 10.0)
    assert math.isclose(delay_frames(300.0000001, 10.0), 3)
