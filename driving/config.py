"""Configs: dataclasses are the schema, YAML files fill them, `key.sub=value` overrides on top.

OmegaConf does the merging and type checking; this module turns its errors into one clear line.
"""
from __future__ import annotations

import math
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from driving.errors import UserError

T = TypeVar("T")
_ABSENT = object()  # a key a YAML file does not have (None is one it leaves empty)
MAX_EPISODES = 1_000_000  # episodes of one run: collection seeds from 0 then stay below evaluation's
EVAL_SEED = 1_000_000  # evaluation seeds start here; collection seeds (from 0) never reach them
# An episode's frames stay in memory until it ends (~10 kB a step with a 96x96 grey camera): 100,000
# steps (5.6 h at 5 Hz, ~1 GB there) is far past every scenario's own length (<= 200); an unbounded
# value ran on until the memory was full.
MAX_STEPS = 100_000


def _known_keys(schema, prefix: str = "") -> list[str]:
    keys = []
    for f in fields(schema):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            keys += _known_keys(type(default), prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


def load_config(schema: type[T], path: str | Path | None = None, overrides: list[str] = (),
                group: str | None = None) -> T:
    """Schema defaults <- the scenario's own defaults <- YAML file <- `key=value` overrides, validated
    against the schema. The scenario's layer is `schema.scenario_defaults(name)` where the schema
    has one (e.g. the intersection's camera), so a user's `camera.width=...` still wins over it.
    `group`: where the user gave these keys (a pipeline's `eval`), named in an error, whose keys are
    the stage's own (`episodes` there is `eval.episodes` to the user)."""
    try:
        return _load_config(schema, path, overrides)
    except UserError as e:
        if group:
            raise UserError(f"in {group}.*: {e}") from None
        raise


def _names_scenarios(schema, word: str) -> bool:
    """Whether `word` is a scenario name (or a comma list of them) and `schema` has a scenario key."""
    from sim.scenarios import SCENARIOS

    names = [n.strip() for n in word.split(",")]
    return "scenario" in {f.name for f in fields(schema)} and all(n in SCENARIOS for n in names)


def _load_config(schema: type[T], path: str | Path | None, overrides: list[str]) -> T:
    try:
        base = OmegaConf.structured(schema)
        layers = []
        if path is not None:
            path = Path(path)
            if path.is_dir():
                raise UserError(f"config file {path} is a folder, not a YAML file: pass a YAML file or none "
                                "(a command's folder argument, such as `driving eval`'s checkpoint, comes first)")
            if not path.is_file():
                if _names_scenarios(schema, str(path)):  # `driving collect highway`: a natural first try
                    names = str(path).split(",")
                    if len(names) > 1 and not hasattr(schema, "scenarios"):  # collect, dagger: one scenario
                        raise UserError(f"{path} are scenarios, not a config file: this command takes one, e.g. "
                                        f"scenario={names[0].strip()} (a CONFIG.yaml comes first, key=value after)")
                    what = "are scenarios" if len(names) > 1 else "is a scenario"
                    raise UserError(f"{path} {what}, not a config file: use scenario={path} (a CONFIG.yaml "
                                    "comes first, key=value after)")
                raise UserError(f"config file {path} not found: pass an existing YAML file or none")
            try:
                layer = OmegaConf.load(path)
            except yaml.YAMLError as e:
                raise UserError(f"config file {path} is not valid YAML ({_yaml_problem(e)}): fix the file") from None
            except UnicodeDecodeError as e:
                raise UserError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start}): save it as "
                                "UTF-8") from None
            except OSError as e:  # OmegaConf's word for a file holding one plain value
                if "Invalid loaded object type" not in str(e):
                    raise
                layer = None
            if not isinstance(layer, DictConfig):
                raise UserError(f"config file {path} must hold `key: value` lines at its top level, not a list or "
                                "a single value")
            for group in sorted(_groups(schema)):
                value = OmegaConf.select(layer, group, default=_ABSENT)
                if value is None:  # `camera:` with nothing under it
                    raise UserError(f"{group} in {path} is empty: give its keys indented under it, e.g. `{group}:` "
                                    "then `  KEY: VALUE`, or drop the line")
                if value is not _ABSENT and not isinstance(value, DictConfig):
                    raise UserError(f"{group} in {path} is a group of keys, not one value: give its keys "
                                    f"indented under it, e.g. `{group}:` then `  KEY: VALUE` (--print-config "
                                    "lists them)")
            layers.append(_home_expanded(layer))
        bad = [o for o in overrides if "=" not in o]
        if bad and bad[0].endswith((".yaml", ".yml")):
            raise UserError(f"{bad[0]}: a CONFIG.yaml comes first, before the key=value overrides, and a command takes "
                            f"one: driving COMMAND {bad[0]} KEY=VALUE ...")
        if bad:
            raise UserError(f"override {bad[0]!r} is not key=value (e.g. steps=20)")
        empty = [o for o in overrides if o.endswith("=") and o.count("=") == 1]
        if empty:  # an unset shell variable ($DATA): would have quietly meant null (collect anew, train from scratch)
            raise UserError(f"override {empty[0]!r} has no value: give one, or drop it to keep the default "
                            f"({empty[0]}null where you mean none)")
        for o in overrides:  # one at a time, so a value that is not YAML is named
            try:
                OmegaConf.from_dotlist([o])
            except yaml.YAMLError as e:
                raise UserError(f"override {o!r}: its value is not valid YAML ({_yaml_problem(e, mark=False)}); "
                                "quote it, or close its brackets, e.g. seeds=[0,1]") from None
        layers.append(_home_expanded(OmegaConf.from_dotlist(list(overrides))))
        cfg = OmegaConf.merge(base, *layers)
        scenario_defaults = getattr(schema, "scenario_defaults", None)
        if scenario_defaults is not None:
            defaults = scenario_defaults(cfg.scenario)
            if defaults:
                cfg = OmegaConf.merge(base, defaults, *layers)
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None)
        msg = str(e).splitlines()[0]
        if "oc.env" in msg or "Environment variable" in msg:  # ${oc.env:NAME} of a variable that is not set
            raise UserError(f"{key}: {msg}: set the variable, or give the value itself") from None
        if "not in struct" in msg or "Key" in msg and "not" in msg:
            raise UserError(f"unknown config key {key!r}; known keys: {', '.join(_known_keys(schema))}") from None
        shape = _shape_problem(schema, key, msg, overrides)
        raise UserError(shape or f"bad config value for {key!r}: {msg}") from None
    except (TypeError, ValueError) as e:  # raised by a dataclass's own validation
        raise UserError(f"bad config: {e}") from None
    return obj


