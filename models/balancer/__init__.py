"""Stage-2 gradient-conflict suppression on the shared feature Z (pure torch, no distributed code)."""

from models.balancer.config import BalancerConfig
from models.balancer.fork import ConflictFork, combine_task_gradients
from models.balancer.rules import AllReduce, PairMoments, combine, mgda, pair_moments, pcgrad, sum_rule
from models.balancer.stats import ConflictStats

__all__ = [
    "AllReduce",
    "BalancerConfig",
    "ConflictFork",
    "ConflictStats",
    "PairMoments",
    "combine",
    "combine_task_gradients",
    "mgda",
    "pair_moments",
    "pcgrad",
    "sum_rule",
]
