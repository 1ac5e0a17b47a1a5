"""One scenario: build the world, run the traffic, and record every agent's LiDAR and labels per frame."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.synth.config import SynthConfig
from trainer.data.synth.lidar import RayGrid, cast_scan
from trainer.data.synth.traffic import Traffic
from trainer.data.synth.world import build_world
from trainer.data.synth.writer import FrameLabels, write_agent_frame

INFRA_HEIGHT_JITTER = 0.8
"""Infrastructure mounting heights vary by up to this much (m) around the configured height."""


@dataclass(frozen=True)
class ScenarioStreams:
    """Independent random streams of one scenario, derived from (seed, scenario index) only."""

    world: np.random.Generator
    traffic: np.random.Generator
    lidar: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int, index: int) -> "ScenarioStreams":
        world, traffic, lidar = np.random.SeedSequence([seed, index]).spawn(3)
        return cls(np.random.default_rng(world), np.random.default_rng(traffic), np.random.default_rng(lidar))


def scenario_name(seed: int, index: int) -> str:
    """Folder name of scenario ``index`` generated from ``seed``."""
    return f"synth_seed{seed}_{index:04d}"


@dataclass(frozen=True)
class InfraSensor:
    """A fixed sensor on a pole (negative agent id)."""

    agent_id: int
    xyz: np.ndarray
    yaw: float


def simulate_scenario(cfg: SynthConfig, index: int, out_dir: Path,
                      on_frame: Callable[[], None] | None = None) -> Path:
    """Generate scenario ``index`` into ``out_dir / scenario_name(...)`` and return that folder."""
    streams = ScenarioStreams.from_seed(cfg.seed, index)
    layout = cfg.layouts[int(streams.world.integers(len(cfg.layouts)))]
    world = build_world(layout, streams.world)
    traffic = Traffic(world, cfg.traffic, cfg.num_cavs, streams.traffic)
    infra = [
        InfraSensor(agent_id=-(k + 1), yaw=float(yaw), xyz=np.array([x, y, max(0.5, cfg.infra_lidar.mount_height
                    + streams.world.uniform(-INFRA_HEIGHT_JITTER, INFRA_HEIGHT_JITTER))]))
        for k, (x, y, yaw) in enumerate(world.infra_mounts[: cfg.num_infra])
    ]
    vehicle_grid, infra_grid = RayGrid(cfg.vehicle_lidar), RayGrid(cfg.infra_lidar)
    cav_ids = traffic.cav_ids
    dt = 1.0 / cfg.rate_hz
    time_s = 0.0
    for _ in range(int(round(cfg.warmup_s * cfg.rate_hz))):
        traffic.step(time_s, dt)
        time_s += dt

    scenario_dir = out_dir / scenario_name(cfg.seed, index)
    for frame in range(cfg.num_frames):
        snap = traffic.snapshot()
        all_boxes = np.concatenate([world.occluders, snap.boxes])
        all_refl = np.concatenate([world.occluder_reflectivity, snap.reflectivity])
        n_occ = len(world.occluders)
        labels = FrameLabels(snap)
        for cav_id in cav_ids:
            i = int(np.nonzero(snap.ids == cav_id)[0][0])
            body = snap.boxes[i]
            xyz = np.array([body[0], body[1], cfg.vehicle_lidar.mount_height])
            others = np.ones(len(all_boxes), dtype=bool)
            others[n_occ + i] = False
            points = cast_scan(vehicle_grid, xyz, body[6], all_boxes[others], all_refl[others], streams.lidar,
                               self_box=body)
            _write(scenario_dir / str(cav_id), frame, xyz, body[6], snap.speeds[i] * 3.6,
                   labels, labels.visible_ids(xyz[:2], cfg.label_radius, cav_id), points)
        for sensor in infra:
            points = cast_scan(infra_grid, sensor.xyz, sensor.yaw, all_boxes, all_refl, streams.lidar)
            _write(scenario_dir / str(sensor.agent_id), frame, sensor.xyz, sensor.yaw, 0.0,
                   labels, labels.visible_ids(sensor.xyz[:2], cfg.label_radius, None), points)
        if on_frame is not None:
            on_frame()
        traffic.step(time_s, dt)
        time_s += dt
    return scenario_dir


def _write(agent_dir: Path, frame: int, xyz: np.ndarray, yaw: float, speed_kmh: float, labels: FrameLabels,
           ids: list[int], points: np.ndarray) -> None:
    pose = [float(xyz[0]), float(xyz[1]), float(xyz[2]), 0.0, float(np.degrees(yaw)), 0.0]
    write_agent_frame(agent_dir, frame, labels.render(pose, speed_kmh, ids), points)


