"""Shard loader: splitting, fixed per-rank epochs, skip counting, schema check, class grouping."""

import json
import tarfile
import time
import warnings

import pytest
import webdataset as wds

from models.grid import GridConfig
from trainer.data.classes import ClassGrouping, UnmappedObjectTypeError
from trainer.data.config import ClassGroup, ConvertConfig, DataConfig
from trainer.data.convert import convert
from tests.opencood_fixtures import write_toy_scenario
from trainer.data.loader import NoReadableSampleError, build_loader
from trainer.data.sample import SchemaVersionError
from trainer.data.split import batches_per_rank, expand_shards, split_shards

GRID = GridConfig(voxel_size=[0.8, 0.8, 0.5], max_voxels=4000)
SMALL = dict(history=3, history_stride=2, future=2, future_stride=2, sample_stride=2)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """3 shards of toy samples (2 + 2 + 2), T = 3, T_f = 2."""
    root = tmp_path_factory.mktemp("toy")
    write_toy_scenario(root / "src" / "toy", frames=14, vehicles=2, infrastructure=1, points_per_frame=300)
    summary = convert(root / "src", str(root / "good-%06d.tar"), ConvertConfig(mode="vc", **SMALL), maxcount=2,
                      progress=False)
    assert summary.samples == 6 and len(summary.shards) == 3
    return summary.shards


def records_of(path):
    out = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, suffix = m.name.split(".", 1)
            out.setdefault(key, {"__key__": key})[suffix] = tar.extractfile(m).read()
    return list(out.values())


def write_records(path, records):
    with wds.TarWriter(str(path)) as sink:
        for r in records:
            sink.write(r)


def cfg_for(spec, **kw):
    kw.setdefault("num_workers", 0)
    kw.setdefault("batch_size", 2)
    return DataConfig(train_shards=spec, val_shards=spec, **kw)


@pytest.mark.parametrize("n_urls, world, workers", [(12, 2, 3), (7, 3, 2), (5, 1, 1)])
def test_node_and_worker_splits_are_disjoint_and_complete(n_urls, world, workers):
    urls = [f"s{i}.tar" for i in range(n_urls)]
    parts = [split_shards(urls, rank=r, world_size=world, worker=w, num_workers=workers)
             for r in range(world) for w in range(workers)]
    flat = [u for p in parts for u in p]
    assert sorted(flat) == sorted(urls) and len(flat) == len(set(flat))


def test_split_with_fewer_shards_than_consumers_never_leaves_a_worker_empty():
    parts = [split_shards(["a", "b"], rank=r, world_size=2, worker=w, num_workers=2) for r in range(2) for w in range(2)]
    assert parts == [["a"], ["b"], ["a"], ["b"]]
    with pytest.raises(ValueError, match="rank 2"):
        split_shards(["a"], rank=2, world_size=2, worker=0, num_workers=1)


def test_expand_and_batches_per_rank():
    assert expand_shards("x-{00..02}.tar,y.tar") == ["x-00.tar", "x-01.tar", "x-02.tar", "y.tar"]
    assert batches_per_rank(10, batch_size=2, world_size=2) == 2
    with pytest.raises(ValueError, match="names no shards"):
        expand_shards(" , ")


def test_two_ranks_get_the_same_number_of_batches(shards):
    # 3 shards over 2 ranks: rank 0 reads 2 shards, rank 1 one; both still yield exactly 3 batches
    cfg = cfg_for(",".join(shards), samples_per_epoch=12, shuffle_buffer=4)
    counts = []
    for rank in range(2):
        loader = build_loader(cfg, GRID, split="train", rank=rank, world_size=2, seed=1)
        batches = list(loader)
        assert len(loader) == 3
        counts.append(len(batches))
        assert all(b.num_scenes == 2 and b.history == 3 for b in batches)
    assert counts == [3, 3]


def test_resampled_training_and_worker_process(shards):
    cfg = cfg_for(",".join(shards), samples_per_epoch=6, resampled=True, num_workers=1)
    batches = list(build_loader(cfg, GRID, split="train", rank=0, world_size=1, seed=3))
    assert len(batches) == 3 and all(b.voxels.shape[0] > 0 for b in batches)
    for b in batches:  # own storage of their size: a worker sends no unused voxel-cap rows through shared memory
        for t in (b.voxels, b.voxel_coords, b.voxel_num_points):
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_val_single_pass_sees_every_sample_once(shards):
    loader = build_loader(cfg_for(",".join(shards), batch_size=4), GRID, split="val", rank=0, world_size=1, seed=0)
    keys = [k for b in loader for k in b.keys]
    assert len(keys) == 6 and len(set(keys)) == 6
    with pytest.raises(ValueError, match="val_samples"):
        build_loader(cfg_for(",".join(shards)), GRID, split="val", rank=0, world_size=2, seed=0)


