"""Per-rank bytes of parameters, gradients and optimizer state under no ZeRO and ZeRO 1, 2, 3 (2 processes).

    python3 bench/zero_memory.py [--sizes tiny base] [--precisions fp32 bf16] [--encoder spconv] [--nprocs 2]
                                 [--out docs/results]
    python3 bench/zero_memory.py --render docs/results/zero_memory.json   # rewrite the table, measure nothing

For each model size, one ``torchrun`` launch of ``--nprocs`` gloo (or NCCL) processes builds the real V2X model,
wraps it in a DeepSpeed engine (AdamW) per precision, bucket setting and ZeRO stage 0..3, trains one step (so the
optimizer state exists), runs the forward + backward of a second step and then counts the bytes of every distinct
tensor storage the engine holds on that rank:
  params          the module's parameters as stored on the rank (``param.ds_tensor`` partitions under ZeRO-3;
                  bf16 under ``bf16``)
  master_weights  fp32 parameter copies held by the optimizer (ZeRO's flat fp32 partitions)
  optimizer_state AdamW moments (``optimizer.state``)
  gradients       ``param.grad`` plus every optimizer-held tensor whose attribute path names a gradient
  other_buffers   remaining optimizer-held tensors (communication buckets such as ZeRO-3's ``ipg_buckets``)
The count is taken after the second backward (gradients reduced, optimizer state allocated), so it shows the
steady state, not the transient peak inside backward (where ZeRO-1 still holds full gradients and ZeRO-2 only
its buckets). Bucket settings (see ``BUCKETS``): ``model`` sizes every bucket to the model and partitions every
parameter, which isolates what partitioning saves; ``trainer`` is what ``trainer/runtime/launch_config.py`` fills in for the
``auto`` sizes of ``ds_configs/zero*.json``; ``deepspeed`` is DeepSpeed's own defaults, whose fixed-size buffers
dominate a small model.
Each storage counts once (the first category to claim it, in that order). Ratios are to stage 0 (no ZeRO) of the
same precision and bucket setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS_DIR, bench_env, free_port, machine_info, markdown_table  # noqa: E402

CATEGORIES = ("params", "master_weights", "optimizer_state", "gradients", "other_buffers")
MICRO_BATCH = 1


def _tensors(obj: Any, path: str, depth: int, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """(attribute path, tensor) of every tensor reachable from a DeepSpeed/torch optimizer object."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield path, obj
        return
    if depth == 0 or id(obj) in seen or isinstance(obj, (torch.nn.Module, str, bytes, int, float, bool)) or obj is None:
        return
    seen.add(id(obj))
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{path}[{key if not isinstance(key, torch.Tensor) else 'param'}]", depth - 1,
                                seen)
    elif isinstance(obj, (list, tuple, set)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{path}[{i}]", depth - 1, seen)
    elif type(obj).__module__.startswith(("deepspeed", "torch.optim")) and hasattr(obj, "__dict__"):
        for name, value in vars(obj).items():
            yield from _tensors(value, f"{path}.{name}", depth - 1, seen)


def _category(path: str) -> str:
    """Category of an optimizer-held tensor from its attribute path."""
    lower = path.lower()
    if "grad" in lower:
        return "gradients"
    if "fp32_partitioned_groups" in lower or "single_partition_of_fp32" in lower or "fp32_groups_flat" in lower:
        return "master_weights"
    return "other_buffers"


def count_engine_bytes(engine: Any) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    """Bytes per category of the distinct tensor storages held by a DeepSpeed engine on this rank, and the
    (category, where, bytes) of every optimizer-held storage found by walking its attributes."""
    claimed: dict[int, str] = {}
    totals = dict.fromkeys(CATEGORIES, 0)
    found: list[tuple[str, str, int]] = []

    def claim(tensor: Any, category: str, where: str = "") -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or storage.nbytes() == 0 or key in claimed:
            return
        claimed[key] = category
        totals[category] += storage.nbytes()
        if where:
            found.append((category, where, storage.nbytes()))

    wrapper = engine.optimizer
    base = getattr(wrapper, "optimizer", wrapper)
    for p in engine.module.parameters():
        claim(p, "params")  # under ZeRO-3: empty, or the full tensor of a persistent (unpartitioned) parameter
        if hasattr(p, "ds_tensor"):
            claim(p.ds_tensor, "params")
    for state in base.state.values():
        for value in state.values():
            if hasattr(value, "untyped_storage"):
                claim(value, "optimizer_state")
    for group in base.param_groups:
        for p in group["params"]:
            claim(p, "master_weights")
    for p in engine.module.parameters():
        if p.grad is not None:
            claim(p.grad, "gradients")
    for group in base.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                claim(p.grad, "gradients")
    for path, tensor in _tensors(wrapper, "optimizer", depth=6, seen=set()):
        claim(tensor, _category(path), path)
    return totals, found


BUCKETS = ("model", "trainer", "deepspeed")
PRECISIONS = ("fp32", "bf16")
_BUCKET_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
                "stage3_param_persistence_threshold")


