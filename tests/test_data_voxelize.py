"""The batch voxeliser equals spconv's ``PointToVoxel`` run frame by frame and concatenated."""

import numpy as np
import pytest
import torch
from spconv.pytorch.utils import PointToVoxel

from models.grid import GridConfig
from trainer.data.prepare import map_clouds
from trainer.data.voxelize import FrameVoxelizer

GRID = GridConfig(x_range=[-8.0, 8.0], y_range=[-4.0, 4.0], z_range=[-2.0, 2.0], voxel_size=[0.5, 0.5, 1.0],
                  max_points_per_voxel=3, max_voxels=50)


def reference(clouds, frame_ids, grid=GRID):
    """Per-frame PointToVoxel (a fresh one each time: no state shared between frames)."""
    voxels, coords, nums = [], [], []
    for cloud, f in zip(clouds, frame_ids):
        if len(cloud) == 0:
            continue
        v, c, n = PointToVoxel(vsize_xyz=list(grid.voxel_size), coors_range_xyz=grid.coors_range_xyz,
                               num_point_features=4, max_num_voxels=grid.max_voxels,
                               max_num_points_per_voxel=grid.max_points_per_voxel)(cloud)
        voxels.append(v)
        coords.append(torch.cat([torch.full((len(c), 1), f, dtype=torch.int32), c.to(torch.int32)], dim=1))
        nums.append(n.to(torch.int32))
    return torch.cat(voxels), torch.cat(coords), torch.cat(nums)


def cloud(n, seed, spread=10.0):
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.uniform(-spread, spread, (n, 2)), rng.uniform(-2.5, 2.5, (n, 1)),
                          rng.uniform(0, 1, (n, 1))], axis=1)
    return torch.from_numpy(pts.astype(np.float32))


def test_equals_point_to_voxel_frame_by_frame():
    crowded = torch.tensor([[0.1, 0.1, 0.1, float(i)] for i in range(7)])  # 7 points, one voxel, P = 3
    clouds = [cloud(40, 0), crowded, torch.zeros((0, 4)), cloud(200, 1, spread=3.0), cloud(5, 2)]
    frame_ids = [3, 0, 9, 17, 4]
    got = FrameVoxelizer(GRID)(clouds, frame_ids)
    want = reference(clouds, frame_ids)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w)
    voxels, coords, num = got
    first = (coords[:, 0] == 0).nonzero()[0, 0]
    assert num[first] == 3 and voxels[first, :, 3].tolist() == [0.0, 1.0, 2.0]  # the first P points, in order
    assert (coords[:, 0] == 9).sum() == 0  # the empty frame has no voxels
    assert (voxels[torch.arange(3) >= num[:, None]] == 0).all()  # unused point slots are zero


def test_max_voxels_caps_each_frame_like_spconv():
    dense = cloud(2000, 3, spread=8.0)  # far more than max_voxels = 50 occupied cells
    clouds, frame_ids = [dense, dense[:30], dense], [1, 2, 3]
    voxels, coords, num = FrameVoxelizer(GRID)(clouds, frame_ids)
    per_frame = [(coords[:, 0] == f).sum().item() for f in frame_ids]
    assert per_frame[0] == per_frame[2] == 50 and 0 < per_frame[1] < 30
    for g, w in zip((voxels, coords, num), reference(clouds, frame_ids)):
        assert torch.equal(g, w)


def test_out_of_range_points_are_dropped_and_state_does_not_leak_between_calls():
    vox = FrameVoxelizer(GRID)
    outside = torch.tensor([[100.0, 0.0, 0.0, 1.0], [0.0, 0.0, 5.0, 1.0]])
    voxels, coords, num = vox([outside], [0])
    assert voxels.shape == (0, 3, 4) and coords.shape == (0, 4) and num.shape == (0,)
    a = cloud(60, 4)
    first = vox([a], [0])
    vox([cloud(80, 5)], [0])
    again = vox([a], [0])  # the hash table was restored: same result as a fresh voxeliser
    for x, y, z in zip(first, again, FrameVoxelizer(GRID)([a], [0])):
        assert torch.equal(x, y) and torch.equal(x, z)


def test_bad_input_is_rejected():
    vox = FrameVoxelizer(GRID)
    with pytest.raises(ValueError, match="2 clouds but 1 frame ids"):
        vox([cloud(3, 0), cloud(3, 1)], [0])
    with pytest.raises(ValueError, match="float32"):
        vox([cloud(3, 0).double()], [0])
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        vox([cloud(3, 0)[:, :3]], [0])
    voxels, coords, num = vox([], [])
    assert voxels.shape == (0, 3, 4) and coords.shape == (0, 4)


def test_map_and_voxelize_equals_voxelising_the_mapped_clouds():
    rng = np.random.default_rng(5)
    sensor = [cloud(300, 6).numpy(), np.zeros((0, 4), np.float32), cloud(40, 7).numpy(), cloud(900, 8).numpy()]
    affines = np.zeros((4, 3, 4))
    for a in affines:
        yaw = rng.uniform(-np.pi, np.pi)
        a[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
        a[2, 2], a[2, 3] = 1.0, rng.uniform(-1, 1)
    mapped = [torch.from_numpy(map_clouds([c], a[None])) for c, a in zip(sensor, affines)]
    voxelizer = FrameVoxelizer(GRID)
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):  # the reused mapping buffer grows, then is reused
        ids = [10 + i for i in order]
        got = voxelizer.map_and_voxelize([sensor[i] for i in order], affines[order], ids)
        want = voxelizer([mapped[i] for i in order], ids)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    with pytest.raises(ValueError, match="affines"):
        voxelizer.map_and_voxelize(sensor, affines[:2], [0, 1, 2, 3])
