"""The fair expert (expert.perception=camera): it perceives only road users inside the camera's
footprint and predicts them only from what frames show; `driving gap` measures the difference."""
from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

from sim.camera import CameraConfig, visible_fraction
from sim.expert import Expert, ExpertConfig
from sim.scenarios import get_scenario


def _car(x, y, heading=0.0):
    return SimpleNamespace(position=np.array([x, y], float), heading=heading, LENGTH=5.0, WIDTH=2.0)


def test_footprint_follows_the_camera_geometry():
    cam = CameraConfig(height=128, width=64, metres_per_pixel=1.0, ego_row=0.75)
    assert cam.footprint == (96.0, 32.0, 32.0)
    assert CameraConfig(height=100, width=40, metres_per_pixel=0.5, ego_row=0.5).footprint == (25.0, 25.0, 10.0)


def test_visible_fraction_inside_outside_and_across_the_edge():
    cam = CameraConfig(height=128, width=64, metres_per_pixel=1.0, ego_row=0.75)  # 96 ahead, 32 behind, +-32
    cars = [_car(50, 0), _car(120, 0), _car(-40, 0), _car(96, 0), _car(10, 40), _car(10, 32)]
    f = visible_fraction(cam, np.zeros(2), 0.0, cars)
    assert f[0] == 1.0 and f[1] == 0.0 and f[2] == 0.0 and f[4] == 0.0
    assert 0.0 < f[3] < 1.0  # half of it past the top edge
    assert 0.0 < f[5] < 1.0  # straddles the right edge (the ego's right is world +y at heading 0)


def test_visible_fraction_turns_with_the_ego_only_when_heading_up():
    car = [_car(60, 0)]  # 60 m along world +x
    up = CameraConfig(heading_up=True)
    north = CameraConfig(heading_up=False)
    heading = np.pi / 2  # the ego points along world +y: the car is 60 m to its left
    assert visible_fraction(up, np.zeros(2), heading, car)[0] == 0.0
    assert visible_fraction(north, np.zeros(2), heading, car)[0] == 1.0  # world +x is up in the frame


def _expert(scenario, perception, camera=None):
    sc = get_scenario(scenario)
    return Expert(ExpertConfig.from_dict({**sc.expert, "perception": perception}), sc.action,
                  camera=CameraConfig(**(camera or {})))


def _stopped_car_ahead(core, distance):
    """Put one other vehicle, stopped, `distance` m ahead of the ego in its lane; move the rest far away."""
    env = core.unwrapped
    ego = env.vehicle
    others = [v for v in env.road.vehicles if v is not ego]
    lane = env.road.network.get_lane(ego.lane_index)
    s, _ = lane.local_coordinates(ego.position)
    for k, v in enumerate(others):
        v.position = lane.position(s - 400.0 - 30.0 * k, 0.0)
    blocker = others[0]
    blocker.position = lane.position(s + distance, 0.0)
    blocker.heading = lane.heading_at(s + distance)
    blocker.speed = 0.0
    return blocker


def test_camera_expert_ignores_what_the_camera_cannot_show(make_core):
    core = make_core("highway", seed=3)
    _stopped_car_ahead(core, 70.0)
    short = {"height": 64, "width": 32, "metres_per_pixel": 1.0}  # 48 m ahead: the car is out of view
    long = {"height": 128, "width": 64, "metres_per_pixel": 1.0}  # 96 m ahead: in view
    actions = {}
    for name, perception, cam in [("privileged", "privileged", short), ("short", "camera", short),
                                  ("long", "camera", long)]:
        e = _expert("highway", perception, cam)
        e.config.lane_changes = False  # only the braking decision is compared
        e.reset(core)
        actions[name] = e.act(core)
    assert actions["privileged"][1] < -0.3  # a stopped car 70 m ahead at highway speed: brake
    assert actions["short"][1] > 0.0  # nothing in view: it keeps its speed up
    assert actions["long"][1] == pytest.approx(actions["privileged"][1], abs=1e-6)


