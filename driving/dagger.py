"""`driving dagger`: the student drives, the expert (round 0's dataset's, seeing what the camera shows by
default) labels every state it reaches.

Round 0 is behaviour cloning with DART noise on a collected dataset (given, or collected here), or
a BC run trained before (`round0=RUN`: scored beside the expert, not trained again).
In round r = 1..R the checkpoint of round r-1 drives `episodes` episodes with the expert's share
beta_r (per step, the expert's action is executed with probability beta_r; `takeover` > 0 also hands
the expert the wheel while the two disagree by more than it). The expert labels every step and the
round is written as a dataset of the usual format, whose meta records the round, the checkpoint that
drove and beta. The round's policy is the previous one fine-tuned (`init_from`) on every dataset so
far. Every round is scored closed loop on the same fixed seeds beside the expert.

    OUT/round0/data  (when collected here)   OUT/roundR/data   the student's episodes, expert labels
    OUT/roundR/run   training run            OUT/roundR/eval   eval.json, report, video
    OUT/rounds.json, OUT/rounds.md           the per-round table (also printed)

Each stage resumes by itself (collection and DAgger episodes are written one by one, training picks
up at its last checkpoint, a finished evaluation of the same checkpoint is kept): after a kill, the
same command goes on where it stopped without redoing finished rounds.
"""
from __future__ import annotations

import math
import os
import re

import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from driving import atomic
from driving.config import (ENVS_PER_WORKER, as_overrides, check_envs_per_worker, load_config, refuse_owned,
                            to_dict)
from driving.data.collect import NoiseConfig
from driving.errors import UserError
from driving.folder_lock import writing

ROUND_SEED = 100_000  # the student's episodes of round r use seeds r * ROUND_SEED + i: apart from collection
# (0..), training-time (2e6..) and final evaluation (1e6..) seeds
# stage keys the command sets for every round, and where a user sets them instead
OWNED = {"collect": {"scenario": "use scenario=", "out": "use out= (round 0 collects into OUT/round0/data)"},
         "train": {"dataset": "use dataset= (round 0's data; every round adds its own)",
                   "out": "use out= (round R trains in OUT/roundR/run)"},
         "eval": {"out": "use out= (round R is scored in OUT/roundR/eval)"}}
TABLE = ("driving_score", "collision_rate", "lane_changes", "mean_abs_lat_accel", "min_ttc_s")


