"""DrivingEnv: the world as one gymnasium.Env.

obs    = {"camera": (stack, H, W[, 3]) uint8, "speed": ego speed in m/s}
action = [steer, accel] in [-1, 1]  (mapped to physical units by the scenario's ActionSpec)
reward = metres of progress along the road during the step (a convenience; evaluation uses metrics)
info   = the expert's action for the returned observation (the BC label) and the per-step facts the
         metrics need: crashed, on_road, on_route (sim/route.py; where a scenario has a route), progress,
         lane_offset, speed, heading, x, y, time, and on the step the ego crashes `collision`: what it
         hit (sim.metrics.COLLISION_KINDS).
An episode terminates on a crash or when the scenario itself ends (merge passed, intersection
crossed) and is truncated at the scenario's max_steps. Leaving the road does not end it.
"""
from __future__ import annotations

from dataclasses import asdict

import gymnasium
import numpy as np
from gymnasium import spaces

from sim.camera import Camera, CameraConfig
from sim.expert import Expert, ExpertConfig
from sim.route import Route, leader
from sim.scenarios import Scenario, get_scenario, make_core_env

MAX_SPEED = 40.0  # highway-env's kinematic limit, m/s
STOPPED_SPEED = 0.5  # m/s: a vehicle slower than this before the collision was standing


