"""Per-episode outcome and scores: pure functions of the recorded steps.

Driving score (per episode), in [0, 1]:

    DS = RC x P_crash x P_offroad x P_route
    RC        = min(1, distance / reference_distance)   route completion; the reference is the
                expert's distance on the same seed (so timid driving scores below 1); where the
                scenario names a route (sim/route.py), only the distance before the ego left it
    P_crash   = 0.6 if the episode ended in a collision, else 1   (CARLA's vehicle-collision factor)
    P_offroad = 1 - offroad_fraction                              (share of steps with the ego's
                centre outside every lane)
    P_route   = 0.7 if the ego left the scenario's route, else 1  (CARLA's factor for an ignored
                instruction, a red light: a wrong turn is a failed task, not a crash; the route
                completion alone cannot tell, as the reference is where the expert got to in time)

success = no collision, never off-road, never off the route, the episode ran to its time limit or to
the scenario's own end (merge passed, intersection crossed), and not short of the expert's distance on
the same seed by more than 20% (SUCCESS_COMPLETION) and 10 m (SUCCESS_SLACK_M): an ego that waits out
the clock before the junction, or crawls, has not done the task. The expert's own rows have no
reference (their RC is 1 by definition), as for the driving score.

collision_with: what the ego hit (COLLISION_KINDS: a moving vehicle, a stopped one, a wreck
of an earlier collision, an object), "" without a collision; its rates split the collision rate.
"""
from __future__ import annotations

import math

import numpy as np

# Raised whenever a metric's definition changes, so that stored results of another definition are
# scored again rather than mixed with new ones (driving.evaluate). 2: the route (off_route, P_route),
# lane changes kept 1 s, lane keeping None without such steps (2026-12-07). 3: the route ends where
# roads turn back; the leader is searched beyond the ego's road segment (2026-12-07). 4: a success is
# not short of the expert's distance by more than 20% and 10 m (2026-12-07: standing still to the
# time limit was one).
METRICS_VERSION = 4
CRASH_PENALTY = 0.6
OFF_ROUTE_PENALTY = 0.7
# CARLA's success needs the whole route; ours is the expert's distance in the same time, so a margin
# below it: 80% is a student ~20% slower than the expert (timid, but driving), not one that stopped.
SUCCESS_COMPLETION = 0.8
SUCCESS_SLACK_M = 10.0  # where the expert itself barely moved, a few metres less is not stopping short
LANE_HOLD_S = 1.0  # a lane change counts when the new lane is kept this long (or to the episode's end)
LANE_CHANGE_WINDOW_S = 2.0  # a lane change's manoeuvre: this long before and after the lane index switches


