"""Run the stock and the fast road side by side and compare everything they produce.

`lockstep` steps two DrivingEnvs on the same seed with the same actions, one with highway-env's
stock road and one with sim.fast_road, and compares after every simulation substep: the vehicle
list (class, lane, crashed), every vehicle's position, heading and speed; and after every step the
camera frames (bytes), the expert's label, rewards and episode ends. `python
scripts/check_fast_road.py` runs it over many seeds of every scenario.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.env import DrivingEnv

DRIVERS = ("expert", "noisy", "random")


@dataclass
class LockstepReport:
    scenario: str
    seed: int
    driver: str
    steps: int = 0
    substeps: int = 0
    vehicle_states: int = 0  # (vehicle, substep) pairs compared
    crashes: int = 0  # steps that ended with the ego crashed
    max_abs_diff: float = 0.0  # over positions, headings and speeds
    mismatches: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.mismatches


def _state(road) -> list[tuple]:
    return [(type(v).__name__, v.lane_index, bool(v.crashed), v.position.copy(), float(v.heading),
             float(v.speed)) for v in road.vehicles]


def _driver_action(driver: str, expert_action: np.ndarray, rng: np.random.Generator, prev: np.ndarray):
    if driver == "expert":
        return expert_action.astype(np.float64)
    if driver == "noisy":  # the expert plus AR(1) noise, as in DART-style collection
        return np.clip(expert_action + 0.8 * prev + rng.normal(0.0, 0.3, 2), -1.0, 1.0)
    if driver == "random":
        return rng.uniform(-1.0, 1.0, 2)
    raise ValueError(f"unknown driver {driver!r}; use one of {DRIVERS}")


def lockstep(scenario: str, seed: int, steps: int, driver: str = "expert", tol: float = 1e-9,
             env_overrides: dict | None = None) -> LockstepReport:
    """Compare stock and fast simulation for `steps` policy steps (or until the episode ends)."""
    report = LockstepReport(scenario, seed, driver)
    overrides = dict(env_overrides or {})
    envs = [DrivingEnv(scenario, env_overrides={**overrides, "fast_road": fast}) for fast in (False, True)]
    logs: list[list] = [[], []]
    for env, log in zip(envs, logs):
        core = env.core.unwrapped
        core.substep_callback = lambda core=core, log=log: log.append(_state(core.road))
    outs = [env.reset(seed=seed) for env in envs]
    rng = np.random.default_rng(seed)
    noise = np.zeros(2)

    def mismatch(what: str) -> LockstepReport:
        report.mismatches.append(f"step {report.steps}: {what}")
        return report

    try:
        for _ in range(steps):
            (obs_s, info_s), (obs_f, info_f) = outs
            if not np.array_equal(obs_s["camera"], obs_f["camera"]):
                return mismatch("camera frames differ")
            if not np.array_equal(info_s["expert_action"], info_f["expert_action"]):
                return mismatch(f"expert labels differ: {info_s['expert_action']} vs {info_f['expert_action']}")
            action = _driver_action(driver, info_s["expert_action"], rng, noise)
            noise = action - info_s["expert_action"]
            results = [env.step(action) for env in envs]
            report.steps += 1
            if len(logs[0]) != len(logs[1]):
                return mismatch(f"{len(logs[0])} vs {len(logs[1])} substeps")
            for stock, fast in zip(*logs):
                report.substeps += 1
                if len(stock) != len(fast):
                    return mismatch(f"{len(stock)} vs {len(fast)} vehicles")
                for k, (a, b) in enumerate(zip(stock, fast)):
                    if a[:3] != b[:3]:
                        return mismatch(f"vehicle {k}: class/lane/crashed {a[:3]} vs {b[:3]}")
                    diff = max(float(np.max(np.abs(a[3] - b[3]))), abs(a[4] - b[4]), abs(a[5] - b[5]))
                    report.max_abs_diff = max(report.max_abs_diff, diff)
                    if not diff <= tol:
                        return mismatch(f"vehicle {k}: state differs by {diff:.3g}")
                    report.vehicle_states += 1
            for log in logs:
                log.clear()
            (_, r_s, term_s, trunc_s, _), (_, r_f, term_f, trunc_f, _) = results
            if (r_s, term_s, trunc_s) != (r_f, term_f, trunc_f):
                return mismatch(f"reward/terminated/truncated {(r_s, term_s, trunc_s)} vs {(r_f, term_f, trunc_f)}")
            report.crashes += int(results[0][4]["crashed"])
            outs = [(res[0], res[4]) for res in results]
            if term_s or trunc_s:
                break
        (obs_s, _), (obs_f, _) = outs
        if not np.array_equal(obs_s["camera"], obs_f["camera"]):
            return mismatch("camera frames differ")
        return report
    finally:
        for env in envs:
            env.close()
