"""Model configuration: a typed, OmegaConf-mergeable dataclass plus named sizes.

Use ``model_config("tiny" | "base" | "large")`` for a preset and merge overrides with OmegaConf::

    cfg = OmegaConf.merge(OmegaConf.structured(model_config("base")), {"num_modes": 3})
    cfg = OmegaConf.to_object(cfg)  # back to a validated ModelConfig
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from models.grid import GridConfig

ENCODER_KINDS = ("spconv", "pillars")
REFINE_POINTS = 32
"""Points per box of the point refinement in the ``small``, ``base`` and ``large`` presets (``tiny``, the
tests' size, has none)."""
MODEL_SIZES = ("tiny", "small", "base", "large")


@dataclass(kw_only=True)
class ModelConfig:
    """V2XPnP-style multi-agent perception + prediction model."""

    grid: GridConfig = field(default_factory=GridConfig)
    """Voxel grid of every agent's BEV frame (must match the data pipeline's voxeliser)."""
    encoder: str = "spconv"
    """LiDAR encoder: ``spconv`` (SECOND-like sparse 3-D convs) or ``pillars`` (PointPillars)."""
    sparse_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 64])
    """Encoder stage widths; stage 0 runs at voxel resolution, later stages downsample."""
    sparse_strides: list[int] = field(default_factory=lambda: [1, 2, 1, 1])
    """BEV (x, y) stride of each encoder stage (1 or 2); their product is the BEV stride."""
    bev_channels: int = 128
    """Channels C of every BEV map after the encoder (temporal / agent fusion, heads' input Z)."""
    history: int = 5
    """History frames T per agent (index T-1 = now)."""
    future_steps: int = 6
    """Predicted future steps T_f."""
    num_modes: int = 6
    """Trajectory modes K."""
    num_classes: int = 3
    """Detection classes (one heatmap channel each)."""
    num_agent_types: int = 2
    """Agent types with their own embedding (0 = vehicle, 1 = infrastructure)."""
    num_heads: int = 8
    """Attention heads in temporal, agent and windowed attention; must divide bev_channels."""
    window_size: int = 8
    """Side (cells) of the square windows of spatial self-attention."""
    window_blocks: int = 1
    """Pairs of (regular, shifted) windowed attention blocks after agent fusion."""
    ffn_ratio: int = 2
    """Hidden width of attention feed-forward layers, as a multiple of bev_channels."""
    head_channels: int = 64
    """Hidden channels of the detection / prediction / reconstruction heads."""
    head_upsample: int = 1
    """Upsampling (1 or 2) of Z before the detection and prediction heads: their maps have cells of
    ``bev_stride / head_upsample`` voxels (a transposed-conv neck, as CenterPoint's), while temporal and
    agent fusion, attention and the reconstruction decoder stay on the coarser fusion cells."""
    class_heads: bool = False
    """One heatmap + box-regression branch per class (CenterPoint's separate heads per class group) after the
    detection head's shared convolution, instead of one branch for all classes."""
    iou_rectifier: float = 0.0
    """IoU-aware scoring (AFDetV2; CenterPoint's IoU rectifier) alpha in [0, 1): 0 = off; above 0 the detection
    head gets an IoU branch, trained on each object's decoded-box BEV IoU, and a detection's score is
    ``heatmap^(1 - alpha) * IoU^alpha``, so better-placed boxes rank first."""
    refine_points: int = 0
    """Point-based box refinement (``models.point_refine``, a LiDAR R-CNN-style second stage): a PointNet reads
    up to this many current-frame points in and around each detected box and regresses a residual that places
    it more precisely than the BEV cells can. 0 = off."""
    track_decoder: bool = False
    """Decode trajectories from each object's track (``models.track_decode``): the prediction head also
    regresses the object's past positions, the point refinement places it in each history frame's points, and an
    MLP decodes the K modes from that track. Needs ``refine_points`` > 0 and ``history`` >= 2."""
    recon_points: int = 20
    """Points the stage-1 reconstruction decoder predicts per BEV cell."""

    def __post_init__(self) -> None:
        if isinstance(self.grid, dict):
            self.grid = GridConfig(**self.grid)
        if self.encoder not in ENCODER_KINDS:
            raise ValueError(f"encoder must be one of {ENCODER_KINDS}, got {self.encoder!r}")
        if not self.sparse_channels or min(self.sparse_channels) < 1:
            raise ValueError(f"sparse_channels must be non-empty positive ints, got {list(self.sparse_channels)}")
        if len(self.sparse_strides) != len(self.sparse_channels):
            raise ValueError("sparse_strides must have one entry per sparse_channels stage")
        if any(s not in (1, 2) for s in self.sparse_strides) or self.sparse_strides[0] != 1:
            raise ValueError(f"sparse_strides must be 1 or 2 with stage 0 at 1, got {list(self.sparse_strides)}")
        for name in ("bev_channels", "history", "future_steps", "num_modes", "num_classes", "num_agent_types",
                     "num_heads", "window_size", "window_blocks", "ffn_ratio", "head_channels", "recon_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bev_channels % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide bev_channels ({self.bev_channels})")
        if self.refine_points < 0:
            raise ValueError(f"refine_points must be >= 0 (0 = no refinement), got {self.refine_points}")
        if self.track_decoder and (not self.refine_points or self.history < 2):
            raise ValueError("track_decoder needs the point refinement (refine_points > 0) and history >= 2, got "
                             f"refine_points={self.refine_points}, history={self.history}")
        if not 0.0 <= self.iou_rectifier < 1.0:
            raise ValueError(f"iou_rectifier must be in [0, 1), got {self.iou_rectifier}")
        if self.head_upsample not in (1, 2) or self.bev_stride % self.head_upsample:
            raise ValueError(f"head_upsample must be 1 or 2 and divide the BEV stride {self.bev_stride}, "
                             f"got {self.head_upsample}")
        _, ny, nx = self.grid.shape_zyx
        if ny % self.bev_stride or nx % self.bev_stride:
            raise ValueError(f"grid of {ny}x{nx} voxels is not divisible by the BEV stride {self.bev_stride} "
                             "(sparse_strides)")

    @property
    def bev_stride(self) -> int:
        """Voxels per BEV cell along x and y."""
        return math.prod(self.sparse_strides)

    @property
    def head_stride(self) -> int:
        """Voxels per cell of the detection and prediction heads' maps along x and y."""
        return self.bev_stride // self.head_upsample

    @property
    def bev_shape(self) -> tuple[int, int]:
        """(H, W) of the BEV maps: H along y, W along x."""
        _, ny, nx = self.grid.shape_zyx
        return ny // self.bev_stride, nx // self.bev_stride