def episode_metrics(steps: dict, dt: float, truncated: bool, terminated: bool,
                    reference_distance: float | None = None) -> dict:
    """Metrics of one episode.

    steps: per-step arrays over the states visited, the initial one included (length T + 1 for T
    actions): "speed" (m/s), "progress" (m along the road), "on_road", "crashed", "heading" (rad),
    optionally "on_route" (where the scenario has a route; records without it count as on it).
    """
    speed = np.asarray(steps["speed"], dtype=np.float64)
    progress = np.asarray(steps["progress"], dtype=np.float64)
    on_road = np.asarray(steps["on_road"], dtype=bool)
    crashed = bool(np.any(steps["crashed"]))
    heading = np.unwrap(np.asarray(steps["heading"], dtype=np.float64))
    n_actions = len(speed) - 1
    duration = n_actions * dt
    distance = float(progress[-1] - progress[0]) if len(progress) else 0.0
    on_route = np.asarray(steps.get("on_route", np.ones(len(progress), dtype=bool)), dtype=bool)
    left = int(np.argmin(on_route)) if not on_route.all() else None  # the first state off the route
    route = {"off_route": left is not None} if "on_route" in steps else {}  # a scenario without a route
    # a wrong turn: the metres after it are not the route's
    route_distance = distance if left is None else float(progress[left] - progress[0])
    offroad_fraction = float((~on_road[1:]).mean()) if n_actions > 0 else float(not on_road[0])
    a_long = np.diff(speed) / dt
    yaw_rate = np.diff(heading) / dt
    a_lat = speed[1:] * yaw_rate
    switches = _lane_switches(steps, hold=max(1, round(LANE_HOLD_S / dt)))
    keeping = _lane_keeping_steps(switches, n_actions, dt)
    jerk = np.diff(a_long) / dt
    ref = distance if reference_distance is None else reference_distance
    completion = 1.0 if ref <= 1e-6 else float(np.clip(route_distance / ref, 0.0, 1.0))
    score = (completion * (CRASH_PENALTY if crashed else 1.0) * (1.0 - offroad_fraction)
             * (OFF_ROUTE_PENALTY if left is not None else 1.0))
    ended_properly = truncated or (terminated and not crashed)
    return {
        **({"collision_with": collision_with(steps)} if "collision" in steps else {}),
        **decision_metrics(steps, switches),
        "steps": int(n_actions),
        "duration_s": float(duration),
        "crashed": crashed,
        "offroad_time_s": float(offroad_fraction * duration),
        "offroad_fraction": offroad_fraction,
        **route,
        "distance_m": distance,
        "mean_speed": float(distance / duration) if duration > 0 else 0.0,
        "mean_abs_long_accel": _mean_abs(a_long),
        "max_abs_long_accel": _max_abs(a_long),
        "mean_abs_lat_accel": _mean_abs(a_lat),
        # None where nothing is left once lane changes are cut out (not 0: the best value there is)
        **({"lane_keeping_lat_accel": _mean_abs(a_lat[keeping]) if keeping.any() else None}
           if keeping is not None else {}),
        "max_abs_lat_accel": _max_abs(a_lat),
        "rms_jerk": float(np.sqrt(np.mean(jerk ** 2))) if len(jerk) else 0.0,
        "max_abs_jerk": _max_abs(jerk),
        "route_completion": completion,
        "success": bool(not crashed and offroad_fraction == 0.0 and left is None and ended_properly
                        and ref - route_distance <= max((1 - SUCCESS_COMPLETION) * ref, SUCCESS_SLACK_M)),
        "driving_score": float(score),
    }


def collision_with(steps: dict) -> str:
    """What the ego hit in an episode (a COLLISION_KINDS key), "" without a collision."""
    return next((str(c) for c in steps.get("collision", ()) if c), "")


TTC_CAP_S = 10.0  # time-to-collision and headway above this count as this (nothing close ahead)


