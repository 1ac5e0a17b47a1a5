"""OpenCOOD tree -> shards, checked against hand-computed values."""

import io
import json
import tarfile

import numpy as np
import pytest

from trainer.data.build import FrameReader, build_sample, select_agents
from trainer.data.config import ConvertConfig
from trainer.data.convert import convert, main
from tests.opencood_fixtures import vehicle_entry, write_frame
from trainer.data.opencood import scan_split
from trainer.data.pointio import SourceFormatError
from trainer.data.sample import SCHEMA_VERSION
from trainer.data.shard_read import read_samples

# Ego vehicle 7 sits still at (10, 5), heading 90 deg (its x axis is world +y), LiDAR at z = 1.5.
EGO_POSE = [10.0, 5.0, 1.5, 0.0, 90.0, 0.0]
POSES = {
    7: EGO_POSE,
    9: [10.0, -5.0, 1.5, 0.0, 0.0, 0.0],  # 10 m from the ego, appears only from frame 1
    8: [90.0, 5.0, 1.5, 0.0, 0.0, 0.0],  # 80 m away: out of range
    -1: [30.0, 5.0, 6.0, 0.0, 0.0, 0.0],  # infrastructure, 20 m
    -2: [30.0, 45.0, 6.0, 0.0, 0.0, 0.0],  # infrastructure, 44.7 m
}
CFG = dict(history=2, history_stride=1, future=2, future_stride=1, sample_stride=1)


def truck(frame):
    """Object 42: a truck moving +1 m/frame along world y; centre = location + (0, 0, 0.5)."""
    return vehicle_entry([10.0, 15.0 + frame, 0.0], 120.0, extent=[2.0, 1.0, 0.75], center=[0.0, 0.0, 0.5],
                         obj_type="Truck")


def write_tree(root, *, fmt="bin"):
    scn = root / "scene_a"
    for f in range(5):
        for aid, pose in POSES.items():
            if aid == 9 and f == 0:
                continue
            vehicles = {}
            if aid == 7 and f < 4:  # the truck leaves after frame 3
                vehicles[42] = truck(f)
            if aid == -1:
                vehicles[50] = vehicle_entry([25.0, 0.0, 0.0], 0.0, obj_type="Pedestrian")
            if aid == 9:
                vehicles[7] = vehicle_entry(EGO_POSE[:3], 90.0)  # the ego itself: never a target
            pts = np.array([[0.0, 10.0, -1.0, 0.5], [1.0, 0.0, -pose[2], 0.2]], dtype=np.float32)
            write_frame(scn, aid, f"{f:06d}", lidar_pose=pose, vehicles=vehicles, points=pts, fmt=fmt)
    (scn / "7" / "000000_camera_gt.yaml").write_text("not: [a frame")  # ignored by name
    return root


def read_shard(path):
    return {s.key: s for s in read_samples([path])}


@pytest.mark.parametrize("fmt", ["bin", "pcd"])
def test_converted_object_matches_source_yaml(tmp_path, fmt):
    write_tree(tmp_path / "src", fmt=fmt)
    summary = convert(tmp_path / "src", str(tmp_path / "out" / "s-%06d.tar"), ConvertConfig(mode="vc", **CFG),
                      progress=False)
    samples = read_shard(summary.shards[0])
    assert summary.samples == 6 and sorted(samples) == [f"scene_a__{e}__00000{t}" for e in (7, 8, 9) for t in (1, 2)]
    s = samples["scene_a__7__000001"]
    assert s.meta["agent_ids"] == [7, 9, -1, -2]
    assert s.meta["agent_types"] == ["vehicle", "vehicle", "infrastructure", "infrastructure"]
    ids = s.track_ids.tolist()
    assert 7 not in ids and sorted(ids) == [42, 50]
    o = ids.index(42)
    # world centre (10, 16, 0.5) -> ego BEV: 11 m ahead, 0 left, 1 m below the ego LiDAR
    np.testing.assert_allclose(s.boxes[o], [11.0, 0.0, -1.0, 4.0, 2.0, 1.5, np.radians(30.0)], atol=1e-5)
    assert s.meta["obj_type_names"][s.obj_types[o]] == "truck"
    np.testing.assert_allclose(s.future[o], [[12.0, 0.0], [13.0, 0.0]], atol=1e-5)
    np.testing.assert_allclose(s.past[o], [[10.0, 0.0], [11.0, 0.0]], atol=1e-5)
    assert s.future_valid[o].all() and s.past_valid[o].all()
    # agent 9 has no frame 0: history step 0 missing, NaN pose, no points
    assert s.frame_valid.tolist() == [[True, True], [False, True], [True, True], [True, True]]
    assert np.isnan(s.poses[1, 0]).all() and s.point_counts[1, 0] == 0
    np.testing.assert_allclose(s.poses[2, 1], POSES[-1])
    np.testing.assert_allclose(s.agent_points(0, 1), [[0.0, 10.0, -1.0, 0.5], [1.0, 0.0, -1.5, 0.2]])
    # at t = 2 the truck's second future frame (4) has no annotation anywhere
    s2 = samples["scene_a__7__000002"]
    assert s2.future_valid[s2.track_ids.tolist().index(42)].tolist() == [True, False]