@dataclass
class DaggerConfig:
    scenario: Optional[str] = None  # default: the dataset's, or highway when round 0 collects
    out: str = "runs/dagger"
    dataset: Optional[str] = None  # round 0's demonstrations; None: collected into OUT/round0/data
    # a finished `driving train` run (its folder) to be round 0: scored, not trained again; its dataset
    # is round 0's data and its config the rounds' training keys (device and threads this machine's
    # defaults; train.* on top)
    round0: Optional[str] = None
    rounds: int = 2  # DAgger rounds after round 0
    beta: list[float] = field(default_factory=lambda: [0.5, 0.0])  # expert share in rounds 1, 2, ...; last repeats
    takeover: float = 0.0  # > 0: the expert drives while |student - expert| exceeds it (normalised units)
    # the executed action's noise in DAgger rounds (round 0 collects with the collect config's own)
    noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(steer=0.0, accel=0.0))
    # which rounds get that noise: all, or alone (only where beta is 0 and the student drives alone:
    # on highway, steering noise there lowered round 2's weaving in 6 of 6 runs; docs/FIGURES.md)
    noise_rounds: str = "all"
    episodes: int = 0  # student episodes per round; 0: half of round 0's collection size
    round_steps: int = 0  # training steps of each fine-tuning round; 0: half of round 0's
    # how a fine-tuning round samples its datasets: frames (uniform over every frame so far) or rounds
    # (round 0's demonstrations and every student round an equal share of a batch: where the student
    # crashes early its rounds are short, and by frames their states hardly reach the batches)
    shares: str = "frames"
    workers: int = 0  # worker processes for the student's episodes; 0: one per core
    envs_per_worker: int = ENVS_PER_WORKER  # envs in each: a worker steps one while another waits for its action
    device: str = "auto"  # where the student drives
    size: str = "auto"  # auto | cpu | cuda: the demo's sizes for round 0 (collect, train, eval)
    collect: dict[str, Any] = field(default_factory=dict)  # extra `driving collect` keys for round 0
    train: dict[str, Any] = field(default_factory=dict)  # extra `driving train` keys for every round
    eval: dict[str, Any] = field(default_factory=dict)  # extra `driving eval` keys for every round

    def __post_init__(self):
        if self.rounds < 0 or self.rounds >= 1_000_000 // ROUND_SEED:
            raise ValueError(f"rounds must be in 0..{1_000_000 // ROUND_SEED - 1}")
        if not self.beta or any(not 0.0 <= b <= 1.0 for b in self.beta):
            raise ValueError(f"beta (the expert's share per round) must list values in [0, 1], e.g. "
                             f"beta=[0.5,0.0]; got {self.beta}")
        if not (self.takeover >= 0 and math.isfinite(self.takeover)):
            raise ValueError("takeover must be a number >= 0 (0: no takeover)")
        if not 0 <= self.episodes < ROUND_SEED:
            raise ValueError(f"episodes must be in 0..{ROUND_SEED - 1} (0: half of round 0's collection)")
        if self.round_steps < 0:
            raise ValueError("round_steps must be >= 0 (0: half of round 0's)")
        if self.workers < 0:
            raise ValueError("workers must be >= 0 (0 = one per core)")
        check_envs_per_worker("", self.envs_per_worker)
        if self.size not in ("auto", "cpu", "cuda"):
            raise ValueError("size must be auto, cpu or cuda")
        if self.shares not in ("frames", "rounds"):
            raise ValueError(f"shares must be frames (uniform over every frame) or rounds (every round's "
                             f"dataset an equal share), got {self.shares!r}")
        if self.noise_rounds not in ("all", "alone"):
            raise ValueError(f"noise_rounds must be all or alone (only the rounds where beta is 0), "
                             f"got {self.noise_rounds!r}")
        for section, owned in OWNED.items():
            refuse_owned(section, getattr(self, section), owned, "driving dagger")

    def beta_of(self, r: int) -> float:
        return self.beta[min(r, len(self.beta)) - 1]

    def noise_of(self, beta: float) -> NoiseConfig:
        """The executed action's noise in a round with expert share `beta`."""
        if self.noise_rounds == "alone" and beta > 0:
            return replace(self.noise, steer=0.0, accel=0.0)
        return self.noise


def round_seeds(r: int, episodes: int) -> list[int]:
    return [r * ROUND_SEED + i for i in range(episodes)]


# -- one round's data: the student drives, the expert labels ----------------------------------------
def drive_round(ckpt: str | Path, base_meta: dict, root: Path, r: int, beta: float, seeds: list[int],
                cfg: DaggerConfig, progress: bool = True) -> Path:
    """The checkpoint drives `seeds` in the scenario of round 0's dataset (its camera, expert and env
    overrides) with the expert's share `beta`; every step is labelled by the expert and written to the
    dataset `root` (resumable: episodes on disk are kept)."""
    with writing(root, "driving dagger (a round's dataset)"):
        return _drive_round(ckpt, base_meta, root, r, beta, seeds, cfg, progress)