def decision_metrics(steps: dict, switches: np.ndarray | None = None) -> dict:
    """Lane changes (the lane changes within one road segment), the minimum time-to-collision
    (gap / closing speed while closing) and the minimum time headway (gap / own speed) to the vehicle
    ahead in the ego's lane, both capped at TTC_CAP_S. Empty for records without these facts.
    switches: _lane_switches(steps) where the caller has it already."""
    out = {}
    if switches is None:
        switches = _lane_switches(steps)
    if switches is not None:
        out["lane_changes"] = int(switches.sum())
    if steps.get("gap_ahead") is not None:
        gap = np.maximum(np.asarray(steps["gap_ahead"], dtype=np.float64), 0.0)
        closing = np.asarray(steps["closing_speed"], dtype=np.float64)
        speed = np.asarray(steps["speed"], dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ttc = np.where(closing > 1e-6, gap / closing, np.inf)
            headway = np.where(speed > 1e-6, gap / speed, np.inf)
        out["min_ttc_s"] = float(min(TTC_CAP_S, np.min(ttc))) if len(ttc) else TTC_CAP_S
        out["min_headway_s"] = float(min(TTC_CAP_S, np.min(headway))) if len(headway) else TTC_CAP_S
    return out


def _lane_switches(steps: dict, hold: int = 1) -> np.ndarray | None:
    """Per transition between recorded states: did the ego change lanes within one road segment (not
    the next section of road) into a lane it then keeps for `hold` states (or until the episode or
    the segment ends, or it entered the segment in it)? A shorter visit, a car wobbling over a lane
    line, is no lane change: counted, it made a weaving policy look like one that changes lanes as
    often as the expert. None for records without lanes."""
    lanes = steps.get("lane")
    if lanes is None:
        return None
    parts = [tuple(str(lane).rsplit("/", 1)) for lane in lanes]
    out = np.zeros(max(len(parts) - 1, 0), dtype=bool)
    held, start = None, 0
    for i in range(1, len(parts) + 1):
        if i < len(parts) and parts[i] == parts[start]:
            continue
        lane = parts[start]  # a run of states [start, i) in one lane
        # kept: long enough; or the episode or the road segment ends in it, or the ego entered the
        # segment in it (no lane of this segment to wobble back to)
        kept = (i - start >= hold or i == len(parts) or len(parts[i]) != 2 or parts[i][0] != lane[0]
                or start == 0 or len(parts[start - 1]) != 2 or parts[start - 1][0] != lane[0])
        if len(lane) == 2 and kept:
            if held is not None and held[0] == lane[0] and held[1] != lane[1] and start > 0:
                out[start - 1] = True
            held = lane
        start = i
    return out


def _lane_keeping_steps(switches: np.ndarray | None, n_actions: int, dt: float) -> np.ndarray | None:
    """Which actions (transitions) are lane keeping: none within LANE_CHANGE_WINDOW_S of a lane change.
    The expert's lateral acceleration is almost all in its lane changes (highway: 0.001 of its 0.13 m/s²
    while keeping its lane), so the mean over these steps separates weaving from changing lanes.
    switches: _lane_switches of the episode (None: no lanes recorded)."""
    if switches is None:
        return None
    keep = np.ones(n_actions, dtype=bool)
    w = int(round(LANE_CHANGE_WINDOW_S / dt))
    for t in np.flatnonzero(switches[:n_actions]):
        keep[max(0, t - w):t + w + 1] = False
    return keep


def _mean_abs(x: np.ndarray) -> float:
    return float(np.mean(np.abs(x))) if len(x) else 0.0


def _max_abs(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if len(x) else 0.0


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, dof: int) -> float:
    tail = 0.5 * _betainc(dof / 2, 0.5, dof / (dof + t * t))
    return 1.0 - tail if t >= 0 else tail


def _t_quantile(p: float, dof: int) -> float:
    """Student-t quantile, exact to ~1e-12 (bisection on the CDF; no scipy)."""
    if dof <= 0:
        return float("nan")
    if p < 0.5:
        return -_t_quantile(1 - p, dof)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, dof) < p:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, dof) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


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
             "offroad_time_s", "mean_abs_long_accel", "mean_abs_lat_accel", "lane_keeping_lat_accel", "rms_jerk",
             "max_abs_jerk", "lane_changes", "min_ttc_s", "min_headway_s")
UNIT_KEYS = ("driving_score", "route_completion", "offroad_fraction")
SIGNED_KEYS = ("mean_speed", "distance_m")  # a car that reverses drives a negative distance
# What the ego hit (sim/env.py tells, from the other's state before the step): a vehicle under way,
# one standing (yielding, queueing), a wreck (crashed earlier, e.g. two other cars into each other),
# or a road object. Their rates split the collision rate, so a policy that drives into the debris of
# other cars' collisions is told apart from one that cuts across traffic.
COLLISION_KINDS = {"moving": "a moving vehicle", "stopped": "a stopped vehicle", "wreck": "a wreck",
                   "object": "an object"}


def metric_range(key: str) -> dict:
    """The values a mean of this metric can take, as mean_ci's `lo` and `hi`: intervals are clipped to them."""
    if key in UNIT_KEYS or key.endswith("_rate"):
        return {"lo": 0.0, "hi": 1.0}
    if key in ("min_ttc_s", "min_headway_s"):
        return {"lo": 0.0, "hi": TTC_CAP_S}
    return {"lo": -math.inf if key in SIGNED_KEYS else 0.0, "hi": math.inf}


