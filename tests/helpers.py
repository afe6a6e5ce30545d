"""Small synthetic datasets for the learning tests: exact, fast, no simulator needed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from driving.data.format import FORMAT_VERSION, episode_filename, write_episode


def synthetic_dataset(root: Path, lengths=(6, 5, 7, 4), height=32, width=16, rgb=False, seed=0,
                      student_offset: float | None = None, plans: bool = True) -> Path:
    """Episodes whose frames encode (episode, step): pixel [0, 0] = episode, [0, 1] = step, and a
    bright bar whose column depends on the steering label, so a CNN can learn it. With
    `student_offset`, a DAgger round's dataset: the student's steering is off by that much on odd steps.
    `plans`: the expert's lane plan is recorded (left/right where the steering label is strong)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for e, n in enumerate(lengths):
        steer = rng.uniform(-1, 1, n).astype(np.float32)
        accel = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        shape = (n, height, width, 3) if rgb else (n, height, width)
        frames = rng.integers(0, 60, size=shape, dtype=np.uint8)
        for t in range(n):
            col = int(round((steer[t] + 1) / 2 * (width - 1)))
            frames[t, 4:, col] = 250
            frames[t, 0, 0] = e
            frames[t, 0, 1] = t
        label = np.stack([steer, accel], axis=1)
        steps = {
            "frames": frames, "action": label, "expert_action": label,
            "speed": rng.uniform(15, 25, n), "on_road": np.ones(n, bool), "crashed": np.zeros(n, bool),
            "expert_saturated": np.zeros(n, bool), "progress": np.arange(n) * 4.0,
            "lane_offset": np.zeros(n), "heading": np.zeros(n), "x": np.arange(n) * 4.0, "y": np.zeros(n),
        }
        if plans:  # the lane plan follows the steering label: left below -0.5, right above +0.5
            steps["expert_plan"] = (steer > 0.5).astype(np.int8) - (steer < -0.5).astype(np.int8)
        if student_offset is not None:
            steps["student_action"] = label + np.outer(np.arange(n) % 2, [student_offset, 0.0])
        summary = {"seed": 100 + e, "length": n, "outcome": "ok", "crashed": False, "terminated": False,
                   "offroad_steps": 0, "progress": 4.0 * n, "mean_speed": 20.0}
        write_episode(root, e, steps, summary)
        rows.append({"episode": e, "file": episode_filename(e), **summary})
    camera = {"height": height, "width": width, "metres_per_pixel": 0.5, "stack": 2, "rgb": rgb,
              "heading_up": True, "ego_row": 0.75}
    meta = {"format_version": FORMAT_VERSION, "scenario": {"name": "highway"}, "camera": camera,
            "action": {"order": ["steer", "accel"], "steer_range_rad": 0.15, "accel_range_mps2": 6.0},
            "expert": {}, "noise": {"steer": 0, "accel": 0, "correlation": 0},
            "config": {"synthetic": True, "seed": seed, "lengths": list(lengths), "rgb": rgb},
            "frame_shape": list(frames.shape[1:]), "policy_frequency": 5,
            "counts": {"episodes": len(rows), "frames": int(sum(lengths))}}
    if student_offset is not None:
        meta["dagger"] = {"round": 1, "checkpoint": "synthetic", "beta": 0.0, "takeover": 0.0}
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "index.json").write_text(json.dumps(rows))
    return root


class SlowSeedEnv:
    """driving.envpool.SleepingEnv whose steps take `slow_s` in the episode of seed `slow_seed`
    and `fast_s` in every other (built in worker processes: importable, picklable)."""

    def __init__(self, obs_shape, slow_seed: int, slow_s: float, fast_s: float, length: int):
        from driving.envpool import SleepingEnv

        self.inner = SleepingEnv(obs_shape, [fast_s], [0.0], length)
        self.slow_seed, self.slow_s, self.fast_s = slow_seed, slow_s, fast_s

    def reset(self, seed: int):
        self.inner.step_s = [self.slow_s if seed == self.slow_seed else self.fast_s]
        return self.inner.reset(seed)

    def step(self, action):
        return self.inner.step(action)

    def close(self):
        pass


class SeedEchoEnv:
    """driving.envpool.SleepingEnv whose frames hold its episode's seed (mod 256) and whose episodes last
    3 + seed % 5 steps, so an answer given to the wrong env shows in the records (built in worker
    processes: importable, picklable)."""

    def __init__(self, obs_shape, step_s: float):
        from driving.envpool import SleepingEnv

        self.inner = SleepingEnv(obs_shape, [step_s], [0.0], 3)

    def reset(self, seed: int):
        self.inner.length = 3 + seed % 5
        self.inner.frames = np.full_like(self.inner.frames, seed % 256)
        return self.inner.reset(seed)

    def step(self, action):
        return self.inner.step(action)

    def close(self):
        pass


class FailingEnv:
    """driving.envpool.SleepingEnv whose step `fail_at` raises, as a simulator bug or a value that fails
    only mid-episode would (built in worker processes: importable, picklable)."""

    def __init__(self, obs_shape, fail_at: int, length: int):
        from driving.envpool import SleepingEnv

        self.inner = SleepingEnv(obs_shape, [0.0], [0.0], length)
        self.fail_at, self.steps = fail_at, 0

    def reset(self, seed: int):
        self.steps = 0
        return self.inner.reset(seed)

    def step(self, action):
        self.steps += 1
        if self.steps == self.fail_at:
            raise ZeroDivisionError("float division by zero")
        return self.inner.step(action)

    def close(self):
        pass


def sleep_job(seconds: float) -> float:
    """A job for driving.envpool.run_in_workers that takes `seconds` (importable, picklable)."""
    import time

    time.sleep(seconds)
    return seconds


def sleep_or_fail_job(seconds: float, fails: bool) -> float:
    """A job that takes `seconds`, then fails or returns them (importable, picklable)."""
    sleep_job(seconds)
    if fails:
        raise ValueError(f"failed after {seconds} s")
    return seconds


def sigterm_self() -> None:
    """SIGTERM to this process, and time for its handler to act (Python runs it between bytecodes): a
    handler that raises ends the wait, one that does not leaves the caller going on after it."""
    import os
    import signal
    import time

    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
