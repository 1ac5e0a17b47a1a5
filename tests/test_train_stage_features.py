"""Stage features beyond the basic loop: recipe freezing, BEV reconstruction images, parameter-level PCGrad."""

from __future__ import annotations

import json

import pytest
import torch

from models.config import model_config
from models.v2x_model import V2XModel
from tests.train_harness import base_overrides, run_train
from trainer.config_io import load_config
from trainer.freezing import apply_freeze
from trainer.metrics_log import read_metrics

# What DESIGN.md lists for V2XPnP's manual pipeline, as the modules that TRAIN in each stage.
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
