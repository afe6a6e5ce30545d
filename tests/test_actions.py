"""ActionSpec: [steer, accel] in [-1, 1] <-> physical units <-> highway-env's [accel, steer]."""
from __future__ import annotations

import numpy as np
import pytest

from sim.actions import ACCEL, STEER, ActionSpec
from sim.scenarios import get_scenario

SPEC = ActionSpec(steer_range=0.15, accel_range=6.0)


def test_index_convention():
    assert (STEER, ACCEL) == (0, 1)
    assert SPEC.as_dict()["order"] == ["steer", "accel"]


@pytest.mark.parametrize(
    "action, expected",
    [
        ([0.0, 0.0], (0.0, 0.0)),
        ([1.0, 1.0], (0.15, 6.0)),
        ([-1.0, -1.0], (-0.15, -6.0)),
        ([0.5, -0.25], (0.075, -1.5)),
        ([-0.2, 0.8], (-0.03, 4.8)),
    ],
)
def test_to_physical_values(action, expected):
    steer, accel = SPEC.to_physical(action)
    assert steer == pytest.approx(expected[0])
    assert accel == pytest.approx(expected[1])


def test_to_physical_is_linear_inside_the_range(rng):
    for _ in range(20):
        a, b = rng.uniform(-0.5, 0.5, size=(2, 2))
        lhs = np.array(SPEC.to_physical(a + b))
        rhs = np.array(SPEC.to_physical(a)) + np.array(SPEC.to_physical(b))
        np.testing.assert_allclose(lhs, rhs, atol=1e-12)
        np.testing.assert_allclose(SPEC.to_physical(2 * a), 2 * np.array(SPEC.to_physical(a)), atol=1e-12)


def test_to_physical_clips():
    assert SPEC.to_physical([3.0, -7.0]) == pytest.approx((0.15, -6.0))
    assert SPEC.to_physical([-1.5, 1.01]) == pytest.approx((-0.15, 6.0))


def test_to_normalized_inverts_to_physical(rng):
    for a in rng.uniform(-1, 1, size=(10, 2)):
        np.testing.assert_allclose(SPEC.to_normalized(*SPEC.to_physical(a)), a, atol=1e-12)
    # Not clipped: callers see saturation.
    np.testing.assert_allclose(SPEC.to_normalized(0.3, -12.0), [2.0, -2.0])


def test_to_highway_reorders_and_clips():
    np.testing.assert_array_equal(SPEC.to_highway([0.25, -0.5]), [-0.5, 0.25])
    np.testing.assert_array_equal(SPEC.to_highway(np.array([-1.0, 0.75])), [0.75, -1.0])
    np.testing.assert_array_equal(SPEC.to_highway([2.0, -3.0]), [-1.0, 1.0])
    # Normalised in, normalised out: the physical scaling happens in highway-env's ContinuousAction.
    wide = ActionSpec(steer_range=0.8, accel_range=3.0)
    np.testing.assert_array_equal(wide.to_highway([0.5, 0.1]), [0.1, 0.5])


def test_highway_action_config_matches_ranges():
    cfg = SPEC.highway_action_config()
    assert cfg["type"] == "ContinuousAction"
    assert cfg["acceleration_range"] == [-6.0, 6.0]
    assert cfg["steering_range"] == [-0.15, 0.15]
    assert cfg["longitudinal"] and cfg["lateral"]


def test_as_dict():
    assert SPEC.as_dict() == {"order": ["steer", "accel"], "steer_range_rad": 0.15,
                              "accel_range_mps2": 6.0}


# --- the mapping against the real simulator -----------------------------------------------------
#
# Sign convention, found by experiment and asserted below: a POSITIVE steer INCREASES the ego's
# heading. In highway-env's world frame x points along the road and y points to the driver's right
# (at heading 0), and its renderer draws y downwards; so a positive steer turns the car towards +y:
# to the driver's RIGHT, i.e. clockwise as seen on highway-env's screen and in our camera frames.
# A positive accel speeds the car up.


def _one_step(make_env, action):
    env = make_env("highway")
    _, info0 = env.reset(seed=0)
    _, _, _, _, info1 = env.step(np.array(action))
    return env, info0, info1


def test_positive_accel_speeds_up_by_accel_range_times_dt(make_env):
    env, info0, info1 = _one_step(make_env, [0.0, 1.0])
    sc = env.scenario
    assert info1["speed"] > info0["speed"]
    assert info1["speed"] - info0["speed"] == pytest.approx(sc.action.accel_range * sc.dt, rel=1e-6)
    assert info1["heading"] == pytest.approx(info0["heading"], abs=1e-9)


def test_negative_accel_slows_down(make_env):
    _, info0, info1 = _one_step(make_env, [0.0, -0.5])
    assert info1["speed"] < info0["speed"]


def test_positive_steer_increases_heading_and_turns_right(make_env):
    env, info0, info1 = _one_step(make_env, [0.5, 0.0])
    assert info0["heading"] == pytest.approx(0.0)  # highway: ego starts along +x
    assert info1["heading"] > info0["heading"]
    assert info1["y"] > info0["y"]  # towards +y: the driver's right
    assert info1["speed"] == pytest.approx(info0["speed"])
    # The magnitude follows highway-env's kinematic bicycle model with the wheel angle
    # 0.5 * steer_range: each sub-step turns by v * sin(beta) / (L / 2) * dt, beta = atan(tan(d) / 2).
    sc = env.scenario
    delta = 0.5 * sc.action.steer_range
    beta = np.arctan(0.5 * np.tan(delta))
    substeps = sc.simulation_frequency // sc.policy_frequency
    half_length = env.ego.LENGTH / 2
    expected = substeps * info0["speed"] * np.sin(beta) / half_length / sc.simulation_frequency
    assert info1["heading"] - info0["heading"] == pytest.approx(expected, rel=1e-6)


def test_negative_steer_turns_left(make_env):
    _, info0, info1 = _one_step(make_env, [-0.5, 0.0])
    assert info1["heading"] < info0["heading"]
    assert info1["y"] < info0["y"]


def test_scenario_steer_range_reaches_the_simulator(make_core):
    """The core env's ContinuousAction is configured with the scenario's ranges."""
    core = make_core("roundabout")
    spec = get_scenario("roundabout").action
    action_type = core.unwrapped.action_type
    assert list(action_type.steering_range) == [-spec.steer_range, spec.steer_range]
    assert list(action_type.acceleration_range) == [-spec.accel_range, spec.accel_range]
