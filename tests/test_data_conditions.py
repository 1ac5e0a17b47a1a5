"""Pose noise and latency in the data pipeline: the stored delayed frames, what each condition does to a sample,
checked by geometry against the source files, seeding, the loader, and bad input."""

from __future__ import annotations

import dataclasses
import json
import tarfile

import numpy as np
import pytest
import torch
from webdataset.handlers import reraise_exception

from models.config import model_config
from tests.opencood_fixtures import write_toy_scenario
from trainer.config_io import ConfigError, load_config
from trainer.data.classes import ClassGrouping
from trainer.data.conditions import ConditionSampler, Conditions
from trainer.data.config import DataConfig
from trainer.data.convert import main as convert_main
from trainer.data.delayed_frames import DELAYED_LIST_MEMBER, DELAYED_POSES_MEMBER, decode_delayed
from trainer.data.geometry import bev_to_world, relative_se2, se2_inverse
from trainer.data.latency import LatencyConfig, LatencyUnavailableError, delay_sample
from trainer.data.loader import build_loader
from trainer.data.opencood import read_frame_yaml
from trainer.data.pointio import read_points
from trainer.data.pose_noise import PoseNoiseConfig, draw_pose_noise, perturb_poses
from trainer.data.prepare import SamplePreparer
from trainer.data.sample import SampleFormatError, decode_sample, frame_key
from trainer.data.shard_read import sample_records
from trainer.data.split import expand_shards

GRID = model_config("tiny").grid
T_NOW = 20  # the first sample time of the toy scene (history 5 at stride 5)


def records(shards: str) -> dict[str, dict]:
    """Sample records of a shard list by key, frames attached."""
    urls = [{"url": url} for url in expand_shards(shards)]
    return {r["__key__"]: r for r in sample_records(urls, handler=reraise_exception)}


def prepare(sample):
    return SamplePreparer(GRID, ClassGrouping(DataConfig().classes, ["barrier"]), max_agents=4)(sample)


def ego_frame_points(prepared, agent: int) -> np.ndarray:
    """[n, 3] the agent's current-frame points in the ego frame: its cloud's affine, then agent_to_ego."""
    frames = np.argwhere(prepared.point_counts.numpy() > 0)
    index = [i for i, (a, k) in enumerate(frames) if a == agent and k == prepared.frame_mask.shape[1] - 1][0]
    cloud = prepared.clouds[index].astype(np.float64)
    bev = cloud[:, :3] @ prepared.cloud_affines[index][:, :3].T + prepared.cloud_affines[index][:, 3]
    to_ego = prepared.agent_to_ego[agent].double().numpy()
    return np.concatenate([bev[:, :2] @ to_ego[:2, :2].T + to_ego[:2, 2], bev[:, 2:]], axis=1)


def test_pose_noise_draws_leave_the_ego_exact_and_scale_with_the_deviations():
    cfg = PoseNoiseConfig(xy_std_m=0.4, z_std_m=0.1, yaw_std_deg=0.6)
    noise = draw_pose_noise(cfg, np.random.default_rng(1), 4)
    assert noise.shape == (4, 4) and not noise[0].any() and (noise[1:] != 0).all()
    double = draw_pose_noise(PoseNoiseConfig(xy_std_m=0.8, z_std_m=0.2, yaw_std_deg=1.2), np.random.default_rng(1), 4)
    np.testing.assert_allclose(double, 2 * noise)
    assert not draw_pose_noise(PoseNoiseConfig(), np.random.default_rng(1), 4).any()
    assert not PoseNoiseConfig(seed=7).enabled and cfg.enabled


