"""Closed-loop evaluation: fixed seeds per scenario, envs in parallel processes, one batched
forward pass per step for all of them, the expert on the same seeds as the reference.

Outputs in OUT/: eval.json (config, seeds, per-episode rows, aggregates with 95% CIs, policy and
expert), report.md and report.html (metric table, videos worst first), videos/*.mp4.
"""
from __future__ import annotations

import os
import sys
import time
import zipfile
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from driving import atomic
from driving.baselines import ExpertPolicy
from driving.config import ENVS_PER_WORKER, EVAL_SEED, check_envs_per_worker, check_episodes, config_diff, to_dict
from driving.envpool import EnvPool, probe_env
from driving.executors import check_executor
from driving.folder_lock import writing
from driving.errors import UserError
from driving.jsonfile import read_json
from driving.rollout import FIXED_BATCH, FIXED_ROWS, EpisodeRecorder, as_actor, batch_of, closed_loop, finished, worst
from driving.shards import episodes_of, note_empty_shard, parse_shard
from sim import UnknownScenarioError, get_scenario
from sim.expert import PERCEPTIONS
from sim.metrics import METRICS_VERSION, aggregate, episode_metrics, paired_differences



@dataclass
class EvalConfig:
    scenario: str = "highway"  # one name, or several separated by commas
    episodes: int = 20  # per scenario
    workers: int = 0  # parallel environments (processes); 0 = one per core
    # environments in each worker process: it steps one while another waits for its action (executor=process)
    envs_per_worker: int = ENVS_PER_WORKER
    seed: int = EVAL_SEED  # episode i of every scenario uses seed + i
    out: Optional[str] = None  # default: RUN/eval/STEP_SCENARIOS (expert: runs/expert/eval/SCENARIOS)
    max_steps: Optional[int] = None  # None: the scenario's own episode length
    videos: int = 2  # rollout videos of the policy's worst episodes
    saliency: str = "vbp"  # saliency overlay in videos: vbp | gradcam | none
    device: str = "auto"
    env: dict[str, Any] = field(default_factory=dict)  # highway-env config overrides, e.g. fast_road: false
    # the reference expert (and ExpertPolicy): camera = sees what the policy's camera shows
    expert_perception: str = "camera"
    # a plan-head policy's lane-change threshold (net.plan_threshold) for this evaluation; None: the checkpoint's
    plan_threshold: Optional[float] = None
    shard: Optional[str] = None  # K/N: only episodes K, K+N, ... (merge the N outputs with `driving eval merge`)
    executor: str = "process"  # process (worker processes here) | ray (environments in Ray actors)
    ray_address: Optional[str] = None  # executor=ray: the cluster (default: RAY_ADDRESS, else a local Ray)
    # an earlier evaluation folder whose reference-expert episodes are taken instead of driven again: the
    # expert is deterministic, so on the same seeds and settings they are the same episodes (DAgger rounds
    # and training seeds evaluated on one seed list drive the expert once)
    expert_from: Optional[str] = None

    def __post_init__(self):
        parse_shard(self.shard)
        check_executor(self.executor)
        check_episodes("", self.episodes, self.seed, None, self.max_steps)
        if self.workers < 0 or self.videos < 0:
            raise ValueError("workers and videos must be >= 0 (workers 0: one per core; videos 0: none)")
        check_envs_per_worker("", self.envs_per_worker)
        if self.saliency not in ("vbp", "gradcam", "none"):
            raise ValueError("saliency must be vbp, gradcam or none")
        if self.expert_perception not in PERCEPTIONS:
            raise ValueError(f"expert_perception must be one of {', '.join(PERCEPTIONS)}")

    @property
    def scenarios(self) -> list[str]:
        return [s.strip() for s in self.scenario.split(",") if s.strip()]


def seeds_for(cfg: EvalConfig) -> list[int]:
    return [cfg.seed + i for i in range(cfg.episodes)]


def shard_episodes(cfg: EvalConfig) -> list[int]:
    """The episode numbers this run evaluates (every scenario): all, or its shard's."""
    return episodes_of(cfg.shard, cfg.episodes)


