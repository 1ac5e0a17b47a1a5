"""Training of one stage: prepare the engine, resume, iterate, log, evaluate, checkpoint."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from trainer.engine.batch_stream import BatchStream
from trainer.checkpointing.checkpoint import CorruptCheckpointError, TrainState, resumable_checkpoint, save_checkpoint
from trainer.config import StageConfig, TrainConfig
from trainer.engine.faults import FaultInjector
from trainer.engine.metrics_log import MetricsLog
from trainer.runtime import Runtime
from trainer.engine.schedule import warmup_cosine
from trainer.engine.signals import PreemptionWatcher, StopRequested
from trainer.engine.stage_end import PlateauRule, StageEnd
from trainer.engine.stall import DataStallError, StallAlarm
from trainer.tasks import StepResult
from trainer.engine.train_module import TrainingModule


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a non-finite loss."""


class Preempted(RuntimeError):
    """A stop signal arrived; a checkpoint was saved and the job should be requeued."""


def step_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts (stable across processes and runs)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class StageContext:
    """What a stage needs besides its module."""

    cfg: TrainConfig
    name: str
    index: int
    stage: StageConfig
    stage_dir: Path
    runtime: Runtime
    metrics: MetricsLog
    make_epoch: Callable[[int], Any]
    evaluate: Callable[[Any], dict[str, float]] | None
    watcher: PreemptionWatcher
    faults: FaultInjector


def _optimizer(module: TrainingModule, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(cfg.optim.betas))


def _save_recon_image(ctx: StageContext, module: TrainingModule, result: StepResult, step: int) -> None:
    from trainer.viz.recon import render_reconstruction_png

    recon, targets = result.recon  # type: ignore[misc]
    cfg = module.model.config
    path = render_reconstruction_png(ctx.stage_dir / "images" / f"recon_step_{step:06d}.png", recon, targets, cfg.grid,
                                     bev_stride=cfg.bev_stride, title=f"{ctx.name} step {step}")
    ctx.metrics.write({"stage": ctx.name, "step": step, "image": str(path)})


def _resume_point(ckpt_dir: Path, rt: Runtime) -> Path | None:
    """The newest complete checkpoint, chosen by the main process (corrupt ones reported) for every rank."""
    choice: Any = None
    if rt.is_main:
        try:
            choice = resumable_checkpoint(ckpt_dir, log=lambda msg: print(f"warning: {msg}", flush=True))
        except CorruptCheckpointError as err:
            choice = err
    choice = rt.broadcast_object(choice)
    if isinstance(choice, CorruptCheckpointError):
        raise choice
    return choice


def _save_between_steps(ctx: StageContext, save: Callable[[str], None], step: int) -> str:
    """Checkpoint a stop that happened between steps, when that is safe; says what was done.

    With several processes the others may be inside a collective of the next step, so a save (itself
    collective) could hang: the last periodic checkpoint stands instead.
    """
    if ctx.runtime.world_size > 1:
        return "no checkpoint saved (other processes may be mid-step); the last periodic one stands"
    save(f"step_{step:06d}")
    return f"checkpoint saved at step {step}"


def _plateau_rule(stage: StageConfig, state: TrainState) -> PlateauRule | None:
    """The stage's ``until`` rule, continuing from the state a resumed checkpoint saved; None without ``until``."""
    until = stage.until
    if until is None:
        return None
    return PlateauRule(metric=until.metric, mode=until.mode, patience=until.patience, min_delta=until.min_delta,
                       cap=stage.steps, also=tuple(until.also), state=state.extra.get("until"))


