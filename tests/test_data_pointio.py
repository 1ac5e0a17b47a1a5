"""Point files (.bin, ASCII and binary .pcd) and pose geometry."""

import numpy as np
import pytest

from trainer.data.geometry import (
    apply_affine,
    relative_se2,
    se2_inverse,
    sensor_to_bev,
    sensor_to_bev_affine,
    x_to_world,
)
from trainer.data.pointio import SourceFormatError, read_pcd, read_points, write_bin, write_pcd

POINTS = np.array([[1.5, -2.25, 0.5, 0.1], [10.0, 20.0, -1.75, 0.9], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)


@pytest.mark.parametrize("binary", [True, False])
def test_pcd_roundtrip(tmp_path, binary):
    path = tmp_path / "f.pcd"
    write_pcd(path, POINTS, binary=binary)
    np.testing.assert_allclose(read_points(path), POINTS, atol=1e-6)


def test_handwritten_ascii_pcd_without_intensity(tmp_path):
    path = tmp_path / "f.pcd"
    path.write_text("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 2\nHEIGHT 1\n"
                    "POINTS 2\nDATA ascii\n1 2 3\n4 5 6\n")
    np.testing.assert_allclose(read_pcd(path), [[1, 2, 3, 0], [4, 5, 6, 0]])


def test_binary_pcd_with_extra_double_field(tmp_path):
    path = tmp_path / "f.pcd"
    table = np.zeros(2, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("t", "<f8"), ("intensity", "<f4")])
    table["x"], table["y"], table["z"], table["t"], table["intensity"] = [1, 2], [3, 4], [5, 6], [7, 8], [0.5, 0.25]
    header = ("FIELDS x y z t intensity\nSIZE 4 4 4 8 4\nTYPE F F F F F\nCOUNT 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\n"
              "POINTS 2\nDATA binary\n")
    path.write_bytes(header.encode() + table.tobytes())
    np.testing.assert_allclose(read_pcd(path), [[1, 3, 5, 0.5], [2, 4, 6, 0.25]])


def test_bin_roundtrip_and_empty(tmp_path):
    write_bin(tmp_path / "a.bin", POINTS)
    np.testing.assert_array_equal(read_points(tmp_path / "a.bin"), POINTS)
    write_bin(tmp_path / "e.bin", np.zeros((0, 4)))
    assert read_points(tmp_path / "e.bin").shape == (0, 4)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.bin", b"\x00" * 20, "not a multiple of 16"),
        ("bad.pcd", b"FIELDS x y\nSIZE 4 4\nTYPE F F\nCOUNT 1 1\nPOINTS 0\nDATA ascii\n", "has no field"),
        ("trunc.pcd", b"FIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nPOINTS 5\nDATA binary\n" + b"\x00" * 12,
         "truncated"),
        ("nodata.pcd", b"FIELDS x y z\n", "no DATA line"),
        ("bad.txt", b"", "unknown point file type"),
    ],
)
def test_malformed_point_files_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceFormatError, match=message) as info:
        read_points(path)
    assert str(path) in str(info.value)


def test_x_to_world_matches_opencood_yaw_convention():
    m = x_to_world([1.0, 2.0, 3.0, 0.0, 90.0, 0.0])
    np.testing.assert_allclose(m @ [1.0, 0.0, 0.0, 1.0], [1.0, 3.0, 3.0, 1.0], atol=1e-12)
    pitched = x_to_world([0, 0, 0, 0, 0, 30.0])  # positive pitch lifts the x axis (CARLA)
    np.testing.assert_allclose(pitched[:3, 0], [np.cos(np.radians(30)), 0, np.sin(np.radians(30))], atol=1e-12)


def test_sensor_to_bev_removes_roll_pitch_and_uses_reference_height():
    pose = np.array([5.0, -3.0, 4.0, 10.0, 30.0, -5.0])
    pts = np.array([[2.0, 1.0, -0.5, 0.7]])
    world = x_to_world(pose) @ [2.0, 1.0, -0.5, 1.0]
    bev = sensor_to_bev(pts, pose, z_ref=1.5)
    # BEV -> world with yaw only reproduces the world point; z is measured from z_ref
    back = relative_se2(pose, np.zeros(6)) @ [bev[0, 0], bev[0, 1], 1.0]
    np.testing.assert_allclose(back[:2], world[:2], atol=1e-9)
    assert bev[0, 2] == pytest.approx(world[2] - 1.5)
    assert bev[0, 3] == pytest.approx(0.7)


def test_pose_geometry_broadcasts_over_leading_axes():
    rng = np.random.default_rng(0)
    poses = np.concatenate([rng.uniform(-50, 50, (3, 2, 3)), rng.uniform(-180, 180, (3, 2, 3))], axis=-1)
    z_ref = 1.7
    batched_world, batched_bev = x_to_world(poses), sensor_to_bev_affine(poses, z_ref)
    batched_rel = relative_se2(poses, poses[:, -1:])  # every frame to its agent's last frame
    assert batched_world.shape == (3, 2, 4, 4) and batched_bev.shape == (3, 2, 3, 4) and batched_rel.shape == (3, 2, 3, 3)
    for a, t in np.ndindex(3, 2):
        np.testing.assert_allclose(batched_world[a, t], x_to_world(poses[a, t]), atol=1e-12)
        np.testing.assert_allclose(batched_bev[a, t], sensor_to_bev_affine(poses[a, t], z_ref), atol=1e-12)
        np.testing.assert_allclose(batched_rel[a, t], relative_se2(poses[a, t], poses[a, -1]), atol=1e-12)
        np.testing.assert_allclose(se2_inverse(batched_rel[a, t]) @ batched_rel[a, t], np.identity(3), atol=1e-12)
    pts = rng.normal(size=(50, 4)).astype(np.float32)
    out = np.empty_like(pts)
    apply_affine(pts, batched_bev[1, 0], dtype=np.float32, out=out)
    np.testing.assert_allclose(out, sensor_to_bev(pts, poses[1, 0], z_ref), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(out[:, 3], pts[:, 3])
