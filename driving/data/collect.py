"""Demonstration collection: the expert drives, DART-style noise perturbs what is EXECUTED, the
clean expert action is the label. N worker processes each own whole episodes (by seed) and write
their own episode files, so collection scales with cores and resumes after a kill.
"""
from __future__ import annotations

import math

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from driving import atomic
from driving.config import EVAL_SEED, MAX_EPISODES, check_episodes, config_diff, to_dict
from driving.data.format import (
    FORMAT_VERSION,
    INDEX_KEYS,
    DatasetError,
    encode_episode,
    episode_filename,
    outcome_of,
    read_episode_file,
    write_episode,
)
from driving.envpool import build_env, probe_env, run_in_workers, where_raised, worker_failed, worker_setup
from driving.errors import UserError
from driving.executors import check_executor
from driving.folder_lock import LOCK, writing
from driving.jsonfile import read_json
from driving.rollout import ExpertActor, NoiseSpec, play_episode
from driving.shards import episodes_of, note_empty_shard, parse_shard
from sim import SCENARIOS, CameraConfig, DrivingEnv, UnknownScenarioError, get_scenario

# The state facts a dataset keeps per step (besides frames and actions).
DATASET_FACTS = ("speed", "on_road", "crashed", "expert_saturated", "progress", "lane_offset", "heading", "x", "y",
                 "expert_plan")


@dataclass
class NoiseConfig(NoiseSpec):
    """Noise added to the executed action (normalised units; the fields of driving.rollout.NoiseSpec,
    with collection's defaults, checked). The label stays the clean expert's."""

    steer: float = 0.15
    # Strong, slow accel noise (0.3 = 1.8 m/s², ~1 s correlation at 5 Hz) takes the expert close to
    # the car ahead often enough to label hard braking: with 0.15/0.6 the demo's student coasted
    # into 4 of 10 leaders; with 0.3/0.8, 0 of 30 (docs/FIGURES.md).
    accel: float = 0.3
    correlation: float = 0.8  # AR(1) coefficient per step: 0 = white noise; stationary std is kept

    def __post_init__(self):
        if not (math.isfinite(self.steer) and math.isfinite(self.accel) and self.steer >= 0 and self.accel >= 0):
            raise ValueError("noise.steer and noise.accel are standard deviations: use finite values >= 0")
        if self.steer > 1 or self.accel > 1:  # in units of the action range [-1, 1]: beyond, it only saturates
            raise ValueError(f"noise.steer and noise.accel are standard deviations in units of the action range "
                             f"[-1, 1]: use values <= 1 (got {self.steer:g} and {self.accel:g}; steer 0.2 already "
                             "crashes the expert in about half the episodes)")
        if not 0.0 <= self.correlation < 1.0:
            raise ValueError("noise.correlation must be in [0, 1)")
        if not self.burst >= 1.0:
            raise ValueError("noise.burst is the mean length of a noise burst in steps: use a value >= 1")
        for name in ("steer_duty", "accel_duty"):
            duty = getattr(self, name)
            if not 0.0 <= duty <= 1.0:
                raise ValueError(f"noise.{name} is the share of steps with noise on: use a value in [0, 1]")
            # the gaps between bursts last at least a step, so a share above burst / (burst + 1) is out of reach
            if 0.0 < duty < 1.0 and duty > self.burst / (self.burst + 1.0):
                raise ValueError(f"noise.{name}={duty:g} with noise.burst={self.burst:g} would need gaps shorter "
                                 f"than one step: raise noise.burst to at least {duty / (1 - duty):.3g} or use {name}=1")


