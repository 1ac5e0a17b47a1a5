"""The balancer, model side: the task fork on the shared feature Z (``TaskFork``, the identity) and the
gradient-conflict suppressing ``ConflictFork`` with its rules (pure torch, no distributed code). The trainer
side (strategies, baselines) is ``trainer.balancer``."""

from models.balancer.config import BalancerConfig
from models.balancer.fork import ConflictFork, combine_task_gradients
from models.balancer.rules import AllReduce, PairMoments, combine, mgda, pair_moments, pcgrad, sum_rule
from models.balancer.stats import ConflictStats
from models.balancer.task_fork import TaskFork

__all__ = [
    "AllReduce",
    "BalancerConfig",
    "ConflictFork",
    "ConflictStats",
    "PairMoments",
    "TaskFork",
    "combine",
    "combine_task_gradients",
    "mgda",
    "pair_moments",
    "pcgrad",
    "sum_rule",
]
