"""Closed-loop evaluation throughput and its scaling: steps/s with 1, 2, ... all-cores environments
(worker processes; 1 = in-process), for a policy whose forward pass runs in the parent (PilotNet,
one batch for the envs that answered; on CUDA replayed as a graph, and again launched eagerly as
"-eager") and for the expert (no network: the simulation alone). Pools are opened
and warmed first, so the figures are steady-state; the one-off worker start-up is printed apart.
Each worker process holds --envs-per-worker envs (a list compares them in one run; the product's
default is 2: a worker steps one env while the other waits for its action; 1 worker with 1 env runs
in this process). Efficiency = steps/s per worker relative to 1 worker with the first of those
counts. The efficiency line comes last.

    python scripts/bench_eval.py [--checkpoint runs/X/checkpoints/last] [--scenario highway]
                                 [--episodes 16] [--max-steps 100] [--workers 1,2,all] [--repeats 2]
                                 [--envs-per-worker 1,2] [--breakdown]

--breakdown runs each policy once more per env count on an instrumented pool and says where the time
goes, from the parent's side (it sends every command and receives every answer): per env, the share
of the run with a command in flight (its step, plus the pipe both ways) against waiting for the
parent's next action; for the parent, waiting for answers, the policy's forward, sending, and the rest
(recording, batching). Envs that wait while the parent is busy: the parent is the limit; a parent that
waits while per-step round trips grow with the envs: the envs are.

--torch-threads also drives the learned policy without its closed-loop set-up ("NAME-Nthr": torch's
default N intra-op threads in the parent, as `driving eval` did before; the product drives a CPU policy
with one), and --busy K keeps K other processes spinning meanwhile (another job on the machine), where
torch's thread pool waits on threads that are not scheduled.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_collect import worker_counts  # noqa: E402


def make_policies(checkpoint: str | None, device: str) -> tuple[dict, dict]:
    from driving.baselines import ExpertPolicy
    from driving.config import to_dict
    from driving.models import InputSpec, ModelConfig, build_model
    from driving.policy import LoadedPolicy, load_policy, pick_device, policy_from_model
    from sim import CameraConfig

    if checkpoint:
        net = load_policy(checkpoint, device=device)
        camera = dict(net.camera)
    else:  # an untrained PilotNet at the default camera costs what a trained one does
        camera = to_dict(CameraConfig())
        dev = pick_device(device)
        model = build_model("pilotnet", ModelConfig(stack=camera["stack"]),
                            InputSpec(camera["height"], camera["width"], 1, 80.0, 60.0, 20.0, 5.0)).to(dev)
        net = policy_from_model(model.eval(), {"camera": camera}, dev)
    name = "pilotnet" if not checkpoint else "checkpoint"
    policies = {name: net}
    if net.cuda_graph:  # the same weights with the forward launched kernel by kernel: what the graph gains
        policies[f"{name}-eager"] = LoadedPolicy(net.model, net.meta, net.device, net.path, cuda_graph=False)
    return {**policies, "expert": ExpertPolicy()}, camera


def steady_steps_per_second(policy, pool, scenario: str, seeds: list[int], camera: dict,
                            max_steps: int) -> float:
    from driving.evaluate import run_episodes

    t = time.perf_counter()
    records = run_episodes(policy, scenario, seeds, camera, len(pool), max_steps, progress=False, pool=pool)
    return sum(len(r["actions"]) for r in records) / (time.perf_counter() - t)


class _TorchDefaultThreads:
    """The policy without its closed-loop set-up (driving.policy.LoadedPolicy.closed_loop): its forward
    passes run with whatever intra-op threads torch has, here its default."""

    def __init__(self, policy):
        self.policy = policy

    def act(self, batch):
        return self.policy.act(batch)


def _spin() -> None:
    while True:
        pass


class _TimedPolicy:
    """The policy, with the time spent in its forward passes (the batches the engine asks for)."""

    def __init__(self, policy):
        self.policy, self.seconds, self.calls, self.rows = policy, 0.0, 0, 0
        self.name = getattr(policy, "name", None) or type(policy).__name__

    def act(self, batch):
        t = time.perf_counter()
        out = self.policy.act(batch)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        self.rows += len(out)
        return out

    def closed_loop(self):  # the wrapped policy's own set-up (rollout.closed_loop reads self.policy's)
        from driving.rollout import closed_loop
        return closed_loop(self)


class _TimedPool:
    """An EnvPool seen from the parent: per env, how long each command was in flight; the parent's
    time waiting for answers and sending commands."""

    def __init__(self, pool):
        self.pool = pool
        self.sent_at: dict[int, float] = {}
        self.in_flight = [0.0] * len(pool)
        self.answers = 0
        self.waiting = self.sending = 0.0

    def __len__(self):
        return len(self.pool)

    def _sent(self, ids, t):
        for i in ids:
            self.sent_at[i] = t

    def send_reset(self, i, seed):
        t = time.perf_counter()
        self.pool.send_reset(i, seed)
        self.sending += time.perf_counter() - t
        self._sent([i], t)

    def send_steps(self, actions):
        t = time.perf_counter()
        self.pool.send_steps(actions)
        self.sending += time.perf_counter() - t
        self._sent(actions, t)

    def recv_ready(self, ids):
        t = time.perf_counter()
        out = self.pool.recv_ready(ids)
        now = time.perf_counter()
        self.waiting += now - t
        for i in out:
            self.in_flight[i] += now - self.sent_at.pop(i)
        self.answers += len(out)
        return out


def engine_breakdown(policy, pool, scenario: str, seeds: list[int], camera: dict, max_steps: int) -> dict:
    from driving.evaluate import run_episodes

    timed, proxy = _TimedPolicy(policy), _TimedPool(pool)
    t = time.perf_counter()
    records = run_episodes(timed, scenario, seeds, camera, len(pool), max_steps, progress=False, pool=proxy)
    wall = time.perf_counter() - t
    steps = sum(len(r["actions"]) for r in records)
    n = len(pool)
    return {"envs": n, "steps_per_s": steps / wall, "env_in_flight": sum(proxy.in_flight) / (n * wall),
            "parent_waiting": proxy.waiting / wall, "parent_forward": timed.seconds / wall,
            "parent_sending": proxy.sending / wall,
            "forward_ms": 1e3 * timed.seconds / max(timed.calls, 1), "rows_per_forward": timed.rows / max(timed.calls, 1),
            "round_trip_ms": 1e3 * sum(proxy.in_flight) / max(proxy.answers, 1)}


def print_breakdown(rows: dict) -> None:
    print("\nwhere the time goes (one instrumented run per policy and env count; shares of the wall time):")
    print(f"{'policy':<14} {'workers x envs':>14} {'steps/s':>8} | {'env: in flight':>14} {'waits':>6} | "
          f"{'parent: waits':>13} "
          f"{'forward':>8} {'sends':>6} {'rest':>6} | {'forward ms':>10} {'rows':>5} {'round trip ms':>13}")
    for (name, n), r in rows.items():
        rest = 1 - r["parent_waiting"] - r["parent_forward"] - r["parent_sending"]
        shape = f"{n[0]} x {n[1]}"
        print(f"{name:<14} {shape:>14} {r['steps_per_s']:>8.1f} | {r['env_in_flight']:>14.1%} "
              f"{1 - r['env_in_flight']:>6.1%} | "
              f"{r['parent_waiting']:>13.1%} {r['parent_forward']:>8.1%} {r['parent_sending']:>6.1%} {rest:>6.1%} | "
              f"{r['forward_ms']:>10.2f} {r['rows_per_forward']:>5.1f} {r['round_trip_ms']:>13.2f}")
    print("in flight: a command sent and not yet answered (the step, its reset, the pipe both ways; with two envs "
          "in a worker, also the other's step); with 1 worker x 1 env the env runs in the parent, inside `sends`")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: an untrained PilotNet at the default camera (same cost)")
    p.add_argument("--scenario", default="highway")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--workers", default="1,2,all")
    p.add_argument("--envs-per-worker", default=None, help="envs in each worker process, e.g. 1,2 (default: the "
                   "product's)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--breakdown", action="store_true", help="also one instrumented run per policy and env count")
    p.add_argument("--torch-threads", action="store_true",
                   help="also the learned policy (on a CPU) with torch's default intra-op threads in the parent")
    p.add_argument("--busy", type=int, default=0, help="other processes spinning during the runs (another job)")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)

    import torch

    from driving.config import ENVS_PER_WORKER
    from driving.evaluate import open_pool

    policies, camera = make_policies(a.checkpoint, a.device)
    learned = next(iter(policies))
    default_threads = torch.get_num_threads()
    if a.torch_threads and policies[learned].device.type == "cpu" and default_threads > 1:
        # inserted second: the table lists the product's way first, then this one
        policies = {learned: policies[learned], f"{learned}-{default_threads}thr": _TorchDefaultThreads(policies[learned]),
                    **{k: v for k, v in policies.items() if k != learned}}
    per_worker = [int(k) for k in (a.envs_per_worker or str(ENVS_PER_WORKER)).split(",")]
    counts = [(n, k) for n in worker_counts(a.workers) for k in per_worker]  # (workers, envs in each)
    seeds = [3_000_000 + i for i in range(a.episodes)]
    rates: dict[tuple[str, tuple], list[float]] = {}
    startup: dict[tuple, float] = {}
    pools = {}
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(a.busy)]
    for p in spinners:
        p.start()
    try:
        for n in counts:
            t = time.perf_counter()
            pools[n] = open_pool(a.scenario, camera, n[0], len(seeds), a.max_steps, envs_per_worker=n[1])
            for i in range(len(pools[n])):
                pools[n].reset(i, 0)
            startup[n] = time.perf_counter() - t
        # one episode per env first, untimed: a policy's first batches of a size pay one-off costs (cuDNN
        # and cuBLAS set-up, a CUDA graph's capture) that are not its steady rate
        for name, policy in policies.items():
            for n in counts:
                steady_steps_per_second(policy, pools[n], a.scenario, seeds[:len(pools[n])], camera, a.max_steps)
        for _ in range(a.repeats):
            for name, policy in policies.items():
                for n in counts:
                    rates.setdefault((name, n), []).append(
                        steady_steps_per_second(policy, pools[n], a.scenario, seeds, camera, a.max_steps))
                    # as it comes: a run stopped at its time limit keeps what it measured
                    print(f"measured {name} {label(n)}: {rates[name, n][-1]:.1f} steps/s", flush=True)
        breakdown = {(name, n): engine_breakdown(policy, pools[n], a.scenario, seeds, camera, a.max_steps)
                     for name, policy in policies.items() for n in counts} if a.breakdown else {}
    finally:
        for p in spinners:
            p.terminate()
        for pool in pools.values():
            pool.close()
    print(f"scenario {a.scenario}, {a.episodes} episodes x <= {a.max_steps} steps, {os.cpu_count()} cores, "
          f"policy device {getattr(policies[learned], 'device', '?')}, median of {a.repeats}"
          + (f", {a.busy} other process(es) spinning" if a.busy else ""))
    print("worker start-up (one-off): " + ", ".join(f"{label(n)} {startup[n]:.2f} s" for n in counts))
    lines = []
    for name in policies:
        one = statistics.median(rates[name, (1, per_worker[0])]) if (1, per_worker[0]) in counts else None
        for n in counts:
            sps = statistics.median(rates[name, n])
            eff = f"   efficiency {sps / n[0] / one:.2f}" if one else ""
            print(f"{name:<14} {label(n)}: {sps:7.1f} steps/s{eff}")
        if one:
            lines.append(f"{name}: " + ", ".join(f"{label(n)} {statistics.median(rates[name, n]) / n[0] / one:.2f}"
                                                 for n in counts if n != (1, per_worker[0])))
    if breakdown:
        print_breakdown(breakdown)
    many = f"{learned}-{default_threads}thr"
    if many in policies:
        print(f"one torch thread in the parent (the product's) against torch's default {default_threads}: "
              + ", ".join(f"{label(n)} {statistics.median(rates[learned, n]) / statistics.median(rates[many, n]):.2f}x"
                          for n in counts) + " the steps/s")
    print(f"scaling efficiency (steps/s per worker / 1 worker x {per_worker[0]}): " + "; ".join(lines))


def label(n: tuple) -> str:
    return f"{n[0]:2d} worker(s) x {n[1]} env(s)"


if __name__ == "__main__":
    main()
