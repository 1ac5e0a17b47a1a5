"""Stage-1 BEV image: the original points of masked cells next to what the decoder reconstructed there."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from models.grid import GridConfig  # noqa: E402
from trainer.pretrain.chamfer import gather_cells  # noqa: E402
from trainer.pretrain.targets import ReconTargets  # noqa: E402


def reconstructed_cells_xy(recon_points: Tensor, targets: ReconTargets, grid: GridConfig, *, bev_stride: int,
                           scene: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(original [N, 2], reconstructed [M, 2]) x, y in the ego frame of the masked cells of one scene.

    recon_points: [B, P, 3, H, W] decoder output; targets: the cells' original points (offsets).
    """
    b, _, _, h, w = recon_points.shape
    in_scene = (targets.cell_index // (h * w)) == scene
    cells = targets.cell_index[in_scene]
    cell_w, cell_h = grid.voxel_size[0] * bev_stride, grid.voxel_size[1] * bev_stride
    iy, ix = (cells % (h * w)) // w, cells % w
    centre = np.stack([grid.x_range[0] + (ix.cpu().numpy() + 0.5) * cell_w,
                       grid.y_range[0] + (iy.cpu().numpy() + 0.5) * cell_h], axis=1)       # [Nc, 2]
    original = targets.points[in_scene][..., :2].cpu().numpy() + centre[:, None]          # [Nc, N, 2]
    original = original[targets.valid[in_scene].cpu().numpy()]
    predicted = gather_cells(recon_points, cells).float()[..., :2].cpu().numpy() + centre[:, None]
    return original.reshape(-1, 2), predicted.reshape(-1, 2)


def render_reconstruction_png(path: str | Path, recon_points: Tensor, targets: ReconTargets, grid: GridConfig, *,
                              bev_stride: int, scene: int = 0, title: str = "") -> Path:
    """Side-by-side BEV scatter of original vs reconstructed points of the masked cells; returns the path."""
    original, predicted = reconstructed_cells_xy(recon_points, targets, grid, bev_stride=bev_stride, scene=scene)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
    for ax, pts, name, colour in ((axes[0], original, "original (masked cells)", "tab:blue"),
                                  (axes[1], predicted, "reconstructed", "tab:red")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, c=colour)
        ax.set_title(name)
        ax.set_xlim(*grid.x_range)
        ax.set_ylim(*grid.y_range)
        ax.set_aspect("equal")
        ax.set_xlabel("x (m)")
    axes[0].set_ylabel("y (m)")
    if title:
        fig.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
