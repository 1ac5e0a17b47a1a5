"""Data that passes the preflight but is fatal later (a wrong schema version in a later sample, an unmapped
object type): exit 2 with one line naming the shard, also when a DataLoader worker met it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from launch.train import EXIT_BAD_INPUT, main
from models.v2x_model import V2XModel
from tests.test_data_loader import records_of, write_records
from tests.test_launch_checkpoint_io import _engine_folder, launch_module
from tests.train_harness import base_overrides
from trainer.config_io import load_config, to_yaml
from trainer.data.classes import UnmappedObjectTypeError
from trainer.data.data_errors import fatal_data_message
from trainer.data.sample import SchemaVersionError

RECIPE = ["--config", "recipes/multitask.yaml"]


def later_samples_of_version_1(src: str, out: Path) -> str:
    """``src`` with every sample but the first at schema version 1 (the preflight reads only the first)."""
    records = records_of(src)
    samples = [r for r in records if "meta.json" in r]
    for record in samples[1:]:
        meta = json.loads(record["meta.json"])
        meta["schema_version"] = 1
        record["meta.json"] = json.dumps(meta).encode()
    write_records(out, records)
    return str(out)


WORKER_TEXT = (
    "Caught SchemaVersionError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
    '  File "/x/loader.py", line 44, in __call__\n    raise exn\n'
    "trainer.data.sample.SchemaVersionError: ('k (from /d/v1.tar): schema_version 1, this reader accepts 2', "
    "'/d/v1.tar')\n")


@pytest.mark.parametrize("err, expected", [
    (SchemaVersionError("k (from /d/v1.tar): schema_version 1, this reader accepts 2", "/d/v1.tar"),
     "k (from /d/v1.tar): schema_version 1, this reader accepts 2"),
    (UnmappedObjectTypeError("object type 'car' is in no class", "/d/s.tar"),
     "object type 'car' is in no class (shard /d/s.tar)"),
    (SchemaVersionError(WORKER_TEXT), "k (from /d/v1.tar): schema_version 1, this reader accepts 2"),
    (UnmappedObjectTypeError(WORKER_TEXT.replace("trainer.data.sample.SchemaVersionError: ('k (from /d/v1.tar): "
                                                 "schema_version 1, this reader accepts 2'",
                                                 "trainer.data.classes.UnmappedObjectTypeError: (\"type 'car'\"")),
     "type 'car' (shard /d/v1.tar)"),
    (UnmappedObjectTypeError("Caught X in DataLoader worker process 1.\nOriginal Traceback\nValueError: plain"),
     "plain"),
    (SchemaVersionError("no shard here"), "no shard here"),
])
def test_fatal_data_message_in_process_and_from_a_worker(err, expected):
    assert fatal_data_message(err) == expected


def test_a_later_sample_of_another_schema_version_in_a_worker_exits_2(tiny_data, tmp_path, capsys):
    train, val = tiny_data
    bad = later_samples_of_version_1(train.split(",")[0], tmp_path / "train-v1.tar")
    code = main([*RECIPE, *base_overrides(bad, val, tmp_path / "run"), "data.num_workers=1",
                 "distributed.engine=plain"])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert err.startswith("error: bad data: ") and f"(from {bad}): schema_version 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "run.lock").exists()  # released on this exit path too


def test_evaluate_exits_2_on_a_later_sample_of_another_schema_version(tiny_data, tmp_path, capsys):
    train, val = tiny_data
    cfg = load_config("recipes/multitask.yaml", base_overrides(train, val, tmp_path / "run"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    torch.manual_seed(0)
    _engine_folder(run / "finetune", "step_000001", V2XModel(cfg.model).state_dict())
    bad = later_samples_of_version_1(val.split(",")[0], tmp_path / "val-v1.tar")
    code = launch_module("evaluate").main(["--checkpoint", str(run), "--data", bad, "data.num_workers=1",
                                           "data.val_samples=null", "data.batch_size=1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: data: ") and f"(from {bad}): schema_version 1" in err
    assert "Traceback" not in err
