"""Collection throughput: frames/s with 1, 2, ... all-cores workers, the scaling efficiency
(frames/s per worker relative to 1 worker), and the same scenario stepped by plain highway-env (its
own grayscale camera, constant action, no expert) as a baseline. The efficiency line comes last.

    python scripts/bench_collect.py [--scenario highway] [--workers 1,2,all] [--episodes 8] [--max-steps 200]
                                    [--ray]   (also executor=ray on a local Ray with every core)
                                    [--breakdown]   (where the scaling goes; see below)

--breakdown runs one instrumented collection per worker count (the collection's own workers, pool and
episode code) and splits the efficiency into the two factors that multiply to it:
  speed        1 worker's busy ms/frame / n workers' busy ms/frame (how much slower a frame gets), itself
               split into CPU ms/frame (the same work costing more CPU: clock, caches, memory) and
               wall/CPU (runnable but not running: more busy threads than cores, I/O);
  utilisation  n workers' share of the run spent in episodes, relative to 1 worker's (start-up of the
               pool, the gaps between episodes, the tail where workers wait for the last episodes).
It also prints what a frame's busy time is made of (simulation, camera, expert, writing the episode,
the rest), CPU burnt by a worker's other threads (thread pools), involuntary context switches, and
the threads in each worker. The candidates of issue 12, measured rather than guessed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
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


# -- where the scaling goes (--breakdown) ------------------------------------------------------------
# time.monotonic is CLOCK_MONOTONIC on Linux: one clock for the parent and every worker.
_PARTS: dict = {}


def _timed_init(cfg, root: str, meta: dict, child: bool) -> None:
    """collect's own worker set-up, then timers around the parts of a frame."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_sim import _Timed

    from driving.data import collect as c

    c._worker_init(cfg, root, meta, child)
    env = c._WORKER["env"]
    _PARTS.clear()
    _PARTS.update(simulation=_Timed(env.core.step), camera=_Timed(env.camera.step), expert=_Timed(env.expert.act),
                  write=_Timed(c.write_episode))
    env.core.step, env.camera.step, env.expert.act = _PARTS["simulation"], _PARTS["camera"], _PARTS["expert"]
    c.write_episode = _PARTS["write"]  # in a worker process its own module; restored by the caller in-process


def _timed_run(job) -> dict:
    """collect's own episode job, with its wall and CPU times (process, and this thread alone)."""
    import resource

    from driving.data import collect as c

    parts = {k: t.total for k, t in _PARTS.items()}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    start, cpu, thread_cpu = time.monotonic(), time.process_time(), time.thread_time()
    row = c._worker_run(job)
    end = time.monotonic()
    ru2 = resource.getrusage(resource.RUSAGE_SELF)
    return {"pid": os.getpid(), "frames": row["length"], "start": start, "end": end,
            "cpu": time.process_time() - cpu, "thread_cpu": time.thread_time() - thread_cpu,
            "involuntary_switches": ru2.ru_nivcsw - ru.ru_nivcsw,
            "threads": len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0,
            "parts": {k: t.total - parts[k] for k, t in _PARTS.items()}}


def collect_breakdown(scenario: str, episodes: int, workers: int, max_steps: int, road: str = "fast") -> dict:
    """One collection as `driving collect` runs it, instrumented (see the module doc)."""
    from driving.config import load_config
    from driving.data import collect as c
    from driving.envpool import run_in_workers

    tmp = tempfile.mkdtemp(prefix="bench_collect_")
    write = c.write_episode
    try:
        cfg = load_config(c.CollectConfig, None, [f"scenario={scenario}", f"episodes={episodes}", f"out={tmp}/ds",
                                                  f"max_steps={max_steps}", f"env.fast_road={str(road == 'fast').lower()}"])
        _, meta, jobs = c.plan_collection(cfg)
        t0 = time.monotonic()
        if workers <= 1:  # in this process, as collect does
            _timed_init(cfg, cfg.out, meta, False)
            stats = [_timed_run(job) for job in jobs]
        else:
            stats = list(run_in_workers(_timed_run, jobs, workers, "collection", _timed_init,
                                        (cfg, cfg.out, meta, True)))
        t1 = time.monotonic()
    finally:
        c.write_episode = write
        c._WORKER.clear()
        shutil.rmtree(tmp, ignore_errors=True)
    return summarise_breakdown(stats, workers, t0, t1)