class DrivingEnv(gymnasium.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(
        self,
        scenario: str | Scenario = "highway",
        camera: CameraConfig | dict | None = None,
        expert: bool | dict = True,
        env_overrides: dict | None = None,
        render_mode: str | None = None,
        scene_camera: CameraConfig | dict | None = None,
    ):
        self.scenario = get_scenario(scenario) if isinstance(scenario, str) else scenario
        # a dict (or nothing) is overrides on the scenario's own camera
        cam_cfg = camera if isinstance(camera, CameraConfig) else self.scenario.camera_config(camera)
        self.camera = Camera(cam_cfg)
        self.core = make_core_env(self.scenario, env_overrides, render_mode=render_mode)
        self.expert: Expert | None = None
        task = {**self.scenario.expert, **(expert if isinstance(expert, dict) else {})}
        if expert is not False:
            self.expert = Expert(ExpertConfig.from_dict(task), self.scenario.action, camera=cam_cfg)
        self.destination = task.get("destination")  # the route the scenario asks for (sim/route.py)
        self._route: Route | None = None
        self.observation_space = spaces.Dict({
            "camera": spaces.Box(0, 255, shape=cam_cfg.obs_shape, dtype=np.uint8),
            "speed": spaces.Box(-MAX_SPEED, MAX_SPEED, shape=(), dtype=np.float32),
        })
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.scenario.policy_frequency}
        self._step = 0
        self._progress = 0.0
        self._frames = None
        # Optional second camera rendered after every simulation substep (for videos): its frames
        # of the last step are in info["scene_frames"], (substeps, H, W[, 3]).
        self.scene_camera = None
        self._scene: list = []
        if scene_camera is not None:
            cfg = scene_camera if isinstance(scene_camera, CameraConfig) else CameraConfig(**scene_camera)
            self.scene_camera = Camera(cfg)
            self.core.unwrapped.substep_callback = self._render_scene

    def _render_scene(self) -> None:
        self._scene.append(self.scene_camera.render(self.road, self.ego))

    @property
    def road(self):
        return self.core.unwrapped.road

    @property
    def ego(self):
        return self.core.unwrapped.vehicle

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # highway-env draws traffic from its own generator: seed it from ours so that an unseeded
        # reset after a seeded one is still reproducible.
        core_seed = int(self.np_random.integers(0, 2**31 - 1)) if seed is None else int(seed)
        self.core.reset(seed=core_seed)
        self._step = 0
        self._progress = 0.0
        self._collision = ""
        if self.expert is not None:
            self.expert.reset(self.core)  # first: it names an unknown destination in one line
        self._route = Route(self.road.network, self.ego.lane_index, self.destination) if self.destination else None
        self._frames = self.camera.reset(self.road, self.ego)
        self._scene = []
        if self.scene_camera is not None:
            self._render_scene()
        return self._obs(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"action must be [steer, accel] with shape (2,), got shape {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action must be finite, got {action}")
        ego = self.ego
        before = ego.position.copy()
        # the other road users' state before the step: what the ego hits, if it does, is judged by it
        others = None if ego.crashed else [(v, bool(v.crashed), float(v.speed))
                                           for v in self.road.vehicles if v is not ego]
        objects = [(o, bool(getattr(o, "crashed", False))) for o in self.road.objects]
        ego_speed = float(ego.speed)
        self._scene = []
        lane = self.road.network.get_lane(ego.lane_index) if ego.lane_index else None
        _, _, terminated, _, _ = self.core.step(self.scenario.action.to_highway(action))
        ego = self.ego
        moved = ego.position - before
        if lane is not None:
            heading = lane.heading_at(lane.local_coordinates(before)[0])
            ds = float(moved @ np.array([np.cos(heading), np.sin(heading)]))
        else:
            ds = float(np.linalg.norm(moved))
        self._progress += ds
        self._step += 1
        truncated = self._step >= self.scenario.max_steps and not terminated
        self._frames = self.camera.step(self.road, ego)
        self._collision = self._collision_kind(others, objects, ego_speed) if others is not None and ego.crashed else ""
        return self._obs(), ds, bool(terminated), bool(truncated), self._info()

    def _collision_kind(self, others: list, objects: list, ego_speed: float) -> str:
        """What the ego, crashed in this step, hit (sim.metrics.COLLISION_KINDS), judged by the other's
        state before the step: a crashed vehicle that overlaps it; else an object that was hit in this
        step; else the nearest crashed vehicle still within reach of the ego (the impact pushes the two
        apart within the step); else "object". A wreck far away is never what the ego hit."""
        ego = self.ego
        dt = 1.0 / self.scenario.policy_frequency
        near = []
        for v, was, speed in others:
            if not v.crashed:
                continue
            touching = bool(ego._is_colliding(v, 0.0)[0])
            dist = float(np.linalg.norm(v.position - ego.position))
            reach = (ego.diagonal + v.diagonal) / 2 + (abs(ego_speed) + abs(speed)) * dt
            if touching or dist <= reach:
                near.append((not touching, dist, was, speed))
        in_contact = [h for h in near if not h[0]]
        if not in_contact and any(o.crashed and not was for o, was in objects):
            return "object"
        if not near:
            return "object"
        _, _, was_crashed, speed = min(near, key=lambda h: h[:2])
        return "wreck" if was_crashed else "stopped" if abs(speed) < STOPPED_SPEED else "moving"

    def _obs(self) -> dict:
        return {"camera": self._frames,
                "speed": np.array(np.clip(self.ego.speed, -MAX_SPEED, MAX_SPEED), dtype=np.float32)}

    def _info(self) -> dict:
        ego = self.ego
        lane_offset = 0.0
        if ego.lane_index is not None:
            lane_offset = float(self.road.network.get_lane(ego.lane_index).local_coordinates(ego.position)[1])
        info = {
            "step": self._step,
            "time": self._step / self.scenario.policy_frequency,
            "crashed": bool(ego.crashed),
            "on_road": bool(ego.on_road),
            "progress": float(self._progress),
            "lane_offset": lane_offset,
            "speed": float(ego.speed),
            "heading": float(ego.heading),
            "x": float(ego.position[0]),
            "y": float(ego.position[1]),
            "lane": "/".join(str(x) for x in ego.lane_index) if ego.lane_index else "",
            **self._leader(),
            "collision": self._collision,
        }
        if self._route is not None:  # only where the scenario names a destination
            info["on_route"] = self._route.on(ego.position, ego.heading)
        if self.scene_camera is not None:
            info["scene_frames"] = np.stack(self._scene)
        if self.expert is not None:
            info["expert_action"] = self.expert.act(self.core).astype(np.float32)
            info["expert_saturated"] = self.expert.saturated
            info["expert_plan"] = self.expert.plan_lane
        return info

    def _leader(self) -> dict:
        """Bumper-to-bumper gap (m) to the vehicle ahead in the ego's lane, or in the lanes that continue
        it (sim.route.leader), and the speed at which it closes (m/s, > 0 when approaching); inf and 0
        when there is none."""
        ego = self.ego
        front = leader(self.road, ego, self._route)
        if front is None:
            return {"gap_ahead": float("inf"), "closing_speed": 0.0}
        between = np.asarray(front.position, dtype=np.float64) - ego.position
        dist = float(np.linalg.norm(between))
        u = between / dist if dist > 1e-9 else np.array([np.cos(ego.heading), np.sin(ego.heading)])
        gap = dist - (getattr(front, "LENGTH", 5.0) + getattr(ego, "LENGTH", 5.0)) / 2
        return {"gap_ahead": gap, "closing_speed": float((ego.velocity - front.velocity) @ u)}

    def render(self):
        if self.render_mode == "rgb_array":
            return self.core.render()
        return None

    def close(self):
        self.core.close()

    def spec_dict(self) -> dict:
        """Everything a consumer needs to interpret observations and actions."""
        return {"scenario": self.scenario.as_dict(), "camera": asdict(self.camera.config),
                "action": self.scenario.action.as_dict(),
                "expert": self.expert.config.as_dict() if self.expert else None}
