"""`driving eval merge OUT SHARD_DIR...`: the N shards of one evaluation (`driving eval ... shard=K/N`)
as one, equal to the unsharded evaluation's eval.json (rows, aggregates, paired differences, seeds,
config with out=OUT) and reports; the videos of the worst episodes are filmed here, since which
episodes are worst is known only now.
"""
from __future__ import annotations

from pathlib import Path

from driving.config import config_diff
from driving.errors import UserError
from driving.folder_lock import writing
from driving.jsonfile import read_json
from driving.shards import check_complete, shard_of

_FIX = "merge the N shard folders of one `driving eval ... shard=K/N` evaluation"
# Config keys that may differ between the shards of one evaluation: where and how each ran.
_RUN_KEYS = ("shard", "out", "workers", "executor", "ray_address", "device")


def _comparable(result: dict) -> dict:
    cfg = {k: v for k, v in result["config"].items() if k not in _RUN_KEYS}
    return {"checkpoint": result.get("checkpoint"), "config": cfg,
            "metrics_version": result.get("metrics_version", 1)}  # rows scored by one definition


def check_readable(path: Path, result: dict, rerun: str) -> None:
    """What the merge reads of a shard's eval.json is there (a hand-edited or foreign file: one line)."""
    from driving.evaluate import EvalConfig

    cfg = result.get("config")
    if not isinstance(cfg, dict):
        raise UserError(f"{path} holds no evaluation config: {rerun}")
    try:
        names = EvalConfig(**{**cfg, "shard": None, "out": "x"}).scenarios
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}'s config is not a `driving eval` config ({e}): {rerun}") from None
    scenarios = result.get("scenarios") if isinstance(result.get("scenarios"), dict) else {}
    for name in names:
        one = scenarios.get(name)
        rows = one.get("episodes") if isinstance(one, dict) else None
        if not isinstance(rows, dict) or not all(
                isinstance(rows.get(who), list) and all(isinstance(r, dict) and isinstance(r.get("episode"), int)
                                                        for r in rows[who]) for who in ("policy", "expert")):
            raise UserError(f"{path} lacks {name}'s policy and expert episode rows: {rerun}")
    missing = [k for k in ("checkpoint", "camera") if k not in result]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: {rerun}")


def load_shards(paths: list[str | Path]) -> list[tuple[Path, dict]]:
    """(folder, eval.json) of each shard, checked: one evaluation, every shard once, each finished."""
    from driving.evaluate import ACTIONS_FILE

    if not paths:
        raise UserError("no shard folders given: driving eval merge OUT SHARD_0 SHARD_1 ...")
    shards = []
    for p in map(Path, paths):
        path = p / "eval.json"
        if not path.is_file() or not (p / ACTIONS_FILE).is_file():
            raise UserError(f"{p} holds no finished evaluation (eval.json and {ACTIONS_FILE}): re-run its "
                            "`driving eval ... shard=K/N` command")
        rerun = "re-run its `driving eval ... shard=K/N` command"
        result = read_json(path, dict, rerun)
        try:
            shard = shard_of(result)
        except ValueError as e:
            raise UserError(f"{path}: {e}: {rerun}") from None
        if shard is None:
            raise UserError(f"{p} is not a shard (evaluated without shard=K/N): {_FIX}")
        check_readable(path, result, rerun)
        shards.append((p, result))
    first = shards[0][1]
    for p, r in shards[1:]:
        if _comparable(r) != _comparable(first):
            diff = config_diff(_comparable(first), _comparable(r))
            raise UserError(f"{p} is a shard of a different evaluation than {shards[0][0]} ({diff}): {_FIX}")
    try:
        check_complete([shard_of(r) for _, r in shards], [str(p) for p, _ in shards],
                       "run them with the same command and shard=K/N, then merge all N")
    except ValueError as e:
        raise UserError(str(e)) from None
    return sorted(shards, key=lambda s: shard_of(s[1]).index)


def merge_evaluations(out: str | Path, paths: list[str | Path], device: str = "auto") -> dict:
    from driving import evaluate as ev

    shards = load_shards(paths)
    out = Path(out)
    if any(out.resolve() == Path(p).resolve() for p, _ in shards):
        raise UserError(f"OUT {out} is one of the shards: give a new folder for the merged evaluation")
    first = shards[0][1]
    cfg_dict = {**first["config"], "shard": None, "out": str(out)}
    cfg = ev.EvalConfig(**cfg_dict)
    result = {k: v for k, v in first.items() if k not in ("shard", "scenarios", "aggregate", "paired", "videos")}
    result["config"] = cfg_dict
    result["seeds"] = {name: ev.seeds_for(cfg) for name in cfg.scenarios}
    result["scenarios"] = {}
    for name in cfg.scenarios:
        rows = {}
        for who in ("policy", "expert"):
            rows[who] = sorted((r for _, s in shards for r in s["scenarios"][name]["episodes"][who]),
                               key=lambda r: r["episode"])
            if [r["episode"] for r in rows[who]] != list(range(cfg.episodes)):
                raise UserError(f"the shards' {name} {who} episodes are not episodes 0..{cfg.episodes - 1} once "
                                f"each: {_FIX}")
        result["scenarios"][name] = ev.scenario_result(rows["policy"], rows["expert"])
    ev.add_totals(result)
    actions = {}
    for p, _ in shards:
        actions.update(ev.load_actions(p, _FIX))
    checkpoint = first["checkpoint"]
    # it films the worst episodes
    policy = ev.load_eval_policy(checkpoint, device, cfg.plan_threshold)[0] if cfg.videos else None
    earlier = ev.keep_other_evaluation(out, checkpoint, cfg)
    with writing(out, "driving eval merge", holds="an evaluation"):
        if earlier is not None:
            ev.note_replaced_evaluation(out, earlier, checkpoint, cfg)
        ev.write_result(result, out, actions, checkpoint, policy, first["camera"], cfg)
    return {"out": out, "result": result}
