"""Loader throughput: WebDataset shards vs reading the OpenCOOD layout directly.

Both paths run one worker (in-process) and the same prepare (BEV mapping) + collate
(voxelisation) code and produce the same batches; the direct path parses the YAML and point files
of every sample from scratch, as a per-sample dataset over the source tree would. Prints medians
over interleaved repeats; the last line is the ratio shard / direct.

The source is the synthetic generator (ray-cast LiDAR; ``--beams`` / ``--azimuth-res`` set the
density, 32 x 1 deg ~ 10k points per frame) or ``--source toy``: points drawn uniformly around
each sensor (``--points`` per frame), the worst case for voxelisation (about one voxel per point).

    python bench/loader.py                                   # synthetic default density, 5 repeats
    python bench/loader.py --lidar 32x1.0 64x1.0 64x0.5 --out docs/results   # ~10k, 20k, 40k points/frame
    python bench/loader.py --source toy --points 4000 10000

Also timed: the work both paths share (prepare + collate of already-decoded samples); direct / shared
is the ceiling of the ratio on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_info, markdown_table  # noqa: E402
from models.batch import Batch  # noqa: E402
from models.grid import GridConfig  # noqa: E402
from trainer.data.build import FrameReader, build_sample, ego_allowed, sample_times  # noqa: E402
from trainer.data.config import ConvertConfig, DataConfig  # noqa: E402
from trainer.data.convert import ConvertSummary, convert  # noqa: E402
from tests.opencood_fixtures import write_toy_scenario  # noqa: E402
from trainer.data.loader import build_loader  # noqa: E402
from trainer.data.opencood import scan_split  # noqa: E402
from trainer.data.sample import Sample  # noqa: E402
from trainer.data.shard_read import read_samples  # noqa: E402
from trainer.data.synth.config import SynthConfig  # noqa: E402
from trainer.data.synth.generate import generate_dataset  # noqa: E402
from trainer.data.direct_batches import prepared_batches as direct_prepared_batches  # noqa: E402


def prepared_batches(samples: Iterable[Sample], data: DataConfig, grid: GridConfig) -> Iterator[Batch]:
    """The work both paths share: prepare each sample, collate (and voxelise) every ``batch_size``,
    the remainder too (as the shard loader's val pass does)."""
    return (batch for _, batch in direct_prepared_batches(samples, data, grid))


def direct_batches(src: Path, cfg: ConvertConfig, data: DataConfig, grid: GridConfig) -> Iterator[Batch]:
    """Batches built by reading every sample straight from the source files (no caching across samples)."""
    samples = (build_sample(FrameReader(scn, cfg, skip_bad=False, point_cache=0), ego, t, cfg)
               for scn in scan_split(src) for ego in sorted(scn.agents) if ego_allowed(cfg.mode, ego)
               for t in sample_times(scn, ego, cfg))
    return prepared_batches(samples, data, grid)


def direct_epoch(src: Path, cfg: ConvertConfig, data: DataConfig, grid: GridConfig) -> int:
    """One pass reading every sample straight from the source files; returns samples read."""
    return sum(b.num_scenes for b in direct_batches(src, cfg, data, grid))


def points_per_frame(src: Path) -> float:
    """Mean points per LiDAR frame of the source tree (float32 x, y, z, intensity .bin files)."""
    sizes = [f.stat().st_size for f in src.glob("*/*/*.bin")]
    return sum(sizes) / max(len(sizes), 1) / 16


def shard_epoch(data: DataConfig, grid: GridConfig) -> int:
    return sum(b.num_scenes for b in build_loader(data, grid, split="val", rank=0, world_size=1, seed=0))


def shared_epoch(samples: list[Sample], data: DataConfig, grid: GridConfig) -> int:
    """Only the work both paths share (prepare + collate with voxelisation) on already-decoded samples."""
    return sum(b.num_scenes for b in prepared_batches(samples, data, grid))


def write_source(source: str, density: str, args: argparse.Namespace, src: Path) -> None:
    """The OpenCOOD tree both paths read; ``density`` is a point count (toy) or ``BEAMSxAZIMUTH_DEG`` (synth)."""
    if source == "toy":
        for i in range(args.scenarios):
            write_toy_scenario(src / f"scn{i:03d}", frames=args.frames, objects=args.objects,
                               points_per_frame=int(density), seed=i)
        return
    beams, azimuth = density.split("x")
    base = SynthConfig()
    lidar = dict(num_beams=int(beams), azimuth_resolution_deg=float(azimuth))
    generate_dataset(SynthConfig(seed=0, num_scenarios=args.scenarios, num_frames=args.frames,
                                 vehicle_lidar=dataclasses.replace(base.vehicle_lidar, **lidar),
                                 infra_lidar=dataclasses.replace(base.infra_lidar, **lidar)), src, progress=False)


def sharded_source(source: str, density: str, args: argparse.Namespace, root: Path,
                   cfg: ConvertConfig) -> tuple[Path, ConvertSummary, list[Sample]]:
    """Write the source tree under ``root/src``, convert it to shards under ``root/shards``; returns the
    source root, the conversion summary and every sample decoded from the shards."""
    src = root / "src"
    write_source(source, density, args, src)
    summary = convert(src, str(root / "shards" / "bench-%06d.tar"), cfg, maxcount=16, progress=False)
    if summary.samples == 0:
        raise SystemExit(f"no samples: --frames {args.frames} is too short for {cfg.history} history and "
                         f"{cfg.future} future steps")
    return src, summary, list(read_samples(summary.shards))


def measure(source: str, density: str, args: argparse.Namespace, root: Path) -> dict:
    """Interleaved repeats of the direct path, the shard loader and the shared work on one input."""
    grid, cfg = GridConfig(), ConvertConfig(mode="vc")
    src, summary, decoded = sharded_source(source, density, args, root, cfg)
    data = DataConfig(val_shards=",".join(summary.shards), batch_size=2, num_workers=0)
    times: dict[str, list[float]] = {"direct": [], "shards": [], "shared": []}
    for _ in range(args.repeats):  # interleaved so that machine noise hits all alike
        for name, epoch in (("direct", lambda: direct_epoch(src, cfg, data, grid)),
                            ("shards", lambda: shard_epoch(data, grid)),
                            ("shared", lambda: shared_epoch(decoded, data, grid))):
            t0 = time.perf_counter()
            n = epoch()
            times[name].append(time.perf_counter() - t0)
            if n != summary.samples:
                raise RuntimeError(f"{name} read {n} samples, the shards hold {summary.samples}")
    ms = {k: 1e3 * statistics.median(v) / summary.samples for k, v in times.items()}
    paired = [d / s for d, s in zip(times["direct"], times["shards"])]  # per repeat
    return {
        "source": source, "density": density, "samples": summary.samples, "points_per_frame": points_per_frame(src),
        "frames_per_sample": float(statistics.mean(int(s.frame_valid.sum()) for s in decoded)),
        "ms_per_sample": ms, "times_s": times,
        "ratio": ms["direct"] / ms["shards"],
        "paired_ratio": statistics.median(paired),
        "paired_range": [min(paired), max(paired)],
        "ceiling": ms["direct"] / ms["shared"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=("synth", "toy"), default="synth")
    p.add_argument("--lidar", nargs="+", default=["32x1.0"],
                   help="synth: LiDAR densities as BEAMSxAZIMUTH_DEG (32x1.0 ~ 10k points per frame)")
    p.add_argument("--points", nargs="+", type=int, default=[10000], help="toy: points per LiDAR frame")
    p.add_argument("--scenarios", type=int, default=2)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--objects", type=int, default=30, help="toy: objects per scenario")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="also write loader.{json,md} here (e.g. docs/results)")
    args = p.parse_args()
    densities = args.lidar if args.source == "synth" else [str(n) for n in args.points]
    results = []
    for density in densities:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(args.source, density, args, Path(tmp))
        results.append(r)
        ms = r["ms_per_sample"]
        print(f"{r['source']} {r['density']}: {r['samples']} samples, {r['points_per_frame']:.0f} points/frame, "
              f"{r['frames_per_sample']:.1f} agent-frames/sample; median ms/sample: direct {ms['direct']:.1f}, "
              f"shards {ms['shards']:.1f}, shared prepare+collate {ms['shared']:.1f}; ratio {r['ratio']:.2f}x "
              f"(paired: median {r['paired_ratio']:.2f}x, range {r['paired_range'][0]:.2f}-{r['paired_range'][1]:.2f}x; "
              f"ceiling direct/shared {r['ceiling']:.2f}x)")
    if args.out is not None:
        write_results(results, args)
    print(f"ratio shards/direct: {results[0]['ratio']:.2f}x")


def write_results(results: list[dict], args: argparse.Namespace) -> None:
    command = "python bench/loader.py " + " ".join(sys.argv[1:])
    rows = [[r["source"], r["density"], f"{r['points_per_frame']:.0f}", f"{r['frames_per_sample']:.1f}",
             f"{r['ms_per_sample']['direct']:.1f}", f"{r['ms_per_sample']['shards']:.1f}",
             f"{r['ms_per_sample']['shared']:.1f}", f"{r['ratio']:.2f}x", f"{r['paired_ratio']:.2f}x",
             f"{r['paired_range'][0]:.2f}-{r['paired_range'][1]:.2f}x",
             f"{r['ceiling']:.2f}x"] for r in results]
    table = markdown_table(["source", "density", "points/frame", "agent-frames/sample", "direct ms/sample",
                            "shards ms/sample", "shared ms/sample", "ratio", "paired ratio", "paired range", "ceiling"], rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loader.json").write_text(json.dumps(
        {"command": command, "repeats": args.repeats, "machine": machine_info(), "results": results}, indent=1))
    (args.out / "loader.md").write_text(f"Command: `{command}` ({args.repeats} interleaved repeats, medians)\n\n{table}\n")


if __name__ == "__main__":
    main()