def _drive_round(ckpt: str | Path, base_meta: dict, root: Path, r: int, beta: float, seeds: list[int],
                 cfg: DaggerConfig, progress: bool = True) -> Path:
    from driving.checkpoint import resolve
    from driving.data.collect import (
        dataset_meta,
        episode_arrays,
        finished_episodes,
        open_dataset,
        write_index,
    )
    from driving.data.format import write_episode
    from driving.envpool import build_env
    from driving.evaluate import open_pool, run_episodes
    from driving.policy import load_policy
    from driving.rollout import MixtureActor
    from sim import get_scenario

    ckpt = resolve(ckpt)
    camera = dict(base_meta["camera"])
    scenario = base_meta["scenario"]["name"]
    source = base_meta["config"] if isinstance(base_meta.get("config"), dict) else {}
    env_over, max_steps = dict(source.get("env") or {}), source.get("max_steps")
    expert = dict(base_meta["expert"])
    policy = load_policy(ckpt, device=cfg.device)
    meta = policy.meta
    policy.check_camera(camera)  # a checkpoint for another camera: one line, before any work
    if meta.get("scenario") != scenario:
        raise UserError(f"checkpoint {ckpt} was trained on {meta.get('scenario')}, round 0's dataset is "
                        f"{scenario}: DAgger rounds continue one scenario")
    run_camera = {**camera, "stack": max(camera.get("stack", 1), policy.stack)}
    noise_cfg = cfg.noise_of(beta)
    noise = to_dict(noise_cfg)
    identity = {"dagger_round": r, "scenario": scenario, "checkpoint": str(ckpt), "run_id": meta.get("run_id"),
                "step": meta.get("step"), "beta": beta, "takeover": cfg.takeover, "noise": noise,
                "first_seed": seeds[0] if seeds else None, "camera": camera, "expert": expert, "env": env_over,
                "max_steps": max_steps}
    probe = build_env(scenario, camera, max_steps, env=env_over, expert=expert)
    try:
        dmeta = dataset_meta(probe, camera, noise, identity,
                             dagger={"round": r, "checkpoint": str(ckpt), "beta": beta, "takeover": cfg.takeover})
    finally:
        probe.close()
    root.mkdir(parents=True, exist_ok=True)
    dmeta = open_dataset(root, dmeta, how="the checkpoint or beta of this round changed; delete the "
                                         "round's folder to drive it again")
    rows = finished_episodes(root, list(enumerate(seeds)))
    episode_of = {s: i for i, s in enumerate(seeds)}
    todo = [s for i, s in enumerate(seeds) if i not in rows]
    write_index(root, rows, dmeta)
    if not todo:
        return root
    actor = MixtureActor(policy.for_scenario(get_scenario(scenario)), beta,
                         noise_cfg, cfg.takeover)

    def write(record: dict) -> dict:
        episode = episode_of[record["seed"]]
        steps, summary = episode_arrays(record)
        steps["student_action"] = record["student_actions"]
        summary["expert_share"] = float(np.mean(record["expert_chose"])) if len(record["expert_chose"]) else 0.0
        rows[episode] = write_episode(root, episode, steps, summary, dmeta)
        write_index(root, rows, dmeta)
        return {k: v for k, v in record.items() if k != "frames"}  # frames are on disk now

    with open_pool(scenario, run_camera, cfg.workers, len(todo), max_steps, env_over, expert,
                   envs_per_worker=cfg.envs_per_worker) as pool:
        run_episodes(actor, scenario, todo, run_camera, cfg.workers, max_steps, progress,
                     f"round {r} student (beta {beta:g})", pool=pool, keep_frames=True, on_record=write)
    return root


# -- the command -------------------------------------------------------------------------------------
def refuse_round_keys(train_cfg) -> None:
    """Training keys the rounds set themselves, refused when a user gives them (here and in a DAgger
    scoreboard, before anything is collected)."""
    if train_cfg.init_from:
        raise UserError("train.init_from is set by the rounds themselves: drop it")
    if train_cfg.dataset_weights is not None:
        raise UserError("train.dataset_weights is set by the rounds themselves (one share per round's "
                        "dataset): drop it, and choose with shares=frames|rounds")


