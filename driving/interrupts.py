"""Stopping a command from outside: Ctrl-C (SIGINT) and SIGTERM (`kill`, `timeout`, a batch
scheduler's pre-emption) take one path, an interrupt. Writes are atomic either way and a re-run
resumes; what this adds is a one-line message instead of a silent death, and process pools that stop
rather than start their next jobs (run_stoppable)."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""


def stop_on_signals(signals: tuple[int, ...] = (signal.SIGTERM,), again: str = "ignore") -> dict:
    """Raise an interrupt in this process's main thread on the first of `signals` (SIGTERM's default
    ends Python on the spot, without a message or its pools stopped). On the ones after, `again`:
    "ignore" (a pool's job process: a second would interrupt the tidy-up), or "exit" (a command: the
    user who presses Ctrl-C twice wants out now, also where the tidy-up waits on something; writes are
    atomic, locks die with the process and so do its workers, so a re-run resumes as after the first).
    A process forked from this one (a DataLoader worker) inherits the handler and dies as the default
    would have it. Returns the handlers it replaced, for restore_signals."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return {}
    pid, stopping = os.getpid(), []

    def handler(signum, frame):
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if stopping:  # a no-op rather than SIG_IGN: a signal caught before the switch raises OSError
            if again == "exit":
                for stream in (sys.stdout, sys.stderr):  # what is buffered (a `| tee log`'s tables) still goes out
                    try:
                        stream.flush()
                    except Exception:  # noqa: BLE001 - e.g. interrupted inside a write: reentrant flush
                        pass
                os.write(2, b"interrupted again: stopped at once (re-run the same command)\n")
                os._exit(143 if signum == signal.SIGTERM else 130)
            return
        stopping.append(signum)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    return {s: signal.signal(s, handler) for s in signals}


def restore_signals(previous: dict) -> None:
    """Put back what stop_on_signals replaced (main() called in-process, as the tests do, leaves the
    caller's handlers as they were)."""
    for s, h in previous.items():
        signal.signal(s, h)


def stop_pool(pool, grace_s: float = 60.0, running=(), idle_s: float = 5.0) -> None:
    """On an interrupt: cancel a ProcessPoolExecutor's jobs not started (leaving it would start them,
    and wait for all of them), and stop the running ones. SIGTERM reaches each process, which runs
    its jobs under stop_on_signals((SIGINT, SIGTERM)) and ignores both while idle: a job stops once,
    as on Ctrl-C, whether or not the signal that stopped this process reached it too; a process still
    running after `grace_s` is killed. Once the `running` futures are done, every process is idle: one
    the pool has not ended `idle_s` later is killed (seen once: an idle one held on to the whole grace)."""
    from concurrent.futures import wait

    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + grace_s
    try:
        if running:
            wait(running, timeout=grace_s)
            deadline = min(deadline, time.monotonic() + idle_s)
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:  # also on a second Ctrl-C while waiting: nothing is left to run on unbounded
        for p in procs:
            if p.is_alive():
                p.kill()


def run_stoppable(func, jobs: list[tuple], parallel: int) -> list:
    """func(*job) for every job, `parallel` at a time, each in a spawned process that dies with this
    one; the results in the order the jobs finish. A job that fails: those running finish, the rest
    do not start, and its exception is raised here. An interrupt (Ctrl-C, SIGTERM, also while the
    running ones finish after a failure): the running jobs stop as on Ctrl-C and none starts."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn"), initializer=_stoppable_process,
                               initargs=(os.getpid(),))
    # one job per free process: a job handed to the pool ahead would start after an interrupt (the pool
    # queues one more than it has processes, beyond reach of cancelling)
    todo, running, results = list(jobs), set(), []
    try:
        try:
            while todo or running:
                while todo and len(running) < parallel:
                    running.add(pool.submit(_stoppable_job, func, *todo.pop(0)))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                results += [job.result() for job in done]
        except KeyboardInterrupt:
            raise
        except BaseException:
            pool.shutdown(wait=True)
            raise
        pool.shutdown(wait=True)
    except KeyboardInterrupt:
        stop_pool(pool, running=running)
        raise
    return results


def _stoppable_process(parent: int) -> None:
    """First thing in a run_stoppable process: die with the command, and ignore Ctrl-C and SIGTERM
    while idle (a stop there prints the pool's traceback; the command ends idle processes itself)."""
    from driving.parent_death import die_with_parent

    die_with_parent(parent)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def _stoppable_job(func, *args):
    """A job of run_stoppable: Ctrl-C or SIGTERM (the command forwards its own, stop_pool) stops it
    once, as on Ctrl-C."""
    previous = stop_on_signals((signal.SIGINT, signal.SIGTERM))
    try:
        return func(*args)
    finally:
        restore_signals(previous)
