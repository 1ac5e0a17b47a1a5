"""Real datasets' files through the converter: V2X-Real (raw types, NaN rows in ``.bin``), OPV2V (open3d
``.pcd`` in all three encodings, no ``obj_type``), taxonomies and their convert-time report, point cleaning
and the box range rules."""

import numpy as np
import pytest

from tests.dataset_writers import lzf_compress, write_open3d_pcd
from tests.opencood_fixtures import vehicle_entry, write_frame
from trainer.data.box_range import boxes_in_range
from trainer.data.classes import DROPPED, ClassGrouping
from trainer.data.config import ClassGroup, ConvertConfig, DataConfig
from trainer.data.convert import convert, main as convert_main
from trainer.data.lzf import LZFError, lzf_decompress
from trainer.data.point_clean import clean_points
from trainer.data.pointio import SourceFormatError, read_pcd
from trainer.data.shard_read import read_samples

CFG = dict(history=2, history_stride=1, future=1, future_stride=1, sample_stride=1)
V2X_REAL_TYPES = ["LongVehicle", "PoliceCar", "Child", "RoadWorker", "ScooterRider", "MotorcyleRider",
                  "BicycleRider", "TrashCan", "FireHydrant", "Bicycle", "Van", "Motorcycle"]


def test_lzf_decompress_hand_built_streams():
    assert lzf_decompress(b"\x02abc\x20\x02", 6) == b"abcabc"  # literal 'abc', then 3 bytes from 3 back
    assert lzf_decompress(b"\x00a\x60\x00", 6) == b"aaaaaa"  # a 5-byte copy overlapping what it writes
    assert lzf_decompress(b"\x00a\xe0\x03\x00", 13) == b"a" * 13  # long form: 7 + 3 + 2 bytes
    for stream, size, message in [(b"\x05ab", 6, "passes the end"), (b"\x20\x05", 3, "before the start"),
                                  (b"\x02abc", 4, "3 bytes, 4 announced"), (b"\xe0", 9, "no length byte")]:
        with pytest.raises(LZFError, match=message):
            lzf_decompress(stream, size)
    data = bytes(np.random.default_rng(0).integers(0, 3, 4000, dtype=np.uint8)) + b"\x07" * 600
    assert lzf_decompress(lzf_compress(data), len(data)) == data


@pytest.mark.parametrize("data", ["ascii", "binary", "binary_compressed"])
def test_open3d_pcd_gives_the_red_channel_as_intensity(tmp_path, data):
    xyz = np.random.default_rng(1).normal(size=(256, 3)) * 40
    write_open3d_pcd(tmp_path / "f.pcd", xyz, np.arange(256), data=data)
    points = read_pcd(tmp_path / "f.pcd")
    np.testing.assert_array_equal(points[:, :3], xyz.astype(np.float32))
    np.testing.assert_array_equal(points[:, 3], (np.arange(256) / 255.0).astype(np.float32))  # colors[:, 0]


