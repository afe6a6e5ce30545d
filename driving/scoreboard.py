"""`driving scoreboard`: collect -> train -> evaluate for a list of scenarios and training seeds,
sized to the machine, resumable, summarised as scoreboard.json and scoreboard.md.

Per scenario one dataset (collection seeds from 0); per training seed one run and one evaluation on
the same held-out seeds, of `checkpoints/best` where training evaluated closed loop, else `last`.
With `rounds` > 0 each training seed runs `driving dagger` on the scenario's dataset instead (round 0
is the same BC run, then `rounds` rounds in which the student drives and the expert labels; `dagger.*`
keys go to it), and the table gives BC beside the last round, and the last round's gain over BC.
Every stage resumes by itself (collection and training pick up where they stopped; a finished
evaluation of the same checkpoint and config is kept), so re-running the command after a kill
finishes the job. The table gives, per scenario, the mean over training seeds with a 95% interval
and the expert on the same evaluation seeds, and whether the policy is within reach of the expert
(`TARGETS`).
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
from driving.config import as_overrides, load_config, refuse_owned, to_dict
from driving.errors import UserError
from driving.folder_lock import writing

ALL = "highway,highway-dense,merge,roundabout,racetrack,intersection"
SUMMARY = ("driving_score", "collision_rate", "success_rate", "lane_changes", "mean_abs_lat_accel", "min_ttc_s")
STAGES = ("collect", "train", "eval", "dagger")  # what a scenario's own keys may add to
# what per_scenario.NAME may hold: the stages' keys, a dagger config file, its own number of DAgger rounds
SCENARIO_KEYS = (*STAGES, "recipe", "rounds")
# `driving dagger` keys the scoreboard sets for every run, and where a user sets them instead
_OWNED = {"rounds": "the scoreboard's own key", "size": "the scoreboard's own key", "out": "out=",
          "scenario": "scenario=", "dataset": "collect.* (the scoreboard collects each scenario's dataset)",
          "collect": "collect.*", "train": "train.*", "eval": "eval.*",
          "round0": "`driving dagger round0=RUN` for one run (a scoreboard trains every seed's round 0)"}
# `driving dagger` keys a recipe file does not carry into the scoreboard: sizes and the machine's
_SIZES = ("episodes", "round_steps", "workers", "device")
# stage keys the scoreboard sets for every run, and where a user sets them instead
_STAGE_OWNED = {
    "collect": {"scenario": "use scenario= (a comma list)", "out": "use out= (every run goes under OUT/SCENARIO/)",
                "shard": "a scoreboard collects whole datasets (shard with `driving collect` outside it)"},
    "train": {"dataset": "it trains on the dataset it collects (set collect.* keys)",
              "out": "use out= (every run goes under OUT/SCENARIO/)", "seed": "use seeds=[...]"},
    "eval": {"scenario": "use scenario= (a comma list)", "out": "use out= (every run goes under OUT/SCENARIO/)",
             "expert_from": "every training seed is scored beside the first seed's expert",
             "shard": "a scoreboard scores every seed (shard with `driving eval` outside it)"}}
GAINS = ("driving_score", "collision_rate", "lane_changes", "mean_abs_lat_accel")
# Within reach of the expert (issue 11), on the mean over training seeds, against the expert on the
# same evaluation seeds: metric -> (how it compares, factor or margin)
TARGETS = {"driving_score": (">=x", 0.97), "collision_rate": ("<=+", 0.02), "lane_changes": (">=x", 0.7),
           "mean_abs_lat_accel": ("<=x", 1.5)}
_EPS = 1e-9  # a policy exactly at the bound meets it, whatever the float rounding of the product
_MEETS = {">=x": lambda p, e, v: p >= v * e - _EPS,   # at least v times the expert's
          "<=+": lambda p, e, v: p <= e + v + _EPS,   # at most the expert's plus v
          "<=x": lambda p, e, v: p <= v * e + _EPS}   # at most v times the expert's


def meets_targets(policy: dict, expert: dict) -> dict:
    """{metric: met?} for every target metric both sides have (means of {"mean": ...} entries)."""
    return {k: bool(_MEETS[how](policy[k]["mean"], expert[k]["mean"], v))
            for k, (how, v) in TARGETS.items() if k in policy and k in expert}


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
    rounds: int = 0  # DAgger rounds after BC per scenario and training seed (0: BC alone)
    dagger: dict[str, Any] = field(default_factory=dict)  # extra `driving dagger` keys: beta, episodes, ...
    # keys for one scenario only, on top of the common ones: {scenario: {collect|train|eval|dagger: {...}}}
    # (a recipe measured on one scenario without imposing it on the rest). `recipe: PATH` takes them from a
    # `driving dagger` config (e.g. configs/dagger/highway.yaml), so a measured recipe lives in one file;
    # the scenario's other keys go on top of it; `rounds: R` gives it R DAgger rounds instead of `rounds`
    per_scenario: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.size not in ("auto", "cpu", "cuda"):
            raise ValueError("size must be auto, cpu or cuda")
        if self.parallel < 0:
            raise ValueError("parallel must be >= 0 (0 = auto)")
        if not self.seeds:
            raise ValueError("seeds must list at least one training seed, e.g. seeds=[0,1,2]")
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds must be different training seeds >= 0, e.g. seeds=[0,1,2]; got {list(self.seeds)}")
        if self.rounds < 0:
            raise ValueError("rounds must be >= 0 (0: behaviour cloning alone)")
        for name, extra in self.per_scenario.items():
            bad = sorted(set(extra or {}) - set(SCENARIO_KEYS)) if isinstance(extra, dict) else ["(not a mapping)"]
            if bad:
                raise ValueError(f"per_scenario.{name}.{bad[0]}: a scenario's own keys go under "
                                 + ", ".join(f"per_scenario.{name}.{k}" for k in SCENARIO_KEYS))
            for stage in STAGES:
                keys = extra.get(stage)
                if keys is not None and not isinstance(keys, dict):
                    raise ValueError(f"per_scenario.{name}.{stage} is a group of keys, not {keys!r}: set its keys, "
                                     f"e.g. per_scenario.{name}.{stage}.KEY=VALUE")
            if (extra or {}).get("rounds") is not None:
                r = extra["rounds"]
                if not self.rounds:
                    raise ValueError(f"per_scenario.{name}.rounds gives a scenario its own number of DAgger rounds "
                                     "in a DAgger scoreboard: set rounds (e.g. rounds=2) too, or drop it")
                if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                    raise ValueError(f"per_scenario.{name}.rounds must be a whole number >= 1, got {r!r}")
            if (extra or {}).get("recipe") is not None:
                from omegaconf import OmegaConf

                own = {k: v for k, v in extra.items() if k != "recipe"}
                recipe = recipe_keys(f"per_scenario.{name}.recipe", extra["recipe"])
                self.per_scenario[name] = OmegaConf.to_container(OmegaConf.merge(recipe, own))  # own keys on top
        for where, keys in [("dagger", self.dagger), *((f"per_scenario.{n}.dagger", (e or {}).get("dagger") or {})
                                                       for n, e in self.per_scenario.items())]:
            refuse_owned(where, keys, {k: f"use {v} instead" for k, v in _OWNED.items()}, "the scoreboard")
            if keys and not self.rounds:
                raise ValueError(f"{where} keys are for DAgger rounds, and this scoreboard has none: "
                                 "set rounds (e.g. rounds=2), or drop them")
        for stage, owned in _STAGE_OWNED.items():
            refuse_owned(stage, getattr(self, stage), owned, "the scoreboard")
            for n, e in self.per_scenario.items():
                refuse_owned(f"per_scenario.{n}.{stage}", (e or {}).get(stage), owned, "the scoreboard")

    @property
    def scenarios(self) -> list[str]:
        return [s.strip() for s in self.scenario.split(",") if s.strip()]


def recipe_keys(where: str, path: str) -> dict:
    """A `driving dagger` config as a scenario's own keys ({collect, train, dagger}): the keys its file
    sets, less what the scoreboard decides for every scenario (scenario, out, dataset, rounds, the
    sizes and the machine, and the evaluation, which must be the same everywhere)."""
    from omegaconf import OmegaConf

    from driving.dagger import DaggerConfig

    if not Path(path).is_file():
        raise ValueError(f"{where}: no file {path}; name a `driving dagger` config, e.g. "
                         "configs/dagger/highway.yaml (a relative path starts where you run the command)")
    try:
        load_config(DaggerConfig, path, ["out=unused"])
    except UserError as e:
        raise ValueError(f"{where}: {path} is not a `driving dagger` config ({e})") from None
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
    keys = {k: raw[k] for k in ("collect", "train") if raw.get(k)}
    dagger = {k: v for k, v in raw.items() if k not in (*_OWNED, *_SIZES)}
    return {**keys, **({"dagger": dagger} if dagger else {})}


def hardware() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "python": platform.python_version()}


def run_scoreboard(cfg: ScoreboardConfig, progress: bool = True, command: str | None = None) -> dict:
    with writing(cfg.out, "driving scoreboard", holds="a scoreboard"):
        return _run_scoreboard(cfg, progress, command)


def resolve_stages(cfg: ScoreboardConfig) -> tuple[str, dict, dict]:
    """(what the sizes are for, the sizes, {scenario: (collect config, [(seed, train, eval, dagger or
    None)])}): every config resolved, and every bad key refused, before the first stage runs."""
    from driving.dagger import DaggerConfig, refuse_round_keys
    from driving.data.collect import CollectConfig
    from driving.demo import sizes_for
    from driving.evaluate import EvalConfig, check_scenarios, probe_eval_env
    from driving.policy import pick_device
    from driving.train import TrainConfig

    check_scenarios(cfg.scenarios)
    if cfg.per_scenario:
        check_scenarios(list(cfg.per_scenario))
    found, sizes = sizes_for(cfg.size)
    out = Path(cfg.out)
    stages = {}
    # a scenario's own keys are checked where it is not run too (a config file for all six, run on some)
    unused = [n for n in cfg.per_scenario if n not in cfg.scenarios]
    for name in [*cfg.scenarios, *unused]:
        own = cfg.per_scenario.get(name) or {}
        keys = {k: [*as_overrides(getattr(cfg, k)), *as_overrides(own.get(k) or {})] for k in STAGES}
        # where a stage's keys come from, named in an error about them
        group = {k: k + (f".* or per_scenario.{name}.{k}" if own.get(k) else "") for k in STAGES}
        data = out / name / "data"
        c = load_config(CollectConfig, None, [f"scenario={name}", f"out={data}", *sizes["collect"], *keys["collect"]],
                        group=group["collect"])
        # every training seed is scored on the same seeds beside the same expert: the first seed's
        # evaluation drives it, the others take its episodes (evaluate's expert_from)
        first = out / name / f"seed{cfg.seeds[0]}" / ("round0" if cfg.rounds else "") / "eval"
        runs = []
        for i, seed in enumerate(cfg.seeds):
            run = out / name / f"seed{seed}"
            shared = [f"expert_from={first}"] if i else []
            t = load_config(TrainConfig, None, [f"dataset={data}", f"out={run / 'run'}", f"seed={seed}",
                                                "wandb.mode=offline", *sizes["train"], *keys["train"]],
                            group=group["train"])
            e = load_config(EvalConfig, None, [f"scenario={name}", f"out={run / 'eval'}", *sizes["eval"],
                                               *keys["eval"], *shared], group=group["eval"])
            pick_device(t.device), pick_device(e.device)  # refused now, not after the collection
            if i == 0:
                probe_eval_env(e)
            d = None
            if cfg.rounds:  # the same BC run as round 0, then the rounds, all under run/
                refuse_round_keys(t)
                d = load_config(DaggerConfig, None, [
                    f"scenario={name}", f"dataset={data}", f"out={run}", f"rounds={own.get('rounds') or cfg.rounds}",
                    f"size={cfg.size}",
                    f"train.seed={seed}", *(f"train.{k}" for k in keys["train"]),
                    *(f"eval.{k}" for k in [*keys["eval"], *shared]), *keys["dagger"]])
            runs.append((seed, t, e, d))
        if name in cfg.scenarios:
            stages[name] = (c, runs)
    return found, sizes, stages


def _run_scoreboard(cfg: ScoreboardConfig, progress: bool = True, command: str | None = None) -> dict:
    from driving.sizes_on_disk import refuse_smaller

    found, sizes, stages = resolve_stages(cfg)
    # a re-run asking for less than a stage holds (the rounds' own stages: checked by dagger as it starts)
    refuse_smaller(datasets=[(c.out, c.episodes, "collect.episodes") for c, _ in stages.values()],
                   runs=[(Path(d.out) / "round0" / "run" if d else t.out, t.steps, "train.steps")
                         for _, runs in stages.values() for _, t, _, d in runs])
    out = Path(cfg.out)
    parallel = min(len(stages), cfg.parallel or auto_parallel(found))
    # the machine's sizes, with the stage keys given on top (the line said episodes=100 where 3 ran)
    given = {k: dict(o.split("=", 1) for o in as_overrides(getattr(cfg, k))) for k in sizes}
    shown = {k: [f"{key}={given[k].get(key, v)}" for key, v in (i.split("=", 1) for i in items)]
             for k, items in sizes.items()}
    print(f"scoreboard sizes for {found}: " + "; ".join(f"{k} " + " ".join(v) for k, v in shown.items())
          + (f"; {parallel} scenarios at once" if parallel > 1 else ""))
    t0 = time.perf_counter()
    # seconds per kind of stage, summed over scenarios (dagger: training, driving and evaluating its rounds)
    spent = {"collect": 0.0, "train": 0.0, "eval": 0.0, "dagger": 0.0}
    if parallel <= 1:
        for name, (c, runs) in stages.items():
            for k, v in run_scenario(name, c, runs, progress).items():
                spent[k] += v
    else:
        from driving.interrupts import run_stoppable

        # the slowest scenarios first, so none of them starts last (the order of the table stays)
        order = sorted(stages, key=lambda n: -_COST.get(n, 1.0))
        for times in run_stoppable(run_scenario, [(n, *stages[n], False) for n in order], parallel):
            for k, v in times.items():
                spent[k] += v
    board = summarise(cfg, stages, found, command, time.perf_counter() - t0)
    note_dropped_rows(out, board)
    board["parallel"] = parallel
    kinds = ("collect", "dagger") if cfg.rounds else ("collect", "train", "eval")
    board["stage_s"] = {k: round(spent[k], 1) for k in kinds}
    atomic.write_json(out / "scoreboard.json", board)
    atomic.write_bytes(out / "scoreboard.md", markdown(board).encode())
    return board


def note_dropped_rows(out: Path, board: dict) -> None:
    """The table is this run's scenarios: rows an earlier run into the same folder had for others are named
    as they leave it (one scenario at a time into one out= kept only the last; their stages stay on disk)."""
    from driving.jsonfile import read_json

    try:
        old = read_json(out / "scoreboard.json", dict)
    except UserError:  # none, or damaged: nothing to name
        return
    gone = [n for n in (old.get("scenarios") or {}) if n not in board["scenarios"]]
    if gone:
        print(f"note: {out / 'scoreboard.md'} had rows for {', '.join(gone)}, which this run does not list: the "
              f"table now holds {', '.join(board['scenarios'])} only (their stages stay in {out}; list every "
              "scenario in scenario= to table them together)", file=sys.stderr)


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
    from driving.dagger import run_dagger
    from driving.data.collect import collect
    from driving.evaluate import evaluate, finished_evaluation
    from driving.train import train

    spent = {"collect": 0.0, "train": 0.0, "eval": 0.0, "dagger": 0.0}

    def timed(kind, fn, *args, **kw):
        t = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            spent[kind] += time.perf_counter() - t

    print(f"== {name}: collect {c.episodes} episodes", flush=True)
    timed("collect", collect, c, progress=progress)
    for seed, t, e, d in runs:
        if d is not None:
            print(f"== {name}: seed {seed}: BC and {d.rounds} DAgger rounds, each evaluated on {e.episodes} seeds",
                  flush=True)
            timed("dagger", run_dagger, d, progress=progress, keys="dagger.",
                  command=f"driving scoreboard (scenario {name}, training seed {seed})")
            continue
        print(f"== {name}: train seed {seed} ({t.steps} steps), evaluate {e.episodes} seeds", flush=True)
        result = timed("train", train, t, progress=progress)
        ckpt = chosen(result["run_dir"])
        if not finished_evaluation(ckpt, e):
            timed("eval", evaluate, str(ckpt), e, progress=progress, note_replaced=False)
    print(f"== {name}: done ({', '.join(f'{k} {v:.0f} s' for k, v in spent.items() if v)})", flush=True)
    return spent


def summarise(cfg: ScoreboardConfig, stages: dict, found: str, command: str | None, wall_s: float) -> dict:
    """Per scenario: the policy (the scenario's last DAgger round where there are rounds) as the mean over
    training seeds, the expert on the same seeds, the targets met; with rounds, BC beside it and the gain."""
    from driving.jsonfile import read_json
    from sim.metrics import mean_ci, metric_range

    again = "re-run the same command to evaluate again"

    def over_seeds(evals: list, name: str) -> dict:
        aggs = [ev["scenarios"][name]["aggregate"] for ev in evals]
        return {k: mean_ci([a["policy"][k]["mean"] for a in aggs], **metric_range(k))
                for k in SUMMARY if k in aggs[0]["policy"]}

    rows = {}
    for name, (_, runs) in stages.items():
        boards = [read_json(Path(d.out) / "rounds.json", dict, again) for _, _, _, d in runs] if cfg.rounds else []
        if boards:
            evals = [read_json(Path(b["rounds"][-1]["eval_dir"]) / "eval.json", dict, again) for b in boards]
        else:
            evals = [read_json(Path(e.out) / "eval.json", dict, again) for _, _, e, _ in runs]
        policy = over_seeds(evals, name)
        reference = evals[0]["scenarios"][name]["aggregate"]["expert"]  # every seed's: the same episodes
        expert = {k: reference[k] for k in SUMMARY if k in reference}
        rows[name] = {"policy": policy, "expert": expert, "targets": meets_targets(policy, expert),
                      "training_seeds": [r[0] for r in runs], "eval_episodes": runs[0][2].episodes,
                      "checkpoints": [ev["checkpoint"] for ev in evals]}
        if boards:
            bc = over_seeds([read_json(Path(b["rounds"][0]["eval_dir"]) / "eval.json", dict, again) for b in boards],
                            name)
            gains = [b["rounds"][-1]["gain_over_bc"] for b in boards]
            rows[name].update({
                "rounds": runs[0][3].rounds, "bc": bc, "bc_targets": meets_targets(bc, expert),
                # one training seed: the paired interval over evaluation seeds; several: over training seeds
                "gain_over_bc": {k: gains[0][k] if len(gains) == 1 else mean_ci([g[k]["mean"] for g in gains])
                                 for k in GAINS if all(k in g for g in gains)},
                "gain_interval_over": "evaluation seeds" if len(gains) == 1 else "training seeds"})
    return {"config": to_dict(cfg), "sizes": found, "hardware": hardware(), "wall_s": wall_s,
            "command": command or "driving scoreboard " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
            "targets": {k: list(v) for k, v in TARGETS.items()}, "scenarios": rows}


def _cell(m: dict, fmt: str) -> str:
    if m["n"] <= 1:
        return fmt.format(m["mean"])
    return f"{fmt.format(m['mean'])} [{fmt.format(m['ci_low'])}, {fmt.format(m['ci_high'])}]"


_NAMES = {"driving_score": "driving score", "collision_rate": "collisions", "lane_changes": "lane changes",
          "mean_abs_lat_accel": "lateral accel"}


def _targets_cell(met: dict) -> str:
    missed = [_NAMES[k] for k, ok in met.items() if not ok]
    return f"all {len(met)}" if not missed else "misses " + ", ".join(missed)


def markdown(board: dict) -> str:
    hw = board["hardware"]
    rounds = next(iter(board["scenarios"].values())).get("rounds", 0)
    lines = ["| scenario | policy | driving score | expert | collisions | expert | lane changes/ep | expert "
             "| mean abs lat. accel m/s² | expert | targets met |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, label, p, e, met):
        return (f"| {name} | {label} | {_cell(p['driving_score'], '{:.3f}')} | {e['driving_score']['mean']:.3f} "
                f"| {_cell(p['collision_rate'], '{:.0%}')} | {e['collision_rate']['mean']:.0%} "
                f"| {_cell(p['lane_changes'], '{:.2f}')} | {e['lane_changes']['mean']:.2f} "
                f"| {_cell(p['mean_abs_lat_accel'], '{:.2f}')} | {e['mean_abs_lat_accel']['mean']:.2f} "
                f"| {_targets_cell(met)} |")

    for name, r in board["scenarios"].items():
        if rounds:
            lines.append(row(name, "BC", r["bc"], r["expert"], r["bc_targets"]))
        lines.append(row(name, f"DAgger round {r['rounds']}" if rounds else "BC", r["policy"], r["expert"],
                         r["targets"]))
    first = next(iter(board["scenarios"].values()))
    if rounds:
        last = {r["rounds"] for r in board["scenarios"].values()}
        which = f"DAgger round {rounds}" if len(last) == 1 else "each scenario's last DAgger round"
        lines += ["", f"Gain of {which} over BC (paired by evaluation seed; mean [95% interval over "
                      f"{first['gain_interval_over']}]):", "",
                  "| scenario | driving score | collisions | lane changes/ep | mean abs lat. accel m/s² |",
                  "|---|---|---|---|---|"]
        for name, r in board["scenarios"].items():
            g = r["gain_over_bc"]
            cells = [_cell(g[k], fmt) if k in g else "—" for k, fmt in
                     (("driving_score", "{:+.3f}"), ("collision_rate", "{:+.2f}"), ("lane_changes", "{:+.2f}"),
                      ("mean_abs_lat_accel", "{:+.2f}"))]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    counts = {name: r["eval_episodes"] for name, r in board["scenarios"].items()}
    seeds = (f"{first['eval_episodes']} held-out seeds" if len(set(counts.values())) == 1 else
             "its scenario's held-out seeds (" + ", ".join(f"{n} {c}" for n, c in counts.items()) + ")")
    lines += ["", f"Policy: mean over training seeds {first['training_seeds']} (95% t interval where there are "
                  f"several), each evaluated on {seeds} beside the expert. "
                  "Targets, on the mean: driving score >= 0.97 x the expert's, collisions <= the expert's + 2 "
                  "points, lane changes >= 0.7 x, mean abs lateral acceleration <= 1.5 x. "
                  f"Sizes: {board['sizes']}. Hardware: {hw['cpu_cores']} CPU cores, GPU {hw['gpu'] or 'none'}, "
                  f"torch {hw['torch']}. Wall {board['wall_s'] / 60:.1f} min (this invocation)"
                  + (f" with {board['parallel']} scenarios at once" if board.get("parallel", 1) > 1 else "")
                  + (" (summed over scenarios: " + ", ".join(f"{k} {v:.0f} s" for k, v in board["stage_s"].items())
                     + ")" if board.get("stage_s") else "") + ".", "",
              f"`{board['command']}`"]
    return "\n".join(lines) + "\n"

