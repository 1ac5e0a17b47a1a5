"""Schema-v2 shards: each agent-frame stored once per shard and decoded back bit for bit; a missing,
malformed or clashing frame is a clear SampleFormatError of the samples using it and of no other."""

import json
import tarfile
import warnings

import numpy as np
import pytest

from models.grid import GridConfig
from tests.opencood_fixtures import write_toy_scenario
from tests.test_data_loader import cfg_for, records_of as shard_file_records, write_records
from tests.test_data_prepare import two_agent_sample
from tests.test_data_sample import decode_with_frames, records_of
from trainer.data.build import FrameReader, build_sample, ego_allowed, sample_times
from trainer.data.config import ConvertConfig
from trainer.data.convert import convert
from trainer.data.loader import build_loader
from trainer.data.npy import npy_bytes
from trainer.data.opencood import scan_split
from trainer.data.sample import ARRAY_FIELDS, SampleFormatError, decode_sample, encode_frame, frame_key
from trainer.data.shard_read import attach_frames, read_samples, sample_records
from trainer.data.shard_write import FrameClashError, ShardSink

CFG = ConvertConfig(mode="vc", history=3, history_stride=2, future=2, future_stride=2, sample_stride=2)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(source dir, summary) of 2 toy scenarios (4 times x 2 egos each) in shards of 5 samples, so that
    shard boundaries cut scenarios; agent 101 of scenario 0 lacks frame 2 and frame 6 of the ego 100 is empty."""
    root = tmp_path_factory.mktemp("dedup")
    for i in range(2):
        write_toy_scenario(root / "src" / f"scn{i}", frames=16, vehicles=2, infrastructure=1, points_per_frame=150,
                           seed=i)
    for ext in ("yaml", "bin"):
        (root / "src" / "scn0" / "101" / f"000002.{ext}").unlink()
    (root / "src" / "scn0" / "100" / "000006.bin").write_bytes(b"")
    summary = convert(root / "src", str(root / "s-%06d.tar"), CFG, maxcount=5, progress=False)
    assert summary.samples == 16 and len(summary.shards) == 4
    return root / "src", summary


def built_directly(src):
    """Every sample of ``src`` from ``build_sample``, in the converter's order (scenario, ego, t)."""
    out = []
    for scn in scan_split(src):
        reader = FrameReader(scn, CFG, skip_bad=False)
        out += [build_sample(reader, ego, t, CFG) for ego in sorted(scn.agents) if ego_allowed(CFG.mode, ego)
                for t in sample_times(scn, ego, CFG)]
    return out


def tar_records(path):
    """(key, member suffixes) of every record of a shard, in archive order."""
    keys: dict[str, list[str]] = {}
    with tarfile.open(path) as tar:
        for name in tar.getnames():
            key, suffix = name.split(".", 1)
            keys.setdefault(key, []).append(suffix)
    return list(keys.items())


def test_shards_decode_to_exactly_the_samples_built_from_the_sources(toy):
    src, summary = toy
    direct, decoded = built_directly(src), list(read_samples(summary.shards))
    assert [s.key for s in decoded] == [s.key for s in direct]
    for got, want in zip(decoded, direct):
        assert got.meta == want.meta and got.frame_keys == want.frame_keys
        for name in ARRAY_FIELDS:
            a, b = getattr(got, name), getattr(want, name)
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (got.key, name)
    assert any(not s.frame_valid.all() for s in decoded)  # a missing frame (None key) survives the trip
    assert any(bool((s.frame_valid & (s.point_counts == 0)).any()) for s in decoded)  # and an empty one


def test_each_frame_is_stored_once_per_shard_before_its_first_use(toy):
    _, summary = toy
    samples = iter(read_samples(summary.shards))
    per_shard, frames_in = [], []
    for shard in summary.shards:
        seen: list[str] = []
        n = 0
        for key, suffixes in tar_records(shard):
            if suffixes == ["frame.npy"]:
                seen.append(key)
                continue
            sample = next(samples)
            assert sample.key == key
            named = {k for row in sample.frame_keys for k in row if k is not None}
            assert named <= set(seen), "a frame comes before the first sample of its shard that uses it"
            n += 1
        per_shard.append(n)
        frames_in.append(seen)
        assert len(seen) == len(set(seen))  # once per shard
    assert per_shard == [5, 5, 5, 1]  # maxcount counts samples, not frame records
    assert summary.frames == sum(len(f) for f in frames_in)
    assert set(frames_in[0]) & set(frames_in[1])  # scenario 0 spans shards 0 and 1: its frames are in both


