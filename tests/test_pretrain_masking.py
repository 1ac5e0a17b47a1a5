"""Stage-1 masking, reconstruction targets and the masked Chamfer loss."""

import math

import pytest
import torch

from models.grid import GridConfig
from trainer.pretrain.chamfer import chamfer_l1, gather_cells, masked_chamfer_loss
from trainer.pretrain.masking import lexicographic_key, random_cell_mask, voxel_centres_xy, world_cell_mask
from trainer.pretrain.targets import ReconTargets

GRID = GridConfig(x_range=[-8.0, 8.0], y_range=[-8.0, 8.0], z_range=[-2.0, 2.0], voxel_size=[0.4, 0.4, 1.0])


def _random_coords(num_frames: int, per_frame: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    _, ny, nx = GRID.shape_zyx
    rows = []
    for n in range(num_frames):
        flat = torch.randperm(ny * nx, generator=g)[:per_frame]
        rows.append(torch.stack([torch.full_like(flat, n), torch.zeros_like(flat), flat // nx, flat % nx], 1))
    return torch.cat(rows).int()


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_random_mask_fraction_per_agent_frame(ratio):
    coords = _random_coords(num_frames=6, per_frame=300)
    mask = random_cell_mask(coords, GRID, cell=0.8, ratio=ratio, generator=torch.Generator().manual_seed(1))
    for n in range(6):
        sel = coords[:, 0] == n
        cells = torch.unique((coords[sel, 2] // 2) * 1000 + coords[sel, 3] // 2, return_inverse=True)
        cell_ids, inverse = cells
        masked_cells = torch.zeros(len(cell_ids), dtype=torch.bool)
        masked_cells[inverse[mask[sel]]] = True
        # every voxel of a masked cell is masked, and no voxel of an unmasked cell
        assert torch.equal(masked_cells[inverse], mask[sel])
        assert masked_cells.sum().item() == round(ratio * len(cell_ids))


def test_random_mask_depends_on_generator_seed():
    coords = _random_coords(num_frames=2, per_frame=200)
    a = random_cell_mask(coords, GRID, cell=0.8, ratio=0.5, generator=torch.Generator().manual_seed(1))
    b = random_cell_mask(coords, GRID, cell=0.8, ratio=0.5, generator=torch.Generator().manual_seed(2))
    c = random_cell_mask(coords, GRID, cell=0.8, ratio=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_mask_cell_must_be_multiple_of_voxel():
    with pytest.raises(ValueError, match="multiple of the"):
        random_cell_mask(_random_coords(1, 10), GRID, cell=0.5, ratio=0.5)


def _se2(theta: float, tx: float, ty: float) -> torch.Tensor:
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def test_world_mask_covers_same_world_cells_in_every_agent():
    # Scene with A=2 agents, T=1 frame. Agent 1 sits 4 m ahead of the ego, rotated by 90 degrees; its
    # voxels are placed exactly where the ego's voxels are in the world.
    ego = _random_coords(num_frames=1, per_frame=250, seed=3)
    to_ego = torch.stack([torch.eye(3), _se2(math.pi / 2, 4.0, 0.0)])
    centres = torch.stack([GRID.x_range[0] + (ego[:, 3] + 0.5) * 0.4, GRID.y_range[0] + (ego[:, 2] + 0.5) * 0.4], 1)
    inv = torch.linalg.inv(to_ego[1])
    local = centres @ inv[:2, :2].T + inv[:2, 2]
    ix = torch.floor((local[:, 0] - GRID.x_range[0]) / 0.4).long()
    iy = torch.floor((local[:, 1] - GRID.y_range[0]) / 0.4).long()
    inside = (ix >= 0) & (ix < 40) & (iy >= 0) & (iy < 40)
    other = torch.stack([torch.ones_like(ix), torch.zeros_like(ix), iy, ix], 1)[inside].int()
    coords = torch.cat([ego, other])
    mask = world_cell_mask(coords, GRID, to_ego, agents=2, history=1, cell=0.8, ratio=0.5,
                           consistent_over_time=False, generator=torch.Generator().manual_seed(0))
    ego_mask, other_mask = mask[: len(ego)], mask[len(ego):]
    assert torch.equal(ego_mask[inside], other_mask)
    assert 0.3 < ego_mask.float().mean().item() < 0.7


def test_world_mask_consistent_over_time_option():
    coords = _random_coords(num_frames=1, per_frame=300, seed=5)
    two_frames = torch.cat([coords, coords.clone().index_fill_(1, torch.tensor([0]), 1)])
    to_ego = torch.eye(3).expand(2, 3, 3)
    same = world_cell_mask(two_frames, GRID, to_ego, agents=1, history=2, cell=0.8, ratio=0.5,
                           consistent_over_time=True, generator=torch.Generator().manual_seed(0))
    per_frame = world_cell_mask(two_frames, GRID, to_ego, agents=1, history=2, cell=0.8, ratio=0.5,
                                consistent_over_time=False, generator=torch.Generator().manual_seed(0))
    n = len(coords)
    assert torch.equal(same[:n], same[n:])
    assert not torch.equal(per_frame[:n], per_frame[n:])


def test_lexicographic_key_groups_and_orders_rows_like_unique_over_rows():
    g = torch.Generator().manual_seed(0)
    columns = [torch.randint(lo, hi, (5000,), generator=g) for lo, hi in ((0, 3), (-40, 60), (-7, 90), (0, 2))]
    rows, row_inverse = torch.unique(torch.stack(columns, 1), dim=0, return_inverse=True)
    keys, key_inverse = torch.unique(lexicographic_key(columns), return_inverse=True)
    assert len(keys) == len(rows) and torch.equal(key_inverse, row_inverse)
    assert lexicographic_key([torch.zeros(0, dtype=torch.long)] * 2).shape == (0,)


def test_lexicographic_key_refuses_ranges_int64_cannot_hold():
    wide = torch.tensor([0, 2**40])
    with pytest.raises(OverflowError, match="more than int64 holds"):
        lexicographic_key([wide, wide])


def test_world_mask_equals_the_row_unique_reference_for_the_same_generator():
    # Two scenes x 2 agents x 2 frames; agent-frames rotated and shifted so ego cells go negative and off-grid.
    coords = _random_coords(num_frames=8, per_frame=300, seed=7)
    to_ego = torch.stack([_se2(0.3 * i, 3.0 * (i % 3) - 9.0, -2.0 * i) for i in range(8)])
    mask = world_cell_mask(coords, GRID, to_ego, agents=2, history=2, cell=0.8, ratio=0.4,
                           consistent_over_time=False, generator=torch.Generator().manual_seed(11))
    n = coords[:, 0].long()
    ego_xy = torch.einsum("vij,vj->vi", to_ego[n][:, :2, :2], voxel_centres_xy(coords, GRID)) + to_ego[n][:, :2, 2]
    cx = torch.floor((ego_xy[:, 0] - GRID.x_range[0]) / 0.8).long()
    cy = torch.floor((ego_xy[:, 1] - GRID.y_range[0]) / 0.8).long()
    assert (cx < 0).any() and (cy < 0).any()
    rows, inverse = torch.unique(torch.stack([n // 4, cy, cx, n % 2], 1), dim=0, return_inverse=True)
    score = torch.rand(len(rows), generator=torch.Generator().manual_seed(11))
    assert torch.equal(mask, (score < 0.4)[inverse])


def _brute_chamfer(pred, target):
    p2t = sum(min((p - q).abs().sum().item() for q in target) for p in pred) / len(pred)
    t2p = sum(min((p - q).abs().sum().item() for p in pred) for q in target) / len(target)
    return p2t + t2p


def test_chamfer_matches_brute_force_and_is_zero_when_perfect():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 5, 3, generator=g)
    target = torch.randn(3, 4, 3, generator=g)
    valid = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    got = chamfer_l1(pred, target, valid)
    for i in range(3):
        assert got[i].item() == pytest.approx(_brute_chamfer(pred[i], target[i][valid[i]]), rel=1e-5)
    perfect = chamfer_l1(target[:, :4].clone(), target, torch.ones(3, 4, dtype=torch.bool))
    assert torch.allclose(perfect, torch.zeros(3))


def test_masked_loss_ignores_unmasked_cells():
    g = torch.Generator().manual_seed(0)
    recon = torch.randn(2, 4, 3, 5, 6, generator=g)
    cells = torch.tensor([3, 17, 40])
    targets = ReconTargets(cell_index=cells, points=torch.randn(3, 6, 3, generator=g),
                           valid=torch.ones(3, 6, dtype=torch.bool))
    base = masked_chamfer_loss(recon, targets)
    changed = recon.clone()
    flat = changed.permute(0, 3, 4, 1, 2).reshape(60, 4, 3)
    others = torch.tensor([i for i in range(60) if i not in cells.tolist()])
    flat[others] += 100.0
    changed = flat.reshape(2, 5, 6, 4, 3).permute(0, 3, 4, 1, 2)
    assert masked_chamfer_loss(changed, targets).item() == pytest.approx(base.item())
    moved = recon.clone()
    moved[0, :, :, 0, 3] += 1.0  # cell 3 is reconstructed
    assert masked_chamfer_loss(moved, targets).item() != pytest.approx(base.item())
    assert torch.equal(gather_cells(recon, cells)[0], recon[0, :, :, 0, 3])