def open_pool(scenario: str, camera: dict, workers: int, n_episodes: int,
              max_steps: int | None = None, env: dict | None = None, expert: dict | None = None,
              executor: str = "process", ray_address: str | None = None,
              envs_per_worker: int = ENVS_PER_WORKER):
    """Environments for `run_episodes`: `envs_per_worker` in each of `workers` processes here (no more
    envs than episodes), or (executor=ray) one in each Ray actor."""
    kwargs = {"scenario": scenario, "camera": camera, "max_steps": max_steps, "env": dict(env or {}),
              "expert": dict(expert or {})}
    if executor == "ray":
        from driving.executors import RayEnvPool, cluster_cpus

        return RayEnvPool(max(1, min(workers or cluster_cpus(ray_address), n_episodes)), kwargs, ray_address)
    workers = workers or os.cpu_count() or 1
    envs = max(1, min(workers * envs_per_worker, n_episodes))
    return EnvPool(envs, kwargs, envs_per_worker, processes=min(workers, envs))


def run_episodes(policy, scenario: str, seeds: list[int], camera: dict, workers: int,
                 max_steps: int | None = None, progress: bool = True, label: str = "",
                 pool: EnvPool | None = None, keep_frames: bool = False, on_record=None) -> list[dict]:
    """The closed-loop engine: run `policy` (an actor of driving.rollout, or anything with
    `act(batch)`) on every seed; returns the episodes' records (driving.rollout.EpisodeRecorder) in
    seed order. Pass an open `pool` (same scenario, camera, max_steps) to reuse its worker
    processes across calls; `keep_frames` keeps the newest camera frame of every step (datasets).
    `on_record(record)` sees each record as its episode ends (e.g. to write it at once); what it
    returns is kept in its place (e.g. the record without its frames)."""
    if pool is None:
        with open_pool(scenario, camera, workers, len(seeds), max_steps) as own:
            return run_episodes(policy, scenario, seeds, camera, workers, max_steps, progress, label, own,
                                keep_frames, on_record)
    actor = as_actor(policy)
    n = min(len(pool), len(seeds))
    queue = deque(enumerate(seeds))
    records: list = [None] * len(seeds)
    active: dict[int, tuple] = {}  # env -> (index of the seed, recorder, the actor's episode state)
    sent: dict[int, tuple] = {}  # env -> what it is doing: ("reset", index, seed) or ("step", action)
    bar = tqdm(total=len(seeds), unit="ep", disable=not progress, desc=f"eval {label or scenario}",
               dynamic_ncols=True)
    t0, steps = time.perf_counter(), 0

    def start(i):
        k, seed = queue.popleft()
        pool.send_reset(i, seed)
        sent[i] = ("reset", k, seed)

    for i in range(n):
        start(i)
    # The policy's closed-loop set-up (one intra-op thread on a CPU: driving.policy) for the whole run.
    with closed_loop(actor):
        # Every env steps on its own: the policy acts on whichever envs have answered (one batch), while
        # the others simulate. No env waits for a slower one, for a reset, or for the policy on others.
        while sent:
            ready = []
            for i, result in pool.recv_ready(list(sent)).items():
                what = sent.pop(i)
                if what[0] == "reset":
                    obs, _, _, info = result
                    active[i] = (what[1], EpisodeRecorder(what[2], obs, info, keep_frames), actor.start(what[2]))
                    ready.append(i)
                    continue
                steps += 1
                k, rec, state = active[i]
                if not rec.add(what[1], *result):
                    ready.append(i)
                    continue
                records[k] = finished(actor, rec.record(), state)
                if on_record is not None:
                    records[k] = on_record(records[k])
                del active[i]
                bar.update(1)
                bar.set_postfix_str(f"{steps / (time.perf_counter() - t0):.0f} steps/s", refresh=False)
                if queue:
                    start(i)
            if ready:
                recs = [active[i][1] for i in ready]
                batch = batch_of([r.obs for r in recs], [r.info for r in recs])
                # a row's action never depends on which envs answered with it, nor on how many envs there are
                batch[FIXED_BATCH] = FIXED_ROWS
                actions = actor.act(batch, [active[i][2] for i in ready])
                check_finite(actions, scenario, [active[i][1] for i in ready])
                pool.send_steps(dict(zip(ready, actions)))
                sent.update({i: ("step", a) for i, a in zip(ready, actions)})
    bar.close()
    return records


