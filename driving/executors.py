"""Where simulation runs: `process` (a pool of processes on this machine) or `ray` (a Ray cluster,
any number of hosts; optional extra `pip install 'driving[ray]'`).

Collection sends Ray a task per range of seeds; a task returns its episode files' bytes and this
process writes them, so no filesystem needs to be shared. A task whose worker dies is run again
(the seeds fix every episode, so its result is the same). Evaluation keeps the policy here, on
this machine's GPU, batched over all environments, and puts each environment in a Ray actor
(`RayEnvPool`): the same engine as the process pool, so the same results. An actor that dies is
restarted and replays its episode's actions up to the step it had reached, so the run goes on as if
nothing happened.
"""
from __future__ import annotations

import os
import socket

import numpy as np

from driving.errors import UserError

EXECUTORS = ("process", "ray")
TASK_RETRIES = 3  # runs of a task whose worker process died, before the run fails
ACTOR_RESTARTS = 3  # restarts of a dead environment actor, each


def check_executor(name: str) -> None:
    if name not in EXECUTORS:
        raise ValueError(f"executor={name!r} is unknown: use executor=process (this machine) or executor=ray")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("executor=ray needs Ray, which is not installed: pip install 'driving[ray]' "
                        "(or pip install ray), or use executor=process") from None
    return ray


# HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113 3.4): a gRPC server (Ray's
# GCS and its client server) answers with a SETTINGS frame of its own, frame type 4
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _speaks_grpc(sock: socket.socket) -> bool:
    """Whether the server on `sock` answers HTTP/2's preface with a SETTINGS frame within its timeout."""
    try:
        sock.sendall(_H2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except OSError:  # a timeout, or a reset
        return False
    return len(head) == 9 and head[3] == 4


def _check_answers(address: str) -> None:
    """A `host:port` (or ray://host:port) address must accept a connection within seconds, and speak
    gRPC: Ray's own client waits minutes on an address that does not answer, or where another kind of
    server answers."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local": Ray resolves these itself
    fix = "or fix ray_address= / RAY_ADDRESS, or use executor=process"
    try:
        sock = socket.create_connection((host, int(port)), timeout=5)
    except OSError as e:
        raise UserError(f"the Ray cluster at {address} does not answer ({e.strerror or e}): start it "
                        f"(`ray start --head` there), {fix}") from None
    with sock:
        # with TLS (RAY_USE_TLS) the handshake comes first: Ray's own client checks that cluster
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("0", "false", "") and not _speaks_grpc(sock):
            raise UserError(f"what answers at {address} is not a Ray cluster (it does not speak gRPC): give the "
                            "address `ray start --head` printed (HOST:6379, or ray://HOST:10001), "
                            f"{fix}")


def connect(address: str | None = None):
    """The `ray` module, connected: to `address`, else RAY_ADDRESS, else a new local Ray using
    this machine's cores. One UserError where Ray is missing or the address does not answer."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_answers(address)
    import signal
    import threading

    # ray.init sets a SIGTERM handler of its own (sys.exit(15): no message, no pools stopped); the
    # command's (driving.interrupts) stays
    term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "a local Ray"
        raise UserError(f"cannot start or reach {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                        " -- fix ray_address= / RAY_ADDRESS, or use executor=process") from None
    finally:
        if term is not None:
            signal.signal(signal.SIGTERM, term)
    return ray


def seed_ranges(jobs: list, tasks: int) -> list[list]:
    """`jobs` cut into at most `tasks` consecutive ranges of nearly equal length."""
    tasks = max(1, min(tasks, len(jobs)))
    bounds = np.linspace(0, len(jobs), tasks + 1).round().astype(int)
    return [jobs[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def ray_map_unordered(func, chunks: list, args: tuple = (), address: str | None = None):
    """Run `func(chunk, *args)` as one Ray task per chunk; yield each task's result as it finishes.
    A task whose worker process dies is run again (up to TASK_RETRIES times); an exception raised
    by `func` itself (a bad config, say) is not retried and comes back as itself."""
    ray = connect(address)
    remote = ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)(func)
    shared = [ray.put(a) for a in args]
    pending = [remote.remote(c, *shared) for c in chunks]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None
            except ray.exceptions.WorkerCrashedError:
                raise UserError(f"a Ray worker died {TASK_RETRIES + 1} times running the same seeds: "
                                "see the Ray logs of the cluster (out of memory?)") from None
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def cluster_cpus(address: str | None = None) -> int:
    return max(1, int(connect(address).cluster_resources().get("CPU", 1)))


class _EnvActor:
    """One environment in a Ray actor: the protocol of driving.envpool's worker processes."""

    def __init__(self, env_kwargs: dict):
        from driving.envpool import _Inline, worker_setup

        worker_setup()
        self.inline = _Inline(env_kwargs)

    def call(self, msg):
        self.inline.send(msg)
        return self.inline.recv()

    def replay(self, seed: int, actions: list):
        """Reset to `seed` and execute `actions`: the state a dead actor had reached."""
        self.inline.send(("reset", seed))
        for a in actions:
            self.inline.send(("step", a))
        return True


class RayEnvPool:
    """driving.envpool.EnvPool's interface over `n` Ray actors. Each env's seed and the actions it
    executed since its reset are kept here, so that a dead actor is restarted and brought back to
    the same state (the simulation is deterministic given them) before its step is asked again."""

    def __init__(self, n: int, env_kwargs: dict, address: str | None = None):
        self.ray = connect(address)
        self.env_kwargs = env_kwargs
        self._remote = self.ray.remote(num_cpus=1, max_restarts=0)(_EnvActor)
        self.envs = [self._remote.remote(env_kwargs) for _ in range(max(1, n))]
        self.history: list[tuple[int, list] | None] = [None] * len(self.envs)
        self.pending: dict[int, tuple] = {}
        self.restarts = 0

    def __len__(self):
        return len(self.envs)

    def _ask(self, i: int, msg):
        return self.envs[i].call.remote(msg)

    def _get(self, i: int, ref, msg):
        ray = self.ray
        for attempt in range(ACTOR_RESTARTS + 1):
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                raise RuntimeError(f"environment worker failed: {e.cause}") from None
            except ray.exceptions.RayActorError:
                if attempt == ACTOR_RESTARTS:
                    raise UserError(f"a Ray environment actor died {ACTOR_RESTARTS + 1} times: see the Ray "
                                    "logs of the cluster (out of memory?)") from None
                self.restarts += 1
                self.envs[i] = self._remote.remote(self.env_kwargs)
                if self.history[i] is not None and msg[0] == "step":
                    seed, actions = self.history[i]
                    ray.get(self.envs[i].replay.remote(seed, actions))
                ref = self._ask(i, msg)

    def reset(self, i: int, seed: int):
        self.send_reset(i, seed)
        return self.recv_ready([i])[i]

    def send_reset(self, i: int, seed: int) -> None:
        msg = ("reset", int(seed))
        self.pending[i] = (self._ask(i, msg), msg)

    def send_steps(self, actions: dict[int, np.ndarray]) -> None:
        for i, a in actions.items():
            msg = ("step", np.asarray(a, dtype=np.float64))
            self.pending[i] = (self._ask(i, msg), msg)

    def recv_ready(self, ids: list[int]) -> dict[int, tuple]:
        """As EnvPool.recv_ready: the answers there are among `ids`, at least one."""
        refs = {self.pending[i][0]: i for i in ids}
        done, rest = self.ray.wait(list(refs), num_returns=1)
        if rest:
            done += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out = {}
        for i in sorted(refs[r] for r in done):
            ref, msg = self.pending.pop(i)
            out[i] = self._get(i, ref, msg)
            if msg[0] == "reset":
                self.history[i] = (msg[1], [])
            else:
                self.history[i][1].append(msg[1])
        return out

    def close(self):
        for a in self.envs:
            try:
                self.ray.kill(a)
            except Exception:  # already dead
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
