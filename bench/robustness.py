"""Robustness of a trained checkpoint: AP@0.5, EPA and minADE against pose noise, latency and bandwidth, and the
fusion baselines (no fusion, late fusion, the model's intermediate fusion) side by side.

    python bench/robustness.py --checkpoint RUN_DIR                     # writes docs/results/robustness.*
    python bench/robustness.py --checkpoint w.safetensors --data 'val-{000000..000003}.tar' --seeds 0 1 2
    python bench/robustness.py data.num_workers=0 --checkpoint RUN_DIR      # overrides before the list options

Every point is one evaluation of the validation split (``trainer.eval.model_eval.run_evaluation``) with one
setting changed from the clean one (intermediate fusion, exact poses, no delay, dense fp32 messages):

- pose noise: collaborators' x / y errors of sigma metres and yaw errors of sigma degrees (``eval.pose_noise``),
  averaged over ``--seeds``;
- latency: every collaborator ``ms`` late (``eval.latency``, ``ms * raw_rate_hz / 1000`` raw frames);
- bandwidth: dense messages at each ``--precisions``, then the ``--keep-ratios`` most confident cells of each
  map, and the cells whose confidence reaches each ``--thresholds``, at the first precision (``eval.comm``); a
  point's bandwidth is the mean bytes per collaborator message.

The noise and latency sweeps run every fusion of ``--sweep-fusions``; no fusion does not depend on them (the ego
is exact and never late) and is drawn as a line. Latency needs shards with delayed frames: without ``--data``
the validation split of the checkpoint's built-in synthetic dataset is generated with them (``synthetic.*`` of
its config, ``delay_frames`` as the largest latency needs; cached under ``--work``). Writes
``<out>/robustness.json``, ``<out>/robustness.md`` and ``<out>/robustness_{pose_noise,latency,bandwidth}.png``.
Exit codes: 0 done, 2 bad input (checkpoint, data, a latency the data cannot give).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS_DIR, machine_info, markdown_table  # noqa: E402

METRICS = ("AP@0.5", "EPA", "minADE")
"""What every sweep reports and plots."""
TABLE_METRICS = ("AP@0.3", "AP@0.5", "AP@0.7", "EPA", "minADE", "minFDE", "MR", "comm/bytes_mean",
                 "comm/bytes_per_sample")
"""The columns of the fusion table."""
FUSION_LABELS = {"none": "no fusion", "late": "late fusion", "intermediate": "intermediate fusion"}
EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="run directory, stage folder or exported weights")
    p.add_argument("--stage", default=None, help="stage of a run directory (default: its last)")
    p.add_argument("--config", type=Path, default=None, help="recipe / config.yaml (default: the run's)")
    p.add_argument("--data", default=None, help="validation shards (default: the synthetic split, with delayed frames)")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6], help="sigma: m (x, y) and deg (yaw)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="pose-noise seeds averaged at every level")
    p.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 100.0, 200.0, 300.0])
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16"], help="dense message precisions")
    p.add_argument("--keep-ratios", type=float, nargs="+", default=[0.5, 0.25, 0.1, 0.05, 0.01],
                   help="top-k sparsification: share of each map's cells sent")
    p.add_argument("--thresholds", type=float, nargs="*", default=[],
                   help="threshold sparsification: confidence a cell needs to be sent (none by default)")
    p.add_argument("--sweep-fusions", nargs="+", default=["intermediate", "late"], choices=["intermediate", "late"])
    p.add_argument("--max-batches", type=int, default=0, help="batches per evaluation (0: the whole split)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of robustness.{json,md} and the plots")
    p.add_argument("--work", type=Path, default=None, help="cache of the generated validation split")
    p.add_argument("overrides", nargs="*", help="config overrides a.b=value (e.g. data.num_workers=0)")
    args = p.parse_args(argv)
    if any(s < 0 for s in args.noise) or any(ms < 0 for ms in args.latency_ms) or args.max_batches < 0:
        p.error("--noise, --latency-ms and --max-batches must be >= 0")
    return args


def delay_frames(ms: float, raw_rate_hz: float) -> int:
    """Raw frames of a latency of ``ms`` milliseconds; it must be a whole number of frames."""
    frames = ms * raw_rate_hz / 1000.0
    if abs(frames - round(frames)) > 1e-6:
        raise ValueError(f"a latency of {ms:g} ms is not a whole number of raw frames at {raw_rate_hz:g} Hz")
    return int(round(frames))


def validation_shards(args: argparse.Namespace, cfg: Any, frames_needed: int) -> str:
    """``--data``, or the checkpoint config's synthetic validation split generated with delayed frames."""
    if args.data is not None:
        return args.data
    from trainer.data.synth.dataset import generate_split, shard_patterns

    synthetic = dataclasses.replace(cfg.synthetic, delay_frames=frames_needed)
    root = synthetic.root()
    root = (args.work or root.parent) / f"val-only-{root.name}"
    if not (root / "COMPLETE").exists():
        print(f"generating the validation split with {frames_needed} delayed frames into {root}")
        generate_split(synthetic, "val", root, max_agents=cfg.data.max_agents, history=cfg.model.history)
        (root / "COMPLETE").write_text("val\n")
    return shard_patterns(root)[1]


