"""Processes that die with their parent (Linux): a killed command leaves no fork server or worker
simulating on, or idling forever. Standard library only, so that the fork server asks before its
preload imports highway-env (about a second).

The request (PR_SET_PDEATHSIG) is about the parent at the time it is made. A process whose parent
died before it asked has already been handed to init, and asking then would tie it to init. So
the parent to expect is named by the process that started it, never read back afterwards:
- a fork server: `CLIENT_ENV`, set by the command around the start of its first pool;
- a worker forked by that server: `SERVER_ENV`, which the server sets in its own environment.
A full test run once left a fork server and its worker idle under init: the command had been killed
while the server was still importing, and the server then asked about init.
"""
from __future__ import annotations

import os
import signal
import sys

CLIENT_ENV = "DRIVING_SIM_CLIENT"  # pid of the command whose fork server is starting
SERVER_ENV = "DRIVING_SIM_SERVER"  # pid of the fork server, for the workers it forks


def die_with_parent(parent: int | None = None) -> None:
    """Be killed when the parent dies. `parent`: the pid the parent must have (default: whoever
    it is now); a process whose parent is already someone else exits at once."""
    if sys.platform != "linux":
        return
    if parent is None:
        parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def expected_parent(env: str) -> int | None:
    """The pid named in environment variable `env`, taken out of the environment (so a process
    this one starts does not expect this one's parent); None if unset or not a pid."""
    value = os.environ.pop(env, "")
    return int(value) if value.isdigit() else None
