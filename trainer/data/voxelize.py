"""Voxelisation of many agent-frames at once, straight into one batch tensor.

spconv's ``PointToVoxel`` voxelises one cloud into its own ``max_voxels``-sized buffers, zeroes
the whole buffer on every call and returns copies; a batch of ``B * A * T`` frames then pays a
copy per frame and a concatenation. :class:`FrameVoxelizer` calls the same CPU kernel
(``SpconvOps.point2voxel_cpu``, spconv 2.3) with each frame's output slice of a single
preallocated tensor, so every voxel is written once. The result equals ``PointToVoxel`` run frame
by frame and concatenated (``tests/test_data_voxelize.py`` checks this), including the
``max_voxels`` cap per frame and the first ``max_points_per_voxel`` points kept per voxel.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from spconv.core_cc.csrc.sparse.all import SpconvOps
from spconv.pytorch.cppcore import torch_tensor_to_tv

from models.grid import GridConfig
from trainer.data.geometry import apply_affine


class FrameVoxelizer:
    """CPU voxeliser for lists of point clouds, given in the BEV frame (``__call__``) or mapped into it
    frame by frame (``map_and_voxelize``). Build one per worker: it holds a dense hash grid."""

    def __init__(self, grid: GridConfig) -> None:
        self.max_points = grid.max_points_per_voxel
        self.max_voxels = grid.max_voxels
        self.vsize, self.grid_size, self.grid_stride, self.coors_range = SpconvOps.calc_point2voxel_meta_data(
            list(grid.voxel_size), grid.coors_range_xyz)
        self._hash: torch.Tensor | None = None  # [nz, ny, nx] int32, -1 = empty; the kernel restores it
        self._hash_view = None  # tensorview of _hash (a raw pointer: _hash must outlive it)
        self._scratch = torch.empty((0, 4), dtype=torch.float32)  # map_and_voxelize's mapped frame
        self._scratch_view = None

    def hash_view(self):
        """The kernel's dense voxel table, allocated on first use (inside the worker, never pickled)."""
        if self._hash is None:
            self._hash = torch.full(list(self.grid_size), -1, dtype=torch.int32)
            self._hash_view = torch_tensor_to_tv(self._hash)
        return self._hash_view

    def __call__(self, clouds: list[torch.Tensor], frame_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Voxelise ``clouds[i]`` ([N_i, 4] float32 BEV x, y, z, intensity) as frame ``frame_ids[i]``.

        Returns voxels [V, P, 4] float32 (unused point slots zero), coords [V, 4] int32
        ``(frame_id, z, y, x)`` and num_points [V] int32, frames in the given order.
        """
        for cloud in clouds:
            if cloud.dtype != torch.float32 or cloud.dim() != 2 or cloud.shape[1] != 4:
                raise ValueError(f"expected [N, 4] float32 clouds, got {tuple(cloud.shape)} {cloud.dtype}")
        clouds = [c.contiguous() for c in clouds]
        return self._voxelize([len(c) for c in clouds], frame_ids, lambda i: torch_tensor_to_tv(clouds[i]))

    def map_and_voxelize(self, clouds: list[np.ndarray], affines: np.ndarray,
                         frame_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Map ``clouds[i]`` ([N_i, 4] float32, any frame) by ``affines[i]`` ([3, 4], see
        ``geometry.apply_affine``) into the BEV frame, then voxelise it as frame ``frame_ids[i]``.

        Equals ``self(mapped clouds, frame_ids)``; each frame is mapped into a small reused buffer
        right before the kernel reads it, so the mapped points never leave the cache.
        """
        if len(affines) != len(clouds):
            raise ValueError(f"{len(clouds)} clouds but {len(affines)} affines")
        for cloud in clouds:
            if cloud.ndim != 2 or cloud.shape[1] != 4:
                raise ValueError(f"expected [N, 4] clouds, got {cloud.shape}")
        sizes = [len(c) for c in clouds]
        if max(sizes, default=0) > len(self._scratch):
            self._scratch = torch.empty((max(sizes), 4), dtype=torch.float32)
            self._scratch_view = torch_tensor_to_tv(self._scratch)

        def mapped(i: int):
            apply_affine(clouds[i], affines[i], dtype=np.float32, out=self._scratch.numpy()[:sizes[i]])
            return self._scratch_view.slice_first_axis(0, sizes[i])

        return self._voxelize(sizes, frame_ids, mapped)

    def _voxelize(self, sizes: list[int], frame_ids: list[int],
                  cloud_view: Callable[[int], object]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The kernel over frames of ``sizes[i]`` points; ``cloud_view(i)`` gives frame i's tensorview
        (valid until the next call)."""
        if len(sizes) != len(frame_ids):
            raise ValueError(f"{len(sizes)} clouds but {len(frame_ids)} frame ids")
        caps = [min(n, self.max_voxels) for n in sizes]  # a voxel holds >= 1 point
        total = sum(caps)
        voxels = torch.empty((total, self.max_points, 4), dtype=torch.float32)
        # (frame, z, y, x); the kernel writes z, y, x through a strided view. tensorview bounds-checks a
        # slice of that view as if the view were contiguous (3 ints a row), so a third more rows keep
        # every slice of the first ``total`` rows in bounds; the extra rows are never touched
        coords = torch.empty((total + (total + 2) // 3 + 1, 4), dtype=torch.int32)
        num = torch.empty((total,), dtype=torch.int32)
        point_voxel = torch.empty((max(sizes, default=0),), dtype=torch.int64)  # unused output
        # tensorview wraps raw pointers: the tensors above stay referenced until the end
        outputs = [torch_tensor_to_tv(t) for t in (voxels, coords[:, 1:], num)]
        point_voxel_view, hash_view = torch_tensor_to_tv(point_voxel), self.hash_view()
        offset = 0
        for i, (size, cap, frame) in enumerate(zip(sizes, caps, frame_ids)):
            used = 0
            if cap:
                used = SpconvOps.point2voxel_cpu(  # clears its output slices, then fills them
                    cloud_view(i), *(t.slice_first_axis(offset, offset + cap) for t in outputs), hash_view,
                    point_voxel_view.slice_first_axis(0, size), self.vsize, self.grid_size, self.grid_stride,
                    self.coors_range, False, True,
                )[0].shape[0]
            coords[offset:offset + used, 0] = frame
            offset += used
        return voxels[:offset], coords[:offset], num[:offset]
