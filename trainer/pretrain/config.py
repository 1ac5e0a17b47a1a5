"""Settings of stage-1 masked reconstruction."""

from __future__ import annotations

from dataclasses import dataclass

MASK_MODES = ("random", "world")


@dataclass(kw_only=True)
class PretrainConfig:
    """How occupied BEV cells are masked and what the decoder must reconstruct."""

    mask_ratio: float = 0.7
    """Fraction of occupied BEV cells masked in every agent-frame."""
    mask_mode: str = "random"
    """``random``: independent per agent and frame (exact ratio); ``world``: a cell of the ego frame
    now is masked in every agent that sees it, so the model must borrow from other agents/frames."""
    mask_cell: float = 0.8
    """Side (m) of the BEV cells that are masked as a whole (CooPre: 0.8 m); a multiple of the voxel size."""
    consistent_over_time: bool = False
    """``world`` mode: mask the same world cells at every history frame (else drawn per frame)."""
    max_target_points: int = 20
    """Original points kept per reconstructed BEV cell (the Chamfer target)."""
    image_every: int = 0
    """Optimizer steps between logged BEV images of original vs reconstructed masked points (0: off)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"pretrain.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"pretrain.mask_mode must be one of {MASK_MODES}, got {self.mask_mode!r}")
        if not self.mask_cell > 0:
            raise ValueError(f"pretrain.mask_cell must be > 0, got {self.mask_cell}")
        if self.max_target_points < 1 or self.image_every < 0:
            raise ValueError("pretrain.max_target_points must be >= 1 and pretrain.image_every >= 0")