def check_finite(actions, scenario: str, recorders: list) -> None:
    """One line where the policy's action is NaN or infinite (a diverged checkpoint), before the
    simulator takes it."""
    bad = ~np.isfinite(np.asarray(actions, dtype=np.float64)).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        rec = recorders[k]
        raise UserError(f"the policy gave a non-finite action {np.asarray(actions[k]).tolist()} on {scenario}, "
                        f"seed {rec.seed}, step {len(rec.actions)}: its weights (or its inputs) hold NaN or inf; "
                        "use another checkpoint (a training that diverged: lower optim.lr)")


def score_records(records: list[dict], scenario: str, dt: float, reference: dict | None,
                  episodes: list[int] | None = None) -> list[dict]:
    """Rows of eval.json; `episodes`: the records' episode numbers in the run (default 0, 1, ...)."""
    rows = []
    for k, rec in zip(episodes if episodes is not None else range(len(records)), records):
        ref = reference.get(rec["seed"]) if reference else None
        m = episode_metrics(rec["steps"], dt, rec["truncated"], rec["terminated"], ref)
        err = rec["actions"] - rec["expert_actions"]
        rows.append({"scenario": scenario, "episode": k, "seed": rec["seed"], **m,
                     "action_mae_vs_expert": [float(x) for x in np.abs(err).mean(axis=0)] if len(err) else [0, 0]})
    return rows


def load_eval_policy(checkpoint: str, device: str, plan_threshold: float | None = None):
    """(policy, camera dict, checkpoint meta or None) for a checkpoint path or the word `expert`
    (camera None: each scenario's own)."""
    if checkpoint == "expert":
        from driving.policy import pick_device

        pick_device(device)  # unused by the expert, but a bad one is refused as for a checkpoint
        if plan_threshold is not None:
            raise UserError("plan_threshold is a learned policy's lane-change rule; the expert has none: "
                            "drop plan_threshold")
        return ExpertPolicy(), None, None
    from driving.policy import load_policy

    policy = load_policy(checkpoint, device=device, plan_threshold=plan_threshold)
    camera = dict(policy.camera)
    camera["stack"] = max(camera.get("stack", 1), policy.stack)
    return policy, camera, policy.meta


def training_seeds_among(datasets, seeds: list[int]) -> tuple[str, list[int]] | None:
    """(a dataset, the evaluation seeds among its episodes' seeds) for the first of `datasets` (folders a
    policy was trained on; those no longer there are passed over) that has any, else None."""
    from driving.data.collect import load_index

    wanted = set(seeds)
    for root in datasets or []:
        found = sorted(wanted & {r["seed"] for r in load_index(Path(root))})
        if found:
            return str(root), found
    return None


def note_training_seeds(meta: dict | None, seeds: list[int], key: str = "seed") -> None:
    """A note where the seeds evaluated are episodes of the datasets the policy was trained on (its
    checkpoint `meta` names them): its score would be on its own training episodes."""
    paths = ((meta or {}).get("dataset") or {}).get("path")
    hit = training_seeds_among([paths] if isinstance(paths, str) else paths, seeds)
    if hit:
        root, found = hit
        shown = ", ".join(map(str, found[:3])) + (", ..." if len(found) > 3 else "")
        print(f"note: {len(found)} of the {len(seeds)} evaluation seeds ({shown}) are episodes of the training data "
              f"{root}: these scores are on episodes the policy learned from; the default {key} "
              f"({EVAL_SEED:,}...) never overlaps collection", file=sys.stderr)


