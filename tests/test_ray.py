"""executor=ray for collection and evaluation, on a local Ray with 2 CPUs: the same results as the
process pool, also when a worker dies mid-run; Ray missing or not answering is one line."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from driving.cli import main
from driving.config import load_config
from driving.data.collect import CollectConfig, collect
from driving.evaluate import EvalConfig, evaluate

CAM = ["camera.height=32", "camera.width=16", "camera.stack=1"]


def test_executor_ray_without_ray_installed_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    assert main(["collect", f"out={tmp_path / 'd'}", "episodes=1", "max_steps=2", "executor=ray", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'driving[ray]'" in err


ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'driving[ray]' to test executor=ray")


_TERM_AFTER_RAY = """
from driving.executors import connect
from driving.interrupts import Terminated, stop_on_signals
from tests.helpers import sigterm_self

stop_on_signals()  # as `driving ...` does
connect()  # a local Ray
try:
    sigterm_self()
except Terminated:
    print("interrupted")
"""


def test_a_command_on_ray_keeps_its_sigterm_handler():
    """ray.init installs its own (sys.exit(15)): the command then died without its one line."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _TERM_AFTER_RAY], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_ADDRESS": ""})
    assert done.stdout.strip() == "interrupted", (done.returncode, done.stdout, done.stderr[-2000:])


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _processes(title: str) -> list[int]:
    """Pids of processes whose command line (Ray's process title) starts with `title`."""
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "cmdline").read_bytes().startswith(title.encode()):
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def _kill_first(title: str, after_s: float = 0.0, timeout_s: float = 60.0) -> dict:
    """In a thread: SIGKILL the first process titled `title` (after it has run `after_s`)."""
    killed: dict = {}

    def run():
        end = time.time() + timeout_s
        while time.time() < end and "pid" not in killed:
            pids = _processes(title)
            if pids:
                time.sleep(after_s)
                if pids[0] in _processes(title):
                    os.kill(pids[0], signal.SIGKILL)
                    killed["pid"] = pids[0]
            time.sleep(0.005)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    killed["thread"] = thread
    return killed


def collect_cfg(out, *extra) -> CollectConfig:
    return load_config(CollectConfig, None, [f"out={out}", "episodes=4", "max_steps=25", "workers=1", *CAM, *extra])


def test_ray_collection_equals_the_process_pool_even_when_a_worker_dies(local_ray, tmp_path):
    # episodes long enough that the task is still running when the killer, polling /proc on a loaded
    # machine, has seen it and waited (with 25 steps it was missed once while two other jobs ran)
    collect(collect_cfg(tmp_path / "pool", "max_steps=80"), progress=False)
    killed = _kill_first("ray::collect_range", after_s=0.1)
    collect(collect_cfg(tmp_path / "ray", "executor=ray", "max_steps=80"), progress=False)
    killed["thread"].join(timeout=1)
    assert "pid" in killed, "no Ray task was caught running: nothing was retried"
    for name in ("index.json", "meta.json"):
        assert json.loads((tmp_path / "ray" / name).read_text()) == json.loads((tmp_path / "pool" / name).read_text())
    for p in sorted((tmp_path / "pool" / "episodes").iterdir()):
        assert (tmp_path / "ray" / "episodes" / p.name).read_bytes() == p.read_bytes()


def eval_cfg(out, *extra) -> EvalConfig:
    return load_config(EvalConfig, None, [f"out={out}", "scenario=highway,racetrack", "episodes=3",
                                          "max_steps=8", "videos=0", "workers=2", *extra])


def test_ray_evaluation_equals_the_process_pool(local_ray, tmp_path):
    pool = evaluate("expert", eval_cfg(tmp_path / "pool"), progress=False)["result"]
    got = evaluate("expert", eval_cfg(tmp_path / "ray", "executor=ray"), progress=False)["result"]
    assert got["scenarios"] == pool["scenarios"] and got["aggregate"] == pool["aggregate"]
    assert got["config"]["executor"] == "ray"


def test_a_dead_environment_actor_is_restarted_and_replayed_to_the_same_result(local_ray):
    from driving.baselines import ExpertPolicy
    from driving.evaluate import open_pool, run_episodes

    cam = {"height": 32, "width": 16, "stack": 1}
    seeds = [11, 12, 13, 14]
    with open_pool("highway", cam, 2, len(seeds), 30) as pool:
        want = run_episodes(ExpertPolicy(), "highway", seeds, cam, 2, 30, progress=False, pool=pool)
    with open_pool("highway", cam, 2, len(seeds), 30, executor="ray") as pool:
        killed = _kill_first("ray::_EnvActor", after_s=0.5)
        got = run_episodes(ExpertPolicy(), "highway", seeds, cam, 2, 30, progress=False, pool=pool)
        killed["thread"].join(timeout=1)
        assert "pid" in killed and pool.restarts >= 1
    for a, b in zip(want, got):
        assert a["seed"] == b["seed"] and (a["actions"] == b["actions"]).all()
        assert a["steps"].keys() == b["steps"].keys()
        assert all(np.array_equal(np.asarray(a["steps"][k]), np.asarray(b["steps"][k])) for k in a["steps"])


def test_a_ray_address_that_does_not_answer_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if ray.is_initialized():
        ray.shutdown()
    t = time.time()
    assert main(["eval", "expert", f"out={tmp_path / 'e'}", "episodes=1", "max_steps=2", "executor=ray",
                 f"ray_address=127.0.0.1:{port}", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port} does not answer" in err and time.time() - t < 30


def test_a_ray_address_where_another_server_answers_is_one_line(tmp_path, capsys, monkeypatch):
    """An HTTP server, or one that accepts and says nothing: was a two-minute wait inside Ray."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if ray.is_initialized():
        ray.shutdown()
    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args):  # the server's own log would be on stderr
            pass

    http = HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        for port in (http.server_address[1], silent.getsockname()[1]):
            t = time.time()
            assert main(["eval", "expert", f"out={tmp_path / 'e'}", "episodes=1", "max_steps=2", "executor=ray",
                         f"ray_address=127.0.0.1:{port}", "-q"]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"127.0.0.1:{port} is not a Ray cluster" in err, err
            assert time.time() - t < 30 and not (tmp_path / "e").exists()
    finally:
        http.shutdown()
        silent.close()


def test_a_ray_clusters_own_address_passes_the_check():
    """The check above against Ray's real GCS: it answers HTTP/2's preface."""
    from driving.executors import _check_answers

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        _check_answers(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
