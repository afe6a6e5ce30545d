"""The imitation gap: how often the expert's labels change when it may only use what the camera shows.

The privileged expert drives (no noise). At every state a second expert with the same settings but
`perception=camera` (road users inside the camera's footprint, predicted from what frames show) is
queried too; a step disagrees where the two labels differ by more than `accel_threshold` or
`steer_threshold` (normalised units: 0.2 of a ±6 m/s² range is 1.2 m/s²). A label that depends on
something the camera cannot show is noise to a student that only sees the frames, so this is the
tool for choosing a camera: the smaller the gap, the more of the expert a student can learn.
"""
from __future__ import annotations

import math

import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from driving.config import check_episodes, typed_overrides
from driving.envpool import build_env, probe_env, run_in_workers, worker_setup
from driving.errors import UserError
from driving.evaluate import EVAL_SEED, check_scenarios
from driving.rollout import ExpertActor, play_episode
from sim import CameraConfig, DrivingEnv, Expert, ExpertConfig, get_scenario


@dataclass
class GapConfig:
    scenario: str = "highway"  # one name, or several separated by commas
    episodes: int = 10  # per scenario
    seed: int = EVAL_SEED  # episode i uses seed + i (the evaluation's seeds)
    max_steps: Optional[int] = None  # None: the scenario's own episode length
    workers: int = 0  # processes; 0 = one per core
    accel_threshold: float = 0.2  # normalised units
    steer_threshold: float = 0.05
    camera: dict[str, Any] = field(default_factory=dict)  # CameraConfig overrides on each scenario's own camera
    expert: dict[str, Any] = field(default_factory=dict)  # ExpertConfig overrides (both experts)
    env: dict[str, Any] = field(default_factory=dict)  # highway-env config overrides

    def __post_init__(self):
        check_episodes("", self.episodes, self.seed, self.workers, self.max_steps)
        self.camera = typed_overrides(CameraConfig, self.camera, "camera")  # a free dict: typed here
        if "perception" in self.expert:
            raise UserError("expert.perception is gap's own: it drives the privileged expert and queries the camera "
                            "one beside it; drop expert.perception")
        if not (self.accel_threshold > 0 and self.steer_threshold > 0
                and math.isfinite(self.accel_threshold) and math.isfinite(self.steer_threshold)):
            raise ValueError("accel_threshold and steer_threshold must be numbers > 0 (normalised units), got "
                             f"{self.accel_threshold} and {self.steer_threshold}")

    @property
    def scenarios(self) -> list[str]:
        return [s.strip() for s in self.scenario.split(",") if s.strip()]

    def camera_for(self, scenario: str) -> CameraConfig:
        return get_scenario(scenario).camera_config(self.camera)


def _experts(cfg: GapConfig, scenario: str) -> tuple[DrivingEnv, Expert]:
    """The env driven by the privileged expert, and the camera-limited expert queried beside it."""
    camera = cfg.camera_for(scenario)
    env = build_env(scenario, camera, cfg.max_steps, env=cfg.env,
                    expert={**cfg.expert, "perception": "privileged"})
    fair = Expert(ExpertConfig.from_dict({**env.scenario.expert, **cfg.expert, "perception": "camera"}),
                  env.scenario.action, camera=camera)
    return env, fair


def gap_episode(cfg: GapConfig, scenario: str, seed: int) -> dict:
    """Labels of both experts along one privileged-expert episode: (T, 2) arrays."""
    env, fair = _experts(cfg, scenario)
    camera = []

    def query(obs, info):  # every state visited; the first right after the reset
        if info["step"] == 0:
            fair.reset(env.core)
        camera.append(fair.act(env.core))

    try:
        rec = play_episode(env, ExpertActor(), seed, on_state=query)
    finally:
        env.close()
    n = len(rec["actions"])
    return {"scenario": scenario, "seed": seed, "privileged": rec["expert_actions"],
            "camera": np.array(camera[:n]), "crashed": bool(rec["steps"]["crashed"][-1])}


def _job(args) -> dict:
    return gap_episode(*args)


def summarise(cfg: GapConfig, episodes: list[dict]) -> dict:
    def shares(eps):  # every scenario has >= 1 episode (GapConfig.episodes >= 1)
        diff = np.abs(np.concatenate([e["privileged"] - e["camera"] for e in eps]))
        return {"steps": int(len(diff)),
                "accel_disagreement": float((diff[:, 1] > cfg.accel_threshold).mean()),
                "steer_disagreement": float((diff[:, 0] > cfg.steer_threshold).mean()),
                "accel_mean_abs_diff": float(diff[:, 1].mean()),
                "steer_mean_abs_diff": float(diff[:, 0].mean()),
                "episodes": len(eps), "privileged_crashes": int(sum(e["crashed"] for e in eps))}

    def footprint(name):
        ahead, behind, half = cfg.camera_for(name).footprint
        return {"ahead": ahead, "behind": behind, "half_width": half}

    return {**shares(episodes),
            "scenarios": {s: {**shares([e for e in episodes if e["scenario"] == s]), "footprint_m": footprint(s)}
                          for s in cfg.scenarios},
            "thresholds": {"accel": cfg.accel_threshold, "steer": cfg.steer_threshold},
            "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1]}


def validate(cfg: GapConfig) -> None:
    """Every user error in the parent, before any worker starts: one line each."""
    check_scenarios(cfg.scenarios)  # none, unknown, or one listed twice
    for name in cfg.scenarios:
        sc = get_scenario(name)
        try:
            ExpertConfig.from_dict({**sc.expert, **cfg.expert})
            sc.highway_config(cfg.env)
            camera = cfg.camera_for(name)
        except ValueError as e:
            raise UserError(str(e)) from None
        probe_env(name, camera, cfg.max_steps, cfg.env, cfg.expert)  # values a worker would choke on


def measure_gap(cfg: GapConfig, progress: bool = True) -> dict:
    validate(cfg)
    jobs = [(cfg, s, cfg.seed + i) for s in cfg.scenarios for i in range(cfg.episodes)]
    workers = min(cfg.workers or os.cpu_count() or 1, len(jobs))
    bar = tqdm(total=len(jobs), unit="ep", desc="gap", disable=not progress, dynamic_ncols=True)
    episodes = []
    if workers <= 1:
        for j in jobs:
            episodes.append(_job(j))
            bar.update(1)
    else:
        for ep in run_in_workers(_job, jobs, workers, "gap", worker_setup, ordered=True):
            episodes.append(ep)
            bar.update(1)
    bar.close()
    return summarise(cfg, episodes)


def format_gap(result: dict) -> str:
    lines = [f"{'scenario':15} {'steps':>6} {'accel':>7} {'steer':>7}   (share of steps whose labels differ)"
             "   camera footprint"]
    for name, r in result["scenarios"].items():
        f = r["footprint_m"]
        lines.append(f"{name:15} {r['steps']:>6} {100 * r['accel_disagreement']:>6.1f}% "
                     f"{100 * r['steer_disagreement']:>6.1f}%   {f['ahead']:.0f} m ahead, {f['behind']:.0f} m behind, "
                     f"±{f['half_width']:.0f} m")
    lines.append(f"label disagreement: accel {100 * result['accel_disagreement']:.1f}% "
                 f"steer {100 * result['steer_disagreement']:.1f}%")
    return "\n".join(lines)
