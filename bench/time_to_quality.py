"""Time to quality: manual 4-stage pipeline vs joint-from-scratch vs TurboTrain (without / with balancing).

    python3 bench/time_to_quality.py --steps 240 --eval-every 20 --seeds 0 [--recipes a b c d] [--out docs/results]

Every recipe trains the same model on the same cached synthetic dataset (fixed generator seed, held-out
validation scenarios) for the same total number of optimizer steps (``--steps``), split over its stages:
  (a) manual_4stage   recipes/manual_4stage.yaml        4 stages of steps/4
  (b) joint_scratch   recipes/joint_scratch.yaml        1 stage of steps
  (c) turbotrain_sum  recipes/turbotrain.yaml, balancing.fork.rule=sum   pretrain steps/3, finetune the rest
  (d) turbotrain      recipes/turbotrain.yaml (pcgrad fork)              pretrain steps/3, finetune the rest
Each run evaluates every ``--eval-every`` steps of every non-pretrain stage and at the end of each such stage.
The x axis is *training* wall-clock: the ``time`` of each metrics.jsonl record minus the time spent in
evaluations before it. Reported: for (b), (c), (d), the training time needed to reach (a)'s final AP@0.5 and
EPA (same seed), as a ratio of (a)'s own training time. Writes time_to_quality.{json,md,png} into ``--out``.
The last printed line is the headline ratio of (d).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS_DIR, machine_info, markdown_table, median_and_spread, run_train  # noqa: E402
from trainer.engine.metrics_log import read_metrics  # noqa: E402

METRICS = ("AP@0.5", "EPA", "minADE", "AP@0.3", "MR", "hit_rate")
"""Reported per evaluation. ``hit_rate`` = EPA's numerator without its false-positive penalty: ground-truth objects
detected (score >= threshold, matched) whose minFDE <= the miss threshold, over EPA's N_GT."""


