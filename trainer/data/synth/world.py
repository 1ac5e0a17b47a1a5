"""Static world of a scenario: road layout, lane routes, walkways, occluding buildings, sensor mounts.

World frame: metres, z up, ground at z = 0, right-hand traffic. Occluders are boxes
[K, 7] (x, y, z_centre, l, w, h, yaw).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.synth.geometry import wrap_angle
from trainer.data.synth.paths import Polyline, bezier_turn, lane_change, straight

LANE_WIDTH = 3.5
"""Width of one traffic lane (m); two lanes per direction."""
ROAD_HALF_WIDTH = 2 * LANE_WIDTH
"""Kerb distance from the road axis (m)."""
SIDEWALK_CENTRE = 8.5
"""Walkway centre line distance from the road axis (m)."""
BUILDING_SETBACK = 11.0
"""Nearest building face distance from the road axis (m)."""
STOP_LINE = 12.5
"""Stop line distance from the intersection / crossing centre (m)."""
CROSSWALK = 10.0
"""Crosswalk centre line distance from the intersection / crossing centre (m)."""
ARM_LENGTH = 200.0
"""How far lanes run from the centre (m)."""
BUILDING_REACH = 150.0
"""How far buildings line the roads (m)."""


@dataclass(frozen=True)
class Route:
    """A lane path for vehicles; ``stop_s`` is the arc length of its stop line (None: no signal)."""

    path: Polyline
    stop_s: float | None
    signal_group: int
    spawn_s_max: float
    """Vehicles are spawned with arc length below this (before the stop line / the end)."""
    kerb_side: bool
    """The route keeps to the outer (kerb-side) lane, so cyclists may ride it."""


@dataclass(frozen=True)
class SignalPlan:
    """Fixed-time signal: groups get green in turn for ``green_s``, separated by ``clearance_s`` all-red."""

    num_groups: int
    green_s: float
    clearance_s: float
    offset_s: float

    def is_green(self, group: int, time_s: float) -> bool:
        slot = self.green_s + self.clearance_s
        phase = (time_s + self.offset_s) % (slot * self.num_groups)
        return group * slot <= phase < group * slot + self.green_s


@dataclass(frozen=True)
class World:
    """Everything static about one scenario."""

    layout: str
    occluders: np.ndarray
    """[K, 7] buildings and walls (x, y, z_centre, l, w, h, yaw)."""
    occluder_reflectivity: np.ndarray
    """[K] LiDAR reflectivity of each occluder's material."""
    vehicle_routes: list[Route]
    walk_routes: list[Polyline]
    infra_mounts: np.ndarray
    """[M, 3] candidate infrastructure sensor places (x, y, yaw), best first."""
    barrier_spots: np.ndarray
    """[S, 3] kerb-side spots (x, y, yaw) for static barriers."""
    signals: SignalPlan


def _rot90(v: np.ndarray, k: int) -> np.ndarray:
    c, s = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
    return np.round(np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]]), 12)


def _right(u: np.ndarray) -> np.ndarray:
    """Unit vector to the right of travel direction ``u``."""
    return np.array([u[1], -u[0]])


def _building_row(rng: np.random.Generator, quadrant: tuple[int, int], along_x: bool, start: float) -> list[list[float]]:
    """Buildings along one side of one arm, from ``start`` outwards, in quadrant (sx, sy)."""
    boxes, pos = [], start
    while pos < BUILDING_REACH:
        length, depth, height = rng.uniform(10.0, 35.0), rng.uniform(10.0, 25.0), rng.uniform(6.0, 25.0)
        if rng.random() < 0.85:
            along, across = pos + length / 2, BUILDING_SETBACK + depth / 2
            x, y = (along, across) if along_x else (across, along)
            boxes.append([quadrant[0] * x, quadrant[1] * y, height / 2, length if along_x else depth,
                          depth if along_x else length, height, 0.0])
        pos += length + rng.uniform(3.0, 10.0)
    return boxes


