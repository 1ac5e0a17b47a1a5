"""Shared fixtures: the tiny synthetic dataset used by the trainer's end-to-end tests."""

from __future__ import annotations

import pytest

from tests.train_harness import tiny_shards


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[str, str]:
    """(train, val) shard lists of a 1+1-scenario synthetic dataset, built once per test session."""
    return tiny_shards(tmp_path_factory.mktemp("synthetic-cache"))


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
