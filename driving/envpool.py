"""Environments in worker processes, each stepping on its own: a command is sent to an env
(`send_reset`, `send_steps`) and its answer collected whenever it is there (`recv_ready`), so a slow
step or a reset in one env never holds up the others.

Kept free of torch so that spawned workers start fast. Each worker process owns one or more
DrivingEnvs (`per_worker`); the pool hands every env episode seeds as they come, so which env runs
which seed never changes a result. With two envs a worker steps one while the other's answer is on
its way to the parent and back (the pipe, the policy's forward pass): with one, it idles for every
round trip (docs/FIGURES.md).
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import selectors
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

import numpy as np

from driving.errors import UserError
from driving.parent_death import CLIENT_ENV, SERVER_ENV, die_with_parent, expected_parent
from driving.rollout import STATE_FACTS
from sim import CameraConfig, DrivingEnv, get_scenario

INFO_KEYS = (*STATE_FACTS, "expert_action")  # what a worker sends back of each step's info


def build_env(scenario: str, camera, max_steps: int | None = None, scene_camera=None,
              env: dict | None = None, expert: dict | None = None) -> DrivingEnv:
    """The one way an env is built from a scenario name and overrides (collection, evaluation,
    videos, training-time checks). `camera`: CameraConfig, or a dict of overrides on the scenario's
    own camera (None: that camera); `env`: highway-env config
    overrides (e.g. {"fast_road": False}); `expert`: ExpertConfig overrides (e.g. perception)."""
    sc = get_scenario(scenario)
    if max_steps is not None:
        sc = replace(sc, max_steps=max_steps)
    camera = camera if isinstance(camera, CameraConfig) else sc.camera_config(camera)
    return DrivingEnv(sc, camera=camera, expert=dict(expert or {}), scene_camera=scene_camera,
                      env_overrides=dict(env or {}))


def probe_env(scenario: str, camera, max_steps: int | None = None, env: dict | None = None,
              expert: dict | None = None, expert_key: str = "expert.") -> None:
    """Build, reset and step the env once in this process, so that a bad `env.*`, `expert.*` or
    `camera.*` value is one UserError here rather than a traceback inside a worker. Any error counts:
    a value of the wrong type, a vehicle class that does not import, an action space that does not
    take two numbers. `expert_key`: how the command's own keys name the `expert` values (eval's
    `expert_perception`)."""
    import numpy as np

    from driving.errors import UserError

    try:
        probe = build_env(scenario, camera, max_steps, env=env, expert=expert)
        try:
            probe.reset(seed=0)
            probe.step(np.zeros(2, dtype=np.float32))
        finally:
            probe.close()
    except Exception as e:  # noqa: BLE001 - highway-env's, on a value it cannot use
        if isinstance(e, ValueError) and _raised_by_us(e.__traceback__):  # our own checks: the message says it all
            raise UserError(f"bad config for scenario {scenario}: {e}") from None
        if not (env or expert or isinstance(e, ValueError)):  # nothing of the user's to blame: a bug
            raise
        given = ", ".join([f"env.{k}={v!r}" for k, v in (env or {}).items()]
                          + [f"{expert_key}{k}={v!r}" for k, v in (expert or {}).items()])
        check = f"the values given: {given}, and any camera.* values" if given else "the camera.* values"
        raise UserError(f"bad config for scenario {scenario}: {type(e).__name__}: {e}{where_raised(e.__traceback__)} "
                        f"(check {check})") from None


def worker_setup() -> None:
    """First thing in every simulation worker process: die with the parent, and draw with one OpenCV
    thread. OpenCV starts a pool of one thread per core in every process; with a worker per core
    that is cores² threads contending for the cores (16 cores, 16 workers: 2,207 frames/s with
    OpenCV's default, 2,296 with one thread each; docs/FIGURES.md)."""
    import cv2

    die_with_parent(expected_parent(SERVER_ENV))  # None where no fork server started this one
    cv2.setNumThreads(1)
    # Ctrl-C reaches every process of the terminal's group: the command stops its workers itself (and
    # they die with it), so a worker ignores it rather than print a traceback of its own
    import threading

    if threading.current_thread() is threading.main_thread():  # (a Ray task may run elsewhere)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _slim(info: dict) -> dict:
    return {k: info[k] for k in INFO_KEYS if k in info}


class _Inline:
    """The same protocol as a worker process, in this process (workers=1: no start-up cost)."""

    def __init__(self, env_kwargs: dict):
        kwargs = dict(env_kwargs)
        # a stand-in env (benchmarks of the engine itself: scripts/bench_engine.py); picklable
        factory = kwargs.pop("factory", None) or build_env
        self.env = factory(**kwargs)
        self._reply = None

    def send(self, msg):
        cmd, arg = msg
        if cmd == "reset":
            obs, info = self.env.reset(seed=arg)
            self._reply = (obs, False, False, _slim(info))
        elif cmd == "step":
            obs, _, term, trunc, info = self.env.step(arg)
            self._reply = (obs, term, trunc, _slim(info))

    def recv(self):
        return self._reply

    def close(self):
        self.env.close()


def _worker(conn, env_kwargs: dict, slots: int) -> None:
    worker_setup()
    envs = [_Inline(env_kwargs) for _ in range(slots)]
    try:
        while True:
            try:
                cmd, slot, arg = conn.recv()  # commands of all its envs, in the order they were sent
            except (EOFError, OSError):  # the command stopped (Ctrl-C) without closing the pool: go quietly
                break
            if cmd == "close":
                break
            if cmd == "step":  # sent as floats: a third of the pickling cost of an array, both ways
                arg = np.asarray(arg, dtype=np.float64)
            try:
                envs[slot].send((cmd, arg))
                answer = (slot, "ok", envs[slot].recv())
            except Exception as e:  # report, don't hang the parent
                answer = (slot, "error", f"{type(e).__name__}: {e}{where_raised(e.__traceback__)}")
            try:
                conn.send(answer)
            except OSError:  # the parent is gone (BrokenPipeError): nobody to answer
                break
    finally:
        for env in envs:
            env.close()
        conn.close()


def _raised_by_us(tb) -> bool:
    """Whether a traceback's innermost frame is this project's code (sim/, driving/), not a library's:
    our checks' messages name the key and the fix; numpy's inside highway-env name neither."""
    if tb is None:
        return False
    import traceback

    last = os.path.realpath(traceback.extract_tb(tb)[-1].filename)
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    return any(last.startswith(os.path.join(root, pkg) + os.sep) for pkg in ("sim", "driving"))


def where_raised(tb) -> str:
    """' (at FILE:LINE)' of the innermost frame of a traceback: enough to find a bug, one line long."""
    if tb is None:
        return ""
    import traceback

    last = traceback.extract_tb(tb)[-1]
    return f" (at {os.path.basename(last.filename)}:{last.lineno})"


def worker_failed(what: str, error: str) -> UserError:
    """The one-line error for an exception inside a worker process (the parent's traceback would say
    nothing about it). Bad config values are caught before any worker starts (probe_env), so what
    arrives here is a value that fails only later in an episode, or a bug."""
    return UserError(f"a {what} step failed: {error}: check the env.*, expert.* and camera.* values; "
                     "if they are right, this is a bug: report it with this line")


def worker_died(what: str, exitcode: int | None = None) -> UserError:
    """The one-line error for a simulation worker process that died under a command (killed from
    outside: a worker's own exceptions come back through worker_failed)."""
    how = "it was killed from outside"
    if exitcode is not None and exitcode < 0:
        try:
            how = f"it was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"it was killed by signal {-exitcode}"
    elif exitcode:
        how = f"it exited with code {exitcode}"
    return UserError(f"a {what} worker process died ({how}; out of memory?): re-run the same command, it "
                     "goes on from what was written (finished episodes of a collection or a DAgger round; an "
                     "evaluation starts again); fewer workers= if memory is short")


class _Remote:
    """A worker process with `slots` envs; each answer comes back tagged with its env's slot and waits
    in `answers` until the parent asks for it."""

    def __init__(self, ctx, env_kwargs: dict, slots: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, env_kwargs, slots), daemon=True)
        self.proc.start()
        child.close()
        self.answers: dict[int, tuple] = {}

    def _died(self) -> UserError:
        self.proc.join(timeout=5)
        return worker_died("simulation", self.proc.exitcode)

    def send(self, slot: int, msg) -> None:
        try:
            self.conn.send((msg[0], slot, msg[1]))
        except (BrokenPipeError, ConnectionError):
            raise self._died() from None

    def take(self) -> None:
        """Take in the next answer (waits for it)."""
        try:
            slot, status, payload = self.conn.recv()
        except (EOFError, ConnectionError):
            raise self._died() from None
        self.answers[slot] = (status, payload)

    def recv(self, slot: int):
        while slot not in self.answers:
            self.take()
        status, payload = self.answers.pop(slot)
        if status == "error":
            raise worker_failed("simulation", payload)
        return payload

    def close(self):
        try:
            self.conn.send(("close", None, None))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