def _walls(rng: np.random.Generator, count: int, reach: float) -> list[list[float]]:
    """Low garden / construction walls on the sidewalk's outer edge."""
    walls = []
    for _ in range(count):
        along, length = rng.uniform(15.0, reach), rng.uniform(6.0, 15.0)
        side, sign, along_x = rng.choice([-1, 1]), rng.choice([-1, 1]), rng.random() < 0.5
        across = side * (BUILDING_SETBACK - 0.6)
        x, y = (sign * along, across) if along_x else (across, sign * along)
        walls.append([x, y, 1.1, length if along_x else 0.3, 0.3 if along_x else length, 2.2, 0.0])
    return walls


def _finish(layout: str, boxes: list[list[float]], rng: np.random.Generator, **kw) -> World:
    occluders = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    return World(layout=layout, occluders=occluders,
                 occluder_reflectivity=rng.uniform(0.2, 0.5, size=len(occluders)), **kw)


def build_intersection(rng: np.random.Generator) -> World:
    """A 4-way signalised intersection of two 4-lane roads at the origin, buildings at the block corners."""
    boxes: list[list[float]] = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            corner = _building_row(rng, (sx, sy), True, BUILDING_SETBACK)
            boxes += corner
            first_depth = corner[0][4] if corner and abs(corner[0][0]) - corner[0][3] / 2 < BUILDING_SETBACK + 1 else 0.0
            boxes += _building_row(rng, (sx, sy), False, BUILDING_SETBACK + first_depth + rng.uniform(3.0, 8.0))
    boxes += _walls(rng, 2, 60.0)

    routes = []
    for arm in range(4):
        u = _rot90(np.array([-1.0, 0.0]), arm)  # inbound travel direction of this arm
        r = _right(u)
        for lane, turns in ((0, (0, -1)), (1, (0, 1))):  # inner lane: straight / left; outer: straight / right
            offset = LANE_WIDTH * (lane + 0.5)
            start, stop = -ARM_LENGTH * u + offset * r, -STOP_LINE * u + offset * r
            for turn in turns:
                u_out = u if turn == 0 else (r if turn == 1 else -r)
                r_out = _right(u_out)
                exit_ = STOP_LINE * u_out + offset * r_out
                pts = np.concatenate([straight(start, stop)[:1], bezier_turn(stop, u, exit_, u_out),
                                      straight(exit_, ARM_LENGTH * u_out + offset * r_out)[1:]])
                routes.append(Route(Polyline(pts), ARM_LENGTH - STOP_LINE, arm, ARM_LENGTH - STOP_LINE - 6.0, lane == 1))

    walks = [_intersection_walk(rng) for _ in range(24)]
    mounts = []
    for sx, sy in ((1, 1), (-1, -1), (1, -1), (-1, 1)):
        x, y = sx * (ROAD_HALF_WIDTH + 2.5), sy * (ROAD_HALF_WIDTH + 2.5)
        mounts.append([x, y, float(np.arctan2(-y, -x))])
    mounts = np.asarray(mounts)
    if rng.random() < 0.5:
        mounts = mounts[[2, 3, 0, 1]]
    signals = SignalPlan(num_groups=4, green_s=float(rng.uniform(5.0, 8.0)), clearance_s=2.0,
                         offset_s=float(rng.uniform(0.0, 40.0)))
    return _finish("intersection", boxes, rng, vehicle_routes=routes, walk_routes=walks, infra_mounts=mounts,
                   barrier_spots=_barrier_spots(rng, arms=4), signals=signals)


def _intersection_walk(rng: np.random.Generator) -> Polyline:
    """A pedestrian walk in canonical quadrant (+, +), mirrored / swapped at random."""
    d0, d1 = rng.uniform(14.0, 45.0), rng.uniform(14.0, 45.0)
    kind = rng.choice(["corner", "cross", "along"])
    if kind == "corner":
        pts = [(d0, SIDEWALK_CENTRE), (SIDEWALK_CENTRE, SIDEWALK_CENTRE), (SIDEWALK_CENTRE, d1)]
    elif kind == "cross":
        pts = [(d0, SIDEWALK_CENTRE), (CROSSWALK, SIDEWALK_CENTRE), (CROSSWALK, -SIDEWALK_CENTRE), (d1, -SIDEWALK_CENTRE)]
    else:
        pts = [(d0, SIDEWALK_CENTRE), (d0 + rng.choice([-1, 1]) * rng.uniform(15, 30), SIDEWALK_CENTRE)]
        pts[1] = (max(pts[1][0], CROSSWALK), pts[1][1])
    pts = np.asarray(pts, dtype=np.float64)
    if rng.random() < 0.5:
        pts = pts[:, ::-1]
    pts = pts * rng.choice([-1.0, 1.0], size=2)
    if rng.random() < 0.5:
        pts = pts[::-1]
    return Polyline(pts)


