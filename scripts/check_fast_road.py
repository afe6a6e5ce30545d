"""Stock vs fast road, side by side, over many seeds of every scenario and three drivers (the
expert, the expert with AR(1) noise, uniformly random actions). Prints one line per scenario and
driver; exits 1 on the first difference (printed).

    python scripts/check_fast_road.py [--seeds 20] [--steps 0 (= the scenario's episode length)]
"""
from __future__ import annotations

import argparse
import sys
import time

from sim import SCENARIOS
from sim.equivalence import DRIVERS, lockstep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--drivers", default=",".join(DRIVERS))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=0, help="0: the scenario's full episode length")
    args = ap.parse_args()
    print(f"{'scenario':<14} {'driver':<7} {'seeds':>5} {'steps':>6} {'vehicle-substeps':>16} "
          f"{'crashes':>7} {'max |diff|':>10} {'seconds':>7}")
    for name in args.scenarios.split(","):
        steps = args.steps or SCENARIOS[name].max_steps
        for driver in args.drivers.split(","):
            t = time.perf_counter()
            reports = [lockstep(name, seed, steps, driver)
                       for seed in range(args.first_seed, args.first_seed + args.seeds)]
            bad = [r for r in reports if not r.equal]
            print(f"{name:<14} {driver:<7} {len(reports):>5} {sum(r.steps for r in reports):>6} "
                  f"{sum(r.vehicle_states for r in reports):>16} {sum(r.crashes for r in reports):>7} "
                  f"{max(r.max_abs_diff for r in reports):>10.3g} {time.perf_counter() - t:>7.1f}", flush=True)
            if bad:
                print(f"MISMATCH {name} seed {bad[0].seed} {driver}: {bad[0].mismatches[0]}")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