def default_out(checkpoint: str, cfg: EvalConfig) -> Path:
    tag = "+".join(cfg.scenarios)
    shard = parse_shard(cfg.shard)
    if shard:  # shards of one evaluation never share a folder
        tag += f".shard-{shard.index}-of-{shard.count}"
    if checkpoint == "expert":
        return Path("runs") / "expert" / "eval" / tag
    from driving.checkpoint import resolve

    ckpt = resolve(checkpoint)
    return ckpt.parent.parent / "eval" / f"{ckpt.name}_{tag}"


def check_scenarios(names: list[str]) -> None:
    """One UserError for an empty list or an unknown name."""
    for name in names:
        try:
            get_scenario(name)
        except UnknownScenarioError as e:
            raise UserError(str(e)) from None
    if not names:
        raise UserError("no scenario given: e.g. scenario=highway or scenario=highway,racetrack")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"scenario {twice[0]} is listed twice: list each scenario once")


def evaluate(checkpoint: str, cfg: EvalConfig, progress: bool = True, note_replaced: bool = True) -> dict:
    """Evaluate a checkpoint (or `expert`) closed loop; writes OUT/eval.json and the reports. `note_replaced`:
    name what a finished evaluation it writes over had (off where a pipeline owns the folder)."""
    check_scenarios(cfg.scenarios)
    policy, camera, meta = load_eval_policy(checkpoint, cfg.device, cfg.plan_threshold)
    out = Path(cfg.out) if cfg.out else default_out(checkpoint, cfg)
    all_seeds = seeds_for(cfg)
    seeds = [all_seeds[k] for k in shard_episodes(cfg)]
    note_empty_shard(cfg.shard, cfg.episodes, "evaluation")
    is_expert = checkpoint == "expert"
    for name in cfg.scenarios:  # every user error before any work starts
        probe_env(name, camera, cfg.max_steps, cfg.env, {"perception": cfg.expert_perception},
                  expert_key="expert_")
        if not is_expert:
            policy.for_scenario(get_scenario(name))  # action ranges it cannot drive are refused
    if not is_expert:
        note_training_seeds(meta, seeds)
    reused = reused_expert(cfg, camera, seeds)
    earlier = keep_other_evaluation(out, "expert" if is_expert else str(policy.path), cfg)
    if cfg.executor == "ray":  # a missing Ray or a cluster that does not answer: refused before any output
        from driving.executors import connect

        connect(cfg.ray_address)
    with writing(out, "driving eval", holds="an evaluation"):
        if earlier is not None and note_replaced:
            note_replaced_evaluation(out, earlier, "expert" if is_expert else str(policy.path), cfg)
        return _evaluate(checkpoint, cfg, progress, policy, camera, meta, out, seeds, is_expert, reused)


def keep_other_evaluation(out: Path, checkpoint: str, cfg: EvalConfig) -> dict | None:
    """Refuses to write over another checkpoint's evaluation (its results would be lost without a word),
    and over a shard of an evaluation with anything but that shard again (its episodes are one part of
    a merge, and another shard's would silently take their place). A checkpoint of the same run (a
    re-run, `last` after more training or a resumed DAgger round) writes over its run's. Returns the
    earlier result (None where there is none)."""
    try:
        old = read_json(out / "eval.json", dict)
    except UserError:  # none, or damaged: nothing to keep
        return None
    then = old.get("checkpoint")
    if then and _run_of(then) is not None and _run_of(then) != _run_of(checkpoint):
        raise UserError(f"{out} holds the evaluation of {then}: give this run (of {checkpoint}) another out=, "
                        "or remove that folder first")
    shard = old.get("shard")
    new = parse_shard(cfg.shard).as_dict() if cfg.shard else None
    if shard and shard != new:
        raise UserError(f"{out} holds shard {shard['index']}/{shard['count']} of an evaluation: give this run "
                        "another out= (each shard its own folder, then `driving eval merge`)")
    return old


# keys that change how an evaluation runs or what it films, not its scores
_HOW_IT_RUNS = ("workers", "envs_per_worker", "executor", "ray_address", "expert_from", "out", "videos", "saliency",
                "device")


