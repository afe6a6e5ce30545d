"""Processes that must die with their parent: fork servers and simulation workers (driving.parent_death).

The hazard these tests pin down: a process whose parent dies before it asks for the parent-death
signal has already been handed to init; asking then ties it to init, and it lives on. A command
killed while its fork server was still importing once left the server and a worker idle for good.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from driving.parent_death import CLIENT_ENV, SERVER_ENV, expected_parent

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")

_ORPHAN = """
import os, sys, time
from driving.parent_death import die_with_parent
parent = os.getpid()
if os.fork() == 0:
    time.sleep(0.5)  # the parent is gone before the child asks
    die_with_parent({arg})
    open(sys.argv[1], "w").write("alive")
os._exit(0)
"""


def _orphan_survives(tmp_path, arg: str) -> bool:
    marker = tmp_path / f"alive_{arg}"
    subprocess.run([sys.executable, "-c", _ORPHAN.format(arg=arg), str(marker)], check=True, timeout=60)
    deadline = time.time() + 5
    while time.time() < deadline and not marker.exists():
        time.sleep(0.05)
    return marker.exists()


def test_a_child_whose_named_parent_died_before_it_asked_exits(tmp_path):
    assert not _orphan_survives(tmp_path, "parent")
    # Not naming the parent reads it back after the fact (init by then): the orphan lives on. This is
    # what the fork server did before it was told its command's pid.
    assert _orphan_survives(tmp_path, "")


def _run_as_child(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)


def test_fork_server_guard_exits_unless_its_command_is_its_parent():
    code = f"import os, driving.forkserver_guard; print(os.environ['{SERVER_ENV}'] == str(os.getpid()))"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    gone = _run_as_child(code, {CLIENT_ENV: dead})  # its command died while it started
    assert gone.returncode == 1 and gone.stdout == ""
    alive = _run_as_child(code, {CLIENT_ENV: str(os.getpid())})
    assert alive.returncode == 0, alive.stderr
    assert alive.stdout.strip() == "True"  # the workers it forks learn its pid


def test_a_worker_whose_fork_server_died_exits():
    code = "from driving.envpool import worker_setup; worker_setup(); print('alive')"
    assert _run_as_child(code, {SERVER_ENV: "1"}).returncode == 1  # forked, then the server died
    ok = _run_as_child(code, {SERVER_ENV: str(os.getpid())})
    assert ok.returncode == 0 and ok.stdout.strip() == "alive", ok.stderr


def test_the_expected_parent_is_taken_out_of_the_environment(monkeypatch):
    monkeypatch.setenv(CLIENT_ENV, "4242")
    assert expected_parent(CLIENT_ENV) == 4242
    assert CLIENT_ENV not in os.environ  # a process started from here does not inherit it
    monkeypatch.setenv(CLIENT_ENV, "not a pid")
    assert expected_parent(CLIENT_ENV) is None
    assert expected_parent(CLIENT_ENV) is None