def summarise_breakdown(stats: list[dict], workers: int, t0: float, t1: float) -> dict:
    frames = sum(s["frames"] for s in stats)
    busy = sum(s["end"] - s["start"] for s in stats)
    by_worker: dict = {}
    for s in stats:
        by_worker.setdefault(s["pid"], []).append(s)
    span = workers * (t1 - t0)
    startup = sum(min(s["start"] for s in mine) - t0 for mine in by_worker.values())
    tail = sum(t1 - max(s["end"] for s in mine) for mine in by_worker.values())
    tail += (workers - len(by_worker)) * (t1 - t0)  # a worker that never got an episode idles throughout
    parts = {k: sum(s["parts"][k] for s in stats) for k in stats[0]["parts"]}
    cpu = sum(s["cpu"] for s in stats)
    thread_cpu = sum(s["thread_cpu"] for s in stats)
    return {
        "workers": workers, "frames": frames, "frames_per_s": frames / (t1 - t0),
        "utilisation": busy / span, "startup": startup / span, "tail": tail / span,
        "gaps": (span - busy - startup - tail) / span,
        "busy_ms": 1e3 * busy / frames, "cpu_ms": 1e3 * cpu / frames,
        "other_threads_ms": 1e3 * (cpu - thread_cpu) / frames,
        "parts_ms": {k: 1e3 * v / frames for k, v in parts.items()},
        "switches_per_frame": sum(s["involuntary_switches"] for s in stats) / frames,
        "threads": max(s["threads"] for s in stats),
    }


def print_breakdown(scenario: str, counts: list[int], per_worker: int, episodes: int, max_steps: int,
                    road: str) -> None:
    rows = {n: collect_breakdown(scenario, per_worker * n or episodes, n, max_steps, road) for n in counts}
    one = rows[1]
    print("\nwhere the scaling goes (one instrumented run per count; shares of workers x wall; ms per frame):")
    print(f"{'workers':>7} {'frames/s':>9} {'eff.':>5} = {'speed':>5} x {'util.':>5} | {'in eps':>6} {'start':>6} "
          f"{'gaps':>6} {'tail':>6} | {'busy':>5} {'cpu':>5} {'wall/cpu':>8} {'others':>6} {'inv.sw':>6} {'thr':>3} | "
          + " ".join(f"{k[:6]:>6}" for k in (*one["parts_ms"], "rest")))
    for n, r in rows.items():
        eff = r["frames_per_s"] / n / one["frames_per_s"]
        speed = one["busy_ms"] / r["busy_ms"]
        util = r["utilisation"] / one["utilisation"]
        rest = r["busy_ms"] - sum(r["parts_ms"].values())
        print(f"{n:>7} {r['frames_per_s']:>9.1f} {eff:>5.2f} = {speed:>5.2f} x {util:>5.2f} | "
              f"{r['utilisation']:>6.1%} {r['startup']:>6.1%} {r['gaps']:>6.1%} {r['tail']:>6.1%} | "
              f"{r['busy_ms']:>5.2f} {r['cpu_ms']:>5.2f} {r['busy_ms'] / r['cpu_ms']:>8.2f} "
              f"{r['other_threads_ms']:>6.2f} {r['switches_per_frame']:>6.2f} {r['threads']:>3} | "
              + " ".join(f"{v:>6.2f}" for v in (*r["parts_ms"].values(), rest)))
    print("speed = 1 worker's busy ms/frame / n's; util. = n's share of time in episodes / 1 worker's; "
          "cpu = process CPU ms/frame, others = of it on the worker's other threads; inv.sw = involuntary "
          "context switches per frame; thr = threads per worker")


def worker_counts(spec: str) -> list[int]:
    """'2,all' -> [1, 2, os.cpu_count()]: sorted, no repeats, always with 1 (the reference)."""
    cores = os.cpu_count() or 1
    return sorted({1} | {cores if w.strip() == "all" else int(w) for w in spec.split(",") if w.strip()})


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--breakdown", action="store_true",
                   help="also one instrumented run per worker count: where the scaling efficiency goes")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
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
            # as it comes: a run stopped at its time limit keeps what it measured
            print(f"measured driving collect, {n} worker(s): {runs[n][-1]:.1f} frames/s", flush=True)
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
    if a.breakdown:
        print_breakdown(a.scenario, counts, a.per_worker, eps, a.max_steps, a.road)
    print("scaling efficiency (frames/s per worker / 1 worker): "
          + ", ".join(f"{n} workers {fps[n] / n / fps[1]:.2f}" for n in counts if n > 1))


if __name__ == "__main__":
    main()
