"""Bad input is refused before training starts: a clear message on stderr and exit code 2.

``launch/train.py``'s ``main`` is called in-process (each case fails before any process group or
model exists); the launcher/DeepSpeed disagreement also runs once under a real ``accelerate launch``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from launch.train import EXIT_BAD_INPUT, main
from trainer.data.sample import SCHEMA_VERSION
from tests.train_harness import TRAIN, base_overrides, env, free_port

RECIPE = ["--config", "recipes/multitask.yaml"]


def _main(capsys, args: list[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def _shard(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return str(path)


@pytest.fixture
def launched(monkeypatch):
    """Pretend to be one launched process so the runtime neither invents a rendezvous nor leaks env."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "DS_ACCELERATOR": "cpu"}.items():
        monkeypatch.setenv(key, value)
    for key in ("ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_MIXED_PRECISION", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(key, raising=False)


def test_malformed_yaml_names_the_file_and_line(tmp_path, capsys):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("model_size: tiny\nstages:\n  finetune: {task: multitask, steps: [1, 2\n")
    code, err = _main(capsys, ["--config", str(recipe)])
    assert code == EXIT_BAD_INPUT
    assert f"malformed YAML in {recipe}" in err and "line" in err


def test_missing_recipe_file(tmp_path, capsys):
    code, err = _main(capsys, ["--config", str(tmp_path / "nope.yaml")])
    assert code == EXIT_BAD_INPUT and "config file not found" in err


@pytest.mark.parametrize("override, expected", [
    ("loop.log_evry=3", "log_evry"),                  # unknown key
    ("optimizer.lr=0.1", "optimizer"),                 # unknown section
    ("loop.log_every=often", "loop.log_every"),       # mistyped value
    ("loop.keep_last=0", "loop.keep_last must be >= 1"),  # out of range
    ("loop.log_every", "not of the form a.b=value"),  # not an override
])
def test_unknown_or_mistyped_keys_name_the_key(override, expected, capsys):
    code, err = _main(capsys, [*RECIPE, override])
    assert code == EXIT_BAD_INPUT
    assert err.startswith("error: ") and expected in err


def test_unknown_key_in_recipe_file(tmp_path, capsys):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("model_size: tiny\nloop:\n  checkpoint_evry: 10\n")
    code, err = _main(capsys, ["--config", str(recipe)])
    assert code == EXIT_BAD_INPUT and "checkpoint_evry" in err


def test_missing_shard_path(tiny_data, tmp_path, capsys):
    _, val = tiny_data
    missing = tmp_path / "nowhere" / "train-000000.tar"
    code, err = _main(capsys, [*RECIPE, *base_overrides(str(missing), val, tmp_path / "run")])
    assert code == EXIT_BAD_INPUT
    assert f"data.train_shards: shard {missing} does not exist" in err
    assert not (tmp_path / "run").exists(), "nothing may be written before the inputs are checked"


def test_empty_shard(tiny_data, tmp_path, capsys):
    train, _ = tiny_data
    empty = _shard(tmp_path / "val-000000.tar", {})
    code, err = _main(capsys, [*RECIPE, *base_overrides(train, empty, tmp_path / "run")])
    assert code == EXIT_BAD_INPUT
    assert f"data.val_shards: shard {empty} holds no sample" in err


def test_unreadable_shard(tiny_data, tmp_path, capsys):
    _, val = tiny_data
    garbage = tmp_path / "train-000000.tar"
    garbage.write_bytes(b"this is not a tar file" * 100)
    code, err = _main(capsys, [*RECIPE, *base_overrides(str(garbage), val, tmp_path / "run")])
    assert code == EXIT_BAD_INPUT and "is unreadable" in err


def test_shard_of_another_schema_version(tiny_data, tmp_path, capsys):
    _, val = tiny_data
    meta = json.dumps({"schema_version": 99, "scenario": "x"}).encode()
    old = _shard(tmp_path / "train-000000.tar", {"s0.meta.json": meta, "s0.points.npy": b"\0" * 16})
    code, err = _main(capsys, [*RECIPE, *base_overrides(old, val, tmp_path / "run")])
    assert code == EXIT_BAD_INPUT
    assert "has schema version 99" in err and f"reads version {SCHEMA_VERSION}" in err and "re-convert" in err


def test_no_data_and_no_synthetic(tmp_path, capsys):
    code, err = _main(capsys, [*RECIPE, "synthetic.enabled=false", f"run.dir={tmp_path / 'run'}"])
    assert code == EXIT_BAD_INPUT and "nothing to train on" in err


def test_missing_deepspeed_config(tiny_data, tmp_path, capsys):
    train, val = tiny_data
    code, err = _main(capsys, [*RECIPE, *base_overrides(train, val, tmp_path / "run"),
                               "distributed.deepspeed_config=ds_configs/zero9.json"])
    assert code == EXIT_BAD_INPUT and "zero9.json" in err


def test_deepspeed_json_disagreeing_with_precision(tiny_data, tmp_path, capsys, launched):
    train, val = tiny_data
    ds = tmp_path / "bf16.json"
    ds.write_text(json.dumps({"bf16": {"enabled": True}, "zero_optimization": {"stage": 2},
                              "train_micro_batch_size_per_gpu": "auto"}))
    code, err = _main(capsys, [*RECIPE, *base_overrides(train, val, tmp_path / "run"),
                               f"distributed.deepspeed_config={ds}"])
    assert code == EXIT_BAD_INPUT
    assert "enables bf16 but precision=fp32" in err


def test_deepspeed_json_disagreeing_with_batch_size(tiny_data, tmp_path, capsys, launched):
    train, val = tiny_data
    ds = tmp_path / "mb8.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 1}, "train_micro_batch_size_per_gpu": 8}))
    code, err = _main(capsys, [*RECIPE, *base_overrides(train, val, tmp_path / "run"),
                               f"distributed.deepspeed_config={ds}"])
    assert code == EXIT_BAD_INPUT
    assert "train_micro_batch_size_per_gpu=8 but the training config implies 1" in err


@pytest.mark.slow
def test_accelerate_zero_stage_disagreeing_with_deepspeed_json(tiny_data, tmp_path):
    """``accelerate launch --use_deepspeed --zero_stage 3`` against ds_configs/zero2.json: exit 2, no training."""
    train, val = tiny_data
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--use_deepspeed", "--zero_stage", "3",
           "--num_processes", "1", "--num_machines", "1", "--main_process_port", str(free_port()),
           "--mixed_precision", "no", TRAIN, *RECIPE, *base_overrides(train, val, tmp_path / "run"),
           "distributed.deepspeed_config=ds_configs/zero2.json"]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "the launcher asks for ZeRO stage 3 (--zero_stage) but the training config uses stage 2" in proc.stderr
    assert "error: " in proc.stderr
    assert not (tmp_path / "run" / "finetune" / "checkpoints").exists()