def bucket_sizes(buckets: str, num_params: int) -> dict[str, int]:
    """The ZeRO bucket sizes of one bucket setting (see ``BUCKETS``) for a model of ``num_params`` parameters."""
    if buckets == "model":
        bucket = -(-num_params // 1024) * 1024  # DeepSpeed wants a multiple of its alignment factor
        return {k: bucket for k in _BUCKET_KEYS[:3]} | {"stage3_param_persistence_threshold": 0}
    if buckets == "trainer":
        from trainer.runtime import zero_bucket_sizes

        return zero_bucket_sizes(num_params)
    if buckets == "deepspeed":
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        defaults = DeepSpeedZeroConfig()
        return {"reduce_bucket_size": int(defaults.reduce_bucket_size),
                "allgather_bucket_size": int(defaults.allgather_bucket_size),
                "stage3_prefetch_bucket_size": int(defaults.prefetch_bucket_size),
                "stage3_param_persistence_threshold": int(defaults.param_persistence_threshold)}
    raise ValueError(f"buckets must be one of {BUCKETS}, got {buckets!r}")


def ds_config(stage: int, world: int, *, buckets: str, num_params: int, precision: str = "fp32") -> dict[str, Any]:
    """The repo's ``ds_configs/zero<stage>.json`` ZeRO section (stage 0: none) with the bucket sizes of ``buckets``
    (every ``auto`` size, and under ``model`` every size) and ``precision`` (``fp32`` or ``bf16``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    zero: dict[str, Any] = {"stage": 0}
    if stage:
        zero = json.loads((REPO / "ds_configs" / f"zero{stage}.json").read_text())["zero_optimization"]
        sizes = bucket_sizes(buckets, num_params)
        zero = {k: sizes.get(k, v) if v == "auto" else v for k, v in zero.items()}
        if buckets == "model":
            zero.update({k: v for k, v in sizes.items() if not k.startswith("stage3_") or stage == 3})
    return {"train_micro_batch_size_per_gpu": MICRO_BATCH, "gradient_accumulation_steps": 1,
            "train_batch_size": MICRO_BATCH * world, "steps_per_print": 10**9, "zero_allow_untested_optimizer": True,
            "bf16": {"enabled": precision == "bf16"}, "zero_optimization": zero}


def worker(size: str, encoder: str, precisions: list[str], out: Path) -> None:
    """One rank: measure every ZeRO stage, rank 0 writes all ranks' figures to ``out``."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from models.config import model_config
    from models.parallelize import parameter_count
    from models.v2x_model import V2XModel
    from tests.batch_factory import make_batch
    from trainer.losses import task_losses
    from trainer.runtime import register_zero3_external_parameters

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{rank}") if torch.cuda.is_available() else torch.device("cpu")
    config = replace(model_config(size), encoder=encoder)
    batch = make_batch(config, num_scenes=MICRO_BATCH, agents=2, max_agents=2, seed=rank).to(device)
    num_params = parameter_count(config)
    results = []
    for precision, buckets, stage in [(p, b, s) for p in precisions for b in BUCKETS for s in (0, 1, 2, 3)]:
        torch.manual_seed(0)
        model = V2XModel(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                          config=ds_config(stage, world, buckets=buckets, num_params=num_params,
                                                            precision=precision))
        if stage == 3:  # as the trainer's runtime does: spconv weights are gathered with their encoder
            register_zero3_external_parameters(engine.module)
        for step in range(2):
            loss = task_losses(engine(batch), batch, engine.module.geometry).total
            engine.backward(loss)
            if step == 1:
                counts, found = count_engine_bytes(engine)
            engine.step()
        counts["total"] = sum(counts.values())
        largest = sorted(found, key=lambda f: -f[2])[:6]
        results.append({"precision": precision, "buckets": buckets, "stage": stage, "rank": rank, **counts,
                        "largest_optimizer_held": largest})
        if rank == 0:
            print(f"[{size}] {precision} / {buckets} buckets / ZeRO-{stage}: {counts['total'] / 1024:.1f} KiB",
                  file=sys.stderr, flush=True)
        engine.destroy()
        del engine, model
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        out.write_text(json.dumps({"size": size, "encoder": encoder, "world": world, "num_params": num_params,
                                   "per_rank": [r for rank_results in gathered for r in rank_results]}))
    dist.barrier()


def measure(size: str, encoder: str, precisions: list[str], nprocs: int, work: Path) -> dict[str, Any]:
    """Launch the ``nprocs`` workers for one model size and return rank 0's JSON (every rank's figures)."""
    out = work / f"zero_memory_{size}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nprocs), "--master_port",
           str(free_port()), str(Path(__file__).resolve()), "--worker", size, "--encoder", encoder,
           "--precisions", *precisions, "--worker-out", str(out)]
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
    for stage in (0, 1, 2, 3):
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
    parser.add_argument("--worker-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.encoder, args.precisions, args.worker_out)
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
