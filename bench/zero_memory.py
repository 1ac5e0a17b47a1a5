"""Per-rank bytes of parameters, gradients and optimizer state under no ZeRO and ZeRO 1, 2, 3 (2 processes).

    python3 bench/zero_memory.py [--sizes tiny base] [--precisions fp32 bf16] [--encoder spconv] [--nprocs 2]
                                 [--out docs/results]
    python3 bench/zero_memory.py --render docs/results/zero_memory.json   # rewrite the table, measure nothing

For each model size, one ``torchrun`` launch of ``--nprocs`` gloo (or NCCL) processes builds, per precision, bucket
setting and ZeRO stage 0..3, the engine a training run builds: the training config of the default recipe at that
size (``train_config``) and its DeepSpeed JSON go through the trainer's ``Runtime`` (``Runtime.create``: Accelerate's
DeepSpeed plugin with the JSON's ``auto`` values filled; ``Runtime.prepare``: the engine, with the ZeRO-3
registration of spconv weights). Each engine wraps the real V2X model and an AdamW; it trains one step (so the
optimizer state exists), runs the forward + backward of a second step through ``Runtime.backward`` and counts,
just before that step's optimizer step, the bytes of every distinct tensor storage it holds on that rank
(``bench/engine_bytes.py``: params, master_weights, optimizer_state, gradients, other_buffers).
The count is taken after the second backward (gradients reduced, optimizer state allocated), so it shows the
steady state, not the transient peak inside backward (where ZeRO-1 still holds full gradients and ZeRO-2 only
its buckets). Bucket settings (see ``BUCKETS``), applied to the ZeRO section of ``ds_configs/zero<stage>.json``
(stage 0: the default ``distributed.deepspeed_config`` at stage 0): ``model`` sizes every bucket to the model and
partitions every parameter, which isolates what partitioning saves; ``trainer`` leaves the file's ``auto`` sizes
to the runtime (``trainer/runtime/launch_config.py``), as in a training run; ``deepspeed`` drops them, so
DeepSpeed's own defaults apply, whose fixed-size buffers dominate a small model.
Ratios are to stage 0 (no ZeRO) of the same precision and bucket setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS_DIR, bench_env, free_port, machine_info, markdown_table  # noqa: E402
from bench.engine_bytes import CATEGORIES, count_engine_bytes  # noqa: E402

if TYPE_CHECKING:
    from trainer.config import TrainConfig

MICRO_BATCH = 1
STAGES = (0, 1, 2, 3)
BUCKETS = ("model", "trainer", "deepspeed")
PRECISIONS = ("fp32", "bf16")
_BUCKET_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
                "stage3_param_persistence_threshold")


def base_deepspeed_config(stage: int) -> Path:
    """The repo's DeepSpeed JSON of a run at ZeRO ``stage``: ``ds_configs/zero<stage>.json``; for stage 0 (no ZeRO),
    the default ``distributed.deepspeed_config``."""
    from trainer.config import DistributedConfig

    return REPO / (f"ds_configs/zero{stage}.json" if stage else DistributedConfig().deepspeed_config)


def zero_section(stage: int, buckets: str, num_params: int) -> dict[str, Any]:
    """The ZeRO section of ``base_deepspeed_config(stage)`` at ``stage`` with the bucket sizes of ``buckets``
    (see ``BUCKETS``) for a model of ``num_params`` parameters."""
    if buckets not in BUCKETS:
        raise ValueError(f"buckets must be one of {BUCKETS}, got {buckets!r}")
    zero = json.loads(base_deepspeed_config(stage).read_text())["zero_optimization"] | {"stage": stage}
    if buckets == "trainer":  # the runtime fills the ``auto`` sizes
        return zero
    if buckets == "deepspeed":  # no size given: DeepSpeed's defaults
        return {k: v for k, v in zero.items() if v != "auto"}
    bucket = -(-num_params // 1024) * 1024  # DeepSpeed wants a multiple of its alignment factor
    sizes = {k: bucket for k in _BUCKET_KEYS[:3]} | {"stage3_param_persistence_threshold": 0}
    return zero | {k: v for k, v in sizes.items() if not k.startswith("stage3_") or stage == 3}


def deepspeed_config_path(folder: Path, buckets: str, stage: int) -> Path:
    """Where ``write_deepspeed_configs`` puts the JSON of one bucket setting and stage."""
    return folder / f"{buckets}_zero{stage}.json"


def write_deepspeed_configs(folder: Path, num_params: int) -> None:
    """The DeepSpeed JSON of every bucket setting and stage: the repo's file with ``zero_section``; its other
    ``auto`` values (batch sizes, precision, clipping) are the runtime's to fill, as in a run."""
    folder.mkdir(parents=True, exist_ok=True)
    for buckets in BUCKETS:
        for stage in STAGES:
            ds = json.loads(base_deepspeed_config(stage).read_text())
            ds["zero_optimization"] = zero_section(stage, buckets, num_params)
            deepspeed_config_path(folder, buckets, stage).write_text(json.dumps(ds, indent=1))