def test_training_data_with_no_decodable_sample_exits_2_within_bounded_time(tiny_data, tmp_path):
    """Valid metadata, garbage point clouds, read by a DataLoader worker process: the run fails within a
    bounded time with exit 2, naming the shard and the skip count (it used to take no step, forever)."""
    import time

    train, val = tiny_data
    bad = tmp_path / "train-000000.tar"
    with tarfile.open(train.split(",")[0]) as src, tarfile.open(bad, "w") as dst:
        for member in src:
            payload = src.extractfile(member).read()
            if member.name.endswith(".frame.npy"):
                payload = b"\x93NUMPY garbage" * 4
                member.size = len(payload)
            dst.addfile(member, io.BytesIO(payload))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, TRAIN, *RECIPE, *base_overrides(str(bad), val, tmp_path / "run"),
                           "data.num_workers=1"], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-3000:]
    assert time.monotonic() - start < 180
    assert "decoded none" in proc.stderr and str(bad) in proc.stderr and "skipped in total" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("ds, key", [
    ({"zero_optimization": 2}, "'zero_optimization' must be a JSON object"),
    ({"zero_optimization": {"stage": "two"}}, "'zero_optimization.stage' must be 0, 1, 2 or 3"),
    ({"zero_optimization": {"stage": 2}, "bf16": True}, "'bf16' must be a JSON object"),
    ({"zero_optimization": {"stage": 2}, "fp16": {"enabled": "yes"}}, "'fp16.enabled' must be true, false or"),
    ({"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": "8"},
     "'train_micro_batch_size_per_gpu' must be a number"),
    ([{"zero_optimization": {"stage": 2}}], "'(top level)' must be a JSON object"),
])
def test_deepspeed_json_with_a_wrongly_typed_section_names_the_key(ds, key, tiny_data, tmp_path, capsys, launched):
    train, val = tiny_data
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(ds))
    code, err = _main(capsys, [*RECIPE, *base_overrides(train, val, tmp_path / "run"),
                               f"distributed.deepspeed_config={path}"])
    assert code == EXIT_BAD_INPUT
    assert err.startswith(f"error: {path}: {key}") and "Traceback" not in err
    assert not (tmp_path / "run").exists()
