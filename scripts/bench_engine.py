"""The closed-loop engine's own efficiency, apart from the simulation's cost and the machine's cores:
`run_episodes` over worker processes whose env is a stand-in that *sleeps* for as long as the real
env's steps and resets take (timed here first, on the real env), with frames and infos of the real
size. Sleeping workers take no core, so 16 or 32 of them measure on a 2-core machine what the
engine's scheduling, IPC and parent-side work cost a 16-core one. The policy is the expert (free) or
a stand-in for a GPU forward pass: a fixed time per call, whatever the batch (launch-bound).

Efficiency = steps/s / (workers x the ideal per worker: 1 / (mean step + mean reset / steps per
episode)): 1.0 is what the simulation allows. Each worker process holds 1 or more envs
(--envs-per-worker, the product's default 2): with one, a worker idles while its env's answer goes to
the parent and its action comes back; with two it steps the other meanwhile. Also the seconds to
start a pool of real workers, spawned or forked from the fork server (driving.envpool.worker_context).

    python scripts/bench_engine.py [--scenario highway] [--workers 1,4,16,32] [--episodes-per-env 3]
                                   [--max-steps 100] [--forward-ms 1.5] [--envs-per-worker 1,2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def real_timings(scenario: str, steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Wall seconds of the real env's steps (the expert driving) and resets, on this machine."""
    from driving.envpool import build_env

    env = build_env(scenario, None)
    step_s, reset_s = [], []
    seed = 0
    obs, info = env.reset(seed=seed)
    while len(step_s) < steps:
        t = time.perf_counter()
        obs, _, term, trunc, info = env.step(info["expert_action"])
        step_s.append(time.perf_counter() - t)
        if term or trunc:
            seed += 1
            t = time.perf_counter()
            obs, info = env.reset(seed=seed)
            reset_s.append(time.perf_counter() - t)
    for s in range(seed + 1, seed + 4):
        t = time.perf_counter()
        env.reset(seed=s)
        reset_s.append(time.perf_counter() - t)
    env.close()
    return np.array(step_s), np.array(reset_s)


class FixedCostPolicy:
    """A launch-bound GPU forward pass: `seconds` per call whatever the batch size."""

    name = "fixed-cost"

    def __init__(self, seconds: float):
        self.seconds = seconds

    def act(self, batch: dict) -> np.ndarray:
        time.sleep(self.seconds)
        return np.zeros((len(batch["speed"]), 2), np.float32)


def startup_seconds(scenario: str, n: int, how: str) -> float:
    """Seconds to open a pool of `n` real envs and reset each once, its workers from `how`."""
    import multiprocessing as mp

    from driving import envpool

    real = envpool.worker_context
    if how == "spawn":
        envpool.worker_context = lambda: mp.get_context("spawn")
    try:
        t = time.perf_counter()
        with envpool.EnvPool(n, {"scenario": scenario, "camera": None}) as pool:
            for i in range(n):
                pool.reset(i, 0)
            return time.perf_counter() - t
    finally:
        envpool.worker_context = real


def run(policy, n: int, env_kwargs: dict, seeds: list[int], scenario: str = "highway", per_worker: int = 1) -> float:
    """Steps/s of `n` envs, `per_worker` to a worker process."""
    from driving.envpool import EnvPool
    from driving.evaluate import run_episodes

    with EnvPool(n, env_kwargs, per_worker) as pool:
        for i in range(len(pool)):  # workers started and warm before the clock
            pool.reset(i, 0)
        t = time.perf_counter()
        records = run_episodes(policy, scenario, seeds, None, n, progress=False, pool=pool)
        wall = time.perf_counter() - t
    return sum(len(r["actions"]) for r in records) / wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="highway")
    p.add_argument("--workers", default="1,4,16,32")
    p.add_argument("--episodes-per-env", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--forward-ms", type=float, default=1.5, help="the stand-in GPU forward pass, per call")
    p.add_argument("--startup-workers", type=int, default=2, help="real workers for the start-up figures")
    p.add_argument("--envs-per-worker", default="1,2", help="envs in each worker process, compared in one run")
    a = p.parse_args()

    from driving.baselines import ExpertPolicy
    from driving.envpool import SleepingEnv
    from sim import get_scenario

    # start-up first: the fork server starts with the first pool of this process
    spawn = [startup_seconds(a.scenario, a.startup_workers, "spawn") for _ in range(2)]
    server = [startup_seconds(a.scenario, a.startup_workers, "worker_context") for _ in range(2)]
    step_s, reset_s = real_timings(a.scenario)
    shape = get_scenario(a.scenario).camera_config(None).obs_shape
    print(f"{a.scenario}, real env on this machine: step {1e3 * np.median(step_s):.2f} ms median "
          f"(p90 {1e3 * np.percentile(step_s, 90):.2f}), reset {1e3 * np.median(reset_s):.1f} ms; "
          f"frames {shape}; episodes of {a.max_steps} steps, {a.episodes_per_env} per env")
    kwargs = {"factory": SleepingEnv, "obs_shape": shape, "step_s": step_s, "reset_s": reset_s,
              "length": a.max_steps}
    counts = [int(c) for c in a.workers.split(",")]
    per_worker = [int(k) for k in a.envs_per_worker.split(",")]
    policies = {"expert": ExpertPolicy(), f"forward {a.forward_ms:g} ms": FixedCostPolicy(a.forward_ms / 1e3)}
    alone = 1.0 / (np.mean(step_s) + np.mean(reset_s) / a.max_steps)
    summary = []
    for name, policy in policies.items():
        for n in counts:
            for k in per_worker:
                seeds = list(range(10_000, 10_000 + n * k * a.episodes_per_env))
                sps = run(policy, n * k, kwargs, seeds, a.scenario, k)
                print(f"{name:<18} {n:3d} workers x {k} envs: {sps:8.0f} steps/s   efficiency {sps / n / alone:.2f} "
                      f"(ideal: {alone:.0f} steps/s per worker)")
                summary.append(f"{name} {n}x{k}: {sps / n / alone:.2f}")
    print(f"pool start-up, {a.startup_workers} real workers: spawn {spawn[0]:.2f} s / {spawn[1]:.2f} s; fork server "
          f"{server[0]:.2f} s (first pool: the server starts) / {server[1]:.2f} s (later pools)")
    print("engine efficiency: " + "; ".join(summary))


if __name__ == "__main__":
    main()
