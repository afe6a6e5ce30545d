"""`driving video SOURCE [key=value ...]`: rollouts of an evaluation, or episodes of a dataset."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from driving.config import load_config
from driving.errors import UserError


@dataclass
class VideoConfig:
    episodes: list[int] = field(default_factory=list)  # dataset: episode numbers (default: first 2);
    # evaluation: ignored, use seeds / count
    seeds: list[int] = field(default_factory=list)  # evaluation: these seeds (default: worst `count`)
    count: int = 2  # evaluation: how many of the policy's worst episodes
    scenario: Optional[str] = None  # evaluation: restrict to one scenario
    saliency: str = "vbp"  # vbp | gradcam | none
    who: str = "policy"  # evaluation: policy | expert
    out: Optional[str] = None  # default: SOURCE/videos

    def __post_init__(self):
        if self.saliency not in ("vbp", "gradcam", "none"):
            raise ValueError(f"saliency must be vbp, gradcam or none, got {self.saliency!r}")
        if self.who not in ("policy", "expert"):
            raise ValueError(f"who must be policy or expert, got {self.who!r}")
        if self.count < 1:
            raise ValueError(f"count must be >= 1 (how many of the worst episodes to film), got {self.count}")
        if self.out is not None and Path(self.out).suffix.lower() in (".mp4", ".mov", ".avi", ".webm", ".mkv"):
            raise ValueError(f"out= is the folder the videos go to (one file per episode, named by it), not a "
                             f"file: e.g. out={Path(self.out).with_suffix('')}")


EVAL_ONLY = {"seeds", "count", "scenario", "who", "saliency"}  # keys that pick or draw an evaluation's episodes


def video_command(source: str, overrides: list[str]) -> list[Path]:
    """Films while holding the lock of the folder it writes into: SOURCE itself where the videos go under it
    (an evaluation or collection into SOURCE meanwhile is refused, and refuses it), else `out`."""
    from driving.folder_lock import being_written, holder, writing

    cfg = load_config(VideoConfig, None, overrides)
    src = Path(source)
    if src.is_dir() and being_written(src):  # (its eval.json or meta.json may not be there yet)
        raise UserError(f"{src} is being written by {holder(src)}: wait for it to finish, then film it")
    is_eval = (src / "eval.json").is_file()
    if not is_eval and not (src / "meta.json").is_file():
        raise UserError(f"{source} is neither an evaluation folder (eval.json) nor a dataset (meta.json): "
                        "pass the output of `driving eval` or `driving collect`")
    out = Path(cfg.out) if cfg.out else src / "videos"
    inside = out.resolve().is_relative_to(src.resolve())
    with writing(src if inside else out, "driving video", sweep=False):
        return _films(src, is_eval, cfg, overrides)


def _films(src: Path, is_eval: bool, cfg: VideoConfig, overrides: list[str]) -> list[Path]:
    """An evaluation's episodes (`is_eval`), else a dataset's."""
    source = str(src)
    given = {o.split("=", 1)[0] for o in overrides}

    def listed(key: str) -> None:  # an empty list was read as "the defaults" without a word
        if key in given and not getattr(cfg, key):
            raise UserError(f"{key}=[] lists none: give {key}=[...], or drop it for the default")

    if is_eval:
        if "episodes" in given:
            raise UserError(f"{source} is an evaluation: episodes= picks a dataset's episodes; pick the evaluation's "
                            "with seeds=[...] or count=N (its worst)")
        listed("seeds")
        return eval_videos(src, cfg, given)
    wrong = sorted(given & EVAL_ONLY)
    if wrong:
        raise UserError(f"{source} is a dataset: {wrong[0]}= applies to an evaluation; pick a dataset's "
                        "episodes with episodes=[...]")
    listed("episodes")
    cfg.episodes = list(dict.fromkeys(cfg.episodes))  # each once, as seeds are
    from driving import video
    from driving.data.format import Dataset

    ds = Dataset.open(src)
    episodes = cfg.episodes or [r["episode"] for r in ds.index[:2]]
    if not episodes:
        raise UserError(f"{source} has no finished episode: nothing to film (collect some with "
                        "`driving collect`)")
    return video.video_for_dataset(src, Path(cfg.out) if cfg.out else src / "videos", episodes)


def eval_videos(src: Path, cfg: VideoConfig, given: frozenset | set = frozenset()) -> list[Path]:
    """Film episodes of an evaluation exactly as they were scored: the same env and expert settings,
    the actions recorded in actions.npz (older evaluations: the policy drives again), and the
    re-simulation checked against the scored row."""
    from driving import video
    from driving.baselines import ExpertPolicy
    from driving.evaluate import ACTIONS_FILE, actions_key, load_actions, load_eval_policy, worst
    from driving.jsonfile import read_json
    from driving.rollout import EpisodeMismatch

    again = "re-run the evaluation (`driving eval`)"
    result = read_json(src / "eval.json", dict, again)
    lacking = [k for k in ("scenarios", "checkpoint", "camera", "config") if k not in result]
    if lacking or not all(isinstance(s, dict) and cfg.who in s.get("episodes", {})
                          for s in result["scenarios"].values()):
        raise UserError(f"{src}/eval.json is not a complete evaluation result (no "
                        f"{', '.join(lacking) or 'episodes of the ' + cfg.who}): {again}")
    if cfg.scenario is not None and cfg.scenario not in result["scenarios"]:
        raise UserError(f"scenario {cfg.scenario!r} is not in {src}/eval.json; its scenarios: "
                        f"{', '.join(result['scenarios'])}")
    rows = [r for name, s in result["scenarios"].items() if cfg.scenario in (None, name)
            for r in s["episodes"][cfg.who]]
    if cfg.seeds:
        known = {r["seed"] for r in rows}
        missing = [s for s in cfg.seeds if s not in known]
        if missing:
            raise UserError(f"seeds {missing} are not in {src}/eval.json; its seeds: {sorted(known)}")
        rows = [r for r in rows if r["seed"] in cfg.seeds]
    else:
        if "count" in given and cfg.count > len(rows):  # (the default 2 of a 1-episode evaluation: no news)
            print(f"note: count={cfg.count}, and {src} holds {len(rows)} episode{'s' if len(rows) != 1 else ''} "
                  f"of the {cfg.who}"
                  f"{' in ' + cfg.scenario if cfg.scenario else ''}: filming all {len(rows)}", file=sys.stderr)
        rows = worst(rows, cfg.count)
    recorded = {}
    if (src / ACTIONS_FILE).is_file():
        recorded = load_actions(src, again)
    ckpt = result["checkpoint"]
    if cfg.who == "expert" or ckpt == "expert":
        if cfg.saliency != "none" and "saliency" in given:
            print(f"note: saliency={cfg.saliency} needs a network; the expert has none: its videos have no overlay",
                  file=sys.stderr)
        policy, camera = ExpertPolicy(), result["camera"]
    elif not Path(ckpt).exists():  # the run moved or its step folder was deleted (eval.json holds the path)
        lacking = [r["seed"] for r in rows if actions_key(r["scenario"], r["seed"], cfg.who) not in recorded]
        if lacking:
            raise UserError(f"{ckpt}, the checkpoint {src} evaluated, is gone (moved or deleted) and seed "
                            f"{lacking[0]} has no recorded actions to replay: put the checkpoint back there, or "
                            "film the expert with who=expert")
        print(f"note: {ckpt}, the checkpoint {src} evaluated, is gone (moved or deleted): filming its recorded "
              "actions without the saliency overlay (put the checkpoint back there for it)", file=sys.stderr)
        # the replay needs no policy (only the saliency does): a stand-in that titles the video
        policy = SimpleNamespace(name=f"{'/'.join(Path(ckpt).parts[-3:])} (recorded actions; checkpoint gone)")
        camera = result["camera"]
    else:
        # the rule the evaluation drove with (a replay of its actions, and the policy's saliency)
        policy, camera, _ = load_eval_policy(ckpt, "auto", (result.get("config") or {}).get("plan_threshold"))
    out = Path(cfg.out) if cfg.out else src / "videos"
    conf = result["config"]
    saliency = None if cfg.saliency == "none" else cfg.saliency
    made = []
    for r in rows:
        try:
            made.append(video.policy_episode_video(
                policy, r["scenario"], r["seed"], camera, out / f"{r['scenario']}_seed{r['seed']}_{cfg.who}.mp4",
                max_steps=conf.get("max_steps"), saliency=saliency, env=conf.get("env"),
                expert={"perception": result.get("expert_perception", "privileged")},
                actions=recorded.get(actions_key(r["scenario"], r["seed"], cfg.who)), expect=r))
        except EpisodeMismatch as e:
            raise UserError(f"{e}: the simulator or policy changed since {src} was evaluated; "
                            "evaluate again to film it") from None
    return made
