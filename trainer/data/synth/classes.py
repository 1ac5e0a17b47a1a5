"""Object classes (V2XPnP taxonomy names) with realistic sizes and motion limits."""

from __future__ import annotations

from dataclasses import dataclass

OBJ_TYPES = ["car", "pedestrian", "scooter", "motorcycle", "bicycle", "truck", "van", "concrete truck", "bus", "barrier"]
"""The 10 V2XPnP object types, spelled as they appear in ``obj_type``."""


@dataclass(frozen=True)
class ClassSpec:
    """Size ranges (full l / w / h, metres) and motion limits of one object type."""

    name: str
    length: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    role: str
    """"vehicle" (drives lanes), "cyclist" (rides at the kerb), "pedestrian" or "static"."""
    speed_factor: tuple[float, float] = (0.8, 1.1)
    """Desired speed as a factor of the speed limit (pedestrians: m/s)."""
    max_accel: float = 2.5
    comfort_brake: float = 3.0
    max_brake: float = 8.0
    max_steer_deg: float = 35.0
    reflectivity: float = 0.5


CLASS_SPECS = {spec.name: spec for spec in [
    ClassSpec(name="car", length=(4.2, 4.9), width=(1.75, 1.95), height=(1.4, 1.7), role="vehicle"),
    ClassSpec(name="van", length=(4.9, 5.6), width=(1.95, 2.1), height=(1.9, 2.5), role="vehicle",
              max_accel=2.0, reflectivity=0.55),
    ClassSpec(name="truck", length=(7.0, 9.5), width=(2.4, 2.55), height=(3.0, 3.6), role="vehicle",
              speed_factor=(0.7, 0.95), max_accel=1.3, comfort_brake=2.5, max_brake=6.0, reflectivity=0.45),
    ClassSpec(name="concrete truck", length=(8.0, 9.5), width=(2.45, 2.55), height=(3.5, 3.9), role="vehicle",
              speed_factor=(0.65, 0.9), max_accel=1.0, comfort_brake=2.0, max_brake=5.5, reflectivity=0.4),
    ClassSpec(name="bus", length=(11.0, 12.5), width=(2.5, 2.6), height=(3.0, 3.4), role="vehicle",
              speed_factor=(0.65, 0.9), max_accel=1.2, comfort_brake=2.0, max_brake=5.5, reflectivity=0.5),
    ClassSpec(name="motorcycle", length=(1.9, 2.3), width=(0.7, 0.9), height=(1.3, 1.6), role="cyclist",
              speed_factor=(0.6, 0.9), max_accel=3.0, reflectivity=0.35),
    ClassSpec(name="scooter", length=(1.6, 1.9), width=(0.6, 0.75), height=(1.3, 1.6), role="cyclist",
              speed_factor=(0.35, 0.5), max_accel=1.8, reflectivity=0.3),
    ClassSpec(name="bicycle", length=(1.6, 1.9), width=(0.55, 0.7), height=(1.5, 1.8), role="cyclist",
              speed_factor=(0.3, 0.45), max_accel=1.2, comfort_brake=2.0, max_brake=4.0, reflectivity=0.25),
    ClassSpec(name="pedestrian", length=(0.45, 0.65), width=(0.5, 0.7), height=(1.55, 1.9), role="pedestrian",
              speed_factor=(1.0, 1.6), max_accel=1.0, comfort_brake=1.5, max_brake=3.0, max_steer_deg=70.0,
              reflectivity=0.2),
    ClassSpec(name="barrier", length=(1.8, 2.5), width=(0.4, 0.6), height=(0.9, 1.1), role="static",
              reflectivity=0.7),
]}

VEHICLE_MIX = {"car": 0.66, "van": 0.14, "truck": 0.08, "concrete truck": 0.03, "bus": 0.09}
"""Share of each type among the lane vehicles."""
CYCLIST_MIX = {"bicycle": 0.5, "scooter": 0.25, "motorcycle": 0.25}
"""Share of each type among the kerb-side riders."""
