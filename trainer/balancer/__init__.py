"""The balancer, trainer side (the model side is ``models.balancer``): the strategies (the fork on Z and the
loss-level / parameter-level baselines) and the method choice; the all-reduce of the fork's batch rules is the
runtime's."""

from trainer.balancer.config import BalancingConfig
from trainer.balancer.param_pcgrad import ParamPCGrad, ensure_param_pcgrad_supported
from trainer.balancer.strategies import BALANCINGS, Balancing
from trainer.balancer.uncertainty import UncertaintyWeighting

__all__ = [
    "BALANCINGS",
    "Balancing",
    "BalancingConfig",
    "ParamPCGrad",
    "UncertaintyWeighting",
    "ensure_param_pcgrad_supported",
]
