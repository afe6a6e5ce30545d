"""How torch's CPU threads wait, with the cores to themselves and beside one busy process:
libgomp's default (each thread spins ~300,000 times before it sleeps) against `OMP_WAIT_POLICY=PASSIVE`
(it sleeps at once), and one thread. What `threads=` and the environment to advise for a shared CPU.

The step is the demo's: PilotNet forward, backward and AdamW on a (64, 4, 128, 64) uint8 batch, fp32 unless
`--bf16`. Each arm runs in its own process (the policy is read once, when torch loads OpenMP); arms are
interleaved, `--repeats` times, and the median printed with the ratios within each row.

    python scripts/bench_threads.py [--seconds 15] [--repeats 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ARMS = {"spin (libgomp default)": None, "passive": "PASSIVE"}
BUSY = "while True:\n    pass\n"  # a pure-Python loop: one core's worth of somebody else's work


def child(threads: int, seconds: float, bf16: bool) -> None:
    import torch  # OpenMP reads OMP_WAIT_POLICY now, once

    from driving.models import InputSpec, ModelConfig, build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = build_model("pilotnet", ModelConfig(stack=4), InputSpec(height=128, width=64, channels=1))
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x = torch.randint(0, 255, (64, 4, 128, 64), dtype=torch.uint8)
    speed, target = torch.rand(64) * 30, torch.rand(64, 2) * 2 - 1

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            action, pred = m(x, speed)[:2]
        loss = ((action.float() - target) ** 2).mean() + 1e-3 * ((pred.float() - speed) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    print(f"{64 * n / (time.perf_counter() - t0):.1f}")


def run_arm(threads: int, seconds: float, bf16: bool, policy: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, __file__, "--child", str(threads), str(seconds), str(int(bf16))]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per arm")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: the cores)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (where the CPU has it natively)")
    a = p.parse_args(argv)
    arms = {**ARMS, "1 thread": "PASSIVE"}
    rows = {"idle": {k: [] for k in arms}, "beside 1 busy process": {k: [] for k in arms}}
    for _ in range(a.repeats):
        for where, row in rows.items():
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if where != "idle" else None
            try:
                for name, policy in arms.items():
                    threads = 1 if name == "1 thread" else a.threads
                    row[name].append(run_arm(threads, a.seconds, a.bf16, policy))
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    print(f"samples/s, PilotNet step (batch 64, stack 4, {'bf16' if a.bf16 else 'fp32'}), {a.threads} threads, "
          f"median of {a.repeats} x {a.seconds:g} s")
    names = list(arms)
    print(f"{'':24}" + "".join(f"{n:>24}" for n in names) + f"{'passive / spin':>16}")
    for where, row in rows.items():
        med = {n: statistics.median(v) for n, v in row.items()}
        print(f"{where:24}" + "".join(f"{med[n]:>24.0f}" for n in names)
              + f"{med['passive'] / med['spin (libgomp default)']:>16.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), float(sys.argv[3]), bool(int(sys.argv[4])))
    else:
        main()
