"""Choice of the stage-2 task-balancing method (``trainer.balancer.strategies.BALANCINGS``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.balancer import BalancerConfig
from trainer.balancer.strategies import BALANCINGS

METHODS = tuple(BALANCINGS)


@dataclass(kw_only=True)
class BalancingConfig:
    """Stage-2 balancing: the ZeRO-compatible fork (default) or a baseline."""

    method: str = "fork"
    """``fork``: ConflictFork on Z with ``fork.rule`` (``sum`` is the equal-weights baseline);
    ``uncertainty``: loss-level Kendall weighting; ``param_pcgrad``: parameter-level PCGrad with one
    backward per task (single process without ZeRO/DeepSpeed only)."""
    fork: BalancerConfig = field(default_factory=BalancerConfig)
    """Rule, granularity and magnitude balancing of the fork (used when ``method`` is ``fork``)."""
    uncertainty_init_log_var: float = 0.0
    """Initial log-variance s_i of every task for ``uncertainty`` weighting."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.fork, BalancerConfig):
            raise ValueError(f"fork must be a BalancerConfig, got {type(self.fork).__name__}")
        if not -20.0 <= self.uncertainty_init_log_var <= 20.0:
            raise ValueError(f"uncertainty_init_log_var must be in [-20, 20], got {self.uncertainty_init_log_var}")
