"""Shared fixtures: the tiny synthetic dataset used by the trainer's end-to-end tests."""

from __future__ import annotations

import pytest

from tests.train_harness import tiny_shards


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[str, str]:
    """(train, val) shard lists of a 1+1-scenario synthetic dataset, built once per test session."""
    return tiny_shards(tmp_path_factory.mktemp("synthetic-cache"))