def test_camera_expert_never_reads_routes_yielding_flags_or_driver_models(make_env):
    """Scrambling what no camera shows changes nothing the camera-perception expert says."""
    env = make_env("intersection", camera={"height": 128, "width": 64, "metres_per_pixel": 1.0},
                   expert=True)
    _, info = env.reset(seed=1003)
    checked = changed_privileged = 0
    for step in range(45):
        core, road = env.core, env.road
        others = [v for v in road.vehicles if v is not env.ego]
        if step % 3 == 0 and others:
            before = {}
            for name in ("camera", "privileged"):
                e = _expert("intersection", name, {"height": 128, "width": 64, "metres_per_pixel": 1.0})
                e.reset(core)
                before[name] = e.act(core)
            saved = [(v.route, v.target_speed, getattr(v, "is_yielding", False), v.COMFORT_ACC_MAX) for v in others]
            for v in others:
                v.route = [("o2", "ir2", None)]
                v.target_speed = 0.1
                v.is_yielding = not getattr(v, "is_yielding", False)
                v.COMFORT_ACC_MAX = 20.0
            after = {}
            for name in ("camera", "privileged"):
                e = _expert("intersection", name, {"height": 128, "width": 64, "metres_per_pixel": 1.0})
                e.reset(core)
                after[name] = e.act(core)
            for v, (route, target, yielding, acc) in zip(others, saved):
                v.route, v.target_speed, v.is_yielding, v.COMFORT_ACC_MAX = route, target, yielding, acc
            np.testing.assert_array_equal(before["camera"], after["camera"])
            checked += 1
            changed_privileged += not np.array_equal(before["privileged"], after["privileged"])
        _, _, terminated, truncated, info = env.step(info["expert_action"])
        if terminated or truncated:
            break
    assert checked >= 5
    assert changed_privileged >= 1  # the same scrambling does reach the privileged expert


def test_bad_perception_and_cameras_are_one_line_errors():
    with pytest.raises(ValueError, match="perception"):
        ExpertConfig(perception="lidar")
    with pytest.raises(ValueError, match="too coarse to show a vehicle"):
        CameraConfig(metres_per_pixel=4.0)
    with pytest.raises(ValueError, match="cannot be drawn"):
        CameraConfig(height=100000)
    with pytest.raises(ValueError, match="ahead"):
        CameraConfig(ego_row=0.02)


