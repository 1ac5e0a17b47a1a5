"""Draw training curves of a run, or BEV pictures of data samples.

  python launch/visualize.py --run runs/my_run                  # -> runs/my_run/curves.png
  python launch/visualize.py --data 'shards/val-{000000..000003}.tar' --out-dir viz --num-samples 8 --gif
  python launch/visualize.py --checkpoint runs/my_run --out-dir viz        # + predictions, the run's val shards

Without a checkpoint the samples show ground truth only (points by agent, agents, GT boxes and
futures). With --checkpoint (exported .safetensors / .pt, engine checkpoint folder, stage folder or run directory,
see launch/evaluate.py) the model's decoded detections and predicted trajectories are drawn too;
the grid and model come from the checkpoint, data from --data or the config's val shards. Shard URLs
that are not local files (``pipe:``, ``https:``, ...) are refused unless --allow-command-urls is given, and
always when they come from a run's saved ``config.yaml``.
Exit codes: 0 done, 1 no samples in the shards, 2 bad input (including an unsafe checkpoint or URL).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from trainer.viz.curves import plot_training_curves  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, help="run directory (or metrics.jsonl) to plot training curves of")
    source.add_argument("--data", help="WebDataset shard pattern of samples to draw")
    parser.add_argument("--checkpoint", type=Path,
                        help="draw this model's predictions too (exported weights / engine checkpoint / stage / run dir)")
    parser.add_argument("--stage", default=None, help="stage of a --checkpoint run directory (default: its last)")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="lowest detection score drawn")
    parser.add_argument("--out", type=Path, help="curves PNG path (default: <run>/curves.png)")
    parser.add_argument("--out-dir", type=Path, default=Path("viz"), help="where sample PNGs / GIF go")
    parser.add_argument("--config", type=Path, help="recipe YAML giving the grid and data settings (default recipe)")
    parser.add_argument("--num-samples", type=int, default=8, help="samples to draw")
    parser.add_argument("--gif", action="store_true", help="also write samples.gif with one frame per sample")
    parser.add_argument("--fps", type=float, default=2.0, help="GIF frames per second")
    parser.add_argument("--all-frames", action="store_true", help="draw every history frame's points")
    parser.add_argument("--allow-command-urls", action="store_true",
                        help="open shard URLs that run a command (pipe:, https:, ...), not from a saved config.yaml")
    parser.add_argument("--pixels-per-metre", type=float, default=12.5, help="scene resolution (12.5: 800 px for 64 m)")
    parser.add_argument("overrides", nargs="*", help="config overrides a.b=value (with --data / --checkpoint)")
    args = parser.parse_args(argv)
    if args.run is None and args.data is None and args.checkpoint is None:
        parser.error("one of --run, --data or --checkpoint is required")
    if args.run is not None and args.checkpoint is not None:
        parser.error("--checkpoint draws samples; it does not go with --run (training curves)")
    if not 0.0 <= args.score_threshold <= 1.0:
        parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    return args


def samples_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """(config, predict or None) of the --data / --checkpoint modes; raises ValueError on bad input
    (``CommandURLError`` for a shard URL that would run a command without the opt-in)."""
    from trainer.config_io import load_config
    from trainer.data.url_policy import allow_command_urls, check_shard_spec, command_urls_permitted

    overrides = [*args.overrides, "data.val_samples=null", "data.num_workers=0"]
    if args.data is not None:
        overrides.append(f"data.val_shards={args.data}")
    predict = None
    if args.checkpoint is None:
        cfg, config_file = load_config(args.config, overrides), args.config
    else:
        from trainer.checkpointing.checkpoint_io import inference_device, load_for_inference, make_predictor

        setup = load_for_inference(args.checkpoint, stage=args.stage, config=args.config, overrides=overrides)
        predict = make_predictor(setup.model, stage=setup.stage, device=inference_device(),
                                 score_threshold=args.score_threshold)
        cfg, config_file = setup.cfg, setup.config_file
    if cfg.data.val_shards:
        permitted = command_urls_permitted("data.val_shards", opted_in=args.allow_command_urls,
                                           config_file=config_file, overrides=overrides)  # --data is one
        check_shard_spec(cfg.data.val_shards, what="data.val_shards", allow_commands=permitted)
        allow_command_urls(permitted)
    return cfg, predict


def draw_samples(args: argparse.Namespace) -> int:
    """The --data / --checkpoint mode: BEV pictures of the first samples (with predictions from a checkpoint)."""
    # Imported here so that --run (curves) does not load the model / data stack.
    from trainer.data.loader import build_loader
    from trainer.viz import BevPlotConfig, render_samples

    try:
        cfg, predict = samples_setup(args)
        if not cfg.data.val_shards:
            raise ValueError("no samples to draw: pass --data (the config names no val shards)")
    except ValueError as err:  # ConfigError, CheckpointError
        print(f"error: {err}", file=sys.stderr)
        return 2
    loader = build_loader(cfg.data, cfg.model.grid, split="val", rank=0, world_size=1, seed=0)
    try:
        plot = BevPlotConfig(pixels_per_metre=args.pixels_per_metre, all_frames=args.all_frames,
                             score_threshold=args.score_threshold)
        written = render_samples(loader, args.out_dir, grid=cfg.model.grid, predict=predict, config=plot,
                                 max_samples=args.num_samples, gif=args.gif, fps=args.fps)
    except ValueError as err:
        print(f"error: {err} (shards: {cfg.data.val_shards})", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run is not None:
        print(plot_training_curves(args.run, args.out))
        return 0
    return draw_samples(args)


if __name__ == "__main__":
    sys.exit(main())
