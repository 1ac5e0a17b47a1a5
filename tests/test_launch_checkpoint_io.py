"""trainer.checkpointing.checkpoint_io: what a path is (run / stage / engine checkpoint / exported .pt), loading it, predicting."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from models.v2x_model import V2XModel
from tests.batch_factory import make_batch
from trainer.checkpointing.checkpoint_io import (CheckpointError, ResolvedCheckpoint, load_for_inference, load_plain_model,
                                   make_predictor, resolve_checkpoint)
from trainer.config_io import load_config, to_yaml
from trainer.checkpointing.export import export_weights, read_exported

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "turbotrain.yaml"  # two stages: pretrain, finetune


def launch_module(name: str):
    """``launch/<name>.py`` imported as a module (its ``main(argv)`` returns the exit code)."""
    spec = importlib.util.spec_from_file_location(f"launch_{name}", REPO / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses defined in the script look their module up there
    spec.loader.exec_module(module)
    return module


def _engine_folder(stage_dir: Path, step: str, state: dict[str, torch.Tensor] | None = None) -> Path:
    """A plain (non-DeepSpeed) Accelerate checkpoint: ``pytorch_model.bin`` holding ``model.*`` tensors."""
    folder = stage_dir / "checkpoints" / step
    folder.mkdir(parents=True)
    torch.save({f"model.{k}": v for k, v in (state or {}).items()}, folder / "pytorch_model.bin")
    (folder / "train_state.json").write_text("{}")
    (stage_dir / "checkpoints" / "latest.json").write_text(json.dumps({"latest": step, "history": [step]}))
    return folder


@pytest.fixture(scope="module")
def cfg():
    return load_config(RECIPE, ["model.encoder=pillars"])


@pytest.fixture(scope="module")
def weights(cfg) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return V2XModel(cfg.model).state_dict()


@pytest.fixture
def run_dir(tmp_path, cfg, weights) -> Path:
    """<run>/config.yaml + pretrain/checkpoints/step_000002 (finetune has not started)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    _engine_folder(run / "pretrain", "step_000002", weights)
    return run


def test_resolves_every_layout(run_dir):
    engine = run_dir / "pretrain" / "checkpoints" / "step_000002"
    expected = ResolvedCheckpoint(kind="engine", path=engine, run_dir=run_dir, stage="pretrain")
    assert resolve_checkpoint(engine) == expected
    assert resolve_checkpoint(run_dir / "pretrain") == expected
    assert resolve_checkpoint(run_dir / "pretrain" / "checkpoints") == expected
    assert resolve_checkpoint(run_dir, stage="pretrain") == expected
    for name in ("final.safetensors", "final.pt"):  # the current export and a legacy one
        final = run_dir / "pretrain" / name
        final.write_bytes(b"")
        assert resolve_checkpoint(final) == ResolvedCheckpoint(kind="exported", path=final, run_dir=run_dir,
                                                               stage="pretrain")


def test_outside_a_run_layout_there_is_no_run_or_stage(tmp_path):
    loose = tmp_path / "ckpt"
    loose.mkdir()
    (loose / "pytorch_model.bin").write_bytes(b"")
    assert resolve_checkpoint(loose) == ResolvedCheckpoint(kind="engine", path=loose)
    (tmp_path / "w.pt").write_bytes(b"")
    assert resolve_checkpoint(tmp_path / "w.pt") == ResolvedCheckpoint(kind="exported", path=tmp_path / "w.pt")


@pytest.mark.parametrize("make, stage, message", [
    (lambda run: run / "missing", None, "does not exist"),
    (lambda run: run.parent, None, "is none of"),
    (lambda run: run / "config.yaml", None, "not exported weights"),
    (lambda run: run / "pretrain", "pretrain", "needs a run directory"),
    (lambda run: run, None, "'finetune' has not started (stages with checkpoints: pretrain"),  # default: last stage
    (lambda run: run, "decode", "no stage 'decode' in this run (stages: pretrain, finetune)"),
])
def test_bad_paths_name_the_problem(run_dir, make, stage, message):
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_checkpoint(make(run_dir), stage=stage)


def test_pointer_to_a_missing_checkpoint_is_an_error(run_dir):
    pointer = run_dir / "pretrain" / "checkpoints" / "latest.json"
    pointer.write_text(json.dumps({"latest": "step_000009", "history": ["step_000009"]}))
    with pytest.raises(CheckpointError, match="broken checkpoint pointer.*step_000009"):
        resolve_checkpoint(run_dir / "pretrain")


def test_engine_checkpoint_loads_with_the_run_config(run_dir, weights):
    setup = load_for_inference(run_dir, stage="pretrain")
    assert setup.stage is not None and setup.stage.task == "pretrain"
    assert not setup.model.training
    loaded = setup.model.state_dict()
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_engine_checkpoint_without_any_config_is_refused(tmp_path, weights):
    folder = _engine_folder(tmp_path / "loose", "step_000001", weights)
    with pytest.raises(CheckpointError, match="holds no model config; pass --config"):
        load_for_inference(folder)
    resolved = resolve_checkpoint(folder)
    with pytest.raises(CheckpointError, match="holds no model config"):
        load_plain_model(resolved)


