"""Closed-loop evaluation throughput and its scaling: steps/s with 1, 2, ... all-cores environments
(worker processes; 1 = in-process), for a policy whose forward pass runs in the parent (PilotNet,
one batch for the envs that answered; on CUDA replayed as a graph, and again launched eagerly as
"-eager") and for the expert (no network: the simulation alone). Pools are opened
and warmed first, so the figures are steady-state; the one-off worker start-up is printed apart.
Efficiency = steps/s per env relative to 1 env. The efficiency line comes last.

    python scripts/bench_eval.py [--checkpoint runs/X/checkpoints/last] [--scenario highway]
                                 [--episodes 16] [--max-steps 100] [--workers 1,2,all] [--repeats 2]
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: an untrained PilotNet at the default camera (same cost)")
    p.add_argument("--scenario", default="highway")
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--workers", default="1,2,all")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    a = p.parse_args()

    import torch

    from driving.evaluate import open_pool

    policies, camera = make_policies(a.checkpoint, a.device)
    counts = worker_counts(a.workers)
    seeds = [3_000_000 + i for i in range(a.episodes)]
    # The parent's forward pass shares the cores with the workers: one intra-op thread per
    # process once there are workers (torch's spinning threads would steal their cores).
    torch.set_num_threads(1)
    rates: dict[tuple[str, int], list[float]] = {}
    startup: dict[int, float] = {}
    pools = {}
    try:
        for n in counts:
            t = time.perf_counter()
            pools[n] = open_pool(a.scenario, camera, n, len(seeds), a.max_steps)
            for i in range(len(pools[n])):
                pools[n].reset(i, 0)
            startup[n] = time.perf_counter() - t
        for _ in range(a.repeats):
            for name, policy in policies.items():
                for n in counts:
                    rates.setdefault((name, n), []).append(
                        steady_steps_per_second(policy, pools[n], a.scenario, seeds, camera, a.max_steps))
    finally:
        for pool in pools.values():
            pool.close()
    print(f"scenario {a.scenario}, {a.episodes} episodes x <= {a.max_steps} steps, {os.cpu_count()} cores, "
          f"policy device {getattr(policies.get('pilotnet') or policies.get('checkpoint'), 'device', '?')}, "
          f"median of {a.repeats}")
    print("worker start-up (one-off): " + ", ".join(f"{n} env(s) {startup[n]:.2f} s" for n in counts))
    lines = []
    for name in policies:
        one = statistics.median(rates[name, 1])
        for n in counts:
            sps = statistics.median(rates[name, n])
            print(f"{name:<10} {n:2d} env(s): {sps:7.1f} steps/s   efficiency {sps / n / one:.2f}")
        lines.append(f"{name}: " + ", ".join(f"{n} envs {statistics.median(rates[name, n]) / n / one:.2f}"
                                             for n in counts if n > 1))
    print("scaling efficiency (steps/s per env / 1 env): " + "; ".join(lines))


if __name__ == "__main__":
    main()
