"""Worker-side preparation (BEV mapping, voxelisation), augmentation consistency, collate."""

import numpy as np
import pytest
import torch

from models.grid import GridConfig
from trainer.data import augment
from trainer.data.classes import ClassGrouping
from trainer.data.collate import collate_prepared
from trainer.data.config import AugmentConfig, DataConfig
from trainer.data.prepare import SamplePreparer, bev_frames, map_clouds
from trainer.data.sample import SCHEMA_VERSION, V2XPNP_OBJ_TYPES, Sample, frame_key
from trainer.data.voxelize import FrameVoxelizer

GRID = GridConfig(x_range=[-32.0, 32.0], y_range=[-32.0, 32.0], z_range=[-4.0, 4.0], voxel_size=[0.5, 0.5, 0.5])
EGO = [0.0, 0.0, 1.5, 0.0, 90.0, 0.0]
COLLAB = [10.0, 0.0, 5.0, 0.0, 180.0, 0.0]  # infrastructure 10 m east, facing west, mounted at 5 m
BOX_WORLD = np.array([5.0, 8.0, 0.5])  # box centre in the world


def two_agent_sample(num_boxes=1) -> Sample:
    """Ego and one collaborator (T = 2, collaborator missing at step 0); each sees one point at the
    box centre; the collaborator's LiDAR frame equals its pose, so its point is expressed there."""
    ego_pt = [8.0, -5.0, 0.5 - 1.5, 1.0]  # world (5, 8) in the ego sensor frame (yaw 90)
    col_pt = [5.0, -8.0, 0.5 - 5.0, 1.0]  # world (5, 8) in the collaborator frame (yaw 180)
    poses = np.full((2, 2, 6), np.nan)
    poses[0, 0], poses[0, 1], poses[1, 1] = EGO, EGO, COLLAB
    boxes = np.array([[8.0, -5.0, -1.0, 4.0, 2.0, 1.5, 0.3]] * num_boxes, dtype=np.float32)
    return Sample(
        meta={"schema_version": SCHEMA_VERSION, "scenario": "s", "ego_id": 1, "timestamp": "000010", "mode": "vc",
              "agent_ids": [1, -1], "agent_types": ["vehicle", "infrastructure"], "history_stride": 5,
              "future_stride": 5, "raw_rate_hz": 10.0, "obj_type_names": list(V2XPNP_OBJ_TYPES), "source": "test"},
        points=np.array([ego_pt, ego_pt, col_pt], dtype=np.float32),
        point_counts=np.array([[1, 1], [0, 1]]), poses=poses,
        frame_valid=np.array([[True, True], [False, True]]), boxes=boxes,
        frame_keys=[[frame_key("s", 1, "000005"), frame_key("s", 1, "000010")], [None, frame_key("s", -1, "000010")]],
        obj_types=np.zeros(num_boxes, dtype=np.int64), track_ids=np.arange(num_boxes, dtype=np.int64) + 5,
        future=np.tile(np.array([[9.0, -5.0], [10.0, -5.0], [11.0, -5.0]], np.float32), (num_boxes, 1, 1)),
        future_valid=np.ones((num_boxes, 3), bool), past=np.tile(boxes[:, None, :2], (1, 2, 1)),
        past_valid=np.ones((num_boxes, 2), bool),
    )


def preparer(augment_cfg=None, max_agents=4):
    cfg = DataConfig()
    return SamplePreparer(GRID, ClassGrouping(cfg.classes, cfg.drop_obj_types), max_agents=max_agents,
                          augment_cfg=augment_cfg, seed=0)


def to_ego(prep, agent, xy):
    return (prep.agent_to_ego[agent] @ torch.tensor([xy[0], xy[1], 1.0]))[:2]


