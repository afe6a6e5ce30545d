"""Simulation speed: steps/s of DrivingEnv with highway-env's stock road vs sim.fast_road, camera on.

Stock and fast runs alternate for --rounds rounds on the same seeds, so a burst of machine
noise hits both; each mode's best round is reported (as timeit does: on a shared machine the
fastest run is the one least disturbed), with the median ratio beside it. Two workloads:
  sim+camera         the ego holds its lane at constant speed, no expert: what the fast road changes
  sim+camera+expert  the ego driven by the expert, whose label is computed every step: collection
Then, with --profile, where a fast step's time goes: simulation (highway-env's step: traffic
decisions, kinematics, collisions), camera, expert, and the rest (env wrapper, info, metrics).
The ratio line comes last.

    python scripts/bench_sim.py [--scenarios highway-dense,highway] [--steps 300] [--rounds 3] [--profile]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sim.env import DrivingEnv


def make_env(scenario: str, fast: bool, expert: bool) -> DrivingEnv:
    return DrivingEnv(scenario, expert=expert, env_overrides={"fast_road": fast})


def steps_per_second(env: DrivingEnv, steps: int, seed: int = 0) -> float:
    """Step `env` for `steps` steps (resetting on episode end) and return steps/s, resets included."""
    expert = env.expert is not None
    _, info = env.reset(seed=seed)
    hold = np.zeros(2)
    t = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(info["expert_action"] if expert else hold)
        if terminated or truncated:
            seed += 1
            _, info = env.reset(seed=seed)
    return steps / (time.perf_counter() - t)


def compare(scenario: str, expert: bool, steps: int, rounds: int) -> dict:
    envs = {mode: make_env(scenario, mode == "fast", expert) for mode in ("stock", "fast")}
    rates: dict[str, list[float]] = {"stock": [], "fast": []}
    for _ in range(rounds):
        for mode, env in envs.items():
            rates[mode].append(steps_per_second(env, steps))
    stock, fast = max(rates["stock"]), max(rates["fast"])
    median_ratio = statistics.median(rates["fast"]) / statistics.median(rates["stock"])
    return {"stock": stock, "fast": fast, "ratio": fast / stock, "median_ratio": median_ratio}


class _Timed:
    """Wraps a bound method and accumulates its wall time."""

    def __init__(self, fn):
        self.fn, self.total = fn, 0.0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - t


def breakdown(scenario: str, fast: bool, steps: int) -> dict:
    """Seconds per step in simulation, camera, expert and everything else, expert driving."""
    env = make_env(scenario, fast, expert=True)
    env.reset(seed=0)
    parts = {"simulation": _Timed(env.core.step), "camera": _Timed(env.camera.step),
             "expert": _Timed(env.expert.act)}
    env.core.step, env.camera.step, env.expert.act = parts["simulation"], parts["camera"], parts["expert"]
    total = steps / steps_per_second(env, steps)
    out = {name: timed.total / steps for name, timed in parts.items()}
    out["other"] = total / steps - sum(out.values())
    out["total"] = total / steps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="highway-dense,highway")
    ap.add_argument("--steps", type=int, default=300, help="steps per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also break a fast and a stock step down")
    args = ap.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]

    results = {}
    print(f"{'scenario':<14} {'workload':<18} {'stock steps/s':>13} {'fast steps/s':>12} {'ratio':>6}"
          f" {'(median)':>8}")
    for scenario in scenarios:
        for expert in (False, True):
            r = results[scenario, expert] = compare(scenario, expert, args.steps, args.rounds)
            workload = "sim+camera+expert" if expert else "sim+camera"
            print(f"{scenario:<14} {workload:<18} {r['stock']:>13.1f} {r['fast']:>12.1f} {r['ratio']:>5.2f}x"
                  f" {r['median_ratio']:>7.2f}x", flush=True)
    if args.profile:
        print("\nms per step, expert driving: simulation / camera / expert / other = total")
        for scenario in scenarios:
            for fast in (False, True):
                b = breakdown(scenario, fast, args.steps)
                print(f"{scenario:<14} {'fast' if fast else 'stock':<6} "
                      + " / ".join(f"{1e3 * b[k]:.2f}" for k in ("simulation", "camera", "expert", "other"))
                      + f" = {1e3 * b['total']:.2f}", flush=True)
    print("\nratio fast/stock (sim+camera): "
          + ", ".join(f"{s} {results[s, False]['ratio']:.2f}x" for s in scenarios))


if __name__ == "__main__":
    main()
