"""Shared fixtures: the tiny synthetic dataset used by the trainer's end-to-end tests, and a toy scene with
delayed frames for the cooperation-condition tests."""

from __future__ import annotations

import pytest

from tests.train_harness import tiny_shards


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[str, str]:
    """(train, val) shard lists of a 1+1-scenario synthetic dataset, built once per test session."""
    return tiny_shards(tmp_path_factory.mktemp("synthetic-cache"))


@pytest.fixture(scope="session")
def toy_conditions_data(tmp_path_factory):
    """A toy OpenCOOD scene (vehicles 100 and 101, infrastructure -1; 60 frames at 10 Hz) and its 4 samples, two
    shards of 2 each, twice: ``(source dir, shards with delayed frames 1..3, shards without)`` (shard lists)."""
    from tests.opencood_fixtures import write_toy_scenario
    from trainer.data.config import ConvertConfig
    from trainer.data.convert import convert

    root = tmp_path_factory.mktemp("toy-conditions")
    write_toy_scenario(root / "src" / "toy", frames=60, points_per_frame=300, seed=3)
    shards = []
    for name, delay in (("delayed", 3), ("plain", 0)):
        summary = convert(root / "src", str(root / f"{name}-%06d.tar"), ConvertConfig(delay_frames=delay), maxcount=2,
                          progress=False)
        shards.append(",".join(summary.shards))
    return root / "src" / "toy", shards[0], shards[1]


@pytest.fixture(scope="session")
def tiny_exported_weights(tmp_path_factory):
    """An exported ``.safetensors`` of a freshly initialised tiny model (seed 0): a real checkpoint, quickly."""
    import torch

    from models.config import model_config
    from models.v2x_model import V2XModel
    from trainer.checkpointing.export import export_weights

    root = tmp_path_factory.mktemp("tiny-weights")
    torch.manual_seed(0)
    cfg = model_config("tiny")
    folder = root / "checkpoint"
    folder.mkdir()
    torch.save({f"model.{k}": v for k, v in V2XModel(cfg).state_dict().items()}, folder / "pytorch_model.bin")
    return export_weights(folder, root / "tiny.safetensors", cfg)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test starts without the Accelerate state an earlier in-process run left behind.

    Accelerate keeps one state per process (its distributed type, its DeepSpeed plugin); a test that calls
    ``launch/train.py``'s ``main`` in-process would otherwise decide how the next test's Accelerator behaves.
    """
    import sys

    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    yield
