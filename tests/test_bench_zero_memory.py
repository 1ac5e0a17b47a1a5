"""The pure parts of bench/zero_memory.py: the training configs and DeepSpeed JSONs it gives the runtime (checked
as the runtime resolves them) and the per-stage summary."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

from bench.common import REPO
from bench.engine_bytes import CATEGORIES, category
from bench.zero_memory import (BUCKETS, PRECISIONS, STAGES, deepspeed_config_path, size_table, summarise,
                               train_config, write_deepspeed_configs, zero_section)
from models.config import model_config
from models.parallelize import parameter_count
from trainer.config import DistributedConfig
from trainer.runtime import resolve_deepspeed_config, zero_bucket_sizes

BUCKET_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
               "stage3_param_persistence_threshold")


@pytest.fixture(scope="module")
def num_params():
    return parameter_count(train_config("tiny", "spconv").model)


@pytest.fixture(scope="module")
def configs(tmp_path_factory, num_params):
    folder = tmp_path_factory.mktemp("deepspeed_configs")
    write_deepspeed_configs(folder, num_params)
    return folder


def resolved(configs, stage, buckets, precision="fp32"):
    """The DeepSpeed config the runtime builds the engine of one measurement from (2 processes)."""
    cfg = train_config("tiny", "spconv", precision, deepspeed_config_path(configs, buckets, stage))
    return cfg, resolve_deepspeed_config(cfg, 2)


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield tree


def test_the_measured_model_is_the_preset_a_run_of_that_size_trains():
    cfg = train_config("tiny", "pillars")
    assert cfg.model == replace(model_config("tiny"), encoder="pillars")
    assert cfg.distributed.engine == "deepspeed" and cfg.data.batch_size == 1 and cfg.optim.grad_accum_steps == 1


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("buckets", BUCKETS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_measured_config_resolves_completely_and_validly_for_deepspeed(configs, stage, buckets, precision):
    cfg, config = resolved(configs, stage, buckets, precision)
    assert "auto" not in list(_leaves(config)), json.dumps(config)
    assert config["zero_optimization"]["stage"] == stage
    assert config["bf16"]["enabled"] is (precision == "bf16") and config["fp16"]["enabled"] is False
    assert config["train_batch_size"] == 2 * config["train_micro_batch_size_per_gpu"] == 2
    assert config["gradient_clipping"] == cfg.optim.grad_clip  # what a training run clips at
    DeepSpeedZeroConfig(**config["zero_optimization"])  # raises on an unknown key or a bad value


def test_trainer_buckets_measure_the_repo_json_a_run_at_that_stage_uses(configs):
    for stage in STAGES:  # stage 0: the default distributed.deepspeed_config with distributed.zero_stage=0
        repo = json.loads((REPO / (f"ds_configs/zero{stage}.json" if stage else DistributedConfig().deepspeed_config))
                          .read_text())
        repo["zero_optimization"]["stage"] = stage
        assert json.loads(deepspeed_config_path(configs, "trainer", stage).read_text()) == repo


def test_trainer_buckets_are_what_the_runtime_fills_in_for_auto(configs, num_params):
    _, config = resolved(configs, 3, "trainer")
    for key, value in zero_bucket_sizes(num_params).items():
        assert config["zero_optimization"][key] == value


def test_deepspeed_buckets_leave_deepspeed_its_own_defaults(configs):
    zero = resolved(configs, 3, "deepspeed")[1]["zero_optimization"]
    assert not set(BUCKET_KEYS) & set(zero)
    given, defaults = DeepSpeedZeroConfig(**zero), DeepSpeedZeroConfig()
    assert given.reduce_bucket_size == defaults.reduce_bucket_size == 500_000_000
    assert given.param_persistence_threshold == defaults.param_persistence_threshold


def test_model_buckets_hold_the_whole_model_and_partition_every_parameter_under_zero3(configs, num_params):
    zero3 = resolved(configs, 3, "model")[1]["zero_optimization"]
    zero2 = resolved(configs, 2, "model")[1]["zero_optimization"]
    assert zero3["reduce_bucket_size"] >= num_params and zero3["reduce_bucket_size"] % 1024 == 0
    assert zero3["stage3_param_persistence_threshold"] == 0
    assert zero2["allgather_bucket_size"] == zero3["reduce_bucket_size"]
    assert not any(key.startswith("stage3_") for key in zero2)


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="buckets must be one of"):
        zero_section(1, "huge", 1000)
    with pytest.raises(ValueError, match="precision must be one of"):
        train_config("tiny", "spconv", "fp16")


def _rank(rank, stage, scale, precision="bf16", buckets="model"):
    return {"precision": precision, "buckets": buckets, "stage": stage, "rank": rank,
            **{k: int(100 * scale * (1 + rank)) for k in CATEGORIES}, "total": int(500 * scale * (1 + rank))}


def test_summary_takes_the_worst_rank_and_ratios_to_no_zero_of_the_same_setting():
    per_rank = [_rank(r, s, 1.0 if s == 0 else 0.5) for r in (0, 1) for s in (0, 1, 2, 3)]
    per_rank += [_rank(r, s, 9.0, buckets="deepspeed") for r in (0, 1) for s in (0, 1, 2, 3)]
    rows = summarise({"per_rank": per_rank}, "bf16", "model")
    assert [row["stage"] for row in rows] == [0, 1, 2, 3]
    assert rows[0]["params"] == 200 and rows[3]["params"] == 100  # rank 1 holds twice rank 0's bytes
    assert rows[0]["total_ratio"] == 1.0 and rows[3]["total_ratio"] == 0.5 and rows[2]["optimizer_ratio"] == 0.5


def test_size_table_has_a_row_per_precision_bucket_setting_and_stage():
    per_rank = [_rank(r, s, 1.0, precision=p, buckets=b) for p in PRECISIONS for b in BUCKETS for r in (0, 1)
                for s in (0, 1, 2, 3)]
    table = size_table({"size": "tiny", "encoder": "spconv", "num_params": 41_961, "world": 2,
                        "per_rank": per_rank})
    rows = [line for line in table.splitlines() if line.startswith("| fp32") or line.startswith("| bf16")]
    assert len(rows) == len(PRECISIONS) * len(BUCKETS) * 4
    assert "41,961 parameters" in table and rows[0].startswith("| fp32 | model | 0 | 0.2 |")


def test_summary_refuses_a_missing_measurement():
    per_rank = [_rank(r, s, 1.0) for r in (0, 1) for s in (0, 1, 2)]
    with pytest.raises(ValueError, match="ZeRO stage 3"):
        summarise({"per_rank": per_rank}, "bf16", "model")
    with pytest.raises(ValueError, match="fp32"):
        summarise({"per_rank": per_rank}, "fp32", "model")


@pytest.mark.parametrize("path, expected", [
    ("optimizer.averaged_gradients[0]", "gradients"),
    ("optimizer.single_partition_of_fp32_groups[0]", "master_weights"),
    ("optimizer.fp32_partitioned_groups_flat[0]", "master_weights"),
    ("optimizer.fp32_groups_flat_partition[0]", "master_weights"),
    ("optimizer.ipg_buckets[param]", "other_buffers"),
])
def test_optimizer_held_tensors_are_categorised_by_their_attribute_path(path, expected):
    assert category(path) == expected