@dataclass
class CollectConfig:
    scenario: str = "highway"
    episodes: int = 10
    workers: int = 0  # 0: one per CPU core
    seed: int = 0  # episode i uses seed + i
    out: str = "data/highway"
    max_steps: Optional[int] = None  # None: the scenario's own episode length
    camera: CameraConfig = field(default_factory=CameraConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    expert: dict[str, Any] = field(default_factory=dict)  # ExpertConfig overrides
    env: dict[str, Any] = field(default_factory=dict)  # highway-env config overrides
    shard: Optional[str] = None  # K/N: only episodes K, K+N, ... (merge the N outputs with `driving data merge`)
    executor: str = "process"  # process (a pool on this machine) | ray (tasks on a Ray cluster)
    ray_address: Optional[str] = None  # executor=ray: the cluster (default: RAY_ADDRESS, else a local Ray)

    @staticmethod
    def scenario_defaults(name: str) -> dict:
        """The scenario's own settings, under the YAML file and overrides (driving.config)."""
        sc = SCENARIOS.get(name)
        return {"camera": dict(sc.camera)} if sc is not None and sc.camera else {}

    def __post_init__(self):
        parse_shard(self.shard)
        check_executor(self.executor)
        check_episodes("", self.episodes, self.seed, self.workers, self.max_steps)
        if self.seed < EVAL_SEED + MAX_EPISODES and self.seed + self.episodes > EVAL_SEED:
            raise ValueError(f"seeds {self.seed}..{self.seed + self.episodes - 1} reach the held-out evaluation seeds "
                             f"({EVAL_SEED:,} to {EVAL_SEED + MAX_EPISODES - 1:,}): a policy trained on them would be "
                             "scored on its own demonstrations; collect below or above them (seed=, episodes=)")


# Keys that may differ between runs writing the same dataset (resume, extend, re-parallelise).
_RUN_KEYS = ("episodes", "workers", "out", "shard", "executor", "ray_address")


def identity(cfg: CollectConfig) -> dict:
    """The part of the config that defines the dataset's content."""
    d = to_dict(cfg)
    for k in _RUN_KEYS:
        d.pop(k)
    # The fast road computes the stock road's results exactly (tests/test_fast_road.py), so the
    # switch may differ between runs writing the same dataset.
    d["env"].pop("fast_road", None)
    return d


def episode_seeds(cfg: CollectConfig) -> list[int]:
    return [cfg.seed + i for i in range(cfg.episodes)]


def episode_jobs(cfg: CollectConfig) -> list[tuple[int, int]]:
    """(episode, seed) of every episode this run collects: all of them, or its shard's."""
    seeds = episode_seeds(cfg)
    return [(i, seeds[i]) for i in episodes_of(cfg.shard, len(seeds))]


def make_env(cfg: CollectConfig) -> DrivingEnv:
    return build_env(cfg.scenario, cfg.camera, cfg.max_steps, env=cfg.env, expert=cfg.expert)


def episode_arrays(record: dict) -> tuple[dict, dict]:
    """A recorded episode (driving.rollout) -> (per-step arrays, summary) as a dataset stores them:
    every array has one row per action, for the state the action was chosen in."""
    facts = record["steps"]
    n = len(record["actions"])
    steps = {"frames": record["frames"], "action": record["actions"], "expert_action": record["expert_actions"],
             **{k: facts[k][:n] for k in DATASET_FACTS if k in facts}}
    on_road = np.asarray(facts["on_road"], dtype=bool)
    summary = {
        "seed": int(record["seed"]),
        "length": n,
        "outcome": outcome_of(bool(facts["crashed"][-1]), int((~on_road).sum())),
        "crashed": bool(facts["crashed"][-1]),
        "terminated": bool(record["terminated"]),
        "offroad_steps": int((~on_road).sum()),
        "progress": float(facts["progress"][-1]),
        "mean_speed": float(np.mean(facts["speed"][:n])),
    }
    return steps, summary


def run_episode(env: DrivingEnv, cfg: CollectConfig, seed: int) -> tuple[dict, dict]:
    """One expert episode with noisy execution. Returns (per-step arrays, summary)."""
    actor = ExpertActor(cfg.noise)
    return episode_arrays(play_episode(env, actor, seed, keep_frames=True))


# -- worker processes -----------------------------------------------------------------------
_WORKER: dict = {}


def _worker_init(cfg: CollectConfig, root: str, meta: dict, child: bool = False) -> None:
    if child:
        worker_setup()
    _WORKER["cfg"] = cfg
    _WORKER["root"] = Path(root)
    _WORKER["meta"] = meta
    _WORKER["env"] = make_env(cfg)


def _worker_run(job: tuple[int, int]) -> dict:
    episode, seed = job
    steps, summary = run_episode(_WORKER["env"], _WORKER["cfg"], seed)
    return write_episode(_WORKER["root"], episode, steps, summary, _WORKER["meta"])


def collect_range(jobs: list[tuple[int, int]], cfg: CollectConfig, meta: dict) -> list[tuple[dict, bytes]]:
    """A Ray task: the episodes of `jobs` as (index row, file bytes); the caller writes them."""
    worker_setup()
    env = make_env(cfg)
    try:
        out = []
        for episode, seed in jobs:
            steps, summary = run_episode(env, cfg, seed)
            out.append(encode_episode(episode, steps, summary, meta))
        return out
    finally:
        env.close()


def _ray_rows(cfg: CollectConfig, root: Path, meta: dict, todo: list):
    """Index rows of `todo`'s episodes collected by Ray tasks (a seed range each), written here."""
    from driving import executors

    cpus = executors.cluster_cpus(cfg.ray_address)
    # Several ranges per CPU: the tasks even out, and a retried one redoes little.
    for pairs in executors.ray_map_unordered(collect_range, executors.seed_ranges(todo, 4 * cpus), (cfg, meta),
                                             cfg.ray_address):
        for row, data in pairs:
            atomic.write_bytes(root / row["file"], data)
            yield row


# -- the command ----------------------------------------------------------------------------
def dataset_meta(env: DrivingEnv, camera: dict, noise: dict, identity: dict, **extra) -> dict:
    """meta.json of a dataset recorded in `env`; `identity` is what must match to add to it."""
    return {
        "format_version": FORMAT_VERSION,
        "scenario": env.scenario.as_dict(),
        "camera": camera,
        "action": env.scenario.action.as_dict(),
        "expert": env.expert.config.as_dict(),
        "noise": noise,
        "config": identity,
        "frame_shape": [camera["height"], camera["width"]] + ([3] if camera["rgb"] else []),
        "policy_frequency": env.scenario.policy_frequency,
        "counts": {"episodes": 0, "frames": 0},
        **extra,
    }


def open_dataset(root: Path, meta: dict, how: str = "use the same config to resume") -> dict:
    """Start or continue the dataset in `root` with `meta`: refused where `root` holds something else
    (another config's dataset or shard, or files that are no dataset). Writes meta.json; returns it."""
    meta_path = root / "meta.json"
    if meta_path.is_file():
        old = read_json(meta_path, dict, f"delete {root} or choose another out=", DatasetError)
        if old.get("config") != meta["config"]:
            diff = config_diff(old.get("config", {}), meta["config"])
            raise UserError(f"{root} already holds a dataset collected with a different config "
                            f"({diff}): {how}, or another out= folder")
        was, now = old.get("shard"), meta.get("shard")
        if was and now and (was["index"], was["count"]) == (now["index"], now["count"]) \
                and was.get("episodes") != now.get("episodes"):
            raise UserError(f"{root} holds shard {was['index']}/{was['count']} of a collection of {was.get('episodes')} "
                            f"episodes, this run asks for {now.get('episodes')}: use episodes={was.get('episodes')} "
                            "to resume it, or give every shard of the larger collection a new out= folder")
        if old.get("shard") != meta.get("shard"):
            def name(m):
                return f"shard {m['shard']['index']}/{m['shard']['count']}" if m.get("shard") else "no shard"

            raise UserError(f"{root} holds {name(old)} of this collection, this run is {name(meta)}: give "
                            "every shard its own out= folder (then `driving data merge OUT SHARD_FOLDERS...`)")
        meta["counts"] = old.get("counts", meta["counts"])
    elif root.exists() and any(p.name != LOCK for p in root.iterdir()):
        raise UserError(f"{root} exists and is not a dataset: choose another out= folder")
    atomic.write_json(meta_path, meta)
    return meta


def _prepare(cfg: CollectConfig, root: Path, env: DrivingEnv) -> dict:
    shard = parse_shard(cfg.shard)
    extra = {"shard": {**shard.as_dict(), "episodes": cfg.episodes}} if shard else {}
    return open_dataset(root, dataset_meta(env, to_dict(cfg.camera), to_dict(cfg.noise), identity(cfg), **extra))


def finished_episodes(root: Path, jobs: list[tuple[int, int]]) -> dict[int, dict]:
    """Episodes already on disk (valid files with the expected seed), as index rows; `jobs`: the
    (episode, seed) pairs expected. Every byte is checked: against the SHA-256 the index recorded,
    where it did, and every zip member's CRC. A corrupt file is removed (and so collected again),
    with a note naming it."""
    done = {}
    recorded = {r["episode"]: r.get("sha256") for r in load_index(root)}
    for episode, seed in jobs:
        path = root / episode_filename(episode)
        if not path.is_file():
            continue
        try:
            _, summary, _, digest = read_episode_file(path, keys=("speed",), sha256=recorded.get(episode),
                                                      full_check=True, with_meta=True)
        except DatasetError as e:
            print(f"note: {e} -- collecting it again", file=sys.stderr)
            path.unlink()  # half-written files never exist (atomic writes); this one is damaged
            continue
        if summary.get("seed") == seed:
            done[episode] = {"episode": episode, "file": episode_filename(episode), **summary, "sha256": digest}
    return done


def write_index(root: Path, rows: dict[int, dict], meta: dict) -> None:
    index = [rows[k] for k in sorted(rows)]
    atomic.write_json(root / "index.json", index)
    meta["counts"] = {"episodes": len(index), "frames": int(sum(r["length"] for r in index))}
    atomic.write_json(root / "meta.json", meta)


def collect(cfg: CollectConfig, progress: bool = True) -> Path:
    """Collect `cfg.episodes` episodes into `cfg.out`, skipping those already there."""
    if cfg.executor == "ray":  # a missing Ray or a cluster that does not answer: refused before any output
        from driving.executors import connect

        connect(cfg.ray_address)
    with writing(cfg.out, "driving collect", holds="a dataset"):
        return _collect(cfg, progress)


def plan_collection(cfg: CollectConfig) -> tuple[Path, dict, list]:
    """The dataset's root, its meta (written) and its episode jobs, with the config checked up front:
    scenario, camera, expert and env overrides, before any worker starts."""
    try:
        get_scenario(cfg.scenario)
    except UnknownScenarioError as e:
        raise UserError(str(e)) from None
    root = Path(cfg.out)
    probe_env(cfg.scenario, cfg.camera, cfg.max_steps, cfg.env, cfg.expert)
    probe = make_env(cfg)
    probe.reset(seed=cfg.seed)
    return root, _prepare(cfg, root, probe), episode_jobs(cfg)


def _collect(cfg: CollectConfig, progress: bool = True) -> Path:
    root, meta, jobs = plan_collection(cfg)
    note_empty_shard(cfg.shard, cfg.episodes, "collection")
    rows = finished_episodes(root, jobs)
    # Rows of episodes beyond this run's count (an earlier, larger run) stay in the index.
    beyond = 0
    for row in load_index(root):
        if row["episode"] >= cfg.episodes:
            beyond += row["episode"] not in rows
            rows.setdefault(row["episode"], row)
    if beyond:
        print(f"note: {root} holds {len(rows)} episodes, {beyond} of them beyond episodes={cfg.episodes}: it keeps "
              f"them all (training reads every one); another out= folder holds a {cfg.episodes}-episode dataset",
              file=sys.stderr)
    todo = [(i, s) for i, s in jobs if i not in rows]
    workers = min(cfg.workers or os.cpu_count() or 1, max(1, len(todo)))
    # until every episode asked for is on disk, the dataset says so (an interrupted collection must not
    # read as a finished one); this run's request replaces an earlier one's
    meta["collection"] = {"requested": len(jobs), "finished": not todo}
    write_index(root, rows, meta)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), unit="ep", disable=not progress,
               desc=f"collect {cfg.scenario}" + (f" shard {cfg.shard}" if cfg.shard else ""), dynamic_ncols=True)
    frames, t0 = 0, time.perf_counter()

    def done(row):
        nonlocal frames
        rows[row["episode"]] = row
        frames += row["length"]
        write_index(root, rows, meta)
        dt = max(time.perf_counter() - t0, 1e-9)
        bar.set_postfix_str(f"{frames / dt:.0f} frames/s", refresh=False)
        bar.update(1)

    try:
        if cfg.executor == "ray" and todo:
            for row in _ray_rows(cfg, root, meta, todo):
                done(row)
        elif workers <= 1:
            _worker_init(cfg, str(root), meta)
            for job in todo:
                try:
                    row = _worker_run(job)
                except Exception as e:  # noqa: BLE001 - one line, as from a worker process
                    if isinstance(e, (UserError, OSError)):  # the CLI names a disk's errors itself
                        raise
                    raise worker_failed("collection", f"{type(e).__name__}: {e}{where_raised(e.__traceback__)}") from None
                done(row)
        elif todo:
            for row in run_in_workers(_worker_run, todo, workers, "collection", _worker_init,
                                      (cfg, str(root), meta, True)):
                done(row)
    finally:
        bar.close()
        _WORKER.clear()
    if todo:
        meta["collection"]["finished"] = True
        write_index(root, rows, meta)
    return root


def load_index(root: Path) -> list[dict]:
    """The index rows on disk that are well formed; a damaged index is rebuilt from the episode files."""
    path = root / "index.json"
    try:
        rows = read_json(path, list) if path.is_file() else []
    except UserError:
        return []
    return [r for r in rows if isinstance(r, dict) and all(k in r for k in INDEX_KEYS)]
