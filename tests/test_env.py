"""DrivingEnv: the gymnasium contract, seeding, info, termination and truncation."""
from __future__ import annotations

import dataclasses
import warnings

import gymnasium
import numpy as np
import pytest

import sim
from sim import DrivingEnv, get_scenario

INFO_KEYS = {"step", "time", "crashed", "on_road", "progress", "lane_offset", "speed", "heading",
             "x", "y", "lane", "collision"}


def test_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    env = DrivingEnv("highway", camera={"height": 48, "width": 32, "stack": 2})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any checker warning fails the test...
            # ...except this one: the env was not built through gymnasium.make.
            warnings.filterwarnings("ignore", message=".*alternative render modes.*")
            check_env(env, skip_render_check=True)
    finally:
        env.close()


def test_gymnasium_make_after_import_sim():
    assert sim.ENV_ID == "sim/Driving-v0" and sim.ENV_ID in gymnasium.registry
    env = gymnasium.make(sim.ENV_ID, scenario="merge", camera={"height": 32, "width": 48, "stack": 3},
                         expert=False)
    try:
        obs, info = env.reset(seed=0)
        assert env.unwrapped.scenario.name == "merge"
        assert obs["camera"].shape == (3, 32, 48)
        obs, reward, terminated, truncated, info = env.step(np.zeros(2, dtype=np.float32))
        assert env.observation_space.contains(obs)
    finally:
        env.close()


def test_observation_and_action_spaces(make_env):
    env = make_env("highway", camera={"height": 40, "width": 24, "stack": 2})
    assert env.action_space.shape == (2,)
    np.testing.assert_array_equal(env.action_space.low, [-1, -1])
    np.testing.assert_array_equal(env.action_space.high, [1, 1])
    obs, _ = env.reset(seed=1)
    assert set(obs) == {"camera", "speed"}
    assert obs["speed"].dtype == np.float32 and obs["speed"].shape == ()
    assert float(obs["speed"]) == pytest.approx(env.ego.speed)
    assert env.observation_space.contains(obs)
    assert env.metadata["render_fps"] == env.scenario.policy_frequency


def _rollout(env, seed, n=20):
    obs, info = env.reset(seed=seed)
    frames, traj = [obs["camera"]], [(info["x"], info["y"], info["heading"], info["speed"])]
    others = np.array([v.position for v in env.road.vehicles if v is not env.ego])
    for i in range(n):
        action = np.array([0.3 * np.sin(i / 3), 0.5 * np.cos(i / 4)])
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(obs["camera"])
        traj.append((info["x"], info["y"], info["heading"], info["speed"]))
        if terminated or truncated:
            break
    return np.array(frames), np.array(traj), others


@pytest.mark.parametrize("name", ["highway", "intersection"])
def test_same_seed_same_episode(make_env, name):
    env = make_env(name)
    f1, t1, o1 = _rollout(env, seed=3)
    f2, t2, o2 = _rollout(env, seed=3)  # same env, after another episode
    f3, t3, o3 = _rollout(make_env(name), seed=3)  # a fresh env
    assert len(t1) > 5
    for f, t, o in [(f2, t2, o2), (f3, t3, o3)]:
        np.testing.assert_array_equal(f, f1)
        np.testing.assert_array_equal(t, t1)
        np.testing.assert_array_equal(o, o1)


def test_different_seeds_different_traffic(make_env):
    env = make_env("highway")
    _, _, o1 = _rollout(env, seed=3, n=0)
    _, _, o2 = _rollout(env, seed=4, n=0)
    assert o1.shape[1] == 2 and len(o1) > 0
    assert o1.shape != o2.shape or not np.allclose(o1, o2)


def test_unseeded_reset_follows_the_seeded_one(make_env):
    env = make_env("highway")
    env.reset(seed=7)
    a, _ = env.reset()
    env.reset(seed=7)
    b, _ = env.reset()
    np.testing.assert_array_equal(a["camera"], b["camera"])


