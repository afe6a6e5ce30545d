"""How well the expert drives, per perception: closed-loop episodes of the expert on fixed seeds,
one markdown table row per scenario and perception, with the engine of `driving eval`.

    python scripts/expert_quality.py [--scenarios highway,merge] [--episodes 50] [--seed-base 1000]
                                     [--workers 0] [--perception camera,privileged] [camera.KEY=VALUE ...]

Each scenario runs with its own camera (sim/scenarios.py); camera.KEY=VALUE overrides its keys.

Episode i of a scenario uses seed `seed-base + i`. Columns: driving score against the privileged
expert on the same seed (sim.metrics), crashes and crash rate (95% Wilson interval), off-road time
as a fraction of the episode's steps and the number of episodes that left the road at all, mean
speed and distance (the evaluation's definitions), the fraction of steps at which the expert's
physical command exceeded the scenario's action range, and simulation steps/s (camera included).
"""
from __future__ import annotations

import argparse
import time

ALL = "highway,highway-dense,merge,roundabout,racetrack,intersection"


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval for k events in n trials (the evaluation's own, sim.metrics)."""
    from sim.metrics import rate_ci

    ci = rate_ci([True] * k + [False] * (n - k))
    return ci["ci_low"], ci["ci_high"]


def run_scenario(name: str, episodes: int, seed_base: int, perception: str = "privileged",
                 camera: dict | None = None, workers: int = 0, progress: bool = True) -> dict:
    import numpy as np

    from driving.baselines import ExpertPolicy
    from driving.config import to_dict
    from driving.evaluate import open_pool, run_episodes
    from sim import get_scenario

    cam = to_dict(get_scenario(name).camera_config(camera))  # the scenario's own camera, `camera` on top
    seeds = [seed_base + i for i in range(episodes)]
    start = time.perf_counter()
    with open_pool(name, cam, workers, episodes, expert={"perception": perception}) as pool:
        records = run_episodes(ExpertPolicy(), name, seeds, cam, workers, progress=progress,
                               label=f"{name} {perception}", pool=pool)
    elapsed = time.perf_counter() - start
    steps = sum(len(r["actions"]) for r in records)
    saturated = sum(int(np.sum(r["steps"]["expert_saturated"][:-1])) for r in records)
    return {"scenario": name, "perception": perception, "episodes": episodes, "records": records,
            "dt": 1.0 / get_scenario(name).policy_frequency, "sat": saturated / max(steps, 1),
            "steps_per_s": steps / elapsed}


def add_driving_scores(results: list[dict]) -> None:
    """Score every run's episodes (sim.metrics, as `driving eval` does) against the privileged
    expert's distance on the same seed, where the privileged expert ran too."""
    from driving.evaluate import score_records
    from sim.metrics import aggregate

    plain = {(r["scenario"], r["perception"]): score_records(r["records"], r["scenario"], r["dt"], None)
             for r in results}
    for r in results:
        base = plain.get((r["scenario"], "privileged"))
        reference = {row["seed"]: row["distance_m"] for row in base} if base else None
        rows = score_records(r["records"], r["scenario"], r["dt"], reference)
        agg = aggregate(rows)
        r.update(rows=rows, driving_score=agg["driving_score"]["mean"] if base else None,
                 crashes=sum(row["crashed"] for row in rows),
                 offroad=agg["offroad_fraction"]["mean"], left_road=sum(row["offroad_fraction"] > 0 for row in rows),
                 speed=agg["mean_speed"]["mean"], distance=agg["distance_m"]["mean"])


def table(results: list[dict]) -> str:
    lines = [
        ("| scenario | perception | episodes | driving score | crashes | crash rate (95% CI) | off-road fraction "
         "| left the road | speed m/s | distance m | saturated steps | steps/s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lo, hi = wilson(r["crashes"], r["episodes"])
        ds = "–" if r.get("driving_score") is None else f"{r['driving_score']:.3f}"
        lines.append(
            f"| {r['scenario']} | {r['perception']} | {r['episodes']} | {ds} | {r['crashes']} "
            f"| {r['crashes'] / r['episodes']:.2f} [{lo:.2f}, {hi:.2f}] | {r['offroad']:.3f} "
            f"| {r['left_road']} | {r['speed']:.1f} | {r['distance']:.0f} "
            f"| {r['sat']:.3f} | {r['steps_per_s']:.0f} |")
    return "\n".join(lines)


def yaml_value(text: str):
    from omegaconf import OmegaConf

    return OmegaConf.from_dotlist([f"v={text}"])["v"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenarios", default=ALL, help=f"comma-separated (default: {ALL})")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed-base", type=int, default=1000)
    p.add_argument("--workers", type=int, default=0, help="parallel environments (default 0: one per core)")
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

    results = [run_scenario(n, a.episodes, a.seed_base, perc, camera, a.workers) for n in names for perc in perceptions]
    add_driving_scores(results)
    def footprint(name):
        ahead, behind, half = SCENARIOS[name].camera_config(camera).footprint
        return f"{name} {ahead:g} m ahead, {behind:g} m behind, ±{half:g} m"

    print(f"Expert quality, seeds {a.seed_base}..{a.seed_base + a.episodes - 1}; camera footprint: "
          f"{'; '.join(footprint(n) for n in names)}; driving score against the privileged expert\n")
    print(table(results))


if __name__ == "__main__":
    main()