def note_replaced_evaluation(out: Path, old: dict, checkpoint: str, cfg: EvalConfig) -> None:
    """A finished evaluation that this one writes over, with another checkpoint of the run, config or
    metrics version, is named with what differs: its scores are otherwise gone without a word (the default
    folder, RUN/eval/STEP_SCENARIOS, is the same for `episodes=10` and a later `episodes=50`). Keys that
    change how it runs, not what it scores, are no difference."""
    if not old.get("videos_done", True) or not isinstance(old.get("config"), dict):
        return  # an unfinished one is this evaluation's own earlier try
    what = []
    if old.get("checkpoint") != checkpoint:
        what.append(f"checkpoint: {old.get('checkpoint')} there, {checkpoint} now")
    diff = config_diff(*({k: v for k, v in c.items() if k not in _HOW_IT_RUNS} for c in (old["config"], to_dict(cfg))))
    if diff:
        what.append(diff)
    if old.get("metrics_version") != METRICS_VERSION:
        what.append(f"metrics version: {old.get('metrics_version')} there, {METRICS_VERSION} now")
    if what:
        print(f"note: {out} held a finished evaluation that this one replaces ({'; '.join(what)}): give out= to "
              "keep both", file=sys.stderr)


def _run_of(checkpoint: str) -> str | None:
    """The run a checkpoint (RUN/checkpoints/STEP, as eval.json records it) belongs to; `expert` is its own;
    None where the checkpoint is gone (a run moved since: its folder cannot tell)."""
    if checkpoint == "expert":
        return checkpoint
    path = Path(checkpoint)
    return str(path.resolve().parent.parent) if path.exists() else None


def probe_eval_env(cfg: EvalConfig) -> None:
    """A bad `env.*` of an evaluation that runs later (a DAgger round's, a scoreboard's) refused now, in
    the scenario's own camera, not after the collection and training before it."""
    if cfg.env:
        for name in cfg.scenarios:
            probe_env(name, None, cfg.max_steps, cfg.env, {"perception": cfg.expert_perception},
                      expert_key="expert_")


def reused_expert(cfg: EvalConfig, camera: dict | None, seeds: list[int]) -> dict | None:
    """{scenario: (expert rows, {actions key: actions})} from `cfg.expert_from`, or None without one.
    Its expert must have driven these seeds (among others: a shard takes its part of a whole evaluation)
    with these settings (scenario camera, episode length, highway-env overrides, perception): anything
    else is refused in one line. Its rows are numbered as this evaluation's episodes."""
    if not cfg.expert_from:
        return None
    where = Path(cfg.expert_from)
    path = where / "eval.json" if where.is_dir() else where
    fix = "drop expert_from, or point it at an evaluation of the same seeds and settings"
    old = read_json(path, dict, fix)
    recorded = load_actions(path.parent, fix, f"expert_from={cfg.expert_from}: cannot read its {ACTIONS_FILE}")
    if old.get("metrics_version") != METRICS_VERSION:
        raise UserError(f"expert_from={cfg.expert_from}: its episodes were scored by other metrics (version "
                        f"{old.get('metrics_version', 1)}, now {METRICS_VERSION}): evaluate that expert again, "
                        f"or {fix}")
    then = old.get("config") or {}
    episodes = shard_episodes(cfg)
    out = {}
    for name in cfg.scenarios:
        mine = {"camera": to_dict(get_scenario(name).camera_config(camera)),
                "max_steps": cfg.max_steps, "env": cfg.env, "expert_perception": cfg.expert_perception}
        theirs = {"camera": (old.get("scenario_cameras") or {}).get(name),
                  "max_steps": then.get("max_steps"), "env": then.get("env"),
                  "expert_perception": old.get("expert_perception")}
        scenarios = old.get("scenarios") if isinstance(old.get("scenarios"), dict) else {}
        if name not in scenarios:
            raise UserError(f"expert_from={cfg.expert_from}: its expert did not drive {name} (it drove "
                            f"{', '.join(scenarios) or 'nothing'}): {fix}")
        differ = [k for k in mine if mine[k] != theirs[k]]
        by_seed = {r.get("seed"): r for r in ((scenarios.get(name) or {}).get("episodes") or {}).get("expert") or []}
        if not differ and any(s not in by_seed for s in seeds):
            differ = ["seeds"]
        if differ:
            raise UserError(f"expert_from={cfg.expert_from}: its expert drove {name} with other "
                            f"{differ[0]} than this evaluation: {fix}")
        rows = [{**by_seed[s], "episode": k} for k, s in zip(episodes, seeds)]
        keys = [actions_key(name, r["seed"], "expert") for r in rows]
        if any(k not in recorded for k in keys):
            raise UserError(f"expert_from={cfg.expert_from}: its {ACTIONS_FILE} lacks the expert's {name} "
                            f"episodes: {fix}")
        out[name] = (rows, {k: recorded[k] for k in keys})
    return out