def test_info_contents(make_env):
    env = make_env("highway", expert=True)
    _, info = env.reset(seed=0)
    for i in range(4):
        assert INFO_KEYS <= set(info)
        assert info["step"] == i
        assert info["time"] == pytest.approx(i / env.scenario.policy_frequency)
        ea = info["expert_action"]
        assert isinstance(ea, np.ndarray) and ea.shape == (2,)
        assert np.all(np.isfinite(ea)) and np.all(np.abs(ea) <= 1.0)
        assert isinstance(info["crashed"], bool) and isinstance(info["on_road"], bool)
        for k in ("progress", "lane_offset", "speed", "heading", "x", "y", "time"):
            assert isinstance(info[k], float), k
        ego = env.ego
        assert (info["x"], info["y"]) == (float(ego.position[0]), float(ego.position[1]))
        assert info["speed"] == float(ego.speed) and info["heading"] == float(ego.heading)
        _, _, _, _, info = env.step(ea)


def test_no_expert_means_no_expert_action(make_env):
    env = make_env("highway", expert=False)
    _, info = env.reset(seed=0)
    assert "expert_action" not in info and INFO_KEYS <= set(info)


def test_progress_and_reward_follow_forward_motion(make_env):
    env = make_env("highway")
    _, info = env.reset(seed=0)
    x0, progress, total = info["x"], info["progress"], 0.0
    assert progress == 0.0
    for _ in range(5):
        _, reward, _, _, info = env.step(np.array([0.0, 0.5]))
        assert info["progress"] > progress
        assert reward == pytest.approx(info["progress"] - progress)
        progress, total = info["progress"], total + reward
    # A straight lane along +x: progress is the distance travelled along x.
    assert progress == pytest.approx(info["x"] - x0, rel=1e-6)
    assert progress == pytest.approx(total)
    assert info["on_road"] and not info["crashed"]
    assert info["lane_offset"] == pytest.approx(0.0, abs=1e-6)


def test_lane_offset_and_off_road_do_not_end_the_episode(make_env):
    env = make_env("highway")
    _, info = env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.5, 0.0]))
    assert info["lane_offset"] > 0.05  # steered right (+y): positive lateral offset
    for _ in range(6):  # keep steering right until well off the road
        _, _, terminated, truncated, info = env.step(np.array([1.0, 0.0]))
        assert not terminated and not truncated
    assert not info["on_road"]


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((1, 2)), np.float64(0.5), np.zeros(0), [0.1]])
def test_wrong_action_shape_raises(make_env, bad):
    env = make_env("highway")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(bad)


def test_non_finite_action_raises(make_env):
    env = make_env("highway")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))


def test_truncation_at_max_steps(make_env):
    short = dataclasses.replace(get_scenario("highway"), max_steps=5)
    env = make_env(short)
    env.reset(seed=0)
    for i in range(1, 6):
        _, _, terminated, truncated, info = env.step(np.zeros(2))
        assert not terminated
        assert truncated == (i == 5), f"step {i}"
    # A new episode starts counting again.
    env.reset(seed=1)
    _, _, _, truncated, info = env.step(np.zeros(2))
    assert not truncated and info["step"] == 1


def test_crash_terminates(make_env):
    """A stopped obstacle 15 m ahead in the ego's lane, full throttle: a crash within a few steps."""
    from highway_env.vehicle.objects import Obstacle

    env = make_env("highway")
    env.reset(seed=0)
    ego = env.ego
    lane = env.road.network.get_lane(ego.lane_index)
    s, _ = lane.local_coordinates(ego.position)
    env.road.objects.append(Obstacle(env.road, lane.position(s + 15.0, 0.0), lane.heading_at(s + 15.0)))
    for _ in range(5):
        _, _, terminated, truncated, info = env.step(np.array([0.0, 1.0]))
        if terminated:
            break
    assert terminated and info["crashed"]
    assert not truncated


def test_spec_dict(make_env):
    env = make_env("roundabout", camera={"height": 40, "width": 24}, expert=True)
    spec = env.spec_dict()
    assert spec["scenario"]["name"] == "roundabout"
    assert spec["camera"]["height"] == 40 and spec["camera"]["width"] == 24
    assert spec["action"]["order"] == ["steer", "accel"]
    assert spec["expert"]["target_speed"] == get_scenario("roundabout").expert["target_speed"]


