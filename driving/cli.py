"""The `driving` command. Thin: parses arguments and config overrides, calls importable functions."""
from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from driving.errors import UserError
from driving.interrupts import Terminated, restore_signals, stop_on_signals


def _config_from_args(schema, ns):
    """`[CONFIG.yaml] [key=value ...]` -> the resolved config; None once --print-config printed it."""
    from driving.config import load_config, to_yaml

    args = ns.args
    path, overrides = (args[0], args[1:]) if args and "=" not in args[0] else (None, args)
    cfg = load_config(schema, path, overrides)
    if ns.print_config:
        print(to_yaml(cfg), end="")
        return None
    return cfg


def cmd_collect(ns) -> int:
    from driving.data.collect import CollectConfig, collect
    from driving.data.format import Dataset
    from driving.data.stats import dataset_stats, format_stats

    cfg = _config_from_args(CollectConfig, ns)
    if cfg is None:
        return 0
    root = collect(cfg, progress=not ns.quiet)
    print(format_stats(dataset_stats(Dataset.open(root))))
    return 0


MAX_SHEET_FRAMES = 1000


@dataclass
class DataInfoConfig:
    json: bool = False  # one JSON object instead of a table
    validate: bool = False  # read every episode file fully


@dataclass
class DataShowConfig:
    out: Optional[str] = None  # PNG path (default: DATASET/contact_sheet.png)
    frames: int = 24
    columns: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.frames < 1 or self.columns < 1:
            raise ValueError(f"frames and columns must be >= 1, got frames={self.frames} columns={self.columns}")
        if self.frames > MAX_SHEET_FRAMES:  # a PNG has a size limit; a sheet that large shows nothing either
            raise ValueError(f"frames must be <= {MAX_SHEET_FRAMES} for one contact sheet, got {self.frames}")
        from driving.config import check_seed

        check_seed("seed", self.seed)
        if self.out is not None:
            _check_png_out(Path(self.out))


