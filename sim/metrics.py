"""Per-episode outcome and scores: pure functions of the recorded steps.

Driving score (per episode), in [0, 1]:

    DS = RC x P_crash x P_offroad
    RC        = min(1, distance / reference_distance)   route completion; the reference is the
                expert's distance on the same seed (so timid driving scores below 1)
    P_crash   = 0.6 if the episode ended in a collision, else 1   (CARLA's vehicle-collision factor)
    P_offroad = 1 - offroad_fraction                              (share of steps with the ego's
                centre outside every lane)

success = no collision, never off-road, and the episode ran to its time limit or to the scenario's
own end (merge passed, intersection crossed).
"""
from __future__ import annotations

import math

import numpy as np

CRASH_PENALTY = 0.6


def episode_metrics(steps: dict, dt: float, truncated: bool, terminated: bool,
                    reference_distance: float | None = None) -> dict:
    """Metrics of one episode.

    steps: per-step arrays over the states visited, the initial one included (length T + 1 for T
    actions): "speed" (m/s), "progress" (m along the road), "on_road", "crashed", "heading" (rad).
    """
    speed = np.asarray(steps["speed"], dtype=np.float64)
    progress = np.asarray(steps["progress"], dtype=np.float64)
    on_road = np.asarray(steps["on_road"], dtype=bool)
    crashed = bool(np.any(steps["crashed"]))
    heading = np.unwrap(np.asarray(steps["heading"], dtype=np.float64))
    n_actions = len(speed) - 1
    duration = n_actions * dt
    distance = float(progress[-1] - progress[0]) if len(progress) else 0.0
    offroad_fraction = float((~on_road[1:]).mean()) if n_actions > 0 else float(not on_road[0])
    a_long = np.diff(speed) / dt
    yaw_rate = np.diff(heading) / dt
    a_lat = speed[1:] * yaw_rate
    jerk = np.diff(a_long) / dt
    ref = distance if reference_distance is None else reference_distance
    completion = 1.0 if ref <= 1e-6 else float(np.clip(distance / ref, 0.0, 1.0))
    score = completion * (CRASH_PENALTY if crashed else 1.0) * (1.0 - offroad_fraction)
    ended_properly = truncated or (terminated and not crashed)
    return {
        "steps": int(n_actions),
        "duration_s": float(duration),
        "crashed": crashed,
        "offroad_time_s": float(offroad_fraction * duration),
        "offroad_fraction": offroad_fraction,
        "distance_m": distance,
        "mean_speed": float(distance / duration) if duration > 0 else 0.0,
        "mean_abs_long_accel": _mean_abs(a_long),
        "max_abs_long_accel": _max_abs(a_long),
        "mean_abs_lat_accel": _mean_abs(a_lat),
        "max_abs_lat_accel": _max_abs(a_lat),
        "rms_jerk": float(np.sqrt(np.mean(jerk ** 2))) if len(jerk) else 0.0,
        "max_abs_jerk": _max_abs(jerk),
        "route_completion": completion,
        "success": bool(not crashed and offroad_fraction == 0.0 and ended_properly),
        "driving_score": float(score),
    }


def _mean_abs(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if len(x) else 0.0


def _max_abs(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if len(x) else 0.0


def _t_quantile(p: float, dof: int) -> float:
    """Student-t quantile via the Cornish-Fisher expansion (exact enough for CIs, no scipy)."""
    z = _normal_quantile(p)
    if dof <= 0:
        return float("nan")
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
    return z + g1 / dof + g2 / dof ** 2 + g3 / dof ** 3 + g4 / dof ** 4


def _normal_quantile(p: float) -> float:
    # Acklam's rational approximation, |error| < 1.2e-9
    a = [-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00]
    b = [-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01]
    c = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00]
    d = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00]
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


def mean_ci(values, level: float = 0.95, lo: float = -math.inf, hi: float = math.inf) -> dict:
    """Mean with a Student-t confidence interval, clipped to the metric's range [lo, hi]."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    m = float(x.mean())
    if n == 1:
        return {"mean": m, "ci_low": m, "ci_high": m, "n": 1}
    half = _t_quantile(0.5 + level / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return {"mean": m, "ci_low": max(lo, m - half), "ci_high": min(hi, m + half), "n": n}


def rate_ci(successes, level: float = 0.95) -> dict:
    """A proportion with its Wilson score interval (sound at 0/n and n/n, unlike mean +- t)."""
    x = np.asarray(successes, dtype=bool)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    p = float(x.mean())
    z = _normal_quantile(0.5 + level / 2)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return {"mean": p, "ci_low": max(0.0, centre - half), "ci_high": min(1.0, centre + half), "n": n}


RATE_KEYS = {"success_rate": "success", "collision_rate": "crashed"}
MEAN_KEYS = ("driving_score", "route_completion", "mean_speed", "distance_m", "offroad_fraction",
             "offroad_time_s", "mean_abs_long_accel", "mean_abs_lat_accel", "rms_jerk", "max_abs_jerk")
UNIT_KEYS = ("driving_score", "route_completion", "offroad_fraction")


def aggregate(rows: list[dict]) -> dict:
    """Aggregates over episodes, each {"mean", "ci_low", "ci_high", "n"} (95%)."""
    out = {k: rate_ci([r[src] for r in rows]) for k, src in RATE_KEYS.items()}
    out["offroad_episode_rate"] = rate_ci([r["offroad_fraction"] > 0 for r in rows])
    for k in MEAN_KEYS:
        hi = 1.0 if k in UNIT_KEYS else math.inf
        out[k] = mean_ci([r[k] for r in rows], lo=0.0, hi=hi)  # every listed metric is >= 0
    return out
