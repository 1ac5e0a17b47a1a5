"""Stage features beyond the basic loop: recipe freezing, BEV reconstruction images, parameter-level PCGrad."""

from __future__ import annotations

import json

import pytest
import torch

from models.config import model_config
from models.v2x_model import V2XModel
from tests.train_harness import base_overrides, run_train
from trainer.checkpointing.export import read_exported
from trainer.config_io import load_config
from trainer.engine.freezing import apply_freeze
from trainer.engine.metrics_log import read_metrics

# V2XPnP's manual pipeline (docs/RESULTS.md section 1, recipe (a)), as the modules that TRAIN in each stage.
MANUAL_TRAINED = {
    "s1_detection": {"encoder", "det_head"},
    "s2_temporal_prediction": {"temporal", "pred_head"},
    "s3_joint": {"encoder", "temporal", "det_head", "pred_head"},
    "s4_multi_agent": {"encoder", "temporal", "agent_fusion", "spatial", "det_head", "pred_head"},
}


def test_manual_recipe_freezes_exactly_the_listed_modules():
    cfg = load_config("recipes/manual_4stage.yaml")
    assert list(cfg.stages) == list(MANUAL_TRAINED)
    for name, stage in cfg.stages.items():
        model = V2XModel(cfg.model)
        apply_freeze(model, list(stage.freeze))
        trained = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert trained == MANUAL_TRAINED[name], name
        assert stage.single_agent == (name != "s4_multi_agent")
        assert stage.spatial_fusion == (name == "s4_multi_agent")
        assert stage.temporal_fusion == (name != "s1_detection")
    assert [s.task for s in cfg.stages.values()] == ["detection", "prediction", "multitask", "multitask"]


def test_freeze_prefix_typo_is_an_error():
    with pytest.raises(ValueError, match="matches no parameter"):
        apply_freeze(V2XModel(model_config("tiny")), ["encoderr"])


@pytest.mark.slow
def test_pretrain_writes_reconstruction_images_and_param_pcgrad_trains(tiny_data, tmp_path):
    run = tmp_path / "run"
    args = [*base_overrides(*tiny_data, run, steps=2), "stages.pretrain.steps=2", "pretrain.image_every=1",
            "stages.finetune.evaluate=false", "distributed.engine=plain", "balancing.method=param_pcgrad"]
    result = run_train("python", 1, args)
    assert result.returncode == 0, result.stderr[-4000:]
    images = sorted((run / "pretrain" / "images").glob("recon_step_*.png"))
    assert [p.name for p in images] == ["recon_step_000001.png", "recon_step_000002.png"]
    assert images[0].stat().st_size > 5000
    finetune = [r for r in read_metrics(run / "metrics.jsonl") if r.get("stage") == "finetune" and "loss/total" in r]
    assert [r["step"] for r in finetune] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["loss/total"])) for r in finetune)
    assert json.loads((run / "finetune" / "final.json").read_text())["steps"] == 2


def test_param_pcgrad_needs_the_plain_engine():
    from trainer.config_io import ConfigError

    with pytest.raises(ConfigError, match="param_pcgrad needs distributed.engine=plain"):
        load_config("recipes/multitask.yaml", ["balancing.method=param_pcgrad"])


@pytest.mark.slow
def test_short_stage1_run_lowers_reconstruction_loss_and_feeds_stage2(tiny_data, tmp_path):
    run = tmp_path / "run"
    overrides = [o for o in base_overrides(*tiny_data, run) if not o.startswith("stages.finetune")]
    args = ["--config", "recipes/pretrain.yaml", *overrides, "stages.pretrain.steps=16", "optim.lr=5e-3",
            "optim.warmup_steps=0", "data.augment.enabled=false", "data.samples_per_epoch=2", "data.shuffle_buffer=0",
            "pretrain.image_every=0"]
    result = run_train("python", 1, args)
    assert result.returncode == 0, result.stderr[-4000:]
    recon = {r["step"]: r["loss/recon"] for r in read_metrics(run / "metrics.jsonl") if "loss/recon" in r}
    first, last = sum(recon[s] for s in (1, 2, 3)) / 3, sum(recon[s] for s in (14, 15, 16)) / 3
    assert last < 0.7 * first, recon
    # the stage-1 encoder loads into a stage-2 model; the decoder is what gets discarded
    from trainer.engine.freezing import load_initial_weights

    model = V2XModel(load_config("recipes/multitask.yaml").model)
    report = load_initial_weights(model, run / "pretrain" / "final.safetensors", skip=["recon_head"])
    assert {n.split(".")[0] for n in report["discarded"]} == {"recon_head"}
    state = read_exported(run / "pretrain" / "final.safetensors")["model"]
    for name, tensor in model.state_dict().items():
        if name.startswith(("encoder.", "temporal.", "agent_fusion.", "spatial.")):
            assert torch.equal(tensor, state[name]), name


def test_a_stage_trains_on_its_own_shards_and_they_are_checked_like_the_runs(tiny_data, tmp_path, capsys):
    from launch.train import main
    from trainer.data.preflight import shard_specs

    train, val = tiny_data
    cfg = load_config("recipes/turbotrain.yaml", [f"data.train_shards={train}", f"stages.finetune.train_shards={val}"])
    assert shard_specs(cfg) == [(train, "data.train_shards"), (val, "stages.finetune.train_shards")]
    run = tmp_path / "run"
    args = [*base_overrides(*tiny_data, run, steps=2), "stages.pretrain.steps=2", "stages.pretrain.evaluate=false",
            "stages.finetune.evaluate=false", "distributed.engine=plain"]
    missing = tmp_path / "nowhere.tar"
    assert main([*args, f"stages.finetune.train_shards={missing}"]) == 2
    assert f"stages.finetune.train_shards: shard {missing} does not exist" in capsys.readouterr().err
    marker = tmp_path / "ran"
    assert main([*args, f"stages.finetune.train_shards=pipe:touch {marker} && cat {val}"]) == 2
    assert "stages.finetune.train_shards" in capsys.readouterr().err and not marker.exists()
    assert main([*args, f"stages.finetune.train_shards={val}"]) == 0  # fine-tunes on the other split's shards
    saved = json.loads((run / "finetune" / "final.json").read_text())
    assert saved["steps"] == 2 and load_config(str(run / "config.yaml")).stages["finetune"].train_shards == val
