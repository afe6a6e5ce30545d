"""Ctrl-C while simulation workers start: the command prints its one line, never a page of
multiprocessing internals from the fork server or a half-started worker (driving.forkserver_guard,
envpool._start_fork_server)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from driving.parent_death import CLIENT_ENV

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the fork server's start is Linux's here")

_CTRL_C_AT_START = """
import os, signal
from multiprocessing import forkserver
from driving.envpool import run_in_workers, single_threaded_children, worker_context

ctx = worker_context()
with single_threaded_children(ctx):
    os.kill(forkserver._forkserver._forkserver_pid, signal.SIGINT)  # the server is still starting
print(sorted(run_in_workers(abs, [-1, -2, -3], workers=2, what="a test")))
"""


def test_a_ctrl_c_while_the_fork_server_starts_neither_kills_it_nor_prints():
    # Unblocked, SIGINT ends a new interpreter before it installs Python's handler, or raises
    # KeyboardInterrupt in the middle of its preload imports (a traceback on the user's terminal).
    done = subprocess.run([sys.executable, "-c", _CTRL_C_AT_START], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[1, 2, 3]"
    assert done.stderr == ""


_CHILD_FAILS_TO_START = """
import os, sys
import multiprocessing.synchronize as ms
import driving.forkserver_guard

def report(error):
    try:
        raise error
    except BaseException:
        sys.excepthook(*sys.exc_info())

def unlinked_semaphore():
    # what unpickling a job's queue does once the command has unlinked its semaphores
    try:
        ms.SemLock.__setstate__(ms.Lock.__new__(ms.Lock), (0, 1, 1, "/mp-driving-test-gone"))
    except FileNotFoundError:
        sys.excepthook(*sys.exc_info())

if os.fork() == 0:  # as the server forks a worker, which then cannot read its job
    unlinked_semaphore()
    report(EOFError("pipe closed"))
    report(FileNotFoundError(2, "a moved script"))  # not the command going away: shown
    report(ValueError("a real fault"))
    sys.stderr.flush()
    os._exit(0)
os.wait()
report(EOFError("in the server itself"))
"""


def test_a_worker_that_cannot_start_because_its_command_is_gone_prints_nothing():
    done = subprocess.run([sys.executable, "-c", _CHILD_FAILS_TO_START], capture_output=True, text=True,
                          env={**os.environ, CLIENT_ENV: str(os.getpid())}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "synchronize.py" not in done.stderr
    assert "pipe closed" not in done.stderr
    assert "FileNotFoundError: [Errno 2] a moved script" in done.stderr  # anything else still shows
    assert "ValueError: a real fault" in done.stderr
    assert "in the server itself" in done.stderr


_PARENT_LEAVES_MID_EPISODE = """
import time
from driving.envpool import EnvPool, SleepingEnv

kwargs = {"factory": SleepingEnv, "obs_shape": (2, 32, 16), "step_s": [0.2], "reset_s": [0.0], "length": 50}
pool = EnvPool(4, kwargs, 2)
procs = [r.proc for r in pool.remotes]
for i in range(4):
    pool.send_reset(i, i)
pool.recv_ready([0, 1, 2, 3])
pool.send_steps({i: [0.0, 0.0] for i in range(4)})  # in flight when the command goes
for r in pool.remotes:  # what a Ctrl-C leaves: the pipes closed, no close command sent
    r.conn.close()
for p in procs:
    p.join(timeout=30)
print([p.exitcode for p in procs])
"""


def test_workers_whose_command_stopped_mid_step_exit_without_a_traceback():
    """A Ctrl-C in `driving eval` closes the pipes while a step is in flight: a worker then gets EOF
    or a broken pipe, and must go quietly (it printed an EOFError traceback in about 1 try of 3)."""
    done = subprocess.run([sys.executable, "-c", _PARENT_LEAVES_MID_EPISODE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 0]"
    assert "Traceback" not in done.stderr, done.stderr
