"""The fast road (sim.fast_road, sim.fast_vehicles) computes what highway-env's stock road computes.

Two levels: whole simulations side by side (every vehicle, every substep, camera bytes, expert
labels) on several seeds of every scenario and three drivers; and the replaced functions alone on
adversarial inputs (vehicles placed on lane edges, off the road, overlapping), where a wrong
pruning tolerance would show long before it showed in traffic.
`python scripts/check_fast_road.py --seeds 50` runs the side-by-side check over more seeds.
"""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
from highway_env.road.road import Road, RoadNetwork

from sim import SCENARIOS
from sim.equivalence import DRIVERS, lockstep
from sim.fast_road import FastRoadMixin, is_fast

# Side-by-side horizon per scenario (policy steps): long enough for lane changes, merges and
# junction crossings, short enough for CI. SIM_EQUALITY_SEEDS raises the seed count.
_STEPS = {"highway": 60, "highway-dense": 25, "merge": 60, "roundabout": 60, "racetrack": 60,
          "intersection": 40}
_SEEDS = int(os.environ.get("SIM_EQUALITY_SEEDS", "3"))


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fast_and_stock_simulations_are_identical(scenario, driver):
    seeds = range(100, 100 + _SEEDS)
    reports = [lockstep(scenario, seed, _STEPS[scenario], driver) for seed in seeds]
    for r in reports:
        assert r.equal, f"{scenario} seed {r.seed} {driver}: {r.mismatches}"
        assert r.steps >= 1 and r.vehicle_states >= r.substeps  # something was compared
    assert max(r.max_abs_diff for r in reports) <= 1e-9


def test_lockstep_covers_crashes():
    """Random driving crashes the ego; crash steps must match too (the comparison saw some)."""
    reports = [lockstep("roundabout", seed, 75, "random") for seed in range(3)]
    assert all(r.equal for r in reports)
    assert sum(r.crashes for r in reports) >= 1


def test_lockstep_detects_a_difference(monkeypatch):
    """The comparison can fail: perturb the fast road's kinematics by 1e-6 m and it must notice."""
    from sim import fast_vehicles

    original = fast_vehicles._vehicle_step

    def nudged(self, dt):
        original(self, dt)
        self.position[0] += 1e-6

    monkeypatch.setattr(fast_vehicles.FastVehicleMixin, "step", nudged)
    report = lockstep("highway", 0, 5, "expert")
    assert not report.equal and "differs" in report.mismatches[0]


def test_connected_lane_neighbour_search_is_identical():
    """highway-env 1.12's connected-lane neighbour search (off in our scenarios) is handled too."""
    for seed in range(2):
        r = lockstep("merge", seed, 60, "noisy", env_overrides={"neighbour_vehicles_connected_lanes": True})
        assert r.equal, r.mismatches


# --- the switch -------------------------------------------------------------------------------

def test_fast_road_is_the_default_and_can_be_switched_off(make_env):
    from highway_env.road.regulation import RegulatedRoad

    for overrides, fast in ((None, True), ({"fast_road": True}, True), ({"fast_road": False}, False)):
        env = make_env("intersection", env_overrides=overrides)
        env.reset(seed=0)
        assert is_fast(env.road) == fast
        assert isinstance(env.road, RegulatedRoad)  # the scenario's own road class either way
        assert type(env.road).__name__ == ("FastRegulatedRoad" if fast else "RegulatedRoad")


def test_collect_config_switches_the_road(tmp_path):
    from driving.data.collect import CollectConfig, make_env

    cfg = CollectConfig(scenario="merge", episodes=1, out=str(tmp_path / "d"), env={"fast_road": False})
    env = make_env(cfg)
    env.reset(seed=0)
    assert not is_fast(env.road)


# --- the replaced functions on adversarial inputs ----------------------------------------------

