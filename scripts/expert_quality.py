"""How well the privileged expert drives: closed-loop episodes of the expert on fixed seeds, one
markdown table row per scenario.

    python scripts/expert_quality.py [--scenarios highway,merge] [--episodes 50] [--seed-base 1000]
                                     [--workers 1]

Episode i of a scenario uses seed `seed-base + i`. Each scenario runs in a fresh process, so the
numbers do not depend on which scenarios ran before (intersection-v0 changes class attributes of
highway-env's IDMVehicle, which would otherwise leak into the traffic of later scenarios).
Columns: crashes and crash rate (95% Wilson interval); off-road time as a fraction of the episode's
steps (mean over episodes) and the number of episodes that left the road at all; speed (mean over
episodes of each episode's mean speed); progress along the road at the end of the episode; the
fraction of steps at which the expert's physical command exceeded the scenario's action range
(either dimension, then steering and acceleration alone); simulation throughput (steps/s,
including the camera).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ALL = "highway,highway-dense,merge,roundabout,racetrack,intersection"


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval for k events in n trials (the evaluation's own, sim.metrics)."""
    from sim.metrics import rate_ci

    ci = rate_ci([True] * k + [False] * (n - k))
    return ci["ci_low"], ci["ci_high"]


def run_scenario(name: str, episodes: int, seed_base: int, perception: str = "privileged",
                 camera: dict | None = None, progress: bool = True) -> dict:
    import numpy as np
    from tqdm import tqdm

    from sim import DrivingEnv

    env = DrivingEnv(name, camera=camera, expert={"perception": perception})
    rows, distances, crashed_list, offroad_fracs = [], [], [], []
    steps = 0
    sat = np.zeros(3)  # any, steer, accel
    start = time.perf_counter()
    bar = tqdm(range(episodes), desc=f"{name} {perception}", unit="ep", disable=not progress, file=sys.stderr)
    for i in bar:
        _, info = env.reset(seed=seed_base + i)
        off = 0
        speeds = []
        while True:
            _, _, terminated, truncated, info = env.step(info["expert_action"])
            steps += 1
            off += not info["on_road"]
            speeds.append(info["speed"])
            steer_sat, accel_sat = env.expert.saturation
            sat += (info["expert_saturated"], steer_sat, accel_sat)
            if terminated or truncated:
                break
        rows.append((info["crashed"], off / len(speeds), off > 0, float(np.mean(speeds)), info["progress"]))
        bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - start):.0f}")
    elapsed = time.perf_counter() - start
    env.close()
    r = np.array(rows, dtype=np.float64)
    return {
        "scenario": name, "perception": perception, "episodes": episodes, "crashes": int(r[:, 0].sum()),
        "offroad": float(r[:, 1].mean()), "left_road": int(r[:, 2].sum()),
        "speed": float(r[:, 3].mean()), "progress": float(r[:, 4].mean()),
        "per_episode": [{"crashed": bool(c), "offroad_fraction": float(o), "distance": float(d)}
                        for c, o, _, _, d in rows],
        "sat": (sat / max(steps, 1)).tolist(), "steps_per_s": steps / elapsed,
    }


def add_driving_scores(results: list[dict]) -> None:
    """Driving score of every run against the privileged expert's distance on the same seed (the
    evaluation's formula, sim.metrics), where the privileged expert ran too."""
    from sim.metrics import CRASH_PENALTY

    reference = {r["scenario"]: r["per_episode"] for r in results if r["perception"] == "privileged"}
    for r in results:
        ref = reference.get(r["scenario"])
        if ref is None:
            r["driving_score"] = None
            continue
        scores = []
        for ep, base in zip(r["per_episode"], ref):
            rc = 1.0 if base["distance"] <= 1e-6 else min(1.0, max(0.0, ep["distance"] / base["distance"]))
            scores.append(rc * (CRASH_PENALTY if ep["crashed"] else 1.0) * (1.0 - ep["offroad_fraction"]))
        r["driving_score"] = sum(scores) / len(scores)


def table(results: list[dict]) -> str:
    lines = [
        ("| scenario | perception | episodes | driving score | crashes | crash rate (95% CI) | off-road fraction "
         "| left the road | speed m/s | progress m | saturated steps (steer / accel) | steps/s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lo, hi = wilson(r["crashes"], r["episodes"])
        s_any, s_steer, s_accel = r["sat"]
        ds = "–" if r.get("driving_score") is None else f"{r['driving_score']:.3f}"
        lines.append(
            f"| {r['scenario']} | {r['perception']} | {r['episodes']} | {ds} | {r['crashes']} "
            f"| {r['crashes'] / r['episodes']:.2f} [{lo:.2f}, {hi:.2f}] | {r['offroad']:.3f} "
            f"| {r['left_road']} | {r['speed']:.1f} | {r['progress']:.0f} "
            f"| {s_any:.3f} ({s_steer:.3f} / {s_accel:.3f}) | {r['steps_per_s']:.0f} |")
    return "\n".join(lines)


def yaml_value(text: str):
    from omegaconf import OmegaConf

    return OmegaConf.from_dotlist([f"v={text}"])["v"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default=ALL, help=f"comma-separated (default: {ALL})")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed-base", type=int, default=1000)
    p.add_argument("--workers", type=int, default=1, help="scenarios run in parallel (default 1)")
    p.add_argument("--perception", default="camera,privileged",
                   help="expert perceptions to run, comma-separated (default: camera,privileged)")
    p.add_argument("camera", nargs="*", metavar="camera.KEY=VALUE", help="camera overrides, e.g. "
                   "camera.metres_per_pixel=1.0 (the camera the camera-perception expert sees through)")
    a = p.parse_args()
    camera = {}
    for kv in a.camera:
        key, eq, value = kv.partition("=")
        if not key.startswith("camera.") or not eq:
            p.error(f"{kv!r} is not camera.KEY=VALUE")
        camera[key[len("camera."):]] = yaml_value(value)
    perceptions = [x.strip() for x in a.perception.split(",") if x.strip()]

    from sim import SCENARIOS

    names = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if a.episodes < 1:
        p.error("--episodes must be at least 1")

    # A fresh process per scenario (max_tasks_per_child=1): see the module docstring.
    with ProcessPoolExecutor(max_workers=max(1, a.workers), mp_context=mp.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = [pool.submit(run_scenario, n, a.episodes, a.seed_base, perc, camera)
                   for n in names for perc in perceptions]
        results = []
        for f in futures:
            results.append(f.result())
            print(f"{results[-1]['scenario']} {results[-1]['perception']}: done", file=sys.stderr, flush=True)
    add_driving_scores(results)
    from sim import CameraConfig

    ahead, behind, half = CameraConfig(**camera).footprint
    print(f"Expert quality, seeds {a.seed_base}..{a.seed_base + a.episodes - 1}; camera footprint "
          f"{ahead:g} m ahead, {behind:g} m behind, ±{half:g} m; driving score against the privileged expert\n")
    print(table(results))


if __name__ == "__main__":
    main()
