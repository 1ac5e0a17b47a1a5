"""Time to quality: the manual 4-stage pipeline against joint training from scratch and TurboTrain without / with
balancing, every stage ending on a plateau of its validation metric (``stages.<name>.until``).

    python bench/time_to_quality.py --seeds 0 1 2                  # train what is missing, then compile
    python bench/time_to_quality.py --seeds 0 1 2 --hours 2        # stop (checkpointed) after 2 h; run again to go on
    python bench/time_to_quality.py --compile-only                 # tables and plots from the recorded runs
    python bench/time_to_quality.py --seeds 0 1 2 --label-shares 0.1 0.25   # also label efficiency, (b) and (d)

Recipes, at the CPU scale of the default job (the ``small`` model, its synthetic data, batch 2, one learning rate):
  (a) manual_4stage   recipes/manual_4stage.yaml   detection -> temporal + prediction -> joint -> multi-agent
  (b) joint_scratch   recipes/joint_scratch.yaml   one joint stage from scratch
  (c) turbotrain_sum  recipes/turbotrain.yaml      pretraining, then fine-tuning with plain gradient summing
  (d) turbotrain      recipes/turbotrain.yaml      pretraining, then fine-tuning with the PCGrad fork
Every stage of every recipe ends by the same rule, which stands in for the person who watches the curves:
evaluate every ``--eval-every`` steps and stop after ``--patience`` evaluations in a row in which none of the
stage's watched metrics (``STAGE_METRICS``) improved by ``--min-delta``; ``--cap`` (``--pretrain-cap``) steps at
most. Runs go ``--lanes`` at a time, each with cores / lanes threads (or ``--threads``). ``--hours`` stops the
runs in flight with a checkpoint (the trainer's exact resume takes them up on the next call).

Label efficiency (``--label-shares``): (b) and (d) fine-tune on a share of the labelled training scenarios (the
first ceil(share x N) of the built-in dataset's N, itself a dataset: scenario k depends only on the generator
seed and k), with (d) starting from the pretraining of its 100% run of the same seed, which saw every scenario,
and counting that pretraining's time. Their records are ``<name>_l<share>_s<seed>.json``.

A finished run leaves ``<out>/time_to_quality/runs/<name>_s<seed>.json`` (``bench.ttq_records.run_record``), and
the tables (``<out>/time_to_quality.{json,md,png}``, ``time_to_quality_conflict.png``) are compiled from those
records alone. The last printed line is the headline: (d)'s training time to reach (a)'s final AP@0.5 and EPA,
as a ratio of (a)'s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import EXIT_PREEMPTED, REPO, RESULTS_DIR, bench_env, machine_info, train_command  # noqa: E402
from bench.ttq_report import write_report  # noqa: E402
from bench.ttq_records import run_record  # noqa: E402
from trainer.checkpointing.checkpoint_io import run_stage_names  # noqa: E402
from trainer.engine.metrics_log import read_metrics  # noqa: E402

JOINT = ("EPA", "AP@0.5")
STAGE_METRICS: dict[str, tuple[str, ...]] = {
    "pretrain": ("recon",), "s1_detection": ("AP@0.5",), "s2_temporal_prediction": ("minADE",),
    "s3_joint": JOINT, "s4_multi_agent": JOINT, "joint": JOINT, "finetune": JOINT}
"""The metrics each stage watches (the first is ``until.metric``, the rest ``until.also``)."""


@dataclass(frozen=True)
class Recipe:
    key: str
    name: str
    config: str
    stages: tuple[str, ...]
    extra: tuple[str, ...] = ()


RECIPES = {r.key: r for r in (
    Recipe("a", "manual_4stage", "recipes/manual_4stage.yaml",
           ("s1_detection", "s2_temporal_prediction", "s3_joint", "s4_multi_agent")),
    Recipe("b", "joint_scratch", "recipes/joint_scratch.yaml", ("joint",)),
    Recipe("c", "turbotrain_sum", "recipes/turbotrain.yaml", ("pretrain", "finetune"), ("balancing.fork.rule=sum",)),
    Recipe("d", "turbotrain", "recipes/turbotrain.yaml", ("pretrain", "finetune")),
)}


def overrides(recipe: Recipe, seed: int, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The ``launch/train.py`` overrides of one run: the common scale, then each stage's cap and plateau rule."""
    common = [f"run.dir={run_dir}", f"run.seed={seed}", f"model_size={args.model_size}", "precision=fp32",
              f"optim.lr={args.lr}", "optim.warmup_steps=10", f"data.batch_size={args.batch_size}",
              "data.num_workers=1", "loop.tensorboard=false", "loop.progress_bar=false", "loop.pictures=0",
              f"loop.log_every={args.log_every}", f"loop.eval_every={args.eval_every}",
              f"loop.checkpoint_every={args.eval_every}", "loop.keep_last=1"]
    stages = []
    for name in recipe.stages:
        metric, *also = STAGE_METRICS[name]
        delta = args.recon_min_delta if metric == "recon" else args.min_delta
        stages += [f"stages.{name}.steps={args.pretrain_cap if name == 'pretrain' else args.cap}",
                   f"stages.{name}.until.metric={metric}", f"stages.{name}.until.also=[{','.join(also)}]",
                   f"stages.{name}.until.eval_every={args.eval_every}", f"stages.{name}.until.patience={args.patience}",
                   f"stages.{name}.until.min_delta={delta}"]
    return [*common, *stages, *recipe.extra, *args.override]


