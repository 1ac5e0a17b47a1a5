"""Stage-2 task balancing on the trainer side: the strategies (the fork on Z and the loss-level /
parameter-level baselines) and the method choice (the
all-reduce of the fork's batch rules is the runtime's)."""

from trainer.balancing.config import BalancingConfig
from trainer.balancing.param_pcgrad import ParamPCGrad, ensure_param_pcgrad_supported
from trainer.balancing.strategies import BALANCINGS, Balancing
from trainer.balancing.uncertainty import UncertaintyWeighting

__all__ = [
    "BALANCINGS",
    "Balancing",
    "BalancingConfig",
    "ParamPCGrad",
    "UncertaintyWeighting",
    "ensure_param_pcgrad_supported",
]