def resolve_stages(cfg: DaggerConfig) -> dict:
    """Every stage's config, resolved (and every bad key refused) before any work starts."""
    from driving.data.collect import CollectConfig
    from driving.data.format import Dataset
    from driving.demo import sizes_for
    from driving.evaluate import EvalConfig, check_scenarios, probe_eval_env
    from driving.policy import pick_device
    from driving.train import TrainConfig

    found, sizes = sizes_for(cfg.size)
    pick_device(cfg.device)  # a bad device is refused now, not at round 0's evaluation
    out = Path(cfg.out)
    collect_cfg = None
    _refuse_another_round0(cfg)
    run0 = _trained_round0(cfg) if cfg.round0 is not None else None
    if run0 is not None or cfg.dataset is not None:
        # round 0 does not collect: its keys are still checked (a recipe file's noise keys are welcome)
        load_config(CollectConfig, None, ["out=unused", *as_overrides(cfg.collect)], group="collect")
    if run0 is not None:
        data0, base = run0["data"], run0["dataset"]
        scenario = base.meta["scenario"]["name"]
        if cfg.scenario is not None and cfg.scenario != scenario:
            raise UserError(f"round0 {cfg.round0} was trained on {scenario} data, scenario={cfg.scenario}: set "
                            f"scenario={scenario} (or leave it unset), or pass a run of {cfg.scenario}")
        collected = len(base)
    elif cfg.dataset is not None:
        base = Dataset.open(cfg.dataset)
        if len(base) == 0:
            raise UserError(f"dataset {cfg.dataset} has no episodes: collect some with `driving collect`")
        scenario = base.meta["scenario"]["name"]
        if cfg.scenario is not None and cfg.scenario != scenario:
            raise UserError(f"dataset {cfg.dataset} was collected on {scenario}, scenario={cfg.scenario}: "
                            "leave scenario unset or pass a dataset of that scenario")
        data0 = Path(cfg.dataset)
        collected = len(base)
    else:
        scenario = cfg.scenario or "highway"
        check_scenarios([scenario])
        data0 = out / "round0" / "data"
        collect_cfg = load_config(CollectConfig, None, [f"scenario={scenario}", f"out={data0}", *sizes["collect"],
                                                        *as_overrides(cfg.collect)], group="collect")
        collected = collect_cfg.episodes
    if collect_cfg is None:
        note_unused_collect_keys(cfg, base.meta, len(base), data0, scenario)
    train_over = ["wandb.mode=offline", *sizes["train"], *as_overrides(cfg.train)]
    if run0 is not None:
        # the rounds fine-tune with the run's own keys; the machine's (device, threads) are this command's
        # defaults, not those of the machine that trained it; train.* on top
        train0 = load_config(TrainConfig, run0["config"], [f"dataset={data0}", f"out={run0['run']}", "device=auto",
                                                           "threads=0", "wandb.mode=offline", *as_overrides(cfg.train)],
                             group="train")
        refuse_round_keys(load_config(TrainConfig, None, [f"dataset={data0}", "out=unused", *as_overrides(cfg.train)]))
        pick_device(train0.device)
        _refuse_other_model(cfg, train0)
    else:
        train0 = load_config(TrainConfig, None, [f"dataset={data0}", f"out={out / 'round0' / 'run'}", *train_over],
                             group="train")
        refuse_round_keys(train0)
    steps = cfg.round_steps or max(1, train0.steps // 2)
    episodes = cfg.episodes or max(1, collected // 2)
    ev = load_config(EvalConfig, None, [f"scenario={scenario}", f"device={cfg.device}", *sizes["eval"],
                                        *as_overrides(cfg.eval)], group="eval")
    if ev.scenarios != [scenario]:
        raise UserError(f"eval.scenario must be the rounds' scenario {scenario}: drop eval.scenario")
    probe_eval_env(ev)
    rounds = []
    for r in range(cfg.rounds + 1):
        # the rounds are scored on round 0's seeds beside the same expert: its episodes are driven once
        scored = replace(ev, out=str(out / f"round{r}" / "eval"),
                         expert_from=str(out / "round0" / "eval") if r else ev.expert_from)
        rounds.append({"round": r, "eval": scored, "beta": None if r == 0 else cfg.beta_of(r),
                       "data": data0 if r == 0 else out / f"round{r}" / "data",
                       "seeds": [] if r == 0 else round_seeds(r, episodes)})
    datasets = [str(x["data"]) for x in rounds]
    for r, x in enumerate(rounds):  # init_from is set when the round starts: `best` exists only then
        x["train"] = train0 if r == 0 else replace(
            train0, dataset=datasets[:r + 1], steps=steps, out=str(out / f"round{r}" / "run"),
            dataset_weights=[1.0] * (r + 1) if cfg.shares == "rounds" else None)
    if run0 is not None:
        rounds[0]["train"] = None  # trained before: only scored here
        rounds[0]["run"] = run0["run"]
        found = f"round 0 from {cfg.round0}; {found}"
    return {"found": found, "scenario": scenario, "collect": collect_cfg, "data0": data0, "rounds": rounds,
            "episodes": episodes, "round_steps": steps}


def note_unused_collect_keys(cfg: DaggerConfig, meta: dict, episodes: int, data0: Path, scenario: str) -> None:
    """collect.* keys apply only where round 0 collects. With dataset= or round0= they are unused (a recipe
    file carries them, so they are not refused): each that the given demonstrations were not collected
    with is named, since round 0 trains on those as they are."""
    from driving.data.collect import CollectConfig, identity

    given = identity(load_config(CollectConfig, None, [f"scenario={scenario}", "out=unused",
                                                       *as_overrides(cfg.collect)], group="collect"))
    had = meta.get("config") or {}
    differ = []
    for key in (o.split("=", 1)[0] for o in as_overrides(cfg.collect)):
        if key == "episodes":  # (how many: not in the config it recorded)
            if cfg.collect["episodes"] != episodes:
                differ.append(f"collect.episodes={cfg.collect['episodes']} where they are {episodes}")
            continue
        a, b = had, given
        for part in key.split("."):
            a = a.get(part, _MISSING) if isinstance(a, dict) else _MISSING
            b = b.get(part, _MISSING) if isinstance(b, dict) else _MISSING
        if a is _MISSING and key.split(".")[0] in ("env", "expert") and b is not _MISSING:
            differ.append(f"collect.{key}={b} where they had the scenario's own")  # (those dicts hold only what was set)
        elif _MISSING not in (a, b) and a != b:  # (keys of how it runs, e.g. workers, are in neither)
            differ.append(f"collect.{key}={b} where they had {a}")
    if differ:
        print(f"note: round 0 trains on {data0} as collected: {', '.join(differ)} (collect.* keys apply only "
              "where round 0 collects; drop dataset= and round0= to collect with them)", file=sys.stderr)


_MISSING = object()


def _refuse_other_model(cfg: DaggerConfig, train0) -> None:
    """Round 1 fine-tunes round 0's checkpoint: a model the train.* keys change is refused now, not
    after round 0's evaluation and round 1's episodes."""
    from driving import checkpoint
    from driving.train import model_diff

    diff = model_diff(train0, checkpoint.load_meta(checkpoint.resolve(checkpoint.chosen(cfg.round0))))
    if diff:
        raise UserError(f"the rounds fine-tune round0 {cfg.round0}, whose model differs from the rounds' train keys "
                        f"({diff}): set train.model and train.net.* as it was trained (or drop them)")


def _refuse_another_round0(cfg: DaggerConfig) -> None:
    """A DAgger folder re-run with round0 where it trained its own round 0, or the reverse, is refused
    before anything is collected or trained (its rounds went on from the other round 0)."""
    from omegaconf import OmegaConf

    recorded = Path(cfg.out) / "config.yaml"
    if not recorded.is_file():
        return
    try:
        before = OmegaConf.to_container(OmegaConf.load(recorded)).get("round0")
    except Exception:  # an unreadable record: the stages' own checks still apply
        return
    if (before is None) != (cfg.round0 is None):
        was = f"round0={before}" if before is not None else "its own round 0 (no round0)"
        raise UserError(f"{cfg.out} holds a DAgger run that went on from {was}: re-run it the same way to go on, "
                        "or use another out= folder")


def _trained_round0(cfg: DaggerConfig) -> dict:
    """The `round0` run: its folder, config file and dataset, refused unless it finished
    training and its dataset is found (where `dataset=` is given, the one the run was trained on)."""
    from driving import checkpoint
    from driving.data.format import Dataset
    from driving.data.tensors import fingerprint
    from driving.train import TrainConfig

    run = Path(cfg.round0)
    config = run / "config.yaml"
    last = run / "checkpoints" / "last"
    if not (last.exists() or last.is_symlink()) or not config.is_file():
        raise UserError(f"round0 {run} is not a `driving train` run folder (no checkpoints/last and config.yaml): "
                        "pass the out= folder of a finished `driving train`, or drop round0")
    inside = _nested(run, Path(cfg.out))
    if inside:
        raise UserError(f"round0 {run} and out={cfg.out} {inside}: the rounds write under out=, so give them a "
                        "folder apart from the run")
    repair = f"`driving train {config}` repairs it (and resumes the run), or drop round0"
    if last.is_symlink() and not last.exists():
        raise UserError(f"round0 {run}: checkpoints/last points to {os.readlink(last)}, which is missing: {repair}")
    last = checkpoint.resolve(last)
    meta = checkpoint.load_meta(last, f"round0 {run}'s last checkpoint cannot be read: {repair}")
    trained = load_config(TrainConfig, config, [], group=str(config))
    if meta["step"] < trained.steps:
        raise UserError(f"round0 {run} stopped at step {meta['step']} of its {trained.steps}: finish it first "
                        f"(`driving train {config}` resumes it), or drop round0")
    if len(trained.datasets) != 1:
        raise UserError(f"round0 {run} was trained on {len(trained.datasets)} datasets: DAgger's round 0 is one "
                        "dataset of demonstrations; pass a run trained on one, or drop round0")
    data = Path(cfg.dataset if cfg.dataset is not None else trained.datasets[0])
    if not (data / "meta.json").is_file():
        raise UserError(f"round0 {run} was trained on {trained.datasets[0]}, not found from here: run from the "
                        "folder it was trained in, or pass dataset=PATH where that dataset is now")
    base = Dataset.open(data)
    if fingerprint(base) != meta["dataset"]["fingerprint"]:
        if cfg.dataset is None:
            raise UserError(f"round0 {run} was trained on {data}, which holds other episodes now (extended or "
                            "collected again since): pass dataset=PATH of the episodes it was trained on, or drop "
                            "round0")
        raise UserError(f"dataset {data} holds other episodes than round0 {run} was trained on "
                        f"({meta['dataset']['path']}): pass that dataset, or drop dataset= to use it")
    return {"run": run, "config": config, "data": data, "dataset": base}


def _nested(run: Path, out: Path) -> str:
    """How the folders `run` and `out` overlap where the rounds would write into the run ("" where
    they do not): one folder, out= inside the run, or the run inside a round's folder OUT/roundR."""
    run, out = run.resolve(), out.resolve()
    if run == out:
        return "are one folder"
    if run in out.parents:
        return "overlap (out= lies inside the run)"
    if out in run.parents and re.fullmatch(r"round\d+", run.relative_to(out).parts[0]):
        return f"overlap (the run lies in {out.name}/{run.relative_to(out).parts[0]}, where a round writes)"
    return ""


def chosen_path(out: Path, r: int, round0: str | None = None) -> Path:
    """The checkpoint round r hands on (its training run's `best`, else `last`), as a stable path;
    round 0's is the `round0` run's where one is given."""
    from driving.checkpoint import chosen

    return chosen(round0 if r == 0 and round0 is not None else out / f"round{r}" / "run")


def run_dagger(cfg: DaggerConfig, progress: bool = True, command: str | None = None, keys: str = "") -> dict:
    """`keys`: how the command that runs it names dagger's own keys in messages (a scoreboard: `dagger.`)."""
    with writing(cfg.out, "driving dagger", holds="a DAgger run"):
        return _run_dagger(cfg, progress, command, keys)


def refuse_smaller_rerun(plan: dict, keys: str = "") -> None:
    """A re-run over the same folder that asks for fewer episodes or steps than a stage already holds
    is refused (its table would state sizes the rounds were not run with)."""
    from driving.sizes_on_disk import refuse_smaller

    c = plan["collect"]
    later = plan["rounds"][1:]
    refuse_smaller(
        datasets=([(c.out, c.episodes, "collect.episodes")] if c is not None and not c.shard else [])
        + [(x["data"], plan["episodes"], f"{keys}episodes") for x in later],
        runs=[(x["train"].out, x["train"].steps, "train.steps") for x in plan["rounds"][:1] if x["train"]]
        + [(x["train"].out, x["train"].steps, f"{keys}round_steps") for x in later])


def _run_dagger(cfg: DaggerConfig, progress: bool = True, command: str | None = None, keys: str = "") -> dict:
    from driving.data.collect import collect
    from driving.data.format import Dataset
    from driving.evaluate import evaluate, finished_evaluation
    from driving.train import train

    plan = resolve_stages(cfg)
    refuse_smaller_rerun(plan, keys)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out / "config.yaml", _yaml(cfg).encode())
    print(f"dagger on {plan['scenario']}: sizes for {plan['found']}; {cfg.rounds} rounds of {plan['episodes']} "
          f"student episodes, {plan['round_steps']} fine-tuning steps each")
    t0 = time.perf_counter()
    if plan["collect"] is not None:
        print(f"== round 0: collect {plan['collect'].episodes} expert episodes (DART)")
        collect(plan["collect"], progress=progress)
    base_meta = Dataset.open(plan["data0"]).meta
    table = []
    for x in plan["rounds"]:
        r = x["round"]
        if r > 0:
            print(f"== round {r}: the round {r - 1} policy drives {len(x['seeds'])} episodes, "
                  f"expert share {x['beta']:g}; the expert labels every step")
            drive_round(chosen_path(out, r - 1, cfg.round0), base_meta, Path(x["data"]), r, x["beta"], x["seeds"],
                        cfg, progress)
        if x["train"] is None:
            t = None
            print(f"== round 0: the BC run {x['run']}, trained before")
        else:
            t = x["train"] if r == 0 else replace(x["train"], init_from=str(chosen_path(out, r - 1, cfg.round0)))
            print(f"== round {r}: train {t.steps} steps on {len(t.datasets)} dataset(s)"
                  + (f", warm start from round {r - 1}" if r else ""))
            train(t, progress=progress)
        ckpt = chosen_path(out, r, cfg.round0)
        result = finished_evaluation(ckpt, x["eval"])
        if result is None:
            print(f"== round {r}: evaluate on {x['eval'].episodes} fixed seeds beside the expert")
            result = evaluate(str(ckpt), x["eval"], progress=progress, note_replaced=False)["result"]
        table.append(round_row(x, result, [Dataset.open(d) for d in (t.datasets if t else [plan["data0"]])]))
        board = summary(cfg, plan, table, command, time.perf_counter() - t0)
        atomic.write_json(out / "rounds.json", board)
        atomic.write_bytes(out / "rounds.md", markdown(board).encode())
    return board


def round_row(x: dict, result: dict, datasets: list) -> dict:
    scenario = next(iter(result["scenarios"]))
    s = result["scenarios"][scenario]
    agg = s["aggregate"]
    student = datasets[-1] if x["round"] else None
    share = None
    if student is not None and student.index:
        share = float(np.average([row.get("expert_share", 0.0) for row in student.index],
                                 weights=[row["length"] for row in student.index]))
    return {"round": x["round"], "beta": x["beta"], "expert_share_executed": share,
            "frames": int(sum(d.frames for d in datasets)), "student_frames": student.frames if student else 0,
            "checkpoint": result["checkpoint"], "eval_dir": str(x["eval"].out),
            "policy": {k: agg["policy"][k] for k in TABLE if k in agg["policy"]},
            "expert": {k: agg["expert"][k] for k in TABLE if k in agg["expert"]},
            "episodes": s["episodes"]["policy"]}


def summary(cfg: DaggerConfig, plan: dict, table: list[dict], command: str | None, wall_s: float) -> dict:
    """The per-round rows, and each round's gain over round 0 (BC alone), paired by seed."""
    from driving.scoreboard import hardware
    from sim.metrics import paired_differences

    rounds = []
    for row in table:
        gain = paired_differences(row["episodes"], table[0]["episodes"]) if row["round"] else {}
        rounds.append({**{k: v for k, v in row.items() if k != "episodes"},
                       # collisions as a paired difference of the per-episode flag (a rate difference)
                       "gain_over_bc": {("collision_rate" if k == "crashed" else k): gain[k]
                                        for k in (*TABLE, "crashed") if k in gain}})
    return {"config": to_dict(cfg), "scenario": plan["scenario"], "dataset0": str(plan["data0"]),
            "sizes": plan["found"], "hardware": hardware(),
            "eval_episodes": plan["rounds"][0]["eval"].episodes, "wall_s": wall_s,
            "command": command or "driving dagger " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
            # written after every round: a table of a killed run says it is not the whole run
            "rounds_planned": len(plan["rounds"]), "finished": len(rounds) == len(plan["rounds"]),
            "rounds": rounds}


def _ci(m: dict, fmt: str) -> str:
    if m.get("n", 0) <= 1 or m.get("ci_low") is None:
        return fmt.format(m["mean"])
    return f"{fmt.format(m['mean'])} [{fmt.format(m['ci_low'])}, {fmt.format(m['ci_high'])}]"


def markdown(board: dict) -> str:
    lines = ["| round | beta | frames | driving score | expert | collisions | expert | lane changes/ep | expert "
             "| mean abs lat. accel m/s² | expert |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in board["rounds"]:
        p, e = r["policy"], r["expert"]
        beta = "BC" if r["beta"] is None else f"{r['beta']:g}"
        lines.append(f"| {r['round']} | {beta} | {r['frames']} | {_ci(p['driving_score'], '{:.3f}')} "
                     f"| {e['driving_score']['mean']:.3f} | {p['collision_rate']['mean']:.0%} "
                     f"| {e['collision_rate']['mean']:.0%} | {p['lane_changes']['mean']:.2f} "
                     f"| {e['lane_changes']['mean']:.2f} | {p['mean_abs_lat_accel']['mean']:.2f} "
                     f"| {e['mean_abs_lat_accel']['mean']:.2f} |")
    if not board.get("finished", True):
        lines += ["", f"NOT FINISHED: {len(board['rounds'])} of {board['rounds_planned']} rounds (0 is BC) done; "
                      "re-run the same command to go on (finished rounds are not redone)."]
    gains = [r for r in board["rounds"] if r["gain_over_bc"]]
    if gains:
        lines += ["", "Gain over round 0 (BC alone), paired by seed, mean [95% interval]:", "",
                  "| round | driving score | collisions | lane changes/ep | mean abs lat. accel m/s² |",
                  "|---|---|---|---|---|"]
        for r in gains:
            g = r["gain_over_bc"]
            cells = [_ci(g[k], fmt) if k in g else "—" for k, fmt in
                     (("driving_score", "{:+.3f}"), ("collision_rate", "{:+.2f}"), ("lane_changes", "{:+.2f}"),
                      ("mean_abs_lat_accel", "{:+.2f}"))]
            lines.append(f"| {r['round']} | " + " | ".join(cells) + " |")
    hw = board["hardware"]
    if board["config"].get("round0"):
        lines += ["", f"Round 0 is the BC run {board['config']['round0']}, trained before this command."]
    lines += ["", f"{board['scenario']}: every round evaluated on the same {board['eval_episodes']} held-out seeds "
                  f"beside the expert (95% intervals). Sizes: {board['sizes']}. Hardware: {hw['cpu_cores']} CPU "
                  f"cores, GPU {hw['gpu'] or 'none'}. Wall {board['wall_s'] / 60:.1f} min (this invocation: "
                  "a resumed run counts only its own time).", "",
              f"`{board['command']}`"]
    return "\n".join(lines) + "\n"


def _yaml(cfg: DaggerConfig) -> str:
    from driving.config import to_yaml

    return to_yaml(cfg)