def train_stage(ctx: StageContext, module: TrainingModule) -> tuple[TrainState, Any, StageEnd | None]:
    """Train ``module`` for ``ctx.stage.steps`` optimizer steps, or until ``ctx.stage.until``'s plateau; returns
    the final state, the engine and, with ``until``, how the stage ended (None without it)."""
    cfg, stage, rt = ctx.cfg, ctx.stage, ctx.runtime
    lr = stage.lr if stage.lr is not None else cfg.optim.lr
    optimizer = _optimizer(module, cfg, lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(
        s, warmup_steps=cfg.optim.warmup_steps, total_steps=stage.steps, min_ratio=cfg.optim.min_lr_ratio))
    engine, optimizer, scheduler = rt.prepare(module, optimizer, scheduler)
    module.task.attach(module.model, engine, rt)
    ckpt_dir = ctx.stage_dir / "checkpoints"
    state = TrainState()
    resume_from = _resume_point(ckpt_dir, rt) if cfg.run.resume == "auto" else None
    if resume_from is not None:
        rt.load_state(resume_from)
        state = TrainState.from_json(resume_from / "train_state.json")
        ctx.metrics.drop_after(ctx.name, state.step)  # the killed attempt's records past the checkpoint
        if rt.is_main:
            print(f"[{ctx.name}] resumed from {resume_from} at step {state.step}", flush=True)
    stream = BatchStream(ctx.make_epoch, epoch=state.epoch, skip=state.batches_in_epoch)
    rule = _plateau_rule(stage, state)
    end = rule.ended if rule is not None else None  # a resume from the checkpoint saved at a plateau stop
    plateau_every = stage.until.eval_every if stage.until is not None else 0

    def save(name: str) -> None:
        state.epoch, state.batches_in_epoch = stream.position
        save_checkpoint(ckpt_dir, name, state, save_engine=rt.save_state, is_main=rt.is_main, barrier=rt.barrier,
                        keep_last=cfg.loop.keep_last)

    accum = cfg.optim.grad_accum_steps
    bar = tqdm(total=stage.steps, initial=state.step, desc=ctx.name, disable=not (rt.is_main and cfg.loop.progress_bar),
               dynamic_ncols=True)
    nonfinite_in_row, micro, window_start, window_samples = 0, 0, time.perf_counter(), 0
    data_wait = 0.0
    alarm = StallAlarm(timeout_s=cfg.loop.stall_timeout_s, what=f"data.train_shards={cfg.data.train_shards!r}")
    engine.train()
    while state.step < stage.steps and end is None:
        t0 = time.perf_counter()
        try:
            with ctx.watcher.interruptible(), alarm.waiting():
                ctx.faults.maybe_stall(step=state.step)
                batch = next(stream)
        except (StopRequested, DataStallError) as stop:
            bar.close()
            saved = _save_between_steps(ctx, save, state.step)
            if isinstance(stop, DataStallError):
                raise DataStallError(f"stage {ctx.name}: {stop}; {saved}") from None
            raise Preempted(f"stage {ctx.name}: {stop}; {saved}") from None
        data_wait += time.perf_counter() - t0
        batch = batch.to(rt.device, non_blocking=True)
        generator = torch.Generator().manual_seed(step_seed(cfg.run.seed, ctx.index, state.step, micro, rt.rank))
        result = engine(batch, generator)
        loss = ctx.faults.maybe_corrupt_loss(result.loss, step=state.step, rank=rt.rank)
        if rt.any_rank(not bool(torch.isfinite(loss.detach()).all())):
            state.nonfinite_skips += 1
            nonfinite_in_row += 1
            ctx.metrics.write({"stage": ctx.name, "step": state.step, "event": "nonfinite_loss_skipped",
                               "skips_total": state.nonfinite_skips})
            if rt.is_main:
                print(f"[{ctx.name}] step {state.step}: non-finite loss on some rank, step skipped on all ranks "
                      f"({nonfinite_in_row} in a row)", flush=True)
            if nonfinite_in_row >= cfg.loop.max_nonfinite_in_row:
                raise TrainingDiverged(f"stage {ctx.name}: {nonfinite_in_row} consecutive steps had a non-finite "
                                       f"loss (limit loop.max_nonfinite_in_row={cfg.loop.max_nonfinite_in_row})")
            continue
        nonfinite_in_row = 0
        micro += 1
        module.task.backward(rt, result, loss, boundary=micro % accum == 0)
        window_samples += batch.num_scenes
        state.samples_seen += batch.num_scenes
        if micro % accum:
            continue
        grad_norm = rt.clip_and_norm(engine, cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        micro = 0
        bar.update(1)
        ctx.faults.maybe_crash(step=state.step, rank=rt.rank)
        if state.step % cfg.loop.log_every == 0 or state.step == stage.steps:
            elapsed = time.perf_counter() - window_start
            logs = {k: float(rt.all_reduce_sum(v.float().reshape(1)).item()) / rt.world_size
                    for k, v in result.logs.items()}
            logs.update(module.task.stats(module.model))
            record = {"stage": ctx.name, "step": state.step, **logs, "lr": scheduler.get_last_lr()[0],
                      "grad_norm": grad_norm, "samples_per_s": window_samples * rt.world_size / max(elapsed, 1e-9),
                      "data_wait_frac": data_wait / max(elapsed, 1e-9), "epoch": stream.epoch,
                      "skipped_samples": batch.num_skipped}
            ctx.metrics.write(record)
            rt.log({f"{ctx.name}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and v is not None},
                   step=state.step)
            bar.set_postfix(loss=f"{logs['loss/total']:.4f}")
            window_start, window_samples, data_wait = time.perf_counter(), 0, 0.0
        if rt.is_main and result.recon is not None and cfg.pretrain.image_every \
                and state.step % cfg.pretrain.image_every == 0:
            _save_recon_image(ctx, module, result, state.step)
        plateau_due = plateau_every > 0 and state.step % plateau_every == 0
        if ctx.evaluate is not None and state.step < stage.steps and \
                (plateau_due or (cfg.loop.eval_every and state.step % cfg.loop.eval_every == 0)):
            metrics = ctx.evaluate(engine)  # identical on every rank, so is the rule's decision
            engine.train()
            ctx.metrics.write({"stage": ctx.name, "step": state.step, **{f"eval/{k}": v for k, v in metrics.items()}})
            if plateau_due and rule is not None:  # a metric the split lacks (a class without ground truth): NaN
                end = rule.update(state.step, metrics.get(rule.metric, float("nan")),
                                  {name: metrics.get(name, float("nan")) for name in rule.also})
                state.extra["until"] = rule.state_dict()
        preempt = rt.any_rank(ctx.watcher.requested)
        if preempt or end is not None or state.step % cfg.loop.checkpoint_every == 0 or state.step == stage.steps:
            save(f"step_{state.step:06d}")
        if preempt:
            bar.close()
            raise Preempted(f"stage {ctx.name}: stop signal received; checkpoint saved at step {state.step}")
    bar.close()
    if rule is not None and end is None:
        end = rule.end_at_cap(state.step)
    return state, engine, end