@pytest.mark.parametrize("args, needle", [
    (["collect", "expert.perception=lidar", "episodes=1"], "perception"),
    (["collect", "camera.metres_per_pixel=5", "episodes=1"], "too coarse"),
    (["gap", "scenario=nope"], "unknown scenario"),
    (["gap", "expert.bogus=1"], "bogus"),
    (["gap", "camera.height=99999"], "cannot be drawn"),
])
def test_cli_user_errors_are_one_line(args, needle, tmp_path, capsys, monkeypatch):
    from driving.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_gap_command_prints_the_contract_line_and_json(capsys):
    from driving.cli import main

    assert main(["gap", "scenario=highway", "episodes=1", "max_steps=15", "workers=1", "-q"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"label disagreement: accel \d+\.\d% steer \d+\.\d%", out[-1])
    assert main(["gap", "scenario=highway", "episodes=1", "max_steps=15", "workers=1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["steps"] == 15
    assert 0.0 <= r["accel_disagreement"] <= 1.0 and 0.0 <= r["steer_disagreement"] <= 1.0
    assert set(r["scenarios"]) == {"highway"}


def test_gap_shrinks_when_the_camera_shows_more():
    from driving.gap import GapConfig, measure_gap

    def gap(camera):
        cfg = GapConfig(scenario="highway", episodes=2, max_steps=40, workers=1, camera=camera)
        return measure_gap(cfg, progress=False)

    small = gap({"height": 32, "width": 16, "metres_per_pixel": 1.0})  # 24 m ahead, +-8 m
    large = gap({"height": 256, "width": 160, "metres_per_pixel": 1.0})  # 192 m ahead, +-80 m
    assert small["accel_disagreement"] > 0.2
    assert large["accel_disagreement"] < small["accel_disagreement"] / 4


def test_dataset_and_checkpoint_record_the_labelling_perception(tmp_path):
    from driving.config import load_config
    from driving.data.collect import CollectConfig, collect
    from driving.data.format import Dataset
    from driving.train import TrainConfig, train

    for perception in ("camera", "privileged"):
        cfg = load_config(CollectConfig, None, [f"out={tmp_path / perception}", "episodes=1", "max_steps=6",
                                                "workers=1", f"expert.perception={perception}",
                                                "camera.height=64", "camera.width=32"])
        root = collect(cfg, progress=False)
        assert Dataset.open(root).meta["expert"]["perception"] == perception
    tcfg = load_config(TrainConfig, None, [f"dataset={tmp_path / 'privileged'}", f"out={tmp_path / 'run'}",
                                           "steps=1", "batch_size=4", "val_fraction=0", "val_every=1",
                                           "checkpoint_every=1", "wandb.mode=disabled", "device=cpu"])
    train(tcfg, progress=False)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last" / "policy.json").read_text())
    assert meta["expert_perception"] == "privileged"


def test_a_predicted_car_stays_beside_its_lane_until_it_drives_back(make_core):
    """A car off its lane centre is predicted where the camera sees it, not snapped onto the lane
    (a crashed car beside the ring once held the roundabout expert up for the rest of the episode)."""
    core = make_core("highway")
    env = core.unwrapped
    ego = env.vehicle
    other = next(v for v in env.road.vehicles if v is not ego)
    lane = env.road.network.get_lane(other.lane_index)
    s, _ = lane.local_coordinates(other.position)
    other.position = lane.position(s, 1.5)  # 1.5 m to the side of its lane centre
    other.heading = lane.heading_at(s)
    expert = _expert("highway", "camera")
    expert.reset(core)
    net = env.road.network
    times = np.array([0.0, 0.5, 3.0])
    other.speed, other.action = 0.0, {"acceleration": 0.0, "steering": 0.0}
    for pred in expert._predict(net, other, times):  # stopped: where it is, all along
        assert np.allclose(pred, other.position, atol=1e-6)
    other.speed = 10.0
    pred = expert._predict(net, other, times)[0]
    assert np.allclose(pred[0], other.position, atol=1e-6)
    assert np.allclose(pred[-1], lane.position(s + 30.0, 0.0), atol=0.05)  # 30 m on: back on the centre


def test_roundabout_camera_expert_drives_past_a_car_stopped_beside_the_ring():
    """Seed 1014: two entering cars collide and stop beside the ring; the fair expert used to wait
    behind them for the rest of the episode (53 m against the privileged expert's 96 m)."""
    from sim import DrivingEnv

    distance = {}
    for perception in ("camera", "privileged"):
        env = DrivingEnv("roundabout", camera={"stack": 1}, expert={"perception": perception})
        _, info = env.reset(seed=1014)
        done = False
        while not done:
            _, _, term, trunc, info = env.step(info["expert_action"])
            done = term or trunc
        assert not info["crashed"]
        distance[perception] = info["progress"]
        env.close()
    assert distance["camera"] > 0.9 * distance["privileged"]


def test_each_scenario_has_its_own_default_camera_under_the_users_keys(tmp_path):
    from driving.config import load_config
    from driving.data.collect import CollectConfig
    from sim import DrivingEnv

    inter = get_scenario("intersection").camera_config()
    assert (inter.height, inter.width) == (96, 96) and inter.footprint[2] == 48.0
    assert get_scenario("highway").camera_config() == CameraConfig()
    env = DrivingEnv("intersection", expert=False)
    try:
        assert env.observation_space["camera"].shape == (2, 96, 96)
        env.close()
        env = DrivingEnv("intersection", camera={"width": 64}, expert=False)  # a dict: overrides on it
        assert env.observation_space["camera"].shape == (2, 96, 64)
    finally:
        env.close()

    def camera(path=None, *over):
        c = load_config(CollectConfig, path, list(over)).camera
        return c.height, c.width, c.stack

    assert camera(None) == (128, 64, 2)  # highway
    assert camera(None, "scenario=intersection") == (96, 96, 2)
    assert camera(None, "scenario=intersection", "camera.width=64", "camera.stack=3") == (96, 64, 3)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("scenario: intersection\ncamera:\n  height: 128\n")
    assert camera(yaml) == (128, 96, 2)  # the file's key wins, the scenario's other keys stay
    assert camera(yaml, "scenario=highway") == (128, 64, 2)


def test_gap_uses_each_scenarios_camera_with_the_users_keys_on_top():
    from driving.gap import GapConfig, measure_gap

    r = measure_gap(GapConfig(scenario="roundabout,intersection", episodes=1, max_steps=3, workers=1),
                    progress=False)
    assert r["scenarios"]["roundabout"]["footprint_m"]["half_width"] == 32.0
    assert r["scenarios"]["intersection"]["footprint_m"]["half_width"] == 48.0
    r = measure_gap(GapConfig(scenario="roundabout,intersection", episodes=1, max_steps=3, workers=1,
                              camera={"metres_per_pixel": 0.5}), progress=False)
    assert r["scenarios"]["roundabout"]["footprint_m"]["half_width"] == 16.0
    assert r["scenarios"]["intersection"]["footprint_m"]["half_width"] == 24.0