@pytest.mark.parametrize(
    "mode, ego, expected",
    [("vc", 7, [7, 9, -1, -2]), ("v2v", 7, [7, 9]), ("ic", -1, [-1, 7, 9, -2]), ("i2i", -1, [-1, -2])],
)
def test_modes_select_agents_within_range(tmp_path, mode, ego, expected):
    cfg = ConvertConfig(mode=mode, **CFG)
    reader = FrameReader(scan_split(write_tree(tmp_path))[0], cfg, skip_bad=False)
    sample = build_sample(reader, ego, 1, cfg)
    assert sample.meta["agent_ids"] == expected
    assert sample.meta["mode"] == mode


def test_select_agents_rules():
    pos = {1: (0, 0), 2: (30, 0), 3: (10, 0), -1: (5, 0), -2: (6, 0), -3: (7, 0), 4: (50.5, 0)}
    assert select_agents("vc", 1, pos, comm_range=50, max_agents=5, max_infra_vc=2) == [1, -1, -2, 3, 2]
    assert select_agents("vc", 1, pos, comm_range=50, max_agents=3) == [1, -1, -2]
    assert select_agents("v2v", 1, pos, comm_range=20, max_agents=4) == [1, 3]
    assert select_agents("ic", -1, pos, comm_range=50, max_agents=4) == [-1, -2, -3, 1]
    assert select_agents("i2i", -1, pos, comm_range=50, max_agents=4) == [-1, -2, -3]
    with pytest.raises(ValueError, match="does not allow ego"):
        select_agents("vc", -1, pos, comm_range=50, max_agents=4)


def test_malformed_yaml_raises_naming_file_and_skip_bad_counts(tmp_path):
    write_tree(tmp_path / "src")
    bad = tmp_path / "src" / "scene_a" / "9" / "000002.yaml"
    bad.write_text("lidar_pose: [1, 2, 3]\n")
    out = str(tmp_path / "out" / "s-%06d.tar")
    with pytest.raises(SourceFormatError, match="lidar_pose must be a list of 6") as info:
        convert(tmp_path / "src", out, ConvertConfig(mode="vc", **CFG), progress=False)
    assert str(bad) in str(info.value)
    summary = convert(tmp_path / "src", out, ConvertConfig(mode="vc", **CFG), skip_bad=True, progress=False)
    assert list(summary.bad_files) == [str(bad)]
    assert summary.skipped_samples == 1  # ego 9 at t = 2
    samples = read_shard(summary.shards[0])
    assert "scene_a__9__000002" not in samples
    assert samples["scene_a__7__000002"].meta["agent_ids"] == [7, -1, -2]  # 9 has no usable frame at t


