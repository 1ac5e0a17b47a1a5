#!/usr/bin/env python
"""Export consolidated fp32 weights for inference from a checkpoint of any engine / ZeRO stage.

  python launch/export.py --checkpoint runs/r/finetune/checkpoints/step_000120 --out weights.safetensors
  python launch/export.py --checkpoint runs/r/finetune --out weights.safetensors     # its latest checkpoint
  python launch/export.py --checkpoint runs/r --stage pretrain --out enc.safetensors # default: the last stage
  python launch/export.py --checkpoint ckpt/step_000120 --config runs/r/config.yaml --out weights.safetensors

The output is a safetensors file (tensors only, no code: safe to share): the fp32 state dict, with the model
config as JSON in its metadata (``model_config``); load it with ``trainer.checkpointing.export.load_exported``
(or ``stages.<name>.init_from=weights.safetensors``). The model config comes from --config, else from the
run's ``config.yaml`` found around the checkpoint. Every pickle of the engine checkpoint is checked with the
restricted unpickler before it is read (``trainer.checkpointing.safe_load``).
Exit codes: 0 written, 2 bad input (a path that is no checkpoint, no config, unreadable or unsafe weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="engine checkpoint folder, stage folder, or run directory (with --stage)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the weights (*.safetensors)")
    parser.add_argument("--stage", default=None, help="stage of a run directory (default: its last stage)")
    parser.add_argument("--config", type=Path, default=None,
                        help="config giving the model section (default: the run's config.yaml)")
    parser.add_argument("overrides", nargs="*", help="config overrides a.b=value (e.g. model_size=base)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer.checkpointing.checkpoint_io import CheckpointError, resolve_checkpoint, resolve_config
    from trainer.checkpointing.export import EXPORTED_SUFFIX, export_weights

    try:
        resolved = resolve_checkpoint(args.checkpoint, stage=args.stage)
        if resolved.kind == "exported":
            raise CheckpointError(f"{resolved.path} is already exported weights; load it with "
                                  f"trainer.checkpointing.export.load_exported")
        cfg = resolve_config(resolved, args.config, args.overrides)
        if cfg is None:
            raise CheckpointError(f"{resolved.path}: no run config.yaml around this checkpoint; pass --config")
        if args.out.suffix != EXPORTED_SUFFIX:
            raise CheckpointError(f"--out must name a {EXPORTED_SUFFIX} file, got {args.out}")
        if args.out.is_dir():
            raise CheckpointError(f"--out {args.out} is a directory")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            export_weights(resolved.path, args.out, cfg.model)
        except CheckpointError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"cannot export {resolved.path}: {type(err).__name__}: {err}") from err
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from trainer.checkpointing.export import load_exported

    model, payload = load_exported(args.out)  # strict load: the file is usable for inference as written
    params = sum(p.numel() for p in model.parameters())
    stage = f" (stage {resolved.stage})" if resolved.stage else ""
    print(f"exported {resolved.path}{stage} -> {args.out}: {len(payload['model'])} tensors, "
          f"{params:,} parameters, fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
