"""Training throughput: plain PyTorch vs Accelerate + DeepSpeed ZeRO-2, per model size, and data-wait share.

    python3 bench/throughput.py [--sizes tiny base] [--steps 16] [--base-steps 6] [--repeats 2] [--out docs/results]

Each (size, engine) pair is one short ``launch/train.py`` run of the stage-2 recipe (``recipes/multitask.yaml``,
pcgrad fork) on the cached synthetic dataset, with the same seed, so both engines see the same batches in the
same order. Runs are interleaved (repeat r: every size, plain then deepspeed) so machine load drifts hit both.
From each run's metrics.jsonl, the logging windows after the first (warm-up) give samples/s and
``data_wait_frac`` (the share of window time spent in ``next(loader)``); the figures are medians over windows
and repeats. The ratio is deepspeed / plain samples/s; the paired ratio divides the two engines' medians within
each repeat (median and range over repeats). The last line printed is the headline ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS_DIR, machine_info, markdown_table, run_train  # noqa: E402
from trainer.engine.metrics_log import read_metrics  # noqa: E402

ENGINES = {"plain": ["distributed.engine=plain"],
           "deepspeed_zero2": ["distributed.engine=deepspeed", "distributed.deepspeed_config=ds_configs/zero2.json"]}


def window_figures(records: list[dict[str, Any]], *, skip_first: int = 1) -> tuple[list[float], list[float]]:
    """(samples/s, data-wait share) of every training log window after the first ``skip_first``."""
    windows = [r for r in records if "samples_per_s" in r]
    if len(windows) <= skip_first:
        raise ValueError(f"need more than {skip_first} logging windows, got {len(windows)}; raise --steps")
    kept = windows[skip_first:]
    return [r["samples_per_s"] for r in kept], [r["data_wait_frac"] for r in kept]


def run_one(size: str, engine: str, steps: int, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = args.work / f"{size}_{engine}_r{repeat}"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [
        f"run.dir={run_dir}", f"run.seed={args.seed}", f"model_size={size}", f"precision={args.precision}",
        f"data.batch_size={args.batch_size}", f"data.num_workers={args.num_workers}", "loop.tensorboard=false",
        "loop.progress_bar=false", f"loop.log_every={args.log_every}", f"loop.checkpoint_every={steps}",
        f"stages.finetune.steps={steps}", "stages.finetune.evaluate=false", *ENGINES[engine], *args.override,
    ]
    print(f"[{size} / {engine} / repeat {repeat}] {steps} steps", flush=True)
    run_train("recipes/multitask.yaml", overrides, log_path=run_dir.with_suffix(".log"), threads=args.threads,
              nprocs=args.nprocs, torchrun=True)
    rates, waits = window_figures(read_metrics(run_dir / "metrics.jsonl"))
    return {"size": size, "engine": engine, "repeat": repeat, "samples_per_s": rates, "data_wait_frac": waits}


def summarise(runs: list[dict[str, Any]], sizes: list[str]) -> list[dict[str, Any]]:
    """Per size: median samples/s and data-wait share of each engine over all kept windows of all repeats, their
    ratio, and the paired ratio (each repeat's deepspeed / plain median samples/s) as median, min and max over the
    repeats that ran both engines."""
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"size": size}
        for engine in ENGINES:
            mine = [r for r in runs if r["size"] == size and r["engine"] == engine]
            if not mine:
                raise ValueError(f"no {engine} run of {size}")
            row[f"{engine}_samples_per_s"] = statistics.median([v for r in mine for v in r["samples_per_s"]])
            row[f"{engine}_data_wait"] = statistics.median([v for r in mine for v in r["data_wait_frac"]])
        row["ratio"] = row["deepspeed_zero2_samples_per_s"] / row["plain_samples_per_s"]
        per_repeat = {}
        for r in runs:
            if r["size"] == size:
                per_repeat.setdefault(r["repeat"], {})[r["engine"]] = statistics.median(r["samples_per_s"])
        paired = [e["deepspeed_zero2"] / e["plain"] for e in per_repeat.values() if set(e) == set(ENGINES)]
        row["paired_ratios"] = paired
        row["paired_median"], row["paired_min"], row["paired_max"] = (statistics.median(paired), min(paired),
                                                                       max(paired))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per run (tiny and other sizes)")
    parser.add_argument("--base-steps", type=int, default=6, help="optimizer steps per run of base/large")
    parser.add_argument("--log-every", type=int, default=2, help="logging window in steps (first one is warm-up)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--nprocs", type=int, default=1, help="processes per run (torchrun)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=2, help="data loader workers (the trainer's default)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--override", nargs="*", default=[], help="extra a.b=value overrides for every run")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_throughput")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    runs = []
    for repeat in range(args.repeats):
        for size in args.sizes:
            steps = args.steps if size == "tiny" else args.base_steps
            for engine in ENGINES:
                runs.append(run_one(size, engine, steps, repeat, args))
            write_outputs(runs, args)  # after every size, so a long run leaves results behind


def write_outputs(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Write throughput.{json,md} for the sizes measured with both engines so far; print the table."""
    sizes = [s for s in args.sizes if {r["engine"] for r in runs if r["size"] == s} == set(ENGINES)]
    rows = summarise(runs, sizes)
    repeats = {s: len({r["repeat"] for r in runs if r["size"] == s}) for s in sizes}
    command = "python3 bench/throughput.py " + " ".join(sys.argv[1:])
    table = markdown_table(
        ["model", "plain samples/s", "DeepSpeed ZeRO-2 samples/s", "ratio ZeRO-2 / plain", "paired ratio median",
         "paired ratio range", "data wait (plain)", "data wait (ZeRO-2)"],
        [[r["size"], r["plain_samples_per_s"], r["deepspeed_zero2_samples_per_s"], r["ratio"], r["paired_median"],
          f"{r['paired_min']:.3f}-{r['paired_max']:.3f}", r["plain_data_wait"], r["deepspeed_zero2_data_wait"]]
         for r in rows])
    setup = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(
        {"command": command, "setup": setup, "machine": machine_info(), "runs": runs, "summary": rows,
         "repeats_done": repeats}, indent=1))
    done = ", ".join(f"{s}: {n}" for s, n in repeats.items())
    (args.out / "throughput.md").write_text(f"Command: `{command}` (repeats completed: {done})\n\n{table}\n")
    print(table)
    print("headline: DeepSpeed ZeRO-2 / plain samples/s: "
          + ", ".join(f"{r['size']} {r['ratio']:.2f}" for r in rows))


if __name__ == "__main__":
    main()
