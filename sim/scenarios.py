"""Named scenarios: a highway-env id plus a complete, explicit config, and the fixes that make each
of them work with 2-D continuous control [steer, accel].

highway-env scenarios compute rewards from the discrete meta-action (`action in [0, 2]`), which
raises on a 2-D array; and their stock observation types (pandas-backed kinematics, occupancy grids)
cost more than the simulation. `make_core_env` therefore builds a subclass of the stock env whose
reward, reward-info and observation are inert: this stack computes its own camera frames and metrics.
Its simulation loop calls `substep_callback` (if set) after every simulation substep, and its road
is `sim.fast_road`'s (the stock results, faster; from before the reset places traffic) unless the
config sets `fast_road: false`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from functools import lru_cache

import gymnasium
import numpy as np

from sim.actions import ActionSpec
from sim.camera import CameraConfig


@dataclass(frozen=True)
class Scenario:
    name: str
    env_id: str
    description: str
    env_config: dict
    simulation_frequency: int
    policy_frequency: int
    max_steps: int
    action: ActionSpec
    expert: dict = field(default_factory=dict)  # ExpertConfig overrides for this scenario
    # CameraConfig overrides for this scenario: its default camera, chosen with `driving gap` and
    # the fair expert's driving (scripts/expert_quality.py); a user's camera.* keys go on top
    camera: dict = field(default_factory=dict)

    @property
    def dt(self) -> float:
        return 1.0 / self.policy_frequency

    def camera_config(self, overrides: dict | None = None) -> CameraConfig:
        """This scenario's camera with `overrides` (CameraConfig fields) on top."""
        return CameraConfig(**{**self.camera, **dict(overrides or {})})

    def highway_config(self, overrides: dict | None = None) -> dict:
        """The full config handed to highway-env: ours, then user overrides (validated keys)."""
        cfg = copy.deepcopy(self.env_config)
        cfg.update(
            simulation_frequency=self.simulation_frequency,
            policy_frequency=self.policy_frequency,
            duration=self.max_steps / self.policy_frequency,
            action=self.action.highway_action_config(),
            offscreen_rendering=True,
            fast_road=True,
            # Off-road never ends an episode here: metrics count off-road time instead.
            offroad_terminal=False,
        )
        for key, value in (overrides or {}).items():
            if key in _FIXED:
                raise ValueError(f"env.{key} is fixed by scenario {self.name!r}: {_FIXED[key]}")
            if key == "destination" and "destination" in self.expert:
                raise ValueError(f"env.destination does not steer the ego of scenario {self.name!r} (highway-env "
                                 "plans a route only for its own vehicle classes): the route is the expert's, "
                                 "use expert.destination")
            if key not in _stock_config_keys(self.env_id) | _OWN_KEYS:  # a key it does not read would do nothing
                raise ValueError(
                    f"unknown highway-env config key {key!r} for scenario {self.name!r} "
                    f"({self.env_id}); known keys: {sorted(_stock_config_keys(self.env_id) | _OWN_KEYS)}"
                )
            if key in _COUNTS and not (isinstance(value, int) and not isinstance(value, bool)
                                       and value >= _COUNTS[key]):
                raise ValueError(f"env.{key}={value!r} must be a whole number >= {_COUNTS[key]}")
            if key in _COUNTS and value > _MAX_COUNT:
                raise ValueError(f"env.{key}={value} is more than {_MAX_COUNT}: every step is quadratic in the "
                                 "vehicles (50 run at ~22 steps/s), and 100,000 never finished placing them")
            if key == "vehicles_density" and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                                  and math.isfinite(value) and value > 0):
                raise ValueError(f"env.vehicles_density={value!r} must be a number > 0 (1 is highway-env's "
                                 "spacing; smaller spreads the traffic out)")
            cfg[key] = value
        return cfg

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "env_id": self.env_id,
            "description": self.description,
            "simulation_frequency": self.simulation_frequency,
            "policy_frequency": self.policy_frequency,
            "max_steps": self.max_steps,
            "action": self.action.as_dict(),
            "expert": dict(self.expert),
            "camera": dict(self.camera),
            "env_config": copy.deepcopy(self.env_config),
        }