def run_piece(config: str, args_list: list[str], *, log_path: Path, threads: int, deadline: float | None) -> bool:
    """Train (or resume) one run until it finishes (True) or ``deadline`` (epoch seconds) passes, when it is sent
    SIGTERM and stops at the next step boundary with a checkpoint (False; one still starting up dies of the
    signal, which loses no checkpoint either)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stopped = False
    with log_path.open("a") as log:
        proc = subprocess.Popen(train_command(config, args_list), cwd=REPO, env=bench_env(threads=threads),
                                stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if deadline is not None and time.time() > deadline:
                proc.send_signal(signal.SIGTERM)
                stopped = True
                proc.wait()
                break
            time.sleep(2.0)
    if proc.returncode == 0:
        return True
    if proc.returncode == EXIT_PREEMPTED or (stopped and proc.returncode == -signal.SIGTERM):
        return False
    tail = "\n".join(log_path.read_text().splitlines()[-30:])
    raise RuntimeError(f"training exited with {proc.returncode} (log: {log_path}):\n{tail}")


def run_name(recipe: Recipe, seed: int, share: float = 1.0) -> str:
    return f"{recipe.name}_s{seed}" if share == 1.0 else f"{recipe.name}_l{share:g}_s{seed}"


def record_path(out: Path, name: str) -> Path:
    return out / "time_to_quality" / "runs" / f"{name}.json"


def log_path(run_dir: Path) -> Path:
    """The console log of a run, beside its folder (``<name>.log``; the name's dots are not a suffix)."""
    return run_dir.with_name(run_dir.name + ".log")


def labelled_shards(share: float, args: argparse.Namespace) -> str:
    """The training shards of the first ceil(share x N) scenarios of the built-in dataset (generated once)."""
    from trainer.config_io import load_config
    from trainer.data.synth.dataset import prepare_synthetic, shard_patterns

    cfg = load_config(RECIPES["d"].config, [f"model_size={args.model_size}", *args.override])
    subset = replace(cfg.synthetic, train_scenarios=math.ceil(share * cfg.synthetic.train_scenarios))
    root = prepare_synthetic(subset, max_agents=cfg.data.max_agents, history=cfg.model.history)
    return shard_patterns(root)[0]


def label_overrides(recipe: Recipe, seed: int, share: float, args: argparse.Namespace) -> tuple[str, list[str]]:
    """(recipe file, extra overrides) of a label-efficiency run: its supervised stage on the labelled share; (d)
    as its fine-tuning stage alone, from its 100% run's pretraining."""
    shards = labelled_shards(share, args)
    if recipe.key == "b":
        return recipe.config, [f"stages.joint.train_shards={shards}"]
    pretrained = args.work / run_name(recipe, seed) / "pretrain" / "final.safetensors"
    if not pretrained.is_file():
        raise FileNotFoundError(f"{pretrained}: run {run_name(recipe, seed)} first (its pretraining is reused)")
    return "recipes/multitask.yaml", [f"stages.finetune.train_shards={shards}",
                                      f"stages.finetune.init_from={pretrained}"]


def run_one(recipe: Recipe, seed: int, share: float, args: argparse.Namespace, deadline: float | None) -> str:
    """Train one (recipe, seed, label share) to its automatic end and write its record; 'done', 'recorded' or
    'paused'."""
    name = run_name(recipe, seed, share)
    target = record_path(args.out, name)
    if target.is_file() and not args.rerun:
        return "recorded"
    run_dir = args.work / name
    config, extra = (recipe.config, []) if share == 1.0 else label_overrides(recipe, seed, share, args)
    stage_recipe = recipe if share == 1.0 or recipe.key == "b" else Recipe(recipe.key, recipe.name, config, ("finetune",))
    run_args = [*overrides(stage_recipe, seed, run_dir, args), *extra]
    print(f"[{recipe.key}] {name} -> {run_dir}", flush=True)
    if not run_piece(config, run_args, log_path=log_path(run_dir), threads=args.threads,
                     deadline=deadline):
        print(f"[{recipe.key}] {name}: paused at the deadline (checkpointed)", flush=True)
        return "paused"
    finals = [json.loads((run_dir / stage / "final.json").read_text()) for stage in run_stage_names(run_dir)]
    setup = {"command": "python bench/time_to_quality.py " + " ".join(sys.argv[1:]), "config": config,
             "overrides": run_args, "machine": machine_info()}
    record = run_record(recipe=recipe.key, name=recipe.name, seed=seed, records=read_metrics(run_dir / "metrics.jsonl"),
                        finals=finals, setup=setup)
    record["label_share"] = share
    if config != recipe.config:  # (d) on a label share: its pretraining (and its time) is the 100% run's
        full = json.loads(record_path(args.out, run_name(recipe, seed)).read_text())
        pretrain = [s for s in full["stages"] if s["stage"] == "pretrain"]
        record["stages"] = pretrain + record["stages"]
        record["steps"] += sum(s["steps"] for s in pretrain)
        record["train_time_s"] += sum(s["train_time_s"] for s in pretrain)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, target)
    print(f"[{recipe.key}] {name}: done, {record['steps']} steps, "
          f"{record['train_time_s']:.0f} s of training -> {target}", flush=True)
    return "done"