class _Slot:
    """One env of a worker process, with the protocol of _Inline."""

    def __init__(self, remote: _Remote, slot: int):
        self.remote, self.slot = remote, slot

    def send(self, msg) -> None:
        self.remote.send(self.slot, msg)

    def recv(self):
        return self.remote.recv(self.slot)

    @property
    def answered(self) -> bool:
        return self.slot in self.remote.answers


# What a simulation worker imports: a fork server imports it once, and every worker forked from it
# starts in milliseconds instead of importing highway-env anew (about a second per worker).
_PRELOAD = ["driving.forkserver_guard", "sim", "driving.rollout", "driving.envpool", "driving.data.collect"]


def worker_context():
    """The multiprocessing context of simulation workers: a fork server with the simulator preloaded
    (Linux, macOS), else spawn. Neither inherits this process's threads, torch or CUDA state.
    Start pools inside `single_threaded_children(ctx)`: it starts the server, which passes its
    environment on to every worker."""
    try:
        ctx = mp.get_context("forkserver")
    except ValueError:  # no fork server on this platform
        return mp.get_context("spawn")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def single_threaded_children(ctx=None):
    """Environment for worker processes started inside: one BLAS/OpenMP thread each. Set before the
    start (a spawned child reads it when importing numpy), otherwise idle BLAS threads of every
    worker compete with the simulation for the cores. Also this process's pid, for a fork server
    that starts inside to tie its life to (driving.parent_death). A fork server context's server
    is started here, with that environment."""
    old = {k: os.environ.get(k) for k in (*_THREAD_VARS, CLIENT_ENV)}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    os.environ[CLIENT_ENV] = str(os.getpid())
    try:
        if ctx is not None and ctx.get_start_method() == "forkserver":
            _start_fork_server()
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start_fork_server() -> None:
    """Start the fork server with Ctrl-C blocked, as multiprocessing starts its resource tracker: a
    Ctrl-C while the new interpreter starts (before driving.forkserver_guard ignores it and unblocks
    it) would print a KeyboardInterrupt traceback from its imports. Blocked, not ignored, here: a
    Ctrl-C in this window still reaches this process once the server is started."""
    from multiprocessing import forkserver, resource_tracker

    # first, alone: starting the tracker unblocks SIGINT afterwards, whatever was blocked before
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def run_in_workers(func, jobs: list, workers: int, what: str, initializer=None, initargs=(),
                   ordered: bool = False):
    """Yield func(job) for every job, computed in `workers` simulation worker processes, as they
    finish (or in order). A ProcessPoolExecutor rather than multiprocessing.Pool: a Pool whose worker
    is killed waits forever for its job, an executor says so, and that is one UserError here
    (`what` names the work). On any error, jobs not started are dropped, not run first."""
    ctx = worker_context()
    with single_threaded_children(ctx):  # workers start at the first submit
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=initializer, initargs=initargs)
        futures = [pool.submit(func, job) for job in jobs]
    interrupted = False
    try:
        for future in futures if ordered else as_completed(futures):
            yield future.result()
    except BrokenProcessPool:
        raise worker_died(what) from None
    except (UserError, OSError):  # the CLI names a disk's errors itself, from any process
        raise
    except KeyboardInterrupt:
        # the workers ignore Ctrl-C (worker_setup): stop them here rather than wait for their jobs
        # (finished ones are written; the job in flight is redone by the next run)
        interrupted = True
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.kill()
        raise
    except Exception as e:  # noqa: BLE001 - a worker's own exception, pickled back: one line
        raise worker_failed(what, f"{type(e).__name__}: {e}{_remote_where(e)}") from None
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)


