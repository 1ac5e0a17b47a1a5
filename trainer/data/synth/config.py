"""Typed configuration of the synthetic V2X scene generator (works as an OmegaConf structured config)."""

from __future__ import annotations

from dataclasses import dataclass, field

LAYOUTS = ("intersection", "corridor")
"""Road layouts the generator knows; each scenario picks one from ``SynthConfig.layouts`` by its seed."""


@dataclass(kw_only=True)
class LidarConfig:
    """A spinning LiDAR: evenly spaced beams between two elevations, a full 360 degree sweep."""

    num_beams: int = 32
    """Number of laser beams (rows)."""
    elevation_min_deg: float = -22.0
    """Elevation of the lowest beam (degrees, negative = down)."""
    elevation_max_deg: float = 4.0
    """Elevation of the highest beam (degrees)."""
    azimuth_resolution_deg: float = 1.0
    """Horizontal angle between two firings (degrees); 360 / this many columns."""
    range_max: float = 100.0
    """Returns farther than this (metres) are lost."""
    range_noise_std: float = 0.02
    """Standard deviation of the Gaussian range noise (metres)."""
    dropout: float = 0.05
    """Probability that a return is lost at random."""
    mount_height: float = 1.9
    """Height of the sensor above the ground (metres): roof of a car, or top of an infrastructure pole."""

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"lidar.num_beams must be >= 1, got {self.num_beams}")
        if not -90.0 < self.elevation_min_deg <= self.elevation_max_deg < 90.0:
            raise ValueError(
                "lidar.elevation_min_deg / elevation_max_deg must satisfy -90 < min <= max < 90, got "
                f"{self.elevation_min_deg}, {self.elevation_max_deg}"
            )
        if not 0.0 < self.azimuth_resolution_deg <= 45.0:
            raise ValueError(f"lidar.azimuth_resolution_deg must be in (0, 45], got {self.azimuth_resolution_deg}")
        if self.range_max <= 0.0:
            raise ValueError(f"lidar.range_max must be > 0, got {self.range_max}")
        if self.range_noise_std < 0.0:
            raise ValueError(f"lidar.range_noise_std must be >= 0, got {self.range_noise_std}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lidar.dropout must be in [0, 1), got {self.dropout}")
        if self.mount_height <= 0.0:
            raise ValueError(f"lidar.mount_height must be > 0, got {self.mount_height}")

    @property
    def num_columns(self) -> int:
        """Firings per revolution."""
        return max(1, int(round(360.0 / self.azimuth_resolution_deg)))


def _infra_lidar() -> LidarConfig:
    return LidarConfig(num_beams=32, elevation_min_deg=-40.0, elevation_max_deg=2.0, mount_height=5.0)


@dataclass(kw_only=True)
class TrafficConfig:
    """How many road users a scenario holds (before the connected vehicles are added)."""

    num_vehicles: int = 18
    """Motor vehicles (car, van, truck, bus, ...) besides the connected ones."""
    num_cyclists: int = 3
    """Bicycles, scooters and motorcycles."""
    num_pedestrians: int = 8
    """Pedestrians on the sidewalks; some of them cross the road."""
    num_barriers: int = 2
    """Static road-works barriers at the kerb."""
    crossing_fraction: float = 0.5
    """Share of pedestrians whose walk crosses the road."""
    speed_limit: float = 12.0
    """Typical desired speed of cars (m/s); each vehicle draws its own around it."""

    def __post_init__(self) -> None:
        for name in ("num_vehicles", "num_cyclists", "num_pedestrians", "num_barriers"):
            if getattr(self, name) < 0:
                raise ValueError(f"traffic.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.crossing_fraction <= 1.0:
            raise ValueError(f"traffic.crossing_fraction must be in [0, 1], got {self.crossing_fraction}")
        if not 1.0 <= self.speed_limit <= 40.0:
            raise ValueError(f"traffic.speed_limit must be in [1, 40] m/s, got {self.speed_limit}")


@dataclass(kw_only=True)
class SynthConfig:
    """The synthetic dataset: scenarios, agents, traffic and sensors."""

    seed: int = 0
    """Master seed; scenario k's randomness depends only on (seed, k)."""
    num_scenarios: int = 8
    """Scenarios to generate (one folder each)."""
    num_frames: int = 100
    """Frames per scenario, sampled at ``rate_hz``."""
    rate_hz: float = 10.0
    """Sampling rate of the frames (V2XPnP-Seq records at 10 Hz)."""
    num_cavs: int = 2
    """Connected vehicles per scenario (positive agent ids)."""
    num_infra: int = 2
    """Infrastructure sensors per scenario (negative agent ids)."""
    layouts: list[str] = field(default_factory=lambda: list(LAYOUTS))
    """Road layouts to draw from, each scenario picks one by its seed: ``intersection``, ``corridor``."""
    label_radius: float = 120.0
    """Objects within this distance (metres) of an agent are listed in its frame's YAML."""
    warmup_s: float = 2.0
    """Simulated seconds before the first recorded frame, so traffic is already flowing."""
    vehicle_lidar: LidarConfig = field(default_factory=LidarConfig)
    """LiDAR of the connected vehicles."""
    infra_lidar: LidarConfig = field(default_factory=_infra_lidar)
    """LiDAR of the infrastructure sensors (mounted higher, looking further down)."""
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    """Road users per scenario."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"synth.seed must be >= 0, got {self.seed}")
        if self.num_scenarios < 1:
            raise ValueError(f"synth.num_scenarios must be >= 1, got {self.num_scenarios}")
        if self.num_frames < 1:
            raise ValueError(f"synth.num_frames must be >= 1, got {self.num_frames}")
        if not 0.0 < self.rate_hz <= 100.0:
            raise ValueError(f"synth.rate_hz must be in (0, 100], got {self.rate_hz}")
        if self.num_cavs < 0 or self.num_infra < 0 or self.num_cavs + self.num_infra < 1:
            raise ValueError(
                f"synth.num_cavs and synth.num_infra must be >= 0 with at least one agent, got "
                f"{self.num_cavs}, {self.num_infra}"
            )
        if self.num_infra > 4:
            raise ValueError(f"synth.num_infra must be <= 4 (one per intersection corner), got {self.num_infra}")
        if not self.layouts or any(name not in LAYOUTS for name in self.layouts):
            raise ValueError(f"synth.layouts must be a non-empty subset of {list(LAYOUTS)}, got {list(self.layouts)}")
        if self.label_radius <= 0.0:
            raise ValueError(f"synth.label_radius must be > 0, got {self.label_radius}")
        if self.warmup_s < 0.0:
            raise ValueError(f"synth.warmup_s must be >= 0, got {self.warmup_s}")
