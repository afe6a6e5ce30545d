"""Collection throughput: frames/s with 1 worker and with all cores, the scaling efficiency, and the
same scenario stepped by plain highway-env (its own grayscale camera, constant action, no expert) as a
baseline. Prints one table; the efficiency line comes last.

    python scripts/bench_collect.py [--scenario highway] [--episodes 8] [--max-steps 200]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np


def bench_collect(scenario: str, episodes: int, workers: int, max_steps: int) -> tuple[float, int]:
    from driving.config import load_config
    from driving.data.collect import CollectConfig, collect
    from driving.data.format import Dataset

    tmp = tempfile.mkdtemp(prefix="bench_collect_")
    try:
        cfg = load_config(CollectConfig, None, [f"scenario={scenario}", f"episodes={episodes}",
                                                f"workers={workers}", f"out={tmp}/ds", f"max_steps={max_steps}"])
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="highway")
    p.add_argument("--episodes", type=int, default=0, help="per worker count run (default 4 x workers)")
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="the 'all cores' worker count")
    a = p.parse_args()
    n_all = a.workers
    eps = a.episodes or 4 * n_all
    stock = bench_stock(a.scenario, 600)
    one, _ = bench_collect(a.scenario, eps, 1, a.max_steps)
    many, _ = bench_collect(a.scenario, eps, n_all, a.max_steps)
    eff = many / n_all / one
    print(f"scenario {a.scenario}: {eps} episodes x {a.max_steps} steps per run, {os.cpu_count()} cores")
    print(f"{'plain highway-env (stock camera, no expert)':46} {stock:8.1f} steps/s (1 process)")
    print(f"{'driving collect, 1 worker':46} {one:8.1f} frames/s")
    print(f"{f'driving collect, {n_all} workers':46} {many:8.1f} frames/s")
    print(f"collect 1 worker / plain highway-env: {one / stock:.2f}")
    print(f"scaling efficiency with {n_all} workers: {eff:.2f}")


if __name__ == "__main__":
    main()