def test_engine_checkpoint_of_another_model_shape_fails_clearly(run_dir):
    with pytest.raises(CheckpointError, match="(?s)cannot load .*size mismatch for det_head") as info:
        load_for_inference(run_dir, stage="pretrain", overrides=["model.head_channels=24"])
    assert "more lines)" in str(info.value) and len(str(info.value).splitlines()) == 5


def test_exported_weights_bring_their_model_config(tmp_path, run_dir, cfg, weights):
    """A loose exported file (no run around it) loads with the default recipe but its own model section."""
    out = export_weights(run_dir / "pretrain" / "checkpoints" / "step_000002", tmp_path / "w.safetensors",
                         cfg.model)
    setup = load_for_inference(out)
    assert setup.resolved.kind == "exported" and setup.stage is None
    assert setup.cfg.model == cfg.model and setup.cfg.model.encoder == "pillars"
    assert all(torch.equal(setup.model.state_dict()[k], weights[k]) for k in weights)


def test_exported_model_must_fit_the_config_classes(tmp_path, run_dir, cfg):
    two_classes = dataclasses.replace(cfg.model, num_classes=2)
    out = tmp_path / "w.pt"
    torch.save({"model": V2XModel(two_classes).state_dict(), "model_config": dataclasses.asdict(two_classes)}, out)
    with pytest.raises(CheckpointError, match="does not fit the config.*num_classes"):
        load_for_inference(out)


def test_predictor_gives_one_cpu_detection_list_per_scene(cfg):
    torch.manual_seed(0)
    model = V2XModel(cfg.model)
    batch = make_batch(cfg.model, num_scenes=2, agents=[1, 2], num_objects=2)
    predict = make_predictor(model, stage=cfg.stages["finetune"], score_threshold=0.0)
    detections = predict(batch)
    assert len(detections) == 2
    for det in detections:
        assert det.boxes.device.type == "cpu" and det.boxes.shape[1] == 7
        assert det.trajectories.shape[1:] == (cfg.model.num_modes, cfg.model.future_steps, 2)
        assert len(det.scores) == len(det.boxes) > 0
    strict = make_predictor(model, score_threshold=1.0)(batch)
    assert all(len(d.boxes) == 0 for d in strict)
    with pytest.raises(ValueError, match="score_threshold"):
        make_predictor(model, score_threshold=1.5)


@pytest.mark.parametrize("tool, extra", [("export", ["--out", "w.safetensors"]), ("evaluate", [])])
def test_cli_bad_checkpoint_exits_2(tool, extra, tmp_path, capsys):
    main = launch_module(tool).main
    assert main(["--checkpoint", str(tmp_path / "nothing"), *extra]) == 2
    assert "checkpoint path does not exist" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path), *extra]) == 2
    assert "is none of" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"garbage"])
def test_evaluate_cli_corrupt_weights_exit_2(content, tmp_path, capsys):
    (tmp_path / "w.pt").write_bytes(content)
    assert launch_module("evaluate").main(["--checkpoint", str(tmp_path / "w.pt")]) == 2
    assert f"cannot load {tmp_path / 'w.pt'}" in capsys.readouterr().err


def test_export_cli_refuses_exported_weights_and_loose_engine_folders(tmp_path, weights, capsys):
    export = launch_module("export").main
    (tmp_path / "w.pt").write_bytes(b"")
    out = tmp_path / "o.safetensors"
    assert export(["--checkpoint", str(tmp_path / "w.pt"), "--out", str(out)]) == 2
    assert "already exported" in capsys.readouterr().err
    folder = _engine_folder(tmp_path / "loose", "step_000001", weights)
    assert export(["--checkpoint", str(folder), "--out", str(out)]) == 2
    assert "pass --config" in capsys.readouterr().err
    assert not out.exists()


def test_export_cli_from_a_plain_engine_checkpoint(run_dir, tmp_path, weights, capsys):
    export = launch_module("export").main
    out = tmp_path / "out" / "w.safetensors"
    assert export(["--checkpoint", str(run_dir), "--stage", "pretrain", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(weights)} tensors" in printed and "(stage pretrain)" in printed
    assert export(["--checkpoint", str(run_dir), "--stage", "pretrain", "--out", str(tmp_path / "w.pt")]) == 2
    assert "--out must name a .safetensors file" in capsys.readouterr().err
    payload = read_exported(out)
    assert all(torch.equal(payload["model"][k], weights[k]) for k in weights)
    assert payload["model_config"]["encoder"] == "pillars"


def test_visualize_cli_needs_a_source_and_checkpoint_excludes_run(tmp_path):
    visualize = launch_module("visualize").main
    with pytest.raises(SystemExit):
        visualize([])
    with pytest.raises(SystemExit):
        visualize(["--run", str(tmp_path), "--checkpoint", str(tmp_path)])
    assert visualize(["--checkpoint", str(tmp_path / "nothing")]) == 2
