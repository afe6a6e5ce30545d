"""Summary statistics of a dataset: counts, outcomes, actions, speed."""
from __future__ import annotations

from collections import Counter

import numpy as np

from driving.data.format import OUTCOMES, Dataset


def _describe(x: np.ndarray) -> dict:
    if x.size == 0:
        return {}
    q = np.percentile(x, [5, 50, 95])
    return {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "p5": float(q[0]),
            "median": float(q[1]), "p95": float(q[2]), "max": float(x.max())}


def dataset_stats(ds: Dataset) -> dict:
    keys = ("action", "expert_action", "speed", "expert_saturated", "on_road")
    parts = [ds.episode(i, keys) for i in range(len(ds))]
    cat = {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros((0, 2) if "action" in k else 0)
           for k in keys}
    outcomes = Counter(r["outcome"] for r in ds.index)
    lengths = np.array([r["length"] for r in ds.index])
    out = {
        "path": str(ds.root),
        "scenario": ds.meta["scenario"]["name"],
        "episodes": len(ds),
        "finished": ds.unfinished is None,
        "unfinished": ds.unfinished,  # why not, in one line
        "requested": (ds.meta.get("collection") or {}).get("requested"),
        "frames": ds.frames,
        "frame_shape": ds.meta.get("frame_shape"),
        "policy_frequency": ds.meta.get("policy_frequency"),
        "hours": ds.frames / max(ds.meta.get("policy_frequency") or 1, 1) / 3600,
        "outcomes": {k: int(outcomes.get(k, 0)) for k in OUTCOMES},
        "episode_length": _describe(lengths.astype(np.float64)),
        "seeds": [r["seed"] for r in ds.index][:5] + (["..."] if len(ds) > 5 else []),
        "noise": ds.meta["noise"],
        "offroad_frame_fraction": float((~cat["on_road"]).mean()) if ds.frames else 0.0,
        "expert_saturated_fraction": float(cat["expert_saturated"].mean()) if ds.frames else 0.0,
        "speed": _describe(cat["speed"]),
    }
    for name in ("expert_action", "action"):
        a = cat[name].reshape(-1, 2)
        out[name] = {"steer": _describe(a[:, 0]), "accel": _describe(a[:, 1])}
    return out


def _duty(noise: dict, output: str) -> str:
    """' (on 50% of steps)' where that output's noise is switched on for part of the steps only."""
    duty = noise.get(f"{output}_duty", 1.0)
    return "" if duty >= 1.0 else f" (on {duty:.0%} of steps, bursts of {noise.get('burst', 0):g})"


def format_stats(s: dict) -> str:
    lines = [
        f"dataset   {s['path']}  (scenario {s['scenario']})",
        f"episodes  {s['episodes']}   frames {s['frames']}   frame {s['frame_shape']}   "
        f"{s['policy_frequency']} Hz   {s['hours'] * 60:.1f} min of driving",
        "outcomes  " + "   ".join(f"{k} {v}" for k, v in s["outcomes"].items())
        + f"   off-road frames {s['offroad_frame_fraction']:.1%}",
        f"noise     steer {s['noise']['steer']}{_duty(s['noise'], 'steer')}  accel {s['noise']['accel']}"
        f"{_duty(s['noise'], 'accel')}  correlation {s['noise']['correlation']}   "
        f"expert saturated {s['expert_saturated_fraction']:.1%}",
        "",
        f"{'':22}{'mean':>8}{'std':>8}{'min':>8}{'p5':>8}{'median':>8}{'p95':>8}{'max':>8}",
    ]

    def row(name, d):
        if not d:
            return f"{name:22}(none)"
        return f"{name:22}" + "".join(f"{d[k]:8.3f}" for k in ("mean", "std", "min", "p5", "median", "p95", "max"))

    for src in ("expert_action", "action"):
        for dim in ("steer", "accel"):
            lines.append(row(f"{'label' if src == 'expert_action' else 'executed'} {dim}", s[src][dim]))
    lines.append(row("speed m/s", s["speed"]))
    lines.append(row("episode length", s["episode_length"]))
    if not s.get("finished", True):
        lines.insert(1, f"NOT FINISHED: {s['unfinished']}")
    return "\n".join(lines)
