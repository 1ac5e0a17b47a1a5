#!/usr/bin/env python
"""Train TurboTrain: ``python launch/train.py [--config RECIPE.yaml] [a.b=value ...]``.

Works unchanged under ``accelerate launch``, ``deepspeed --num_gpus N``, ``torchrun`` and plain
``python``. With no arguments it runs the default TurboTrain recipe (stage 1 masked pretraining,
then stage 2 balanced multi-task fine-tuning, then evaluation) on the built-in synthetic dataset.
Shard URLs that are not local files (``pipe:``, ``https:``, ``gs:``, ... which webdataset opens by running a
command) are refused unless ``--allow-command-urls`` is given (never for a spec read from a run's saved
``config.yaml``; see ``trainer.data.url_policy``).
Exit codes: 0 done, 2 bad configuration or input (or data that never arrives), 3 training diverged,
75 stopped by SIGTERM / SIGUSR1 / SIGINT (checkpoint saved where possible; requeue me).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_PREEMPTED = 2, 3, 75

# Deprecation chatter of third-party packages (spconv's torch.cuda.amp decorators and index style).
warnings.filterwarnings("ignore", category=FutureWarning, module=r"spconv\.")
warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="recipe YAML (default: recipes/turbotrain.yaml)")
    parser.add_argument("--allow-command-urls", action="store_true",
                        help="open shard URLs that run a command (pipe:, https:, gs:, ...); not saved in the run")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. stages.finetune.steps=500 data.batch_size=4")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer.config_io import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from trainer.data.preflight import PreflightError, preflight, shard_specs
    from trainer.data.url_policy import allow_command_urls, command_urls_permitted

    permitted = frozenset(key for _, key in shard_specs(cfg) if command_urls_permitted(
        key, opted_in=args.allow_command_urls, config_file=args.config, overrides=args.overrides))
    try:
        preflight(cfg, command_urls=permitted)
    except PreflightError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    allow_command_urls(bool(permitted))
    from trainer.engine.loop import Preempted, TrainingDiverged
    from trainer.engine.signals import StopNow
    from trainer.engine.stall import DataStallError
    from trainer.engine.pipeline import run_pipeline
    from trainer.checkpointing.checkpoint import CorruptCheckpointError
    from trainer.checkpointing.run_dir import RunDirError
    from trainer.data.data_errors import FATAL_DATA_ERRORS, fatal_data_message
    from trainer.data.loader import NoReadableSampleError
    from trainer.checkpointing.safe_load import CheckpointError
    from trainer.runtime import LaunchConfigError

    try:
        results = run_pipeline(cfg)
    except (LaunchConfigError, RunDirError, CorruptCheckpointError, DataStallError,
            CheckpointError) as err:  # CheckpointError: unsafe or unreadable init_from / resume files
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (*FATAL_DATA_ERRORS, NoReadableSampleError) as err:  # met mid-run, possibly in a DataLoader worker
        print(f"error: bad data: {fatal_data_message(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    except (Preempted, StopNow) as err:
        print(f"preempted: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    for name, record in results.items():
        if record.get("eval"):
            brief = {k: round(v, 4) for k, v in record["eval"].items() if k in ("AP@0.5", "minADE", "minFDE", "EPA")}
            print(f"[{name}] final: {brief}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
