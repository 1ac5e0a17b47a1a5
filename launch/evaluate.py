#!/usr/bin/env python
"""Evaluate a checkpoint: detection AP@0.3/0.5/0.7 (per class and mean), minADE, minFDE, MR, EPA.

  python launch/evaluate.py --checkpoint runs/r                          # the run's last stage, its val shards
  python launch/evaluate.py --checkpoint runs/r --stage finetune --out metrics.json
  python launch/evaluate.py --checkpoint weights.safetensors --data 'shards/val-{000000..000003}.tar'
  torchrun --nproc_per_node 2 launch/evaluate.py --checkpoint runs/r data.val_samples=400
  python launch/evaluate.py --checkpoint runs/r eval.fusion=late eval.pose_noise.xy_std_m=0.4

--checkpoint is exported weights (*.safetensors, or a legacy *.pt), an engine checkpoint folder (any ZeRO stage), a stage folder
(its latest checkpoint) or a run directory (with --stage; default its last stage). The model config
comes from the exported file or the run's ``config.yaml``; the rest (data, eval settings) from --config,
else the run's ``config.yaml``, else the default recipe; ``a.b=value`` overrides apply on top.

Under torchrun / accelerate launch / deepspeed (WORLD_SIZE > 1) every process evaluates its share of the
shards (gloo on the CPU, NCCL on GPUs) and the records are gathered at the end (the metrics' records, then
the messages'); ``data.val_samples`` must then
be set so that every process reads the same number of batches (repeated samples count once).
Cooperation settings (docs/METRICS.md, *Cooperation*): ``eval.fusion`` (``intermediate``, ``none``, ``late``),
``eval.comm.*`` (message precision, sparsification), ``eval.pose_noise.*`` and ``eval.latency.*`` (applied by the
loader, seeded per sample); the metrics include the collaborators' message bytes (``comm/*``).
Rank 0 prints the table and writes --out (JSON; NaN metrics are written as null; ``conditions``: the cooperation
settings; ``communication``: every sample's key and the bytes each of its collaborators sent).
Nothing is unpickled without ``weights_only=True`` (engine checkpoints are checked against an allow-list
first, see ``trainer.checkpointing.safe_load``). Shard URLs that are not local files (``pipe:``, ``https:``,
...: webdataset runs a command for them) are refused unless --allow-command-urls is given, and always when
they come from a run's saved ``config.yaml`` (give them with --data instead).
Exit codes: 0 done, 2 bad input (checkpoint, config, data, an unsafe file or URL, a latency the shards hold
no frames for).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

EXIT_BAD_INPUT = 2
GATHER_TIMEOUT = timedelta(minutes=30)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="exported .safetensors / .pt, engine checkpoint folder, stage folder or run directory")
    parser.add_argument("--stage", default=None, help="stage of a run directory (default: its last stage)")
    parser.add_argument("--data", default=None, help="validation shard pattern (default: the config's val shards)")
    parser.add_argument("--config", type=Path, default=None, help="recipe / run config.yaml (default: the run's)")
    parser.add_argument("--out", type=Path, default=None, help="write the metrics JSON here (rank 0)")
    parser.add_argument("--max-batches", type=int, default=0, help="stop after this many batches per process (0: all)")
    parser.add_argument("--allow-command-urls", action="store_true",
                        help="open shard URLs that run a command (pipe:, https:, ...) given by --data, an override "
                             "or --config; never those of a run's saved config.yaml")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides a.b=value (e.g. data.val_samples=64)")
    args = parser.parse_args(argv)
    if args.max_batches < 0:
        parser.error(f"--max-batches must be >= 0, got {args.max_batches}")
    return args


def init_distributed() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; joins the process group when WORLD_SIZE > 1."""
    from trainer.runtime.process_group import join_launcher_group

    return join_launcher_group(GATHER_TIMEOUT)


@dataclass(frozen=True)
class RankFailed:
    """What a failing rank sends into the metrics gather so that its peers stop waiting for it."""

    rank: int
    message: str
    bad_input: bool


class FailureAwareGather:
    """``gather_objects`` that raises on every rank when some rank sent a :class:`RankFailed`."""

    def __init__(self) -> None:
        self.entered = False

    def __call__(self, obj: object) -> list[object]:
        from trainer.checkpointing.checkpoint_io import CheckpointError
        from trainer.runtime.process_group import gather_objects

        self.entered = True
        per_rank = gather_objects(obj)
        failed = [entry for entry in per_rank if isinstance(entry, RankFailed)]
        if failed:
            first = failed[0]
            error = CheckpointError if all(f.bad_input for f in failed) else RuntimeError
            raise error(f"rank {first.rank} failed: {first.message}")
        return per_rank


