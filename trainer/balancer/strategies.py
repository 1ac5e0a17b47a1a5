"""How a multitask stage combines its detection and prediction losses: one class per ``balancing.method``.

``BALANCINGS`` is the registry; ``balancing.method`` names one of its keys, and nothing else reads it.
Each strategy is an ``nn.Module`` (the uncertainty weights are parameters the engine trains and
checkpoints) with hooks: ``configure_model`` (install the fork on Z), ``attach`` (take the runtime's
all-reduce and the engine), ``combine`` (the loss to back-propagate), ``backward`` and ``stats`` (what to log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from models.balancer import ConflictFork
from models.balancer.stats import ConflictStats
from models.v2x_model import V2XModel
from trainer.balancer.param_pcgrad import ParamPCGrad
from trainer.balancer.uncertainty import UncertaintyWeighting

if TYPE_CHECKING:
    from trainer.balancer.config import BalancingConfig
    from trainer.runtime import Runtime


def stats_logs(stats: ConflictStats | None) -> dict[str, float]:
    """``balance/*`` log values of the latest backward's conflict statistics (none before the first)."""
    return {} if stats is None else {f"balance/{k}": v for k, v in stats.to_floats().items()}


class Balancing(nn.Module):
    """The plain sum of the task losses, one ordinary backward (the base of every strategy)."""

    plain_engine_only = ""
    """Why the strategy needs ``distributed.engine=plain`` (empty: it runs on every engine)."""

    def configure_model(self, model: V2XModel) -> None:
        """Install what the strategy needs inside the model (before the engine is built)."""

    def attach(self, model: V2XModel, engine: Any, runtime: Runtime) -> None:
        """Keep what the strategy needs of the prepared engine and the runtime (before the first step)."""

    def combine(self, det: Tensor, pred: Tensor, logs: dict[str, Tensor]) -> Tensor:
        """The loss to back-propagate from the weighted task losses; may add to ``logs``."""
        return det + pred

    def backward(self, runtime: Runtime, task_losses: tuple[Tensor, ...], loss: Tensor, *, boundary: bool) -> None:
        runtime.backward(loss, boundary=boundary)

    def stats(self, model: V2XModel) -> dict[str, float]:
        return {}


class ForkBalancing(Balancing):
    """TurboTrain's balancer: a ``ConflictFork`` on Z combines the task gradients inside the one backward
    (``balancing.fork``: rule, granularity, magnitude balancing); the batch-level rules' sums go through the
    runtime's all-reduce, so every rank applies the same rule."""

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.fork_config = config.fork

    def configure_model(self, model: V2XModel) -> None:
        model.task_fork = ConflictFork(self.fork_config)

    def attach(self, model: V2XModel, engine: Any, runtime: Runtime) -> None:
        if not isinstance(model.task_fork, ConflictFork):
            raise RuntimeError("ForkBalancing.attach before configure_model")
        model.task_fork.all_reduce = runtime.all_reduce_sum

    def stats(self, model: V2XModel) -> dict[str, float]:
        fork = model.task_fork
        return stats_logs(fork.last_stats if isinstance(fork, ConflictFork) else None)


class UncertaintyBalancing(Balancing):
    """Loss-level Kendall weighting: the log-variances are parameters trained with the model."""

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self.uncertainty = UncertaintyWeighting(2, init_log_var=config.uncertainty_init_log_var)

    def combine(self, det: Tensor, pred: Tensor, logs: dict[str, Tensor]) -> Tensor:
        weights = self.uncertainty.task_weights()
        logs.update({"balance/weight_det": weights[0], "balance/weight_pred": weights[1]})
        return self.uncertainty([det, pred])


class ParamPCGradBalancing(Balancing):
    """The parameter-level PCGrad baseline: one backward per task on the engine's parameters."""

    plain_engine_only = ("it runs one backward per task, which DeepSpeed does not support "
                         "(docs/MODEL.md, 'The balancer: why a fork on Z')")

    def __init__(self, config: BalancingConfig) -> None:
        super().__init__()
        self._pcgrad: ParamPCGrad | None = None  # a plain object: it holds the engine, which holds this module

    def attach(self, model: V2XModel, engine: Any, runtime: Runtime) -> None:
        self._pcgrad = ParamPCGrad(engine, world_size=runtime.world_size)

    def backward(self, runtime: Runtime, task_losses: tuple[Tensor, ...], loss: Tensor, *, boundary: bool) -> None:
        if self._pcgrad is None:
            raise RuntimeError("ParamPCGradBalancing.backward before attach(engine)")
        self._pcgrad.backward(list(task_losses))

    def stats(self, model: V2XModel) -> dict[str, float]:
        return stats_logs(None if self._pcgrad is None else self._pcgrad.last_stats)


BALANCINGS: dict[str, type[Balancing]] = {
    "fork": ForkBalancing,
    "uncertainty": UncertaintyBalancing,
    "param_pcgrad": ParamPCGradBalancing,
}