def _scatter(road, rng, n_edge=0.5):
    """Move every vehicle to a random spot near a random lane: on it, on its edge (exactly at the
    neighbour-search margin), just beyond its ends, or off the road."""
    lanes = road.network.lanes_list()
    for v in road.vehicles:
        lane = lanes[rng.integers(len(lanes))]
        s = rng.uniform(-8.0, lane.length + 8.0)
        edge = lane.width_at(s) / 2 + 1.0
        kind = rng.random()
        if kind < n_edge:
            lat = rng.choice([-1.0, 1.0]) * edge  # exactly at |lat| = w/2 + margin
        elif kind < 0.8:
            lat = rng.uniform(-edge, edge)
        else:
            lat = rng.uniform(-15.0, 15.0)
        if rng.random() < 0.2:
            s = rng.choice([-lane.VEHICLE_LENGTH, lane.length + lane.VEHICLE_LENGTH])  # exact ends
        v.position = np.asarray(lane.position(s, lat), dtype=np.float64)
        v.heading = float(lane.heading_at(s) + rng.normal(0, 0.3))
        v.lane_index = road.network.get_closest_lane_index(v.position, v.heading)
        v.lane = road.network.get_lane(v.lane_index)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_neighbour_search_matches_stock_on_scattered_vehicles(make_core, scenario):
    core = make_core(scenario, seed=1)
    road = core.road
    assert isinstance(road, FastRoadMixin)
    rng = np.random.default_rng(7)
    lane_indexes = [(a, b, i) for a, tos in road.network.graph.items()
                    for b, lanes in tos.items() for i in range(len(lanes))]
    checked = 0
    for _ in range(4):
        _scatter(road, rng)
        for connected in (False, True):
            road.neighbour_vehicles_connected_lanes = connected
            for acting in (False, True):  # outside act() and with act()'s frozen positions
                road._acting, road._frozen = acting, None
                for v in road.vehicles:
                    for index in [None, *rng.choice(len(lane_indexes), 3)]:
                        lane_index = None if index is None else lane_indexes[index]
                        fast = road.neighbour_vehicles(v, lane_index)
                        stock = Road.neighbour_vehicles(road, v, lane_index)
                        assert fast[0] is stock[0] and fast[1] is stock[1], (scenario, lane_index)
                        checked += 1
                road._acting, road._frozen = False, None
    assert checked > 50


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_closest_lane_matches_stock(make_core, scenario):
    net = make_core(scenario).road.network
    rng = np.random.default_rng(3)
    lanes = net.lanes_list()
    for _ in range(1500):
        lane = lanes[rng.integers(len(lanes))]
        s = rng.uniform(-20.0, lane.length + 20.0)
        # between lanes (ties), on centre lines, and far away
        lat = rng.choice([rng.uniform(-6, 6), lane.width_at(s) / 2, 0.0, rng.uniform(-60, 60)])
        point = np.asarray(lane.position(s, lat), dtype=np.float64)
        heading = None if rng.random() < 0.2 else float(rng.uniform(-4, 4))
        assert net.get_closest_lane_index(point, heading) == RoadNetwork.get_closest_lane_index(net, point, heading)


def test_closest_lane_sees_a_lane_added_later(make_core):
    """The fast search keeps a table of the network's lanes: a lane added after a query is found."""
    from highway_env.road.lane import StraightLane

    net = make_core("roundabout").road.network
    point = np.array([500.0, 500.0])
    assert net.get_closest_lane_index(point) == RoadNetwork.get_closest_lane_index(net, point)
    net.add_lane("far", "away", StraightLane([400.0, 500.0], [600.0, 500.0]))
    assert net.get_closest_lane_index(point) == ("far", "away", 0)


@pytest.mark.parametrize("scenario", ["highway-dense", "merge", "roundabout", "intersection"])
def test_collision_checks_match_stock_on_overlapping_vehicles(make_core, scenario):
    core = make_core(scenario, seed=2)
    rng = np.random.default_rng(11)
    crashes = 0
    for _ in range(5):
        road = core.road
        lane = road.network.lanes_list()[0]
        # pile vehicles into a short stretch so that many pairs overlap or nearly touch
        for v in road.vehicles:
            v.position = np.asarray(lane.position(rng.uniform(0, 25), rng.uniform(-3, 3)), dtype=np.float64)
            v.heading = float(lane.heading_at(0.0) + rng.normal(0, 0.5))
            v.speed = float(rng.uniform(-2, 30))
            v.crashed, v.impact = False, None
        stock = copy.deepcopy(road)
        road.step(0.1)
        Road.step(stock, 0.1)
        for a, b in zip(road.vehicles, stock.vehicles):
            assert a.crashed == b.crashed
            assert (a.impact is None) == (b.impact is None)
            if a.impact is not None:
                np.testing.assert_array_equal(a.impact, b.impact)
            np.testing.assert_array_equal(a.position, b.position)
        crashes += sum(v.crashed for v in road.vehicles)
    assert crashes > 0


