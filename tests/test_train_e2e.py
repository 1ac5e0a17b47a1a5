"""launch/train.py end to end: launchers, ZeRO stages, exact resume, stage 1 -> 2, export (CPU, gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.train_harness import base_overrides, crash_then_resume, run_train
from trainer.checkpointing.export import read_exported
from trainer.checkpointing.safe_load import check_engine_checkpoint
from trainer.engine.metrics_log import read_metrics

pytestmark = pytest.mark.slow
MULTITASK = ["--config", "recipes/multitask.yaml"]
OVERFIT = ["data.augment.enabled=false", "data.samples_per_epoch=2", "data.shuffle_buffer=0",
           "stages.finetune.evaluate=false", "optim.warmup_steps=0", "optim.lr=5e-3"]


def _ok(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-6000:]}"


def _losses(run_dir: Path, stage: str = "finetune") -> dict[int, float]:
    return {r["step"]: r["loss/total"] for r in read_metrics(run_dir / "metrics.jsonl")
            if r.get("stage") == stage and "loss/total" in r}


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_accelerate_two_processes_bf16_zero(zero, tiny_data, tmp_path):
    run = tmp_path / "run"
    args = [*MULTITASK, *base_overrides(*tiny_data, run, steps=6), *OVERFIT, "precision=bf16",
            f"distributed.deepspeed_config=ds_configs/zero{zero}.json"]
    _ok(run_train("accelerate", 2, args))
    losses = _losses(run)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert (losses[5] + losses[6]) / 2 < (losses[1] + losses[2]) / 2, losses
    record = json.loads((run / "finetune" / "final.json").read_text())
    assert record["steps"] == 6 and (run / "finetune" / "final.safetensors").is_file()
    config = (run / "config.yaml").read_text()
    assert "precision: bf16" in config


def test_zero3_with_spconv_matches_zero2_exactly(tiny_data, tmp_path):
    """fp32, 2 processes: ZeRO-3 (sparse-conv weights partitioned and re-gathered for their backward) takes
    exactly the same steps as ZeRO-2, with the point refinement (a head called outside the model's forward)."""
    losses = {}
    for zero in (2, 3):
        run = tmp_path / f"zero{zero}"
        _ok(run_train("accelerate", 2, [*MULTITASK, *base_overrides(*tiny_data, run, steps=3),
                                         "stages.finetune.evaluate=false", "model.refine_points=16",
                                         f"distributed.deepspeed_config=ds_configs/zero{zero}.json"]))
        losses[zero] = _losses(run)
    assert sorted(losses[3]) == [1, 2, 3]
    assert losses[3] == pytest.approx(losses[2], rel=1e-6, abs=1e-7)


def test_deepspeed_launcher_two_processes(tiny_data, tmp_path):
    run = tmp_path / "run"
    _ok(run_train("deepspeed", 2, [*MULTITASK, *base_overrides(*tiny_data, run, steps=3), *OVERFIT]))
    pointer = json.loads((run / "finetune" / "checkpoints" / "latest.json").read_text())
    assert pointer["latest"] == "step_000003"
    assert sorted(_losses(run)) == [1, 2, 3]


def test_single_plain_process_zero3_export_matches_engine(tiny_data, tmp_path):
    """Plain ``python launch/train.py`` (one process, ZeRO-3, fp32); the exported fp32 weights in a plain
    model reproduce the engine's end-of-stage evaluation exactly."""
    from trainer.config_io import load_config
    from trainer.data.loader import build_loader
    from trainer.eval.model_eval import evaluate_model
    from trainer.checkpointing.export import load_exported

    run = tmp_path / "run"
    args = [*MULTITASK, *base_overrides(*tiny_data, run, steps=3), "distributed.deepspeed_config=ds_configs/zero3.json",
            "model.encoder=pillars", "model.refine_points=16", "data.val_samples=null", "loop.eval_batches=0"]
    _ok(run_train("python", 1, args))
    engine_eval = json.loads((run / "finetune" / "final.json").read_text())["eval"]
    assert engine_eval["num_frames"] > 0
    model, payload = load_exported(run / "finetune" / "final.safetensors")
    cfg = load_config("recipes/multitask.yaml", args[2:])
    batches = build_loader(cfg.data, cfg.model.grid, split="val", rank=0, world_size=1, seed=cfg.run.seed)
    plain_eval = evaluate_model(model, batches, cfg, device=torch.device("cpu"))
    for key in ("num_frames", "num_gt", "num_det", "AP@0.3", "AP@0.5", "EPA"):
        assert plain_eval[key] == pytest.approx(engine_eval[key], abs=1e-6), key


def test_resume_after_crash_reproduces_uninterrupted_losses(tiny_data, tmp_path):
    """fp32, 2 processes: a run killed after step 3 (last checkpoint at step 2) and started again with the same
    command logs the same losses for steps 3..5 as an uninterrupted run."""
    common = [*MULTITASK, "loop.checkpoint_every=2", "stages.finetune.evaluate=false", "data.samples_per_epoch=6"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    _ok(run_train("accelerate", 2, [*base_overrides(*tiny_data, reference, steps=5), *common]))
    crash = [*base_overrides(*tiny_data, resumed, steps=5), *common, "faults.crash_at_step=3", "faults.crash_rank=0"]
    crash_then_resume("accelerate", 2, crash, resumed)
    want, got = _losses(reference), _losses(resumed)
    for step in (3, 4, 5):
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-7), (step, got, want)


def test_stage1_weights_initialise_stage2(tiny_data, tmp_path):
    """The default recipe's stage 2 starts from stage 1's encoder; the decoder is reported as discarded. With the
    encoder frozen in stage 2, its tensors after stage 2 still equal stage 1's exactly."""
    run = tmp_path / "run"
    args = [*base_overrides(*tiny_data, run, steps=2), "stages.pretrain.steps=2", "stages.finetune.evaluate=false",
            "stages.finetune.freeze=[encoder]", "loop.pictures=2"]
    result = run_train("python", 1, args)
    _ok(result)
    # the run ends with the curves and BEV pictures of 2 validation samples, and says where they are
    pictures = sorted((run / "samples").glob("*.png"))
    assert len(pictures) == 2 and (run / "curves.png").is_file()
    assert f"pictures: {run / 'curves.png'}" in result.stdout and str(pictures[0]) in result.stdout
    assert "discarded modules ['det_head', 'pred_head', 'recon_head']" in result.stdout
    stage1 = read_exported(run / "pretrain" / "final.safetensors")["model"]
    stage2 = read_exported(run / "finetune" / "final.safetensors")["model"]
    encoder = [k for k in stage1 if k.startswith("encoder.")]
    assert encoder
    for key in encoder:
        assert torch.equal(stage1[key], stage2[key]), key
    assert any(not torch.equal(stage1[k], stage2[k]) for k in stage1 if k.startswith("temporal."))
    record = json.loads((run / "finetune" / "final.json").read_text())
    assert record["init_discarded"] == ["det_head", "pred_head", "recon_head"]
    assert any(r.get("stage") == "pretrain" and "loss/recon" in r for r in read_metrics(run / "metrics.jsonl"))


def test_plain_engine_two_processes_uses_ddp(tiny_data, tmp_path):
    """``distributed.engine=plain`` under torchrun on CPU trains as DDP (MULTI_CPU), not as 2 unsynchronised copies."""
    run = tmp_path / "run"
    result = run_train("torchrun", 2, [*MULTITASK, *base_overrides(*tiny_data, run, steps=2), *OVERFIT,
                                       "distributed.engine=plain"])
    _ok(result)
    assert "engine: plain [DistributedType.MULTI_CPU]" in result.stdout
    assert sorted(_losses(run)) == [1, 2]


# The modules with batch norm, frozen (eval mode, fixed weights) so that a micro-batch of 2 and two of 1 see
# the same normalisation; temporal / agent fusion, windowed attention (layer norm: per sample) and the heads'
# output convolutions train, and the balancer's fork on Z sits between them and the task losses.
BATCH_NORM_MODULES = "[encoder,det_head.shared,det_head.heatmap.0.0,det_head.regression.0.0,pred_head.body]"


def _one_sample_shards(train_shards: str, out: Path, copies: int = 2) -> str:
    """``copies`` shards that each hold the first sample of the tiny training shard (so that every micro-batch
    has the same objects: the losses' per-object normalisation then cannot tell b from 2b)."""
    from trainer.data.shard_read import read_samples
    from trainer.data.shard_write import ShardSink

    first = next(read_samples(train_shards.split(",")))
    with ShardSink(str(out / "one-%06d.tar"), maxcount=1) as sink:
        for _ in range(copies):
            sink.write(first)
    return str(out / f"one-{{000000..{copies - 1:06d}}}.tar")


@pytest.mark.parametrize("engine", ["zero1", "zero2", "zero3", "plain"])
def test_gradient_accumulation_steps_the_optimizer_once_per_loop_step(engine, tiny_data, tmp_path):
    """Accumulation 2 on 2 processes: the optimizer steps once per loop step (DeepSpeed's global_steps, or
    AdamW's step count on the plain engine), the learning rate follows the schedule of the loop's steps, and
    the parameters (through the balancer's per-sample PCGrad fork) equal those of accumulation 1 with
    micro-batch 2 (fp32, batch norm frozen)."""
    train = _one_sample_shards(tiny_data[0], tmp_path / "shards")
    chosen = ["distributed.engine=plain"] if engine == "plain" else \
        [f"distributed.deepspeed_config=ds_configs/zero{engine[-1]}.json"]
    common = ["optim.warmup_steps=2", "stages.finetune.evaluate=false", "data.augment.enabled=false",
              f"stages.finetune.freeze={BATCH_NORM_MODULES}", *chosen]
    run, batched = tmp_path / "run", tmp_path / "batched"
    _ok(run_train("accelerate", 2, [*MULTITASK, *base_overrides(train, tiny_data[1], run, steps=3),
                                    "optim.grad_accum_steps=2", *common]))
    _ok(run_train("accelerate", 2, [*MULTITASK, *base_overrides(train, tiny_data[1], batched, steps=3),
                                    "data.batch_size=2", *common]))
    last = run / "finetune" / "checkpoints" / "step_000003"
    # the allow-list admits a genuine 2-rank checkpoint of every engine (both ranks' RNG states, ZeRO shards)
    checked = {p.name for p in check_engine_checkpoint(last)}
    assert {"random_states_0.pkl", "random_states_1.pkl", "scheduler.bin"} <= checked
    assert any(n.endswith("optim_states.pt") for n in checked) or engine == "plain", checked
    if engine == "plain":
        state = torch.load(last / "optimizer.bin", weights_only=True)["state"]
        assert {float(s["step"]) for s in state.values()} == {3.0}
    else:
        model_states = sorted((last / "pytorch_model").glob("*mp_rank_00_model_states.pt"))  # ZeRO-3: per rank
        states = torch.load(model_states[0], weights_only=True)
        assert states["global_steps"] == 3 and states["global_samples"] == 3 * 2 * 2  # steps x accum x ranks
    lrs = {r["step"]: r["lr"] for r in read_metrics(run / "metrics.jsonl") if "lr" in r}
    base = 2e-3  # OptimConfig.lr; warm-up of 2 steps, then a cosine to 0.05 x at step 3
    assert lrs == pytest.approx({1: base * 2 / 3, 2: base, 3: base * 0.05})
    start = read_exported(run / "finetune" / "final.safetensors")["model"]
    other = read_exported(batched / "finetune" / "final.safetensors")["model"]
    trained = [k for k in start if k.startswith(("temporal.", "agent_fusion.", "spatial."))]
    assert trained and start.keys() == other.keys()
    for key in start:
        a, b = start[key], other[key]
        if key.endswith("to_kv.bias"):  # the key bias cancels in the softmax: its gradient is rounding noise,
            a, b = a.chunk(2)[1], b.chunk(2)[1]  # which Adam scales up to lr-sized steps; compare the value bias
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=key)


def test_resume_with_a_changed_config_is_refused_unless_allowed(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = [*MULTITASK, *base_overrides(*tiny_data, run, steps=2), "stages.finetune.evaluate=false"]
    _ok(run_train("python", 1, args))
    changed = run_train("python", 1, [*args, "stages.finetune.steps=3", "optim.lr=1e-3"])
    assert changed.returncode == 2, changed.stderr[-2000:]
    assert "optim.lr: 0.002 -> 0.001" in changed.stdout and "stages.finetune.steps: 2 -> 3" in changed.stdout
    assert "run.allow_config_change=true" in changed.stderr
    assert "steps: 2\n" in (run / "config.yaml").read_text()  # the saved config is left as it was
    _ok(run_train("python", 1, [*args, "stages.finetune.steps=3", "optim.lr=1e-3", "run.allow_config_change=true"]))
    assert "steps: 3\n" in (run / "config.yaml").read_text()
