"""Ray casting: ranges, occlusion between agents, self-hit removal, and the OpenCOOD pose."""

import dataclasses

import numpy as np
import pytest

from trainer.data.synth.config import LidarConfig
from trainer.data.synth.geometry import x_to_world
from trainer.data.synth.lidar import RayGrid, cast_scan, ray_box_hits

CLEAN = dict(range_noise_std=0.0, dropout=0.0)


def _in_box(points_world: np.ndarray, box: np.ndarray, margin: float = 0.05) -> np.ndarray:
    c, s = np.cos(box[6]), np.sin(box[6])
    d = points_world[:, :3] - box[:3]
    lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    return ((np.abs(lx) <= box[3] / 2 + margin) & (np.abs(ly) <= box[4] / 2 + margin)
            & (np.abs(d[:, 2]) <= box[5] / 2 + margin))


def _to_world(points: np.ndarray, xyz, yaw) -> np.ndarray:
    pose = [*xyz, 0.0, np.degrees(yaw), 0.0]
    return points[:, :3] @ x_to_world(pose)[:3, :3].T + np.asarray(xyz)


def test_ray_hits_box_face_at_right_range_and_misses_otherwise():
    box = np.array([10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0])
    dirs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5), 0.0]])
    t, cos_inc = ray_box_hits(np.zeros(3), dirs, box)
    assert t[0] == pytest.approx(9.0) and cos_inc[0] == pytest.approx(1.0)
    assert np.isinf(t[1:]).all()
    rotated = box.copy()
    rotated[6] = np.pi / 4  # a corner now points at the origin: sqrt(2) instead of 1 from the centre
    t_rot, _ = ray_box_hits(np.zeros(3), dirs[:1], rotated)
    assert t_rot[0] == pytest.approx(10.0 - np.sqrt(2.0))
    inside, _ = ray_box_hits(np.array([10.0, 0.0, 0.0]), dirs, box)
    assert np.isinf(inside).all()


def test_scan_ranges_ground_and_range_limit():
    cfg = LidarConfig(num_beams=16, elevation_min_deg=-15.0, elevation_max_deg=-15.0 + 15 * 2.0, **CLEAN)
    grid = RayGrid(cfg)
    box = np.array([[15.0, 0.0, 1.0, 4.0, 2.0, 2.0, 0.0]])
    pts = cast_scan(grid, np.array([0.0, 0.0, 1.8]), 0.0, box, np.array([0.5]), np.random.default_rng(0))
    assert pts.dtype == np.float32 and pts.shape[1] == 4
    on_box = _in_box(_to_world(pts, [0, 0, 1.8], 0.0), box[0])
    assert on_box.sum() > 5
    assert pts[on_box, 0].min() == pytest.approx(13.0, abs=1e-3)  # front face at 15 - 2
    ground = ~on_box
    assert np.allclose(pts[ground, 2], -1.8, atol=1e-4)  # flat ground 1.8 m below the sensor
    assert (np.linalg.norm(pts[:, :3], axis=1) <= cfg.range_max + 1e-3).all()
    assert 0.0 <= pts[:, 3].min() and pts[:, 3].max() <= 1.0
    short = cast_scan(RayGrid(dataclasses.replace(cfg, range_max=10.0)), np.array([0.0, 0.0, 1.8]), 0.0, box,
                      np.array([0.5]), np.random.default_rng(0))
    assert (np.linalg.norm(short[:, :3], axis=1) <= 10.0 + 1e-3).all() and len(short) < len(pts)


def test_wall_occludes_object_from_ego_but_not_from_infrastructure():
    car = np.array([25.0, 0.0, 0.75, 4.5, 1.9, 1.5, 0.0])
    wall = np.array([12.0, 0.0, 2.0, 0.4, 12.0, 4.0, 0.0])
    boxes, refl = np.stack([wall, car]), np.array([0.3, 0.5])
    ego_xyz, infra_xyz = np.array([0.0, 0.0, 1.9]), np.array([25.0, 15.0, 5.0])
    vehicle = RayGrid(LidarConfig(**CLEAN))
    infra = RayGrid(LidarConfig(num_beams=32, elevation_min_deg=-40.0, elevation_max_deg=2.0, mount_height=5.0,
                                **CLEAN))
    ego_pts = _to_world(cast_scan(vehicle, ego_xyz, 0.0, boxes, refl, np.random.default_rng(0)), ego_xyz, 0.0)
    yaw = -np.pi / 2
    infra_pts = _to_world(cast_scan(infra, infra_xyz, yaw, boxes, refl, np.random.default_rng(0)), infra_xyz, yaw)
    assert _in_box(ego_pts, wall).sum() > 20
    assert _in_box(ego_pts, car).sum() == 0
    assert _in_box(infra_pts, car).sum() > 20
    without_wall = cast_scan(vehicle, ego_xyz, 0.0, car[None], refl[1:], np.random.default_rng(0))
    assert _in_box(_to_world(without_wall, ego_xyz, 0.0), car).sum() > 20


def test_self_box_returns_are_removed():
    cfg = LidarConfig(num_beams=8, elevation_min_deg=-60.0, elevation_max_deg=-10.0, **CLEAN)
    body = np.array([0.0, 0.0, 0.75, 4.6, 1.9, 1.5, 0.3])
    xyz = np.array([0.0, 0.0, 1.9])
    kept = cast_scan(RayGrid(cfg), xyz, 0.3, np.zeros((0, 7)), np.zeros(0), np.random.default_rng(0), self_box=body)
    raw = cast_scan(RayGrid(cfg), xyz, 0.3, np.zeros((0, 7)), np.zeros(0), np.random.default_rng(0))
    footprint = body.copy()
    footprint[2], footprint[5] = 0.0, 10.0
    assert _in_box(_to_world(raw, xyz, 0.3), footprint, margin=0.0).sum() > 0
    assert _in_box(_to_world(kept, xyz, 0.3), footprint, margin=-0.01).sum() == 0


def test_dropout_and_noise_are_applied_and_seeded():
    box = np.array([[10.0, 0.0, 1.0, 2.0, 2.0, 2.0, 0.0]])
    noisy = RayGrid(LidarConfig(num_beams=16, dropout=0.3, range_noise_std=0.05))
    clean = RayGrid(LidarConfig(num_beams=16, **CLEAN))
    xyz = np.array([0.0, 0.0, 1.9])
    a = cast_scan(noisy, xyz, 0.0, box, np.array([0.5]), np.random.default_rng(1))
    b = cast_scan(noisy, xyz, 0.0, box, np.array([0.5]), np.random.default_rng(1))
    c = cast_scan(clean, xyz, 0.0, box, np.array([0.5]), np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert 0.6 * len(c) < len(a) < 0.8 * len(c)
    assert not np.allclose(a[:, 2].min(), c[:, 2].min(), atol=1e-6)


def test_x_to_world_matches_opencood_convention():
    m = x_to_world([1.0, 2.0, 3.0, 0.0, 90.0, 0.0])
    assert np.allclose(m @ np.array([1.0, 0.0, 0.0, 1.0]), [1.0, 3.0, 3.0, 1.0])
    pitched = x_to_world([0.0, 0.0, 0.0, 0.0, 0.0, 90.0])
    assert np.allclose(pitched[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    r = x_to_world([0, 0, 0, 10.0, 33.0, -7.0])[:3, :3]
    assert np.allclose(r @ r.T, np.eye(3)) and np.linalg.det(r) == pytest.approx(1.0)
