"""The seekable tar reader yields exactly webdataset's records, and reports what it cannot read."""

import pytest
from webdataset.handlers import reraise_exception
from webdataset.tariterators import tarfile_samples

from trainer.data import url_policy
from trainer.data.config import ConvertConfig
from trainer.data.convert import convert
from tests.opencood_fixtures import write_toy_scenario
from trainer.data.tar_read import shard_groups, shard_records


class Recorder:
    """A handler that records what it is given and skips it."""

    def __init__(self):
        self.errors = []

    def __call__(self, exn):
        self.errors.append(exn)
        return True


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("tar")
    write_toy_scenario(root / "src" / "toy", frames=12, vehicles=2, infrastructure=1, points_per_frame=200)
    cfg = ConvertConfig(mode="vc", history=2, history_stride=1, future=1, future_stride=1, sample_stride=1)
    summary = convert(root / "src", str(root / "s-%06d.tar"), cfg, maxcount=3, progress=False)
    assert len(summary.shards) >= 2
    return summary.shards


@pytest.fixture
def command_urls_opted_in():
    """As ``--allow-command-urls`` on the command line does (the piped shard below is a command URL)."""
    url_policy.allow_command_urls(True)
    yield
    url_policy.allow_command_urls(False)


def test_records_equal_webdatasets_for_local_and_piped_shards(shards, command_urls_opted_in):
    expected = list(tarfile_samples([{"url": u} for u in shards], handler=reraise_exception))
    local = list(shard_records([{"url": u} for u in shards], handler=reraise_exception))
    piped = list(shard_records([{"url": f"pipe:cat {u}"} for u in shards], handler=reraise_exception))  # not seekable
    assert len(expected) > 3
    for got, prefix in ((local, ""), (piped, "pipe:cat ")):
        assert [r["__key__"] for r in got] == [r["__key__"] for r in expected]
        for g, e in zip(got, expected):
            assert g.keys() == e.keys() and g["__url__"] == prefix + e["__url__"]
            assert all(g[k] == e[k] for k in e if k != "__url__")


def test_truncated_and_garbage_shards_are_reported_and_the_stream_goes_on(shards, tmp_path):
    raw = open(shards[0], "rb").read()
    (tmp_path / "trunc.tar").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbage.tar").write_bytes(b"not a tar file" * 100)
    urls = [str(tmp_path / "trunc.tar"), str(tmp_path / "garbage.tar"), str(tmp_path / "missing.tar"), shards[1]]
    handler = Recorder()
    got = list(shard_records([{"url": u} for u in urls], handler=handler))
    good = list(shard_records([{"url": shards[1]}], handler=reraise_exception))
    whole = list(shard_records([{"url": shards[0]}], handler=reraise_exception))
    assert [r["__key__"] for r in got[-len(good):]] == [r["__key__"] for r in good]  # the good shard, whole
    truncated = got[: len(got) - len(good)]
    assert len(truncated) < len(whole)  # the truncated shard yields a prefix, its last sample may be partial
    assert all(r["__key__"] == w["__key__"] for r, w in zip(truncated, whole))
    reported = " ".join(str(e.args) for e in handler.errors)
    for name in ("trunc.tar", "garbage.tar", "missing.tar"):
        assert name in reported


def test_a_handler_that_returns_false_stops_the_stream(shards, tmp_path):
    (tmp_path / "garbage.tar").write_bytes(b"\0junk" * 300)
    got = list(shard_records([{"url": str(tmp_path / "garbage.tar")}, {"url": shards[0]}], handler=lambda exn: False))
    assert got == []


def test_records_are_grouped_per_shard_read_even_for_the_same_shard_twice(shards):
    whole = [r["__key__"] for r in shard_records([{"url": shards[0]}], handler=reraise_exception)]
    groups = [[r["__key__"] for r in group]
              for group in shard_groups([{"url": shards[0]}, {"url": shards[0]}, {"url": shards[1]}],
                                        handler=reraise_exception)]
    assert len(groups) == 3 and groups[0] == groups[1] == whole and groups[2] and groups[2] != whole