def test_road_rules_match_stock_on_crowded_junctions(make_core):
    """Who yields to whom at an intersection: the fast rules (pairs ruled out on arrays) decide as
    the stock rules, with vehicles packed onto the junction's lanes so that many pairs are close
    and many are not."""
    from highway_env.road.regulation import RegulatedRoad

    from sim import fast_road

    core = make_core("intersection", seed=4)
    rng = np.random.default_rng(5)
    lanes = [lane for lane in core.road.network.lanes_list() if lane.length < 60]  # inside the junction
    yields = conflicts = checked = ruled_out = 0
    for _ in range(30):
        road = core.road
        lane, s = lanes[0], 0.0  # the first vehicle always gets a lane of its own (k = 0)
        for k, v in enumerate(road.vehicles):
            if k % 2 and rng.random() < 0.8:  # just behind or ahead of the previous one, often near LENGTH
                s = float(np.clip(s + rng.choice([-1, 1]) * rng.uniform(3.0, 7.0), 0.0, lane.length))
            else:
                lane = lanes[rng.integers(len(lanes))]
                s = rng.uniform(0.0, lane.length)
            v.position = np.asarray(lane.position(s, rng.uniform(-1, 1)), dtype=np.float64)
            v.heading = float(lane.heading_at(s))
            v.speed = float(rng.uniform(0, 12))
            # lengths differ (a truck beside a car): the stock pre-check takes the first one's
            v.LENGTH = float(rng.choice([5.0, rng.uniform(3.0, 10.0)]))
            v.lane_index = road.network.get_closest_lane_index(v.position, v.heading)
            v.lane = road.network.get_lane(v.lane_index)
            for name in ("is_yielding", "color"):
                v.__dict__.pop(name, None)
        stock = copy.deepcopy(road)
        road.enforce_road_rules()
        RegulatedRoad.enforce_road_rules(stock)
        for a, b in zip(road.vehicles, stock.vehicles):
            assert getattr(a, "is_yielding", False) == getattr(b, "is_yielding", False)
            assert getattr(a, "target_speed", None) == getattr(b, "target_speed", None)
            yields += bool(getattr(a, "is_yielding", False))
        # pair by pair: a pair ruled out is one the stock check finds no conflict for
        vehicles = road.vehicles
        predictions = [v.predict_trajectory_constant_speed(np.arange(0.25, 3, 0.25)) for v in vehicles]
        near = fast_road._may_conflict(vehicles, predictions)
        for i, j in zip(*np.triu_indices(len(vehicles), 1)):
            stock_conflict = bool(RegulatedRoad.is_conflict_possible(vehicles[i], vehicles[j]))  # None: no
            assert bool(near[i, j] and fast_road._conflict_possible(
                vehicles[i], vehicles[j], predictions[i], predictions[j])) == stock_conflict
            conflicts += stock_conflict
            ruled_out += not near[i, j]
            checked += 1
    # the comparison saw yields and conflicts, and the pruning did something
    assert yields > 0 and conflicts > 0 and 0 < ruled_out < checked


def test_memoised_lane_coordinates_are_the_stock_ones(make_core):
    from sim.fast_vehicles import STOCK_CLASS

    for scenario in ("merge", "roundabout", "racetrack"):
        for lane in make_core(scenario).road.network.lanes_list():
            stock_cls = STOCK_CLASS[type(lane)]
            rng = np.random.default_rng(0)
            for _ in range(50):
                p = np.asarray(lane.position(rng.uniform(-5, lane.length + 5), rng.uniform(-5, 5)))
                expected = stock_cls.local_coordinates(lane, p)
                assert lane.local_coordinates(p) == expected
                assert lane.local_coordinates(p.copy()) == expected  # served from the memo
                assert lane.local_coordinates(list(p)) == expected  # not an array: not memoised


def test_evaluation_envs_take_the_switch():
    from driving.envpool import build_env

    for fast in (True, False):
        env = build_env("merge", {"height": 32, "width": 16, "stack": 1}, env={"fast_road": fast})
        env.reset(seed=0)
        assert is_fast(env.road) == fast
        env.close()