def _remote_where(e: BaseException) -> str:
    """Where in the worker an exception from a ProcessPoolExecutor was raised (its text carries the
    worker's traceback in __cause__)."""
    import re

    text = str(e.__cause__ or "")
    found = re.findall(r'File "([^"]+)", line (\d+)', text)
    return f" (at {os.path.basename(found[-1][0])}:{found[-1][1]})" if found else ""


class EnvPool:
    """`n` environments. `send_reset(i, seed)` / `send_steps({i: action})` start work in env i;
    `recv_ready(ids)` waits until at least one of those envs has answered and returns every answer
    there is, {i: (obs, terminated, truncated, info)}."""

    def __init__(self, n: int, env_kwargs: dict, per_worker: int = 1, processes: int | None = None):
        """`n` envs, `per_worker` to a process (or spread over `processes` where given: an open_pool with
        fewer episodes than workers x per_worker keeps one env a process on as many cores as it can)."""
        self.remotes: list[_Remote] = []
        if n <= 1:
            self.envs = [_Inline(env_kwargs)]
        else:
            ctx = worker_context()
            procs = min(n, processes) if processes else -(-n // max(1, per_worker))
            with single_threaded_children(ctx):
                self.remotes = [_Remote(ctx, env_kwargs, len(range(p, n, procs))) for p in range(procs)]
            # env i in process i % procs: the first envs the engine starts are in different processes
            self.envs = [_Slot(self.remotes[i % procs], i // procs) for i in range(n)]
        # registered once: building a selector per wait cost a sixth of the parent's time at 16 envs
        self._answers = selectors.DefaultSelector()
        for p, remote in enumerate(self.remotes):
            self._answers.register(remote.conn, selectors.EVENT_READ, p)

    @property
    def workers(self) -> int:
        """Worker processes (0: the env runs in this process)."""
        return len(self.remotes)

    def __len__(self):
        return len(self.envs)

    def reset(self, i: int, seed: int):
        self.send_reset(i, seed)
        return self.envs[i].recv()

    def send_reset(self, i: int, seed: int) -> None:
        self._send(i, ("reset", int(seed)))

    def send_steps(self, actions: dict[int, np.ndarray]) -> None:
        """Start stepping env i with actions[i] for every i."""
        for i, a in actions.items():
            a = np.asarray(a, dtype=np.float64)
            self._send(i, ("step", a if isinstance(self.envs[i], _Inline) else tuple(a.tolist())))

    def _send(self, i: int, msg) -> None:
        env = self.envs[i]
        if isinstance(env, _Slot):
            return env.send(msg)  # a worker's exception comes back from recv, as one UserError
        try:
            env.send(msg)
        except Exception as e:  # noqa: BLE001 - the same one line as from a worker
            if isinstance(e, (UserError, OSError)):
                raise
            raise worker_failed("simulation", f"{type(e).__name__}: {e}{where_raised(e.__traceback__)}") from None

    def recv_ready(self, ids: list[int]) -> dict[int, tuple]:
        """The answers of the envs among `ids` (each with a command in flight) that have answered,
        at least one; in-process envs answer at once."""
        envs = self.envs
        ready = [i for i in ids if not isinstance(envs[i], _Slot) or envs[i].answered]
        while not ready:
            for key, _ in self._answers.select():  # one answer each: more are there at the next select
                self.remotes[key.data].take()
            ready = sorted(i for i in ids if envs[i].answered)
        return {i: envs[i].recv() for i in ready}

    def close(self):
        self._answers.close()
        for e in self.remotes or self.envs:
            e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SleepingEnv:
    """A stand-in for DrivingEnv that measures and tests the engine alone (scripts/bench_engine.py):
    a step (or reset) sleeps a duration drawn from `step_s` (`reset_s`) by a generator seeded with
    the episode's seed, so every engine sees the same episode, and takes no core while it sleeps;
    observations and infos have the real ones' size. Episodes are `length` steps."""

    def __init__(self, obs_shape, step_s, reset_s, length: int):
        self.frames = np.zeros(obs_shape, np.uint8)
        self.step_s, self.reset_s, self.length = np.asarray(step_s), np.asarray(reset_s), length
        self.info = {k: 0.0 for k in STATE_FACTS}
        self.info.update(crashed=False, on_road=True, on_route=True, expert_saturated=False, expert_plan=0, lane="a/b/0", collision="")

    def _out(self):
        info = dict(self.info, progress=float(self.t), expert_action=np.zeros(2, np.float32))
        return {"camera": self.frames, "speed": np.float32(20.0)}, info

    def reset(self, seed: int):
        self.rng, self.t = np.random.default_rng(seed), 0
        time.sleep(self.rng.choice(self.reset_s))
        return self._out()

    def step(self, action):
        time.sleep(self.rng.choice(self.step_s))
        self.t += 1
        obs, info = self._out()
        return obs, 0.0, False, self.t >= self.length, info

    def close(self):
        pass
