"""The one place that talks to Accelerate and DeepSpeed.

``Runtime`` owns the ``Accelerator``: process-group setup (gloo on CPU, NCCL on GPU), the resolved
DeepSpeed config, ``prepare`` / ``backward`` / state save and load, and the few collectives the
loop needs (barrier, sums, an any-rank flag, object gather / broadcast). Everything else in the
trainer receives plain callables from it.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from models.parallelize import externally_used_parameters, parameter_count
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


def _explicit(flag: Any) -> bool | None:
    return None if flag in (None, "auto") else bool(flag)


def resolve_deepspeed_config(cfg: TrainConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON with every ``auto`` filled from ``cfg``; conflicts are errors."""
    path = cfg.distributed.deepspeed_config_path()
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LaunchConfigError(f"{path}: not valid JSON: {err}") from err
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


def _init_process_group(backend: str, timeout: timedelta) -> None:
    """Join the launcher's process group before Accelerate / DeepSpeed would (they reuse it).

    Under torch elastic (torchrun, accelerate launch) the agent hosts the store and keeps it across
    restarts, so a group re-formed after a worker crash could read the crashed attempt's peer
    addresses. Keys are therefore prefixed with the restart count.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend=backend, store=dist.PrefixStore(f"turbotrain/attempt_{attempt}", store),
                            rank=rank, world_size=world, timeout=timeout)


def sum_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks of the default process group (a new detached tensor), or ``tensor``
    itself in a single process. Every rank must call it at the same point; inside a backward pass (the
    balancer's fork) the graph order makes that so. It never copies to the host."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


@dataclass
class Runtime:
    """An initialised Accelerator plus the collectives the training loop uses."""

    accelerator: Any
    zero_stage: int = 0

    @classmethod
    def create(cls, cfg: TrainConfig) -> "Runtime":
        prepare_process_env(cfg.distributed.engine)
        check_launcher_precision(cfg.precision)
        from accelerate import Accelerator, DeepSpeedPlugin
        from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

        # Every launcher/config conflict is found before any process group exists.
        plugin, zero_stage = None, 0
        if cfg.distributed.engine == "deepspeed":
            ds_config = resolve_deepspeed_config(cfg, int(os.environ.get("WORLD_SIZE", "1")))
            zero_stage = ds_config["zero_optimization"]["stage"]
            plugin = DeepSpeedPlugin(hf_ds_config=ds_config)
        elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            raise LaunchConfigError("the launcher enables DeepSpeed (--use_deepspeed) but distributed.engine=plain")
        launched = any(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
        backend, timeout = ("nccl" if torch.cuda.is_available() else "gloo"), timedelta(seconds=cfg.distributed.timeout_s)
        if launched:
            _init_process_group(backend, timeout)
        handlers: list[Any] = [InitProcessGroupKwargs(backend=backend, timeout=timeout)] if launched else []
        if cfg.distributed.engine == "plain":
            # Each stage leaves some heads unused (stage 1 has no task heads, stage 2 no decoder).
            handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
        accelerator = Accelerator(
            # Accelerate treats several CPU processes as MULTI_CPU (DDP) only when told it runs on the CPU.
            cpu=plugin is None and not torch.cuda.is_available(),
            deepspeed_plugin=plugin,
            mixed_precision=_ACCELERATE_PRECISION[cfg.precision],
            gradient_accumulation_steps=cfg.optim.grad_accum_steps,
            # The schedule counts optimizer steps (``stages.X.steps``); by default Accelerate would step
            # it once per process at every optimizer step, running it world_size times too fast.
            step_scheduler_with_optimizer=False,
            kwargs_handlers=handlers,
        )
        runtime = cls(accelerator, zero_stage)
        if launched and int(os.environ.get("WORLD_SIZE", "1")) > 1 and runtime.accelerator.distributed_type == "NO":
            raise LaunchConfigError(f"{os.environ['WORLD_SIZE']} processes were launched but Accelerate did not set up "
                                    "distributed training (gradients would not be synchronised)")
        return runtime

    # -- identity -------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def uses_deepspeed(self) -> bool:
        return self.accelerator.state.deepspeed_plugin is not None

    # -- collectives ------------------------------------------------------------------------------
    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (``sum_over_ranks``); the balancer's batch-level rules get this as their all-reduce."""
        return sum_over_ranks(tensor)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is True on at least one rank."""
        return bool(self.all_reduce_sum(torch.tensor([float(flag)], device=self.device)).item() > 0)

    def broadcast_object(self, obj: Any) -> Any:
        """``obj`` of rank 0, on every rank."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """One entry per rank, in rank order, on every rank (uneven sizes are fine)."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    # -- engine -----------------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[Any, Any, Any]:
        engine, optimizer, scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        if self.zero_stage == 3:  # parameters used outside their own layer's forward (models/parallelize.py)
            from deepspeed.runtime.zero.partition_parameters import register_external_parameter

            for owner, param in externally_used_parameters(engine.module):
                register_external_parameter(owner, param)
        return engine, optimizer, scheduler

    def backward(self, loss: torch.Tensor, *, boundary: bool = True) -> None:
        """Back-propagate one micro-batch; ``boundary`` says whether it is the last one of an optimizer step.

        The runtime owns the accumulation boundary for both engines. Under DeepSpeed, Accelerate's backward
        sets DeepSpeed's boundary from ``sync_gradients`` and calls ``engine.step()`` (optimizer, scheduler,
        zero-grad) when it is True; left alone that flag stays True outside ``accelerator.accumulate()``,
        so every micro-batch would be an optimizer step. Setting it here makes DeepSpeed step exactly at the
        loop's boundaries. On the plain engine Accelerate divides the loss by the accumulation steps and
        the loop steps the optimizer at the boundary.
        """
        self.accelerator.gradient_state._set_sync_gradients(boundary)
        self.accelerator.backward(loss)

    def clip_and_norm(self, model: Any, max_norm: float) -> float | None:
        """Global grad norm of this step (clipping itself is DeepSpeed's under ZeRO)."""
        if self.uses_deepspeed:
            norm = model.get_global_grad_norm()
            return None if norm is None else float(norm)
        if not self.accelerator.sync_gradients:
            return None
        params = [p for p in model.parameters() if p.grad is not None]
        norm = self.accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        return float(norm)

    def save_state(self, path: Path) -> None:
        self.accelerator.save_state(str(path), safe_serialization=False)

    def load_state(self, path: Path) -> None:
        self.accelerator.load_state(str(path))

    def release(self) -> None:
        """Drop the prepared engine/optimizer references so the next stage can prepare anew."""
        self.accelerator.free_memory()

    def attach_trackers(self, run_dir: Path, *, tensorboard: bool, wandb: dict[str, Any] | None,
                        config: dict[str, Any]) -> None:
        """Accelerate trackers writing under the run directory (decided after the Accelerator exists,
        so they are attached here rather than through ``Accelerator(log_with=...)``). ``wandb``: the
        ``wandb.init`` arguments (``wandb_init_kwargs``), or None for no W&B."""
        if not self.is_main:
            return
        from accelerate.tracking import TensorBoardTracker, WandBTracker

        if tensorboard:
            self.accelerator.trackers.append(TensorBoardTracker("tb", str(run_dir)))
        if wandb is not None:
            project, kwargs = wandb["project"], {k: v for k, v in wandb.items() if k != "project"}
            self.accelerator.trackers.append(WandBTracker(project, **kwargs))
        for tracker in self.accelerator.trackers:
            tracker.start()
            tracker.store_init_configuration(config)

    def log(self, values: dict[str, float], step: int) -> None:
        self.accelerator.log(values, step=step)

    def end(self) -> None:
        self.accelerator.end_training()
