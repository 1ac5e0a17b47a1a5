"""Global BEV augmentation as one 2-D linear map G = s * R(theta) * F (F mirrors y).

G is applied to the coordinates of EVERY BEV frame, which keeps all cross-frame geometry
consistent: points p -> G p in each agent-frame, each frame-to-frame transform T -> G T G^-1,
ego-frame boxes / yaws / past and future positions -> G. Heights and sizes scale by s.
"""

from __future__ import annotations

import numpy as np

from trainer.data.config import AugmentConfig


def augmentation_matrix(*, rotation_rad: float, flip: bool, scale: float) -> np.ndarray:
    """[2, 2] G = scale * R(rotation) @ diag(1, -1 if flip else 1)."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    c, s = np.cos(rotation_rad), np.sin(rotation_rad)
    return scale * np.array([[c, -s], [s, c]]) @ np.diag([1.0, -1.0 if flip else 1.0])


def sample_augmentation(cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """A random G drawn from ``cfg``."""
    theta = np.radians(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    flip = bool(rng.uniform() < cfg.flip_prob)
    scale = float(rng.uniform(*cfg.scale_range))
    return augmentation_matrix(rotation_rad=theta, flip=flip, scale=scale)


def scale_of(g: np.ndarray) -> float:
    """The isotropic scale s of G (sqrt |det G|)."""
    return float(np.sqrt(abs(np.linalg.det(g))))


def apply_to_xy(xy: np.ndarray, g: np.ndarray) -> np.ndarray:
    """[..., 2] positions -> G applied (same dtype)."""
    return (xy @ g.T.astype(xy.dtype)).astype(xy.dtype)


def apply_to_points(points: np.ndarray, g: np.ndarray) -> np.ndarray:
    """[N, >=3] BEV points: x, y -> G (x, y), z -> s z; other columns unchanged."""
    out = points.copy()
    out[:, :2] = apply_to_xy(points[:, :2], g)
    out[:, 2] = points[:, 2] * scale_of(g)
    return out


def apply_to_affines(affines: np.ndarray, g: np.ndarray) -> np.ndarray:
    """[..., 3, 4] affines onto BEV xyz -> G3 @ affine with G3 = [[G, 0], [0, s]]: the map that
    ``apply_to_points`` would apply after them."""
    g3 = np.zeros((3, 3))
    g3[:2, :2], g3[2, 2] = g, scale_of(g)
    return g3 @ affines


def apply_to_transforms(transforms: np.ndarray, g: np.ndarray) -> np.ndarray:
    """[..., 3, 3] homogeneous 2-D transforms T -> G3 T G3^-1 with G3 = [[G, 0], [0, 1]]."""
    g3 = np.identity(3)
    g3[:2, :2] = g
    return (g3 @ transforms @ np.linalg.inv(g3)).astype(transforms.dtype)


def apply_to_boxes(boxes: np.ndarray, g: np.ndarray) -> np.ndarray:
    """[M, 7] (x, y, z, l, w, h, yaw): centre -> G, z and sizes -> s, yaw -> angle of G (cos, sin)."""
    out = boxes.copy()
    s = scale_of(g)
    out[:, :2] = apply_to_xy(boxes[:, :2], g)
    out[:, 2] = boxes[:, 2] * s
    out[:, 3:6] = boxes[:, 3:6] * s
    heading = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])], axis=-1) @ g.T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    return out