def test_malformed_bin_with_cli_skip_bad(tmp_path, capsys):
    write_tree(tmp_path / "src")
    bad = tmp_path / "src" / "scene_a" / "-1" / "000001.bin"
    bad.write_bytes(b"\x00" * 7)
    out = str(tmp_path / "out" / "s-%06d.tar")
    assert main(["--src", str(tmp_path / "src"), "--out", out, "--history", "2", "--history-stride", "1",
                 "--future", "2", "--future-stride", "1", "--sample-stride", "1", "--no-progress"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    rc = main(["--src", str(tmp_path / "src"), "--out", out, "--history", "2", "--history-stride", "1",
               "--future", "2", "--future-stride", "1", "--sample-stride", "1", "--no-progress", "--skip-bad"])
    text = capsys.readouterr().out
    assert rc == 0 and "1 malformed file(s)" in text and str(bad) in text
    s = read_shard(out % 0)["scene_a__7__000002"]
    assert s.frame_valid[s.meta["agent_ids"].index(-1)].tolist() == [False, True]


def test_empty_point_cloud_and_meta_json(tmp_path):
    write_tree(tmp_path / "src")
    (tmp_path / "src" / "scene_a" / "7" / "000001.bin").write_bytes(b"")
    summary = convert(tmp_path / "src", str(tmp_path / "o-%06d.tar"), ConvertConfig(mode="v2v", **CFG),
                      progress=False)
    with tarfile.open(summary.shards[0]) as tar:
        meta = json.load(io.BytesIO(tar.extractfile("scene_a__7__000001.meta.json").read()))
    assert meta["schema_version"] == SCHEMA_VERSION and meta["history_stride"] == 1 and meta["ego_id"] == 7
    s = read_shard(summary.shards[0])["scene_a__7__000001"]
    assert s.frame_valid[0, 1] and s.point_counts[0, 1] == 0


def test_shards_are_byte_reproducible_without_pax_headers(tmp_path):
    write_tree(tmp_path / "src")
    first = convert(tmp_path / "src", str(tmp_path / "a-%06d.tar"), ConvertConfig(mode="v2v", **CFG), progress=False)
    second = convert(tmp_path / "src", str(tmp_path / "b-%06d.tar"), ConvertConfig(mode="v2v", **CFG), progress=False)
    assert first.samples > 0 and len(first.shards) == len(second.shards)
    for a, b in zip(first.shards, second.shards):
        assert open(a, "rb").read() == open(b, "rb").read()
    with tarfile.open(first.shards[0]) as tar:
        members = tar.getmembers()
        assert members and all(m.pax_headers == {} and m.mtime == 0 for m in members)


CLI = ["--history", "2", "--history-stride", "1", "--future", "2", "--future-stride", "1", "--sample-stride", "1",
       "--no-progress"]


def test_a_malformed_file_mid_run_leaves_no_shard_and_no_temp_file(tmp_path, capsys):
    """maxcount 1: the first sample's shard is complete when ego 7 at t = 2 reads the bad point file."""
    write_tree(tmp_path / "src")
    bad = tmp_path / "src" / "scene_a" / "9" / "000002.bin"
    bad.write_bytes(b"\x00" * 7)
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "s-000005.tar"  # a shard of an earlier conversion: left as it was
    earlier.write_bytes(b"old")
    with pytest.raises(SourceFormatError, match="multiple of 16"):
        convert(tmp_path / "src", str(out / "s-%06d.tar"), ConvertConfig(mode="vc", **CFG), maxcount=1,
                progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["s-000005.tar"]
    rc = main(["--src", str(tmp_path / "src"), "--out", str(out / "s-%06d.tar"), "--maxcount", "1", *CLI])
    err = capsys.readouterr().err
    assert rc == 2 and f"malformed source file {bad}: size 7 bytes" in err and "--skip-bad" in err
    assert sorted(p.name for p in out.iterdir()) == ["s-000005.tar"] and earlier.read_bytes() == b"old"


def test_a_malformed_yaml_leaves_no_empty_tar_and_skip_bad_writes_the_rest(tmp_path, capsys):
    write_tree(tmp_path / "src")
    bad = tmp_path / "src" / "scene_a" / "7" / "000001.yaml"
    bad.write_text("lidar_pose: [1, 2\n")
    out = tmp_path / "out"
    rc = main(["--src", str(tmp_path / "src"), "--out", str(out / "s-%06d.tar"), "--maxcount", "2", *CLI])
    assert rc == 2 and f"{bad}: invalid YAML" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())
    rc = main(["--src", str(tmp_path / "src"), "--out", str(out / "s-%06d.tar"), "--maxcount", "2", "--skip-bad",
               *CLI])
    text = capsys.readouterr().out
    assert rc == 0 and "skipped 1 sample(s); 1 malformed file(s)" in text and f"bad: {bad}: invalid YAML" in text
    assert "wrote 5 samples" in text
    shards = sorted(out.iterdir())
    assert [p.name for p in shards] == ["s-000000.tar", "s-000001.tar", "s-000002.tar"]  # no temp file
    assert "scene_a__7__000001" not in {s.key for s in read_samples([str(p) for p in shards])}


def test_an_output_that_cannot_be_written_exits_2(tmp_path, capsys):
    """Works as root too: nothing can be created below a regular file."""
    write_tree(tmp_path / "src")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rc = main(["--src", str(tmp_path / "src"), "--out", str(blocker / "sub" / "s-%06d.tar"), *CLI])
    err = capsys.readouterr().err
    assert rc == 2 and str(blocker) in err and "no shard was written" in err
    rc = main(["--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o" / "s-%06d.tar"), *CLI])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