def _evaluate(checkpoint, cfg: EvalConfig, progress, policy, camera, meta, out: Path, seeds, is_expert,
              reused: dict | None = None) -> dict:
    result = {
        "metrics_version": METRICS_VERSION,
        "checkpoint": "expert" if is_expert else str(policy.path),
        "policy": "expert" if is_expert else meta["model"],
        "trained_on": None if is_expert else meta.get("scenario"),
        "config": to_dict(cfg),
        "camera": camera,  # the policy's; None for the expert (each scenario's own: scenario_cameras)
        "scenario_cameras": {name: to_dict(get_scenario(name).camera_config(camera)) for name in cfg.scenarios},
        "expert_perception": cfg.expert_perception,
        "labels_perception": None if is_expert else meta.get("expert_perception"),
        "seeds": {name: seeds for name in cfg.scenarios},
        "scenarios": {},
    }
    if cfg.shard:
        result["shard"] = parse_shard(cfg.shard).as_dict()
    episodes = shard_episodes(cfg)
    actions = {}  # what every scored episode executed: videos replay exactly these
    timing = {}
    for name in cfg.scenarios:
        sc = get_scenario(name)
        dt = 1.0 / sc.policy_frequency
        t = time.perf_counter()
        with open_pool(name, camera, cfg.workers, len(seeds), cfg.max_steps, cfg.env,
                       {"perception": cfg.expert_perception}, cfg.executor, cfg.ray_address,
                       cfg.envs_per_worker) as pool:
            if reused is not None:
                expert_rows, expert_actions = reused[name]
            else:
                expert_records = run_episodes(ExpertPolicy(), name, seeds, camera, cfg.workers, cfg.max_steps,
                                              progress, f"{name} expert", pool=pool)
                expert_rows = score_records(expert_records, name, dt, None, episodes)
                expert_actions = {actions_key(name, r["seed"], "expert"): r["actions"] for r in expert_records}
            actions.update(expert_actions)
            reference = {r["seed"]: r["distance_m"] for r in expert_rows}
            if is_expert:
                policy_rows = expert_rows
                actions.update({actions_key(name, r["seed"], "policy"): expert_actions[actions_key(name, r["seed"], "expert")]
                                for r in expert_rows})
            else:
                policy_records = run_episodes(policy.for_scenario(sc), name, seeds, camera, cfg.workers, cfg.max_steps,
                                              progress, f"{name} policy", pool=pool)
                policy_rows = score_records(policy_records, name, dt, reference, episodes)
                actions.update({actions_key(name, r["seed"], "policy"): r["actions"] for r in policy_records})
        timing[name] = time.perf_counter() - t
        result["scenarios"][name] = scenario_result(policy_rows, expert_rows)
    add_totals(result)
    write_result(result, out, actions, checkpoint, policy, camera, cfg)
    return {"out": out, "result": result, "timing_s": timing}


def scenario_result(policy_rows: list[dict], expert_rows: list[dict]) -> dict:
    return {
        "episodes": {"policy": policy_rows, "expert": expert_rows},
        "aggregate": {"policy": aggregate(policy_rows), "expert": aggregate(expert_rows)},
        "paired": paired_differences(policy_rows, expert_rows),
    }


