"""Pure geometry / coding helpers: BEV cells, warps, box codes, heatmap targets, config validation."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from models.bev import BevGeometry
from models.box_coding import box_centre_cells, decode_boxes, encode_boxes
from models.config import ModelConfig, model_config
from models.grid import GridConfig
from models.warp import metric_to_sampling_theta, normalising_transform, sample_at_points, warp_bev
from trainer.losses.heatmap_targets import heatmap_targets, objects_on_map


@pytest.fixture
def geometry() -> BevGeometry:
    grid = GridConfig(x_range=[-16.0, 16.0], y_range=[-8.0, 8.0], z_range=[-3.0, 1.0], voxel_size=[0.5, 0.5, 1.0])
    return BevGeometry.from_grid(grid, stride=2)  # 1 m cells, 16 x 32


def se2(x, y, yaw, scale=1.0, flip=False):
    c, s = math.cos(yaw), math.sin(yaw)
    m = torch.tensor([[c, -s, x], [s, c, y], [0.0, 0.0, 1.0]])
    m[:2, :2] *= scale
    if flip:
        m = m @ torch.diag(torch.tensor([1.0, -1.0, 1.0]))
    return m


def test_geometry_cells_round_trip(geometry):
    assert (geometry.height, geometry.width) == (16, 32)
    xy = torch.tensor([[-16.0, -8.0], [3.3, -2.7], [15.9, 7.9]])
    assert torch.allclose(geometry.cell_to_metric(geometry.metric_to_cell(xy)), xy, atol=1e-5)
    centres = geometry.cell_centres()
    assert centres.shape == (2, 16, 32)
    assert torch.allclose(centres[:, 0, 0], torch.tensor([-15.5, -7.5]))
    assert geometry.inside(xy).tolist() == [True, True, True]
    assert not geometry.inside(torch.tensor([16.0, 0.0]))


def test_normalising_transform_maps_edges_to_unit_square(geometry):
    nrm = normalising_transform(geometry)
    corners = torch.tensor([[-16.0, -8.0, 1.0], [16.0, 8.0, 1.0], [0.0, 0.0, 1.0]])
    assert torch.allclose((corners @ nrm.T)[:, :2], torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))


@pytest.mark.parametrize("transform", [se2(3.0, -2.0, 0.4), se2(-1.0, 1.0, -2.0, scale=1.1, flip=True)])
def test_sampling_theta_reads_the_source_point(geometry, transform):
    """theta maps a destination point's normalised coords to those of its pre-image in the source frame."""
    theta = metric_to_sampling_theta(transform[None], geometry)[0]
    src = torch.tensor([2.0, 1.5])
    dst = (transform @ torch.tensor([*src, 1.0]))[:2]
    dst_n = geometry.metric_to_normalised(dst)
    read = theta @ torch.tensor([*dst_n, 1.0])
    assert torch.allclose(read, geometry.metric_to_normalised(src), atol=1e-5)


def test_warp_moves_a_blob_to_the_transformed_position(geometry):
    transform = se2(4.0, 2.0, math.pi / 2)
    src_xy = torch.tensor([3.5, -2.5])  # a cell centre
    col, row = geometry.metric_to_cell(src_xy).floor().long().tolist()
    bev = torch.zeros(1, 1, geometry.height, geometry.width)
    bev[0, 0, row, col] = 1.0
    warped, in_view = warp_bev(bev, transform[None], geometry)
    expected = (transform @ torch.tensor([*src_xy, 1.0]))[:2]
    peak = warped[0, 0].flatten().argmax()
    peak_xy = geometry.cell_centres().flatten(1)[:, peak]
    assert torch.allclose(peak_xy, expected, atol=1e-4)
    assert warped.max() > 0.99
    # Rotating a 32 x 16 m map by 90 degrees leaves part of the destination unseen.
    assert in_view.any() and not in_view.all()


def test_warp_identity_and_inverse_round_trip(geometry):
    bev = torch.randn(2, 3, geometry.height, geometry.width)
    same, in_view = warp_bev(bev, torch.eye(3).expand(2, 3, 3), geometry)
    assert torch.allclose(same, bev, atol=1e-5) and in_view.all()
    shift = se2(2.0, -1.0, 0.0).expand(2, 3, 3)  # whole-cell shift: bilinear sampling stays exact
    there, _ = warp_bev(bev, shift, geometry)
    back, valid = warp_bev(there, torch.linalg.inv(shift), geometry)
    interior = valid.clone()
    interior[:, :1], interior[:, -1:] = False, False
    interior[:, :, :2], interior[:, :, -2:] = False, False
    assert torch.allclose(back.permute(1, 0, 2, 3)[:, interior], bev.permute(1, 0, 2, 3)[:, interior], atol=1e-5)


