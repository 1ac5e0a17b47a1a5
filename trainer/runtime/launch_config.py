"""The launch and DeepSpeed configuration a run needs before any process group exists: the process
environment, the resolved DeepSpeed JSON (every ``auto`` filled, conflicts are errors) and the launcher's
precision check."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import torch

from models.parallelize import parameter_count
from trainer.config import TrainConfig

_ACCELERATE_PRECISION = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}


def zero_bucket_sizes(num_params: int) -> dict[str, int]:
    """Values for the ZeRO ``auto`` bucket sizes, scaled to the model (Accelerate derives them from a HF
    ``model.config``, which this model has not). DeepSpeed's fixed defaults (5e8 elements) would make
    ZeRO-3 allocate gigabytes of bucket memory per rank for a model of a few million parameters."""
    return {"reduce_bucket_size": int(min(5e8, max(1e6, num_params))),
            "stage3_prefetch_bucket_size": int(min(5e7, max(1e6, num_params // 2))),
            "stage3_param_persistence_threshold": int(min(1e5, max(1e3, num_params // 100)))}


class LaunchConfigError(ValueError):
    """The launcher, the DeepSpeed JSON and the training config disagree."""


def prepare_process_env(engine: str) -> None:
    """Environment every process needs before DeepSpeed is imported.

    On a machine without CUDA, DeepSpeed must use its CPU accelerator. A plain ``python`` run (no
    launcher) gets a one-process rendezvous so DeepSpeed can initialise its process group.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    launched = any(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if engine == "deepspeed" and not launched:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")


DS_OBJECT_SECTIONS = ("zero_optimization", "bf16", "fp16", "amp", "optimizer", "scheduler", "activation_checkpointing",
                      "aio", "checkpoint", "comms_logger", "compression_training", "csv_monitor", "data_efficiency",
                      "elasticity", "flops_profiler", "tensorboard", "wandb")
"""Sections of a DeepSpeed JSON that must be JSON objects when present."""
_DS_NUMBERS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
               "gradient_clipping")


def check_deepspeed_types(ds: Any, path: Any) -> None:
    """Raise ``LaunchConfigError`` naming the key when the DeepSpeed JSON ``ds`` (read from ``path``) has a
    section or value of the wrong type (``"zero_optimization": 2``, ``"bf16": {"enabled": "yes"}``...)."""
    def bad(key: str, value: Any, expected: str) -> LaunchConfigError:
        return LaunchConfigError(f"{path}: '{key}' must be {expected}, got {json.dumps(value)}")

    if not isinstance(ds, dict):
        raise bad("(top level)", ds, "a JSON object")
    for key in DS_OBJECT_SECTIONS:
        if key in ds and not isinstance(ds[key], dict):
            raise bad(key, ds[key], 'a JSON object (e.g. {"stage": 2} for zero_optimization)')
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise bad("zero_optimization.stage", stage, "0, 1, 2 or 3")
    for key in ("bf16", "fp16"):
        enabled = ds.get(key, {}).get("enabled", "auto")
        if not isinstance(enabled, bool) and enabled not in (None, "auto"):
            raise bad(f"{key}.enabled", enabled, 'true, false or "auto"')
    for key in _DS_NUMBERS:
        value = ds.get(key, "auto")
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(key, value, 'a number or "auto"')


def _explicit(flag: Any) -> bool | None:
    return None if flag in (None, "auto") else bool(flag)


def resolve_deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON with every ``auto`` filled from ``cfg``; conflicts are errors."""
    path = cfg.distributed.deepspeed_config_path()
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LaunchConfigError(f"{path}: not valid JSON: {err}") from err
    check_deepspeed_types(ds, path)
    zero = ds.setdefault("zero_optimization", {})
    file_stage = zero.get("stage", 0)
    stage = cfg.distributed.zero_stage if cfg.distributed.zero_stage is not None else file_stage
    env_stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if env_stage is not None and int(env_stage) != stage:
        raise LaunchConfigError(f"the launcher asks for ZeRO stage {env_stage} (--zero_stage) but the training config "
                                f"uses stage {stage} ({path}, distributed.zero_stage); make them agree")
    zero["stage"] = stage
    if any(v == "auto" for v in zero.values()):
        for key, value in zero_bucket_sizes(parameter_count(cfg.model)).items():
            if zero.get(key) == "auto":
                zero[key] = value
    for key, name in (("bf16", "bf16"), ("fp16", "fp16")):
        enabled = _explicit(ds.get(key, {}).get("enabled"))
        if enabled is True and cfg.precision != name:
            raise LaunchConfigError(f"{path} enables {key} but precision={cfg.precision}; set precision={name} "
                                    f"or use a DeepSpeed config with '{key}.enabled: auto'")
        if enabled is False and cfg.precision == name:
            raise LaunchConfigError(f"{path} disables {key} but precision={cfg.precision}")
        ds.setdefault(key, {})["enabled"] = cfg.precision == name
    micro, accum = cfg.data.batch_size, cfg.optim.grad_accum_steps
    for key, value in (("train_micro_batch_size_per_gpu", micro), ("gradient_accumulation_steps", accum),
                       ("train_batch_size", micro * accum * world_size), ("gradient_clipping", cfg.optim.grad_clip)):
        if ds.get(key, "auto") not in ("auto", value):
            raise LaunchConfigError(f"{path} sets {key}={ds[key]} but the training config implies {value}")
        ds[key] = value
    if cfg.precision == "fp16" and not torch.cuda.is_available():
        raise LaunchConfigError("precision=fp16 needs a GPU (DeepSpeed has no fp16 on CPU); use bf16 or fp32")
    return ds


def check_launcher_precision(precision: str) -> None:
    """``accelerate launch --mixed_precision bf16|fp16`` must agree with ``precision``.

    ``accelerate launch`` exports ``no`` when the flag is absent, so ``no`` cannot be told apart from
    an unset flag: only an explicit bf16 / fp16 request that disagrees is an error.
    """
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launcher in ("bf16", "fp16") and launcher != _ACCELERATE_PRECISION[precision]:
        raise LaunchConfigError(f"the launcher sets --mixed_precision {launcher} but the training config has "
                                f"precision={precision}; make them agree")
