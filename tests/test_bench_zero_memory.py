"""The pure parts of bench/zero_memory.py: the DeepSpeed configs it measures and the per-stage summary."""

from __future__ import annotations

import json

import pytest
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

from bench.zero_memory import (BUCKETS, CATEGORIES, PRECISIONS, _category, bucket_sizes, ds_config, size_table,
                               summarise)
from trainer.runtime import zero_bucket_sizes

NUM_PARAMS = 41_961


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield tree


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("buckets", BUCKETS)
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_every_measured_config_is_complete_and_valid_for_deepspeed(stage, buckets, precision):
    config = ds_config(stage, 2, buckets=buckets, num_params=NUM_PARAMS, precision=precision)
    assert "auto" not in list(_leaves(config)), json.dumps(config)
    assert config["zero_optimization"]["stage"] == stage
    assert config["bf16"]["enabled"] is (precision == "bf16")
    assert config["train_batch_size"] == 2 * config["train_micro_batch_size_per_gpu"]
    DeepSpeedZeroConfig(**config["zero_optimization"])  # raises on an unknown key or a bad value


def test_trainer_buckets_are_what_the_runtime_fills_in_for_auto():
    assert bucket_sizes("trainer", NUM_PARAMS) == zero_bucket_sizes(NUM_PARAMS)
    zero = ds_config(3, 2, buckets="trainer", num_params=NUM_PARAMS)["zero_optimization"]
    for key, value in zero_bucket_sizes(NUM_PARAMS).items():
        assert zero[key] == value


def test_deepspeed_buckets_are_deepspeeds_own_defaults():
    defaults = DeepSpeedZeroConfig()
    sizes = bucket_sizes("deepspeed", NUM_PARAMS)
    assert sizes["reduce_bucket_size"] == defaults.reduce_bucket_size == 500_000_000
    assert sizes["stage3_param_persistence_threshold"] == defaults.param_persistence_threshold


def test_model_buckets_hold_the_whole_model_and_partition_every_parameter_under_zero3():
    zero3 = ds_config(3, 2, buckets="model", num_params=NUM_PARAMS)["zero_optimization"]
    zero2 = ds_config(2, 2, buckets="model", num_params=NUM_PARAMS)["zero_optimization"]
    assert zero3["reduce_bucket_size"] >= NUM_PARAMS and zero3["reduce_bucket_size"] % 1024 == 0
    assert zero3["stage3_param_persistence_threshold"] == 0
    assert zero2["allgather_bucket_size"] == zero3["reduce_bucket_size"]
    assert not any(key.startswith("stage3_") for key in zero2)


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="buckets must be one of"):
        bucket_sizes("huge", NUM_PARAMS)
    with pytest.raises(ValueError, match="precision must be one of"):
        ds_config(1, 2, buckets="model", num_params=NUM_PARAMS, precision="fp16")


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
    table = size_table({"size": "tiny", "encoder": "spconv", "num_params": NUM_PARAMS, "world": 2,
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


@pytest.mark.parametrize("path, category", [
    ("optimizer.averaged_gradients[0]", "gradients"),
    ("optimizer.single_partition_of_fp32_groups[0]", "master_weights"),
    ("optimizer.fp32_partitioned_groups_flat[0]", "master_weights"),
    ("optimizer.fp32_groups_flat_partition[0]", "master_weights"),
    ("optimizer.ipg_buckets[param]", "other_buffers"),
])
def test_optimizer_held_tensors_are_categorised_by_their_attribute_path(path, category):
    assert _category(path) == category
