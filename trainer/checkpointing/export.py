"""Consolidated fp32 weights from a checkpoint of any engine / ZeRO stage, for inference and init.

Exported weights are a safetensors file (tensors only, no code): the model's fp32 state dict, with the
model config as JSON in the file's metadata. Exports of earlier versions (a ``torch.save`` of
``{"model", "model_config"}`` named ``*.pt``) are still read, with the restricted unpickler only.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from models.config import ModelConfig
from models.grid import GridConfig
from models.v2x_model import V2XModel
from trainer.checkpointing.safe_load import CheckpointError, check_engine_checkpoint, safe_torch_load

DS_TAG = "pytorch_model"
MODEL_PREFIX = "model."
EXPORTED_SUFFIX = ".safetensors"
"""Suffix of the weights ``export_weights`` writes."""
LEGACY_EXPORTED_SUFFIX = ".pt"
"""Suffix of earlier exports (a pickle; read with ``weights_only=True`` only)."""
EXPORTED_SUFFIXES = (EXPORTED_SUFFIX, LEGACY_EXPORTED_SUFFIX)
FINAL_WEIGHTS = "final" + EXPORTED_SUFFIX
"""A finished stage's exported weights, in its stage folder."""
FORMAT_KEY, FORMAT = "format", "turbotrain.exported_weights.v1"
CONFIG_KEY = "model_config"


def final_weights(stage_dir: Path) -> Path:
    """A stage's exported weights: ``final.safetensors``, or the ``final.pt`` of a run made by an earlier
    version when only that exists."""
    legacy = stage_dir / ("final" + LEGACY_EXPORTED_SUFFIX)
    current = stage_dir / FINAL_WEIGHTS
    return legacy if legacy.is_file() and not current.exists() else current


def _engine_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The training module's full fp32 state dict stored in an Accelerate checkpoint folder (every pickle in
    it checked by ``check_engine_checkpoint`` first)."""
    check_engine_checkpoint(checkpoint)
    if (checkpoint / DS_TAG).is_dir():
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=DS_TAG)
    for name in ("pytorch_model.bin", "model.safetensors"):
        path = checkpoint / name
        if path.is_file():
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(path))
            return safe_torch_load(path)
    raise FileNotFoundError(f"{checkpoint} holds no DeepSpeed ({DS_TAG}/) or plain model checkpoint")


def model_state_from_checkpoint(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Only the model's tensors (loss-level state such as uncertainty weights is left out), fp32."""
    state = _engine_state_dict(Path(checkpoint))
    out = {k[len(MODEL_PREFIX):]: v.float() if v.is_floating_point() else v
           for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    if not out:
        raise ValueError(f"{checkpoint}: no tensors under '{MODEL_PREFIX}' (not a TurboTrain checkpoint?)")
    return out


def export_weights(checkpoint: Path, out: Path, model_config: ModelConfig) -> Path:
    """Write the model's fp32 state dict to the safetensors file ``out`` (atomically), ``model_config`` as
    JSON in its metadata."""
    from safetensors.torch import save_file

    if out.suffix != EXPORTED_SUFFIX:
        raise ValueError(f"exported weights are written as {EXPORTED_SUFFIX}, got {out}")
    # own, contiguous storage per tensor: ZeRO consolidation returns views into one flat buffer
    state = {k: v.detach().contiguous().clone() for k, v in model_state_from_checkpoint(checkpoint).items()}
    metadata = {FORMAT_KEY: FORMAT, CONFIG_KEY: json.dumps(asdict(model_config))}
    tmp = out.with_name(f".{out.name}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, out)
    return out


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"cannot load {path}: not a readable safetensors file: {type(err).__name__}: {err}") from err
    try:
        config = json.loads(metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its '{CONFIG_KEY}' metadata is not JSON: {err}") from err
    return {"model": state, "model_config": config}


def read_exported(path: Path) -> dict[str, Any]:
    """``{"model": state dict, "model_config": dict or None}`` of exported weights: a safetensors file, or a
    legacy ``.pt`` (``{"model", "model_config"}`` or a bare state dict) loaded with ``weights_only=True``.

    Raises ``CheckpointError`` (``UnsafeCheckpointError`` for a pickle naming code) that names the file.
    """
    path = Path(path)
    if path.suffix == EXPORTED_SUFFIX:
        return _read_safetensors(path)
    payload = safe_torch_load(path)
    if isinstance(payload, dict) and isinstance(payload.get("model"), dict):
        return {"model": payload["model"], "model_config": payload.get(CONFIG_KEY)}
    if isinstance(payload, dict) and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return {"model": payload, "model_config": None}
    raise CheckpointError(f"{path}: not exported weights (neither {{'model': ..., '{CONFIG_KEY}': ...}} "
                          f"nor a state dict)")


def load_exported(path: Path, *, map_location: str = "cpu") -> tuple[V2XModel, dict[str, Any]]:
    """A plain ``V2XModel`` (eval mode, fp32) built from exported weights, plus ``read_exported``'s payload."""
    payload = read_exported(path)
    if payload["model_config"] is None:
        raise CheckpointError(f"{path}: holds no model config (not written by launch/export.py?)")
    raw = dict(payload["model_config"])
    raw["grid"] = GridConfig(**raw["grid"])
    model = V2XModel(ModelConfig(**raw))
    model.load_state_dict(payload["model"])
    return model.to(map_location).eval(), payload
