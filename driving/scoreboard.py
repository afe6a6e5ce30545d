"""`driving scoreboard`: collect -> train -> evaluate for a list of scenarios and training seeds,
sized to the machine, resumable, summarised as scoreboard.json and scoreboard.md.

Per scenario one dataset (collection seeds from 0); per training seed one run and one evaluation on
the same held-out seeds, of `checkpoints/best` where training evaluated closed loop, else `last`.
Every stage resumes by itself (collection and training pick up where they stopped; a finished
evaluation of the same checkpoint and config is kept), so re-running the command after a kill
finishes the job. The table gives, per scenario, the mean over training seeds with a 95% interval
and the expert on the same evaluation seeds.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from driving import atomic
from driving.config import as_overrides, load_config, to_dict
from driving.folder_lock import writing

ALL = "highway,highway-dense,merge,roundabout,racetrack,intersection"
SUMMARY = ("driving_score", "collision_rate", "success_rate", "lane_changes", "mean_abs_lat_accel", "min_ttc_s")


@dataclass
class ScoreboardConfig:
    scenario: str = ALL  # a comma list
    seeds: list[int] = field(default_factory=lambda: [0])  # training seeds
    out: str = "runs/scoreboard"
    size: str = "auto"  # auto (cuda when torch sees a GPU) | cpu | cuda: the demo's sizes per machine
    # scenarios run at once, each its own process (collect -> train -> eval): one scenario's training
    # or tail of episodes leaves cores idle that another's collection fills. 0 = auto: 1 without a GPU,
    # else cores // 4
    parallel: int = 0
    collect: dict[str, Any] = field(default_factory=dict)  # extra `driving collect` keys, e.g. episodes
    train: dict[str, Any] = field(default_factory=dict)  # extra `driving train` keys
    eval: dict[str, Any] = field(default_factory=dict)  # extra `driving eval` keys

    def __post_init__(self):
        if self.size not in ("auto", "cpu", "cuda"):
            raise ValueError("size must be auto, cpu or cuda")
        if self.parallel < 0:
            raise ValueError("parallel must be >= 0 (0 = auto)")
        if not self.seeds:
            raise ValueError("seeds must list at least one training seed, e.g. seeds=[0,1,2]")

    @property
    def scenarios(self) -> list[str]:
        return [s.strip() for s in self.scenario.split(",") if s.strip()]


def hardware() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}


def run_scoreboard(cfg: ScoreboardConfig, progress: bool = True, command: str | None = None) -> dict:
    with writing(cfg.out, "driving scoreboard"):
        return _run_scoreboard(cfg, progress, command)


def _run_scoreboard(cfg: ScoreboardConfig, progress: bool = True, command: str | None = None) -> dict:
    from driving.data.collect import CollectConfig
    from driving.demo import sizes_for
    from driving.evaluate import EvalConfig, check_scenarios
    from driving.train import TrainConfig

    check_scenarios(cfg.scenarios)
    found, sizes = sizes_for(cfg.size)
    out = Path(cfg.out)
    # every config is resolved (and every bad key refused) before the first stage runs
    stages = {}
    for name in cfg.scenarios:
        data = out / name / "data"
        c = load_config(CollectConfig, None, [f"scenario={name}", f"out={data}", *sizes["collect"],
                                              *as_overrides(cfg.collect)])
        runs = []
        for seed in cfg.seeds:
            run = out / name / f"seed{seed}"
            t = load_config(TrainConfig, None, [f"dataset={data}", f"out={run / 'run'}", f"seed={seed}",
                                                "wandb.mode=offline", *sizes["train"], *as_overrides(cfg.train)])
            e = load_config(EvalConfig, None, [f"scenario={name}", f"out={run / 'eval'}", *sizes["eval"],
                                               *as_overrides(cfg.eval)])
            runs.append((seed, t, e))
        stages[name] = (c, runs)
    parallel = min(len(stages), cfg.parallel or auto_parallel(found))
    print(f"scoreboard sizes for {found}: " + "; ".join(f"{k} " + " ".join(v) for k, v in sizes.items())
          + (f"; {parallel} scenarios at once" if parallel > 1 else ""))
    t0 = time.perf_counter()
    spent = {"collect": 0.0, "train": 0.0, "eval": 0.0}  # seconds per kind of stage, summed over scenarios
    if parallel <= 1:
        for name, (c, runs) in stages.items():
            for k, v in run_scenario(name, c, runs, progress).items():
                spent[k] += v
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        from driving.envpool import die_with_parent

        # the slowest scenarios first, so none of them starts last (the order of the table stays)
        order = sorted(stages, key=lambda n: -_COST.get(n, 1.0))
        with ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn"), initializer=die_with_parent) as pool:
            jobs = [pool.submit(run_scenario, n, *stages[n], False) for n in order]
            for job in jobs:
                for k, v in job.result().items():
                    spent[k] += v
    board = summarise(cfg, stages, found, command, time.perf_counter() - t0)
    board["parallel"] = parallel
    board["stage_s"] = {k: round(v, 1) for k, v in spent.items()}
    atomic.write_json(out / "scoreboard.json", board)
    atomic.write_bytes(out / "scoreboard.md", markdown(board).encode())
    return board


# Relative wall time of a scenario's pipeline (measured on 16 cores + H100, docs/FIGURES.md): the
# order in which parallel scenarios start.
_COST = {"intersection": 3.0, "highway-dense": 2.0, "roundabout": 1.5, "highway": 1.2, "racetrack": 1.0, "merge": 0.6}


def auto_parallel(found: str) -> int:
    """Scenarios at once: one on a CPU-only machine (its cores are one scenario's workers), else a
    quarter of the cores."""
    if not found.startswith("CUDA") and found != "cuda":
        return 1
    return max(1, (os.cpu_count() or 1) // 4)


def run_scenario(name: str, c, runs: list, progress: bool) -> dict:
    """One scenario's collect -> train -> evaluate per training seed (each stage resumes by itself).
    Returns seconds per kind of stage."""
    from driving.checkpoint import chosen
    from driving.data.collect import collect
    from driving.evaluate import evaluate, finished_evaluation
    from driving.train import train

    spent = {"collect": 0.0, "train": 0.0, "eval": 0.0}

    def timed(kind, fn, *args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            spent[kind] += time.perf_counter() - t

    print(f"== {name}: collect {c.episodes} episodes", flush=True)
    timed("collect", collect, c, progress=progress)
    for seed, t, e in runs:
        print(f"== {name}: train seed {seed} ({t.steps} steps), evaluate {e.episodes} seeds", flush=True)
        result = timed("train", train, t, progress=progress)
        ckpt = chosen(result["run_dir"])
        if not finished_evaluation(ckpt, e):
            timed("eval", evaluate, str(ckpt), e, progress=progress)
    print(f"== {name}: done ({', '.join(f'{k} {v:.0f} s' for k, v in spent.items())})", flush=True)
    return spent


def summarise(cfg: ScoreboardConfig, stages: dict, found: str, command: str | None, wall_s: float) -> dict:
    from driving.jsonfile import read_json
    from sim.metrics import mean_ci

    rows = {}
    for name, (_, runs) in stages.items():
        evals = [read_json(Path(e.out) / "eval.json", dict, "re-run the same command to evaluate again") for _, _, e in runs]
        aggs = [ev["scenarios"][name]["aggregate"] for ev in evals]
        policy = {k: mean_ci([a["policy"][k]["mean"] for a in aggs]) for k in SUMMARY if k in aggs[0]["policy"]}
        expert = {k: aggs[0]["expert"][k] for k in SUMMARY if k in aggs[0]["expert"]}
        rows[name] = {"policy": policy, "expert": expert, "training_seeds": [s for s, _, _ in runs],
                      "eval_episodes": runs[0][2].episodes, "checkpoints": [ev["checkpoint"] for ev in evals]}
    return {"config": to_dict(cfg), "sizes": found, "hardware": hardware(), "wall_s": wall_s,
            "command": command or "driving scoreboard " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
            "scenarios": rows}


def _cell(m: dict, fmt: str) -> str:
    if m["n"] <= 1:
        return fmt.format(m["mean"])
    return f"{fmt.format(m['mean'])} [{fmt.format(m['ci_low'])}, {fmt.format(m['ci_high'])}]"


def markdown(board: dict) -> str:
    hw = board["hardware"]
    lines = ["| scenario | driving score | expert | collisions | expert | lane changes/ep | expert "
             "| mean abs lat. accel m/s² | expert |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in board["scenarios"].items():
        p, e = r["policy"], r["expert"]
        lines.append(f"| {name} | {_cell(p['driving_score'], '{:.3f}')} | {e['driving_score']['mean']:.3f} "
                     f"| {_cell(p['collision_rate'], '{:.0%}')} | {e['collision_rate']['mean']:.0%} "
                     f"| {_cell(p['lane_changes'], '{:.2f}')} | {e['lane_changes']['mean']:.2f} "
                     f"| {_cell(p['mean_abs_lat_accel'], '{:.2f}')} | {e['mean_abs_lat_accel']['mean']:.2f} |")
    first = next(iter(board["scenarios"].values()))
    lines += ["", f"Policy: mean over training seeds {first['training_seeds']} (95% t interval where there are "
                  f"several), each evaluated on {first['eval_episodes']} held-out seeds beside the expert. "
                  f"Sizes: {board['sizes']}. Hardware: {hw['cpu_cores']} CPU cores, GPU {hw['gpu'] or 'none'}, "
                  f"torch {hw['torch']}. Wall {board['wall_s'] / 60:.1f} min"
                  + (f" with {board['parallel']} scenarios at once" if board.get("parallel", 1) > 1 else "")
                  + (" (summed over scenarios: " + ", ".join(f"{k} {v:.0f} s" for k, v in board["stage_s"].items())
                     + ")" if board.get("stage_s") else "") + ".", "",
              f"`{board['command']}`"]
    return "\n".join(lines) + "\n"
