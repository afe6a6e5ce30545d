"""Collection throughput: frames/s with 1, 2, ... all-cores workers, the scaling efficiency
(frames/s per worker relative to 1 worker), and the same scenario stepped by plain highway-env (its
own grayscale camera, constant action, no expert) as a baseline. The efficiency line comes last.

    python scripts/bench_collect.py [--scenario highway] [--workers 1,2,all] [--episodes 8] [--max-steps 200]
                                    [--ray]   (also executor=ray on a local Ray with every core)
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np


def bench_collect(scenario: str, episodes: int, workers: int, max_steps: int,
                  road: str = "fast", executor: str = "process") -> tuple[float, int]:
    from driving.config import load_config
    from driving.data.collect import CollectConfig, collect
    from driving.data.format import Dataset

    tmp = tempfile.mkdtemp(prefix="bench_collect_")
    try:
        cfg = load_config(CollectConfig, None, [f"scenario={scenario}", f"episodes={episodes}",
                                                f"workers={workers}", f"out={tmp}/ds", f"max_steps={max_steps}",
                                                f"env.fast_road={str(road == 'fast').lower()}",
                                                f"executor={executor}"])
        t = time.perf_counter()
        collect(cfg, progress=False)
        dt = time.perf_counter() - t
        return Dataset.open(f"{tmp}/ds").frames / dt, workers
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_stock(scenario: str, steps: int) -> float:
    """Plain highway-env: the stock env class, its GrayscaleObservation at our camera's size."""
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
    from sim import CameraConfig, get_scenario
    from sim.scenarios import _stock_class

    sc = get_scenario(scenario)
    cam = CameraConfig()
    cfg = sc.highway_config()
    cfg["observation"] = {"type": "GrayscaleObservation", "observation_shape": (cam.width, cam.height),
                          "stack_size": cam.stack, "weights": [0.2989, 0.5870, 0.1140],
                          "scaling": 1.0 / cam.metres_per_pixel}
    env = _stock_class(sc.env_id)(config=cfg)
    action = sc.action.to_highway([0.0, 0.0])
    env.reset(seed=0)
    n, t = 0, time.perf_counter()
    seed = 0
    while n < steps:
        obs, _, term, trunc, _ = env.step(action)
        n += 1
        if term or trunc:
            seed += 1
            env.reset(seed=seed)
    dt = time.perf_counter() - t
    assert np.asarray(obs).max() > 0, "stock frames are black: SDL_VIDEODRIVER must not be 'dummy'"
    return n / dt


def worker_counts(spec: str) -> list[int]:
    """'2,all' -> [1, 2, os.cpu_count()]: sorted, no repeats, always with 1 (the reference)."""
    cores = os.cpu_count() or 1
    return sorted({1} | {cores if w.strip() == "all" else int(w) for w in spec.split(",") if w.strip()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="highway")
    p.add_argument("--episodes", type=int, default=0, help="per run (default 4 x the largest worker count)")
    p.add_argument("--per-worker", type=int, default=0,
                   help="instead of --episodes: this many episodes per worker (each count does the same work "
                        "per worker: 16 -> 1 worker 16 episodes, 16 workers 256)")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--workers", default="1,2,all", help="worker counts to compare, e.g. 1,2,4,all")
    p.add_argument("--repeats", type=int, default=2, help="interleaved runs per worker count (median)")
    p.add_argument("--road", choices=("fast", "stock"), default="fast", help="sim.fast_road or highway-env's")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain highway-env baseline")
    p.add_argument("--ray", action="store_true",
                   help="also executor=ray on a local Ray (all cores; its start-up is timed apart)")
    a = p.parse_args()
    counts = worker_counts(a.workers)
    eps = a.episodes or 4 * max(counts)
    stock = None if a.no_baseline else bench_stock(a.scenario, 600)
    runs: dict = {n: [] for n in counts}
    if a.ray:
        from driving.executors import connect

        t = time.perf_counter()
        connect(None)
        ray_start = time.perf_counter() - t
        runs["ray"] = []
    for _ in range(a.repeats):
        for n in counts:
            runs[n].append(bench_collect(a.scenario, a.per_worker * n or eps, n, a.max_steps, a.road)[0])
        if a.ray:
            n = max(counts)
            runs["ray"].append(bench_collect(a.scenario, a.per_worker * n or eps, n, a.max_steps, a.road, "ray")[0])
    fps = {n: statistics.median(r) for n, r in runs.items()}
    size = f"{a.per_worker} episodes per worker" if a.per_worker else f"{eps} episodes"
    print(f"scenario {a.scenario}, {a.road} road: {size} x {a.max_steps} steps per run, {os.cpu_count()} cores, "
          f"median of {a.repeats} (worker start-up included)")
    if stock:
        print(f"{'plain highway-env (stock camera, no expert)':46} {stock:8.1f} steps/s (1 process)")
    for n in counts:
        print(f"{f'driving collect, {n} worker(s)':46} {fps[n]:8.1f} frames/s   efficiency {fps[n] / n / fps[1]:.2f}")
    if a.ray:
        n = max(counts)
        print(f"{'driving collect, executor=ray (local)':46} {fps['ray']:8.1f} frames/s   "
              f"ray / process pool at {n} workers: {fps['ray'] / fps[n]:.2f} (Ray start-up {ray_start:.1f} s, "
              "not included)")
    if stock:
        print(f"collect 1 worker / plain highway-env: {fps[1] / stock:.2f}")
    print("scaling efficiency (frames/s per worker / 1 worker): "
          + ", ".join(f"{n} workers {fps[n] / n / fps[1]:.2f}" for n in counts if n > 1))


if __name__ == "__main__":
    main()