def typed_overrides(schema, values: dict, prefix: str) -> dict:
    """`values`, overrides of some of `schema`'s fields kept as a free dict (each scenario's own defaults go
    under them), checked and converted as the schema types them: '48' -> 48, while 'abc' for an int, 'maybe'
    for a bool or an unknown key is one UserError naming `prefix.key`."""
    known = [f.name for f in fields(schema)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UserError(f"unknown config key '{prefix}.{unknown[0]}'; known {prefix} keys: {prefix}."
                        + f", {prefix}.".join(known))
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), dict(values))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None)
        raise UserError(f"bad config value for '{prefix}.{key}': {str(e).splitlines()[0]}") from None
    return {k: typed[k] for k in values}


def _home_expanded(layer: DictConfig) -> DictConfig:
    """The layer with `~` at the start of a value expanded to the home folder, as a shell would (YAML, a
    quoted override and zsh's `key=~/x` pass it on as it is: `out=~/ds` wrote a folder named `~`). A
    path is the only value that starts with one."""
    def expand(value):
        if isinstance(value, str) and value.startswith("~"):
            return os.path.expanduser(value)
        if isinstance(value, dict):
            return {k: expand(v) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(v) for v in value]
        return value

    plain = OmegaConf.to_container(layer, resolve=False)
    expanded = expand(plain)
    return layer if expanded == plain else OmegaConf.create(expanded)


def _groups(schema, prefix: str = "") -> set[str]:
    """The keys that are groups of keys (nested dataclasses, or free-form dicts such as collect's
    expert and env), e.g. camera, net, optim."""
    out = set()
    for f in fields(schema):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            out |= {prefix + f.name} | _groups(type(default), prefix + f.name + ".")
        elif isinstance(default, dict):
            out.add(prefix + f.name)
    return out


