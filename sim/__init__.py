"""The world: highway-env scenarios, a camera, a privileged expert, one gymnasium env.

Never imports torch or driving/. Importing it registers the env id `sim/Driving-v0`.
"""
import gymnasium

from sim.actions import ActionSpec
from sim.camera import BlankFrameError, Camera, CameraConfig
from sim.env import DrivingEnv
from sim.expert import Expert, ExpertConfig
from sim.scenarios import SCENARIOS, Scenario, UnknownScenarioError, get_scenario

ENV_ID = "sim/Driving-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="sim.env:DrivingEnv")

__all__ = ["ENV_ID", "SCENARIOS", "ActionSpec", "BlankFrameError", "Camera", "CameraConfig",
           "DrivingEnv", "Expert", "ExpertConfig", "Scenario", "UnknownScenarioError", "get_scenario"]