def test_corrupt_member_and_truncated_shard_are_skipped_and_counted(shards, tmp_path):
    everything = records_of(shards[0])
    records = [r for r in everything if "meta.json" in r]  # the 2 samples (the others are their frames)
    assert len(records) == 2 and len(everything) > 2
    records[0]["boxes.npy"] = b"\x93NUMPY garbage"
    write_records(tmp_path / "corrupt.tar", everything)
    raw = open(shards[1], "rb").read()
    (tmp_path / "trunc.tar").write_bytes(raw[: len(raw) // 2 + 100])
    spec = f"{tmp_path}/corrupt.tar,{tmp_path}/trunc.tar,{shards[2]}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(build_loader(cfg_for(spec, batch_size=1), GRID, split="val", rank=0, world_size=1, seed=0))
    keys = [k for b in batches for k in b.keys]
    assert records[1]["__key__"] in keys and records[0]["__key__"] not in keys
    assert 3 <= len(keys) <= 4  # 1 of corrupt.tar, 0-1 of the truncated shard, 2 of the good one
    assert sum(b.num_skipped for b in batches) >= 2
    messages = " ".join(str(w.message) for w in caught)
    assert "corrupt.tar" in messages and "trunc.tar" in messages


def test_other_schema_version_is_an_error_not_a_skip(shards, tmp_path):
    records = records_of(shards[0])
    for r in records:
        if "meta.json" in r:
            meta = json.loads(r["meta.json"])
            meta["schema_version"] = 1
            r["meta.json"] = json.dumps(meta).encode()
    write_records(tmp_path / "v1.tar", records)
    with pytest.raises(SchemaVersionError, match="schema_version 1"):
        list(build_loader(cfg_for(str(tmp_path / "v1.tar")), GRID, split="val", rank=0, world_size=1, seed=0))


def test_unmapped_object_type_is_an_error(shards):
    cfg = cfg_for(shards[0], taxonomy="custom", classes=[ClassGroup(name="pedestrian", obj_types=["pedestrian"])])
    with pytest.raises(UnmappedObjectTypeError, match="'car'"):
        list(build_loader(cfg, GRID, split="val", rank=0, world_size=1, seed=0))


def test_class_grouping_default_and_config_validation():
    cfg = DataConfig()
    grouping = ClassGrouping(cfg.classes, cfg.drop_obj_types)
    assert [grouping.class_of(t) for t in ["Car", "Concrete Truck", "pedestrian", "barrier"]] == [0, 2, 1, -1]
    with pytest.raises(ValueError, match="'car' is in both"):
        DataConfig(taxonomy="custom", classes=[ClassGroup(name="a", obj_types=["car"]),
                                               ClassGroup(name="b", obj_types=["car"])])
    with pytest.raises(ValueError, match="batch_size"):
        DataConfig(batch_size=0)
    with pytest.raises(ValueError, match="split must be"):
        build_loader(cfg_for("x.tar"), GRID, split="test", rank=0, world_size=1, seed=0)


def test_data_config_is_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(DataConfig), {"batch_size": 3, "augment": {"flip_prob": 0.0}})
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, DataConfig) and cfg.batch_size == 3 and cfg.augment.flip_prob == 0.0


def _all_frames_garbage(shard: str, out) -> str:
    """A copy of ``shard`` whose samples keep valid metadata but whose every point cloud is garbage."""
    records = records_of(shard)
    for r in records:
        if "frame.npy" in r:
            r["frame.npy"] = b"\x93NUMPY not an array"
    write_records(out, records)
    return str(out)


@pytest.mark.parametrize("split_name, extra", [("train", {"shuffle_buffer": 16}), ("train", {"resampled": True}),
                                                ("val", {})])
def test_shards_without_a_decodable_sample_fail_fast_naming_them(shards, tmp_path, split_name, extra):
    bad = [_all_frames_garbage(s, tmp_path / f"bad{i}.tar") for i, s in enumerate(shards[:2])]
    cfg = cfg_for(",".join(bad), batch_size=1, samples_per_epoch=64, **extra)
    loader = build_loader(cfg, GRID, split=split_name, rank=0, world_size=1, seed=0)
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NoReadableSampleError, match="decoded none") as err:
            list(loader)
    assert time.monotonic() - start < 60
    message = str(err.value)
    assert "bad0.tar" in message and "bad1.tar" in message and "skipped in total" in message
    assert "SampleFormatError" in message


def test_a_decodable_sample_among_corrupt_ones_never_trips_the_check(shards, tmp_path):
    """One good shard among corrupt ones, reordered across passes by a large shuffle buffer: no false alarm."""
    bad = [_all_frames_garbage(s, tmp_path / f"bad{i}.tar") for i, s in enumerate(shards[:2])]
    cfg = cfg_for(",".join([*bad, shards[2]]), batch_size=1, samples_per_epoch=40, shuffle_buffer=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = [k for b in build_loader(cfg, GRID, split="train", rank=0, world_size=1, seed=0) for k in b.keys]
    good = {r["__key__"] for r in records_of(shards[2]) if "meta.json" in r}
    assert len(keys) == 40 and set(keys) == good

