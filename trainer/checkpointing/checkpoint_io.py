"""Resolve what a user points at (run dir / stage dir / engine checkpoint / exported weights) and load it.

Run directory layout (see ``trainer.engine.pipeline``)::

    <run>/config.yaml                               resolved config of the run
    <run>/<stage>/final.safetensors                 exported fp32 weights (model config in its metadata)
    <run>/<stage>/checkpoints/latest.json           pointer -> step_XXXXXX/
    <run>/<stage>/checkpoints/step_XXXXXX/          engine checkpoint (pytorch_model/ or pytorch_model.bin)

Every failure is a :class:`CheckpointError` whose message names the path at fault, so command-line
tools can print it and exit 2. Nothing is unpickled without ``weights_only=True``: engine checkpoints are
checked by ``trainer.checkpointing.safe_load.check_engine_checkpoint`` before DeepSpeed reads them.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from models.batch import Batch
from models.config import ModelConfig
from models.detections import SceneDetections
from models.v2x_model import V2XModel
from trainer.checkpointing.checkpoint import POINTER, latest_checkpoint
from trainer.config import StageConfig, TrainConfig
from trainer.config_io import ConfigError, load_config
from trainer.checkpointing.export import DS_TAG, EXPORTED_SUFFIXES, load_exported, model_state_from_checkpoint
from trainer.checkpointing.safe_load import CheckpointError
from trainer.eval.model_eval import predict_scenes
from trainer.checkpointing.run_dir import CONFIG_FILE as RUN_CONFIG

CHECKPOINTS = "checkpoints"
ENGINE_MARKERS = (DS_TAG, "pytorch_model.bin", "model.safetensors")
KINDS = ("exported", "engine")
_EXPORTED = " / ".join(f"*{suffix}" for suffix in EXPORTED_SUFFIXES)


@dataclass(frozen=True, kw_only=True)
class ResolvedCheckpoint:
    """Where the weights are and what the run layout around them says."""

    kind: str
    """``exported`` (a ``.safetensors`` written by ``trainer.checkpointing.export.export_weights``, or a legacy
    ``.pt`` export) or ``engine`` (an Accelerate / DeepSpeed checkpoint folder of any ZeRO stage)."""
    path: Path
    """The exported weights file or the engine checkpoint folder."""
    run_dir: Path | None = None
    """The run directory holding ``config.yaml``, when the layout shows one."""
    stage: str | None = None
    """The stage the weights belong to, when the layout shows it."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def run_config(self) -> Path | None:
        """``<run>/config.yaml`` when it exists."""
        return self.run_dir / RUN_CONFIG if self.run_dir is not None else None


def is_engine_checkpoint(path: Path) -> bool:
    """True for a folder written by ``accelerator.save_state`` (DeepSpeed shards or a plain state dict)."""
    return path.is_dir() and any((path / marker).exists() for marker in ENGINE_MARKERS)


def _run_of(stage_dir: Path) -> Path | None:
    return stage_dir.parent if (stage_dir.parent / RUN_CONFIG).is_file() else None


def _stage_checkpoint(stage_dir: Path) -> ResolvedCheckpoint:
    try:
        latest = latest_checkpoint(stage_dir / CHECKPOINTS)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise CheckpointError(f"{stage_dir}: broken checkpoint pointer: {err}") from err
    if latest is None:
        raise CheckpointError(f"{stage_dir}: no {CHECKPOINTS}/{POINTER} (the stage has saved no checkpoint)")
    return ResolvedCheckpoint(kind="engine", path=latest, run_dir=_run_of(stage_dir), stage=stage_dir.name)


def run_stage_names(run_dir: Path) -> list[str]:
    """The stage names of a run, in order, read from its ``config.yaml``."""
    try:
        return list(load_config(run_dir / RUN_CONFIG).stages)
    except ConfigError as err:
        raise CheckpointError(f"{run_dir / RUN_CONFIG}: {err}") from err


def resolve_checkpoint(path: str | Path, *, stage: str | None = None) -> ResolvedCheckpoint:
    """What ``path`` is: exported weights (``.safetensors``, legacy ``.pt``), an engine checkpoint folder, a stage folder (its latest
    checkpoint), a stage's ``checkpoints/`` folder, or a run directory (``stage``, default its last stage).

    ``stage`` is only meaningful with a run directory; anything else raises :class:`CheckpointError`.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path does not exist: {path}")
    is_run = path.is_dir() and (path / RUN_CONFIG).is_file()
    if stage is not None and not is_run:
        raise CheckpointError(f"--stage {stage} needs a run directory (with {RUN_CONFIG}); {path} is not one")
    if path.is_file():
        if path.suffix not in EXPORTED_SUFFIXES:
            raise CheckpointError(f"{path} is a file but not exported weights ({_EXPORTED})")
        stage_dir = path.parent
        run_dir = _run_of(stage_dir)
        return ResolvedCheckpoint(kind="exported", path=path, run_dir=run_dir,
                                  stage=stage_dir.name if run_dir is not None else None)
    if is_engine_checkpoint(path):
        stage_dir = path.parent.parent if path.parent.name == CHECKPOINTS else None
        run_dir = _run_of(stage_dir) if stage_dir is not None else None
        return ResolvedCheckpoint(kind="engine", path=path, run_dir=run_dir,
                                  stage=stage_dir.name if run_dir is not None else None)
    if (path / POINTER).is_file():  # <stage>/checkpoints/
        return _stage_checkpoint(path.parent)
    if (path / CHECKPOINTS).is_dir():
        return _stage_checkpoint(path)
    if is_run:
        names = run_stage_names(path)
        chosen = stage if stage is not None else names[-1]
        if chosen not in names:
            raise CheckpointError(f"{path}: no stage {chosen!r} in this run (stages: {', '.join(names)})")
        if not (path / chosen).is_dir():
            done = [n for n in names if (path / n / CHECKPOINTS).is_dir()]
            raise CheckpointError(f"{path}: stage {chosen!r} has not started (stages with checkpoints: "
                                  f"{', '.join(done) or 'none'}; pick one with --stage)")
        return _stage_checkpoint(path / chosen)
    raise CheckpointError(f"{path} is none of: exported weights ({_EXPORTED}), an engine checkpoint folder "
                          f"({' / '.join(ENGINE_MARKERS)}), a stage folder ({CHECKPOINTS}/{POINTER}), "
                          f"a run directory ({RUN_CONFIG})")


def resolve_config(resolved: ResolvedCheckpoint, config: str | Path | None = None,
                   overrides: Sequence[str] = ()) -> TrainConfig | None:
    """``config`` (when given) else the run's ``config.yaml`` plus ``overrides``; None when neither exists."""
    source = Path(config) if config is not None else resolved.run_config
    if source is None or not source.is_file():
        if config is not None:
            raise CheckpointError(f"config file not found: {config}")
        return None
    try:
        return load_config(source, overrides)
    except ConfigError as err:
        raise CheckpointError(str(err)) from err