@dataclass(frozen=True)
class Recipe:
    key: str
    name: str
    config: str
    last_stage: str

    def stage_overrides(self, steps: int) -> list[str]:
        """Split a total step budget over this recipe's stages."""
        if self.key == "a":
            quarter = [steps // 4 + (1 if i < steps % 4 else 0) for i in range(4)]
            names = ("s1_detection", "s2_temporal_prediction", "s3_joint", "s4_multi_agent")
            return [f"stages.{n}.steps={s}" for n, s in zip(names, quarter)]
        if self.key == "b":
            return [f"stages.joint.steps={steps}"]
        pretrain = steps // 3
        extra = ["balancing.fork.rule=sum"] if self.key == "c" else []
        return [f"stages.pretrain.steps={pretrain}", f"stages.finetune.steps={steps - pretrain}", *extra]


RECIPES = {r.key: r for r in (
    Recipe(key="a", name="manual_4stage", config="recipes/manual_4stage.yaml", last_stage="s4_multi_agent"),
    Recipe(key="b", name="joint_scratch", config="recipes/joint_scratch.yaml", last_stage="joint"),
    Recipe(key="c", name="turbotrain_sum", config="recipes/turbotrain.yaml", last_stage="finetune"),
    Recipe(key="d", name="turbotrain", config="recipes/turbotrain.yaml", last_stage="finetune"),
)}


def _num(value: Any) -> float:
    return float(value) if value is not None else math.nan


def eval_metrics(record: dict[str, Any]) -> dict[str, float]:
    """``METRICS`` of one evaluation record of metrics.jsonl (NaN where absent)."""
    out = {m: _num(record.get(f"eval/{m}")) for m in METRICS if m != "hit_rate"}
    hits, n_gt = record.get("eval/num_hits"), record.get("eval/num_pred_gt")
    out["hit_rate"] = hits / n_gt if hits is not None and n_gt else math.nan
    return out


def timeline(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every metrics.jsonl record placed on one clock: its stage, its global step (steps of earlier stages
    added), its wall time (continued across resumed processes) and its *training* time (wall time minus the
    evaluations before it, this one included). An evaluation's duration is its record's ``time`` minus the
    previous record's ``time`` (the training log of the same step: run with ``loop.log_every`` dividing
    ``loop.eval_every``).
    """
    if records and "time" not in records[0]:
        raise ValueError("metrics.jsonl records have no 'time' field; this benchmark needs it")
    out, eval_total, offset, stage, last_step, prev_time, clock = [], 0.0, 0, None, 0, 0.0, 0.0
    for raw in records:
        if raw["time"] + clock < prev_time:  # a resumed process counts from 0 again: continue the clock
            clock = prev_time
        rec = {**raw, "time": raw["time"] + clock}
        if rec.get("stage") != stage:
            offset += last_step
            stage, last_step = rec.get("stage"), 0
        is_eval = any(k.startswith("eval/") for k in rec)
        if is_eval:
            eval_total += rec["time"] - prev_time
        step = rec.get("step", 0)
        out.append({"record": rec, "stage": stage, "step": step, "global_step": offset + step,
                    "wall_time_s": rec["time"], "train_time_s": rec["time"] - eval_total, "is_eval": is_eval})
        last_step = max(last_step, step)
        prev_time = rec["time"]
    return out


def quality_curve(records: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Evaluation points of one run, against training wall-clock (evaluation time removed) and global step."""
    return [{"stage": e["stage"], "global_step": e["global_step"], "train_time_s": e["train_time_s"],
             "wall_time_s": e["wall_time_s"], **eval_metrics(e["record"])}
            for e in timeline(records) if e["is_eval"]]


def stage_costs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training time and optimizer steps of each stage of one run, in order.

    A stage's time runs from the previous stage's last record to its own last record on the training clock
    (evaluations removed), so it includes the switch into it (building the model, loading weights); the
    first stage's includes process start-up. Resolution: one ``loop.log_every``.
    """
    costs, start = [], 0.0
    for stage, group in itertools.groupby(timeline(records), key=lambda entry: entry["stage"]):
        entries = list(group)
        steps, end = max(e["step"] for e in entries), entries[-1]["train_time_s"]
        costs.append({"stage": stage, "steps": steps, "train_time_s": end - start,
                      "s_per_step": (end - start) / steps if steps else math.nan})
        start = end
    return costs


def first_reaching(curve: list[dict[str, float]], targets: dict[str, float]) -> dict[str, float] | None:
    """The first evaluation point meeting every target (metric >= target), or None."""
    for point in curve:
        if all(point[m] >= t for m, t in targets.items()):
            return point
    return None


def run_one(recipe: Recipe, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    run_dir = work / f"{recipe.name}_seed{seed}"
    done = (run_dir / recipe.last_stage / "final.json").is_file()
    if not done or args.rerun:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
        overrides = [
            f"run.dir={run_dir}", f"run.seed={seed}", f"model_size={args.model_size}", f"precision={args.precision}",
            f"data.batch_size={args.batch_size}", "data.num_workers=0", "loop.tensorboard=false",
            "loop.progress_bar=false", f"loop.log_every={args.eval_every}", f"loop.eval_every={args.eval_every}",
            f"loop.checkpoint_every={args.steps}", f"synthetic.seed={args.data_seed}",
            f"synthetic.train_scenarios={args.train_scenarios}", f"synthetic.val_scenarios={args.val_scenarios}",
            *recipe.stage_overrides(args.steps), *args.override,
        ]
        print(f"[{recipe.key}] {recipe.name} seed {seed}: training ({args.steps} steps) -> {run_dir}", flush=True)
        resumes = run_train(recipe.config, overrides, log_path=run_dir.with_suffix(".log"), threads=args.threads)
        (run_dir / "bench_resumes.txt").write_text(f"{resumes}\n")
    records = read_metrics(run_dir / "metrics.jsonl")
    curve = quality_curve(records)
    if not curve:
        raise RuntimeError(f"{run_dir}: no evaluation records")
    return {"recipe": recipe.key, "name": recipe.name, "seed": seed, "run_dir": str(run_dir), "curve": curve,
            "final": {m: curve[-1][m] for m in METRICS}, "train_time_s": curve[-1]["train_time_s"],
            "wall_time_s": curve[-1]["wall_time_s"], "stages": stage_costs(records),
            "resumes": int((run_dir / "bench_resumes.txt").read_text()) if (run_dir / "bench_resumes.txt").is_file() else 0}


def compare(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run of (b)/(c)/(d): time to reach the same seed's (a) final AP@0.5 and EPA, as a ratio of (a)'s time."""
    manual = {r["seed"]: r for r in runs if r["recipe"] == "a"}
    rows = []
    for run in runs:
        ref = manual.get(run["seed"])
        if ref is None or run["recipe"] == "a":
            continue
        row = {"recipe": run["recipe"], "seed": run["seed"], "target": {m: ref["final"][m] for m in ("AP@0.5", "EPA")}}
        for label, keys in (("both", ("AP@0.5", "EPA")), ("AP@0.5", ("AP@0.5",)), ("EPA", ("EPA",))):
            point = first_reaching(run["curve"], {m: ref["final"][m] for m in keys})
            row[f"time_{label}_s"] = None if point is None else point["train_time_s"]
            row[f"ratio_{label}"] = None if point is None else point["train_time_s"] / ref["train_time_s"]
            row[f"step_ratio_{label}"] = None if point is None else point["global_step"] / ref["curve"][-1]["global_step"]
        row["final_at_least_manual"] = all(run["final"][m] >= ref["final"][m] for m in ("AP@0.5", "EPA"))
        rows.append(row)
    return rows


def _spread(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    med, lo, hi = median_and_spread(values)
    return f"{med:.{digits}f}" if len(values) == 1 or lo == hi else f"{med:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def summary_markdown(runs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    finals = []
    for key, recipe in RECIPES.items():
        mine = [r for r in runs if r["recipe"] == key]
        if mine:
            finals.append([f"({key}) {recipe.name}", len(mine), *[_spread([r["final"][m] for r in mine]) for m in METRICS],
                           _spread([r["train_time_s"] for r in mine])])
    table1 = markdown_table(["recipe", "seeds", "final AP@0.5", "final EPA", "final minADE (m)", "final AP@0.3",
                             "final MR", "final hit rate", "train time (s)"],
                            finals)
    ratios = []
    for key in ("b", "c", "d"):
        mine = [r for r in rows if r["recipe"] == key]
        if not mine:
            continue
        reached = sum(r["ratio_both"] is not None for r in mine)
        targets = ", ".join(f"AP@0.5 {r['target']['AP@0.5']:.4f} / EPA {r['target']['EPA']:.4f}" for r in mine)
        ratios.append([f"({key}) {RECIPES[key].name}", targets, f"{reached}/{len(mine)}",
                       _spread([r["ratio_both"] for r in mine]), _spread([r["step_ratio_both"] for r in mine]),
                       _spread([r["ratio_AP@0.5"] for r in mine]), _spread([r["ratio_EPA"] for r in mine]),
                       f"{sum(r['final_at_least_manual'] for r in mine)}/{len(mine)}"])
    table2 = markdown_table(["recipe", "target = (a) final", "reached", "time ratio (both)", "step ratio (both)",
                             "time ratio (AP@0.5)", "time ratio (EPA)", "final AP@0.5 and EPA >= (a)"], ratios)
    return (f"Final quality (median [min, max] over seeds):\n\n{table1}\n\nTraining time to reach (a)'s final "
            f"quality, as a ratio of (a)'s training time, and the optimizer steps needed as a ratio of (a)'s steps "
            f"(load-independent; median [min, max] over the seeds that reached it; '-' = never reached):"
            f"\n\n{table2}\n\nWhere the training time goes: each stage's optimizer steps and training time "
            f"(including the switch into it; median [min, max] over seeds):\n\n{stage_table(runs)}\n")


def stage_table(runs: list[dict[str, Any]]) -> str:
    """Markdown table of every recipe's per-stage steps, training time and seconds per step."""
    rows = []
    for key, recipe in RECIPES.items():
        mine = [r for r in runs if r["recipe"] == key]
        for i, stage in enumerate(mine[0]["stages"] if mine else []):
            same = [r["stages"][i] for r in mine if len(r["stages"]) > i and r["stages"][i]["stage"] == stage["stage"]]
            rows.append([f"({key}) {recipe.name}", stage["stage"], _spread([c["steps"] for c in same], 0),
                         _spread([c["train_time_s"] for c in same], 1), _spread([c["s_per_step"] for c in same], 3)])
    return markdown_table(["recipe", "stage", "steps", "train time (s)", "s per step"], rows)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"a": "tab:gray", "b": "tab:orange", "c": "tab:blue", "d": "tab:green"}
    fig, axes = plt.subplots(2, len(METRICS) // 2, figsize=(5 * len(METRICS) // 2, 8.4))
    axes = axes.ravel()
    for ax, metric in zip(axes, METRICS):
        for run in runs:
            label = f"({run['recipe']}) {run['name']}" if run["seed"] == min(r["seed"] for r in runs) else None
            xs = [p["train_time_s"] for p in run["curve"]]
            ax.plot(xs, [p[metric] for p in run["curve"]], marker=".", color=colors[run["recipe"]], label=label)
        for run in runs:
            if run["recipe"] == "a" and metric in ("AP@0.5", "EPA"):
                ax.axhline(run["final"][metric], color=colors["a"], linestyle=":", linewidth=0.8)
        ax.set_xlabel("training wall-clock (s, evaluation excluded)")
        ax.set_title(metric + (" (lower is better)" if metric in ("minADE", "MR") else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=240, help="total optimizer steps per recipe (same for all)")
    parser.add_argument("--eval-every", type=int, default=20, help="evaluate every N steps of each evaluated stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (run.seed)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--model-size", default="tiny")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--data-seed", type=int, default=0, help="synthetic generator seed (val uses seed + 1000)")
    parser.add_argument("--train-scenarios", type=int, default=6)
    parser.add_argument("--val-scenarios", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each training run")
    parser.add_argument("--override", nargs="*", default=[], help="extra a.b=value overrides for every run")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_time_to_quality")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--rerun", action="store_true", help="retrain runs whose final.json already exists")
    parser.add_argument("--only-existing", action="store_true",
                        help="train nothing: report the (recipe, seed) runs already finished under --work")
    args = parser.parse_args()
    if args.steps < 8 or args.eval_every < 1:
        parser.error("--steps must be >= 8 and --eval-every >= 1")
    if args.only_existing and args.rerun:
        parser.error("--only-existing and --rerun exclude each other")
    pairs = [(RECIPES[key], seed) for seed in args.seeds for key in args.recipes]
    if args.only_existing:
        pairs = [(r, seed) for r, seed in pairs
                 if (args.work / f"{r.name}_seed{seed}" / r.last_stage / "final.json").is_file()]
        if not pairs:
            parser.error(f"no finished runs under {args.work}")
    runs = [run_one(recipe, seed, args, args.work) for recipe, seed in pairs]
    rows = compare(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    setup = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    command = "python3 bench/time_to_quality.py " + " ".join(sys.argv[1:])
    payload = {"command": command, "setup": setup, "machine": machine_info(), "runs": runs, "comparison": rows}
    (args.out / "time_to_quality.json").write_text(json.dumps(payload, indent=1))
    table = summary_markdown(runs, rows)
    (args.out / "time_to_quality.md").write_text(f"Command: `{command}`\n\n{table}")
    plot(runs, args.out / "time_to_quality.png")
    print(table)
    headline = [r for r in rows if r["recipe"] == "d"]
    if headline:
        print(f"headline: (d) turbotrain reaches (a)'s final AP@0.5 and EPA in "
              f"{_spread([r['ratio_both'] for r in headline])} of (a)'s training time "
              f"({sum(r['ratio_both'] is not None for r in headline)}/{len(headline)} seeds reached)")


if __name__ == "__main__":
    main()
