"""Voxeliser speed: the loader's C kernel (``FrameVoxelizer.map_and_voxelize``) against spconv's
``PointToVoxel`` run frame by frame on the mapped points, then concatenated with frame ids.

Both take the same prepared synthetic samples (sensor-frame points plus each frame's affine into
the BEV frame) and must produce equal batches, which is checked before timing. Batches of
``--batch-size`` samples, interleaved repeats, medians; the last line is the ratio spconv / kernel.

    python bench/voxelize.py                                        # synthetic default density, ~10k points/frame
    python bench/voxelize.py --lidar 32x1.0 64x1.0 --out docs/results  # also ~21k points/frame; write the tables
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from spconv.pytorch.utils import PointToVoxel  # noqa: E402

from bench.common import machine_info, markdown_table  # noqa: E402
from bench.loader import sharded_source  # noqa: E402
from models.grid import GridConfig  # noqa: E402
from trainer.data.classes import ClassGrouping  # noqa: E402
from trainer.data.config import ConvertConfig, DataConfig  # noqa: E402
from trainer.data.prepare import PreparedSample, SamplePreparer, map_clouds  # noqa: E402
from trainer.data.voxelize import FrameVoxelizer  # noqa: E402


def frames_of(batch: list[PreparedSample]) -> tuple[list[np.ndarray], np.ndarray, list[int]]:
    """The batch's agent-frames: sensor-frame clouds, their affines [F, 3, 4], frame ids 0..F-1."""
    clouds = [c for s in batch for c in s.clouds]
    return clouds, np.concatenate([s.cloud_affines for s in batch]), list(range(len(clouds)))


def spconv_route(grid: GridConfig, batch: list[PreparedSample]) -> tuple[torch.Tensor, ...]:
    """Map each frame (float64, rounded to float32), ``PointToVoxel`` it, concatenate with frame ids."""
    point_to_voxel = PointToVoxel(vsize_xyz=list(grid.voxel_size), coors_range_xyz=grid.coors_range_xyz,
                                  num_point_features=4, max_num_voxels=grid.max_voxels,
                                  max_num_points_per_voxel=grid.max_points_per_voxel)
    voxels, coords, nums = [], [], []
    clouds, affines, _ = frames_of(batch)
    for frame, (cloud, affine) in enumerate(zip(clouds, affines)):
        v, c, n = point_to_voxel(torch.from_numpy(map_clouds([cloud], affine[None])))
        voxels.append(v)
        coords.append(torch.cat([torch.full((len(c), 1), frame, dtype=torch.int32), c], dim=1))
        nums.append(n)
    return torch.cat(voxels), torch.cat(coords), torch.cat(nums)


def kernel_route(voxelizer: FrameVoxelizer, batch: list[PreparedSample]) -> tuple[torch.Tensor, ...]:
    return voxelizer.map_and_voxelize(*frames_of(batch))


def prepared_samples(density: str, args: argparse.Namespace, root: Path) -> list[PreparedSample]:
    """Synthetic samples at ``density``, read back from shards and prepared (no augmentation)."""
    _, _, decoded = sharded_source("synth", density, args, root, ConvertConfig(mode="vc"))
    data = DataConfig(val_shards="unused")
    prep = SamplePreparer(GridConfig(), ClassGrouping(data.classes, data.drop_obj_types), max_agents=data.max_agents)
    return [prep(s) for s in decoded]


def measure(density: str, args: argparse.Namespace) -> dict:
    """Check that both routes agree on every batch, then time interleaved repeats of each."""
    grid = GridConfig()
    with tempfile.TemporaryDirectory() as tmp:
        samples = prepared_samples(density, args, Path(tmp))
    batches = [samples[i:i + args.batch_size] for i in range(0, len(samples), args.batch_size)]
    voxelizer = FrameVoxelizer(grid)
    for batch in batches:
        for a, b in zip(spconv_route(grid, batch), kernel_route(voxelizer, batch)):
            if not torch.equal(a, b):
                raise RuntimeError("the kernel and spconv's PointToVoxel disagree")
    routes = {"spconv": lambda b: spconv_route(grid, b), "kernel": lambda b: kernel_route(voxelizer, b)}
    times: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(args.repeats):  # interleaved so that machine noise hits both alike
        for name, route in routes.items():
            t0 = time.perf_counter()
            for batch in batches:
                route(batch)
            times[name].append((time.perf_counter() - t0) * 1e3 / len(samples))
    paired = [a / b for a, b in zip(times["spconv"], times["kernel"])]
    ms = {name: statistics.median(t) for name, t in times.items()}
    return {"density": density, "samples": len(samples),
            "points_per_frame": sum(len(c) for s in samples for c in s.clouds) / sum(len(s.clouds) for s in samples),
            "ms_per_sample": ms, "ms_per_sample_all": times, "ratio": ms["spconv"] / ms["kernel"],
            "paired_ratio": statistics.median(paired), "paired_range": [min(paired), max(paired)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lidar", nargs="+", default=["32x1.0"], help="synthetic LiDAR densities BEAMSxAZIMUTH_DEG")
    p.add_argument("--scenarios", type=int, default=2)
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--out", type=Path, default=None, help="also write voxelize.{json,md} here (e.g. docs/results)")
    args = p.parse_args()
    results = []
    for density in args.lidar:
        r = measure(density, args)
        results.append(r)
        ms = r["ms_per_sample"]
        print(f"{density}: {r['samples']} samples, {r['points_per_frame']:.0f} points per frame; median ms per "
              f"sample: spconv PointToVoxel {ms['spconv']:.2f}, kernel {ms['kernel']:.2f}; ratio {r['ratio']:.2f}x "
              f"(paired: median {r['paired_ratio']:.2f}x, range {r['paired_range'][0]:.2f}-{r['paired_range'][1]:.2f}x)")
    if args.out is not None:
        command = "python bench/voxelize.py " + " ".join(sys.argv[1:])
        rows = [[r["density"], f"{r['points_per_frame']:.0f}", r["samples"], f"{r['ms_per_sample']['spconv']:.2f}",
                 f"{r['ms_per_sample']['kernel']:.2f}", f"{r['ratio']:.2f}x", f"{r['paired_ratio']:.2f}x",
                 f"{r['paired_range'][0]:.2f}-{r['paired_range'][1]:.2f}x"] for r in results]
        table = markdown_table(["density", "points/frame", "samples", "spconv ms/sample", "kernel ms/sample", "ratio",
                                "paired ratio", "paired range"], rows)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "voxelize.json").write_text(json.dumps(
            {"command": command, "repeats": args.repeats, "machine": machine_info(), "results": results}, indent=1))
        (args.out / "voxelize.md").write_text(
            f"Command: `{command}` ({args.repeats} interleaved repeats, medians)\n\n{table}\n")
    print(f"ratio spconv/kernel: {results[0]['ratio']:.2f}x")


if __name__ == "__main__":
    main()