def load_records(out: Path) -> list[dict[str, Any]]:
    """Every recorded run under ``out``, ordered by recipe then seed."""
    folder = out / "time_to_quality" / "runs"
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return sorted(records, key=lambda r: (-r.get("label_share", 1.0), r["recipe"], r["seed"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (run.seed)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--model-size", default="small")
    parser.add_argument("--lr", type=float, default=4e-3, help="peak learning rate of every stage (the default job's)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=200, help="steps between plateau evaluations")
    parser.add_argument("--log-every", type=int, default=50, help="loop.log_every (must divide --eval-every)")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--min-delta", type=float, default=0.005, help="improvement that counts (AP, EPA, minADE)")
    parser.add_argument("--recon-min-delta", type=float, default=0.005, help="the same for pretraining's recon")
    parser.add_argument("--cap", type=int, default=4000, help="steps cap of every supervised stage")
    parser.add_argument("--pretrain-cap", type=int, default=2000, help="steps cap of a pretraining stage")
    parser.add_argument("--label-shares", type=float, nargs="*", default=[],
                        help="also fine-tune (b) and (d) on these shares (0, 1) of the labelled scenarios")
    parser.add_argument("--lanes", type=int, default=2, help="runs side by side")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per run (default: cores / lanes; set it when another bench shares the cores)")
    parser.add_argument("--hours", type=float, default=None, help="stop the runs in flight after this long")
    parser.add_argument("--override", nargs="*", default=[], help="extra a.b=value overrides for every run")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_time_to_quality")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--rerun", action="store_true", help="train again runs that already have a record")
    parser.add_argument("--compile-only", action="store_true", help="train nothing: compile the recorded runs")
    args = parser.parse_args()
    if args.eval_every < 1 or args.eval_every % args.log_every or args.lanes < 1:
        parser.error("--eval-every must be a positive multiple of --log-every, and --lanes >= 1")
    if min(args.cap, args.pretrain_cap) < args.eval_every:
        parser.error("--cap and --pretrain-cap must be at least --eval-every")
    if any(not 0 < share < 1 for share in args.label_shares):
        parser.error("--label-shares must lie in (0, 1)")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.lanes)
    if not args.compile_only:
        deadline = time.time() + 3600 * args.hours if args.hours else None
        jobs = [(RECIPES[key], seed, 1.0) for seed in args.seeds for key in args.recipes]
        with ThreadPoolExecutor(max_workers=args.lanes) as pool:
            states = list(pool.map(lambda job: run_one(*job, args, deadline), jobs))
            labels = [(RECIPES[key], seed, share) for share in args.label_shares for seed in args.seeds for key in "bd"
                      if key in args.recipes]
            states += list(pool.map(lambda job: run_one(*job, args, deadline), labels))
        paused = [run_name(*job) for job, state in zip(jobs + labels, states) if state == "paused"]
        if paused:
            print(f"paused (run the same command again to go on): {', '.join(paused)}", flush=True)
    records = load_records(args.out)
    if not records:
        where = args.out / "time_to_quality" / "runs"
        if args.compile_only:
            parser.error(f"no recorded runs under {where}")
        print(f"no run has finished yet: nothing to compile under {where}", flush=True)
        return
    print(write_report(records, args.out, command="python bench/time_to_quality.py " + " ".join(sys.argv[1:])))


if __name__ == "__main__":
    main()