def build_corridor(rng: np.random.Generator) -> World:
    """A straight 4-lane street along x with a signalised mid-block crosswalk at x = 0."""
    boxes: list[list[float]] = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            boxes += _building_row(rng, (sx, sy), True, rng.uniform(6.0, 15.0))
    boxes += _walls(rng, 3, 80.0)

    routes = []
    for direction in (1.0, -1.0):
        u = np.array([direction, 0.0])
        r = _right(u)
        for lane in (0, 1):
            offset = LANE_WIDTH * (lane + 0.5)
            start = -ARM_LENGTH * u + offset * r
            shift_s = rng.uniform(60.0, 250.0)
            for change in (False, True):
                lateral = (-1 if lane else 1) * LANE_WIDTH * r if change else 0.0 * r
                pts = lane_change(start, u, lateral, shift_s, rng.uniform(25.0, 45.0), 2 * ARM_LENGTH)
                routes.append(Route(Polyline(pts), ARM_LENGTH - STOP_LINE, 0, 2 * ARM_LENGTH - 30.0, lane == 1 and not change))

    walks = []
    for _ in range(24):
        side = rng.choice([-1.0, 1.0])
        if rng.random() < 0.5:  # cross at the crosswalk
            x0, x1 = rng.uniform(-40.0, -5.0), rng.uniform(5.0, 40.0)
            cw = CROSSWALK * rng.choice([-1.0, 1.0])
            pts = np.array([(x0, side * SIDEWALK_CENTRE), (cw, side * SIDEWALK_CENTRE),
                            (cw, -side * SIDEWALK_CENTRE), (x1, -side * SIDEWALK_CENTRE)])
        else:
            x0 = rng.uniform(-80.0, 80.0)
            pts = np.array([(x0, side * SIDEWALK_CENTRE), (x0 + rng.choice([-1, 1]) * 40.0, side * SIDEWALK_CENTRE)])
        walks.append(Polyline(pts[::-1] if rng.random() < 0.5 else pts))
    mounts = np.array([[CROSSWALK + 4.0, ROAD_HALF_WIDTH + 2.5, np.pi],
                       [-CROSSWALK - 4.0, -ROAD_HALF_WIDTH - 2.5, 0.0],
                       [-CROSSWALK - 4.0, ROAD_HALF_WIDTH + 2.5, 0.0],
                       [CROSSWALK + 4.0, -ROAD_HALF_WIDTH - 2.5, np.pi]])
    signals = SignalPlan(num_groups=2, green_s=float(rng.uniform(8.0, 14.0)), clearance_s=1.0,
                         offset_s=float(rng.uniform(0.0, 40.0)))
    return _finish("corridor", boxes, rng, vehicle_routes=routes, walk_routes=walks, infra_mounts=mounts,
                   barrier_spots=_barrier_spots(rng, arms=2), signals=signals)


def _barrier_spots(rng: np.random.Generator, arms: int, count: int = 6) -> np.ndarray:
    """Kerb-side places (x, y, yaw) on random arms, 25-90 m from the centre."""
    spots = []
    for _ in range(count):
        arm = int(rng.integers(arms)) * (4 // arms)
        along, side = rng.uniform(25.0, 90.0), rng.choice([-1.0, 1.0])
        p = _rot90(np.array([along, side * (ROAD_HALF_WIDTH + 0.4)]), arm)
        spots.append([p[0], p[1], float(wrap_angle(arm * np.pi / 2))])
    return np.asarray(spots)


def build_world(layout: str, rng: np.random.Generator) -> World:
    """The world for ``layout`` ("intersection" or "corridor")."""
    builders = {"intersection": build_intersection, "corridor": build_corridor}
    if layout not in builders:
        raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(builders)}")
    return builders[layout](rng)
