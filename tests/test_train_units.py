"""Pure pieces of the trainer: config loading, DeepSpeed config resolution, schedule, checkpoints, batch views."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models.config import model_config
from tests.batch_factory import make_batch
from trainer.engine.batch_ops import current_frame_only, ego_only
from trainer.checkpointing.checkpoint import TrainState, latest_checkpoint, read_pointer, save_checkpoint
from trainer.config_io import ConfigError, load_config, to_yaml
from trainer.runtime import LaunchConfigError, check_launcher_precision, resolve_deepspeed_config, zero_bucket_sizes
from trainer.engine.schedule import warmup_cosine


def test_default_recipe_is_turbotrain_and_round_trips(tmp_path):
    cfg = load_config()
    assert list(cfg.stages) == ["pretrain", "finetune"]
    assert cfg.stages["pretrain"].task == "pretrain" and cfg.stages["finetune"].init_from == "previous"
    # precision auto: bf16 where CUDA is, fp32 on the CPU (DeepSpeed's bf16 is slower there and trains worse)
    assert cfg.balancing.fork.rule == "pcgrad" and cfg.precision == ("bf16" if torch.cuda.is_available() else "fp32")
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_overrides_apply_and_model_size_preset():
    cfg = load_config(None, ["model_size=base", "stages.finetune.steps=7", "data.batch_size=3", "optim.lr=1e-4"])
    assert cfg.model.grid.x_range == [-70.4, 70.4] and cfg.model.bev_channels == model_config("base").bev_channels
    assert cfg.stages["finetune"].steps == 7 and cfg.data.batch_size == 3 and cfg.optim.lr == 1e-4


@pytest.mark.parametrize("override, message", [
    (["stages.finetune.steps=many"], "stages.finetune.steps"),
    (["optim.lrr=1"], "optim.lrr"),
    (["nonsense=1"], "nonsense"),
    (["precision=fp8"], "precision must be auto or one of"),
    (["model_size=huge"], "model_size"),
    (["stages.finetune.task=segmentation"], "stage.task must be one of"),
    (["model.num_classes=5"], "model.num_classes': derived from data.classes"),
    (["eval.class_names=[car,ped,truck]"], "eval.class_names': derived from data.classes"),
    (["optim.betas=[0.9]"], "optim.betas"),
    (["no_equals_sign"], "a.b=value"),
    (["stages.pretrain.init_from=previous"], "first stage"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_config(None, override)


def test_the_classes_are_stated_once_in_data_classes(tmp_path):
    two = ["data.taxonomy=custom",
           "data.classes=[{name: car, obj_types: [car, van, truck]}, {name: person, obj_types: [pedestrian]}]"]
    cfg = load_config(None, two)
    assert cfg.model.num_classes == 2 and cfg.eval.class_names == ["car", "person"]
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))  # a saved config restates the derived keys, equal: it loads unchanged
    assert load_config(path) == cfg


def test_an_override_of_an_undeclared_stage_is_an_error_unless_it_gives_the_task():
    with pytest.raises(ConfigError, match="stage 'fintune'.*did you mean 'finetune'.*stages.fintune.task="):
        load_config(None, ["stages.fintune.steps=500"])
    with pytest.raises(ConfigError, match="stage 'extra', which the recipe does not declare"):
        load_config("recipes/multitask.yaml", ["stages.extra.steps=5"])
    cfg = load_config("recipes/multitask.yaml", ["stages.extra.task=detection", "stages.extra.steps=5"])
    assert list(cfg.stages) == ["finetune", "extra"] and cfg.stages["extra"].steps == 5


def test_malformed_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML in .*bad.yaml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_deepspeed_config_filled_from_training_config(monkeypatch):
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", raising=False)
    cfg = load_config(None, ["data.batch_size=3", "optim.grad_accum_steps=2", "optim.grad_clip=5", "precision=bf16",
                             "distributed.deepspeed_config=ds_configs/zero1.json"])
    ds = resolve_deepspeed_config(cfg, world_size=4)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 24 and ds["gradient_clipping"] == 5
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert ds["zero_optimization"]["stage"] == 1
    assert "auto" not in json.dumps(ds)
    assert ds["zero_optimization"]["reduce_bucket_size"] == 1_000_000  # scaled to the 42k-parameter tiny model
    ds3 = resolve_deepspeed_config(replace(cfg, distributed=replace(cfg.distributed, zero_stage=3),
                                           model=replace(cfg.model, encoder="pillars")), world_size=1)
    assert ds3["zero_optimization"]["stage"] == 3


def test_zero_buckets_scale_with_the_model():
    small, large = zero_bucket_sizes(40_000), zero_bucket_sizes(2_000_000_000)
    assert small["reduce_bucket_size"] == 1_000_000 and large["reduce_bucket_size"] == 500_000_000
    assert large["stage3_prefetch_bucket_size"] == 50_000_000 and large["stage3_param_persistence_threshold"] == 100_000
    assert small["stage3_param_persistence_threshold"] == 1_000


def test_precision_conflicts_are_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", raising=False)
    forced = tmp_path / "bf16.json"
    forced.write_text(json.dumps({"bf16": {"enabled": True}, "zero_optimization": {"stage": 2}}))
    cfg = load_config(None, ["precision=fp32", f"distributed.deepspeed_config={forced}"])
    with pytest.raises(LaunchConfigError, match="enables bf16 but precision=fp32"):
        resolve_deepspeed_config(cfg, world_size=1)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(LaunchConfigError, match="--mixed_precision fp16"):
        check_launcher_precision("bf16")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what accelerate exports when the flag is absent
    check_launcher_precision("bf16")


def test_launcher_zero_stage_must_match(monkeypatch):
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    cfg = load_config(None, ["distributed.deepspeed_config=ds_configs/zero2.json"])
    with pytest.raises(LaunchConfigError, match="ZeRO stage 3"):
        resolve_deepspeed_config(cfg, world_size=1)


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, warmup_steps=4, total_steps=20, min_ratio=0.1) for s in range(25)]
    assert lrs[0] == pytest.approx(0.2) and lrs[3] == pytest.approx(0.8) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[12] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[20] == pytest.approx(0.1) and lrs[24] == pytest.approx(0.1)


def _save(ckpt_dir: Path, name: str, step: int, keep_last: int = 2) -> Path:
    def engine(path: Path) -> None:
        (path / "weights.bin").write_bytes(bytes([step]))

    return save_checkpoint(ckpt_dir, name, TrainState(step=step), save_engine=engine, is_main=True,
                           barrier=lambda: None, keep_last=keep_last)


def test_checkpoints_rotate_and_pointer_moves_last(tmp_path):
    ckpt = tmp_path / "checkpoints"
    assert latest_checkpoint(ckpt) is None
    for step in (1, 2, 3):
        _save(ckpt, f"step_{step:06d}", step)
    assert read_pointer(ckpt) == {"latest": "step_000003", "history": ["step_000002", "step_000003"]}
    assert sorted(p.name for p in ckpt.iterdir() if p.is_dir()) == ["step_000002", "step_000003"]
    latest = latest_checkpoint(ckpt)
    assert TrainState.from_json(latest / "train_state.json").step == 3
    assert not any(p.name.startswith(".tmp") for p in ckpt.iterdir())


def test_failed_save_keeps_previous_checkpoint(tmp_path):
    ckpt = tmp_path / "checkpoints"
    _save(ckpt, "step_000001", 1)

    def broken(path: Path) -> None:
        (path / "partial.bin").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(ckpt, "step_000002", TrainState(step=2), save_engine=broken, is_main=True,
                        barrier=lambda: None, keep_last=2)
    assert latest_checkpoint(ckpt).name == "step_000001"
    assert (ckpt / "step_000001" / "weights.bin").read_bytes() == bytes([1])


def test_ego_only_and_current_frame_views():
    cfg = model_config("tiny")
    batch = make_batch(cfg, num_scenes=2, agents=3, max_agents=4, seed=0)
    a, t = batch.max_agents, batch.history
    ego = ego_only(batch)
    assert ego.agent_mask[:, 1:].sum() == 0 and ego.agent_mask[:, 0].all()
    assert ((ego.voxel_coords[:, 0].long() // t) % a == 0).all()
    assert ego.voxels.shape[0] == int(((batch.voxel_coords[:, 0].long() // t) % a == 0).sum())
    now = current_frame_only(batch)
    assert (now.voxel_coords[:, 0].long() % t == t - 1).all()
    assert not now.frame_mask[..., :-1].any() and torch.equal(now.frame_mask[..., -1], batch.frame_mask[..., -1])
    assert torch.equal(now.gt_boxes, batch.gt_boxes)


def test_wandb_project_and_entity_are_configurable():
    from trainer.config import wandb_init_kwargs

    run = Path("runs/turbotrain-20261201T000000")
    assert wandb_init_kwargs(load_config(None).loop, run) is None
    loop = load_config(None, ["loop.wandb=true"]).loop
    assert wandb_init_kwargs(loop, run) == {"project": "turbotrain", "name": run.name}
    loop = load_config(None, ["loop.wandb=true", "loop.wandb_project=v2x", "loop.wandb_entity=lab"]).loop
    assert wandb_init_kwargs(loop, run) == {"project": "v2x", "entity": "lab", "name": run.name}
    with pytest.raises(ConfigError, match="wandb_project"):
        load_config(None, ["loop.wandb=true", "loop.wandb_project="])


def test_config_changes_list_every_differing_leaf():
    from trainer.checkpointing.run_dir import config_changes

    saved = "optim:\n  lr: 0.002\nstages:\n  a:\n    steps: 2\nrun:\n  allow_config_change: false\n"
    now = "optim:\n  lr: 0.001\nstages:\n  a:\n    steps: 2\n  b:\n    steps: 1\nrun:\n  allow_config_change: true\n"
    assert config_changes(saved, now) == ["optim.lr: 0.002 -> 0.001", "stages.b.steps: (absent) -> 1"]
    assert config_changes(saved, saved) == []
