"""Stage-2 task balancing on the trainer side: the strategies (the fork on Z and the loss-level /
parameter-level baselines), the method choice and the distributed all-reduce for the fork's batch rules."""

from trainer.balancing.config import BalancingConfig
from trainer.balancing.param_pcgrad import ParamPCGrad, ensure_param_pcgrad_supported
from trainer.balancing.reduce import distributed_sum
from trainer.balancing.strategies import BALANCINGS, Balancing
from trainer.balancing.uncertainty import UncertaintyWeighting

__all__ = [
    "BALANCINGS",
    "Balancing",
    "BalancingConfig",
    "ParamPCGrad",
    "UncertaintyWeighting",
    "distributed_sum",
    "ensure_param_pcgrad_supported",
]
