"""The model-step benchmark times every size in the same rounds and writes its table."""

import json
import sys

from bench import model_step
from bench.model_step import measure, variants


def test_measure_interleaves_sizes_and_reports_their_parameters():
    configs = variants(["tiny", "small"], without_refinement=True)
    assert [label for label, _ in configs] == ["tiny", "small", "small w/o refinement"]  # tiny has none
    results = measure(configs, scenes=1, agents=2, repeats=2, device="cpu", bf16=False)
    tiny, small, plain = results
    assert [r["size"] for r in results] == ["tiny", "small", "small w/o refinement"]
    assert small["params"] - plain["params"] == 7464  # the refinement's PointNet
    assert all(len(r["times_s"]) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"] for r in results)
    assert tiny["encoder_params"] < tiny["params"] < plain["params"]  # small: wider BEV and heads
    assert tiny["bev_cells"] == small["bev_cells"] == "40 x 40 @ 1.6 m" and tiny["voxels"] == small["voxels"] > 0
    tracked = variants(["tiny", "small"], without_refinement=False, with_track=True)
    assert [label for label, _ in tracked] == ["tiny", "small", "small with track"]
    assert tracked[2][1].track_decoder and not tracked[1][1].track_decoder


def test_main_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["model_step.py", "--sizes", "tiny", "--repeats", "1", "--scenes", "1",
                                      "--agents", "2", "--out", str(tmp_path), "--without-refinement"])
    model_step.main()
    data = json.loads((tmp_path / "model_step.json").read_text())
    assert data["results"][0]["size"] == "tiny" and data["results"][0]["ratio"] == 1.0
    assert "| tiny | 42,612 |" in (tmp_path / "model_step.md").read_text()
