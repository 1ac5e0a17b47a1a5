"""Consolidated fp32 weights from a checkpoint of any engine / ZeRO stage, for inference and init."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from models.config import ModelConfig
from models.grid import GridConfig
from models.v2x_model import V2XModel

DS_TAG = "pytorch_model"
MODEL_PREFIX = "model."


def _engine_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The training module's full fp32 state dict stored in an Accelerate checkpoint folder."""
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
            return torch.load(path, map_location="cpu", weights_only=True)
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
    """Write ``{"model": fp32 state dict, "model_config": dict}`` to ``out`` (atomically)."""
    payload = {"model": model_state_from_checkpoint(checkpoint), "model_config": asdict(model_config)}
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, out)
    return out


def load_exported(path: Path, *, map_location: str = "cpu") -> tuple[V2XModel, dict[str, Any]]:
    """A plain ``V2XModel`` (eval mode, fp32) built from exported weights, plus the raw payload."""
    payload = torch.load(path, map_location=map_location, weights_only=False)
    raw = dict(payload["model_config"])
    raw["grid"] = GridConfig(**raw["grid"])
    model = V2XModel(ModelConfig(**raw))
    model.load_state_dict(payload["model"])
    return model.eval(), payload
