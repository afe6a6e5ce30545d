"""Every benchmark script runs end to end at tiny sizes and prints its figures.

Their real runs happen on a lent GPU machine with 30 minutes of device time: a script that crashes
there (as `bench_train.py --compile` once did) costs a run. Here each one runs the way a user would,
as a script, and its figure lines must hold positive numbers. Nothing is timed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from driving import precision
from tests.helpers import synthetic_dataset

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"([0-9][0-9,]*\.?[0-9]*)"


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory.mktemp("bench") / "ds")


def run_script(name: str, *args: str) -> str:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{name} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p.stdout


def figure(out: str, pattern: str) -> float:
    """The number after `pattern` on its line (which must exist), as a float."""
    m = re.search(pattern + r"[^\n0-9]*" + NUMBER, out)
    assert m, f"no line matching {pattern!r} in:\n{out}"
    return float(m.group(1).replace(",", ""))


@pytest.mark.parametrize("compiled", [False, True])
def test_bench_train(ds, compiled):
    if compiled and not shutil.which("cc"):
        pytest.skip("torch.compile on a CPU needs a C compiler (cc)")
    out = run_script("bench_train.py", "--dataset", str(ds), "--batch-size", "8", "--steps", "2", "--workers", "1",
                     *(["--compile"] if compiled else []))
    for line in (r"\(a\) forward\+backward alone", r"\(b\) full step, our data path", r"\(c\) full step, DataLoader"):
        assert figure(out, line) > 0
    if precision.uses_bf16(torch.device("cpu"), True):  # (b) ran in bf16: (f) is the same step in fp32
        assert "bf16 autocast" in out and figure(out, r"\(f\) \(b\) in fp32") > 0
    assert ("compiled" in out) == compiled


def test_bench_pixels():
    out = run_script("bench_pixels.py", "--sizes", "32x16,16x16", "--batch-size", "4", "--steps", "1", "--repeats", "1")
    assert figure(out, r"32x16 +1\.000x pixels") > 0 and figure(out, r"16x16 +0\.500x pixels") > 0


def test_bench_threads():
    out = run_script("bench_threads.py", "--seconds", "0.2", "--repeats", "1")
    for row in ("idle", "beside 1 busy process"):
        line = next(x for x in out.splitlines() if x.startswith(row))
        rates = [float(v) for v in line[len(row):].split()]
        assert len(rates) == 4 and all(r > 0 for r in rates)  # spin, passive, 1 thread, passive / spin
        assert abs(rates[3] - rates[1] / rates[0]) < 0.02 * rates[3] + 0.01


def test_bench_sim():
    out = run_script("bench_sim.py", "--scenarios", "highway", "--steps", "5", "--rounds", "1")
    assert figure(out, r"ratio fast/stock \(sim\+camera\): highway") > 0


def test_bench_collect():
    out = run_script("bench_collect.py", "--episodes", "3", "--max-steps", "5", "--workers", "1,2", "--repeats", "1",
                     "--no-baseline", "--breakdown")
    assert figure(out, r"driving collect, 2 worker\(s\)") > 0
    assert figure(out, r"scaling efficiency .*: 2 workers") > 0
    # the breakdown: one row per worker count, its factors multiplying to its efficiency
    rows = {}
    for line in out.splitlines():
        m = re.match(r"\s+([12]) +([0-9.]+) +([0-9.]+) = +([0-9.]+) x +([0-9.]+) \| +([0-9.]+)% +([0-9.]+)% +"
                     r"(-?[0-9.]+)% +([0-9.]+)% \| +([0-9.]+) +([0-9.]+) +([0-9.]+) .*\| +([0-9.]+) +([0-9.]+) +"
                     r"([0-9.]+) +([0-9.]+) +(-?[0-9.]+)$", line)
        if m:
            rows[int(m.group(1))] = [float(x) for x in m.groups()[1:]]
    assert sorted(rows) == [1, 2], out
    for n, (fps, eff, speed, util, in_eps, start, gaps, tail, busy, cpu, wall_cpu, *parts) in rows.items():
        assert fps > 0 and busy > 0 and cpu > 0
        assert eff == pytest.approx(speed * util, abs=0.02)
        assert 0 < in_eps <= 100 and gaps >= -0.1  # start-up and tail are idle time, never counted twice
        assert all(p > 0 for p in parts[:-1]) and parts[-1] >= 0  # the timed parts fit in the busy time
    assert rows[1][1] == rows[1][2] == rows[1][3] == 1.0


def test_bench_eval():
    out = run_script("bench_eval.py", "--episodes", "3", "--max-steps", "5", "--workers", "1,2", "--repeats", "1",
                     "--breakdown", "--envs-per-worker", "1,2")
    for who in ("pilotnet", "expert"):
        assert figure(out, who + r" +2 worker\(s\) x 2 env\(s\):") > 0
        assert figure(out, who + r" +2 worker\(s\) x 1 env\(s\):") > 0
    rows = {}
    for line in out.splitlines():
        m = re.match(r"(pilotnet|expert) +([12]) x ([12]) +([0-9.]+) \| +([0-9.]+)% +([0-9.]+)% \| +([0-9.]+)% +"
                     r"([0-9.]+)% +([0-9.]+)% +(-?[0-9.]+)% \| +([0-9.]+) +([0-9.]+) +([0-9.]+)$", line)
        if m:
            rows[m.group(1), int(m.group(2)), int(m.group(3))] = [float(x) for x in m.groups()[3:]]
    shapes = [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert sorted(rows) == [(who, *n) for who in ("expert", "pilotnet") for n in shapes], out
    for (name, n, k), (sps, in_flight, waits, p_wait, p_fwd, p_send, rest, fwd_ms, rows_per, rtt) in rows.items():
        assert sps > 0 and rtt > 0 and 0 < in_flight <= 100
        assert rest >= -0.5  # the parent's parts fit in the wall time
        assert 1 <= rows_per <= min(n * k, 3)
    for n in shapes:  # the expert's actions come with the step: no network to run
        assert rows[("pilotnet", *n)][7] > 0.1 and rows[("expert", *n)][7] < rows[("pilotnet", *n)][7] / 10


def test_bench_eval_compares_the_parents_torch_threads():
    """--torch-threads drives the same network once more with torch's default threads in the parent;
    --busy keeps another process spinning meanwhile."""
    out = run_script("bench_eval.py", "--episodes", "2", "--max-steps", "5", "--workers", "1,2", "--repeats", "1",
                     "--torch-threads", "--busy", "1")
    assert "1 other process(es) spinning" in out
    m = re.search(r"pilotnet-([0-9]+)thr +2 worker\(s\) x 2 env\(s\): +([0-9.]+) steps/s", out)
    if (os.cpu_count() or 1) > 1 and "OMP_NUM_THREADS" not in os.environ:  # else torch has one thread anyway
        assert m and int(m.group(1)) > 1 and float(m.group(2)) > 0, out
        assert figure(out, rf"against torch's default {m.group(1)}: +1 worker\(s\) x 2 env\(s\)") > 0


def test_bench_engine():
    out = run_script("bench_engine.py", "--workers", "2", "--episodes-per-env", "1", "--max-steps", "5",
                     "--startup-workers", "2")
    assert figure(out, r"engine efficiency: expert 2x1:") > 0 and figure(out, r"; expert 2x2:") > 0
    assert figure(out, r"fork server") > 0


def test_expert_quality():
    out = run_script("expert_quality.py", "--scenarios", "highway", "--episodes", "2", "--workers", "1")
    assert figure(out, r"\| highway \| camera \| 2 \|") > 0