def raw_rate_of(shards: str) -> float:
    """The source frame rate the shards record (``meta.raw_rate_hz`` of their first sample)."""
    from trainer.data.shard_read import read_samples
    from trainer.data.split import expand_shards

    for sample in read_samples(expand_shards(shards)[:1]):
        return float(sample.meta["raw_rate_hz"])
    raise ValueError(f"{shards}: the first shard holds no sample")


def setting_label(eval_cfg: Any) -> str:
    """What an evaluation's cooperation settings change from the clean ones ("clean" for none); settings that
    give the same evaluation (a zero noise of any seed) get the same label."""
    from trainer.eval.config import EvalConfig

    clean = EvalConfig()
    parts = [f"fusion={eval_cfg.fusion}"] if eval_cfg.fusion != clean.fusion else []
    if eval_cfg.comm != clean.comm:
        parts.append(f"comm={json.dumps(dataclasses.asdict(eval_cfg.comm), sort_keys=True)}")
    for name in ("pose_noise", "latency"):
        if getattr(eval_cfg, name).enabled:
            parts.append(f"{name}={json.dumps(dataclasses.asdict(getattr(eval_cfg, name)), sort_keys=True)}")
    return " ".join(parts) or "clean"


class Evaluations:
    """Evaluates the loaded model on the validation split under one changed setting at a time (cached)."""

    def __init__(self, setup: Any, device: Any, max_batches: int) -> None:
        self.setup, self.device, self.max_batches = setup, device, max_batches
        self.done: dict[str, dict[str, float]] = {}

    def __call__(self, **eval_changes: Any) -> dict[str, float]:
        from trainer.data.loader import build_loader
        from trainer.eval.model_eval import evaluation_conditions, run_evaluation

        cfg = self.setup.cfg
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, **eval_changes))
        label = setting_label(cfg.eval)
        if label not in self.done:
            batches = build_loader(cfg.data, cfg.model.grid, split="val", rank=0, world_size=1, seed=cfg.run.seed,
                                   conditions=evaluation_conditions(cfg))
            self.done[label] = run_evaluation(self.setup.model, batches, cfg, device=self.device,
                                              stage=self.setup.stage, max_batches=self.max_batches).metrics
            print(f"  {label}: " + "  ".join(f"{k} {self.done[label].get(k, math.nan):.3f}" for k in METRICS))
        return self.done[label]


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """The per-key mean of several evaluations' metrics (keys of the first)."""
    return {k: float(sum(r[k] for r in runs) / len(runs)) for k in runs[0]}


