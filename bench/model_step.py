"""Median forward + backward step time of the model per size, measured side by side in one run.

    python3 bench/model_step.py --sizes tiny base --repeats 5 [--device cuda] [--bf16]

Scenes come from ``tests/batch_factory.py`` (2 scenes x 4 agents x history frames by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.config import MODEL_SIZES, model_config  # noqa: E402
from models.v2x_model import V2XModel  # noqa: E402
from tests.batch_factory import make_batch  # noqa: E402
from trainer.losses import task_losses  # noqa: E402


def step_times(size: str, *, scenes: int, agents: int, repeats: int, device: str, bf16: bool) -> tuple[float, int]:
    config = model_config(size)
    batch = make_batch(config, num_scenes=scenes, agents=agents, max_agents=agents).to(device)
    model = V2XModel(config).to(device)
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            losses = task_losses(model(batch), batch, model.geometry)
        losses.total.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times), batch.voxels.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny"], choices=MODEL_SIZES)
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast around forward + loss")
    args = parser.parse_args()
    results = {}
    for size in args.sizes:
        results[size], voxels = step_times(size, scenes=args.scenes, agents=args.agents, repeats=args.repeats,
                                           device=args.device, bf16=args.bf16)
        params = sum(p.numel() for p in V2XModel(model_config(size)).parameters())
        print(f"{size:6s} params={params / 1e6:7.3f}M voxels={voxels:7d} median step={results[size] * 1e3:9.1f} ms")
    first = args.sizes[0]
    for size in args.sizes[1:]:
        print(f"ratio {size}/{first}: {results[size] / results[first]:.2f}x")


if __name__ == "__main__":
    main()