def test_synthetic_shards_shrink_by_the_frame_reuse_factor(tiny_data):
    """The tiny synthetic dataset (default LiDAR, history 5 x 5 frames, a sample every 5 frames) against
    the schema-v1 size of the same samples, computed member by member (``points.npy`` and
    ``point_counts.npy`` in every sample instead of frame records and ``frames.json``)."""
    on_disk = lambda n: 512 + -(-n // 512) * 512  # noqa: E731 - a tar member: header + data in 512-byte blocks
    shards = [u for spec in tiny_data for u in spec.split(",")]
    v2 = v1 = refs = unique = 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            sizes = {m.name: m.size for m in tar.getmembers()}
        v2_shard = sum(on_disk(n) for n in sizes.values())
        frame_bytes = sum(on_disk(n) for name, n in sizes.items() if name.endswith(".frame.npy"))
        samples = list(read_samples([shard]))
        v1_points = sum(on_disk(len(npy_bytes(s.points))) + on_disk(len(npy_bytes(s.point_counts))) for s in samples)
        v1_lists = sum(on_disk(sizes[f"{s.key}.frames.json"]) for s in samples)
        v2, v1 = v2 + v2_shard, v1 + v2_shard - frame_bytes - v1_lists + v1_points
        refs += sum(int(s.frame_valid.sum()) for s in samples)
        unique += sum(name.endswith(".frame.npy") for name in sizes)
    # 2 scenarios x 2 egos x 2 times: 20 agent-frames a sample, 24 distinct ones per scenario (4 agents x 6 stamps)
    assert (refs, unique) == (160, 48)
    assert 0.9 * refs / unique < v1 / v2 <= refs / unique


# ---- bad input: a clear SampleFormatError for the samples that use the bad frame, no other loss ----

def test_a_frame_missing_or_after_its_sample_is_a_format_error():
    records = records_of(two_agent_sample())
    with pytest.raises(SampleFormatError, match=r"frame s__a1__000005 is not in its shard \(before this sample\)"):
        decode_with_frames(records[1:])
    with pytest.raises(SampleFormatError, match="frame s__a1__000005 is not in its shard"):
        decode_with_frames(records[1:-1] + [records[-1], records[0]])


@pytest.mark.parametrize("payload, match", [
    (npy_bytes(np.zeros((3, 4), np.float64)), r"must be float32 \[n, 4\], got float64 \[3, 4\]"),
    (npy_bytes(np.zeros(4, np.float32)), r"must be float32 \[n, 4\], got float32 \[4\]"),
    (npy_bytes(np.zeros((2, 3), np.float32)), r"must be float32 \[n, 4\], got float32 \[2, 3\]"),
    (npy_bytes(np.zeros((2, 4), ">f4")), r"must be float32 \[n, 4\], got >f4"),
    (b"\x93NUMPY garbage", "is not a valid .npy"),
    (npy_bytes(np.zeros((2, 4), np.float32))[:-4], "is not a valid .npy"),
])
def test_a_frame_record_with_a_bad_array_is_a_format_error(payload, match):
    records = records_of(two_agent_sample())
    records[0]["frame.npy"] = payload
    with pytest.raises(SampleFormatError, match="unusable frame s__a1__000005: frame.npy " + match):
        decode_with_frames(records)


def test_an_object_array_frame_is_refused_without_unpickling():
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([[{"a": 1}] * 4], dtype=object), allow_pickle=True)
    records = records_of(two_agent_sample())
    records[1]["frame.npy"] = buf.getvalue()
    with pytest.raises(SampleFormatError, match="unusable frame s__a1__000010: .*object arrays are not allowed"):
        decode_with_frames(records)


def test_a_clashing_frame_key_spoils_that_key_from_then_on_only():
    sample = two_agent_sample()
    records = records_of(sample)
    other = encode_frame(frame_key("s", -1, "000010"), np.ones((2, 4), np.float32))
    again = dict(records[-1])
    got = list(attach_frames(records + [dict(records[2]), other, again]))  # an identical copy is harmless
    first = decode_sample(got[0])
    np.testing.assert_array_equal(first.points, sample.points)  # read before the clash: the first frame
    with pytest.raises(SampleFormatError, match="frame s__a-1__000010: two frame records of this key with "
                                                "different content"):
        decode_sample(got[1])


@pytest.mark.parametrize("frames_json, match", [
    (b"[[\"s__a1__000005\", ", "frames.json is not valid JSON"),
    (b"\"s__a1__000005\"", "frames.json must be a non-empty list of lists"),
    (b"[]", "frames.json must be a non-empty list of lists"),
    (b"[[\"s__a1__000005\", \"s__a1__000010\"], [\"s__a-1__000010\"]]", "must have non-empty rows of equal length"),
    (b"[[\"s__a1__000005\", 7], [null, \"s__a-1__000010\"]]", "entries must be null or a key .*got 7"),
    (b"[[\"s__a1__000005\", \"../../etc\"], [null, \"s__a-1__000010\"]]", "entries must be null or a key"),
    (b"[[\"s__a1__000005\", \"s__a1__000010\"], [\"s__a1__000005\", \"s__a-1__000010\"]]",
     "must name a frame exactly where frame_valid is true"),
    (b"[[\"s__a1__000005\", \"s__a1__000010\"]]",
     r"must name a frame exactly where frame_valid is true \(\[2\]\[2\]\)"),
])
def test_a_malformed_frame_list_is_a_format_error(frames_json, match):
    records = records_of(two_agent_sample())
    records[-1]["frames.json"] = frames_json
    with pytest.raises(SampleFormatError, match=match):
        decode_with_frames(records)