_HIGHWAY_ACTION = ActionSpec(steer_range=0.15, accel_range=6.0)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            name="highway",
            env_id="highway-fast-v0",
            description="3-lane straight highway, 20 vehicles; traffic-traffic collisions off (fast)",
            env_config={
                "lanes_count": 3,
                "vehicles_count": 20,
                "vehicles_density": 1.0,
                "ego_spacing": 1.5,
                "initial_lane_id": None,
                "controlled_vehicles": 1,
            },
            simulation_frequency=10,
            policy_frequency=5,
            max_steps=200,
            action=_HIGHWAY_ACTION,
            expert={"target_speed": 30.0, "lane_changes": True},
        ),
        Scenario(
            name="highway-dense",
            env_id="highway-v0",
            description="4-lane straight highway, 50 vehicles, full collision checks",
            env_config={
                "lanes_count": 4,
                "vehicles_count": 50,
                "vehicles_density": 1.0,
                "ego_spacing": 2.0,
                "initial_lane_id": None,
                "controlled_vehicles": 1,
            },
            simulation_frequency=10,
            policy_frequency=5,
            max_steps=200,
            action=_HIGHWAY_ACTION,
            expert={"target_speed": 30.0, "lane_changes": True},
        ),
        Scenario(
            name="merge",
            env_id="merge-v0",
            description="2-lane highway with an on-ramp merging into the right lane; ends at x=370 m",
            env_config={},  # merge-v0 places its own traffic: it has no vehicles_count or lanes_count
            simulation_frequency=15,
            policy_frequency=5,
            max_steps=100,
            action=_HIGHWAY_ACTION,
            expert={"target_speed": 30.0, "lane_changes": True},
        ),
        Scenario(
            name="roundabout",
            env_id="roundabout-v0",
            description="2-lane roundabout (radius 20 m), ego enters from the south and exits north",
            env_config={"incoming_vehicle_destination": None},
            simulation_frequency=15,
            policy_frequency=5,
            max_steps=75,
            action=ActionSpec(steer_range=0.6, accel_range=6.0),
            # conflict_radius 3 m: on the 4 m-wide ring a car in the other lane passes 3.5 m from the
            # entry path where it blends onto the ring, which 3.5 m counted as in our way
            expert={"target_speed": 12.0, "lane_changes": False, "destination": "nxs",
                    "yield_to_crossing": True, "max_lateral_accel": 4.0, "conflict_radius": 3.0},
        ),
        Scenario(
            name="racetrack",
            env_id="racetrack-v0",
            description="closed 2-lane circuit with tight curves and one other vehicle",
            env_config={"other_vehicles": 1, "speed_limit": 10.0, "terminate_off_road": False},
            simulation_frequency=15,
            policy_frequency=5,
            max_steps=200,
            action=ActionSpec(steer_range=0.6, accel_range=6.0),
            expert={"target_speed": 12.0, "lane_changes": True, "max_lateral_accel": 7.0},
        ),
        Scenario(
            name="intersection",
            env_id="intersection-v0",
            description="4-way intersection with cross traffic; ego turns left (destination o1)",
            env_config={"destination": "o1", "initial_vehicle_count": 10, "spawn_probability": 0.6,
                        "other_vehicles_type": "sim.traffic.IntersectionIDMVehicle"},
            simulation_frequency=15,
            policy_frequency=5,
            max_steps=75,
            action=ActionSpec(steer_range=0.8, accel_range=6.0),
            expert={"target_speed": 9.0, "lane_changes": False, "destination": "o1",
                    "yield_to_crossing": True},
            # +-48 m sideways: a car crossing at 8 m/s must be in the frame about 5 s before it
            # reaches the junction (the default +-32 m: 3.5 s, less than the ego needs to clear it
            # from a stop); 72 m ahead is 8 s at the scenario's 9 m/s. 96x96 px: 1.125x the
            # default's pixels, where 128x96 (as far ahead as the default) drives the same
            camera={"height": 96, "width": 96},
        ),
    ]
}


class UnknownScenarioError(ValueError):
    pass


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenarioError(
            f"unknown scenario {name!r}; known scenarios: {', '.join(SCENARIOS)}"
        ) from None


