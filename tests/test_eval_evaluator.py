"""Evaluator: accumulation, de-duplication by key, injected gather, 2 real processes == 1 process."""

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.test_eval_fixtures import box, make_batch, make_detections
from trainer.eval import EvalConfig, Evaluator, format_table
from trainer.runtime.process_group import gather_objects

CONFIG = EvalConfig(class_names=["car", "ped"], pred_score_threshold=0.2)


def frame(index: int):
    """One random but reproducible (scene, detections): jittered copies of GT, misses and FPs."""
    rng = np.random.default_rng(index)
    m = 2 + index % 3
    boxes = [box(*rng.uniform(-30, 30, 2), *rng.uniform(2, 5, 2), rng.uniform(-3, 3)) for _ in range(m)]
    classes = rng.integers(0, 2, m).tolist()
    future = [[[b[0] + t + 1, b[1] + 0.5 * t] for t in range(3)] for b in boxes]
    scene = {"key": f"scene{index}", "boxes": boxes, "classes": classes, "future": future}
    keep = rng.random(m) < 0.8
    det_boxes = [[b[0] + rng.normal(0, 0.4), b[1] + rng.normal(0, 0.4), *b[2:]] for b, k in zip(boxes, keep) if k]
    labels = [c for c, k in zip(classes, keep) if k]
    trajectories = [[[[p[0] + rng.normal(0, 1.5), p[1]] for p in f]] * 2 for f, k in zip(future, keep) if k]
    for _ in range(2):  # false positives
        det_boxes.append(box(*rng.uniform(-60, 60, 2)))
        labels.append(int(rng.integers(0, 2)))
        trajectories.append([[[0.0, 0.0]] * 3] * 2)
    scores = rng.uniform(0.05, 1.0, len(det_boxes)).tolist()
    return scene, make_detections(det_boxes, scores, labels, trajectories)


def run_frames(evaluator: Evaluator, indices: list[int], batch_size: int = 2) -> None:
    for start in range(0, len(indices), batch_size):
        pairs = [frame(i) for i in indices[start:start + batch_size]]
        evaluator.update([d for _, d in pairs], make_batch([s for s, _ in pairs]))


def single_process_metrics() -> dict:
    evaluator = Evaluator(CONFIG)
    run_frames(evaluator, list(range(5)))
    return evaluator.compute()


def assert_same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert (math.isnan(a[key]) and math.isnan(b[key])) or a[key] == pytest.approx(b[key], abs=1e-12), key


def test_single_process_metrics_are_sensible_and_printable():
    metrics = single_process_metrics()
    assert metrics["num_frames"] == 5 and metrics["num_gt"] == 2 + 3 + 4 + 2 + 3
    assert 0.0 < metrics["AP@0.7"] <= metrics["AP@0.5"] <= metrics["AP@0.3"] < 1.0
    assert 0 < metrics["num_matched"] <= metrics["num_pred_gt"] and 0.0 <= metrics["EPA"] < 1.0
    table = format_table(metrics)
    assert "AP (%)" in table and "@0.5" in table and "car" in table and "ped" in table and "EPA" in table
    assert f"{100 * metrics['AP@0.5']:.1f}" in table and f"num_frames=5" in table
    assert format_table({"AP@0.5": float("nan"), "custom": 3}).splitlines()[-1] == "custom = 3"


def test_duplicates_are_counted_once_and_order_does_not_matter():
    reference = single_process_metrics()
    evaluator = Evaluator(CONFIG)
    run_frames(evaluator, [4, 2, 0, 1, 3, 4, 0], batch_size=3)  # shuffled, two frames seen twice
    assert evaluator.num_local_frames == 7
    assert_same_metrics(evaluator.compute(), reference)
    evaluator.reset()
    assert evaluator.num_local_frames == 0 and evaluator.compute()["num_frames"] == 0


def test_injected_gather_merges_ranks():
    rank_a, rank_b = Evaluator(CONFIG), Evaluator(CONFIG)
    run_frames(rank_a, [0, 1, 2])
    run_frames(rank_b, [3, 4, 4])
    local = rank_a.compute()
    assert local["num_frames"] == 3
    for evaluator in (rank_a, rank_b):  # what an all-gather hands every rank
        evaluator.gather = lambda _: [rank_a.local_records, rank_b.local_records]
        assert_same_metrics(evaluator.compute(), single_process_metrics())
    rank_a.gather = lambda obj: tuple([obj])
    with pytest.raises(TypeError, match="one entry per rank"):
        rank_a.compute()


def test_gather_objects_without_process_group_is_identity():
    assert not dist.is_initialized()
    assert gather_objects({"a": 1}) == [{"a": 1}]


def _rank_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        evaluator = Evaluator(CONFIG, gather=gather_objects)
        # 5 frames split unevenly (3 + 2), rank 1 padded with a repeat of frame 4 (2 batches each).
        run_frames(evaluator, [0, 1, 2] if rank == 0 else [3, 4, 4])
        metrics = evaluator.compute()
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(metrics, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    reference = single_process_metrics()
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as f:
            assert_same_metrics(json.load(f), reference)
