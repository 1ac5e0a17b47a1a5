"""A recipe end to end: run directory, data, then every stage in order, each initialised from the last."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from models.v2x_model import V2XModel
from trainer.checkpointing.checkpoint import latest_checkpoint
from trainer.config import StageConfig, TrainConfig, wandb_init_kwargs
from trainer.config_io import to_yaml
from trainer.data.loader import build_loader
from trainer.eval.table import format_table
from trainer.eval.model_eval import evaluation_conditions, inner_model
from trainer.checkpointing.export import FINAL_WEIGHTS, export_weights, final_weights
from trainer.engine.faults import FaultInjector
from trainer.engine.freezing import apply_freeze, load_initial_weights
from trainer.engine.loop import StageContext, step_seed, train_stage
from trainer.engine.metrics_log import MetricsLog
from trainer.checkpointing.run_dir import CONFIG_FILE, RunDirError, decide_run_dir, resumed_config_changes
from trainer.checkpointing.run_lock import hold_run_lock
from trainer.runtime import Runtime
from trainer.engine.signals import PreemptionWatcher
from trainer.data.synth.dataset import prepare_synthetic, shard_patterns
from trainer.engine.train_module import TrainingModule

FINAL_RECORD = "final.json"


def resolve_data(cfg: TrainConfig, rt: Runtime) -> TrainConfig:
    """``cfg`` with shard lists filled from the synthetic dataset when none are given (rank 0 builds it),
    and a per-rank validation length when several processes evaluate (equal batch counts, no hang)."""
    data = cfg.data
    if not (data.train_shards and data.val_shards):
        if not cfg.synthetic.enabled:
            raise ValueError("data.train_shards / data.val_shards are empty and synthetic.enabled=false")
        root = prepare_synthetic(cfg.synthetic, max_agents=data.max_agents, history=cfg.model.history) \
            if rt.is_main else None
        rt.barrier()
        train, val = shard_patterns(root or cfg.synthetic.root())
        data = replace(data, train_shards=data.train_shards or train, val_shards=data.val_shards or val)
    if data.val_samples is None and rt.world_size > 1:
        data = replace(data, val_samples=max(data.batch_size * rt.world_size, 8 * rt.world_size))
    return replace(cfg, data=data)


def _build_model(cfg: TrainConfig, stage: StageConfig, index: int, prev_weights: Path | None,
                 log: Any) -> tuple[V2XModel, dict[str, list[str]] | None]:
    torch.manual_seed(step_seed(cfg.run.seed, index, "init"))
    model = V2XModel(cfg.model)
    report = None
    source = prev_weights if stage.init_from == "previous" else (Path(stage.init_from) if stage.init_from else None)
    if source is not None:
        report = load_initial_weights(model, source, skip=list(stage.init_skip))
        dropped = sorted({n.split(".")[0] for n in report["discarded"]})
        log(f"initialised from {source}: {len(report['loaded'])} tensors loaded, discarded modules {dropped}, "
            f"{len(report['missing'])} tensors left at their fresh init")
    apply_freeze(model, list(stage.freeze))
    return model, report


def run_pipeline(cfg: TrainConfig) -> dict[str, Any]:
    """Run every stage of ``cfg.stages``; returns {stage name: final record}."""
    rt = Runtime.create(cfg)
    try:
        log = (lambda msg: print(msg, flush=True)) if rt.is_main else (lambda msg: None)
        run_dir = decide_run_dir(cfg.run, is_main=rt.is_main, broadcast=rt.broadcast_object)
        with hold_run_lock(run_dir, is_main=rt.is_main, broadcast=rt.broadcast_object, log=log):
            return _run_in(cfg, rt, run_dir, log)
    finally:
        rt.restore_launcher_env()  # however the run ended


def _run_in(cfg: TrainConfig, rt: Runtime, run_dir: Path, log: Any) -> dict[str, Any]:
    """``run_pipeline`` in its decided run directory, whose lock rank 0 holds."""
    cfg = resolve_data(cfg, rt)
    changes = rt.broadcast_object(resumed_config_changes(run_dir, to_yaml(cfg)) if rt.is_main else None)
    if changes:
        log(f"the config differs from {run_dir / CONFIG_FILE}, which this run directory was started with:\n  "
            + "\n  ".join(changes))
        if not cfg.run.allow_config_change:
            raise RunDirError(f"{len(changes)} config value(s) differ from {run_dir / CONFIG_FILE} (listed above); "
                              "pass run.allow_config_change=true to resume with them, or use another run.dir")
    if rt.is_main:
        (run_dir / CONFIG_FILE).write_text(to_yaml(cfg))
    log(f"run directory: {run_dir}  (processes: {rt.world_size}, device: {rt.device}, "
        f"engine: {cfg.distributed.engine} [{rt.accelerator.distributed_type}], precision: {cfg.precision})")
    rt.attach_trackers(run_dir, tensorboard=cfg.loop.tensorboard, wandb=wandb_init_kwargs(cfg.loop, run_dir),
                       config={"run_dir": str(run_dir), "model_size": cfg.model_size, "precision": cfg.precision,
                               "stages": ",".join(cfg.stages)})
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=rt.is_main)
    watcher = PreemptionWatcher(grace_s=cfg.loop.stop_grace_s).install()
    faults = FaultInjector(cfg.faults, run_dir)
    results: dict[str, Any] = {}
    prev_weights: Path | None = None
    try:
        for index, (name, stage) in enumerate(cfg.stages.items()):
            stage_dir = run_dir / name
            record_path = stage_dir / FINAL_RECORD
            if record_path.exists():
                results[name] = json.loads(record_path.read_text())
                prev_weights = final_weights(stage_dir)
                log(f"[{name}] already complete, skipping")
                continue
            if rt.is_main:
                stage_dir.mkdir(parents=True, exist_ok=True)
            rt.barrier()
            results[name] = _run_stage(cfg, name, index, stage, stage_dir, rt, metrics, watcher, faults,
                                       prev_weights, log)
            prev_weights = stage_dir / FINAL_WEIGHTS
        if rt.is_main and cfg.loop.pictures > 0:
            from trainer.viz.report import write_run_pictures

            pictures = write_run_pictures(run_dir, cfg, num_samples=cfg.loop.pictures)
            log("pictures: " + "  ".join(str(p) for p in pictures))
    finally:
        watcher.uninstall()
        rt.end()
    return results


def _run_stage(cfg: TrainConfig, name: str, index: int, stage: StageConfig, stage_dir: Path, rt: Runtime,
               metrics: MetricsLog, watcher: PreemptionWatcher, faults: FaultInjector, prev_weights: Path | None,
               log: Any) -> dict[str, Any]:
    log(f"== stage {index + 1}/{len(cfg.stages)}: {name} (task {stage.task}, {stage.steps} steps)")
    model, init_report = _build_model(cfg, stage, index, prev_weights, log)
    module = TrainingModule.for_stage(model, stage, cfg)

    train_data = replace(cfg.data, train_shards=stage.train_shards) if stage.train_shards else cfg.data

    def make_epoch(epoch: int):
        return build_loader(train_data, cfg.model.grid, split="train", rank=rt.rank, world_size=rt.world_size,
                            seed=step_seed(cfg.run.seed, index), epoch=epoch)

    def evaluate(engine: Any) -> dict[str, float]:
        batches = build_loader(cfg.data, cfg.model.grid, split="val", rank=rt.rank, world_size=rt.world_size,
                               seed=cfg.run.seed, conditions=evaluation_conditions(cfg))
        return module.task.evaluate(inner_model(engine), batches, cfg, device=rt.device,
                                    gather=rt.gather_objects if rt.world_size > 1 else None,
                                    max_batches=cfg.loop.eval_batches)

    wants_eval = stage.evaluate and module.task.evaluates
    ctx = StageContext(cfg=cfg, name=name, index=index, stage=stage, stage_dir=stage_dir, runtime=rt, metrics=metrics,
                       make_epoch=make_epoch, evaluate=evaluate if wants_eval else None, watcher=watcher, faults=faults)
    state, engine, end = train_stage(ctx, module)
    final_eval: dict[str, float] = {}
    if wants_eval:
        final_eval = evaluate(engine)
        metrics.write({"stage": name, "step": state.step, **{f"eval/{k}": v for k, v in final_eval.items()}})
        log(format_table(final_eval))
    last = latest_checkpoint(stage_dir / "checkpoints")
    record = {"stage": name, "task": stage.task, "steps": state.step, "nonfinite_skips": state.nonfinite_skips,
              "checkpoint": str(last), "weights": str(stage_dir / FINAL_WEIGHTS), "eval": final_eval,
              "init_discarded": sorted({n.split(".")[0] for n in init_report["discarded"]}) if init_report else []}
    if end is not None:  # stage.until: the stop step and reason, also one "stage_end" record of metrics.jsonl
        record["end"] = asdict(end)
        metrics.write({"stage": name, "event": "stage_end", **asdict(end)})
        log(f"[{name}] stage ended at step {end.step}: {end.message}")
    rt.barrier()
    if rt.is_main:
        export_weights(last, stage_dir / FINAL_WEIGHTS, cfg.model)
        tmp = stage_dir / f".{FINAL_RECORD}.tmp"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, stage_dir / FINAL_RECORD)
    rt.barrier()
    del engine  # the last reference outside Accelerate: lets release() free the engine
    rt.release()
    return record
