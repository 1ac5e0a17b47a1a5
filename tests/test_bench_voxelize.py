"""The voxeliser benchmark compares like with like: on ray-cast synthetic samples and the default grid the
kernel and spconv's ``PointToVoxel`` give equal batches (``measure`` checks every batch before timing)."""

import argparse

from bench.voxelize import measure


def test_measure_checks_equal_outputs_then_times_both_routes():
    args = argparse.Namespace(scenarios=1, frames=52, batch_size=2, repeats=2)
    r = measure("16x2.0", args)
    assert r["samples"] >= 2 and r["points_per_frame"] > 500
    assert all(len(t) == 2 and min(t) > 0 for t in r["ms_per_sample_all"].values())
    assert r["ratio"] > 0 and r["paired_range"][0] <= r["paired_ratio"] <= r["paired_range"][1]
