"""The privileged expert (sim/expert.py): it never changes the simulation, it drives, its output is
well-formed, and it gives sensible commands in states it would never drive into itself."""
from __future__ import annotations

import numpy as np
import pytest

from sim.expert import Expert, ExpertConfig, _lane_samples


def _snapshot(env) -> list[tuple]:
    """Every vehicle's exact state (position, heading, speed), in road order."""
    return [(float(v.position[0]), float(v.position[1]), float(v.heading), float(v.speed))
            for v in env.road.vehicles]


def _run(env, seed: int, actions) -> list[list[tuple]]:
    env.reset(seed=seed)
    states = [_snapshot(env)]
    for a in actions:
        if env.expert is not None:  # DAgger-style extra queries between steps
            for _ in range(3):
                env.expert.act(env.core)
        _, _, terminated, truncated, _ = env.step(a)
        states.append(_snapshot(env))
        if terminated or truncated:
            break
    return states


@pytest.mark.parametrize("scenario,steps", [("highway", 40), ("merge", 40), ("intersection", 25)])
def test_expert_queries_do_not_change_the_simulation(make_env, scenario, steps):
    seed = 7
    env = make_env(scenario, expert=True)
    _, info = env.reset(seed=seed)
    # Record an off-policy action sequence: the expert's action plus fixed noise, so the queries
    # also happen in states the expert would not have driven into.
    noise = np.random.default_rng(0).normal(0.0, [0.2, 0.3], size=(steps, 2))
    actions = []
    for k in range(steps):
        a = np.clip(info["expert_action"] + noise[k], -1, 1)
        actions.append(a)
        _, _, terminated, truncated, info = env.step(a)
        if terminated or truncated:
            break
    without = _run(make_env(scenario, expert=False), seed, actions)
    queried = _run(make_env(scenario, expert=True), seed, actions)
    assert len(without) == len(queried) > 5
    for k, (a, b) in enumerate(zip(without, queried)):
        assert a == b, f"{scenario}: the simulation diverged at step {k}"


def test_expert_drives_the_highway(make_env):
    env = make_env("highway", expert=True)
    for seed in (1000, 1001, 1002):
        _, info = env.reset(seed=seed)
        speeds = []
        for _ in range(100):
            a = info["expert_action"]
            assert a.shape == (2,) and np.all(np.abs(a) <= 1.0)
            _, _, terminated, truncated, info = env.step(a)
            speeds.append(info["speed"])
            assert not info["crashed"], f"seed {seed}: crashed"
            assert info["on_road"]
            if terminated or truncated:
                break
        assert np.mean(speeds) > 15.0, f"seed {seed}: mean speed {np.mean(speeds):.1f} m/s"


def test_expert_stays_on_the_racetrack(make_env):
    env = make_env("racetrack", expert=True)
    for seed in (1000, 1001):
        _, info = env.reset(seed=seed)
        for _ in range(120):
            _, _, terminated, truncated, info = env.step(info["expert_action"])
            assert info["on_road"] and not info["crashed"], f"seed {seed}, step {info['step']}"
            if terminated or truncated:
                break


@pytest.mark.parametrize("seed", [1003, 1005, 1007, 1008])
def test_expert_lets_the_ramp_vehicle_merge(make_env, seed):
    """These seeds used to end with the on-ramp vehicle cutting in front of the ego (it cannot see
    the ego across lane segments) and a crash."""
    env = make_env("merge", expert=True)
    _, info = env.reset(seed=seed)
    while True:
        _, _, terminated, truncated, info = env.step(info["expert_action"])
        if terminated or truncated:
            break
    assert not info["crashed"]
    assert info["progress"] > 300.0  # it reached the end of the merge (x > 370 m)


def test_config_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ValueError, match="unknown expert config keys.*target_sped"):
        ExpertConfig.from_dict({"target_sped": 20.0})
    cfg = ExpertConfig.from_dict({"target_speed": 20.0, "lane_changes": False})
    assert ExpertConfig.from_dict(cfg.as_dict()) == cfg
    assert ExpertConfig.from_dict(None) == ExpertConfig()


@pytest.mark.parametrize("key, value, words", [
    ("target_speed", -5.0, "expert.target_speed must be > 0"),
    ("conflict_radius", 0.0, "expert.conflict_radius must be > 0"),  # 0: it would never yield
    ("min_gap", -3.0, "expert.min_gap must be >= 0"),
    ("lane_changes", "maybe", "expert.lane_changes must be true or false"),
    ("target_speed", "abc", "expert.target_speed must be a number"),
    ("politeness", True, "expert.politeness must be a number"),
    ("destination", 3, "expert.destination must be a name or null"),
])
def test_config_rejects_values_that_would_break_the_expert_silently(key, value, words):
    with pytest.raises(ValueError, match=words):
        ExpertConfig.from_dict({key: value})