def test_frames_are_kept_per_shard_read(toy, tmp_path):
    """A sample never gets a frame from another shard, nor from an earlier read of the same shard."""
    _, summary = toy
    records = shard_file_records(summary.shards[1])
    samples = [r for r in records if "meta.json" in r]
    write_records(tmp_path / "samples-only.tar", samples)
    write_records(tmp_path / "late.tar", [samples[0]] + [r for r in records if r is not samples[0]])
    urls = [summary.shards[1], tmp_path / "samples-only.tar", tmp_path / "late.tar", tmp_path / "late.tar"]
    got = list(sample_records([{"url": str(u)} for u in urls], handler=lambda exn: False))
    assert len(got) == 20 and not any(r["__frames__"] for r in got[5:10])
    assert got[10]["__frames__"] == got[15]["__frames__"] == {}  # its frames come after it, in both reads
    assert got[11]["__frames__"] and got[16]["__frames__"].keys() == got[11]["__frames__"].keys()
    for record in (got[5], got[15]):
        with pytest.raises(SampleFormatError, match="is not in its shard"):
            decode_sample(record)


def test_the_loader_skips_and_counts_exactly_the_samples_a_bad_frame_touches(toy, tmp_path):
    _, summary = toy
    records = shard_file_records(summary.shards[1])
    samples = list(read_samples([summary.shards[1]]))
    users = {r["__key__"]: {s.key for s in samples if any(r["__key__"] in row for row in s.frame_keys)}
             for r in records if "frame.npy" in r}
    # a bad array in a frame only sample 0 uses, a frame only sample 2 uses removed, sample 1's frame list broken
    bad = next(r for r in records if users.get(r["__key__"]) == {samples[0].key})
    gone = next(r for r in records if users.get(r["__key__"]) == {samples[2].key})
    bad["frame.npy"] = npy_bytes(np.zeros((3, 4), np.float64))
    records.remove(gone)
    next(r for r in records if r["__key__"] == samples[1].key)["frames.json"] = b"[[null]]"
    write_records(tmp_path / "bad.tar", records)
    spoiled = {s.key for s in samples[:3]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(build_loader(cfg_for(str(tmp_path / "bad.tar"), batch_size=1), GridConfig(), split="val",
                                    rank=0, world_size=1, seed=0))
    assert [k for b in batches for k in b.keys] == [s.key for s in samples if s.key not in spoiled]
    assert sum(b.num_skipped for b in batches) == len(spoiled)
    messages = " ".join(str(w.message) for w in caught)
    assert "bad.tar" in messages and f"unusable frame {bad['__key__']}" in messages
    assert f"frame {gone['__key__']} is not in its shard" in messages and "frames.json" in messages
    good = list(build_loader(cfg_for(summary.shards[1], batch_size=1), GridConfig(), split="val", rank=0,
                             world_size=1, seed=0))
    assert len(good) == len(samples) and sum(b.num_skipped for b in good) == 0


def test_the_writer_refuses_a_frame_key_with_other_points(tmp_path):
    sample = two_agent_sample()
    sink = ShardSink(str(tmp_path / "w-%06d.tar"), maxcount=10)
    with sink:
        sink.write(sample)
        changed = two_agent_sample()
        changed.points = changed.points + np.float32(1.0)
        with pytest.raises(FrameClashError, match="frame s__a1__000005 has other points"):
            sink.write(changed)
    assert [s.key for s in read_samples(sink.shards)] == [sample.key]  # nothing of the refused sample written
    empty = ShardSink(str(tmp_path / "e-%06d.tar"), maxcount=10)
    empty.close()
    assert empty.shards == [] and not list(tmp_path.glob("e-*.tar"))
    with pytest.raises(ValueError, match="needs a %d-style"):
        ShardSink(str(tmp_path / "x.tar"), maxcount=1)


def test_frame_records_hold_only_points_and_sample_records_no_points(toy):
    _, summary = toy
    for key, suffixes in tar_records(summary.shards[0]):
        assert suffixes == ["frame.npy"] or ("frames.json" in suffixes and "meta.json" in suffixes
                                             and "points.npy" not in suffixes and "point_counts.npy" not in suffixes)
    with tarfile.open(summary.shards[0]) as tar:
        lists = [json.loads(tar.extractfile(m).read()) for m in tar.getmembers() if m.name.endswith(".frames.json")]
    assert lists and all(len(row) == CFG.history for grid in lists for row in grid)
