"""The pure parts of bench/throughput.py: log windows to figures, and the paired per-repeat summary."""

from __future__ import annotations

import pytest

from bench.throughput import summarise, window_figures


def test_window_figures_drop_the_warm_up_window_and_non_window_records():
    records = [{"event": "start"}, {"samples_per_s": 1.0, "data_wait_frac": 0.9},
               {"eval": {"ap": 0.1}}, {"samples_per_s": 3.0, "data_wait_frac": 0.1},
               {"samples_per_s": 4.0, "data_wait_frac": 0.2}]
    assert window_figures(records) == ([3.0, 4.0], [0.1, 0.2])


def test_window_figures_need_a_window_after_warm_up():
    with pytest.raises(ValueError, match="raise --steps"):
        window_figures([{"samples_per_s": 1.0, "data_wait_frac": 0.0}])


def _run(size, engine, repeat, rates, wait=0.01):
    return {"size": size, "engine": engine, "repeat": repeat, "samples_per_s": rates,
            "data_wait_frac": [wait] * len(rates)}


def test_summary_pairs_the_engines_within_each_repeat():
    # repeat 1 ran on a machine twice as fast: the pooled ratio mixes that drift in, the paired one does not
    runs = [_run("tiny", "plain", 0, [1.0, 1.0]), _run("tiny", "deepspeed_zero2", 0, [1.5, 1.5]),
            _run("tiny", "plain", 1, [2.0, 2.0]), _run("tiny", "deepspeed_zero2", 1, [3.0, 3.0]),
            _run("tiny", "plain", 2, [4.0])]  # an unfinished repeat: no pair
    (row,) = summarise(runs, ["tiny"])
    assert row["paired_ratios"] == [1.5, 1.5]
    assert row["paired_median"] == row["paired_min"] == row["paired_max"] == 1.5
    assert row["plain_samples_per_s"] == 2.0 and row["ratio"] == pytest.approx(1.125)
    assert row["plain_data_wait"] == 0.01


def test_summary_refuses_a_size_without_both_engines():
    with pytest.raises(ValueError, match="no deepspeed_zero2 run of base"):
        summarise([_run("base", "plain", 0, [1.0])], ["base"])