def test_perturbed_poses_move_the_current_pose_and_keep_the_agents_own_motion():
    poses = np.array([[[0, 0, 1.5, 1, 30, 2], [1, 0, 1.5, 1, 31, 2], [2, 0, 1.5, 1, 32, 2]],
                      [[10, 5, 1.8, 3, -60, -1], [11, 6, 1.8, 3, -50, -1], [12, 8, 1.9, 3, -45, -1]],
                      [[5, 5, 1.8, 0, 0, 0], [6, 5, 1.8, 0, 0, 0], [np.nan] * 6]], dtype=np.float64)
    noise = np.array([[0, 0, 0, 0], [0.3, -0.2, 0.1, 2.0], [0.5, 0.5, 0.5, 5.0]])
    out = perturb_poses(poses, noise)
    np.testing.assert_array_equal(out[0], poses[0])  # the ego
    np.testing.assert_array_equal(out[2], poses[2])  # no current frame: dropped by the loader anyway
    np.testing.assert_allclose(out[1, -1], poses[1, -1] + [0.3, -0.2, 0.1, 0.0, 2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(relative_se2(out[1], out[1, -1]), relative_se2(poses[1], poses[1, -1]), atol=1e-12)
    np.testing.assert_allclose(out[1, :, [3, 5]], poses[1, :, [3, 5]])  # roll and pitch exact


def test_noise_moves_collaborator_points_in_the_ego_frame_by_the_rigid_error(toy_conditions_data):
    _, delayed, _ = toy_conditions_data
    record = records(delayed)[f"toy__100__{T_NOW:06d}"]
    sample = decode_sample(record)
    sampler = ConditionSampler(Conditions(pose_noise=PoseNoiseConfig(xy_std_m=0.5, z_std_m=0.2, yaw_std_deg=3.0)))
    noisy = sampler(sample, record)
    assert sampler(sample, record).poses.tobytes() == noisy.poses.tobytes()  # seeded by the sample: repeatable
    clean_prep, noisy_prep = prepare(sample), prepare(noisy)
    torch.testing.assert_close(noisy_prep.history_to_now, clean_prep.history_to_now, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ego_frame_points(noisy_prep, 0), ego_frame_points(clean_prep, 0))
    ego = bev_to_world(sample.poses[0, -1])
    for agent in (1, 2):
        delta = noisy.poses[agent, -1] - sample.poses[agent, -1]
        assert abs(delta[0]) + abs(delta[1]) > 0 and delta[3] == delta[5] == 0
        correction = bev_to_world(noisy.poses[agent, -1]) @ se2_inverse(bev_to_world(sample.poses[agent, -1]))
        in_ego = se2_inverse(ego) @ correction @ ego  # the world-frame error seen from the ego
        clean = ego_frame_points(clean_prep, agent)
        expected = np.concatenate([clean[:, :2] @ in_ego[:2, :2].T + in_ego[:2, 2], clean[:, 2:] + delta[2]], 1)
        np.testing.assert_allclose(ego_frame_points(noisy_prep, agent), expected, atol=2e-3)
        shift = np.linalg.norm(ego_frame_points(noisy_prep, agent)[:, :2] - clean[:, :2], axis=1)
        assert shift.max() > 0.05  # the collaborator really moved


def test_delayed_frames_are_the_source_frames_d_raw_frames_earlier(toy_conditions_data):
    source, delayed, plain = toy_conditions_data
    record = records(delayed)[f"toy__100__{T_NOW:06d}"]
    sample = decode_sample(record)
    frames = decode_delayed(record, agents=3, history=5)
    assert frames.max_delay == 3 and sample.meta["agent_ids"][0] == 100
    for d in (1, 2, 3):
        assert frames.keys[d - 1][0] == [None] * 5  # the ego is never late
        for a, agent_id in enumerate(sample.meta["agent_ids"][1:], start=1):
            stamps = [T_NOW - d - 5 * (4 - k) for k in range(5)]
            assert frames.keys[d - 1][a] == [frame_key("toy", agent_id, f"{s:06d}") if s >= 0 else None for s in stamps]
            for k, s in enumerate(stamps):
                if s < 0:
                    assert np.isnan(frames.poses[d - 1, a, k]).all()
                    continue
                np.testing.assert_array_equal(frames.poses[d - 1, a, k],
                                              read_frame_yaml(source / str(agent_id) / f"{s:06d}.yaml").lidar_pose)
                np.testing.assert_array_equal(frames.clouds[frames.keys[d - 1][a][k]],
                                              read_points(source / str(agent_id) / f"{s:06d}.bin"))
    assert decode_delayed(records(plain)[f"toy__100__{T_NOW:06d}"], agents=3, history=5) is None
    with tarfile.open(expand_shards(delayed)[0]) as tar:  # each frame once, however many samples and delays name it
        names = [m.name.split(".")[0] for m in tar.getmembers() if m.name.endswith("frame.npy")]
    assert len(names) == len(set(names))


def test_latency_shows_a_collaborators_window_ending_d_frames_before_the_ego(toy_conditions_data):
    source, delayed, _ = toy_conditions_data
    record = records(delayed)[f"toy__100__{T_NOW:06d}"]
    sample = decode_sample(record)
    slot = sample.meta["agent_ids"].index(101)  # the other vehicle: it moves, so its pose 2 frames ago differs
    delays = np.zeros(3, dtype=np.int64)
    delays[slot] = 2
    late = delay_sample(sample, decode_delayed(record, agents=3, history=5), delays)
    assert late.frame_keys[slot][-1] == frame_key("toy", 101, f"{T_NOW - 2:06d}")
    assert all(late.frame_keys[a] == sample.frame_keys[a] for a in range(3) if a != slot)
    np.testing.assert_array_equal(late.agent_points(slot, 4), read_points(source / "101" / f"{T_NOW - 2:06d}.bin"))
    np.testing.assert_array_equal(late.agent_points(0, 4), sample.agent_points(0, 4))
    prepared = prepare(late)
    then = read_frame_yaml(source / "101" / f"{T_NOW - 2:06d}.yaml").lidar_pose
    expected = relative_se2(then, sample.poses[0, -1])  # where the collaborator was when it sensed
    np.testing.assert_allclose(prepared.agent_to_ego[slot].numpy(), expected, atol=1e-5)
    assert not np.allclose(expected, prepare(sample).agent_to_ego[slot].numpy(), atol=0.1)


def test_a_delay_of_whole_history_steps_needs_no_delayed_frames_other_delays_do(toy_conditions_data):
    _, _, plain = toy_conditions_data
    record = records(plain)[f"toy__100__{T_NOW:06d}"]
    sample = decode_sample(record)
    step = delay_sample(sample, None, np.array([0, 5, 10]))
    assert step.frame_keys[1] == [None] + sample.frame_keys[1][:-1]
    assert step.frame_keys[2] == [None, None] + sample.frame_keys[2][:-2]
    np.testing.assert_array_equal(step.agent_points(1, 4), sample.agent_points(1, 3))
    with pytest.raises(LatencyUnavailableError, match="--delay-frames >= 1 .these store 0"):
        delay_sample(sample, None, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="ego's 0"):
        delay_sample(sample, None, np.array([1, 0, 0]))


def loader_batches(shard: str, conditions: Conditions | None, **data) -> list:
    cfg = DataConfig(val_shards=shard, **{"num_workers": 0, "batch_size": 2, **data})
    return list(build_loader(cfg, GRID, split="val", rank=0, world_size=1, seed=0, conditions=conditions))


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys == y.keys
        for f in dataclasses.fields(x):
            if isinstance(getattr(x, f.name), torch.Tensor):
                assert torch.equal(getattr(x, f.name), getattr(y, f.name)), f.name


def test_zero_conditions_give_exactly_the_batches_of_no_conditions(toy_conditions_data):
    _, delayed, _ = toy_conditions_data
    clean = loader_batches(delayed, None)
    assert_same_batches(loader_batches(delayed, Conditions()), clean)
    zero = Conditions(pose_noise=PoseNoiseConfig(seed=5), latency=LatencyConfig(seed=9))
    assert_same_batches(loader_batches(delayed, zero), clean)


def test_evaluation_conditions_are_drawn_per_sample_and_repeat(toy_conditions_data):
    _, delayed, _ = toy_conditions_data
    hard = Conditions(pose_noise=PoseNoiseConfig(xy_std_m=0.4, yaw_std_deg=0.4),
                      latency=LatencyConfig(min_frames=1, max_frames=3))
    first = loader_batches(delayed, hard)
    assert_same_batches(loader_batches(delayed, hard), first)
    one_by_one = {k: b.agent_to_ego[i] for b in loader_batches(delayed, hard, batch_size=1)
                  for i, k in enumerate(b.keys)}
    clean = {k: b.agent_to_ego[i] for b in loader_batches(delayed, None) for i, k in enumerate(b.keys)}
    for batch in first:
        for i, key in enumerate(batch.keys):
            assert torch.equal(batch.agent_to_ego[i], one_by_one[key])  # independent of the batch layout
            assert torch.equal(batch.agent_to_ego[i, 0], clean[key][0])  # the ego is exact
            assert not torch.allclose(batch.agent_to_ego[i, 1:], clean[key][1:], atol=1e-3)
    reseeded = dataclasses.replace(hard, pose_noise=dataclasses.replace(hard.pose_noise, seed=1))
    assert not torch.equal(loader_batches(delayed, reseeded)[0].agent_to_ego, first[0].agent_to_ego)


def test_training_draws_new_pose_noise_every_epoch(toy_conditions_data):
    _, delayed, _ = toy_conditions_data
    augment = {"rotation_deg": 0.0, "flip_prob": 0.0, "scale_range": [1.0, 1.0],
               "pose_noise": PoseNoiseConfig(xy_std_m=0.5)}
    cfg = DataConfig(train_shards=delayed, num_workers=0, batch_size=4, samples_per_epoch=4, shuffle_buffer=0,
                     augment=dataclasses.replace(DataConfig().augment, **augment))

    def epoch(e: int):
        return next(iter(build_loader(cfg, GRID, split="train", rank=0, world_size=1, seed=0, epoch=e)))

    assert torch.equal(epoch(0).agent_to_ego, epoch(0).agent_to_ego)
    assert not torch.equal(epoch(0).agent_to_ego[:, 1:], epoch(1).agent_to_ego[:, 1:])
    with pytest.raises(ValueError, match="data.augment"):
        build_loader(cfg, GRID, split="train", rank=0, world_size=1, seed=0, conditions=Conditions())


def test_a_latency_the_shards_cannot_give_is_an_error_not_a_skip(toy_conditions_data):
    _, delayed, plain = toy_conditions_data
    with pytest.raises(LatencyUnavailableError, match="--delay-frames >= 4"):
        loader_batches(delayed, Conditions(latency=LatencyConfig(min_frames=4, max_frames=4)))
    with pytest.raises(LatencyUnavailableError, match="these store 0"):
        loader_batches(plain, Conditions(latency=LatencyConfig(min_frames=2, max_frames=2)))


def _broken(record: dict, member: str, value) -> dict:
    broken = dict(record)
    if member == DELAYED_POSES_MEMBER:
        from trainer.data.npy import npy_bytes
        broken[member] = npy_bytes(value)
    elif value is None:
        del broken[member]
    else:
        broken[member] = json.dumps(value).encode() if not isinstance(value, bytes) else value
    return broken


ONE_LEVEL = [[[None] * 5] * 2 + [["toy__a-9__000001"] + [None] * 4]]
"""One delay level naming a frame of agent 2 that the shard does not hold."""


@pytest.mark.parametrize("member, value, poses, message", [
    (DELAYED_LIST_MEMBER, b"[[", None, "malformed delayed frames"),
    (DELAYED_LIST_MEMBER, None, None, "go together"),
    (DELAYED_LIST_MEMBER, [[["a"] * 5] * 3], None, "names frames of the ego"),
    (DELAYED_LIST_MEMBER, [[[None] * 4] * 3], None, "grids must be"),
    (DELAYED_LIST_MEMBER, ONE_LEVEL, np.zeros((1, 3, 5, 6)), "not in its shard"),
    (DELAYED_LIST_MEMBER, ONE_LEVEL, np.full((1, 3, 5, 6), np.nan), "non-finite pose"),
    (DELAYED_POSES_MEMBER, np.zeros((3, 3, 5, 6), np.float32), None, "must be float64"),
])
def test_malformed_delayed_frames_are_sample_format_errors(toy_conditions_data, member, value, poses, message):
    _, delayed, _ = toy_conditions_data
    record = records(delayed)[f"toy__100__{T_NOW:06d}"]
    if poses is not None:
        record = _broken(record, DELAYED_POSES_MEMBER, poses)
    with pytest.raises(SampleFormatError, match=message):
        decode_delayed(_broken(record, member, value), agents=3, history=5)


@pytest.mark.parametrize("override, key", [
    ("eval.latency.min_frames=3", "min_frames <= max_frames"),
    ("data.augment.pose_noise.xy_std_m=-1", "xy_std_m"),
    ("eval.pose_noise.bogus=1", "bogus"),
    ("synthetic.delay_frames=-2", "delay_frames"),
])
def test_bad_condition_settings_name_the_problem(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_convert_cli_stores_delayed_frames_and_refuses_a_negative_count(tmp_path, capsys):
    write_toy_scenario(tmp_path / "src" / "toy", frames=60, vehicles=1, infrastructure=1, points_per_frame=20)
    assert convert_main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "x-%06d.tar"), "--no-progress",
                         "--delay-frames", "-1"]) == 2
    assert "delay_frames must be >= 0" in capsys.readouterr().err and not list(tmp_path.glob("*.tar"))
    assert convert_main(["--src", str(tmp_path / "src"), "--out", str(tmp_path / "x-%06d.tar"), "--no-progress",
                         "--delay-frames", "2"]) == 0
    record = next(iter(records(str(tmp_path / "x-000000.tar")).values()))
    assert decode_delayed(record, agents=2, history=5).max_delay == 2


def test_the_synthetic_cache_folder_changes_only_with_delayed_frames():
    from trainer.data.synth.dataset import SyntheticDataConfig

    plain = SyntheticDataConfig(cache_dir="/c")
    assert plain.root() == SyntheticDataConfig(cache_dir="/c", delay_frames=0).root()  # caches made before it stay
    assert SyntheticDataConfig(cache_dir="/c", delay_frames=3).root() != plain.root()
