"""Indicators (sim/signals.py): which way a vehicle takes at the next branching, drawn by the camera
and read by the camera-perception expert from vehicles in its frame."""
from __future__ import annotations

import numpy as np
import pytest
from highway_env.vehicle.behavior import IDMVehicle

from sim.camera import PALETTE, Camera, CameraConfig
from sim.env import DrivingEnv
from sim.expert import Expert, ExpertConfig
from sim.signals import LEFT, NONE, RIGHT, SIGNAL_DISTANCE, turn_signal, way_signals


@pytest.fixture(scope="module")
def intersection():
    env = DrivingEnv("intersection", expert=False)
    env.reset(seed=3)
    yield env
    env.close()


def _car(env, road, before_end: float, destination: str | None, speed: float = 8.0):
    """A traffic car on `road` (from, to), `before_end` metres before the end of its lane."""
    lane = env.road.network.get_lane((*road, 0))
    car = IDMVehicle.make_on_lane(env.road, (*road, 0), longitudinal=lane.length - before_end, speed=speed)
    if destination:
        car.plan_route_to(destination)
    return car


def test_each_way_out_of_a_junction_signals_its_own_side(intersection):
    net = intersection.road.network
    # from the south (heading north): west is a left turn, east a right turn, north straight on
    assert way_signals(net, "ir0") == {"il1": LEFT, "il3": RIGHT, "il2": NONE}
    # from the west (heading east): north is left, south right
    assert way_signals(net, "ir1") == {"il2": LEFT, "il0": RIGHT, "il3": NONE}
    assert way_signals(net, "o0") == {}  # one way out: nothing to signal


def test_a_car_signals_near_the_junction_and_until_it_has_turned(intersection):
    net = intersection.road.network
    near = SIGNAL_DISTANCE - 5.0
    assert turn_signal(net, _car(intersection, ("o1", "ir1"), near, "o0")) == RIGHT
    assert turn_signal(net, _car(intersection, ("o1", "ir1"), near, "o2")) == LEFT
    assert turn_signal(net, _car(intersection, ("o1", "ir1"), near, "o3")) == NONE
    assert turn_signal(net, _car(intersection, ("o1", "ir1"), SIGNAL_DISTANCE + 20.0, "o0")) == NONE  # too early
    assert turn_signal(net, _car(intersection, ("o1", "ir1"), near, None)) == NONE  # no plan
    turning = _car(intersection, ("ir1", "il2"), 5.0, "o2")  # on the left-turn lane itself
    assert turn_signal(net, turning) == LEFT
    assert turn_signal(net, _car(intersection, ("il2", "o2"), 20.0, "o2")) == NONE  # turned


def test_the_camera_draws_the_lit_side_at_the_front(intersection):
    env = intersection
    ego = env.ego
    ego_lane = env.road.network.get_lane(ego.lane_index)
    cam = Camera(CameraConfig(height=128, width=64, metres_per_pixel=0.5, stack=1, ego_row=0.75))

    def frame(destination):
        car = _car(env, ("o0", "ir0"), 15.0, destination)  # ahead of the ego, in its lane, heading north
        saved, env.road.vehicles = env.road.vehicles, [ego, car]
        try:
            return cam.render(env.road, ego).astype(int), cam.world_to_pixel_matrix(ego.position, ego.heading), car
        finally:
            env.road.vehicles = saved

    plain, m, car = frame("o2")  # straight on: no indicator
    assert turn_signal(env.road.network, car) == NONE
    assert ego_lane.local_coordinates(car.position)[0] > ego_lane.local_coordinates(ego.position)[0]
    for destination, side in (("o1", LEFT), ("o3", RIGHT)):
        lit, _, car = frame(destination)
        assert turn_signal(env.road.network, car) == side
        changed = np.argwhere(np.abs(lit - plain) > 20)
        assert len(changed), "the indicator must show in the frame"
        col, row = m[:, :2] @ car.position + m[:, 2]
        # heading-up: the car points up the frame, so its left is the frame's left
        offset = (changed[:, 1] - col) * side  # towards the signalling side, px
        assert np.all(offset > -1.0) and offset.mean() > 0.5  # (anti-aliasing spills half a pixel)
        assert np.all(changed[:, 0] < row)  # in the front half
        assert lit.max() >= PALETTE["signal"][0] - 30


def test_the_fair_expert_reads_the_indicator_of_cars_it_sees(intersection):
    env = intersection
    net = env.road.network
    expert = Expert(ExpertConfig(perception="camera"), env.scenario.action, camera=CameraConfig())
    expert._sync_network(net)
    car = _car(env, ("o1", "ir1"), 10.0, "o0")  # turning right, signalling
    routes = expert._possible_routes(net, car.lane_index, car.position, 60.0, signal=turn_signal(net, car))
    assert {r[1] for r in routes} == {("ir1", "il0")}
    far = _car(env, ("o1", "ir1"), SIGNAL_DISTANCE + 20.0, "o0")  # no indicator yet: it may go any way
    routes = expert._possible_routes(net, far.lane_index, far.position, 100.0, signal=turn_signal(net, far))
    assert {r[1] for r in routes} == {("ir1", "il0"), ("ir1", "il2"), ("ir1", "il3")}


def test_the_fair_expert_predicts_a_braking_car_to_stop_and_a_speeding_one_to_the_limit(intersection):
    env = intersection
    net = env.road.network
    times = np.arange(0.0, 5.01, 0.25)
    braking = _car(env, ("o1", "ir1"), 60.0, None, speed=8.0)
    braking.action = {"steering": 0.0, "acceleration": -4.0}
    stop, going_on = Expert._observed_motion(net, braking, 8.0, braking.lane_index, times)
    assert stop[-1] == pytest.approx(8.0 ** 2 / (2 * 4.0))  # stops after 8 m and stays
    assert np.all(np.diff(stop) >= -1e-12)
    assert going_on[-1] == pytest.approx(40.0)  # or it braked for something else and goes on
    speeding = _car(env, ("o1", "ir1"), 60.0, None, speed=4.0)
    speeding.action = {"steering": 0.0, "acceleration": 3.0}
    limit = net.get_lane(speeding.lane_index).speed_limit  # 10 m/s on the intersection's roads
    (d,) = Expert._observed_motion(net, speeding, 4.0, speeding.lane_index, times)
    t_limit = (limit - 4.0) / 3.0
    assert d[-1] == pytest.approx(4.0 * t_limit + 1.5 * t_limit ** 2 + limit * (5.0 - t_limit))
    cruising = _car(env, ("o1", "ir1"), 60.0, None, speed=8.0)
    cruising.action = {"steering": 0.0, "acceleration": 0.0}
    (d,) = Expert._observed_motion(net, cruising, 8.0, cruising.lane_index, times)
    assert d[-1] == pytest.approx(40.0)