def json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """Non-finite values (e.g. minADE with no matched object) become None (JSON null)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


def evaluated_conditions(cfg: Any) -> dict[str, Any]:
    """The cooperation settings an evaluation ran under (``eval.fusion``, ``comm``, ``pose_noise``, ``latency``)."""
    return {"fusion": cfg.eval.fusion, **{name: dataclasses.asdict(getattr(cfg.eval, name))
                                          for name in ("comm", "pose_noise", "latency")}}


def evaluate(args: argparse.Namespace, *, rank: int, world_size: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Load, check and evaluate: (what was evaluated, metrics), identical on every rank.

    Raises ``trainer.checkpointing.checkpoint_io.CheckpointError`` for bad input.
    """
    from trainer.checkpointing.checkpoint_io import CheckpointError, inference_device, load_for_inference
    from trainer.data.data_errors import FATAL_DATA_ERRORS, fatal_data_message
    from trainer.data.loader import NoReadableSampleError, build_loader
    from trainer.data.url_policy import allow_command_urls, check_shard_spec, command_urls_permitted
    from trainer.eval.model_eval import evaluation_conditions, run_evaluation

    setup = load_for_inference(args.checkpoint, stage=args.stage, config=args.config, overrides=args.overrides)
    cfg = setup.cfg
    if args.data is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_shards=args.data))
    if not cfg.data.val_shards:
        raise CheckpointError("no validation data: pass --data or set data.val_shards")
    given = [*args.overrides, *([f"data.val_shards={args.data}"] if args.data is not None else [])]
    permitted = command_urls_permitted("data.val_shards", opted_in=args.allow_command_urls,
                                       config_file=setup.config_file, overrides=given)
    try:
        check_shard_spec(cfg.data.val_shards, what="data.val_shards", allow_commands=permitted)
    except ValueError as err:  # CommandURLError, or a spec naming no shard
        raise CheckpointError(str(err)) from err
    allow_command_urls(permitted)
    if world_size > 1 and cfg.data.val_samples is None:
        raise CheckpointError(f"{world_size} processes need data.val_samples=N (every process must read the "
                              f"same number of batches; repeated samples count once)")
    try:
        batches = build_loader(cfg.data, cfg.model.grid, split="val", rank=rank, world_size=world_size,
                               seed=cfg.run.seed, conditions=evaluation_conditions(cfg))
    except ValueError as err:
        raise CheckpointError(f"data: {err}") from err
    device = inference_device()
    gather = FailureAwareGather() if world_size > 1 else None
    try:
        try:
            result = run_evaluation(setup.model.to(device), batches, cfg, device=device, stage=setup.stage,
                                    gather=gather, max_batches=args.max_batches)
        except (*FATAL_DATA_ERRORS, NoReadableSampleError) as err:  # possibly from a DataLoader worker
            raise CheckpointError(f"data: {fatal_data_message(err)}") from err
    except Exception as err:
        if gather is not None and not gather.entered:  # failed before the gather: release the waiting peers
            from trainer.runtime.process_group import gather_objects

            gather_objects(RankFailed(rank, f"{type(err).__name__}: {err}", isinstance(err, CheckpointError)))
        raise
    if not result.metrics.get("num_frames"):
        raise CheckpointError(f"data {cfg.data.val_shards} produced no samples to evaluate")
    source = {"checkpoint": str(setup.resolved.path), "kind": setup.resolved.kind, "stage": setup.resolved.stage,
              "data": cfg.data.val_shards, "processes": world_size, "conditions": evaluated_conditions(cfg),
              "communication": [record.as_json() for record in result.messages]}
    return source, result.metrics


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, world_size = init_distributed()
    from trainer.checkpointing.checkpoint_io import CheckpointError
    from trainer.eval.table import format_table
    from trainer.runtime.process_group import barrier, leave_process_group

    try:
        source, metrics = evaluate(args, rank=rank, world_size=world_size)
        barrier()  # tear the process group down together: a rank leaving early could abort in gloo
    except CheckpointError as err:
        where = f"[rank {rank}] " if world_size > 1 else ""  # every rank: a rank-specific failure is visible too
        print(f"{where}error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        leave_process_group()
    if rank != 0:
        return 0
    stage = f", stage {source['stage']}" if source["stage"] else ""
    print(f"evaluated {source['checkpoint']} ({source['kind']}{stage}) on {source['data']} "
          f"with {world_size} process(es), fusion {source['conditions']['fusion']}")
    print(format_table(metrics))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps({**source, "metrics": json_safe(metrics)}, indent=1, allow_nan=False))
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
