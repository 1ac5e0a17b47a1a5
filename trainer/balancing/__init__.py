"""Stage-2 task balancing on the trainer side: the distributed all-reduce for the fork's batch rules,
the method choice, and the loss-level / parameter-level baselines."""

from trainer.balancing.config import BalancingConfig, build_task_fork
from trainer.balancing.param_pcgrad import ParamPCGrad, ensure_param_pcgrad_supported
from trainer.balancing.reduce import distributed_sum
from trainer.balancing.uncertainty import UncertaintyWeighting

__all__ = [
    "BalancingConfig",
    "ParamPCGrad",
    "UncertaintyWeighting",
    "build_task_fork",
    "distributed_sum",
    "ensure_param_pcgrad_supported",
]
