"""Synthetic dataset output: OpenCOOD layout, YAML schema, determinism, config validation, CLI."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from trainer.data.synth import OBJ_TYPES, LidarConfig, SynthConfig, TrafficConfig, generate_dataset, scenario_name
from trainer.data.synth.__main__ import main
from trainer.data.synth.geometry import x_to_world
from trainer.data.synth.traffic import Snapshot
from trainer.data.synth.writer import FrameLabels


def tiny(**kw) -> SynthConfig:
    lidar = dict(num_beams=8, azimuth_resolution_deg=4.0)
    base = dict(num_scenarios=2, num_frames=3, warmup_s=0.5, vehicle_lidar=LidarConfig(**lidar),
                infra_lidar=LidarConfig(elevation_min_deg=-40.0, mount_height=5.0, **lidar),
                traffic=TrafficConfig(num_vehicles=6, num_cyclists=1, num_pedestrians=3, num_barriers=1))
    base.update(kw)
    return SynthConfig(**base)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_yaml_fields_and_agent_ids(tmp_path):
    cfg = tiny(num_scenarios=1, layouts=["intersection"])
    [scenario] = generate_dataset(cfg, tmp_path, progress=False)
    assert scenario == tmp_path / scenario_name(0, 0)
    agents = sorted(int(p.name) for p in scenario.iterdir())
    assert sum(a < 0 for a in agents) == 2 and sum(a > 0 for a in agents) == 2
    assert [a for a in agents if a < 0] == [-2, -1]
    for agent in agents:
        names = sorted(p.name for p in (scenario / str(agent)).iterdir())
        assert names == sorted([f"{f:06d}.{ext}" for f in range(3) for ext in ("yaml", "bin")])
    cav_ids = [a for a in agents if a > 0]
    for agent in agents:
        record = yaml.safe_load((scenario / str(agent) / "000001.yaml").read_text())
        assert set(record) == {"lidar_pose", "ego_speed", "vehicles"}
        assert len(record["lidar_pose"]) == 6
        x, y, z, roll, yaw, pitch = record["lidar_pose"]
        assert roll == 0.0 and pitch == 0.0 and -180.0 <= yaw <= 180.0
        assert (4.0 <= z <= 6.0) if agent < 0 else z == pytest.approx(cfg.vehicle_lidar.mount_height)
        assert record["ego_speed"] >= 0.0 and (agent > 0 or record["ego_speed"] == 0.0)
        assert agent not in record["vehicles"]
        for other in cav_ids:
            if other != agent:
                assert record["vehicles"][other]["obj_type"] == "car"
        for obj in record["vehicles"].values():
            assert set(obj) == {"angle", "center", "extent", "location", "obj_type"}
            assert obj["obj_type"] in OBJ_TYPES
            assert min(obj["extent"]) > 0.1 and obj["center"][2] == pytest.approx(obj["extent"][2])
            assert np.hypot(obj["location"][0] - x, obj["location"][1] - y) <= cfg.label_radius


def test_points_are_in_sensor_frame_and_land_on_labelled_boxes(tmp_path):
    cfg = tiny(num_scenarios=1, num_frames=1, vehicle_lidar=LidarConfig(num_beams=32, azimuth_resolution_deg=0.5))
    [scenario] = generate_dataset(cfg, tmp_path, progress=False)
    hits = 0
    for agent_dir in scenario.iterdir():
        record = yaml.safe_load((agent_dir / "000000.yaml").read_text())
        points = np.fromfile(agent_dir / "000000.bin", dtype=np.float32).reshape(-1, 4)
        assert len(points) > 500 and np.isfinite(points).all()
        world = points[:, :3] @ x_to_world(record["lidar_pose"])[:3, :3].T + np.array(record["lidar_pose"][:3])
        assert np.percentile(world[:, 2], 20) == pytest.approx(0.0, abs=0.1)  # most returns are ground at z = 0
        for obj in record["vehicles"].values():
            centre = np.add(obj["location"], obj["center"])
            yaw = np.radians(obj["angle"][1])
            d = world - centre
            lx = np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1]
            ly = -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]
            ext = np.array(obj["extent"]) + 0.1
            hits += int(((np.abs(lx) < ext[0]) & (np.abs(ly) < ext[1]) & (np.abs(d[:, 2]) < ext[2])).sum())
    assert hits > 100


def test_same_seed_is_byte_identical_and_scenarios_do_not_depend_on_count_or_workers(tmp_path):
    generate_dataset(tiny(), tmp_path / "a", progress=False)
    folders = generate_dataset(tiny(), tmp_path / "b", progress=False, workers=2)  # two worker processes
    assert folders == [tmp_path / "b" / scenario_name(0, k) for k in range(tiny().num_scenarios)]
    generate_dataset(tiny(num_scenarios=1), tmp_path / "c", progress=False)
    generate_dataset(tiny(seed=1, num_scenarios=1), tmp_path / "d", progress=False)
    a, b, c, d = (_digest(tmp_path / n) for n in "abcd")
    assert a == b
    assert c == {k: v for k, v in a.items() if k.startswith(scenario_name(0, 0))}
    with pytest.raises(ValueError, match="workers"):
        generate_dataset(tiny(), tmp_path / "e", workers=0)
    first_bin = lambda digest: [v for k, v in sorted(digest.items()) if k.endswith(".bin")][0]  # noqa: E731
    assert first_bin(d) != first_bin(c)


def test_frame_labels_render_equals_safe_dump():
    snap = Snapshot(ids=np.array([7, 3, 12]), types=["car", "pedestrian", "bus"],
                    boxes=np.array([[1.0, 2.0, 0.7, 4.5, 1.8, 1.4, 0.1], [50.0, 0.0, 0.9, 0.5, 0.6, 1.8, -2.0],
                                    [500.0, 0.0, 1.6, 12.0, 2.5, 3.2, 3.0]]),
                    speeds=np.zeros(3), reflectivity=np.full(3, 0.5))
    labels = FrameLabels(snap)
    ids = labels.visible_ids(np.array([0.0, 0.0]), 120.0, exclude_id=None)
    assert ids == [3, 7]
    pose = [1.0, 2.0, 1.9, 0.0, 45.0, 0.0]
    expected = yaml.safe_dump({"lidar_pose": pose, "ego_speed": 12.5, "vehicles": labels.vehicles(ids)},
                              default_flow_style=None)
    assert labels.render(pose, 12.5, ids) == expected
    assert labels.visible_ids(np.array([0.0, 0.0]), 120.0, exclude_id=7) == [3]
    assert yaml.safe_load(labels.render(pose, 0.0, []))["vehicles"] == {}


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: SynthConfig(num_frames=0), "num_frames"),
        (lambda: SynthConfig(num_cavs=0, num_infra=0), "num_cavs"),
        (lambda: SynthConfig(layouts=["roundabout"]), "layouts"),
        (lambda: SynthConfig(num_infra=5), "num_infra"),
        (lambda: LidarConfig(dropout=1.0), "dropout"),
        (lambda: LidarConfig(elevation_min_deg=10.0, elevation_max_deg=0.0), "elevation"),
        (lambda: TrafficConfig(num_pedestrians=-1), "num_pedestrians"),
    ],
)
def test_bad_config_values_raise_naming_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_config_works_as_omegaconf_structured_config():
    cfg = OmegaConf.structured(SynthConfig)
    cfg.vehicle_lidar.num_beams = 16
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, SynthConfig) and obj.vehicle_lidar.num_beams == 16 and obj.infra_lidar.mount_height == 5.0


def test_cli_smoke(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["--out", str(out), "--scenarios", "1", "--frames", "2", "--seed", "5", "--beams", "8",
               "--azimuth-res", "6", "--vehicles", "3", "--pedestrians", "2", "--quiet", "--layouts", "corridor"])
    assert rc == 0
    scenario = out / scenario_name(5, 0)
    assert sorted(p.name for p in scenario.iterdir()) == ["-1", "-2", "1", "2"]
    assert len(list(scenario.rglob("*.bin"))) == 8
    assert "wrote 1 scenarios" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--frames", "0"])
    assert "num_frames" in capsys.readouterr().err


def _prepare_and_log(cache: str, log_path: str) -> None:
    from tests.train_harness import TINY_DATA
    from trainer.data.synth.dataset import SyntheticDataConfig, prepare_synthetic

    cfg = SyntheticDataConfig(**{**TINY_DATA.__dict__, "cache_dir": cache})
    root = prepare_synthetic(cfg, max_agents=4, history=5,
                             log=lambda msg: open(log_path, "a").write(msg + "\n"))
    open(log_path, "a").write(f"root {root}\n")


def test_jobs_started_together_generate_the_shared_dataset_once(tmp_path):
    import multiprocessing

    from trainer.data.synth.dataset import shard_patterns

    context = multiprocessing.get_context("fork")
    logs = [tmp_path / f"job{i}.log" for i in range(2)]
    jobs = [context.Process(target=_prepare_and_log, args=(str(tmp_path / "cache"), str(log))) for log in logs]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=300)
    assert [job.exitcode for job in jobs] == [0, 0]
    texts = [log.read_text() for log in logs]
    assert sum(text.count("generating the synthetic") for text in texts) == 1, texts
    roots = {line for text in texts for line in text.splitlines() if line.startswith("root ")}
    assert len(roots) == 1
    root = Path(roots.pop().removeprefix("root "))
    train, val = shard_patterns(root)
    assert train and val and (root / "COMPLETE").exists()
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_the_cache_is_keyed_by_the_shard_schema_version(monkeypatch, tmp_path):
    """Shards of another schema version are never read from the cache: a new folder is generated instead."""
    from trainer.data.synth import dataset

    cfg = dataset.SyntheticDataConfig(cache_dir=str(tmp_path))
    now = cfg.root()
    assert now.name != "synthetic-570bb2b569"  # the default job's schema-v1 cache (keyed by the spec alone)
    monkeypatch.setattr(dataset, "SCHEMA_VERSION", dataset.SCHEMA_VERSION + 1)
    assert cfg.root() != now and cfg.root().parent == now.parent