def test_integer_intensity_is_normalised_and_broken_compression_named(tmp_path):
    table = np.zeros(3, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<u2")])
    table["intensity"] = [0, 65535, 13107]
    head = "FIELDS x y z intensity\nSIZE 4 4 4 2\nTYPE F F F U\nCOUNT 1 1 1 1\nPOINTS 3\nDATA binary\n"
    (tmp_path / "u16.pcd").write_bytes(head.encode() + table.tobytes())
    np.testing.assert_allclose(read_pcd(tmp_path / "u16.pcd")[:, 3], [0.0, 1.0, 0.2], atol=1e-7)
    write_open3d_pcd(tmp_path / "c.pcd", np.ones((4, 3)), np.zeros(4), data="binary_compressed")
    raw = bytearray((tmp_path / "c.pcd").read_bytes())
    raw[-1] ^= 0xFF  # the last LZF byte
    (tmp_path / "c.pcd").write_bytes(bytes(raw[:-3]))
    with pytest.raises(SourceFormatError, match="truncated|does not decompress") as info:
        read_pcd(tmp_path / "c.pcd")
    assert "c.pcd" in str(info.value)


def test_clean_points_drops_nonfinite_rows_masks_the_ego_and_zeroes_intensity():
    pts = np.array([[1.0, 0.0, 0.0, 0.5], [np.nan, 1, 1, 0.5], [10, 10, 0, 0.7], [2.95, -1.1, 0, 0.1],
                    [3.0, 0.0, 0, 0.2], [np.inf, 0, 0, 0.1]], dtype=np.float32)
    plain = clean_points(pts)
    assert (plain.nonfinite, plain.ego, len(plain.points)) == (2, 0, 4)
    masked = clean_points(pts, zero_intensity=True, mask_ego_points=True)
    np.testing.assert_array_equal(masked.points, [[10, 10, 0, 0], [3.0, 0, 0, 0]])  # box bounds included
    assert (masked.nonfinite, masked.ego) == (2, 2)


def test_box_range_rules():
    boxes = np.array([[49.0, 0, 0, 4, 2, 1.5, 0],     # centre inside, front corners outside x < 50
                      [51.0, 0, 0, 4, 2, 1.5, 0],     # centre outside, rear corners inside
                      [10.0, 5, 0, 4, 2, 1.5, 0.7]])  # well inside
    rng = (-50, -40, 50, 40)
    assert boxes_in_range(boxes, rng, "centre").tolist() == [True, False, True]
    assert boxes_in_range(boxes, rng, "all_corners").tolist() == [False, False, True]
    assert boxes_in_range(boxes, rng, "any_corner").tolist() == [True, True, True]


def test_v2x_real_taxonomy_is_its_super_class_map():
    data = DataConfig(taxonomy="v2x-real")
    grouping = ClassGrouping(data.classes, data.drop_obj_types)
    got = {t: grouping.class_of(t) for t in V2X_REAL_TYPES + ["Car", "Pedestrian", "Scooter", "Truck", "Bus"]}
    names = data.classes
    assert [g.name for g in names] == ["vehicle", "pedestrian", "truck"]
    assert got == {"LongVehicle": 0, "PoliceCar": 0, "Car": 0, "Child": 1, "RoadWorker": 1, "ScooterRider": 1,
                   "MotorcyleRider": 1, "BicycleRider": 1, "Pedestrian": 1, "Scooter": 1, "Motorcycle": 1,
                   "TrashCan": 2, "Van": 2, "Truck": 2, "Bus": 2, "FireHydrant": DROPPED, "Bicycle": DROPPED}
    with pytest.raises(ValueError, match="differs from taxonomy 'v2x-real'.*taxonomy=custom"):
        DataConfig(taxonomy="v2x-real", classes=[ClassGroup(name="vehicle", obj_types=["car"])])
    with pytest.raises(ValueError, match="unknown taxonomy 'kitti'"):
        DataConfig(taxonomy="kitti")


def _v2x_real_scene(root):
    """One CAV (id 1) and one infrastructure unit (-1), 3 frames, an object of every listed raw type."""
    rng = np.random.default_rng(2)
    objects = {10 + i: vehicle_entry([5.0 + 3 * i, 8.0, 0.0], 0.0, obj_type=t) for i, t in enumerate(V2X_REAL_TYPES)}
    for f in range(3):
        for aid, pose in ((1, [0.0, 0.0, 1.8, 0, 0, 0]), (-1, [20.0, -10.0, 5.0, 0, 90.0, 0])):
            pts = rng.uniform(5, 30, size=(50, 4)).astype(np.float32)  # away from the ego
            pts[:5, :3] = np.nan  # V2X-Real's .bin files hold NaN rows
            pts[5] = [0.5, 0.2, -1.0, 0.9]  # a return from the CAV's own roof
            write_frame(root / "scene", aid, f"{f:06d}", lidar_pose=pose, vehicles=objects, points=pts)


def test_v2x_real_conversion_reports_types_and_cleans_points(tmp_path, capsys):
    _v2x_real_scene(tmp_path / "src")
    out = str(tmp_path / "a-%06d.tar")
    assert convert_main(["--src", str(tmp_path / "src"), "--out", out, "--no-progress", "--history", "2",
                         "--history-stride", "1", "--future", "1", "--future-stride", "1", "--sample-stride", "1"]) == 0
    report = capsys.readouterr().out
    assert "dropped 20 point(s) with non-finite x/y/z in 4 file(s)" in report
    assert "warning: 9 object(s) of 9 type(s) are in no class of taxonomy 'v2xpnp'" in report
    assert "longvehicle (1)" in report and "train with data.taxonomy=v2x-real" in report
    summary = convert(tmp_path / "src", str(tmp_path / "b-%06d.tar"), ConvertConfig(
        taxonomy="v2x-real", zero_intensity=True, mask_ego_points=True, **CFG), progress=False)
    assert summary.unmapped == {} and "bicycle 1 (dropped)" in summary.report()
    assert sum(e for _, e in summary.dropped_points.values()) == 4
    sample = next(read_samples(summary.shards))
    assert np.isfinite(sample.points).all() and (sample.points[:, 3] == 0).all()


def test_opv2v_files_need_the_taxonomy_or_a_default_type(tmp_path, capsys):
    for f in range(3):
        for aid, pose in ((7, [0.0, 0.0, 1.8, 0, 0, 0]), (8, [10.0, 0.0, 1.8, 0, 0, 0])):
            write_frame(tmp_path / "src" / "s", aid, f"{f:06d}", lidar_pose=pose, points=np.zeros((1, 4)),
                        vehicles={3: vehicle_entry([6.0, 4.0, 0.0], 30.0, obj_type=None)})
            (tmp_path / "src" / "s" / str(aid) / f"{f:06d}.bin").unlink()
            write_open3d_pcd(tmp_path / "src" / "s" / str(aid) / f"{f:06d}.pcd", np.full((3, 3), 5.0), [0, 51, 255],
                             data=("ascii", "binary", "binary_compressed")[f])
    args = ["--src", str(tmp_path / "src"), "--out", str(tmp_path / "o-%06d.tar"), "--no-progress", "--history", "2",
            "--history-stride", "1", "--future", "1", "--future-stride", "1", "--sample-stride", "1"]
    assert convert_main(args) == 2
    assert "has no obj_type" in capsys.readouterr().err and not list(tmp_path.glob("o-*.tar"))
    assert convert_main(args + ["--taxonomy", "opv2v"]) == 0
    assert "car 2 (vehicle)" in capsys.readouterr().out
    sample = next(read_samples([str(tmp_path / "o-000000.tar")]))
    np.testing.assert_allclose(np.unique(sample.points[:, 3]), [0.0, 0.2, 1.0], atol=1e-7)


def test_taxonomy_by_name_in_a_recipe_override_and_a_saved_config(tmp_path):
    from trainer.config_io import ConfigError, load_config, to_yaml

    cfg = load_config(None, ["data.taxonomy=opv2v"])
    assert [g.name for g in cfg.data.classes] == ["vehicle"] and cfg.model.num_classes == 1
    assert cfg.eval.class_names == ["vehicle"]
    (tmp_path / "c.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg  # the saved config restates the classes, equal
    with pytest.raises(ConfigError, match="differs from taxonomy 'v2x-real'"):
        load_config(tmp_path / "c.yaml", ["data.taxonomy=v2x-real"])
    custom = load_config(None, ["data.taxonomy=custom", "data.classes=[{name: car, obj_types: [car]}]"])
    assert custom.data.drop_obj_types == [] and custom.model.num_classes == 1
