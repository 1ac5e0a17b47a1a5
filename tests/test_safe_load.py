"""No code runs from weights or state files: crafted pickles are refused (exit 2) and run nothing, genuine
files still load (trainer.checkpointing.safe_load, the exported safetensors format)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models.v2x_model import V2XModel
from tests.test_launch_checkpoint_io import _engine_folder, cfg, launch_module, weights  # noqa: F401 (fixtures)
from tests.train_harness import base_overrides, run_train
from trainer.checkpointing.export import export_weights, final_weights, load_exported, read_exported
from trainer.checkpointing.safe_load import (ENGINE_CHECKPOINT_GLOBALS, CheckpointError, UnsafeCheckpointError,
                                             check_engine_checkpoint, engine_pickle_files, safe_torch_load)
from trainer.config_io import to_yaml

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs ``touch <marker>`` (what a crafted checkpoint would do, less politely)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(path: Path, marker: Path, payload=None) -> Path:
    """A ``torch.save`` file at ``path`` whose unpickling would create ``marker``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload(Payload(marker)) if payload else {"model": {}, "evil": Payload(marker)}, path)
    return path


def test_the_payload_is_live_without_the_restricted_unpickler(tmp_path):
    marker = tmp_path / "marker"
    torch.load(crafted(tmp_path / "w.pt", marker), weights_only=False)
    assert marker.exists(), "the fixture must really run code, or the refusals below prove nothing"


