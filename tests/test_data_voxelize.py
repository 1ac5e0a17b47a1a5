"""The batch voxeliser (the C kernel behind ``FrameVoxelizer``) equals spconv's ``PointToVoxel`` run frame by
frame and concatenated, and rejects bad input with a clear error."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from spconv.pytorch.utils import PointToVoxel

from models.grid import GridConfig
from trainer.data.prepare import map_clouds
from trainer.data import _voxel
from trainer.data.voxelize import FrameVoxelizer

REPO = Path(__file__).resolve().parents[1]
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


def test_large_frames_on_the_default_grid_equal_point_to_voxel():
    """Thousands of voxels per frame (hash tables of 2^15 slots and more), frames of very different sizes,
    and a cap below the number of occupied cells."""
    grid = GridConfig()
    capped = GridConfig(max_voxels=3000, max_points_per_voxel=2)
    clouds = [cloud(20000, 10, spread=60.0), cloud(300, 11, spread=60.0), cloud(45000, 12, spread=30.0)]
    for g in (grid, capped):
        got = FrameVoxelizer(g)(clouds, [5, 1, 2])
        for x, y in zip(got, reference(clouds, [5, 1, 2], grid=g)):
            assert torch.equal(x, y)
    assert (got[1][:, 0] == 5).sum() == 3000 and len(got[0]) > 6000  # capped frames, many voxels in all


def test_interleaved_points_of_few_voxels_keep_their_order():
    """Runs of one cell (the kernel's shortcut for consecutive points) interleaved with other cells."""
    a, b, c = [0.1, 0.1, 0.1], [2.1, 0.1, 0.1], [0.1, 2.1, 0.1]
    order = [a, a, b, a, b, b, c, a, a, c, b]
    pts = torch.tensor([xyz + [float(i)] for i, xyz in enumerate(order)])
    got = FrameVoxelizer(GRID)([pts], [0])
    for x, y in zip(got, reference([pts], [0])):
        assert torch.equal(x, y)
    voxels, _, num = got
    assert num.tolist() == [3, 3, 2] and voxels[0, :, 3].tolist() == [0.0, 1.0, 3.0]


def test_grid_edges_and_non_finite_points():
    """A point on a cell's lower edge is in it, the grid's upper edge is out, NaN and inf are dropped."""
    x0, y0, z0, x1, y1, z1 = GRID.coors_range_xyz
    nan, inf = float("nan"), float("inf")
    edges = torch.tensor([[x0, y0, z0, 1.0], [x1, 0.0, 0.0, 2.0], [0.0, y1, 0.0, 3.0], [0.0, 0.0, z1, 4.0],
                          [x1 - 1e-4, y1 - 1e-4, z1 - 1e-4, 5.0], [-0.0, 0.5, -0.0, 6.0], [nan, 0.0, 0.0, 7.0],
                          [0.0, inf, 0.0, 8.0], [0.0, 0.0, -inf, 9.0], [0.5, 0.5, 0.5, nan]])
    voxels, coords, num = FrameVoxelizer(GRID)([edges], [0])
    finite = edges[:9][torch.isfinite(edges[:9]).all(dim=1)]
    want = reference([torch.cat([finite, edges[9:]])], [0])
    assert torch.equal(coords, want[1]) and torch.equal(num, want[2])
    assert torch.equal(voxels.nan_to_num(-1.0), want[0].nan_to_num(-1.0))  # the NaN intensity is kept
    assert voxels[:, 0, 3].tolist()[:3] == [1.0, 5.0, 6.0]
    assert coords[0].tolist() == [0, 0, 0, 0] and coords[1, 1:].tolist() == list(np.array(GRID.shape_zyx) - 1)


def test_results_own_their_storage():
    """The kernel's buffers are reused across calls; what a call returns is copied out of them, exactly sized."""
    vox = FrameVoxelizer(GRID)
    first = vox([cloud(60, 4)], [0])
    kept = [t.clone() for t in first]
    vox([cloud(500, 5, spread=6.0), cloud(80, 6)], [0, 1])  # overwrites (and grows) the buffers
    for t, k in zip(first, kept):
        assert torch.equal(t, k) and t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_threads_share_one_voxelizer():
    """The kernel frees the GIL and keeps no state between calls: concurrent calls equal serial ones."""
    vox = FrameVoxelizer(GridConfig())
    inputs = [[cloud(8000, 20 + i, spread=50.0), cloud(3000, 40 + i, spread=50.0)] for i in range(4)]
    serial = [vox(c, [0, 1]) for c in inputs]
    results: list = [None] * len(inputs)

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = vox(inputs[i], [0, 1])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        for x, y in zip(got, want):
            assert torch.equal(x, y)


def kernel_args(**change):
    """Arguments of a valid ``_voxel.voxelize`` call on two frames, with ``change`` applied."""
    args = dict(clouds=[cloud(10, 0).numpy(), cloud(5, 1).numpy()], affines=np.zeros((2, 3, 4)),
                frame_ids=np.array([0, 1]), voxels=np.empty((15, 3, 4), np.float32),
                coords=np.empty((15, 4), np.int32), num=np.empty(15, np.int32), lo=(-8.0, -4.0, -2.0),
                size=(0.5, 0.5, 1.0), cells=(32, 16, 4), max_voxels=50)
    args["affines"][:, :, :3] = np.identity(3)
    args.update(change)
    return list(args.values())


@pytest.mark.parametrize("change, error", [
    (dict(clouds=(cloud(3, 0).numpy(),)), (TypeError, "list")),
    (dict(affines=np.zeros((1, 3, 4))), (ValueError, r"2 clouds need affines \[2, 3, 4\]")),
    (dict(affines=np.zeros((2, 3, 4), np.float32)), (ValueError, "affines: expected .* format 'd'")),
    (dict(frame_ids=np.array([0, -1])), (ValueError, "frame id -1")),
    (dict(frame_ids=np.array([0, 2**31])), (ValueError, "frame id 2147483648")),
    (dict(frame_ids=np.array([0, 1], np.int32)), (ValueError, "frame_ids: expected .* format 'q'")),
    (dict(voxels=np.empty((14, 3, 4), np.float32)), (ValueError, "outputs disagree")),
    (dict(voxels=np.empty((10, 3, 4), np.float32), coords=np.empty((10, 4), np.int32), num=np.empty(10, np.int32)),
     (ValueError, "outputs hold 10 voxels, the frames may need 15")),
    (dict(coords=np.empty((15, 4), np.int64)), (ValueError, "coords: expected")),
    (dict(voxels=np.empty((15, 3, 4), np.float32)[:, :, ::2]), (ValueError, "contiguous")),
    (dict(clouds=[cloud(10, 0).numpy(), cloud(5, 1).numpy()[:, :3].copy()]), (ValueError, r"clouds\[1\] has 3 columns")),
    (dict(clouds=[cloud(10, 0).numpy(), cloud(5, 1).double().numpy()]), (ValueError, r"clouds\[1\]: expected")),
    (dict(size=(0.5, 0.0, 1.0)), (ValueError, "positive")),
    (dict(cells=(2048, 2048, 1024)), (ValueError, "too large")),
    (dict(max_voxels=0), (ValueError, "max_voxels >= 1")),
])
def test_kernel_rejects_bad_arguments(change, error):
    with pytest.raises(error[0], match=error[1]):
        _voxel.voxelize(*kernel_args(**change))


def test_kernel_writes_nothing_past_the_voxels_it_reports():
    args = kernel_args(voxels=np.full((15, 3, 4), 7.0, np.float32), coords=np.full((15, 4), 7, np.int32),
                       num=np.full(15, 7, np.int32))
    used = _voxel.voxelize(*args)
    voxels, coords, num = args[3:6]
    assert 0 < used < 15 and (voxels[used:] == 7).all() and (coords[used:] == 7).all() and (num[used:] == 7).all()
    assert (num[:used] >= 1).all() and (voxels[:used][np.arange(3) >= num[:used, None]] == 0).all()


def test_an_unbuilt_kernel_says_how_to_build_it():
    """A source checkout without ``pip install -e .`` has no ``_voxel`` extension: the import error names the fix."""
    code = "import sys; sys.modules['trainer.data._voxel'] = None; import trainer.data.voxelize"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 1 and "is not built: run `pip install -e .`" in run.stderr
