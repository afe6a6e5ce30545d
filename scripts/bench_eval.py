"""Closed-loop evaluation throughput: episodes/s (and steps/s) with 1 env, and with N envs in
parallel processes whose observations go through the policy as one batch per step. Speed-up last.

    python scripts/bench_eval.py [--checkpoint runs/X/checkpoints/last] [--scenario highway]
                                 [--episodes 8] [--max-steps 100] [--workers N]
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: an untrained PilotNet at the default camera (same cost)")
    p.add_argument("--scenario", default="highway")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="auto")
    a = p.parse_args()

    import torch

    from driving.config import to_dict
    from driving.evaluate import run_episodes
    from driving.models import InputSpec, ModelConfig, build_model
    from driving.policy import load_policy, pick_device, policy_from_model
    from sim import CameraConfig

    if a.checkpoint:
        policy = load_policy(a.checkpoint, device=a.device)
        camera = dict(policy.camera)
    else:
        camera = to_dict(CameraConfig())
        dev = pick_device(a.device)
        model = build_model("pilotnet", ModelConfig(stack=camera["stack"]),
                            InputSpec(camera["height"], camera["width"], 1, 80.0, 60.0, 20.0, 5.0)).to(dev)
        policy = policy_from_model(model.eval(), {"camera": camera}, dev)
    seeds = [3_000_000 + i for i in range(a.episodes)]
    out = {}
    for n in (1, a.workers):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // (2 if n > 1 else 1)))
        t = time.perf_counter()
        recs = run_episodes(policy, a.scenario, seeds, camera, n, a.max_steps, progress=False)
        dt = time.perf_counter() - t
        out[n] = (len(recs) / dt, sum(len(r["actions"]) for r in recs) / dt)
    print(f"scenario {a.scenario}, {a.episodes} episodes x <= {a.max_steps} steps, policy on {policy.device}")
    for n, (eps, sps) in out.items():
        print(f"{n:2d} env(s){' (batched inference)' if n > 1 else '':22}: {eps:6.2f} episodes/s  {sps:7.1f} steps/s")
    print(f"speed-up with {a.workers} envs: {out[a.workers][0] / out[1][0]:.2f}x")


if __name__ == "__main__":
    main()