def _check_png_out(out: Path) -> None:
    """A contact sheet replaces only a PNG: `out=DATASET/meta.json` once wrote an image over a dataset."""
    if out.suffix.lower() != ".png":
        raise ValueError(f"out={out} must name a .png file")
    if out.is_file():
        with open(out, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                raise ValueError(f"out={out} exists and is not a PNG image: give a new .png path")


# The flags `data info/show` took before they took key=value like every other command.
_OLD_FLAGS = {"--json": "json=true", "--validate": "validate=true", "--out": "out=PATH", "--frames": "frames=N",
              "--columns": "columns=N", "--seed": "seed=N"}


def _data_config(schema, ns):
    from driving.config import load_config

    for flag, new in _OLD_FLAGS.items():
        if getattr(ns, "old_" + flag[2:], None) is not None:
            raise UserError(f"driving data {ns.data_command} takes key=value, not {flag}: "
                            f"driving data {ns.data_command} DATASET {new}")
    return load_config(schema, None, ns.overrides)


def _old_flags(parser) -> None:
    for flag in _OLD_FLAGS:  # accepted only to be refused with a pointer to the new form
        parser.add_argument(flag, nargs="?", const="", dest="old_" + flag[2:], help=argparse.SUPPRESS)


def _print_config(schema, overrides) -> int:
    from driving.config import load_config, to_yaml

    print(to_yaml(load_config(schema, None, overrides)), end="")
    return 0


def cmd_data_info(ns) -> int:
    from driving.data.format import Dataset
    from driving.data.stats import dataset_stats, format_stats

    if ns.print_config:
        return _print_config(DataInfoConfig, ns.overrides)
    cfg = _data_config(DataInfoConfig, ns)
    ds = Dataset.open(ns.dataset)
    if cfg.validate:
        ds.validate()
    stats = dataset_stats(ds)
    print(json.dumps(stats) if cfg.json else format_stats(stats))
    return 0


def cmd_data_show(ns) -> int:
    from driving.data.contact_sheet import write_contact_sheet
    from driving.data.format import Dataset

    if ns.print_config:
        return _print_config(DataShowConfig, ns.overrides)
    cfg = _data_config(DataShowConfig, ns)
    ds = Dataset.open(ns.dataset)
    out = Path(cfg.out) if cfg.out else Path(ns.dataset) / "contact_sheet.png"
    write_contact_sheet(ds, out, n=cfg.frames, columns=cfg.columns, seed=cfg.seed)
    print(out)
    return 0


def cmd_data_rebuild(ns) -> int:
    from driving.data.rebuild import rebuild

    r = rebuild(ns.dataset)
    for line in r["corrupt"]:
        print(f"left out: {line}", file=sys.stderr)
    print(f"{ns.dataset}: index.json rebuilt from {r['episodes']} episode files ({r['frames']} frames); "
          f"meta.json {r['meta']}" + (f"; {len(r['corrupt'])} corrupt file(s) left out (a `driving collect` "
                                      "re-run collects them again)" if r["corrupt"] else ""))
    return 0


def cmd_data_merge(ns) -> int:
    from driving.data.format import Dataset
    from driving.data.merge import merge_datasets

    out = merge_datasets(ns.out, ns.shards)
    ds = Dataset.open(out)
    print(f"{out}: {len(ds)} episodes ({ds.frames} frames) merged from {len(ns.shards)} shards")
    return 0


def cmd_data_export(ns) -> int:
    from driving.data.export_lerobot import export_dataset

    r = export_dataset(ns.dataset, ns.format, ns.out, progress=not ns.quiet)
    print(f"{ns.out}: {r.get('episodes', '?')} episodes, {r.get('frames', '?')} frames as {ns.format}")
    return 0


def cmd_train(ns) -> int:
    from driving.train import TrainConfig, train

    cfg = _config_from_args(TrainConfig, ns)
    if cfg is None:
        return 0
    result = train(cfg, progress=not ns.quiet)
    if not result.get("already"):  # (else train said so)
        print(f"trained {result['run_dir']} to step {result['step']}: "
              + "  ".join(f"{k} {v:.4f}" for k, v in result.items() if k.startswith(("loss", "val_loss"))))
    print(f"checkpoint: {result['run_dir']}/checkpoints/last")
    return 0 if result["ranks_agree"] else 1


def cmd_gap(ns) -> int:
    from driving.gap import GapConfig, format_gap, measure_gap

    cfg = _config_from_args(GapConfig, ns)
    if cfg is None:
        return 0
    result = measure_gap(cfg, progress=not ns.quiet and not ns.json)
    print(json.dumps(result) if ns.json else format_gap(result))
    return 0


def cmd_eval(ns) -> int:
    from driving.evaluate import EvalConfig, evaluate
    from driving.report import text_table

    if ns.checkpoint is None:
        raise UserError("driving eval takes what to evaluate first: driving eval CHECKPOINT|expert [CONFIG.yaml] "
                        "[key=value ...], e.g. driving eval runs/NAME/checkpoints/last")
    if ns.checkpoint == "merge":
        return cmd_eval_merge(ns)
    if "=" in ns.checkpoint and not Path(ns.checkpoint).exists():
        raise UserError(f"driving eval takes the checkpoint first: driving eval CHECKPOINT|expert [key=value ...] "
                        f"(got {ns.checkpoint!r} where the checkpoint goes)")
    cfg = _config_from_args(EvalConfig, ns)
    if cfg is None:
        return 0
    r = evaluate(ns.checkpoint, cfg, progress=not ns.quiet)
    print(text_table(r["result"]))
    print(f"\n{r['out']}/eval.json  {r['out']}/report.html")
    return 0


def cmd_eval_merge(ns) -> int:
    from driving.eval_merge import merge_evaluations
    from driving.report import text_table

    words = [a for a in ns.args if "=" not in a]
    keys = dict(a.split("=", 1) for a in ns.args if "=" in a)
    if len(words) < 2 or set(keys) - {"device"}:
        raise UserError("usage: driving eval merge OUT SHARD_FOLDER... [device=auto] (the folders of one "
                        "`driving eval ... shard=K/N` evaluation)")
    r = merge_evaluations(words[0], words[1:], device=keys.get("device", "auto"))
    print(text_table(r["result"]))
    print(f"\n{r['out']}/eval.json  {r['out']}/report.html")
    return 0


def cmd_scoreboard(ns) -> int:
    from driving.scoreboard import ScoreboardConfig, markdown, run_scoreboard

    cfg = _config_from_args(ScoreboardConfig, ns)
    if cfg is None:
        return 0
    board = run_scoreboard(cfg, progress=not ns.quiet,
                           command="driving scoreboard " + " ".join(ns.args))
    print("\n" + markdown(board))
    print(f"{cfg.out}/scoreboard.json  {cfg.out}/scoreboard.md")
    return 0


def cmd_dagger(ns) -> int:
    from driving.dagger import DaggerConfig, markdown, run_dagger

    cfg = _config_from_args(DaggerConfig, ns)
    if cfg is None:
        return 0
    board = run_dagger(cfg, progress=not ns.quiet, command="driving dagger " + " ".join(ns.args))
    print("\n" + markdown(board))
    print(f"{cfg.out}/rounds.json  {cfg.out}/rounds.md")
    return 0


def cmd_video(ns) -> int:
    from driving.video_cli import VideoConfig, video_command

    if ns.print_config:
        return _print_config(VideoConfig, ns.overrides)
    for path in video_command(ns.source, ns.overrides):
        print(path)
    return 0


def cmd_demo(ns) -> int:
    from driving.config import to_yaml
    from driving.demo import demo_config, run_demo

    if ns.print_config:  # the `driving dagger` config the demo runs
        print(to_yaml(demo_config(ns.out, ns.overrides)), end="")
        return 0
    run_demo(ns.out, ns.overrides, progress=not ns.quiet)
    return 0


def cmd_scenarios(ns) -> int:
    from sim import SCENARIOS

    for s in SCENARIOS.values():
        print(f"{s.name:15} {s.env_id:18} {s.policy_frequency:>2} Hz  {s.max_steps:>4} steps  {s.description}")
    return 0


def _config_command(sub, name: str, func, help: str, description: str):
    """A subcommand configured by an optional YAML file and key=value overrides."""
    c = sub.add_parser(name, help=help, description=description)
    c.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value")
    c.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=func)
    return c