def train_config(size: str, encoder: str, precision: str = "fp32", deepspeed_config: Path | None = None) -> TrainConfig:
    """The training config of one measurement: the default recipe at model ``size`` with ``encoder`` and
    ``precision`` (``PRECISIONS``), one micro-batch of ``MICRO_BATCH`` scenes per optimizer step, DeepSpeed with
    ``deepspeed_config`` (default: the recipe's)."""
    from trainer.config_io import load_config

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    overrides = [f"model_size={size}", f"model.encoder={encoder}", f"precision={precision}",
                 f"data.batch_size={MICRO_BATCH}", "optim.grad_accum_steps=1", "distributed.engine=deepspeed"]
    if deepspeed_config is not None:
        overrides.append(f"distributed.deepspeed_config={deepspeed_config}")
    return load_config(None, overrides)


def measure_engine(cfg: TrainConfig) -> dict[str, Any]:
    """One rank's counts (``bench/engine_bytes.py``) of the engine the runtime builds for ``cfg``, taken before the
    optimizer step of the second training step, plus the six largest optimizer-held storages."""
    import torch

    from models.v2x_model import V2XModel
    from tests.batch_factory import make_batch
    from trainer.losses import task_losses
    from trainer.runtime import Runtime

    rt = Runtime.create(cfg)
    batch = make_batch(cfg.model, num_scenes=MICRO_BATCH, agents=2, max_agents=2, seed=rt.rank).to(rt.device)
    torch.manual_seed(0)
    model = V2XModel(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    engine, optimizer, scheduler = rt.prepare(model, optimizer, scheduler)
    counted: list[tuple[dict[str, int], list[tuple[str, str, int]]]] = []
    for step in range(2):  # the first step allocates the optimizer state; the second is counted
        loss = task_losses(engine(batch), batch, engine.module.geometry).total
        rt.backward(loss, before_step=(lambda: counted.append(count_engine_bytes(engine))) if step else None)
    [(counts, found)] = counted
    rank = rt.rank
    del engine, optimizer, scheduler, model
    rt.close()
    return {"rank": rank, **counts, "total": sum(counts.values()),
            "largest_optimizer_held": sorted(found, key=lambda f: -f[2])[:6]}


def worker(size: str, encoder: str, precisions: list[str], configs: Path, out: Path) -> None:
    """One rank: measure every precision, bucket setting and ZeRO stage; rank 0 writes all ranks' figures to
    ``out``. ``configs``: the folder ``write_deepspeed_configs`` filled."""
    from models.parallelize import parameter_count
    from trainer.runtime import process_group

    results: list[dict[str, Any]] = []
    for precision, buckets, stage in [(p, b, s) for p in precisions for b in BUCKETS for s in STAGES]:
        cfg = train_config(size, encoder, precision, deepspeed_config_path(configs, buckets, stage))
        results.append({"precision": precision, "buckets": buckets, "stage": stage, **measure_engine(cfg)})
        if results[-1]["rank"] == 0:
            print(f"[{size}] {precision} / {buckets} buckets / ZeRO-{stage}: {results[-1]['total'] / 1024:.1f} KiB",
                  file=sys.stderr, flush=True)
    gathered = process_group.gather_objects(results)
    if results[-1]["rank"] == 0:
        out.write_text(json.dumps({"size": size, "encoder": encoder, "world": len(gathered),
                                   "num_params": parameter_count(train_config(size, encoder).model),
                                   "per_rank": [r for rank_results in gathered for r in rank_results]}))
    process_group.barrier()
    process_group.leave_process_group()


def measure(size: str, encoder: str, precisions: list[str], nprocs: int, work: Path) -> dict[str, Any]:
    """Launch the ``nprocs`` workers for one model size and return rank 0's JSON (every rank's figures)."""
    from models.parallelize import parameter_count

    out, configs = work / f"zero_memory_{size}.json", work / f"deepspeed_configs_{size}"
    out.unlink(missing_ok=True)
    write_deepspeed_configs(configs, parameter_count(train_config(size, encoder).model))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nprocs), "--master_port",
           str(free_port()), str(Path(__file__).resolve()), "--worker", size, "--encoder", encoder,
           "--precisions", *precisions, "--worker-configs", str(configs), "--worker-out", str(out)]
    log = out.with_suffix(".log")
    with log.open("w") as sink:  # rank 0 logs one line per measured engine: `tail -f` it to follow a long run
        proc = subprocess.run(cmd, cwd=REPO, env=bench_env(threads=1), stdout=sink, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.is_file():
        errors = [line for line in log.read_text().splitlines() if "Error" in line][:10]
        raise RuntimeError(f"zero_memory worker failed ({proc.returncode}), log {log}:\n" + "\n".join(errors))
    return json.loads(out.read_text())


def summarise(result: dict[str, Any], precision: str, buckets: str) -> list[dict[str, Any]]:
    """Per stage: the maximum over ranks of each category (bytes) and its ratio to stage 0."""
    rows = []
    for stage in STAGES:
        mine = [r for r in result["per_rank"]
                if r["stage"] == stage and r["buckets"] == buckets and r["precision"] == precision]
        if not mine:
            raise ValueError(f"no measurement of {precision} / {buckets} buckets / ZeRO stage {stage}")
        rows.append({"stage": stage, **{k: max(r[k] for r in mine) for k in (*CATEGORIES, "total")}})
    base = rows[0]
    for row in rows:
        for key in ("params", "gradients", "total"):
            row[f"{key}_ratio"] = row[key] / base[key] if base[key] else None
        opt = row["optimizer_state"] + row["master_weights"]
        base_opt = base["optimizer_state"] + base["master_weights"]
        row["optimizer_ratio"] = opt / base_opt if base_opt else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny"])
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--encoder", default="spconv", help="model.encoder: spconv (the default model) or pillars")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench_zero_memory")
    parser.add_argument("--render", type=Path, default=None,
                        help="measure nothing: write zero_memory.md into --out from this zero_memory.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-configs", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.encoder, args.precisions, args.worker_configs, args.worker_out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render:
        payload = json.loads(args.render.read_text())
    else:
        if args.nprocs < 2:
            parser.error("--nprocs must be >= 2 (ZeRO partitions across processes)")
        args.work.mkdir(parents=True, exist_ok=True)
        payload = {"command": "python3 bench/zero_memory.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
                   "nprocs": args.nprocs, "sizes": {}}
        for size in args.sizes:
            result = measure(size, args.encoder, args.precisions, args.nprocs, args.work)
            payload["sizes"][size] = {**result, "summary": summaries(result)}
            print(size_table(payload["sizes"][size]), flush=True)
        (args.out / "zero_memory.json").write_text(json.dumps(payload, indent=1))
    sections = [f"Command: `{payload['command']}`", *(size_table(r) for r in payload["sizes"].values())]
    (args.out / "zero_memory.md").write_text("\n\n".join(sections) + "\n")
    for size, result in payload["sizes"].items():
        for key, rows in summaries(result).items():
            print(f"headline {size} {key}: per-rank params+grads+optimizer bytes vs no ZeRO: "
                  + ", ".join(f"ZeRO-{r['stage']} {r['total_ratio']:.2f}" for r in rows[1:]))


def summaries(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """``summarise`` of every (precision, bucket setting) measured, keyed ``precision/buckets``."""
    precisions = list(dict.fromkeys(r["precision"] for r in result["per_rank"]))
    return {f"{p}/{b}": summarise(result, p, b) for p in precisions for b in BUCKETS}


def size_table(result: dict[str, Any]) -> str:
    """One markdown table of a model size: a row per precision, bucket setting and ZeRO stage."""
    kib = lambda b: f"{b / 1024:.1f}"  # noqa: E731
    rows = []
    for key, stages in summaries(result).items():
        precision, buckets = key.split("/")
        rows += [[precision, buckets, r["stage"], kib(r["params"]), kib(r["gradients"]), kib(r["master_weights"]),
                  kib(r["optimizer_state"]), kib(r["other_buffers"]), kib(r["total"]), r["params_ratio"],
                  r["gradients_ratio"], r["optimizer_ratio"], r["total_ratio"]] for r in stages]
    table = markdown_table(
        ["precision", "buckets", "ZeRO", "params KiB", "grads KiB", "master KiB", "optim state KiB", "other KiB",
         "total KiB", "params ratio", "grads ratio", "optim+master ratio", "total ratio"], rows)
    return (f"Model `{result['size']}` ({result['encoder']} encoder, {result['num_params']:,} parameters), "
            f"{result['world']} processes, AdamW; per-rank bytes (max over ranks), ratios to ZeRO 0 of the same "
            f"precision and buckets:\n\n{table}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
