"""metrics.jsonl after a resume: the killed attempt's records past the resumed step are dropped, atomically."""

from __future__ import annotations

import json

from trainer.engine.metrics_log import MetricsLog, drop_records_after, read_metrics


def _write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_drops_only_that_stages_records_past_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = ([{"stage": "pretrain", "step": s, "loss": 1.0} for s in (1, 2, 3, 4)]
               + [{"stage": "finetune", "step": s, "loss": 2.0} for s in (1, 2, 3, 4, 5)]
               + [{"stage": "finetune", "step": 5, "eval/AP@0.5": 0.1}, {"note": "no stage"},
                  {"stage": "finetune", "step": None}])
    _write(path, records, tail='{"stage": "finetune", "st')  # the killed attempt's torn last line
    assert drop_records_after(path, stage="finetune", step=3) == 4  # steps 4, 5, the eval at 5, the torn line
    kept = read_metrics(path)
    assert [(r.get("stage"), r.get("step")) for r in kept] == (
        [("pretrain", s) for s in (1, 2, 3, 4)] + [("finetune", s) for s in (1, 2, 3)] + [(None, None),
                                                                                          ("finetune", None)])
    assert kept[0] == records[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]  # no temporary file left


def test_nothing_to_drop_leaves_the_file_alone_and_a_missing_file_is_fine(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert drop_records_after(path, stage="finetune", step=0) == 0 and not path.exists()
    _write(path, [{"stage": "finetune", "step": 2}])
    before = path.stat().st_mtime_ns
    assert drop_records_after(path, stage="finetune", step=2) == 0
    assert path.stat().st_mtime_ns == before


def test_resumed_log_has_every_step_once(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = MetricsLog(path, enabled=True)
    for step in range(1, 6):  # killed after step 5; its last checkpoint was step 3
        first.write({"stage": "finetune", "step": step})
    resumed = MetricsLog(path, enabled=True)
    assert MetricsLog(path, enabled=False).drop_after("finetune", 3) == 0  # a non-main rank touches nothing
    assert resumed.drop_after("finetune", 3) == 2
    for step in range(4, 7):
        resumed.write({"stage": "finetune", "step": step})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5, 6]