def episode_flags(row: dict) -> dict[str, bool]:
    """The yes/no outcomes of an episode that its rates count, by the name of their rate (success and
    crashed by their own). Facts absent from older records are left out."""
    flags = {"success": bool(row["success"]), "crashed": bool(row["crashed"])}
    if "offroad_fraction" in row:
        flags["offroad_episode_rate"] = row["offroad_fraction"] > 0
    if "off_route" in row:
        flags["off_route_rate"] = bool(row["off_route"])
    if "collision_with" in row:
        flags.update({f"collision_{kind}_rate": row["collision_with"] == kind for kind in COLLISION_KINDS})
    return flags


def aggregate(rows: list[dict]) -> dict:
    """Aggregates over episodes, each {"mean", "ci_low", "ci_high", "n"} (95%). A metric an episode has
    no value of (None: no lane keeping left to measure) is the mean over the episodes that have one,
    and absent where none has."""
    flags = [episode_flags(r) for r in rows]
    rate_of = {src: k for k, src in RATE_KEYS.items()}  # success -> success_rate; the *_rate flags are named so
    out = {}
    for k in flags[0] if flags else (*RATE_KEYS.values(), "offroad_episode_rate"):
        if all(k in f for f in flags):
            out[rate_of.get(k, k)] = rate_ci([f[k] for f in flags])
    for k in MEAN_KEYS:
        values = [r[k] for r in rows if r.get(k) is not None]
        if values and all(k in r for r in rows):  # decision metrics: absent from older records
            out[k] = mean_ci(values, **metric_range(k))
    return out


def paired_differences(policy_rows: list[dict], expert_rows: list[dict]) -> dict:
    """Policy minus expert on the same seeds, per metric: a mean with a paired Student-t 95% interval
    (the per-seed differences' own spread, so seed-to-seed variation in difficulty cancels); a rate
    (success, crashed, the *_rate outcomes) with Newcombe's interval for paired proportions, which
    unlike t is not [0, 0] when no seed differs."""
    expert = {(r.get("scenario"), r["seed"]): r for r in expert_rows}
    pairs = [(p, expert[(p.get("scenario"), p["seed"])]) for p in policy_rows
             if (p.get("scenario"), p["seed"]) in expert]
    out = {}
    flags = [(episode_flags(p), episode_flags(e)) for p, e in pairs]
    for k in flags[0][0] if flags else ():
        if all(k in fp and k in fe for fp, fe in flags):
            out[k] = paired_rate_ci([fp[k] for fp, _ in flags], [fe[k] for _, fe in flags])
    for k in MEAN_KEYS:
        if pairs and all(k in p and k in e for p, e in pairs):
            diffs = [float(p[k]) - float(e[k]) for p, e in pairs if p[k] is not None and e[k] is not None]
            if diffs:
                out[k] = mean_ci(diffs)
    return out


def paired_rate_ci(a, b, level: float = 0.95) -> dict:
    """Difference of two proportions measured on the same seeds (rate of `a` minus rate of `b`) with
    Newcombe's (1998) square-and-add interval for paired data (his method 10): the Wilson intervals of
    both rates, combined with the correlation of the pairs."""
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    both, only_a, only_b = int((x & y).sum()), int((x & ~y).sum()), int((~x & y).sum())
    neither = n - both - only_a - only_b
    p1, p2 = float(x.mean()), float(y.mean())
    w1, w2 = rate_ci(x, level), rate_ci(y, level)
    l1, u1, l2, u2 = w1["ci_low"], w1["ci_high"], w2["ci_low"], w2["ci_high"]
    denom = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    # the pairs' correlation, with Newcombe's continuity correction of a positive one
    phi = 0.0 if denom == 0 else (cross - n / 2 if cross > n / 2 else min(cross, 0)) / math.sqrt(denom)
    d = p1 - p2
    below = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return {"mean": d, "ci_low": max(-1.0, d - below), "ci_high": min(1.0, d + above), "n": n}