class _Parser(argparse.ArgumentParser):
    """A command-line mistake is one line naming it and where the usage is, like every other error
    (argparse's default prints the whole usage block first). Subcommands inherit the class."""

    def error(self, message: str):
        subs = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if subs is not None and message.endswith(f"required: {subs.dest}"):
            message = f"give a command: {', '.join(subs.choices)}"
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists what it takes)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="driving", description="End-to-end driving: collect demonstrations, inspect data.")
    sub = p.add_subparsers(dest="command", required=True)

    _config_command(sub, "collect", cmd_collect, "expert demonstrations -> a dataset folder",
                    "driving collect [CONFIG.yaml] [key=value ...]  (keys: scenario, episodes, workers, "
                    "seed, out, max_steps, shard (K/N), executor (process|ray), ray_address, camera.*, "
                    "noise.*, expert.*, env.*)")
    _config_command(sub, "train", cmd_train, "dataset -> checkpoints (GPU when present)",
                    "driving train [CONFIG.yaml] [key=value ...]  (keys: dataset, model, steps, batch_size, "
                    "device, seed, out, net.*, optim.*, augment.*, loss, loss_weights, val_every, "
                    "checkpoint_every, wandb.mode, ...)")
    g = _config_command(sub, "gap", cmd_gap, "how often the expert's labels depend on what the camera cannot show",
                        "driving gap [CONFIG.yaml] [key=value ...]  (keys: scenario, episodes, seed, max_steps, "
                        "workers, accel_threshold, steer_threshold, camera.*, expert.*, env.*). The privileged "
                        "expert drives; at every state an expert that perceives only the camera's footprint is "
                        "queried too; prints the share of steps whose labels differ.")
    g.add_argument("--json", action="store_true", help="one JSON object (fractions) instead of a table")

    e = sub.add_parser("eval", help="closed loop -> metrics, report, videos",
                       description="driving eval CHECKPOINT|expert [CONFIG.yaml] [key=value ...]  (keys: "
                                   "scenario, episodes, workers, seed, out, max_steps, videos, saliency, device, "
                                   "expert_perception, plan_threshold, expert_from, shard (K/N), executor (process|ray), ray_address, env.*; "
                                   "configs/eval/ has examples). driving eval merge OUT SHARD_FOLDER...: the "
                                   "shards of one evaluation as one.")
    # optional to argparse, so that its own message (which called the optional keys required) is not the one given
    e.add_argument("checkpoint", nargs="?", help="runs/NAME/checkpoints/last, a step folder, a run folder, or 'expert'")
    e.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value")
    e.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_eval)

    _config_command(sub, "scoreboard", cmd_scoreboard, "collect -> train -> eval per scenario and training seed",
                    "driving scoreboard [CONFIG.yaml] [key=value ...]  (keys: scenario (a comma list), seeds "
                    "(training seeds), out, size (auto|cpu|cuda: the demo's sizes per machine), parallel (scenarios "
                    "at once; 0 = auto), collect.*, "
                    "train.*, eval.* (extra keys of each stage), rounds (DAgger rounds after BC per scenario "
                    "and seed; 0 = BC alone), dagger.* (extra `driving dagger` keys: beta, episodes, ...), "
                    "per_scenario.NAME.{collect,train,eval,dagger}.* (one scenario's own keys), per_scenario.NAME.recipe "
                    "(a `driving dagger` config as its keys), per_scenario.NAME.rounds; "
                    "configs/scoreboard/ has an example). "
                    "Resumes after a kill; writes scoreboard.json and scoreboard.md (BC beside the last round, "
                    "the gain, and which of the targets against the expert are met).")

    _config_command(sub, "dagger", cmd_dagger, "DAgger rounds: the student drives, the expert labels its states",
                    "driving dagger [CONFIG.yaml] [key=value ...]  (keys: scenario, out, dataset (round 0's; "
                    "default: collected), rounds, beta (expert share per round, e.g. [0.5,0.0]), takeover, "
                    "noise.*, noise_rounds (all|alone), episodes (per round), round_steps, shares (frames|rounds), workers, "
                    "device, size (auto|cpu|cuda), "
                    "collect.*, train.*, eval.*; configs/dagger/ has examples). Every round is evaluated on the "
                    "same seeds; writes rounds.json and rounds.md; resumes after a kill.")

    v = sub.add_parser("video", help="render rollouts of an evaluation, or dataset episodes, to mp4",
                       description="driving video EVAL_DIR|DATASET [key=value ...]  (keys: an evaluation's "
                                   "seeds, count (the worst N), scenario, saliency (vbp|gradcam|none), who "
                                   "(policy|expert); a dataset's episodes; out)")
    v.add_argument("source")
    v.add_argument("overrides", nargs="*", metavar="key=value")
    v.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    v.set_defaults(func=cmd_video)

    d = sub.add_parser("data", help="inspect or repair a dataset").add_subparsers(dest="data_command", required=True)
    i = d.add_parser("info", help="counts, outcomes, action and speed statistics",
                     description="driving data info DATASET [json=true] [validate=true]")
    i.add_argument("dataset")
    i.add_argument("overrides", nargs="*", metavar="key=value")
    i.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    _old_flags(i)
    i.set_defaults(func=cmd_data_info)
    s = d.add_parser("show", help="PNG contact sheet of sampled frames with their actions",
                     description="driving data show DATASET [out=PNG] [frames=24] [columns=8] [seed=0]")
    s.add_argument("dataset")
    s.add_argument("overrides", nargs="*", metavar="key=value")
    s.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    _old_flags(s)
    s.set_defaults(func=cmd_data_show)

    r = d.add_parser("rebuild", help="meta.json and index.json again from the episode files",
                     description="driving data rebuild DATASET: restores a lost or damaged meta.json and "
                                 "index.json from the episode files (corrupt ones are named and left out)")
    r.add_argument("dataset")
    r.set_defaults(func=cmd_data_rebuild)

    m = d.add_parser("merge", help="the shards of one collection (shard=K/N) as one dataset",
                     description="driving data merge OUT SHARD_FOLDER... : the N shard folders of one "
                                 "`driving collect ... shard=K/N` collection -> one dataset in OUT, equal to "
                                 "the unsharded collection's")
    m.add_argument("out")
    m.add_argument("shards", nargs="+", metavar="SHARD_FOLDER")
    m.set_defaults(func=cmd_data_merge)

    x = d.add_parser("export", help="a dataset in another format (LeRobot)",
                     description="driving data export DATASET --format lerobot OUT : a LeRobotDataset (v3 "
                                 "layout) that LeRobot's loader reads (pip install -e '.[lerobot]')")
    x.add_argument("dataset")
    x.add_argument("--format", required=True, help="lerobot")
    x.add_argument("out")
    x.add_argument("-q", "--quiet", action="store_true")
    x.set_defaults(func=cmd_data_export)

    dm = sub.add_parser("demo", help="the whole pipeline on built-in defaults (README's main job)")
    dm.add_argument("overrides", nargs="*", metavar="key=value",
                    help="`driving dagger` keys on the demo's recipe: collect.episodes=8 train.steps=500 "
                         "eval.episodes=4 rounds=0 (behaviour cloning alone) out=DIR")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--print-config", action="store_true", help="print the `driving dagger` config it runs, and exit")
    dm.add_argument("-q", "--quiet", action="store_true")
    dm.set_defaults(func=cmd_demo)

    sc = sub.add_parser("scenarios", help="list the named scenarios")
    sc.set_defaults(func=cmd_scenarios)
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Options may come anywhere on the line: `key=value` words after an option (which argparse
    leaves over) join the command's own list of them."""
    parser = build_parser()
    ns, extra = parser.parse_known_args(argv)
    if extra:
        listed = next((k for k in ("args", "overrides") if isinstance(getattr(ns, k, None), list)), None)
        stray = [e for e in extra if listed is None or e.startswith("-") or "=" not in e]
        if stray:  # named by the subcommand that was given them
            words = [w for w in (ns.command, getattr(ns, "data_command", None)) if w]
            _Parser(prog=" ".join(["driving", *words])).error(f"unrecognized arguments: {' '.join(stray)}")
        getattr(ns, listed).extend(extra)
    return ns


