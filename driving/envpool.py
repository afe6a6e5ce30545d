"""Environments in worker processes, stepped in lock-step so a policy can act on all at once.

Kept free of torch so that spawned workers start fast. Each worker owns one DrivingEnv; the pool
hands it episode seeds as they come, so which worker runs which seed never changes a result.
"""
from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from dataclasses import replace

import numpy as np

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
              expert: dict | None = None) -> None:
    """Build and reset the env once in this process, so that a bad `env.*`, `expert.*` or `camera.*`
    value is one UserError here rather than a traceback inside a worker."""
    from driving.errors import UserError

    try:
        probe = build_env(scenario, camera, max_steps, env=env, expert=expert)
        try:
            probe.reset(seed=0)
        finally:
            probe.close()
    except (ValueError, TypeError) as e:
        raise UserError(f"bad config for scenario {scenario}: {e}") from None


def worker_setup() -> None:
    """First thing in every simulation worker process: die with the parent, and draw with one OpenCV
    thread. OpenCV starts a pool of one thread per core in every process; with a worker per core
    that is cores² threads contending for the cores (16 cores, 16 workers: 2,207 frames/s with
    OpenCV's default, 2,296 with one thread each; docs/FIGURES.md)."""
    import cv2

    die_with_parent()
    cv2.setNumThreads(1)


def die_with_parent() -> None:
    """In a worker process: be killed when the parent dies (Linux), so a killed command leaves no
    workers simulating on, and writing episodes, for seconds after it."""
    import ctypes
    import signal
    import sys

    if sys.platform != "linux":
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _slim(info: dict) -> dict:
    return {k: info[k] for k in INFO_KEYS if k in info}


class _Inline:
    """The same protocol as a worker process, in this process (workers=1: no start-up cost)."""

    def __init__(self, env_kwargs: dict):
        self.env = build_env(**env_kwargs)
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


def _worker(conn, env_kwargs: dict) -> None:
    worker_setup()
    inline = _Inline(env_kwargs)
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            try:
                inline.send((cmd, arg))
                conn.send(("ok", inline.recv()))
            except Exception as e:  # report, don't hang the parent
                conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        inline.close()
        conn.close()


class _Remote:
    def __init__(self, ctx, env_kwargs: dict):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, env_kwargs), daemon=True)
        self.proc.start()
        child.close()

    def send(self, msg):
        self.conn.send(msg)

    def recv(self):
        status, payload = self.conn.recv()
        if status == "error":
            raise RuntimeError(f"environment worker failed: {payload}")
        return payload

    def close(self):
        try:
            self.conn.send(("close", None))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def single_threaded_children():
    """Environment for worker processes started inside: one BLAS/OpenMP thread each. Set before the
    start (a spawned child reads it when importing numpy), otherwise idle BLAS threads of every
    worker compete with the simulation for the cores."""
    old = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class EnvPool:
    """`n` environments; `reset(i, seed)` and `step(actions by env)` return (obs, term, trunc, info)."""

    def __init__(self, n: int, env_kwargs: dict):
        if n <= 1:
            self.envs = [_Inline(env_kwargs)]
        else:
            ctx = mp.get_context("spawn")
            with single_threaded_children():
                self.envs = [_Remote(ctx, env_kwargs) for _ in range(n)]

    def __len__(self):
        return len(self.envs)

    def reset(self, i: int, seed: int):
        self.envs[i].send(("reset", int(seed)))
        return self.envs[i].recv()

    def step(self, actions: dict[int, np.ndarray]) -> dict[int, tuple]:
        self.send_steps(actions)  # all envs step concurrently, then we collect
        return self.recv_steps(list(actions))

    def send_steps(self, actions: dict[int, np.ndarray]) -> None:
        """Start stepping env i with actions[i] for every i; `recv_steps` collects the results."""
        for i, a in actions.items():
            self.envs[i].send(("step", np.asarray(a, dtype=np.float64)))

    def recv_steps(self, ids: list[int]) -> dict[int, tuple]:
        return {i: self.envs[i].recv() for i in ids}

    def close(self):
        for e in self.envs:
            e.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