def test_an_unknown_destination_is_named_with_the_networks_nodes(make_env):
    with pytest.raises(ValueError, match="expert.destination 'zz' is not a node .*o1"):
        make_env("intersection", expert={"destination": "zz"}).reset(seed=0)


def _teleport(env, y: float | None = None, heading: float | None = None) -> None:
    ego = env.ego
    if y is not None:
        ego.position[1] = y
    if heading is not None:
        ego.heading = heading
    ego.on_state_update()  # the lane index follows the new position


def test_expert_steers_back_from_off_road(make_env):
    env = make_env("highway", expert=True)
    env.reset(seed=3)
    # Lanes run along +x at y = 0, 4, 8 (the road spans y in [-2, 10]); lateral + is +y.
    _teleport(env, y=-9.0, heading=0.0)
    assert not env.ego.on_road
    before = _snapshot(env)
    a = env.expert.act(env.core)
    assert _snapshot(env) == before  # a query reads the state, never writes it
    assert np.all(np.abs(a) <= 1.0)
    assert a[0] > 0.05, "off the road on the -y side: steer towards +y (positive)"
    # closed loop: it comes back onto the road and settles in a lane
    for _ in range(40):
        _, _, _, _, info = env.step(env.expert.act(env.core))
    assert info["on_road"] and abs(info["lane_offset"]) < 1.0 and not info["crashed"]


@pytest.mark.parametrize("heading,sign", [(np.pi / 2, -1), (-np.pi / 2, 1)])
def test_expert_turns_back_when_heading_across_the_road(make_env, heading, sign):
    env = make_env("highway", expert=True)
    env.reset(seed=3)
    _teleport(env, heading=heading)
    a = env.expert.act(env.core)
    assert np.all(np.abs(a) <= 1.0)
    assert np.sign(a[0]) == sign and abs(a[0]) > 0.5, f"heading {heading:+.2f}: steer {a[0]:+.2f}"


def test_saturation_is_reported_when_the_range_clips(make_env):
    env = make_env("highway", expert=True)
    env.reset(seed=3)
    _teleport(env, heading=np.pi / 2)  # a full-lock correction: beyond the narrow highway range
    a = env.expert.act(env.core)
    steering, _ = env.expert.last_physical
    assert abs(steering) > env.scenario.action.steer_range
    assert env.expert.saturated and env.expert.saturation[0]
    assert abs(a[0]) == 1.0


def test_lane_sampling_matches_highway_env(make_core):
    """The vectorised centre-line sampler agrees with each lane type's own position/heading_at."""
    from highway_env.road.lane import CircularLane, SineLane, StraightLane

    seen = set()
    for name in ("roundabout", "racetrack", "merge"):
        net = make_core(name).unwrapped.road.network
        for to_dict in net.graph.values():
            for lanes in to_dict.values():
                for lane in lanes:
                    s = np.linspace(-3.0, lane.length + 3.0, 7)
                    xy, heading = _lane_samples(lane, s)
                    for k, sk in enumerate(s):
                        np.testing.assert_allclose(xy[k], lane.position(sk, 0.0), atol=1e-9)
                        assert abs(np.angle(np.exp(1j * (heading[k] - lane.heading_at(sk))))) < 1e-9
                    # (the fast road gives lanes a memoising subclass of their stock class)
                    seen.add(next(k for k in (SineLane, CircularLane, StraightLane) if isinstance(lane, k)))
    assert {StraightLane, SineLane, CircularLane} <= seen


def test_expert_is_usable_without_an_env_wrapper(make_core):
    """Expert works on a bare core env too (reset, then act), with no state kept on vehicles."""
    from sim.scenarios import get_scenario

    core = make_core("roundabout", seed=1)
    sc = get_scenario("roundabout")
    expert = Expert(ExpertConfig.from_dict(sc.expert), sc.action)
    expert.reset(core)
    attrs = set(vars(core.unwrapped.vehicle))
    a = expert.act(core)
    assert a.shape == (2,) and np.all(np.abs(a) <= 1.0)
    assert set(vars(core.unwrapped.vehicle)) == attrs


def test_the_expert_reports_its_lane_plan_until_the_ego_is_in_the_target_lane(make_env):
    """info["expert_plan"] is -1 (to the left: lane ids grow to the right) or +1 from the decision until
    the ego's lane index changes to the target, and 0 when keeping its lane."""
    env = make_env("highway", expert=True)
    changes = []
    for seed in range(1000, 1010):
        _, info = env.reset(seed=seed)
        for _ in range(200):
            lane, plan = info["lane"], info["expert_plan"]
            _, _, terminated, truncated, info = env.step(info["expert_action"])
            if lane and info["lane"] and lane != info["lane"]:
                changes.append((int(info["lane"].split("/")[2]) - int(lane.split("/")[2]), plan))
            if terminated or truncated:
                break
        if len(changes) >= 2:
            break
    assert changes, "the expert changed no lane in 10 highway episodes"
    assert all(plan == np.sign(step) != 0 for step, plan in changes), changes
