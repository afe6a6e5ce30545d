"""The GPU machine's measurements (issues 11 and 12) as one prepared command per device call.

A session is lent the machine for minutes at a time (10 minutes a command, a bare machine after 30 s
idle), so each part runs its steps one after another under one deadline, gives every step a timeout
of its own (a slow step cannot starve the rest), writes each step's output to OUT/NAME.log as it
comes, and ends with OUT/summary.json (rc, wall seconds, the log's last lines per step).

  bench        collection, evaluation and training throughput (issue 12's figures, ~8 min on 16 cores)
  scoreboard   `driving scoreboard configs/scoreboard/dagger.yaml` for the given training seeds
               (issue 11's table); the tables and eval.json files are copied to OUT/scoreboard

Datasets and checkpoints go to --work (default /tmp/device_check), not to OUT, which travels back.

On the device machine (`../shared/device/README.md`; carry `.whl`):

    . .whl/setup.sh && python3 scripts/device_check.py bench --out $OUT
    . .whl/setup.sh && python3 scripts/device_check.py scoreboard --seeds 0 --scenarios intersection,roundabout \
        --deadline-s 480 --out $OUT

Give --deadline-s what the session's device budget leaves (`status`: budget_left_s) less a minute or
two for the machine's start: a command the budget ends keeps only what was copied to OUT by then.

`--dry-run` prints the steps without running them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from driving import atomic

SCOREBOARD_CONFIG = "configs/scoreboard/dagger.yaml"


@dataclass
class Step:
    name: str
    argv: list[str]  # after the Python interpreter: a script under scripts/ or `-m driving.cli ...`
    timeout_s: float


def bench_steps(work: Path, workers: int) -> list[Step]:
    """Issue 12's measurements at its sizes: >= 200 episodes at the full worker count."""
    data = str(work / "train_data")
    per_worker = -(-200 // workers)  # ceil: at least 200 episodes at `workers`
    counts = f"1,{workers}"
    return [
        Step("collect", ["scripts/bench_collect.py", "--workers", counts, "--per-worker", str(per_worker),
                         "--repeats", "1", "--no-baseline", "--breakdown"], 150),
        # three policies (PilotNet graphed and eager, the expert) x (1 worker, all) x (1, 2 envs a worker) x
        # (timed, breakdown): at 2 x workers episodes of 40 steps about 120 s on 16 cores (one env a worker,
        # 50 steps: ~75 s)
        Step("eval", ["scripts/bench_eval.py", "--workers", counts, "--episodes", str(2 * workers),
                      "--max-steps", "40", "--repeats", "1", "--breakdown", "--envs-per-worker", "1,2"], 190),
        Step("train_data", ["-m", "driving.cli", "collect", "scenario=highway", "episodes=64",
                            f"workers={workers}", f"out={data}", "-q"], 40),
        Step("train_pilotnet_256", ["scripts/bench_train.py", "--dataset", data, "--batch-size", "256"], 60),
        Step("train_pilotnet_4096", ["scripts/bench_train.py", "--dataset", data, "--batch-size", "4096"], 90),
        Step("train_resnet18_256", ["scripts/bench_train.py", "--dataset", data, "--model", "resnet18",
                                    "--batch-size", "256"], 70),
    ]


def scoreboard_steps(work: Path, seeds: list[int], scenarios: str | None = None) -> list[Step]:
    only = [f"scenario={scenarios}"] if scenarios else []
    return [Step("scoreboard", ["-m", "driving.cli", "scoreboard", SCOREBOARD_CONFIG,
                                f"seeds=[{','.join(map(str, seeds))}]", *only, f"out={work / 'scoreboard'}", "-q"],
                 600)]


TICK_S = 30  # how often `tick` runs while a step does (the scoreboard's tables are copied out)


def run_steps(steps: list[Step], out: Path, deadline_s: float, tick=None) -> list[dict]:
    """Each step in turn under min(its timeout, what is left of the deadline); skipped when < 10 s are left.
    `tick()`, if given, runs every TICK_S while a step runs and after it: a command stopped from outside
    (the device budget ends first) still leaves what the step had finished."""
    out.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + deadline_s
    rows = []
    for step in steps:
        left = end - time.monotonic()
        if left < 10:
            rows.append({"step": step.name, "rc": None, "skipped": "deadline reached"})
            continue
        log = out / f"{step.name}.log"
        cmd = [sys.executable, *step.argv]
        print(f"== {step.name}: {' '.join(step.argv)}", flush=True)
        t = time.monotonic()
        with open(log, "w") as f:
            f.write(" ".join(cmd) + "\n")
            f.flush()
            # a new session: on timeout the whole group goes (collection and evaluation workers too)
            # unbuffered: a step killed at its timeout leaves what it had printed
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
            stop = t + min(step.timeout_s, left)
            rc = None
            while rc is None:
                try:
                    rc = p.wait(timeout=max(0.0, min(TICK_S, stop - time.monotonic())))
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= stop:
                        try:
                            os.killpg(p.pid, 9)
                        except ProcessLookupError:  # it ended between the timeout and the kill
                            pass
                        p.wait()
                        rc = "timeout"
                if tick is not None:
                    tick()
        wall = time.monotonic() - t
        tail = log.read_text(errors="replace").splitlines()[-30:]
        rows.append({"step": step.name, "rc": rc, "wall_s": round(wall, 1), "tail": tail})
        print("\n".join(tail), flush=True)
        print(f"== {step.name}: rc {rc}, {wall:.0f} s", flush=True)
    return rows


def copy_tables(work: Path, dest: Path) -> int:
    """The scoreboard's small outputs (tables, eval.json, rounds.json), without datasets or checkpoints."""
    n = 0
    for path in work.rglob("*"):
        if path.is_file() and (path.suffix == ".md" or path.name in ("eval.json", "rounds.json", "scoreboard.json")):
            target = dest / path.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            n += 1
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("bench", "scoreboard"))
    p.add_argument("--out", default=os.environ.get("OUT", "device_check"), help="default: $OUT")
    p.add_argument("--deadline-s", type=float, default=560, help="all steps together (a device command: 600)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="bench: the full worker count")
    p.add_argument("--seeds", default="0", help="scoreboard: training seeds, e.g. 0,1,2")
    p.add_argument("--scenarios", default=None,
                   help="scoreboard (required): a comma list of scenarios; one seed of all six is estimated at "
                        "9-10 min on 16 cores, more than one device command: two or three per command")
    p.add_argument("--work", default="/tmp/device_check",
                   help="datasets and checkpoints: kept out of OUT, which travels back")
    p.add_argument("--dry-run", action="store_true", help="print the steps only")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    out = Path(a.out).resolve()
    try:
        seeds = [int(s) for s in a.seeds.split(",")]
    except ValueError:
        sys.exit(f"--seeds: expected training seeds separated by commas, e.g. 0,1,2, not {a.seeds!r}")
    if a.workers < 1:
        sys.exit(f"--workers: expected the full worker count (>= 1, e.g. 16), not {a.workers}")
    if a.part == "scoreboard" and not a.scenarios:
        sys.exit("--scenarios: name the scoreboard's scenarios, e.g. --scenarios intersection,roundabout "
                 "(all six, one seed, is estimated at 9-10 min on 16 cores, more than one device command)")
    work = Path(a.work).resolve()
    steps = bench_steps(work, a.workers) if a.part == "bench" else scoreboard_steps(work, seeds, a.scenarios)
    if a.dry_run:
        for s in steps:
            print(f"{s.name} ({s.timeout_s:.0f} s): python {' '.join(s.argv)}")
        return 0
    t = time.monotonic()
    tables = (lambda: copy_tables(work / "scoreboard", out / "scoreboard")) if a.part == "scoreboard" else None
    rows = run_steps(steps, out, a.deadline_s, tick=tables)
    if tables is not None:
        rows.append({"step": "copy_tables", "files": tables()})
    summary = {"part": a.part, "cores": os.cpu_count(), "wall_s": round(time.monotonic() - t, 1), "steps": rows}
    atomic.write_json(out / "summary.json", summary)
    bad = [r["step"] for r in rows if r.get("rc") not in (0, None) or r.get("skipped")]
    print(f"== device_check {a.part}: {summary['wall_s']:.0f} s" + (f"; not done: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