def test_safe_load_names_the_file_and_the_global_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    evil = crafted(tmp_path / "w.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match=r"cannot load .*w\.pt: it names global\(s\) outside the "
                                                    r"allow-list .*posix\.system"):
        safe_torch_load(evil, allowed=ENGINE_CHECKPOINT_GLOBALS)
    raw = tmp_path / "raw.pkl"  # a plain pickle (not torch's zip): the restricted unpickler itself refuses it
    raw.write_bytes(__import__("pickle").dumps({"evil": Payload(marker)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"raw\.pkl: the restricted \(weights_only\) unpickler"):
        safe_torch_load(raw, allowed=ENGINE_CHECKPOINT_GLOBALS)
    assert not marker.exists()


def test_pickle_files_of_a_folder_by_suffix_or_content(tmp_path):
    crafted(tmp_path / "pytorch_model" / "innocent_name", tmp_path / "m")  # zip magic, no suffix
    torch.save({}, tmp_path / "random_states_0.pkl")
    (tmp_path / "model.safetensors").write_bytes(b"\x80" * 16)  # cannot carry code, never unpickled
    (tmp_path / "train_state.json").write_text("{}")
    (tmp_path / "latest").write_text("pytorch_model")
    assert [p.relative_to(tmp_path).as_posix() for p in engine_pickle_files(tmp_path)] == [
        "pytorch_model/innocent_name", "random_states_0.pkl"]
    os.mkfifo(tmp_path / "pytorch_model" / "mp_rank_00_model_states.pt")  # could be fed a pickle later
    with pytest.raises(CheckpointError, match="mp_rank_00_model_states.pt: not a regular file"):
        check_engine_checkpoint(tmp_path)


def test_deepspeed_fp16_loss_scaler_is_allowed():
    """DeepSpeed's fp16 optimizer state holds its DynamicLossScaler (fp16 needs a GPU, so no CPU run makes one)."""
    from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler

    scaler = CreateLossScaler(torch.half, 0, True, dict(init_scale=2 ** 16, scale_window=1000, min_scale=1,
                                                        delayed_shift=2, consecutive_hysteresis=False))
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fp16-scaler-{os.getpid()}.pt"
    try:
        torch.save({"loss_scaler": scaler}, path)
        assert vars(safe_torch_load(path, allowed=ENGINE_CHECKPOINT_GLOBALS)["loss_scaler"]) == vars(scaler)
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("tool", ["evaluate", "visualize"])
def test_crafted_legacy_export_is_refused_by_the_clis(tool, tmp_path, capsys):
    marker = tmp_path / "marker"
    evil = crafted(tmp_path / "weights.pt", marker,
                   payload=lambda p: {"model": {}, "model_config": {"grid": p}})
    argv = ["--checkpoint", str(evil)] + (["--out-dir", str(tmp_path / "viz")] if tool == "visualize" else [])
    assert launch_module(tool).main(argv) == 2
    err = capsys.readouterr().err
    assert f"cannot load {evil}" in err and "posix.system" in err
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError):
        load_exported(evil)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["pytorch_model/mp_rank_00_model_states.pt",
                                   "pytorch_model/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                   "random_states_0.pkl", "scheduler.bin"])
def test_crafted_engine_checkpoint_is_refused_by_export_and_evaluate(where, tmp_path, cfg, weights, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    folder = _engine_folder(run / "pretrain", "step_000002", weights)
    if where.startswith("pytorch_model/"):  # the DeepSpeed layout, read by zero_to_fp32
        (folder / "pytorch_model.bin").unlink()
    marker = tmp_path / "marker"
    crafted(folder / where, marker)
    out = tmp_path / "w.safetensors"
    assert launch_module("export").main(["--checkpoint", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot load {folder / where}" in err and "posix.system" in err
    assert launch_module("evaluate").main(["--checkpoint", str(run), "--stage", "pretrain"]) == 2
    assert f"cannot load {folder / where}" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_resume_checks_the_checkpoint_before_the_engine_reads_it(tmp_path):
    """``Runtime.load_state`` (the one caller of ``accelerator.load_state``) refuses before Accelerate is asked."""
    from trainer.runtime import Runtime

    marker, calls = tmp_path / "marker", []
    folder = tmp_path / "step_000001"
    crafted(folder / "random_states_0.pkl", marker)
    fake = SimpleNamespace(accelerator=SimpleNamespace(load_state=calls.append))
    with pytest.raises(UnsafeCheckpointError, match="random_states_0.pkl"):
        Runtime.load_state(fake, folder)  # type: ignore[arg-type]
    assert calls == [] and not marker.exists()
    (folder / "random_states_0.pkl").unlink()
    torch.save({"step": 1}, folder / "random_states_0.pkl")
    Runtime.load_state(fake, folder)  # type: ignore[arg-type]
    assert calls == [str(folder)]


def test_export_is_safetensors_with_the_model_config(tmp_path, cfg, weights):
    folder = _engine_folder(tmp_path / "stage", "step_000001", weights)
    out = export_weights(folder, tmp_path / "stage" / "final.safetensors", cfg.model)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["model_config"])["encoder"] == "pillars"
    model, payload = load_exported(out)
    assert model.config == cfg.model
    assert all(torch.equal(payload["model"][k], weights[k]) for k in weights)
    with pytest.raises(ValueError, match="written as .safetensors"):
        export_weights(folder, tmp_path / "w.pt", cfg.model)
    assert final_weights(tmp_path / "stage") == out


def test_legacy_pt_export_and_final_pt_of_an_old_run_still_load(tmp_path, cfg, weights):
    import dataclasses

    legacy = tmp_path / "stage" / "final.pt"
    legacy.parent.mkdir()
    torch.save({"model": weights, "model_config": dataclasses.asdict(cfg.model)}, legacy)
    assert final_weights(legacy.parent) == legacy  # a run directory of an earlier version
    model, _ = load_exported(legacy)
    assert model.config == cfg.model
    assert read_exported(legacy)["model"].keys() == weights.keys()


def test_init_from_refuses_a_crafted_file_and_names_it(tmp_path, cfg):
    from trainer.engine.freezing import load_initial_weights

    marker = tmp_path / "marker"
    evil = crafted(tmp_path / "init.pt", marker)
    with pytest.raises(UnsafeCheckpointError, match="init.pt"):
        load_initial_weights(V2XModel(cfg.model), evil, skip=[])
    with pytest.raises(CheckpointError, match="init_from weights not found"):
        load_initial_weights(V2XModel(cfg.model), tmp_path / "missing.safetensors", skip=[])
    assert not marker.exists()


@pytest.mark.slow
def test_training_exits_2_on_a_crafted_init_from_or_resume_checkpoint(tiny_data, tmp_path):
    """``launch/train.py``: a crafted ``init_from`` file, then a crafted checkpoint in ``run.dir`` that the run
    would resume from: exit 2 with the file named, and the payload never ran."""
    marker = tmp_path / "marker"
    common = ["--config", "recipes/multitask.yaml", "stages.finetune.evaluate=false"]
    evil = crafted(tmp_path / "init.pt", marker)
    result = run_train("python", 1, [*common, *base_overrides(*tiny_data, tmp_path / "a"),
                                     f"stages.finetune.init_from={evil}"], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"error: cannot load {evil}" in result.stderr and "Traceback" not in result.stderr
    run = tmp_path / "b"
    step = run / "finetune" / "checkpoints" / "step_000001"
    crafted(step / "pytorch_model" / "mp_rank_00_model_states.pt", marker)
    (step / "train_state.json").write_text(json.dumps({"step": 1}))
    (step.parent / "latest.json").write_text(json.dumps({"latest": step.name, "history": [step.name]}))
    result = run_train("python", 1, [*common, *base_overrides(*tiny_data, run)], timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"cannot load {step / 'pytorch_model' / 'mp_rank_00_model_states.pt'}" in result.stderr
    assert not marker.exists()


def test_genuine_checkpoint_files_pass_the_check(tmp_path, weights):
    """A plain-engine folder as Accelerate writes it (model, optimizer, scheduler, numpy RNG state) passes; the
    ZeRO 1/2/3 and plain 2-rank checkpoints are checked in tests/test_train_e2e.py (gradient accumulation), and
    every training run's final export checks its last checkpoint."""
    import numpy as np
    import random

    folder = _engine_folder(tmp_path / "stage", "step_000001", weights)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), folder / "optimizer.bin")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    torch.save(sched.state_dict(), folder / "scheduler.bin")
    torch.save({"step": 0, "random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": torch.get_rng_state()}, folder / "random_states_0.pkl")
    assert {p.name for p in check_engine_checkpoint(folder)} == {"pytorch_model.bin", "optimizer.bin",
                                                                  "scheduler.bin", "random_states_0.pkl"}
