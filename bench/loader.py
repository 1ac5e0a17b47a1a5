"""Loader throughput: WebDataset shards vs reading the OpenCOOD layout directly.

Both paths run one worker (in-process) and the same prepare (BEV mapping) + collate
(voxelisation) code and produce the same batches; the direct path parses the YAML and point files
of every sample from scratch, as a per-sample dataset over the source tree would. Prints medians
over interleaved repeats; the last line is the ratio shard / direct.

The source is the synthetic generator (ray-cast LiDAR; ``--beams`` / ``--azimuth-res`` set the
density, 32 x 1 deg ~ 10k points per frame) or ``--source toy``: points drawn uniformly around
each sensor (``--points`` per frame), the worst case for voxelisation (about one voxel per point).

    python bench/loader.py --scenarios 2 --frames 100 --repeats 5
    python bench/loader.py --scenarios 2 --frames 100 --beams 64 --azimuth-res 0.5   # ~40k points
    python bench/loader.py --source toy --points 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from models.grid import GridConfig
from trainer.data.build import FrameReader, build_sample, ego_allowed, sample_times
from trainer.data.classes import ClassGrouping
from trainer.data.collate import collate_prepared
from trainer.data.config import ConvertConfig, DataConfig
from trainer.data.convert import convert
from trainer.data.fixtures import write_toy_scenario
from trainer.data.loader import build_loader
from trainer.data.opencood import scan_split
from trainer.data.prepare import SamplePreparer
from trainer.data.synth.config import SynthConfig
from trainer.data.synth.generate import generate_dataset
from trainer.data.voxelize import FrameVoxelizer


def direct_epoch(src: Path, cfg: ConvertConfig, data: DataConfig, grid: GridConfig) -> int:
    """One pass reading every sample straight from the source files; returns samples read."""
    prep = SamplePreparer(grid, ClassGrouping(data.classes, data.drop_obj_types), max_agents=data.max_agents)
    voxelizer = FrameVoxelizer(grid)
    n, pending = 0, []
    for scn in scan_split(src):
        for ego in sorted(scn.agents):
            if not ego_allowed(cfg.mode, ego):
                continue
            for t in sample_times(scn, ego, cfg):
                sample = build_sample(FrameReader(scn, skip_bad=False, point_cache=0), ego, t, cfg)
                pending.append(prep(sample))
                n += 1
                if len(pending) == data.batch_size:
                    collate_prepared(pending, max_agents=data.max_agents, voxelizer=voxelizer)
                    pending = []
    if pending:  # the shard loader's val pass collates the remainder too
        collate_prepared(pending, max_agents=data.max_agents, voxelizer=voxelizer)
    return n


def points_per_frame(src: Path) -> float:
    """Mean points per LiDAR frame of the source tree (float32 x, y, z, intensity .bin files)."""
    sizes = [f.stat().st_size for f in src.glob("*/*/*.bin")]
    return sum(sizes) / max(len(sizes), 1) / 16


def shard_epoch(data: DataConfig, grid: GridConfig) -> int:
    return sum(b.num_scenes for b in build_loader(data, grid, split="val", rank=0, world_size=1, seed=0))


def write_source(args: argparse.Namespace, src: Path) -> None:
    """The OpenCOOD tree both paths read."""
    if args.source == "toy":
        for i in range(args.scenarios):
            write_toy_scenario(src / f"scn{i:03d}", frames=args.frames, objects=args.objects,
                               points_per_frame=args.points, seed=i)
        return
    base = SynthConfig()
    lidar = dict(num_beams=args.beams, azimuth_resolution_deg=args.azimuth_res)
    generate_dataset(SynthConfig(seed=0, num_scenarios=args.scenarios, num_frames=args.frames,
                                 vehicle_lidar=dataclasses.replace(base.vehicle_lidar, **lidar),
                                 infra_lidar=dataclasses.replace(base.infra_lidar, **lidar)), src, progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", choices=("synth", "toy"), default="synth")
    p.add_argument("--scenarios", type=int, default=2)
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--beams", type=int, default=32, help="synth: LiDAR beams")
    p.add_argument("--azimuth-res", type=float, default=1.0, help="synth: horizontal resolution (degrees)")
    p.add_argument("--points", type=int, default=10000, help="toy: points per LiDAR frame")
    p.add_argument("--objects", type=int, default=30, help="toy: objects per scenario")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", default="", help="keep inputs here (default: a temp dir)")
    args = p.parse_args()
    grid = GridConfig()
    cfg = ConvertConfig(mode="vc")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        src = root / "src"
        write_source(args, src)
        summary = convert(src, str(root / "shards" / "bench-%06d.tar"), cfg, maxcount=16, progress=False)
        data = DataConfig(val_shards=",".join(summary.shards), batch_size=2, num_workers=0)
        print(f"input: {args.source}, {summary.samples} samples, {points_per_frame(src):.0f} points/frame, "
              f"{len(summary.shards)} shards")
        times = {"direct": [], "shards": []}
        for _ in range(args.repeats):  # interleaved so that machine noise hits both alike
            t0 = time.perf_counter()
            n_direct = direct_epoch(src, cfg, data, grid)
            t1 = time.perf_counter()
            n_shard = shard_epoch(data, grid)
            t2 = time.perf_counter()
            assert n_direct == n_shard == summary.samples, (n_direct, n_shard, summary.samples)
            times["direct"].append(t1 - t0)
            times["shards"].append(t2 - t1)
    rate = {k: summary.samples / statistics.median(v) for k, v in times.items()}
    print(f"direct OpenCOOD read: median {statistics.median(times['direct']):.3f} s/epoch, {rate['direct']:.1f} samples/s")
    print(f"webdataset shards:    median {statistics.median(times['shards']):.3f} s/epoch, {rate['shards']:.1f} samples/s")
    print(f"ratio shards/direct: {rate['shards'] / rate['direct']:.2f}x")


if __name__ == "__main__":
    main()
