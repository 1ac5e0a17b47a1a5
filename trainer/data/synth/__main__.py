"""Command line: ``python -m trainer.data.synth --out DIR --scenarios N --seed S [...]``."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from trainer.data.synth.config import LAYOUTS, LidarConfig, SynthConfig, TrafficConfig
from trainer.data.synth.generate import generate_dataset


def build_parser() -> argparse.ArgumentParser:
    defaults, traffic, vehicle = SynthConfig(), TrafficConfig(), LidarConfig()
    p = argparse.ArgumentParser(prog="python -m trainer.data.synth",
                                description="Generate synthetic V2X scenes in the OpenCOOD layout.")
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per scenario)")
    p.add_argument("--scenarios", type=int, default=defaults.num_scenarios, help="number of scenarios")
    p.add_argument("--seed", type=int, default=defaults.seed, help="master seed")
    p.add_argument("--frames", type=int, default=defaults.num_frames, help="frames per scenario (10 Hz)")
    p.add_argument("--cavs", type=int, default=defaults.num_cavs, help="connected vehicles per scenario")
    p.add_argument("--infra", type=int, default=defaults.num_infra, help="infrastructure sensors per scenario")
    p.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(defaults.layouts),
                   help="road layouts to draw from")
    p.add_argument("--vehicles", type=int, default=traffic.num_vehicles, help="lane vehicles besides the CAVs")
    p.add_argument("--cyclists", type=int, default=traffic.num_cyclists, help="bicycles, scooters, motorcycles")
    p.add_argument("--pedestrians", type=int, default=traffic.num_pedestrians, help="pedestrians")
    p.add_argument("--beams", type=int, default=vehicle.num_beams, help="LiDAR beams (vehicles and infrastructure)")
    p.add_argument("--azimuth-res", type=float, default=vehicle.azimuth_resolution_deg,
                   help="LiDAR horizontal resolution (degrees)")
    p.add_argument("--range", type=float, default=vehicle.range_max, help="LiDAR range limit (m)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes generating scenarios in parallel (default: the CPU count)")
    return p


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Map the flags onto a validated ``SynthConfig`` (raises ValueError on bad values)."""
    defaults = SynthConfig()
    lidar = dict(num_beams=args.beams, azimuth_resolution_deg=args.azimuth_res, range_max=args.range)
    return SynthConfig(
        seed=args.seed, num_scenarios=args.scenarios, num_frames=args.frames, num_cavs=args.cavs,
        num_infra=args.infra, layouts=list(args.layouts),
        traffic=TrafficConfig(num_vehicles=args.vehicles, num_cyclists=args.cyclists, num_pedestrians=args.pedestrians),
        vehicle_lidar=dataclasses.replace(defaults.vehicle_lidar, **lidar),
        infra_lidar=dataclasses.replace(defaults.infra_lidar, **lidar),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    start = time.perf_counter()
    folders = generate_dataset(cfg, args.out, progress=not args.quiet, workers=args.workers)
    agent_frames = cfg.num_scenarios * cfg.num_frames * (cfg.num_cavs + cfg.num_infra)
    print(f"wrote {len(folders)} scenarios ({agent_frames} agent-frames) to {args.out} "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
