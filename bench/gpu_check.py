"""The prepared GPU check: run it whenever a GPU machine is available (``bash bench/gpu_check.sh``).

1. The spconv encoder (base size) on CUDA with spconv's default algorithm against the CPU's native one:
   forward output and every weight gradient, on one real batch of the synthetic dataset.
2. fp16 with DeepSpeed's dynamic loss scaling: 50 steps of ``launch/train.py`` (tiny); every logged loss
   finite, the last ones below the first ones.
3. bf16 under DeepSpeed ZeRO-2 on the base size: 30 steps; the median samples/s over the logged windows.

Prints one line per check and ``N passed, N failed``; exit 0 when every check passed, 1 when one failed,
2 without CUDA. Writes nothing outside a temporary folder (``--work``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import bench_env  # noqa: E402

TINY_DATA = ["synthetic.train_scenarios=2", "synthetic.val_scenarios=1"]


def _train(work: Path, name: str, args: list[str], timeout: int) -> list[dict]:
    from trainer.engine.metrics_log import read_metrics

    run = work / name
    cmd = [sys.executable, str(REPO / "launch" / "train.py"), "--config", "recipes/multitask.yaml", *TINY_DATA,
           f"synthetic.cache_dir={work / 'cache'}", f"run.dir={run}", "loop.progress_bar=false", "loop.log_every=5",
           "loop.pictures=0", "stages.finetune.evaluate=false", *args]
    done = subprocess.run(cmd, cwd=REPO, env=bench_env(threads=4), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: exit {done.returncode}\n{done.stderr[-3000:]}")
    return [r for r in read_metrics(run / "metrics.jsonl") if "loss/total" in r]


def check_spconv(work: Path, *, size: str = "base", device: str = "cuda") -> str:
    """The encoder on ``device`` against the CPU (``device="cpu"`` checks the check itself, without a GPU)."""
    import dataclasses

    import torch

    from models.config import model_config
    from models.sparse_encoder import SparseEncoder
    from trainer.config_io import load_config
    from trainer.data.loader import build_loader
    from trainer.data.synth.dataset import prepare_synthetic, shard_patterns

    cfg = load_config(None, [f"model_size={size}", *TINY_DATA, f"synthetic.cache_dir={work / 'cache'}",
                             "data.num_workers=0"])
    _, val = shard_patterns(prepare_synthetic(cfg.synthetic, max_agents=cfg.data.max_agents, history=cfg.model.history))
    data = dataclasses.replace(cfg.data, val_shards=val)
    batch = next(iter(build_loader(data, cfg.model.grid, split="val", rank=0, world_size=1, seed=0)))
    torch.manual_seed(0)
    cpu = SparseEncoder(model_config(size)).train()
    gpu = SparseEncoder(model_config(size)).train()
    gpu.load_state_dict(cpu.state_dict())
    gpu.to(device)
    frames = batch.num_scenes * batch.max_agents * batch.history
    outs, grads = [], []
    for enc, dev in ((cpu, "cpu"), (gpu, device)):
        out = enc(batch.voxels.to(dev), batch.voxel_num_points.to(dev), batch.voxel_coords.to(dev), frames)
        weight = torch.linspace(-1, 1, out.numel(), device=dev).view_as(out)
        (out * weight).sum().backward()
        outs.append(out.detach().cpu())
        grads.append({n: p.grad.detach().cpu() for n, p in enc.named_parameters() if p.grad is not None})
    out_err = ((outs[0] - outs[1]).abs().max() / outs[0].abs().max().clamp_min(1e-12)).item()
    grad_err = max(((grads[0][n] - grads[1][n]).abs().max() / grads[0][n].abs().max().clamp_min(1e-12)).item()
                   for n in grads[0])
    if out_err > 1e-3 or grad_err > 1e-2:
        raise AssertionError(f"{device} differs from CPU: output {out_err:.2e}, worst gradient {grad_err:.2e} (relative)")
    return f"output rel. err {out_err:.1e}, worst gradient rel. err {grad_err:.1e}, {batch.voxels.shape[0]} voxels"


def check_fp16(work: Path) -> str:
    rows = _train(work, "fp16", ["precision=fp16", "stages.finetune.steps=50", "optim.warmup_steps=5"], 240)
    losses = [r["loss/total"] for r in rows]
    if len(losses) != 10 or not all(isinstance(v, float) and v == v and abs(v) != float("inf") for v in losses):
        raise AssertionError(f"fp16 losses: {losses}")
    if statistics.mean(losses[-3:]) >= statistics.mean(losses[:3]):
        raise AssertionError(f"fp16 loss did not fall: {losses}")
    return f"50 steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def check_bf16_zero2_base(work: Path) -> str:
    rows = _train(work, "bf16_zero2_base", ["precision=bf16", "model_size=base", "data.batch_size=4",
                                            "distributed.deepspeed_config=ds_configs/zero2.json",
                                            "stages.finetune.steps=30"], 300)
    rates = [r["samples_per_s"] for r in rows[1:]]  # the first window holds the warm-up
    return f"base, batch 4: {statistics.median(rates):.2f} samples/s (median of {len(rates)} windows)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("error: no CUDA device; this check needs a GPU", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    print(f"device: {torch.cuda.get_device_name(0)}; work: {work}", flush=True)
    passed = failed = 0
    for name, check in (("spconv CUDA vs CPU", check_spconv), ("fp16 dynamic loss scaling", check_fp16),
                        ("bf16 ZeRO-2 base", check_bf16_zero2_base)):
        try:
            print(f"PASS {name}: {check(work)}", flush=True)
            passed += 1
        except Exception as err:  # report every check, then fail
            print(f"FAIL {name}: {type(err).__name__}: {err}", flush=True)
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