def voxel_centre_xy(prep, local_index):
    """Centre (x, y) of the voxel of agent-frame ``a * T + t`` of one prepared sample (voxelised alone)."""
    (x0, _), (y0, _), _ = GRID.ranges
    batch = collate_prepared([prep], max_agents=prep.frame_mask.shape[0], voxelizer=FrameVoxelizer(GRID))
    c = batch.voxel_coords[batch.voxel_coords[:, 0] == local_index][0]
    return torch.tensor([x0 + (c[3].item() + 0.5) * 0.5, y0 + (c[2].item() + 0.5) * 0.5])


def test_bev_frames_map_every_agent_onto_the_same_world_point():
    sample = two_agent_sample()
    kept, clouds, affines, counts, history_to_now, agent_to_ego = bev_frames(sample, max_agents=4)
    assert kept == [0, 1] and counts.tolist() == [[1, 1], [0, 1]] and affines.shape == (3, 3, 4)
    assert all(np.shares_memory(c, sample.points) for c in clouds)  # views of the sample's points, not copies
    points = map_clouds(clouds, affines)
    assert points.dtype == np.float32 and points.shape == (3, 4)
    ego_xy = points[1, :2]  # ego at t=1 (ego t=0 comes first)
    col_ego = agent_to_ego[1] @ [*points[2, :2], 1.0]
    np.testing.assert_allclose(ego_xy, [8.0, -5.0], atol=1e-5)
    np.testing.assert_allclose(col_ego[:2], ego_xy, atol=1e-5)
    np.testing.assert_allclose(points[2, 2], -1.0, atol=1e-5)  # height from the EGO LiDAR: 0.5 - 1.5
    np.testing.assert_allclose(points[:, 3], 1.0)  # intensity carried over
    np.testing.assert_allclose(history_to_now[1, 0], np.identity(3))


