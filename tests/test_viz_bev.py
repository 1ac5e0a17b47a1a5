"""BEV rendering: pixel geometry, GT / predicted boxes where they belong, point recovery, GIFs."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from models.grid import GridConfig
from tests.test_eval_fixtures import box, make_batch, make_detections
from trainer.viz import BevPlotConfig, canvas_size, ego_to_pixel, render_bev_png, render_samples, save_bev_gif
from trainer.viz.points import scene_points_in_ego

GRID = GridConfig(x_range=[-20.0, 20.0], y_range=[-10.0, 10.0], z_range=[-3.0, 1.0])
PLOT = BevPlotConfig(pixels_per_metre=4.0, show_legend=False)


def rgb_at(image: np.ndarray, xy) -> np.ndarray:
    col, row = ego_to_pixel(np.asarray(xy, dtype=float), GRID, PLOT.pixels_per_metre)
    return image[int(row), int(col), :3].astype(int)


def scene():
    return {"key": "scene_a", "boxes": [box(10, 5, 4, 2, 0.3)], "classes": [0],
            "agents": [(0, 0, 0, 0), (-12, -6, math.pi / 2, 1)],
            "points": {(0, 1): [[-15.0, 7.0, 0.0, 0.5]], (1, 1): [[1.0, 0.0, 0.0, 0.5]]}}


def test_pixel_mapping_is_the_grid_extent():
    assert canvas_size(GRID, 4.0) == (160, 80)
    assert ego_to_pixel([[-20, 10], [20, -10], [0, 0]], GRID, 4.0).tolist() == [[0, 0], [160, 80], [80, 40]]


def test_png_has_expected_size_and_gt_box_where_it_should_be(tmp_path):
    batch = make_batch([scene()], grid=GRID)
    path = render_bev_png(tmp_path / "bev.png", batch, 0, grid=GRID, config=PLOT, title="")
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (80, 160, 3)
    inside = rgb_at(image, (10, 5))  # translucent green fill
    far = rgb_at(image, (-5, -8))  # empty background
    assert far.tolist() == [255, 255, 255]
    assert inside[1] > inside[0] + 40 and inside[1] > inside[2] + 40, inside
    assert rgb_at(image, (-10, 5)).tolist() == [255, 255, 255]  # mirror position stays empty


def test_predicted_box_is_drawn_in_red_and_low_scores_are_hidden(tmp_path):
    batch = make_batch([scene()], grid=GRID)
    edge_window = ego_to_pixel([[-12.0, 6.0], [-8.0, 4.0]], GRID, PLOT.pixels_per_metre).astype(int)

    def red_pixels(score):
        det = make_detections([box(-10, 5, 4, 2)], [score], [0], [[[[-6, 5], [-4, 5], [-2, 5]]]])
        image = np.asarray(Image.open(render_bev_png(tmp_path / f"p{score}.png", batch, 0, det, grid=GRID,
                                                     config=PLOT, title="")).convert("RGB")).astype(int)
        (c0, r0), (c1, r1) = edge_window
        patch = image[r0 - 1:r1 + 2, c0 - 1:c1 + 2]
        return int(((patch[..., 0] > 150) & (patch[..., 1] < 110) & (patch[..., 2] < 110)).sum())

    assert red_pixels(0.9) > 10
    assert red_pixels(0.1) == 0  # below PLOT.score_threshold


def test_points_are_mapped_into_the_ego_frame():
    batch = make_batch([scene(), {"key": "other", "boxes": [], "classes": [],
                                  "points": {(0, 1): [[3.0, 3.0, 0.0, 0.1]]}}], grid=GRID)
    points, agent = scene_points_in_ego(batch, 0)
    # Agent 1 sits at (-12, -6) facing +y: its (1, 0) is the ego's (-12, -5).
    order = np.argsort(agent)
    assert agent[order].tolist() == [0, 1]
    np.testing.assert_allclose(points[order, :2], [[-15.0, 7.0], [-12.0, -5.0]], atol=1e-5)
    # History frames move through history_to_now before agent_to_ego.
    batch = make_batch([{"key": "h", "boxes": [], "classes": [], "points": {(0, 0): [[1.0, 2.0, 0.0, 0.0]]}}],
                       grid=GRID)
    assert scene_points_in_ego(batch, 0)[0].shape == (0, 4)
    batch.history_to_now[0, 0, 0] = torch.tensor([[1.0, 0, 5], [0, 1, 0], [0, 0, 1]])
    points, _ = scene_points_in_ego(batch, 0, all_frames=True)
    np.testing.assert_allclose(points[:, :2], [[6.0, 2.0]])
    with pytest.raises(ValueError, match="scene must be"):
        scene_points_in_ego(batch, 3)


def test_points_of_every_agent_land_on_their_objects():
    from tests.batch_factory import GROUND_Z, make_batch as synthetic_batch
    from models.config import model_config
    from trainer.eval.iou import box_corners_bev

    config = dataclasses.replace(model_config("tiny"), history=2)
    batch = synthetic_batch(config, num_scenes=1, agents=3, num_objects=4, ground_points=50, seed=3)
    points, agent = scene_points_in_ego(batch, 0)
    above_ground = points[:, 2] > GROUND_Z + 0.2
    boxes = batch.gt_boxes[0, batch.gt_mask[0]].clone()
    boxes[:, 3:5] += 0.2  # float tolerance for points on the box faces
    corners = box_corners_bev(boxes.double()).numpy()  # [M, 4, 2]
    xy = points[above_ground, :2].astype(np.float64)
    edges = np.roll(corners, -1, axis=1) - corners
    rel = xy[:, None, None, :] - corners[None]  # [P, M, 4, 2]
    inside = ((edges[None, ..., 0] * rel[..., 1] - edges[None, ..., 1] * rel[..., 0]) >= 0).all(-1).any(-1)
    for a in range(3):
        mine = agent[above_ground] == a
        assert mine.sum() > 20 and inside[mine].mean() > 0.95, (a, inside[mine].mean())


def test_gif_and_render_samples_with_predict(tmp_path):
    batch = make_batch([scene(), {"key": "scene_b", "boxes": [box(0, 0)], "classes": [0]}], grid=GRID)
    calls = []

    def predict(b):
        calls.append(b.keys)
        return [make_detections([box(10, 5)], [0.8], [0]), make_detections(np.zeros((0, 7)), [], [])]

    written = render_samples([batch, batch], tmp_path, grid=GRID, predict=predict, config=PLOT, max_samples=3,
                             gif=True)
    # the second batch repeats both samples (as a loader's padding does): each is drawn once
    assert [p.name for p in written] == ["scene_a.png", "scene_b.png", "samples.gif"]
    assert len(calls) == 2
    gif = Image.open(tmp_path / "samples.gif")
    assert gif.size == (160, 80) and gif.n_frames == 2
    with pytest.raises(ValueError, match="2 scenes"):
        render_samples([batch], tmp_path, grid=GRID, predict=lambda b: [], config=PLOT)
    with pytest.raises(ValueError, match="at least one sample"):
        save_bev_gif(tmp_path / "x.gif", [], grid=GRID)
    with pytest.raises(ValueError, match="viz.pixels_per_metre"):
        BevPlotConfig(pixels_per_metre=0)