def load_plain_model(resolved: ResolvedCheckpoint, model_config: ModelConfig | None = None) -> V2XModel:
    """A plain fp32 ``V2XModel`` in eval mode on the CPU.

    Exported weights carry their model config; an engine checkpoint needs ``model_config``.
    """
    try:
        if resolved.kind == "exported":
            model, _ = load_exported(resolved.path)
            return model
        if model_config is None:
            raise CheckpointError(f"{resolved.path}: an engine checkpoint holds no model config; pass --config "
                                  f"(no {RUN_CONFIG} found in the run layout around it)")
        state = model_state_from_checkpoint(resolved.path)
        model = V2XModel(model_config)
        model.load_state_dict(state)
        return model.eval()
    except CheckpointError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"cannot load {resolved.path} (does the model config match the checkpoint?): "
                              f"{type(err).__name__}: {_brief(err)}") from err


def _brief(err: Exception, max_lines: int = 4) -> str:
    """The first lines of a (possibly very long, e.g. ``load_state_dict``) error message."""
    lines = str(err).splitlines()
    more = f"\n\t... ({len(lines) - max_lines} more lines)" if len(lines) > max_lines else ""
    return "\n".join(lines[:max_lines]) + more


@dataclass(frozen=True, kw_only=True)
class InferenceSetup:
    """A loaded model with the config that goes with it."""

    model: V2XModel
    """Plain fp32 model, eval mode, CPU."""
    cfg: TrainConfig
    """The run's config (or the given / default recipe) with ``model`` set to the checkpoint's model config."""
    resolved: ResolvedCheckpoint
    """Where the weights came from."""
    config_file: Path | None = None
    """The config file the settings were read from (None: the default recipe)."""

    @property
    def stage(self) -> StageConfig | None:
        """The stage config of the weights (its input view and forward switches), when known."""
        if self.resolved.stage is None:
            return None
        return self.cfg.stages.get(self.resolved.stage)


def load_for_inference(path: str | Path, *, stage: str | None = None, config: str | Path | None = None,
                       overrides: Sequence[str] = ()) -> InferenceSetup:
    """Resolve ``path``, load its model and the matching config (see :func:`resolve_checkpoint`).

    Config: ``config`` if given, else the run's ``config.yaml``, else (exported weights only) the default
    recipe; ``overrides`` apply to it. The model section always comes from the checkpoint when it has one.
    """
    resolved = resolve_checkpoint(path, stage=stage)
    cfg = resolve_config(resolved, config, overrides)
    config_file = (Path(config) if config is not None else resolved.run_config) if cfg is not None else None
    if cfg is None and resolved.kind == "exported":
        try:
            cfg = load_config(None, overrides)
        except ConfigError as err:
            raise CheckpointError(str(err)) from err
    model = load_plain_model(resolved, cfg.model if cfg is not None else None)
    assert cfg is not None  # an engine checkpoint without a config raised in load_plain_model
    if model.config.num_classes != len(cfg.data.classes):
        raise CheckpointError(f"{resolved.path}: the checkpoint's model does not fit the config: its "
                              f"num_classes is {model.config.num_classes}, data.classes has {len(cfg.data.classes)}")
    try:
        cfg = dataclasses.replace(cfg, model=model.config)
    except ValueError as err:
        raise CheckpointError(f"{resolved.path}: the checkpoint's model does not fit the config: {err}") from err
    return InferenceSetup(model=model, cfg=cfg, resolved=resolved, config_file=config_file)


def inference_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def make_predictor(model: V2XModel, *, stage: StageConfig | None = None, device: torch.device | None = None,
                   score_threshold: float = 0.1) -> Callable[[Batch], list[SceneDetections]]:
    """``predict(batch) -> [SceneDetections per scene]`` on the CPU (``render_samples``' ``predict``).

    Runs ``model`` (eval mode, no grad) on ``device`` with ``stage``'s input view and forward switches,
    then ``models.decode.decode_detections`` with ``score_threshold``.
    """
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    device = device or torch.device("cpu")
    model = model.to(device).eval()

    def predict(batch: Batch) -> list[SceneDetections]:
        return predict_scenes(model, batch.to(device), stage=stage, score_threshold=score_threshold)

    return predict
