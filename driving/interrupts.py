"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM (`kill`, `timeout`, a batch
scheduler's pre-emption) take one path, an interrupt. Writes are atomic either way and a re-run
resumes; what this adds is a one-line message instead of a silent death, and process pools that stop
rather than start their next jobs."""
from __future__ import annotations

import os
import signal
import threading
import time


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""


def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM,)) -> dict:
    """Raise an interrupt in this process's main thread on the first of `signals` (SIGTERM's default
    ends Python on the spot, without a message or its pools stopped), and nothing on the ones after:
    a second would interrupt the tidy-up. A process forked from this one (a DataLoader worker)
    inherits the handler and dies as the default would have it. Returns the handlers it replaced, for
    restore_signals."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return {}
    pid, stopping = os.getpid(), []

    def handler(signum, frame):
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if stopping:  # a no-op rather than SIG_IGN: a signal caught before the switch raises OSError
            return
        stopping.append(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    return {s: signal.signal(s, handler) for s in signals}


def restore_signals(previous: dict) -> None:
    """Put back what stop_on_signals replaced (main() called in-process, as the tests do, leaves the
    caller's handlers as they were)."""
    for s, h in previous.items():
        signal.signal(s, h)


def stop_pool(pool, grace_s: float = 60.0) -> None:
    """On an interrupt: cancel a ProcessPoolExecutor's jobs not started (leaving it would start them,
    and wait for all of them), and stop the running ones. SIGTERM reaches each process, which set
    stop_on_signals((SIGINT, SIGTERM)) at start: it stops once, as on Ctrl-C, whether or not the signal
    that stopped this process reached it too; one still running after `grace_s` is killed."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
