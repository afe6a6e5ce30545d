"""Named scenarios: each builds a core env that takes 2-D continuous actions; configs are explicit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import sim
from sim.scenarios import SCENARIOS, UnknownScenarioError, get_scenario, make_core_env

ROOT = Path(__file__).resolve().parents[1]
YAML_DIR = ROOT / "configs" / "scenarios"
NAMES = list(SCENARIOS)


def test_there_are_scenarios_and_names_match_keys():
    assert {"highway", "merge", "roundabout", "racetrack", "intersection"} <= set(NAMES)
    for name, sc in SCENARIOS.items():
        assert sc.name == name
        assert get_scenario(name) is sc
    assert sim.SCENARIOS is SCENARIOS


@pytest.mark.parametrize("name", NAMES)
def test_frequencies_and_lengths(name):
    sc = SCENARIOS[name]
    assert 5 <= sc.policy_frequency <= 15
    assert sc.simulation_frequency >= sc.policy_frequency
    # highway-env runs int(sim / policy) sub-steps: a remainder would silently change dt.
    assert sc.simulation_frequency % sc.policy_frequency == 0
    assert sc.dt == pytest.approx(1.0 / sc.policy_frequency)
    assert sc.max_steps > 0
    assert sc.action.steer_range > 0 and sc.action.accel_range > 0


@pytest.mark.parametrize("name", NAMES)
def test_builds_and_steps_with_continuous_actions(name, rng):
    sc = SCENARIOS[name]
    core = make_core_env(sc)
    try:
        core.reset(seed=0)
        u = core.unwrapped
        assert u.config["policy_frequency"] == sc.policy_frequency
        assert u.config["simulation_frequency"] == sc.simulation_frequency
        assert u.config["duration"] == pytest.approx(sc.max_steps / sc.policy_frequency)
        assert core.action_space.shape == (2,)
        start = u.vehicle.position.copy()
        for _ in range(10):
            action = sc.action.to_highway(rng.uniform(-0.3, 1.0, size=2))
            _, reward, terminated, truncated, info = core.step(action)
            assert isinstance(terminated, bool) and isinstance(truncated, bool)
            if terminated:
                break
        assert np.all(np.isfinite(u.vehicle.position))
        assert not np.allclose(u.vehicle.position, start), "the ego did not move in 10 steps"
    finally:
        core.close()


def test_scenario_config_takes_effect(make_core):
    # highway: 3 lanes, highway-dense: 4 lanes, as the scenarios say.
    for name, lanes in [("highway", 3), ("highway-dense", 4)]:
        core = make_core(name)
        graph = core.unwrapped.road.network.graph
        assert len(graph["0"]["1"]) == lanes == SCENARIOS[name].env_config["lanes_count"]


def test_unknown_scenario_names_the_known_ones():
    with pytest.raises(UnknownScenarioError) as exc:
        get_scenario("no-such-road")
    msg = str(exc.value)
    assert "no-such-road" in msg
    for name in NAMES:
        assert name in msg
    assert isinstance(exc.value, ValueError)
    assert "\n" not in msg  # one clear line


def test_driving_env_rejects_unknown_scenario():
    with pytest.raises(UnknownScenarioError):
        sim.DrivingEnv("no-such-road")


def test_unknown_override_key_raises_naming_it():
    sc = get_scenario("highway")
    with pytest.raises(ValueError, match="lanes_cuont"):
        sc.highway_config({"lanes_cuont": 5})
    with pytest.raises(ValueError, match="lanes_cuont"):
        make_core_env(sc, {"lanes_cuont": 5})


def test_known_override_is_applied_and_does_not_leak(make_core):
    sc = get_scenario("highway")
    before = {k: v for k, v in sc.env_config.items()}
    # A key in our config and a stock highway-env key that we do not set ourselves.
    cfg = sc.highway_config({"lanes_count": 2, "show_trajectories": True})
    assert cfg["lanes_count"] == 2 and cfg["show_trajectories"] is True
    assert sc.env_config == before
    assert sc.highway_config()["lanes_count"] == 3
    core = make_core("highway", overrides={"lanes_count": 2})
    assert len(core.unwrapped.road.network.graph["0"]["1"]) == 2


def test_highway_config_forces_our_settings():
    for sc in SCENARIOS.values():
        cfg = sc.highway_config()
        assert cfg["action"] == sc.action.highway_action_config()
        assert cfg["offroad_terminal"] is False
        assert cfg["offscreen_rendering"] is True


@pytest.mark.parametrize("name", NAMES)
def test_as_dict_is_plain_yaml(name):
    d = SCENARIOS[name].as_dict()
    assert yaml.safe_load(yaml.safe_dump(d, sort_keys=False)) == d
    assert d["name"] == name and d["policy_frequency"] == SCENARIOS[name].policy_frequency


def test_committed_yaml_files_are_up_to_date():
    fix = "rerun `python scripts/dump_scenarios.py` and commit configs/scenarios/"
    assert YAML_DIR.is_dir(), f"{YAML_DIR} is missing: {fix}"
    on_disk = {p.stem for p in YAML_DIR.glob("*.yaml")}
    assert on_disk == set(NAMES), (
        f"configs/scenarios/*.yaml {sorted(on_disk)} != scenarios {sorted(NAMES)}: {fix}")
    for name in NAMES:
        loaded = yaml.safe_load((YAML_DIR / f"{name}.yaml").read_text())
        assert loaded == SCENARIOS[name].as_dict(), f"configs/scenarios/{name}.yaml is stale: {fix}"


def test_building_one_scenario_does_not_change_another():
    """highway-env's intersection mutates its traffic class's IDM parameters at reset; a highway
    episode must drive the same before and after an intersection was built in the same process."""
    from highway_env.vehicle.behavior import IDMVehicle

    from sim import DrivingEnv

    def trajectory():
        env = DrivingEnv("highway", camera={"height": 16, "width": 16, "stack": 1}, expert=False)
        env.reset(seed=5)
        out = []
        for _ in range(15):
            env.step([0.0, 0.5])
            out.append([v.position.copy() for v in env.road.vehicles])
        return np.array(out)

    before = (IDMVehicle.DISTANCE_WANTED, IDMVehicle.COMFORT_ACC_MAX, IDMVehicle.COMFORT_ACC_MIN)
    first = trajectory()
    inter = DrivingEnv("intersection", camera={"height": 16, "width": 16, "stack": 1}, expert=False)
    inter.reset(seed=0)
    inter.step([0.0, 0.0])
    assert (IDMVehicle.DISTANCE_WANTED, IDMVehicle.COMFORT_ACC_MAX, IDMVehicle.COMFORT_ACC_MIN) == before
    np.testing.assert_array_equal(trajectory(), first)


def test_every_key_a_scenario_gives_highway_env_is_one_it_reads():
    """merge gave merge-v0 vehicles_count and lanes_count, which it never reads: values that looked
    like settings and did nothing."""
    from sim.scenarios import _stock_config_keys

    for name, scenario in SCENARIOS.items():
        assert set(scenario.env_config) <= _stock_config_keys(scenario.env_id), name
