"""Parameters and forward + backward step time of the model per size, measured side by side in one run.

    python3 bench/model_step.py --sizes tiny small --repeats 9 --out docs/results [--device cuda] [--bf16]
        [--without-refinement] [--with-track]

Scenes come from ``tests/batch_factory.py`` (2 scenes x 3 agents x history frames by default). The sizes are
measured in interleaved rounds (one step of each size per round, after a warm-up step each), so a load
change on a noisy machine hits every size alike; the table gives the median, the range, and each size's
median relative to the first size's. With ``--out`` it writes ``model_step.{json,md}`` there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_info, markdown_table, median_and_spread  # noqa: E402
from models.batch import Batch  # noqa: E402
from models.config import MODEL_SIZES, ModelConfig, model_config  # noqa: E402
from models.v2x_model import V2XModel  # noqa: E402
from tests.batch_factory import make_batch  # noqa: E402
from trainer.losses import task_losses  # noqa: E402
from trainer.losses.refinement import with_refinement  # noqa: E402
from trainer.losses.track import with_tracks  # noqa: E402


def one_step(model: V2XModel, batch: Batch, *, device: str, bf16: bool) -> float:
    """Seconds of one forward (detection + prediction heads) + losses + backward."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
        losses = task_losses(with_tracks(model, with_refinement(model, model(batch), batch), batch), batch,
                             model.geometry)
    losses.total.backward()
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def variants(sizes: list[str], *, without_refinement: bool, with_track: bool = False) -> list[tuple[str, ModelConfig]]:
    """(label, config) per size, plus ``<size> w/o refinement`` after each size that has a point refinement when
    ``without_refinement``, and ``<size> with track`` (``model.track_decoder``) after each that has a point
    refinement and no track decoder when ``with_track``."""
    out = []
    for size in sizes:
        config = model_config(size)
        out.append((size, config))
        if without_refinement and config.refine_points:
            out.append((f"{size} w/o refinement", dataclasses.replace(config, refine_points=0, track_decoder=False)))
        if with_track and config.refine_points and not config.track_decoder:
            out.append((f"{size} with track", dataclasses.replace(config, track_decoder=True)))
    return out


def measure(configs: list[tuple[str, ModelConfig]], *, scenes: int, agents: int, repeats: int, device: str,
            bf16: bool) -> list[dict]:
    torch.manual_seed(0)
    setups = []
    for size, config in configs:
        model = V2XModel(config).to(device)
        batch = make_batch(config, num_scenes=scenes, agents=agents, max_agents=agents).to(device)
        one_step(model, batch, device=device, bf16=bf16)  # warm-up
        setups.append((size, config, model, batch, []))
    for _ in range(repeats):
        for _, _, model, batch, times in setups:
            times.append(one_step(model, batch, device=device, bf16=bf16))
    results = []
    for size, config, model, batch, times in setups:
        median, low, high = median_and_spread(times)
        results.append({"size": size, "params": sum(p.numel() for p in model.parameters()),
                        "encoder_params": sum(p.numel() for p in model.encoder.parameters()),
                        "bev_cells": f"{config.bev_shape[0]} x {config.bev_shape[1]} @ "
                                     f"{model.fusion_geometry.cell_x:g} m",
                        "voxels": int(batch.voxels.shape[0]), "median_s": median, "min_s": low, "max_s": high,
                        "times_s": times})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=MODEL_SIZES)
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast around forward + loss")
    parser.add_argument("--without-refinement", action="store_true",
                        help="also measure each size that has a point refinement without it")
    parser.add_argument("--with-track", action="store_true",
                        help="also measure each size that has a point refinement with the track decoder")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write model_step.{json,md} here (e.g. docs/results)")
    args = parser.parse_args()
    if args.repeats < 1 or args.scenes < 1 or args.agents < 1:
        parser.error("--repeats, --scenes and --agents must be >= 1")
    results = measure(variants(args.sizes, without_refinement=args.without_refinement, with_track=args.with_track), scenes=args.scenes, agents=args.agents, repeats=args.repeats, device=args.device,
                      bf16=args.bf16)
    first = results[0]["median_s"]
    for r in results:
        r["ratio"] = r["median_s"] / first
        print(f"{r['size']:22s} params={r['params']:>10,d} voxels={r['voxels']:7d} "
              f"median step={r['median_s'] * 1e3:8.1f} ms "
              f"(range {r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f}) ratio {r['ratio']:.2f}x")
    if args.out is not None:
        command = "python bench/model_step.py " + " ".join(sys.argv[1:])
        threads = torch.get_num_threads()
        rows = [[r["size"], f"{r['params']:,}", f"{r['encoder_params']:,}", r["bev_cells"], r["voxels"],
                 f"{r['median_s'] * 1e3:.1f}", f"{r['min_s'] * 1e3:.1f}-{r['max_s'] * 1e3:.1f}", f"{r['ratio']:.2f}x"]
                for r in results]
        table = markdown_table(["size", "params", "encoder params", "BEV cells", "voxels", "median step (ms)",
                                "range (ms)", f"ratio to {results[0]['size']}"], rows)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "model_step.json").write_text(json.dumps(
            {"command": command, "device": args.device, "threads": threads, "bf16": args.bf16,
             "repeats": args.repeats, "machine": machine_info(), "results": results}, indent=1))
        (args.out / "model_step.md").write_text(
            f"Command: `{command}` on {args.device} ({threads} threads; {args.repeats} interleaved rounds, "
            f"forward + losses + backward of {args.scenes} scenes x {args.agents} agents)\n\n{table}\n")


if __name__ == "__main__":
    main()
