"""Metrics on hand-built trajectories with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sim.metrics import _normal_quantile, _t_quantile, aggregate, episode_metrics, mean_ci, rate_ci


def traj(speed, heading=None, on_road=None, crashed=None):
    n = len(speed)
    speed = np.asarray(speed, float)
    dt = 0.2
    progress = np.concatenate([[0.0], np.cumsum(speed[1:] * dt)])
    return {"speed": speed, "progress": progress,
            "heading": np.zeros(n) if heading is None else np.asarray(heading, float),
            "on_road": np.ones(n, bool) if on_road is None else np.asarray(on_road, bool),
            "crashed": np.zeros(n, bool) if crashed is None else np.asarray(crashed, bool)}


def test_constant_speed_straight_line():
    m = episode_metrics(traj([20.0] * 11), dt=0.2, truncated=True, terminated=False)
    assert m["steps"] == 10 and m["duration_s"] == pytest.approx(2.0)
    assert m["distance_m"] == pytest.approx(40.0) and m["mean_speed"] == pytest.approx(20.0)
    assert m["mean_abs_long_accel"] == 0 and m["mean_abs_lat_accel"] == 0 and m["rms_jerk"] == 0
    assert m["success"] and not m["crashed"] and m["driving_score"] == 1.0


def test_constant_acceleration_has_no_jerk():
    m = episode_metrics(traj(np.arange(11) * 0.4), dt=0.2, truncated=True, terminated=False)
    assert m["mean_abs_long_accel"] == pytest.approx(2.0)
    assert m["rms_jerk"] == pytest.approx(0.0, abs=1e-9)


def test_lateral_acceleration_is_speed_times_yaw_rate_and_heading_wraps():
    heading = (np.pi - 0.3 + 0.1 * np.arange(11) + np.pi) % (2 * np.pi) - np.pi  # crosses +-pi
    m = episode_metrics(traj([10.0] * 11, heading=heading), dt=0.2, truncated=True, terminated=False)
    assert m["mean_abs_lat_accel"] == pytest.approx(10.0 * 0.5)  # 0.1 rad / 0.2 s = 0.5 rad/s
    assert m["max_abs_lat_accel"] == pytest.approx(5.0)


def test_crash_and_offroad_penalise_the_score():
    crashed = [False] * 10 + [True]
    m = episode_metrics(traj([20.0] * 11, crashed=crashed), dt=0.2, truncated=False, terminated=True,
                        reference_distance=80.0)
    assert m["crashed"] and not m["success"]
    assert m["route_completion"] == pytest.approx(0.5)
    assert m["driving_score"] == pytest.approx(0.5 * 0.6)
    on_road = [True] * 4 + [False] * 3 + [True] * 4  # 3 of 10 steps after the start off the road
    m = episode_metrics(traj([20.0] * 11, on_road=on_road), dt=0.2, truncated=True, terminated=False)
    assert m["offroad_fraction"] == pytest.approx(0.3) and m["offroad_time_s"] == pytest.approx(0.6)
    assert not m["success"] and m["driving_score"] == pytest.approx(0.7)


def test_route_completion_is_capped_and_scenario_end_counts_as_success():
    m = episode_metrics(traj([20.0] * 11), dt=0.2, truncated=False, terminated=True, reference_distance=10.0)
    assert m["route_completion"] == 1.0 and m["success"]
    m = episode_metrics(traj([20.0] * 11), dt=0.2, truncated=False, terminated=False)
    assert not m["success"]  # neither time limit nor scenario end: cut short


def test_waiting_out_the_time_limit_short_of_the_expert_is_no_success():
    """An ego that stops before the junction and stands to the time limit: no crash, on the road and
    the route, truncated, yet it did not do the task the expert did on the same seed."""
    stands = traj([5.0] * 3 + [0.0] * 8)  # 2 m, then still
    m = episode_metrics(stands, dt=0.2, truncated=True, terminated=False, reference_distance=40.0)
    assert not m["crashed"] and m["route_completion"] == pytest.approx(0.05) and not m["success"]
    # a little slower than the expert is still a success; the threshold sits between
    for distance, success in ((40.0 / 0.85, True), (40.0 / 0.75, False), (200.0, False)):
        m = episode_metrics(traj([20.0] * 11), dt=0.2, truncated=True, terminated=False, reference_distance=distance)
        assert m["success"] == success, (m["route_completion"], success)
    # where the expert itself waited (12 m), 2 m is a few metres short, not stopping short
    m = episode_metrics(stands, dt=0.2, truncated=True, terminated=False, reference_distance=12.0)
    assert m["route_completion"] == pytest.approx(2 / 12) and m["success"]


def test_confidence_intervals():
    assert _normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-6)
    assert _t_quantile(0.975, 9) == pytest.approx(2.262, abs=2e-3)
    assert _t_quantile(0.975, 29) == pytest.approx(2.045, abs=1e-3)
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert ci["mean"] == 2.5 and ci["ci_high"] - 2.5 == pytest.approx(half, rel=3e-3)
    assert mean_ci([0.2, 1.0], lo=0, hi=1)["ci_high"] == 1.0
    zero = rate_ci([False] * 10)
    assert zero["mean"] == 0 and zero["ci_low"] == 0 and zero["ci_high"] == pytest.approx(0.2775, abs=1e-3)
    assert rate_ci([True] * 5 + [False] * 5)["ci_low"] == pytest.approx(0.2366, abs=1e-3)


def test_aggregate_has_the_contract_keys():
    rows = [episode_metrics(traj([20.0] * 11), 0.2, True, False),
            episode_metrics(traj([10.0] * 11, crashed=[False] * 10 + [True]), 0.2, False, True, 40.0)]
    agg = aggregate(rows)
    for key in ("driving_score", "success_rate", "collision_rate", "mean_speed"):
        assert {"mean", "ci_low", "ci_high", "n"} <= set(agg[key])
    assert agg["collision_rate"]["mean"] == 0.5 and agg["success_rate"]["mean"] == 0.5
    assert agg["mean_speed"]["mean"] == pytest.approx(15.0)
    assert not math.isnan(agg["driving_score"]["ci_low"])


@pytest.mark.parametrize("p, dof, exact", [
    (0.975, 1, 12.7062047362), (0.975, 2, 4.30265272975), (0.975, 5, 2.57058183661),
    (0.975, 30, 2.04227245630), (0.995, 3, 5.84090930973), (0.025, 4, -2.77644510520),
])
def test_t_quantiles_are_exact_for_small_samples(p, dof, exact):
    """Tabulated values (R's qt): the old Cornish-Fisher series was 11% too narrow at n = 2."""
    assert _t_quantile(p, dof) == pytest.approx(exact, rel=1e-9)


def test_decision_metrics_count_lane_changes_and_the_closest_approach():
    from sim.metrics import decision_metrics

    steps = {
        # two lane changes on segment 0/1, then a new segment (not a lane change), an empty lane id
        "lane": ["0/1/0", "0/1/0", "0/1/1", "0/1/2", "1/2/2", "", "1/2/2"],
        "gap_ahead": [40.0, 30.0, 20.0, np.inf, 12.0, 30.0, 30.0],
        "closing_speed": [5.0, 5.0, 10.0, 0.0, -3.0, 0.0, 0.0],
        "speed": [20.0, 20.0, 20.0, 20.0, 24.0, 20.0, 0.0],
    }
    m = decision_metrics(steps)
    assert m["lane_changes"] == 2
    assert m["min_ttc_s"] == pytest.approx(2.0)  # 20 m closing at 10 m/s; receding leaders do not count
    assert m["min_headway_s"] == pytest.approx(0.5)  # 12 m at 24 m/s
    far = decision_metrics({**steps, "gap_ahead": [np.inf] * 7})
    assert far["min_ttc_s"] == far["min_headway_s"] == 10.0  # nothing ahead: the cap


def test_lane_keeping_lateral_acceleration_leaves_out_the_lane_changes():
    """Weaving apart from changing lanes: the steps within 2 s of a lane change do not count."""
    n = 41  # 40 actions at 5 Hz
    heading = np.zeros(n)
    heading[19:22] = [0.02, 0.04, 0.02]  # the lane change's swerve around step 20
    heading[5:9] = [0.001, 0.0, 0.001, 0.0]  # a little weaving, far from it
    lanes = ["0/1/0"] * 20 + ["0/1/1"] * 21
    m = episode_metrics({**traj([20.0] * n, heading), "lane": lanes}, 0.2, True, False)
    a_lat = np.abs(20.0 * np.diff(heading) / 0.2)
    assert m["lane_changes"] == 1
    assert m["mean_abs_lat_accel"] == pytest.approx(a_lat.mean())
    keep = np.ones(n - 1, bool)
    keep[19 - 10:19 + 11] = False  # the lane switches between states 19 and 20: transition 19, +-2 s
    assert m["lane_keeping_lat_accel"] == pytest.approx(a_lat[keep].mean())
    assert m["lane_keeping_lat_accel"] == pytest.approx(4 * 0.1 / 19)  # the weaving alone: 4 of 19 steps at 0.1 m/s²
    assert "lane_keeping_lat_accel" not in episode_metrics(traj([20.0] * n, heading), 0.2, True, False)


def test_paired_differences_pair_by_scenario_and_seed():
    from sim.metrics import paired_differences

    pol = [{"scenario": s, "seed": k, "crashed": k == 1 and s == "a", "success": True, "driving_score": d}
           for s, k, d in (("a", 0, 0.9), ("a", 1, 0.5), ("b", 0, 0.7))]
    exp = [{"scenario": s, "seed": k, "crashed": False, "success": True, "driving_score": d}
           for s, k, d in (("b", 0, 1.0), ("a", 1, 1.0), ("a", 0, 1.0))]
    d = paired_differences(pol, exp)
    assert d["driving_score"]["mean"] == pytest.approx((-0.1 - 0.5 - 0.3) / 3)
    assert d["driving_score"]["n"] == 3 and d["crashed"]["mean"] == pytest.approx(1 / 3)
    half = 4.30265272975 * np.std([-0.1, -0.5, -0.3], ddof=1) / np.sqrt(3)
    assert d["driving_score"]["ci_high"] - d["driving_score"]["mean"] == pytest.approx(half)


def test_the_collision_rate_splits_by_what_the_ego_hit():
    def ep(kind):
        crashed = [False] * 10 + [bool(kind)]
        steps = {**traj([10.0] * 11, crashed=crashed), "collision": [""] * 10 + [kind]}
        return episode_metrics(steps, 0.2, False, bool(kind))

    rows = [ep("wreck"), ep("wreck"), ep("moving"), ep(""), ep("")]
    assert [r["collision_with"] for r in rows] == ["wreck", "wreck", "moving", "", ""]
    agg = aggregate(rows)
    assert agg["collision_rate"]["mean"] == pytest.approx(0.6)
    assert agg["collision_wreck_rate"]["mean"] == pytest.approx(0.4)
    assert agg["collision_moving_rate"]["mean"] == pytest.approx(0.2)
    assert agg["collision_stopped_rate"]["mean"] == agg["collision_object_rate"]["mean"] == 0.0
    # records from before the kinds were kept: no split, no error
    old = aggregate([episode_metrics(traj([10.0] * 11), 0.2, True, False)])
    assert "collision_rate" in old and "collision_wreck_rate" not in old


def test_capped_metrics_have_intervals_within_their_cap():
    """Time-to-collision and headway are capped at TTC_CAP_S per episode: so is their interval."""
    from sim.metrics import TTC_CAP_S

    rows = [dict(r, min_ttc_s=v, min_headway_s=v) for r, v in
            zip([episode_metrics(traj([10.0] * 11), 0.2, True, False)] * 4, (0.6, TTC_CAP_S, TTC_CAP_S, TTC_CAP_S))]
    agg = aggregate(rows)
    for k in ("min_ttc_s", "min_headway_s"):
        assert agg[k]["ci_high"] == TTC_CAP_S and agg[k]["ci_low"] < agg[k]["mean"] < TTC_CAP_S


def test_an_episode_without_lane_keeping_has_no_lane_keeping_value():
    """Every step within 2 s of a lane change: no lane keeping to measure. It was 0.0, the best value
    there is, and pulled the mean of a weaving policy down."""
    n = 11  # 10 actions, all within 2 s of the lane change at the middle
    heading = np.zeros(n)
    heading[4:7] = [0.05, 0.1, 0.05]
    lanes = ["0/1/0"] * 5 + ["0/1/1"] * 6
    swerve = episode_metrics({**traj([20.0] * n, heading), "lane": lanes}, 0.2, True, False)
    assert swerve["lane_changes"] == 1 and swerve["lane_keeping_lat_accel"] is None
    steady = episode_metrics({**traj([20.0] * 41), "lane": ["0/1/0"] * 41}, 0.2, True, False)
    weave = np.zeros(41)
    weave[1::2] = 0.01
    weaving = episode_metrics({**traj([20.0] * 41, weave), "lane": ["0/1/0"] * 41}, 0.2, True, False)
    agg = aggregate([swerve, steady, weaving])
    assert agg["lane_keeping_lat_accel"]["n"] == 2  # the episodes that have a value
    assert agg["lane_keeping_lat_accel"]["mean"] == pytest.approx(weaving["lane_keeping_lat_accel"] / 2)
    from sim.metrics import paired_differences
    pol = [dict(swerve, seed=0), dict(weaving, seed=1)]
    exp = [dict(steady, seed=0), dict(steady, seed=1)]
    assert paired_differences(pol, exp)["lane_keeping_lat_accel"]["n"] == 1


def test_a_reversing_car_has_its_interval_around_its_mean():
    """Speed and distance are signed (highway-env lets the ego reverse): their intervals were clipped at
    0, giving a lower bound above the upper one."""
    rows = [episode_metrics(traj([-v] * 11), 0.2, True, False) for v in (30.0, 35.0, 38.0)]
    for key in ("mean_speed", "distance_m"):
        m = aggregate(rows)[key]
        assert m["mean"] < 0 and m["ci_low"] < m["mean"] < m["ci_high"] < 0, key
    assert aggregate(rows)["driving_score"]["ci_low"] >= 0.0  # bounded metrics keep their bounds


def test_metric_ranges_bound_rates_and_unit_metrics():
    from sim.metrics import TTC_CAP_S, metric_range

    assert metric_range("collision_rate") == metric_range("driving_score") == {"lo": 0.0, "hi": 1.0}
    assert metric_range("min_ttc_s") == {"lo": 0.0, "hi": TTC_CAP_S}
    assert metric_range("mean_speed")["lo"] == -math.inf and metric_range("rms_jerk")["lo"] == 0.0
    # three training seeds' collision rates: a t interval would go below 0
    assert mean_ci([0.0, 0.0, 0.04], **metric_range("collision_rate"))["ci_low"] == 0.0
    assert mean_ci([0.99, 0.999, 0.95], **metric_range("driving_score"))["ci_high"] == 1.0


@pytest.mark.parametrize("table, low, high", [
    # (both, only the first, only the second, neither): Fagerland, Lydersen & Laake's worked examples
    # of the Newcombe square-and-add interval for paired proportions (Bentur et al. 2009; Cavo et al. 2012)
    ((1, 1, 7, 12), -0.507, -0.026),
    ((59, 6, 16, 80), -0.119, -0.005),
])
def test_paired_rate_interval_is_newcombes(table, low, high):
    from sim.metrics import paired_rate_ci

    both, only_a, only_b, neither = table
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    ci = paired_rate_ci(a, b)
    assert ci["mean"] == pytest.approx((only_a - only_b) / sum(table))
    assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((low, high), abs=5e-4)


def test_paired_rates_have_an_interval_when_no_seed_differs():
    """A paired t interval on 0/1 differences is [0, 0] when every pair agrees: certainty from 20 seeds."""
    from sim.metrics import paired_differences

    rows = [{"seed": k, "success": True, "crashed": False, "offroad_fraction": 0.0, "off_route": False,
             "collision_with": ""} for k in range(20)]
    d = paired_differences(rows, rows)
    for key in ("crashed", "success", "offroad_episode_rate", "off_route_rate", "collision_wreck_rate"):
        assert d[key]["mean"] == 0.0 and d[key]["ci_low"] < -0.1 and d[key]["ci_high"] > 0.1, key


def test_the_report_has_every_rate_with_its_paired_difference_and_no_interval_for_one_value():
    from driving.report import table_rows
    from sim.metrics import paired_differences

    def ep(seed, off_route, offroad):
        steps = {**traj([10.0] * 11, on_road=[True] * 5 + [not offroad] * 6),
                 "on_route": [True] * 6 + [not off_route] * 5, "collision": [""] * 11}
        return {"seed": seed, **episode_metrics(steps, 0.2, True, False, 20.0)}

    pol = [ep(0, True, True), ep(1, False, False)]
    exp = [ep(0, False, False), ep(1, False, False)]
    rows = {r[0].strip(): r[1:] for r in table_rows(aggregate(pol), aggregate(exp), paired_differences(pol, exp))}
    for label in ("episodes off road", "episodes off the route", "into a wreck", "success rate"):
        assert rows[label][2] != "–", label  # policy - expert on the same seeds
    assert rows["episodes off the route"][0].startswith("50% [")
    one = table_rows(aggregate(pol[:1]), aggregate(exp[:1]))
    assert dict((r[0], r[1]) for r in one)["driving score"] == f"{pol[0]['driving_score']:.3f}"  # no [x, x]


def test_a_wobble_over_a_lane_line_is_no_lane_change():
    """A lane counts as changed into when the ego keeps it for LANE_HOLD_S (or the episode ends in it)."""
    from sim.metrics import LANE_HOLD_S

    hold = round(LANE_HOLD_S / 0.2)
    n = 30
    wobble = ["0/1/0"] * 10 + ["0/1/1", "0/1/0", "0/1/1", "0/1/0"] + ["0/1/0"] * 16
    settle = ["0/1/0"] * 10 + ["0/1/1", "0/1/0"] + ["0/1/1"] * 18  # over the line, back, then across
    late = ["0/1/0"] * 28 + ["0/1/1"] * 2  # the episode ends in the new lane
    back = ["0/1/0"] * 10 + ["0/1/1"] * hold + ["0/1/0"] * (20 - hold)  # over and back: two changes
    # changes near a segment's start, as the expert drives them on merge and racetrack: the ego entered
    # the segment in the first lane, however briefly it stayed
    entered = ["0/1/1"] * 10 + ["1/2/1"] * 2 + ["1/2/0"] * 18
    counts = [episode_metrics({**traj([20.0] * n), "lane": lanes}, 0.2, True, False)["lane_changes"]
              for lanes in (wobble, settle, late, back, entered)]
    assert counts == [0, 1, 1, 2, 1]
    # the change is placed where the kept lane was entered, for the lane-keeping window
    from sim.metrics import _lane_switches
    assert np.flatnonzero(_lane_switches({"lane": settle}, hold)).tolist() == [11]
    assert _lane_switches({"lane": wobble}, 1).sum() == 4  # state by state, as before
