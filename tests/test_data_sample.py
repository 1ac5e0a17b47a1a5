"""The on-disk sample: encode / decode round trip, zero-copy views, malformed members."""

import io
import json

import numpy as np
import pytest

from tests.test_data_prepare import two_agent_sample
from trainer.data.npy import _NPY_HEADER, npy_bytes, npy_view
from trainer.data.sample import (
    ARRAY_FIELDS,
    SampleFormatError,
    SchemaVersionError,
    decode_sample,
    encode_frame,
    encode_sample,
    sample_frames,
)
from trainer.data.shard_read import attach_frames


def records_of(sample):
    """The frame records of ``sample``, then its sample record (as a shard holds them)."""
    return [encode_frame(key, points) for key, points in sample_frames(sample)] + [encode_sample(sample)]


def decode_with_frames(records):
    [record] = attach_frames(records)
    return decode_sample(record)


def test_round_trip_gives_equal_read_only_arrays():
    sample = two_agent_sample(num_boxes=2)
    records = records_of(sample)
    assert len(records) == 4 and "points.npy" not in records[-1]  # 3 agent-frames, then the sample
    decoded = decode_with_frames(records)
    assert decoded.key == sample.key and decoded.meta == sample.meta and decoded.frame_keys == sample.frame_keys
    for name in ARRAY_FIELDS:
        got, want = getattr(decoded, name), getattr(sample, name)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable  # a view of the record's bytes (points: rebuilt once, read-only)
    with pytest.raises(ValueError, match="read-only"):
        decoded.points[0, 0] = 1.0


def test_fortran_ordered_member_decodes():
    records = records_of(two_agent_sample(num_boxes=3))
    records[-1]["boxes.npy"] = npy_bytes(np.asfortranarray(np.arange(21, dtype=np.float32).reshape(3, 7)))
    np.testing.assert_array_equal(decode_with_frames(records).boxes, np.arange(21, dtype=np.float32).reshape(3, 7))


@pytest.mark.parametrize("damage, match", [
    (lambda r: r.update({"poses.npy": r["poses.npy"][:-8]}), "poses.npy is not a valid .npy"),
    (lambda r: r.update({"boxes.npy": b"garbage"}), "boxes.npy is not a valid .npy"),
    (lambda r: r.pop("poses.npy"), "missing member poses.npy"),
    (lambda r: r.pop("frames.json"), "missing member frames.json"),
    (lambda r: r.update({"meta.json": b"{not json"}), "meta.json is not valid JSON"),
])
def test_malformed_members_raise_a_format_error_naming_the_member(damage, match):
    records = records_of(two_agent_sample())
    damage(records[-1])
    with pytest.raises(SampleFormatError, match=match):
        decode_with_frames(records)


def test_object_arrays_are_refused():
    records = records_of(two_agent_sample())
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    records[-1]["track_ids.npy"] = buf.getvalue()
    with pytest.raises(SampleFormatError, match="track_ids.npy"):
        decode_with_frames(records)


def test_other_schema_version_is_an_error_not_a_skip():
    record = encode_sample(two_agent_sample())
    meta = json.loads(record["meta.json"])
    record["meta.json"] = json.dumps({**meta, "schema_version": 99}).encode()
    with pytest.raises(SchemaVersionError, match="schema_version 99"):
        decode_sample(record)


def test_a_schema_v1_sample_is_reported_as_such():
    """v1 records carry points.npy / point_counts.npy and no frames.json: the version is the error."""
    sample = two_agent_sample()
    record = encode_sample(sample)
    record.pop("frames.json")
    record.update({"points.npy": npy_bytes(sample.points), "point_counts.npy": npy_bytes(sample.point_counts),
                   "meta.json": json.dumps({**sample.meta, "schema_version": 1}).encode()})
    with pytest.raises(SchemaVersionError, match="schema_version 1, this reader accepts 2"):
        decode_with_frames([record])


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.zeros((0, 6, 2)),
    np.array([True, False]),
    np.float32(2.5).reshape(()),
    np.arange(3, dtype=">u2"),
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
])
def test_npy_header_fast_path_agrees_with_numpy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    data = buf.getvalue()
    assert _NPY_HEADER.fullmatch(data[10:10 + int.from_bytes(data[8:10], "little")])  # the fast path is taken
    view = npy_view(data)
    assert view.dtype == array.dtype and view.shape == array.shape
    assert view.flags.f_contiguous == array.flags.f_contiguous
    np.testing.assert_array_equal(view, np.load(io.BytesIO(data)))


def test_npy_headers_numpy_writes_otherwise_still_decode():
    array = np.arange(10, dtype=np.int16).reshape(2, 5)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, version=(2, 0))  # a 4-byte header length: numpy's parser
    np.testing.assert_array_equal(npy_view(buf.getvalue()), array)
    structured = np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")])
    buf = io.BytesIO()
    np.save(buf, structured)
    assert npy_view(buf.getvalue()).dtype == structured.dtype