def _shape_problem(schema, key, msg: str, overrides) -> str | None:
    """OmegaConf's words for a value of the wrong shape (a list for one value, one value for a list, a
    value for a group of keys), as what the key takes."""
    if "is not a ListConfig" in msg:  # the last of a key given twice is the one that counts
        value = next((o.split("=", 1)[1] for o in reversed(overrides) if o.split("=", 1)[0] == key), "...")
        return f"{key} takes a list: {key}=[{value}]"
    if "Cannot convert 'ListConfig'" in msg or "Cannot convert 'DictConfig'" in msg:
        return (f"{key} takes one value, not a list or group (a comma list where it names several, "
                f"e.g. scenario=highway,merge)")
    if "Merge error" in msg and "is not a subclass of" in msg or "Cannot assign" in msg and "to Dict" in msg:
        groups = _groups(schema)
        given = next((o.split("=", 1)[0] for o in overrides if o.split("=", 1)[0] in groups), key)
        return f"{given} is a group of keys, not one value: set its keys, e.g. {given}.KEY=VALUE (--print-config lists them)"
    return None


def _yaml_problem(e: yaml.YAMLError, mark: bool = True) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = getattr(e, "problem_mark", None)
    return f"{problem} at line {where.line + 1}, column {where.column + 1}" if mark and where is not None else problem


def to_yaml(obj) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(obj))


def to_dict(obj) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)


def config_diff(a: dict, b: dict, prefix: str = "") -> str:
    """`key: old there, new now` for every leaf that differs between two config dicts."""
    if not isinstance(a, dict) or not isinstance(b, dict):  # a hand-edited file's config
        return "" if a == b else f"{prefix.rstrip('.') or 'config'}: {a!r} there, {b!r} now"
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            d = config_diff(va, vb, prefix + k + ".")
            if d:
                out.append(d)
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} there, {vb!r} now")
    return "; ".join(out)


def check_episodes(prefix: str, episodes: int, seed: int, workers: int | None, max_steps: int | None) -> None:
    """The keys every command that drives episodes has (collect, eval, gap, train's eval.*), checked one
    way; `prefix` names their group ("eval." for train's), workers=None where the caller checks its own."""
    if not 1 <= episodes <= MAX_EPISODES:  # the seed list is built up front: a huge count filled the memory
        raise ValueError(f"{prefix}episodes must be in 1..{MAX_EPISODES:,}, got {episodes}")
    check_seed(f"{prefix}seed", seed)
    check_seed(f"{prefix}seed + {prefix}episodes - 1 (the last episode's seed)", seed + episodes - 1)
    if workers is not None and workers < 0:
        raise ValueError(f"{prefix}workers must be >= 0 (0 = one per core)")
    if max_steps is not None and not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"{prefix}max_steps must be in 1..{MAX_STEPS:,}, got {max_steps} "
                         "(or null for the scenario's own length)")


# Environments per simulation worker process in the closed loop: with two, a worker steps one while the
# other waits for its action (the pipe both ways, the policy's forward pass); docs/FIGURES.md.
ENVS_PER_WORKER = 2
MAX_ENVS_PER_WORKER = 16


def check_envs_per_worker(prefix: str, n: int) -> None:
    if not 1 <= n <= MAX_ENVS_PER_WORKER:
        raise ValueError(f"{prefix}envs_per_worker must be in 1..{MAX_ENVS_PER_WORKER}, got {n} (1: one env a "
                         f"worker, which idles while its action is computed; default {ENVS_PER_WORKER})")


def check_seed(name: str, seed: int) -> None:
    """Episode seeds go to gymnasium, which takes none below 0."""
    if not 0 <= seed < 2**31:
        raise ValueError(f"{name} must be in 0..{2**31 - 1}, got {seed}")


def check_number(name: str, value: float, what: str = "a number >= 0") -> None:
    """A float key (finite, >= 0) that torch or the simulator would take without a word and fail on later."""
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be {what}, got {value}")


def refuse_owned(where: str, keys: dict | None, owned: dict[str, str], who: str) -> None:
    """One ValueError for the first key of `keys` (a stage's extra keys) that the command `who` sets
    itself; `owned` maps each such key to where the user sets it instead."""
    clash = sorted(set(keys or {}) & set(owned))
    if clash:
        raise ValueError(f"{where}.{clash[0]} is set by {who} itself: {owned[clash[0]]}")


def as_overrides(d: dict, prefix: str = "") -> list[str]:
    """A nested dict (a stage's extra keys in a YAML file) as `key.sub=value` overrides."""
    import json

    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += as_overrides(v, f"{prefix}{k}.")
        else:
            quoted = isinstance(v, (list, bool)) or v is None or v == ""  # (an empty string is not an empty key=)
            out.append(f"{prefix}{k}={json.dumps(v) if quoted else v}")
    return out