def model_config(size: str) -> ModelConfig:
    """A fresh preset: ``tiny`` (tests: x/y +-32 m, 0.8 m voxels, 1.6 m cells, 16 channels), ``small`` (the
    CPU-scale model of the default job: tiny's grid and encoder at twice the BEV and head width, which costs
    about a third more per step on 2 cores and trains far better, plus the point refinement; docs/MODEL.md),
    ``base`` (paper scale, x +-70.4 m, y +-40 m, 0.8 m cells) or ``large`` (base grid, wider channels, two
    windowed-attention block pairs)."""
    if size in ("tiny", "small"):
        grid = GridConfig(x_range=[-32.0, 32.0], y_range=[-32.0, 32.0], z_range=[-3.0, 1.0],
                          voxel_size=[0.8, 0.8, 1.0], max_points_per_voxel=4, max_voxels=6000)
        small = size == "small"
        return ModelConfig(grid=grid, sparse_channels=[8, 16], sparse_strides=[1, 2], bev_channels=32 if small else 16,
                           num_heads=2, window_size=8, head_channels=32 if small else 16,
                           refine_points=REFINE_POINTS if small else 0)
    if size == "base":
        return ModelConfig(refine_points=REFINE_POINTS)
    if size == "large":
        return ModelConfig(sparse_channels=[32, 64, 128, 128], bev_channels=256, num_heads=8, window_blocks=2,
                           head_channels=128, refine_points=REFINE_POINTS)
    raise ValueError(f"size must be one of {MODEL_SIZES}, got {size!r}")