def test_render_rgb_array_returns_an_image(make_env):
    """metadata declares render_modes ['rgb_array'], so render() must return an image.

    Currently fails: DrivingEnv never passes render_mode to the core env, whose render() then asserts
    `self.spec is not None` (the core env is not built through gymnasium.make) and raises.
    """
    env = make_env("highway", render_mode="rgb_array")
    env.reset(seed=0)
    image = env.render()
    assert isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
    assert image.dtype == np.uint8


def test_scene_camera_renders_every_simulation_substep(make_env):
    """Videos show every substep: the scene camera's frames per step = sim freq / policy freq."""
    env = make_env("racetrack", scene_camera={"height": 48, "width": 48, "rgb": True, "heading_up": False})
    substeps = env.scenario.simulation_frequency // env.scenario.policy_frequency
    assert substeps > 1
    _, info = env.reset(seed=0)
    assert info["scene_frames"].shape == (1, 48, 48, 3)
    _, _, _, _, info = env.step([0.2, 0.5])
    scene = info["scene_frames"]
    assert scene.shape == (substeps, 48, 48, 3)
    assert all(not np.array_equal(scene[i], scene[i + 1]) for i in range(substeps - 1))


def test_scene_camera_does_not_change_the_simulation(make_env):
    plain = make_env("highway")
    filmed = make_env("highway", scene_camera={"height": 32, "width": 32})
    for env in (plain, filmed):
        env.reset(seed=4)
    for _ in range(5):
        a = plain.step([0.1, 0.3])[0]
        b = filmed.step([0.1, 0.3])[0]
        np.testing.assert_array_equal(a["camera"], b["camera"])
    np.testing.assert_array_equal(plain.ego.position, filmed.ego.position)


def _drive_into(env, placed, steps=8):
    """Only `placed` (builders of road users, given the road and the ego's lane position) beside the
    ego, full throttle straight on: the info of the last step."""
    env.reset(seed=0)
    ego = env.ego
    lane = env.road.network.get_lane(ego.lane_index)
    s, _ = lane.local_coordinates(ego.position)
    env.road.vehicles[:] = [ego] + [make(env.road, lane, s) for make in placed]
    info = {}
    for _ in range(steps):
        _, _, terminated, _, info = env.step(np.array([0.0, 1.0]))
        if terminated:
            break
    return info


@pytest.mark.parametrize("kind", ["moving", "stopped", "wreck", "object", "object beside a far wreck"])
def test_a_collision_says_what_the_ego_hit(make_env, kind):
    """A car 15 m ahead in the ego's lane under way at 5 m/s, standing, two cars crashed into each
    other there before the ego arrives, or an obstacle: each collision is told apart."""
    from highway_env.vehicle.kinematics import Vehicle
    from highway_env.vehicle.objects import Obstacle

    def car(speed, ahead=15.0, crashed=False):
        def make(road, lane, s):
            v = Vehicle(road, lane.position(s + ahead, 0.0), lane.heading_at(s + ahead), speed)
            v.crashed = crashed
            return v
        return make

    env = make_env("highway")
    if kind.startswith("object"):
        env.reset(seed=0)
        ego = env.ego
        lane = env.road.network.get_lane(ego.lane_index)
        s, _ = lane.local_coordinates(ego.position)
        env.road.vehicles[:] = [ego]
        if kind != "object":  # a wreck 200 m behind was named as what the ego hit
            env.road.vehicles.append(car(0.0, ahead=-200.0, crashed=True)(env.road, lane, s))
            kind = "object"
        env.road.objects.append(Obstacle(env.road, lane.position(s + 15.0, 0.0), lane.heading_at(s + 15.0)))
        for _ in range(8):
            _, _, terminated, _, info = env.step(np.array([0.0, 1.0]))
            if terminated:
                break
    else:
        placed = {"moving": [car(5.0)], "stopped": [car(0.0)],
                  "wreck": [car(0.0, crashed=True), car(0.0, ahead=17.0, crashed=True)]}[kind]
        info = _drive_into(env, placed)
    assert info["crashed"] and info["collision"] == kind


def test_no_collision_no_kind_and_the_steps_before_a_crash_have_none(make_env):
    env = make_env("highway")
    _, info = env.reset(seed=0)
    assert info["collision"] == ""
    _, _, _, _, info = env.step(np.array([0.0, 0.0]))
    assert not info["crashed"] and info["collision"] == ""
