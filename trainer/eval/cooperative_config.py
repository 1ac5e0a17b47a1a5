"""Evaluation settings of cooperation: which fusion is evaluated, and what the collaborators' messages are."""

from __future__ import annotations

from dataclasses import dataclass

from models.communication import MESSAGE_DTYPES, SPARSIFY_MODES

FUSION_MODES = ("intermediate", "none", "late")
"""``intermediate``: the model's own feature fusion; ``none``: the ego alone; ``late``: every agent decodes its
own detections and the ego merges them by NMS (``trainer.eval.cooperative``)."""


@dataclass(kw_only=True)
class CommConfig:
    """The collaborators' messages in intermediate fusion (see ``models.communication``); the defaults send every
    cell at fp32, which leaves the model's output as it is."""

    precision: str = "fp32"
    """Precision the collaborators' values travel in: ``fp32``, ``fp16`` or ``bf16``. Their features are rounded
    to it before the fusion, and message bytes are counted at it (late fusion's detections too)."""
    sparsify: str = "none"
    """``none`` (dense messages), ``topk`` (each collaborator sends the ``keep_ratio`` most confident cells of its
    map) or ``threshold`` (the cells whose confidence is >= ``threshold``). A cell's confidence is the highest
    class probability of the collaborator's own detection heatmap there (the model run on it alone)."""
    keep_ratio: float = 1.0
    """``topk``: the fraction of the map's cells each collaborator sends (at least one cell)."""
    threshold: float = 0.5
    """``threshold``: the confidence a cell needs to be sent."""

    def __post_init__(self) -> None:
        if self.precision not in MESSAGE_DTYPES:
            raise ValueError(f"comm.precision must be one of {tuple(MESSAGE_DTYPES)}, got {self.precision!r}")
        if self.sparsify not in SPARSIFY_MODES:
            raise ValueError(f"comm.sparsify must be one of {SPARSIFY_MODES}, got {self.sparsify!r}")
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ValueError(f"comm.keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"comm.threshold must be in [0, 1], got {self.threshold}")