def sweeps(evaluate: Evaluations, args: argparse.Namespace, raw_rate_hz: float) -> dict[str, Any]:
    from trainer.data.latency import LatencyConfig
    from trainer.data.pose_noise import PoseNoiseConfig
    from trainer.eval.cooperative_config import CommConfig

    fusion = {mode: evaluate(fusion=mode) for mode in ("none", "late", "intermediate")}
    noise = [{"sigma": sigma, "fusion": mode, "metrics": mean_metrics([
        evaluate(fusion=mode, pose_noise=PoseNoiseConfig(xy_std_m=sigma, yaw_std_deg=sigma, seed=seed))
        for seed in args.seeds])} for sigma in args.noise for mode in args.sweep_fusions]
    latency = []
    for ms in args.latency_ms:
        frames = delay_frames(ms, raw_rate_hz)
        latency += [{"ms": ms, "frames": frames, "fusion": mode,
                     "metrics": evaluate(fusion=mode, latency=LatencyConfig(min_frames=frames, max_frames=frames))}
                    for mode in args.sweep_fusions]
    settings = [(f"dense {p}", CommConfig(precision=p)) for p in args.precisions]
    settings += [(f"top {r:g} {args.precisions[0]}", CommConfig(precision=args.precisions[0], sparsify="topk",
                                                                keep_ratio=r)) for r in args.keep_ratios]
    settings += [(f"conf >= {c:g} {args.precisions[0]}", CommConfig(precision=args.precisions[0], sparsify="threshold",
                                                                    threshold=c)) for c in args.thresholds]
    bandwidth = [{"setting": name, "comm": dataclasses.asdict(comm), "metrics": evaluate(comm=comm)}
                 for name, comm in settings]
    bandwidth.append({"setting": "late fusion", "comm": dataclasses.asdict(CommConfig()), "metrics": fusion["late"]})
    return {"fusion": fusion, "pose_noise": noise, "latency": latency, "bandwidth": bandwidth}


def sweep_figure(rows: list[dict], x_key: str, x_label: str, reference: dict[str, float], path: Path) -> None:
    """Three panels (``METRICS``) against ``x_key``, one line per fusion, no fusion as a dashed line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    for axis, metric in zip(fig.subplots(1, len(METRICS)), METRICS):
        for mode in dict.fromkeys(r["fusion"] for r in rows):
            mine = [r for r in rows if r["fusion"] == mode]
            axis.plot([r[x_key] for r in mine], [r["metrics"][metric] for r in mine], marker="o",
                      label=FUSION_LABELS[mode])
        axis.axhline(reference[metric], linestyle="--", color="grey", label=FUSION_LABELS["none"])
        axis.set_xlabel(x_label)
        axis.set_title(metric + (" (m)" if metric == "minADE" else ""))
        axis.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def bandwidth_figure(rows: list[dict], reference: dict[str, float], path: Path) -> None:
    """``METRICS`` against the mean bytes per collaborator message (log scale); no fusion sends nothing."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    for axis, metric in zip(fig.subplots(1, len(METRICS)), METRICS):
        points = [(r["setting"], r["metrics"]["comm/bytes_mean"], r["metrics"][metric]) for r in rows]
        points = [(name, x, y) for name, x, y in points if x > 0 and math.isfinite(y)]  # NaN: nothing matched
        for name, x, y in points:
            axis.scatter(x, y, marker="s" if "late" in name else "o")
            axis.annotate(name, (x, y), fontsize=7)
        axis.axhline(reference[metric], linestyle="--", color="grey", label=FUSION_LABELS["none"] + " (0 bytes)")
        if points:
            axis.set_xscale("log")
        axis.set_xlabel("bytes per collaborator message")
        axis.set_title(metric + (" (m)" if metric == "minADE" else ""))
        axis.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (a metric without matches) as None (JSON null)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _bytes(value: float) -> str:
    return f"{int(value):,}" if math.isfinite(value) else "-"