def test_warp_rejects_bad_transform_shape(geometry):
    with pytest.raises(ValueError, match="3, 3"):
        metric_to_sampling_theta(torch.eye(2)[None], geometry)


def test_sample_at_points_reads_cell_centres(geometry):
    maps = torch.randn(1, 4, geometry.height, geometry.width)
    xy = geometry.cell_centres()[:, 5, 7][None, None]  # row 5, col 7
    assert torch.allclose(sample_at_points(maps, xy, geometry)[0, 0], maps[0, :, 5, 7], atol=1e-5)


def test_box_encode_decode_round_trip(geometry):
    boxes = torch.tensor([[3.3, -2.7, -0.9, 4.5, 1.9, 1.6, 0.3], [-10.1, 5.2, -1.0, 0.8, 0.8, 1.7, -2.9]])
    cells = box_centre_cells(boxes, geometry)
    codes = encode_boxes(boxes, cells, geometry)
    assert codes.shape == (2, 8)
    assert (codes[:, :2].abs() <= 0.5).all()
    assert torch.allclose(decode_boxes(codes, cells, geometry), boxes, atol=1e-5)
    with pytest.raises(ValueError, match="8 channels"):
        decode_boxes(codes[:, :7], cells, geometry)


def test_heatmap_targets_peak_at_centres(geometry):
    boxes = torch.tensor([[[3.3, -2.7, -0.9, 4.5, 1.9, 1.6, 0.3], [40.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0]]])
    classes = torch.tensor([[1, 0]])
    cells, usable = objects_on_map(boxes, torch.tensor([[True, True]]), geometry)
    assert usable.tolist() == [[True, False]]  # the second centre is off the map
    heat = heatmap_targets(boxes, classes, usable, cells, geometry, 3)
    assert heat.shape == (1, 3, 16, 32)
    col, row = cells[0, 0].tolist()
    assert heat[0, 1, row, col] == 1.0 and (heat == 1.0).sum() == 1
    assert heat[0, 0].max() == 0 and heat[0, 2].max() == 0
    assert 0 < heat[0, 1, row, col + 1] < 1


def test_model_config_validation_and_omegaconf_merge():
    base = OmegaConf.structured(model_config("tiny"))
    merged = OmegaConf.to_object(OmegaConf.merge(base, {"num_modes": 3, "encoder": "pillars"}))
    assert isinstance(merged, ModelConfig) and merged.num_modes == 3 and merged.encoder == "pillars"
    assert model_config("base").bev_shape == (100, 176)
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(encoder="voxelnet")
    with pytest.raises(ValueError, match="num_heads"):
        ModelConfig(bev_channels=30, num_heads=8)
    with pytest.raises(ValueError, match="sparse_strides"):
        ModelConfig(sparse_channels=[8, 16], sparse_strides=[1, 3])
    with pytest.raises(ValueError, match="size"):
        model_config("huge")


def test_voxel_features_give_the_point_mean_and_its_offset_from_the_voxel_centre():
    from models.sparse_encoder import VOXEL_FEATURES, voxel_mean_features

    grid = GridConfig(x_range=[-16.0, 16.0], y_range=[-8.0, 8.0], z_range=[-3.0, 1.0], voxel_size=[0.5, 0.5, 1.0])
    # voxel (z 1, y 16, x 32): x in [0, 0.5), y in [0, 0.5), z in [-2, -1); centre (0.25, 0.25, -1.5)
    coords = torch.tensor([[0, 1, 16, 32], [3, 0, 0, 0]])
    voxels = torch.zeros(2, 3, 4)
    voxels[0, :2] = torch.tensor([[0.0, 0.5, -1.0, 0.2], [0.2, 0.5, -1.0, 0.4]])  # two points, one pad row
    voxels[1, 0] = torch.tensor([-16.0 + 0.25, -8.0 + 0.25, -2.5, 1.0])  # exactly the centre of voxel (0, 0, 0)
    feats = voxel_mean_features(voxels, torch.tensor([2, 1]), coords, grid)
    assert feats.shape == (2, VOXEL_FEATURES)
    torch.testing.assert_close(feats[0], torch.tensor([0.1, 0.5, -1.0, 0.3, -0.3, 0.5, 0.5]))
    torch.testing.assert_close(feats[1, 4:], torch.zeros(3))
