"""The loader benchmark compares like with like: both paths yield the same batches."""

import dataclasses

import torch

from bench.loader import direct_batches
from models.grid import GridConfig
from trainer.data.config import ConvertConfig, DataConfig
from trainer.data.convert import convert
from tests.opencood_fixtures import write_toy_scenario
from trainer.data.loader import build_loader


def test_direct_and_shard_paths_yield_identical_batches(tmp_path):
    write_toy_scenario(tmp_path / "src" / "scn000", frames=30, objects=5, points_per_frame=300, seed=0)
    cfg = ConvertConfig(mode="vc", history=2, history_stride=2, future=2, future_stride=2, sample_stride=2)
    summary = convert(tmp_path / "src", str(tmp_path / "shards" / "b-%06d.tar"), cfg, maxcount=4, progress=False)
    data = DataConfig(val_shards=",".join(summary.shards), batch_size=2, num_workers=0)
    grid = GridConfig()
    direct = list(direct_batches(tmp_path / "src", cfg, data, grid))
    shards = list(build_loader(data, grid, split="val", rank=0, world_size=1, seed=0))
    assert summary.samples >= 3 and sum(b.num_scenes for b in direct) == summary.samples
    assert [b.keys for b in direct] == [b.keys for b in shards]
    for a, b in zip(direct, shards):
        for field in dataclasses.fields(a):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if isinstance(x, torch.Tensor):
                assert x.dtype == y.dtype and torch.equal(x, y), field.name
            else:
                assert x == y, field.name