def markdown(results: dict[str, Any], header: str) -> str:
    fusion = results["fusion"]
    scores = [k for k in TABLE_METRICS if not k.startswith("comm/")]
    parts = [header, "", "Fusion baselines from the same checkpoint (clean conditions; bytes: mean per collaborator "
             "message, and what the ego receives per sample):", "",
             markdown_table(["fusion", *scores, "bytes / message", "bytes / sample"],
                            [[FUSION_LABELS[m], *(fusion[m][k] for k in scores), _bytes(fusion[m]["comm/bytes_mean"]),
                              _bytes(fusion[m]["comm/bytes_per_sample"])] for m in ("none", "late", "intermediate")]),
             "", "Pose noise (sigma: metres on x and y, degrees on yaw; mean over the seeds):", "",
             markdown_table(["sigma", "fusion", *METRICS], [[f"{r['sigma']:g}", FUSION_LABELS[r["fusion"]],
                                                             *(r["metrics"][k] for k in METRICS)]
                                                            for r in results["pose_noise"]]),
             "", "Latency (every collaborator late by the same time):", "",
             markdown_table(["latency (ms)", "raw frames", "fusion", *METRICS],
                            [[f"{r['ms']:g}", r["frames"], FUSION_LABELS[r["fusion"]],
                              *(r["metrics"][k] for k in METRICS)] for r in results["latency"]]),
             "", "Bandwidth (mean bytes per collaborator message):", "",
             markdown_table(["messages", "bytes / message", *METRICS],
                            [[r["setting"], _bytes(r["metrics"]["comm/bytes_mean"]),
                              *(r["metrics"][k] for k in METRICS)] for r in results["bandwidth"]])]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from trainer.checkpointing.checkpoint_io import CheckpointError, inference_device, load_for_inference
    from trainer.data.config import ConvertConfig
    from trainer.data.data_errors import FATAL_DATA_ERRORS, fatal_data_message

    try:
        setup = load_for_inference(args.checkpoint, stage=args.stage, config=args.config, overrides=args.overrides)
        raw_rate = ConvertConfig().raw_rate_hz if args.data is None else raw_rate_of(args.data)
        needed = max(delay_frames(ms, raw_rate) for ms in args.latency_ms)
        shards = validation_shards(args, setup.cfg, needed)
        cfg = dataclasses.replace(setup.cfg, data=dataclasses.replace(setup.cfg.data, val_shards=shards))
        device = inference_device()
        setup = dataclasses.replace(setup, cfg=cfg, model=setup.model.to(device))
        print(f"robustness of {setup.resolved.path} on {shards}")
        results = sweeps(Evaluations(setup, device, args.max_batches), args, raw_rate)
    except (CheckpointError, ValueError, *FATAL_DATA_ERRORS) as err:
        print(f"error: {fatal_data_message(err) if isinstance(err, FATAL_DATA_ERRORS) else err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    command = "python bench/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = f"Command: `{command}` (checkpoint {setup.resolved.path}, data {shards})"
    args.out.mkdir(parents=True, exist_ok=True)
    reference = results["fusion"]["none"]
    sweep_figure(results["pose_noise"], "sigma", "pose noise sigma (m, deg)", reference,
                 args.out / "robustness_pose_noise.png")
    sweep_figure(results["latency"], "ms", "latency (ms)", reference, args.out / "robustness_latency.png")
    bandwidth_figure(results["bandwidth"], reference, args.out / "robustness_bandwidth.png")
    (args.out / "robustness.json").write_text(json.dumps(json_safe(
        {"command": command, "checkpoint": str(setup.resolved.path), "data": shards, "seeds": args.seeds,
         "raw_rate_hz": raw_rate, "machine": machine_info(), **results}), indent=1, allow_nan=False))
    (args.out / "robustness.md").write_text(markdown(results, header))
    print(markdown(results, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