# Errors of the place a command writes to, whatever wrote (a worker process's arrive as themselves):
# one line naming the place and the fix; what was written stays consistent (atomic writes).
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR,
                errno.EEXIST, errno.ENAMETOOLONG}


def _os_error_line(e: OSError) -> str:
    """The one line for an OSError of _DISK_ERRORS: a path too long, a file this user may not read,
    else a place that cannot be written."""
    from driving.folder_lock import unwritable

    path = Path(e.filename or "?")
    if e.errno == errno.ENAMETOOLONG:
        return (f"the path {str(path)[:80]}... is too long for the file system (a name of at most 255 bytes, "
                "a path of at most 4096): use a shorter one")
    if e.errno in (errno.EACCES, errno.EPERM) and path.exists() and not os.access(path, os.R_OK):
        return f"cannot read {path}: permission denied: make it readable (chmod u+r) or use another path"
    return str(unwritable(path, e))


def main(argv: list[str] | None = None) -> int:
    ns = parse(argv)
    # SIGTERM takes Ctrl-C's path below. As the `driving` command (argv from the command line), a second
    # of either stops it at once (a traceback out of the tidy-up it interrupted, or a tidy-up that waits
    # on a worker, was what a second Ctrl-C gave); called in-process (tests, a notebook), SIGINT stays
    # the caller's and nothing exits their process.
    console = argv is None
    previous = stop_on_signals((signal.SIGINT, signal.SIGTERM) if console else (signal.SIGTERM,),
                               again="exit" if console else "ignore")
    try:
        return _run(ns)
    finally:
        restore_signals(previous)


def _run(ns: argparse.Namespace) -> int:
    try:
        return ns.func(ns)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `driving ... | head`: the reader stopped reading; so does the command, as a Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        print("stopped: the output pipe was closed (re-run the same command to resume a run that writes)",
              file=sys.stderr)
        return 141
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        print(f"error: {_os_error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # an evaluation (and a video) does not resume: run again, it starts over (a kill while filming
        # leaves eval.json marked videos_done: false, which dagger and scoreboard evaluate again)
        how = {cmd_eval: "re-run the same command to start it again (an evaluation does not resume; what it "
                         "wrote so far is replaced)",
               cmd_video: "re-run the same command to film it again",
               cmd_gap: "re-run the same command to measure again (it had written nothing)"}
        print("interrupted: " + how.get(ns.func, "re-run the same command to resume"), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130  # 128 + the signal, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
