#!/usr/bin/env python
"""Run a trained model on new data and write its predictions, sample by sample.

  python launch/predict.py --checkpoint runs/r --data 'shards/test-{000000..000003}.tar' --out preds.jsonl
  python launch/predict.py --checkpoint weights.safetensors --src /data/v2x-real/test --taxonomy v2x-real \\
      --out preds.jsonl --npz preds/ --pictures 8 --out-dir viz

--checkpoint is what ``launch/evaluate.py`` takes (exported weights, engine checkpoint, stage or run folder).
The data are WebDataset shards (--data), or an OpenCOOD-layout split folder (--src:
``scenario/agent_id/timestamp.{yaml,pcd|bin}``) converted on the fly into a temporary folder with the
converter's options (--mode, --history, --taxonomy, ...: keep them as the model was trained).

For every sample, one line of --out (JSON Lines): ``key``, ``scenario``, ``ego_id``, ``timestamp``,
``ego_pose`` (world LiDAR pose x, y, z, roll, yaw, pitch in degrees), ``labels`` / ``classes``, ``scores``,
``mode_scores`` [N][K], and per frame (``ego``: the ego BEV frame at the sample time; ``world``) the
``boxes`` [N][7] (x, y, z, l, w, h, yaw; full sizes, radians) and ``trajectories`` [N][K][T_f][2]
(docs/DATA_FORMAT.md, "Predictions"). --npz DIR also writes ``DIR/<key>.npz`` with the same arrays in full
precision. When the data hold ground truth, the evaluation table (AP, minADE, minFDE, MR, EPA; the config's
``eval`` settings, e.g. ``eval.pred_protocol=vip3d``) is printed; --pictures N draws the first N samples
(points, ground truth, predictions) as BEV PNGs in --out-dir.
Exit codes: 0 done, 2 bad input (checkpoint, config, data, an unsafe file or URL, no sample).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without any install works too

EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from trainer.data.convert import add_convert_arguments

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="WebDataset shard pattern")
    source.add_argument("--src", type=Path, help="OpenCOOD-layout split folder, converted on the fly")
    parser.add_argument("--out", type=Path, required=True, help="JSON Lines file of the predictions")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="exported .safetensors / .pt, engine checkpoint folder, stage folder or run directory")
    parser.add_argument("--stage", default=None, help="stage of a run directory (default: its last stage)")
    parser.add_argument("--npz", type=Path, default=None, help="also write <DIR>/<key>.npz per sample")
    parser.add_argument("--config", type=Path, default=None, help="recipe / run config.yaml (default: the run's)")
    parser.add_argument("--score-threshold", type=float, default=0.1, help="lowest detection score written")
    parser.add_argument("--pictures", type=int, default=0, help="draw the first N samples as BEV PNGs")
    parser.add_argument("--out-dir", type=Path, default=Path("viz"), help="where --pictures go")
    parser.add_argument("--max-samples", type=int, default=0, help="stop after this many samples (0: all)")
    parser.add_argument("--allow-command-urls", action="store_true",
                        help="open shard URLs that run a command (pipe:, https:, ...) given by --data")
    add_convert_arguments(parser.add_argument_group("conversion of --src (python -m trainer.data.convert)"))
    parser.add_argument("overrides", nargs="*", help="config overrides a.b=value (e.g. eval.pred_protocol=vip3d)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.score_threshold <= 1.0:
        parser.error(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    if args.pictures < 0 or args.max_samples < 0:
        parser.error("--pictures and --max-samples must be >= 0")
    return args


def shard_urls(args: argparse.Namespace, tmp: Path) -> list[str]:
    """The shards to read: --data's (after the URL policy), or those of --src converted into ``tmp``."""
    from trainer.data.convert import convert, convert_config
    from trainer.data.url_policy import allow_command_urls, check_shard_spec

    if args.data is not None:
        urls = check_shard_spec(args.data, what="--data", allow_commands=args.allow_command_urls)
        allow_command_urls(args.allow_command_urls)
        return urls
    summary = convert(args.src, str(tmp / "src-%06d.tar"), convert_config(args), progress=False)
    print(summary.report(), file=sys.stderr)
    if summary.samples == 0:
        raise ValueError(f"--src {args.src} gave no sample (check --mode and the history / future windows)")
    return summary.shards


def predict(args: argparse.Namespace, tmp: Path) -> dict[str, float] | None:
    """Write the predictions; returns the metrics when the data hold ground truth, else None."""
    from trainer.checkpointing.checkpoint_io import inference_device, load_for_inference, make_predictor
    from trainer.eval import Evaluator

    setup = load_for_inference(args.checkpoint, stage=args.stage, config=args.config, overrides=args.overrides)
    cfg = setup.cfg
    urls = shard_urls(args, tmp)
    run_model = make_predictor(setup.model, stage=setup.stage, device=inference_device(),
                               score_threshold=args.score_threshold)
    evaluator = Evaluator(cfg.eval)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.name}.partial")
    try:
        written, _ = _write(args, partial, urls, cfg, run_model, evaluator)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if written == 0:
        partial.unlink()
        raise ValueError(f"no sample in {args.data or args.src}")
    os.replace(partial, args.out)
    print(f"wrote {written} sample(s) of predictions to {args.out}")
    metrics = evaluator.compute()
    return metrics if metrics.get("num_gt") else None


def _write(args, partial, urls, cfg, run_model, evaluator) -> tuple[int, int]:
    """Predict every sample of ``urls`` into ``partial`` (and the npz / pictures); (samples, pictures) written."""
    from trainer.data.direct_batches import prepared_batches
    from trainer.data.shard_read import read_samples
    from trainer.eval.prediction_file import prediction_arrays, prediction_record, write_npz
    from trainer.viz import render_bev_png

    names = cfg.eval.class_names
    written = pictures = 0
    with open(partial, "w") as out:
        for samples, batch in prepared_batches(read_samples(urls), cfg.data, cfg.model.grid):
            detections = run_model(batch)
            evaluator.update(detections, batch)
            for scene, (sample, det) in enumerate(zip(samples, detections)):
                arrays = prediction_arrays(det, sample.poses[0, -1])
                out.write(json.dumps(prediction_record(sample.key, sample.meta, arrays, names)) + "\n")
                if args.npz is not None:
                    write_npz(args.npz / f"{sample.key}.npz", arrays)
                if pictures < args.pictures:
                    print(render_bev_png(args.out_dir / f"{sample.key}.png", batch, scene, det, grid=cfg.model.grid))
                    pictures += 1
                written += 1
            if args.max_samples and written >= args.max_samples:
                break
    return written, pictures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer.checkpointing.safe_load import CheckpointError
    from trainer.config_io import ConfigError
    from trainer.data.classes import UnmappedObjectTypeError
    from trainer.data.pointio import SourceFormatError
    from trainer.data.sample import SampleFormatError, SchemaVersionError
    from trainer.eval.table import format_table

    bad_input = (CheckpointError, ConfigError, SourceFormatError, SampleFormatError, SchemaVersionError,
                 UnmappedObjectTypeError, OSError, ValueError)
    with tempfile.TemporaryDirectory(prefix="turbotrain-predict-") as tmp:
        try:
            metrics = predict(args, Path(tmp))
        except bad_input as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if metrics is not None:
        print(format_table(metrics))
    else:
        print("no ground truth in the data: nothing to evaluate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
