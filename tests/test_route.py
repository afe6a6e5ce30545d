"""The route a scenario asks for: a wrong turn is off it, and the metrics count it so."""
from __future__ import annotations

import numpy as np
import pytest

from driving.baselines import ConstantPolicy, ExpertPolicy
from driving.evaluate import run_episodes, score_records
from sim.metrics import OFF_ROUTE_PENALTY, aggregate, episode_metrics
from sim.route import OFF_ROUTE_M, Route

CAMERA = {"height": 32, "width": 32, "stack": 1}


def _rows(policy, scenario, seeds, reference=None):
    from sim.scenarios import get_scenario

    records = run_episodes(policy, scenario, seeds, CAMERA, 1, progress=False)
    return score_records(records, scenario, get_scenario(scenario).dt, reference), records


def test_the_route_is_the_roads_to_the_destination_and_what_follows_it(make_env):
    env = make_env("intersection")
    env.reset(seed=1000000)
    route = Route(env.road.network, env.ego.lane_index, "o1")
    assert route.roads[:3] == [("o0", "ir0"), ("ir0", "il1"), ("il1", "o1")]  # the left turn
    assert ("ir0", "il2") not in route.roads  # straight on is not on it
    assert route.on(env.ego.position) and route.distance(env.ego.position) < 1.0
    far = env.road.network.get_lane(("il2", "o2", 0)).position(30.0, 0.0)  # 30 m down the straight exit
    assert route.distance(far) > OFF_ROUTE_M and not route.on(far)
    # the exit back out of the entry arm runs 4 m beside the entry lane, the other way
    lane = env.road.network.get_lane(("il0", "o0", 0))
    back = lane.position(30.0, 0.0)
    assert route.distance(back) < OFF_ROUTE_M  # by distance alone it looked on the route
    assert not route.on(back, lane.heading_at(30.0)) and route.on(back, lane.heading_at(30.0) + np.pi)
    with pytest.raises(ValueError, match="no road leads"):
        Route(env.road.network, ("il2", "o2", 0), "o1x")
    # past the exit the graph turns back into arm 1's entry and through the junction again: a car that
    # went straight on was 0.1 m from arm 1's turn lane ir1->il2 in the junction and counted on route
    assert route.roads == [("o0", "ir0"), ("ir0", "il1"), ("il1", "o1")]
    wrong = env.road.network.get_lane(("ir0", "il2", 0))
    assert not route.on(wrong.position(wrong.length - 2.0, 0.0), wrong.heading_at(wrong.length - 2.0))


def test_the_roundabout_route_goes_on_past_its_exit(make_env):
    env = make_env("roundabout")
    env.reset(seed=1000000)
    route = Route(env.road.network, env.ego.lane_index, "nxs")
    assert route.roads[-2:] == [("nx", "nxs"), ("nxs", "nxr")]  # the exit road, and where it leads on


def test_the_leader_is_found_beyond_the_egos_road_segment(make_env):
    """highway-env's neighbour search covers the ego's road segment only: a stopped car 12 m into the
    next racetrack segment was `nothing ahead` (time-to-collision and headway at their 10 s cap)."""
    from sim.route import leader

    env = make_env("racetrack")
    env.reset(seed=1000000)
    net, ego = env.road.network, env.ego
    here, there = net.get_lane(("a", "b", 0)), net.get_lane(("b", "c", 0))
    ego.position, ego.heading, ego.lane_index, ego.lane = (here.position(here.length - 3, 0.0),
                                                           here.heading_at(here.length - 3), ("a", "b", 0), here)
    others = [v for v in env.road.vehicles if v is not ego]
    for v in others[1:]:
        v.position = np.array([1e4, 1e4])
    car = others[0]
    car.position, car.heading, car.lane_index, car.lane, car.speed = (there.position(12.0, 0.0), there.heading_at(12.0),
                                                                     ("b", "c", 0), there, 0.0)
    assert env.road.neighbour_vehicles(ego, ego.lane_index)[0] is None  # the segment's search alone
    assert leader(env.road, ego) is car
    gap = env._leader()
    assert gap["gap_ahead"] == pytest.approx(np.linalg.norm(car.position - ego.position) - car.LENGTH, abs=1e-6)
    assert 9.0 < gap["gap_ahead"] < 10.5 and gap["closing_speed"] == pytest.approx(ego.speed, rel=0.05)
    car.position = np.array([1e4, 1e4])
    assert leader(env.road, ego) is None and env._leader() == {"gap_ahead": float("inf"), "closing_speed": 0.0}


@pytest.mark.parametrize("scenario", ["intersection", "roundabout"])
def test_the_expert_keeps_to_the_route(scenario):
    rows, records = _rows(ExpertPolicy(), scenario, [1000000, 1000001, 1000002])
    for row, rec in zip(rows, records):
        assert all(rec["steps"]["on_route"]) and row["off_route"] is False, row["seed"]


def test_going_straight_at_the_left_turn_is_off_the_route_and_no_success():
    """Intersection ends at any exit, and progress counts metres on any road: before the route, a car
    that held the wheel straight scored 1.0 and a success (seed 1000000, the expert's 41 m)."""
    expert_rows, _ = _rows(ExpertPolicy(), "intersection", [1000000])
    reference = {1000000: expert_rows[0]["distance_m"]}
    rows, records = _rows(ConstantPolicy(0.0, 0.0), "intersection", [1000000], reference)
    row, steps = rows[0], records[0]["steps"]
    assert not row["crashed"] and row["off_route"] is True and row["success"] is False
    assert row["distance_m"] > reference[1000000]  # it drove further than the expert ...
    left = steps["on_route"].index(False)
    route_metres = steps["progress"][left] - steps["progress"][0]
    # ... but only the metres before the wrong turn complete the route
    assert row["route_completion"] == pytest.approx(min(1.0, route_metres / reference[1000000]))
    assert row["driving_score"] == pytest.approx(row["route_completion"] * OFF_ROUTE_PENALTY)
    assert aggregate(rows)["off_route_rate"]["mean"] == 1.0


def test_a_scenario_without_a_destination_has_no_route(make_env):
    env = make_env("highway")
    _, info = env.reset(seed=0)
    assert env.destination is None and "on_route" not in info
    rows, _ = _rows(ConstantPolicy(1.0, 0.0), "highway", [0])  # even off the road
    assert "off_route" not in rows[0] and "off_route_rate" not in aggregate(rows)


def test_records_without_the_route_fact_have_no_route_to_leave():
    steps = {"speed": [10.0] * 6, "progress": [0.0, 2, 4, 6, 8, 10], "on_road": [True] * 6,
             "crashed": [False] * 6, "heading": [0.0] * 6}
    m = episode_metrics(steps, 0.2, True, False, 10.0)
    assert "off_route" not in m and m["route_completion"] == 1.0 and m["success"]
    left = episode_metrics({**steps, "on_route": [True, True, True, False, False, False]}, 0.2, True, False, 10.0)
    assert left["off_route"] is True and left["route_completion"] == pytest.approx(0.6) and not left["success"]
    assert left["driving_score"] == pytest.approx(0.6 * OFF_ROUTE_PENALTY)
