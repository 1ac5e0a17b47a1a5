"""The one place that talks to Accelerate, DeepSpeed and torch.distributed.

``Runtime`` owns the ``Accelerator``: process-group setup (gloo on CPU, NCCL on GPU), the resolved
DeepSpeed config (``launch_config``), ``prepare`` / ``backward`` / the accumulation boundary / state save
and load, and the collectives (``process_group``: barrier, sums, an any-rank flag, object gather /
broadcast). Everything else in the trainer receives plain callables from it; the evaluation entry point
uses ``process_group`` directly, since it has no engine. ``bench/zero_memory.py`` builds its engines through
``Runtime`` too, so it measures what training runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from models.parallelize import externally_used_parameters
from trainer.checkpointing.safe_load import check_engine_checkpoint
from trainer.config import TrainConfig
from trainer.runtime import process_group
from trainer.runtime.launch_config import (
    _ACCELERATE_PRECISION,
    LaunchConfigError,
    check_launcher_precision,
    prepare_process_env,
    resolve_deepspeed_config,
    zero_bucket_sizes,
)
from trainer.runtime.process_group import sum_over_ranks

__all__ = ["LaunchConfigError", "Runtime", "check_launcher_precision", "prepare_process_env",
           "register_zero3_external_parameters", "resolve_deepspeed_config", "sum_over_ranks", "zero_bucket_sizes"]


def register_zero3_external_parameters(module: torch.nn.Module) -> None:
    """ZeRO-3: register the parameters the model uses outside their own layer's forward (spconv weights,
    ``models.parallelize.externally_used_parameters``) with the module that must gather them."""
    from deepspeed.runtime.zero.partition_parameters import register_external_parameter

    for owner, param in externally_used_parameters(module):
        register_external_parameter(owner, param)


@dataclass
class Runtime:
    """An initialised Accelerator plus the collectives the training loop uses."""

    accelerator: Any
    zero_stage: int = 0
    launcher_deepspeed_env: str | None = None
    """``ACCELERATE_USE_DEEPSPEED`` as it was before the Accelerator set it (``close`` puts it back)."""

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
        launcher_deepspeed_env = os.environ.get("ACCELERATE_USE_DEEPSPEED")
        launched = process_group.launched()
        backend, timeout = process_group.default_backend(), timedelta(seconds=cfg.distributed.timeout_s)
        if launched:
            process_group.join_process_group(backend, timeout)
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
        runtime = cls(accelerator, zero_stage, launcher_deepspeed_env)
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
        return process_group.broadcast_object(obj)

    def gather_objects(self, obj: Any) -> list[Any]:
        """One entry per rank, in rank order, on every rank (uneven sizes are fine)."""
        return process_group.gather_objects(obj)

    # -- engine -----------------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[Any, Any, Any]:
        engine, optimizer, scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        if self.zero_stage == 3:
            register_zero3_external_parameters(engine.module)
        return engine, optimizer, scheduler

    def backward(self, loss: torch.Tensor, *, boundary: bool = True,
                 before_step: Callable[[], None] | None = None) -> None:
        """Back-propagate one micro-batch; ``boundary`` says whether it is the last one of an optimizer step.

        The runtime owns the accumulation boundary for both engines. Under DeepSpeed, Accelerate's backward
        sets DeepSpeed's boundary from ``sync_gradients`` and calls ``engine.step()`` (optimizer, scheduler,
        zero-grad) when it is True; left alone that flag stays True outside ``accelerator.accumulate()``,
        so every micro-batch would be an optimizer step. Setting it here makes DeepSpeed step exactly at the
        loop's boundaries. On the plain engine Accelerate divides the loss by the accumulation steps and
        the loop steps the optimizer at the boundary.

        ``before_step`` (the memory count of ``bench/zero_memory.py``) runs after this micro-batch's
        backward (at a boundary: with the gradients reduced) and before any optimizer step: under DeepSpeed
        at a boundary inside Accelerate's backward, just before the ``engine.step()`` that Accelerate makes
        there; otherwise after the backward (the plain engine's loop steps the optimizer later).
        """
        self.accelerator.gradient_state._set_sync_gradients(boundary)
        wrapped = getattr(self.accelerator, "deepspeed_engine_wrapped", None)
        if before_step is None or wrapped is None or not boundary:
            self.accelerator.backward(loss)
            if before_step is not None:
                before_step()
            return
        engine, step = wrapped.engine, wrapped.engine.step

        def step_after_probe(*args: Any, **kwargs: Any) -> Any:
            before_step()
            return step(*args, **kwargs)

        engine.step = step_after_probe
        try:
            self.accelerator.backward(loss)
        finally:
            del engine.step  # the engine's own method again

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
        """Resume from ``path`` after ``check_engine_checkpoint`` (DeepSpeed unpickles with ``weights_only=False``;
        a file naming a global outside the allow-list raises ``UnsafeCheckpointError`` before it is read)."""
        check_engine_checkpoint(path)
        self.accelerator.load_state(str(path))

    def release(self) -> None:
        """Drop the prepared engine/optimizer references so the next stage can prepare anew."""
        self.accelerator.free_memory()

    def close(self) -> None:
        """Release the engine and forget this runtime's Accelerate state, keeping the process group, so that
        this process can ``create`` another runtime with another DeepSpeed config. Accelerate keeps one
        state per process and refuses a second ``Accelerator`` that brings its own DeepSpeed plugin; the
        ZeRO memory bench builds one engine per ZeRO stage, precision and bucket setting in one launch."""
        self.release()
        self.forget()

    def forget(self) -> None:
        """Forget this runtime's Accelerate state, then :meth:`restore_launcher_env`, without touching the engine."""
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        self.restore_launcher_env()

    def restore_launcher_env(self) -> None:
        """Put ``ACCELERATE_USE_DEEPSPEED`` back as the launcher set it (the Accelerator sets it for DeepSpeed), so a
        later plain-engine run in this process is not mistaken for a DeepSpeed launch. Safe after any failure."""
        if self.launcher_deepspeed_env is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = self.launcher_deepspeed_env

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
