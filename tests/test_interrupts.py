"""SIGTERM stops a command as Ctrl-C does (one line, a resumable state), and a parallel scoreboard
stopped either way stops its scenarios rather than start the next ones (driving.interrupts)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals and process groups as on Linux")

_TWICE = """
import os, signal
from driving.interrupts import Terminated, restore_signals, stop_on_signals
from tests.helpers import sigterm_self

previous = stop_on_signals((signal.SIGINT, signal.SIGTERM))
try:
    sigterm_self()
except Terminated:
    print("terminated")
os.kill(os.getpid(), signal.SIGINT)  # the tidy-up after the first is not interrupted by a second
os.kill(os.getpid(), signal.SIGTERM)
print("tidied")
restore_signals(previous)
print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL, signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


def test_the_first_signal_is_an_interrupt_and_the_next_ones_do_not_interrupt_its_tidy_up():
    done = subprocess.run([sys.executable, "-c", _TWICE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["terminated", "tidied", "True True"], done.stdout
    assert done.stderr == ""


_TIDY_UP_THAT_WAITS = """
import signal, time
from driving.interrupts import stop_on_signals

stop_on_signals((signal.SIGINT, signal.SIGTERM), again="exit")  # as the command does
try:
    print("ready", flush=True)  # inside the try: a signal right after it is still the command's first
    time.sleep(60)
except KeyboardInterrupt:
    print("tidying", flush=True)
    time.sleep(60)  # a tidy-up that waits on something (a worker that does not answer)
"""


def test_a_second_ctrl_c_stops_a_command_at_once_without_a_traceback():
    """Ctrl-C twice: the first stops the command tidily, the second stops it now, in one line (it was a
    KeyboardInterrupt traceback out of the tidy-up, or a wait that only SIGKILL ended)."""
    p = subprocess.Popen([sys.executable, "-c", _TIDY_UP_THAT_WAITS], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    assert p.stdout.readline().strip() == "tidying"
    t = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130 and time.monotonic() - t < 10
    assert err == "interrupted again: stopped at once (re-run the same command)\n"


def test_main_in_process_leaves_the_callers_signal_handlers_as_they_were():
    from driving.cli import main

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert main(["scenarios"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


_STOP_LATER = """
import os, signal, sys, threading, time
from driving.interrupts import restore_signals, run_stoppable, stop_on_signals
from tests.helpers import sleep_or_fail_job

jobs, after, group = eval(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "group"
previous = stop_on_signals()
t0 = time.time()

def stop():
    time.sleep(after)
    if group:  # Ctrl-C: the terminal signals the whole process group
        os.killpg(0, signal.SIGINT)
    else:  # `kill PID`
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=stop, daemon=True).start()
try:
    print(run_stoppable(sleep_or_fail_job, jobs, 2))
except BaseException as e:
    print(type(e).__name__, round(time.time() - t0))
finally:
    restore_signals(previous)
"""


@pytest.mark.parametrize("jobs, to", [
    # one process idle (its short job done) when the stop comes: it printed the pool's traceback
    ("[(60.0, False), (0.5, False)]", "self"),
    ("[(60.0, False), (0.5, False)]", "group"),
    # a job fails at 1 s: the running one (60 s) is waited for and the queued one not started; a stop
    # during that wait had no effect (the command hung to the end of the running job, and on)
    ("[(60.0, False), (1.0, True), (0.1, False)]", "self"),
])
def test_run_stoppable_stops_busy_and_idle_processes_without_a_word(jobs, to):
    t0 = time.time()
    done = subprocess.run([sys.executable, "-c", _STOP_LATER, jobs, "4", to], capture_output=True, text=True,
                          timeout=120, start_new_session=True)
    kind, seconds = done.stdout.split()
    assert kind == ("Terminated" if to == "self" else "KeyboardInterrupt") and int(seconds) < 14, done
    assert time.time() - t0 < 40 and done.stderr == "", done.stderr


def test_run_stoppable_returns_results_as_jobs_finish_and_raises_a_jobs_error():
    from driving.interrupts import run_stoppable
    from tests.helpers import sleep_or_fail_job

    assert run_stoppable(sleep_or_fail_job, [(3.0, False), (0.0, False), (0.2, False)], 2) == [0.0, 0.2, 3.0]
    with pytest.raises(ValueError, match="failed after 0.1 s"):
        run_stoppable(sleep_or_fail_job, [(0.1, True), (0.3, False)], 2)
    assert run_stoppable(sleep_or_fail_job, [], 2) == []


@pytest.mark.parametrize("how", ["TERM to the command", "Ctrl-C to its process group"])
def test_a_stopped_parallel_scoreboard_stops_its_scenarios_and_starts_no_more(tmp_path, how):
    """Three scenarios, two at a time, each training for far longer than the test: the stop comes
    while two train. Before, the pool went on to the third scenario (Ctrl-C) and waited for all three,
    or died without a word (SIGTERM)."""
    out = tmp_path / "sb"
    cmd = [sys.executable, "-m", "driving.cli", "scoreboard", "scenario=merge,highway,racetrack", "size=cpu",
           "parallel=2", f"out={out}", "collect.episodes=2", "collect.max_steps=5", "collect.workers=1",
           "train.steps=1000000", "train.batch_size=4", "train.device=cpu", "train.threads=1", "eval.episodes=2",
           "eval.max_steps=5", "eval.videos=0", "eval.workers=1", "-q"]
    from driving.parent_death import die_with_parent

    me = os.getpid()  # the command dies with this test process, also when it is killed mid-test
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: die_with_parent(me))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list(out.glob("*/seed0/run/metrics.jsonl"))) < 2:
            time.sleep(0.2)
        time.sleep(1.0)
        assert len(list(out.glob("*/seed0/run/metrics.jsonl"))) == 2, "two scenarios should be training"
        t0 = time.time()
        if how.startswith("TERM"):
            proc.send_signal(signal.SIGTERM)
        else:
            subprocess.run(["kill", "-INT", "--", f"-{proc.pid}"], check=True)
        stdout, stderr = proc.communicate(timeout=120)
    finally:  # a command that did not stop trains on for hours otherwise
        subprocess.run(["kill", "-KILL", "--", f"-{proc.pid}"], capture_output=True)
    assert time.time() - t0 < 60  # stopped, not waited for
    assert proc.returncode == (143 if how.startswith("TERM") else 130)
    assert stderr.strip() == "interrupted: re-run the same command to resume", stderr
    started = [line for line in stdout.splitlines() if line.startswith("== ")]
    assert not [line for line in started if line.startswith("== merge")], stdout  # the cheapest, queued last
    assert not (out / "merge").exists()