@lru_cache(maxsize=None)
def _stock_class(env_id: str):
    import highway_env  # noqa: F401  (registers the ids)

    return gymnasium.envs.registration.load_env_creator(gymnasium.spec(env_id).entry_point)


# highway-env keys the scenario sets and the rest of the stack relies on (the metrics' time step, the
# expert's and the policy's action ranges, episode ends): an env.* override would change the world
# under them without their knowing.
_OWN_KEYS = frozenset({"fast_road"})  # read by this stack's env classes (sim/fast_road.py), not highway-env's
_FIXED = {
    "simulation_frequency": "the metrics, the expert and recorded datasets assume its timing; a new timing "
                            "is a new scenario (sim/scenarios.py)",
    "policy_frequency": "the metrics, the expert and recorded datasets assume its timing; a new timing is a "
                        "new scenario (sim/scenarios.py)",
    "duration": "use max_steps= for the episode length",
    "action": "the action space is steering and acceleration in the scenario's ranges (its ActionSpec)",
    "offroad_terminal": "off-road never ends an episode; the metrics count off-road time",
    "controlled_vehicles": "the stack drives one ego; highway-env's others would stand unsteered, and a "
                           "crash of theirs ends the ego's episode",
}

# highway-env's counts, least values it builds a world with: with fewer lanes than one its road
# generator fails deep in numpy, and a negative count behaves as zero without saying so.
_COUNTS = {"lanes_count": 1, "vehicles_count": 0, "initial_vehicle_count": 0, "other_vehicles": 0}
_MAX_COUNT = 1000


@lru_cache(maxsize=None)
def _stock_config_keys(env_id: str) -> frozenset:
    return frozenset(_stock_class(env_id).default_config())


@lru_cache(maxsize=None)
def _continuous_class(env_id: str):
    """The stock env with reward, reward-info and observation made inert (see module doc)."""
    from highway_env.envs.common.observation import ObservationType

    from sim.fast_road import install as install_fast_road

    stock = _stock_class(env_id)

    class _NullObservation(ObservationType):
        def space(self):
            return gymnasium.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)

        def observe(self):
            return np.zeros(1, dtype=np.float32)

    def define_spaces(self):
        stock.define_spaces(self)
        self.observation_type = _NullObservation(self)
        self.observation_space = self.observation_type.space()

    def _reset(self):
        stock._reset(self)
        if self.config["fast_road"]:
            install_fast_road(self.road)

    def _make_vehicles(self, *args, **kwargs):
        # Intersection's reset runs 45 substeps of traffic before the ego is placed: on the fast
        # road too (a sixth of an intersection episode's simulation time was this warm-up).
        if self.config["fast_road"]:
            install_fast_road(self.road)
        return stock._make_vehicles(self, *args, **kwargs)

    def _simulate(self, action=None):
        # highway-env's own loop (AbstractEnv._simulate) minus its pygame viewer hook, plus a
        # callback after every simulation substep so that videos can show every substep.
        frames = int(self.config["simulation_frequency"] // self.config["policy_frequency"])
        for _ in range(frames):
            if action is not None and not self.config["manual_control"] and self.steps % frames == 0:
                self.action_type.act(action)
            self.road.act()
            self.road.step(1 / self.config["simulation_frequency"])
            self.steps += 1
            callback = getattr(self, "substep_callback", None)
            if callback is not None:
                callback()
        self.enable_auto_render = False

    return type(
        f"Continuous{stock.__name__}",
        (stock,),
        {
            "_reset": _reset,
            **({"_make_vehicles": _make_vehicles} if hasattr(stock, "_make_vehicles") else {}),
            "_simulate": _simulate,
            "define_spaces": define_spaces,
            "_reward": lambda self, action: 0.0,
            "_rewards": lambda self, action: {},
            "_info": lambda self, obs, action=None: {},
        },
    )


def make_core_env(scenario: Scenario, overrides: dict | None = None, render_mode: str | None = None):
    """A highway-env env (not wrapped) for `scenario`, ready for 2-D continuous actions."""
    return _continuous_class(scenario.env_id)(config=scenario.highway_config(overrides),
                                              render_mode=render_mode)
