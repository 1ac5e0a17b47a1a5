"""Road users: spawning, behaviours (signals, car following, yielding, stops) and kinematic motion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.data.synth.classes import CLASS_SPECS, CYCLIST_MIX, VEHICLE_MIX, ClassSpec
from trainer.data.synth.config import TrafficConfig
from trainer.data.synth.kinematics import bicycle_step, idm_accel, pure_pursuit_steer
from trainer.data.synth.paths import Polyline
from trainer.data.synth.world import Route, World

KEEP_RIGHT = 0.6
"""Pedestrians walk this far (m) right of the walkway centre line, so opposite streams pass each other."""
PEDESTRIAN_LOOKAHEAD_S = 1.5
"""Vehicles also yield to where a pedestrian will be this many seconds ahead."""


@dataclass
class Actor:
    """One road user; (x, y) is its box centre on the ground, yaw its heading (radians)."""

    obj_id: int
    spec: ClassSpec
    size: np.ndarray
    """[3] full length, width, height (m)."""
    path: Polyline | None
    route: Route | None
    s: float
    x: float
    y: float
    yaw: float
    speed: float
    desired_speed: float
    is_cav: bool = False
    stop_at_s: float | None = None
    """Arc length of a planned stop (drop-off, waiting pedestrian); None when there is none."""
    dwell_s: float = 0.0
    """How long the planned stop lasts once reached (s)."""

    @property
    def moving(self) -> bool:
        return self.path is not None


@dataclass(frozen=True)
class Snapshot:
    """The road users at one instant."""

    ids: np.ndarray
    """[N] int64 stable object ids."""
    types: list[str]
    """[N] V2XPnP type names."""
    boxes: np.ndarray
    """[N, 7] (x, y, z_centre, l, w, h, yaw) in the world."""
    speeds: np.ndarray
    """[N] m/s."""
    reflectivity: np.ndarray
    """[N] LiDAR reflectivity."""


class Traffic:
    """All road users of one scenario; connected vehicles are the first ``num_cavs`` actors."""

    def __init__(self, world: World, cfg: TrafficConfig, num_cavs: int, rng: np.random.Generator) -> None:
        self.world, self.cfg, self.rng = world, cfg, rng
        self.actors: list[Actor] = []
        self._next_id = 1
        for _ in range(num_cavs):
            self._spawn_lane_user("car", initial=True, cav=True)
        if len([a for a in self.actors if a.is_cav]) != num_cavs:
            raise RuntimeError(f"could not place {num_cavs} connected vehicles without overlap")
        for _ in range(cfg.num_vehicles):
            self._spawn_lane_user(self._draw(VEHICLE_MIX), initial=True)
        for _ in range(cfg.num_cyclists):
            self._spawn_lane_user(self._draw(CYCLIST_MIX), initial=True)
        for _ in range(cfg.num_pedestrians):
            self._spawn_pedestrian(initial=True)
        spots = world.barrier_spots[rng.permutation(len(world.barrier_spots))[: cfg.num_barriers]]
        for x, y, yaw in spots:
            self.actors.append(self._make("barrier", None, None, 0.0, x, y, yaw, 0.0, 0.0))

    @property
    def cav_ids(self) -> list[int]:
        return [a.obj_id for a in self.actors if a.is_cav]

    def _draw(self, mix: dict[str, float]) -> str:
        names = list(mix)
        return names[int(self.rng.choice(len(names), p=np.array([mix[n] for n in names])))]

    def _make(self, name: str, path: Polyline | None, route: Route | None, s: float, x: float, y: float,
              yaw: float, speed: float, desired: float, cav: bool = False) -> Actor:
        spec = CLASS_SPECS[name]
        size = np.array([self.rng.uniform(*spec.length), self.rng.uniform(*spec.width), self.rng.uniform(*spec.height)])
        actor = Actor(obj_id=self._next_id, spec=spec, size=size, path=path, route=route, s=s, x=float(x),
                      y=float(y), yaw=float(yaw), speed=speed, desired_speed=desired, is_cav=cav)
        stop_chance = 0.25 if spec.role == "pedestrian" else 0.12
        if path is not None and not cav and self.rng.random() < stop_chance:
            actor.stop_at_s = float(s + self.rng.uniform(10.0, 80.0 if spec.role != "pedestrian" else 25.0))
            actor.dwell_s = float(self.rng.uniform(1.0, 5.0))
        self._next_id += 1
        return actor

    def _clear(self, x: float, y: float, vehicle_radius: float, pedestrian_radius: float) -> bool:
        """No road user's centre within its half length plus the given radius (by the other's kind) of (x, y)."""
        for a in self.actors:
            radius = pedestrian_radius if a.spec.role == "pedestrian" else vehicle_radius
            if np.hypot(a.x - x, a.y - y) < radius + a.size[0] / 2:
                return False
        return True

    def _spawn_lane_user(self, name: str, *, initial: bool, cav: bool = False) -> None:
        spec = CLASS_SPECS[name]
        routes = [r for r in self.world.vehicle_routes if r.kerb_side or spec.role != "cyclist"]
        for _ in range(30):
            route = routes[int(self.rng.integers(len(routes)))]
            path = route.path.offset(-1.2) if spec.role == "cyclist" else route.path
            if cav:
                s = route.stop_s - self.rng.uniform(10.0, 45.0)
            else:
                s = self.rng.uniform(0.0, route.spawn_s_max if initial else 15.0)
            (x, y), yaw = path.position(s), path.heading_at(s)
            if self._clear(x, y, spec.length[1] / 2 + 6.0, 1.5):
                desired = self.cfg.speed_limit * self.rng.uniform(*spec.speed_factor) * (0.85 if cav else 1.0)
                speed = desired * (self.rng.uniform(0.3, 1.0) if initial else 0.8)
                self.actors.append(self._make(name, path, route, s, x, y, yaw, speed, desired, cav))
                return

    def _spawn_pedestrian(self, *, initial: bool) -> None:
        for _ in range(30):
            route = self.world.walk_routes[int(self.rng.integers(len(self.world.walk_routes)))]
            path = route.offset(-(KEEP_RIGHT + self.rng.uniform(-0.15, 0.15)))
            s = self.rng.uniform(0.0, 0.6 * path.length) if initial else 0.0
            (x, y), yaw = path.position(s), path.heading_at(s)
            if self._clear(x, y, 2.0, 1.0):
                desired = self.rng.uniform(*CLASS_SPECS["pedestrian"].speed_factor)
                self.actors.append(self._make("pedestrian", path, None, s, x, y, yaw, desired, desired))
                return

    def _controls(self, time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Acceleration and steering [N] for every actor (0 for static ones)."""
        n = len(self.actors)
        pos = np.array([[a.x, a.y] for a in self.actors]).reshape(n, 2)
        yaw = np.array([a.yaw for a in self.actors])
        speed = np.array([a.speed for a in self.actors])
        half_l = np.array([a.size[0] / 2 for a in self.actors])
        half_w = np.array([a.size[1] / 2 for a in self.actors])
        is_ped = np.array([a.spec.role == "pedestrian" for a in self.actors])
        heading = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
        # Obstacles: every actor, plus where each pedestrian will soon be.
        obs_pos = np.concatenate([pos, pos[is_ped] + PEDESTRIAN_LOOKAHEAD_S * speed[is_ped, None] * heading[is_ped]])
        obs_idx = np.concatenate([np.arange(n), np.nonzero(is_ped)[0]])
        accel, steer = np.zeros(n), np.zeros(n)
        for i, a in enumerate(self.actors):
            if not a.moving:
                continue
            a.s = a.path.project(pos[i], a.s)
            lookahead = 1.0 if is_ped[i] else 3.0 + 0.5 * a.speed
            tx, ty = a.path.position(a.s + lookahead)
            wheelbase = self._wheelbase(a)
            steer[i] = pure_pursuit_steer(a.x, a.y, a.yaw, tx, ty, wheelbase)
            gaps, closing = self._obstacles(i, a, obs_pos, obs_idx, yaw, speed, half_l, half_w, is_ped, time_s)
            acc = idm_accel(np.full(len(gaps), a.speed), a.desired_speed, gaps, closing,
                            max_accel=a.spec.max_accel, comfort_brake=a.spec.comfort_brake)
            accel[i] = acc.min()
        return accel, steer

    def _obstacles(self, i: int, a: Actor, obs_pos: np.ndarray, obs_idx: np.ndarray, yaw: np.ndarray,
                   speed: np.ndarray, half_l: np.ndarray, half_w: np.ndarray, is_ped: np.ndarray,
                   time_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Bumper gaps [G] and closing speeds [G] to everything in ``a``'s way (first entry: free road)."""
        gaps, closing = [np.inf], [0.0]
        horizon = min(50.0, 10.0 + 4.0 * a.speed)
        ahead, pts = a.path.samples(a.s, horizon, 1.0)
        d = np.linalg.norm(obs_pos[:, None, :] - pts[None], axis=2)
        hit = d < (half_w[i] + half_w[obs_idx] + 0.3)[:, None]
        hit[obs_idx == i] = False
        if is_ped[i]:  # pedestrians only queue behind pedestrians walking their way
            hit[~(is_ped[obs_idx] & (np.cos(yaw[obs_idx] - a.yaw) > 0.5))] = False
        rows = np.nonzero(hit.any(axis=1))[0]
        if len(rows):
            k = hit[rows].argmax(axis=1)
            j = obs_idx[rows]
            path_yaw = a.path.heading[np.minimum(np.searchsorted(a.path.s, a.s + ahead[k]), len(a.path.s) - 1)]
            rel = yaw[j] - path_yaw
            oncoming = (np.cos(rel) < -0.5) & ~is_ped[j]
            extent = half_l[j] * np.abs(np.cos(rel)) + half_w[j] * np.abs(np.sin(rel))
            keep = ~oncoming & (ahead[k] > 0.0)
            gaps += list(np.maximum(ahead[k] - half_l[i] - extent, 0.05)[keep])
            closing += list((a.speed - speed[j] * np.cos(rel))[keep])
        brake = a.spec.max_brake * 0.6
        route = a.route
        if route is not None and route.stop_s is not None and not self.world.signals.is_green(route.signal_group, time_s):
            gap = route.stop_s - a.s - half_l[i] + 1.5
            if gap > -0.5 and a.speed**2 / (2.0 * max(gap + 2.0, 0.1)) <= brake:
                gaps.append(max(gap, 0.05))
                closing.append(a.speed)
        if a.stop_at_s is not None:
            gaps.append(max(a.stop_at_s - a.s + 2.0, 0.05))
            closing.append(a.speed)
        if a.is_cav:
            gaps.append(max(a.path.length - a.s - half_l[i], 0.05))
            closing.append(a.speed)
        return np.asarray(gaps), np.asarray(closing)

    @staticmethod
    def _wheelbase(a: Actor) -> float:
        return 0.4 if a.spec.role == "pedestrian" else 0.6 * float(a.size[0])

    def step(self, time_s: float, dt: float, substeps: int = 2) -> None:
        """Advance ``dt`` seconds: controls at the start (zero-order hold), ``substeps`` bicycle-model steps."""
        moving = [a for a in self.actors if a.moving]
        if moving:
            accel, steer = self._controls(time_s)
            idx = [i for i, a in enumerate(self.actors) if a.moving]
            accel, steer = accel[idx], steer[idx]
            x = np.array([a.x for a in moving])
            y = np.array([a.y for a in moving])
            yaw = np.array([a.yaw for a in moving])
            v = np.array([a.speed for a in moving])
            limits = dict(
                max_speed=np.array([a.desired_speed * 1.2 for a in moving]),
                max_accel=np.array([a.spec.max_accel for a in moving]),
                max_brake=np.array([a.spec.max_brake for a in moving]),
                max_steer=np.radians([a.spec.max_steer_deg for a in moving]),
            )
            wheelbase = np.array([self._wheelbase(a) for a in moving])
            for _ in range(substeps):
                x, y, yaw, v = bicycle_step(x, y, yaw, v, accel, steer, wheelbase, dt / substeps, **limits)
            for a, xi, yi, yawi, vi in zip(moving, x, y, yaw, v):
                a.x, a.y, a.yaw, a.speed = float(xi), float(yi), float(yawi), float(vi)
                if a.stop_at_s is not None and a.speed < 0.2 and a.stop_at_s - a.s < 4.0:
                    a.dwell_s -= dt
                    if a.dwell_s <= 0.0:
                        a.stop_at_s = None
        self._recycle()

    def _recycle(self) -> None:
        """Remove road users that reached the end of their path and spawn newcomers at the far ends."""
        done = [a for a in self.actors if a.moving and not a.is_cav and a.s >= a.path.length - 2.0]
        for a in done:
            self.actors.remove(a)
            if a.spec.role == "pedestrian":
                self._spawn_pedestrian(initial=False)
            else:
                self._spawn_lane_user(self._draw(VEHICLE_MIX if a.spec.role == "vehicle" else CYCLIST_MIX),
                                      initial=False)

    def snapshot(self) -> Snapshot:
        boxes = np.array([[a.x, a.y, a.size[2] / 2, *a.size, a.yaw] for a in self.actors]).reshape(-1, 7)
        return Snapshot(ids=np.array([a.obj_id for a in self.actors], dtype=np.int64),
                        types=[a.spec.name for a in self.actors], boxes=boxes,
                        speeds=np.array([a.speed for a in self.actors]),
                        reflectivity=np.array([a.spec.reflectivity for a in self.actors]))
