"""Training-step time of the stage-2 balancers against the plain sum, side by side in one run.

Three copies of the real V2X model (``models.V2XModel``, same initial weights, same batches from
``tests/batch_factory.py``) train with: the identity fork (plain sum of task gradients), the
ConflictFork with feature-level PCGrad, and parameter-level PCGrad (one backward per task).
Steps are interleaved in a rotating order; the script prints per-method medians and the ratios
to the sum, the fork's ratio last (goal: <= 1.05).

    OMP_NUM_THREADS=2 python3 bench/balancer.py --size tiny --repeats 15
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from batch_factory import make_batch  # noqa: E402

from models.balancer import BalancerConfig, ConflictFork  # noqa: E402
from models.config import MODEL_SIZES, model_config  # noqa: E402
from models.balancer.task_fork import TaskFork  # noqa: E402
from models.v2x_model import V2XModel  # noqa: E402
from trainer.balancer import ParamPCGrad  # noqa: E402
from trainer.losses.task_losses import task_losses  # noqa: E402


def make_step(model: V2XModel, method: str, batches: list, lr: float) -> Callable[[int], None]:
    """One optimizer step of ``model`` on batch ``i % len(batches)`` with the balancing ``method``."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    param_pcgrad = ParamPCGrad(model, world_size=1) if method == "param_pcgrad" else None

    def step(i: int) -> None:
        batch = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        losses = task_losses(model(batch), batch, model.geometry)
        if param_pcgrad is not None:
            param_pcgrad.backward([losses.detection, losses.prediction])
        else:
            losses.total.backward()
        opt.step()

    return step


def rule_cost(fork: ConflictFork, model: V2XModel, batch, device: torch.device, repeats: int) -> float:
    """Median seconds of the fork's backward alone, on task gradients shaped like the model's Z."""
    with torch.no_grad():
        z_shape = model.encode(batch).shape
    g_det, g_pred = torch.randn(z_shape, device=device), torch.randn(z_shape, device=device)
    out = []
    for _ in range(repeats):
        z = torch.randn(z_shape, device=device, requires_grad=True)
        a, b = fork(z)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.autograd.backward([a, b], [g_det, g_pred])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=MODEL_SIZES, help="model preset")
    parser.add_argument("--scenes", type=int, default=2, help="scenes per batch")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method")
    parser.add_argument("--granularity", default="sample", choices=["sample", "cell", "batch"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.repeats < 3:
        raise ValueError(f"--repeats must be >= 3 for a median, got {args.repeats}")

    device = torch.device(args.device)
    cfg = model_config(args.size)
    torch.manual_seed(0)
    base = V2XModel(cfg).to(device)
    batches = [make_batch(cfg, num_scenes=args.scenes, seed=s).to(device) for s in range(3)]
    forks = {"sum": TaskFork(), "fork_pcgrad": ConflictFork(BalancerConfig(rule="pcgrad", granularity=args.granularity)),
             "param_pcgrad": TaskFork()}
    steps = {}
    for name, fork in forks.items():
        model = copy.deepcopy(base)
        model.task_fork = fork
        steps[name] = make_step(model, name, batches, lr=1e-3)

    def timed(name: str, i: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        steps[name](i)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    names = list(steps)
    for i in range(args.warmup):
        for name in names:
            timed(name, i)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate so no method always runs first
        for name in order:
            times[name].append(timed(name, r))

    med = {name: statistics.median(ts) for name, ts in times.items()}
    paired = {name: statistics.median(t / b for t, b in zip(times[name], times["sum"])) for name in names}
    rule_ms = 1000 * rule_cost(forks["fork_pcgrad"], base, batches[0], device, args.repeats)
    print(f"model={args.size} scenes={args.scenes} device={device} repeats={args.repeats} "
          f"granularity={args.granularity} threads={torch.get_num_threads()}")
    for name in names:
        print(f"median step {name:>13}: {1000 * med[name]:9.2f} ms")
    print(f"fork rule alone (backward of ConflictFork on Z): {rule_ms:.3f} ms = {rule_ms / (10 * med['sum']):.2f}% of a sum step")
    print(f"param_pcgrad / sum: {med['param_pcgrad'] / med['sum']:.3f}x (ratio of medians), "
          f"{paired['param_pcgrad']:.3f}x (median of paired ratios)")
    print(f"fork_pcgrad / sum: {med['fork_pcgrad'] / med['sum']:.3f}x (ratio of medians), "
          f"{paired['fork_pcgrad']:.3f}x (median of paired ratios; goal <= 1.05)")


if __name__ == "__main__":
    main()
