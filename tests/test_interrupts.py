"""SIGTERM stops a command as Ctrl-C does (one line, a resumable state), and a parallel scoreboard
stopped either way stops its scenarios rather than start the next ones (driving.interrupts)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals and /proc as on Linux")

_TWICE = """
import os, signal
from driving.interrupts import Terminated, restore_signals, stop_on_signals

previous = stop_on_signals((signal.SIGINT, signal.SIGTERM))
try:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(10 ** 6):
        pass
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


def test_main_in_process_leaves_the_callers_signal_handlers_as_they_were():
    from driving.cli import main

    before = signal.getsignal(signal.SIGTERM)
    assert main(["scenarios"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


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
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
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
