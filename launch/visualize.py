"""Draw training curves of a run, or BEV pictures of data samples.

  python launch/visualize.py --run runs/my_run                  # -> runs/my_run/curves.png
  python launch/visualize.py --data 'shards/val-{000000..000003}.tar' --out-dir viz --num-samples 8 --gif

Without a checkpoint the samples show ground truth only (points by agent, agents, GT boxes and
futures). Drawing predictions goes through ``trainer.viz.render_samples(..., predict=...)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from trainer.viz.curves import plot_training_curves  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run directory (or metrics.jsonl) to plot training curves of")
    source.add_argument("--data", help="WebDataset shard pattern of samples to draw")
    parser.add_argument("--out", type=Path, help="curves PNG path (default: <run>/curves.png)")
    parser.add_argument("--out-dir", type=Path, default=Path("viz"), help="where sample PNGs / GIF go")
    parser.add_argument("--config", type=Path, help="recipe YAML giving the grid and data settings (default recipe)")
    parser.add_argument("--num-samples", type=int, default=8, help="samples to draw")
    parser.add_argument("--gif", action="store_true", help="also write samples.gif with one frame per sample")
    parser.add_argument("--fps", type=float, default=2.0, help="GIF frames per second")
    parser.add_argument("--all-frames", action="store_true", help="draw every history frame's points")
    parser.add_argument("--pixels-per-metre", type=float, default=5.0, help="image resolution")
    parser.add_argument("overrides", nargs="*", help="config overrides a.b=value (with --data)")
    return parser.parse_args(argv)


def draw_samples(args: argparse.Namespace) -> int:
    """The --data mode: ground-truth BEV pictures of the first samples of the shards."""
    # Imported here so that --run (curves) does not load the model / data stack.
    from trainer.config_io import ConfigError, load_config
    from trainer.data.loader import build_loader
    from trainer.viz import BevPlotConfig, render_samples

    try:
        cfg = load_config(args.config, [*args.overrides, f"data.val_shards={args.data}", "data.val_samples=null",
                                        "data.num_workers=0"])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    loader = build_loader(cfg.data, cfg.model.grid, split="val", rank=0, world_size=1, seed=0)
    try:
        plot = BevPlotConfig(pixels_per_metre=args.pixels_per_metre, all_frames=args.all_frames)
        written = render_samples(loader, args.out_dir, grid=cfg.model.grid, config=plot,
                                 max_samples=args.num_samples, gif=args.gif, fps=args.fps)
    except ValueError as err:
        print(f"error: {err} (shards: {args.data})", file=sys.stderr)
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