def add_totals(result: dict) -> None:
    """Aggregates over all scenarios of a result."""
    rows = {k: [r for s in result["scenarios"].values() for r in s["episodes"][k]] for k in ("policy", "expert")}
    result["aggregate"] = {k: aggregate(v) for k, v in rows.items()}
    result["paired"] = paired_differences(rows["policy"], rows["expert"])


def write_result(result: dict, out: Path, actions: dict, checkpoint: str, policy, camera: dict,
                 cfg: EvalConfig) -> None:
    """actions.npz, eval.json, the reports, then the videos of the worst episodes (not in a shard:
    which episodes are worst is known only when the shards are merged)."""
    from driving.report import write_reports

    # The metrics are on disk before any video is rendered: a failure while filming loses nothing.
    filming = bool(cfg.videos and not cfg.shard)
    result["videos"] = []
    result["videos_done"] = not filming  # how many it films depends on the scenarios and on video support
    atomic.save_npz(out / ACTIONS_FILE, actions)
    atomic.write_json(out / "eval.json", result)
    write_reports(result, out)
    if filming:
        result["videos"] = render_videos(checkpoint, policy, camera, cfg, result, out, actions)
        result["videos_done"] = True
        atomic.write_json(out / "eval.json", result)
        write_reports(result, out)


def finished_evaluation(checkpoint: str | Path, cfg: EvalConfig) -> dict | None:
    """The result in cfg.out where it is a finished evaluation of this checkpoint (resolved: `best`
    may have moved) with this config, videos included; else None (it must run)."""
    from driving.checkpoint import resolve

    path = Path(cfg.out) / "eval.json"
    if not path.is_file():
        return None
    try:
        old = read_json(path, dict)
    except UserError:  # a damaged result is evaluated again
        return None
    same = (old.get("checkpoint") == str(resolve(checkpoint)) and old.get("config") == to_dict(cfg)
            and old.get("metrics_version") == METRICS_VERSION)  # scored by other metrics: again
    done = old.get("videos_done")
    if done is None:  # written before the flag: then a finished run had filmed min(videos, episodes)
        done = len(old.get("videos") or []) == (0 if cfg.shard else min(cfg.videos, cfg.episodes))
    return old if same and done else None


ACTIONS_FILE = "actions.npz"  # per scored episode: the actions it executed, keyed by actions_key


def load_actions(folder: Path, fix: str, lead: str | None = None) -> dict:
    """An evaluation folder's recorded actions ({actions_key: array}), read whole; a truncated or
    damaged file is one UserError: `lead` (default "FOLDER/actions.npz cannot be read"), the cause, `fix`."""
    try:
        with np.load(Path(folder) / ACTIONS_FILE) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        lead = lead or f"{folder}/{ACTIONS_FILE} cannot be read"
        raise UserError(f"{lead} ({type(e).__name__}: {e}): {fix}") from None


def actions_key(scenario: str, seed: int, who: str) -> str:
    return f"{scenario}__{seed}__{who}"


def worst_episodes(result: dict, n: int) -> list[dict]:
    return worst([r for s in result["scenarios"].values() for r in s["episodes"]["policy"]], n)


def render_videos(checkpoint, policy, camera, cfg: EvalConfig, result: dict, out: Path,
                  actions: dict) -> list[dict]:
    """Film the policy's worst episodes: re-simulated with the actions they executed when scored,
    and checked against their scored rows."""
    try:
        from driving import video
    except ImportError:  # video support not installed
        return []
    made = []
    for row in worst_episodes(result, cfg.videos):
        path = out / "videos" / f"{row['scenario']}_seed{row['seed']}.mp4"
        video.policy_episode_video(policy, row["scenario"], row["seed"], camera, path,
                                   max_steps=cfg.max_steps, env=cfg.env,
                                   expert={"perception": cfg.expert_perception},
                                   saliency=None if cfg.saliency == "none" or checkpoint == "expert" else cfg.saliency,
                                   actions=actions[actions_key(row["scenario"], row["seed"], "policy")],
                                   expect=row)
        made.append({"scenario": row["scenario"], "seed": row["seed"], "driving_score": row["driving_score"],
                     "crashed": row["crashed"], "file": str(path.relative_to(out))})
    return made
