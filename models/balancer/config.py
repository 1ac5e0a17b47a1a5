"""Typed configuration of the gradient-conflict balancer (stage 2)."""

from __future__ import annotations

from dataclasses import dataclass

RULES = ("sum", "pcgrad", "mgda")
GRANULARITIES = ("sample", "cell", "batch")


@dataclass(kw_only=True)
class BalancerConfig:
    """How the fork on Z combines the detection and prediction gradients into one."""

    rule: str = "pcgrad"
    """Combination rule: ``sum`` (equal weights), ``pcgrad`` (project out conflicting components,
    then add) or ``mgda`` (two-task min-norm point, scaled by 2 so agreeing gradients match ``sum``)."""
    granularity: str = "sample"
    """Groups over which dot products and norms are taken: ``sample`` (C, H, W of one sample),
    ``cell`` (C at one BEV location of one sample) or ``batch`` (the whole global micro-batch,
    all-reduced across ranks)."""
    balance_magnitude: bool = False
    """Before the rule, rescale both task gradients of every group to their mean norm so neither
    task dominates (groups where one task's gradient is zero are left unchanged)."""
    eps: float = 1e-30
    """Floor on squared norms used as denominators (fp32). Far below any real gradient's squared
    norm, so the rules stay degree-1 homogeneous; it only keeps (near-)zero groups finite."""
    collect_stats: bool = True
    """Compute conflict statistics (cosine, conflicting fraction, norm ratio) in every backward."""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if not self.eps >= 0.0 or self.eps > 1e-6:
            raise ValueError(f"eps must be in [0, 1e-6] (a floor on squared norms), got {self.eps!r}")
        if not isinstance(self.balance_magnitude, bool):
            raise ValueError(f"balance_magnitude must be a bool, got {self.balance_magnitude!r}")
        if not isinstance(self.collect_stats, bool):
            raise ValueError(f"collect_stats must be a bool, got {self.collect_stats!r}")
