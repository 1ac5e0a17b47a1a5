"""Synthetic V2X scenes in the OpenCOOD layout: roads, kinematic traffic, connected vehicles,
infrastructure sensors and ray-cast LiDAR. Run ``python -m trainer.data.synth --help``."""

from trainer.data.synth.classes import OBJ_TYPES
from trainer.data.synth.config import LidarConfig, SynthConfig, TrafficConfig
from trainer.data.synth.generate import generate_dataset
from trainer.data.synth.scenario import scenario_name, simulate_scenario

__all__ = ["OBJ_TYPES", "LidarConfig", "SynthConfig", "TrafficConfig", "generate_dataset", "scenario_name",
           "simulate_scenario"]