def test_bev_frames_keep_max_agents_and_skip_missing_frames():
    sample = two_agent_sample()
    kept, clouds, affines, counts, _, _ = bev_frames(sample, max_agents=1)
    assert kept == [0] and counts.tolist() == [[1, 1]] and len(map_clouds(clouds, affines)) == 2
    sample.frame_valid[0, 0] = False  # a frame marked missing contributes no points even if listed
    _, clouds, affines, counts, history_to_now, _ = bev_frames(sample, max_agents=4)
    assert counts.tolist() == [[0, 1], [0, 1]] and len(clouds) == len(affines) == 2
    np.testing.assert_allclose(history_to_now[0, 0], np.identity(3))


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_keeps_points_in_boxes_and_cross_agent_geometry(flip):
    g = augment.augmentation_matrix(rotation_rad=0.7, flip=flip, scale=1.1)
    box = np.array([[3.0, -2.0, 0.0, 4.0, 2.0, 1.0, 0.4]], dtype=np.float32)
    local = np.array([1.8, 0.9])  # inside the box, near a corner (box frame)
    c, s = np.cos(0.4), np.sin(0.4)
    point = np.array([[3.0 + c * local[0] - s * local[1], -2.0 + s * local[0] + c * local[1], 0.2, 1.0]], np.float32)
    new_box, new_point = augment.apply_to_boxes(box, g)[0], augment.apply_to_points(point, g)[0]
    d = new_point[:2] - new_box[:2]
    c2, s2 = np.cos(new_box[6]), np.sin(new_box[6])
    along, across = c2 * d[0] + s2 * d[1], -s2 * d[0] + c2 * d[1]
    assert abs(along) < new_box[3] / 2 and abs(across) < new_box[4] / 2
    np.testing.assert_allclose([abs(along), abs(across)], np.abs(local) * 1.1, atol=1e-5)
    # a collaborator's point still lands on the same ego-frame location
    t = np.array([[0.0, -1.0, 4.0], [1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])
    p = np.array([1.0, 2.0])
    lhs = augment.apply_to_transforms(t, g) @ [*augment.apply_to_xy(p, g), 1.0]
    np.testing.assert_allclose(lhs[:2], g @ (t @ [*p, 1.0])[:2], atol=1e-9)


def test_augmenting_the_affine_equals_augmenting_the_mapped_points():
    g = augment.augmentation_matrix(rotation_rad=-1.1, flip=True, scale=0.93)
    sample = two_agent_sample()
    _, clouds, affines, _, _, _ = bev_frames(sample, max_agents=4)
    np.testing.assert_allclose(map_clouds(clouds, augment.apply_to_affines(affines, g)),
                               augment.apply_to_points(map_clouds(clouds, affines), g), atol=1e-5)


def test_prepared_augmented_sample_stays_consistent():
    aug = AugmentConfig(rotation_deg=180.0, flip_prob=0.5, scale_range=[0.9, 1.1])
    plain, moved = preparer()(two_agent_sample()), preparer(aug)(two_agent_sample())
    assert not torch.allclose(plain.boxes, moved.boxes)
    for prep in (plain, moved):
        centre = prep.boxes[0, :2]
        assert torch.linalg.norm(voxel_centre_xy(prep, 1) - centre) < 0.5  # ego, now (a=0, t=1)
        assert torch.linalg.norm(to_ego(prep, 1, voxel_centre_xy(prep, 3)) - centre) < 0.5  # collaborator, now
        assert torch.allclose(prep.past[0, -1], centre, atol=1e-5)
    assert moved.future[0, 1].sub(moved.future[0, 0]).norm() == pytest.approx(
        plain.future[0, 1].sub(plain.future[0, 0]).norm().item() * float(np.sqrt(abs(np.linalg.det(
            augment.sample_augmentation(aug, np.random.default_rng(0)))))), rel=1e-4)


def test_collate_pads_agents_and_objects_with_masks():
    big = preparer()(two_agent_sample(num_boxes=3))
    small = preparer(max_agents=1)(two_agent_sample(num_boxes=1))
    batch = collate_prepared([small, big], max_agents=3, voxelizer=FrameVoxelizer(GRID), num_skipped=2)
    assert batch.agent_mask.tolist() == [[True, False, False], [True, True, False]]
    assert batch.agent_types.tolist() == [[0, 0, 0], [0, 1, 0]]
    assert batch.frame_mask.shape == (2, 3, 2) and batch.frame_mask[1].tolist() == [[True, True], [False, True], [False, False]]
    assert batch.gt_boxes.shape == (2, 3, 7) and batch.gt_mask.tolist() == [[True, False, False], [True] * 3]
    assert batch.gt_classes[0].tolist() == [0, -1, -1] and batch.gt_track_ids[0].tolist() == [5, -1, -1]
    assert batch.gt_future.shape == (2, 3, 3, 2) and batch.gt_past_valid.shape == (2, 3, 2)
    assert torch.equal(batch.history_to_now[0, 2], torch.eye(3).expand(2, 3, 3))
    # flat index n = (b * A + a) * T + t: sample 0 has (a0,t0),(a0,t1); sample 1 adds (a1,t1)
    assert sorted(batch.voxel_coords[:, 0].unique().tolist()) == [0, 1, 6, 7, 9]
    assert batch.voxels.shape[1:] == (GRID.max_points_per_voxel, 4) and batch.num_skipped == 2
    assert batch.voxel_num_points.dtype == torch.int32 and batch.voxel_coords.dtype == torch.int32
    with pytest.raises(ValueError, match="max_agents=1"):
        collate_prepared([big], max_agents=1, voxelizer=FrameVoxelizer(GRID))
    with pytest.raises(ValueError, match="empty"):
        collate_prepared([], max_agents=2, voxelizer=FrameVoxelizer(GRID))


def test_boxes_outside_grid_and_dropped_types_are_removed():
    sample = two_agent_sample(num_boxes=3)
    sample.boxes[1, 0] = 40.0  # outside x_range [-32, 32)
    sample.obj_types[2] = V2XPNP_OBJ_TYPES.index("barrier")  # dropped by the default config
    prep = preparer()(sample)
    assert prep.track_ids.tolist() == [5] and prep.future.shape == (1, 3, 2)
