"""Rollout videos (driving/video.py): recording, composition, H.264 files, dataset replay."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import sim
from driving import video
from driving.baselines import ConstantPolicy, ExpertPolicy
from driving.data.format import Dataset, DatasetError, episode_filename, read_episode_file, write_episode
from driving.errors import UserError
from sim import CameraConfig

SCENE = CameraConfig(height=96, width=64, metres_per_pixel=0.5, stack=1, rgb=True, heading_up=False,
                     ego_row=0.6)
CAMERA = {"height": 64, "width": 32, "stack": 2}


def _scenario(max_steps=6):
    return dataclasses.replace(sim.get_scenario("highway"), max_steps=max_steps)


@pytest.fixture
def env_factory():
    envs = []

    def make(max_steps=6, expert=True, camera=None):
        env = sim.DrivingEnv(_scenario(max_steps), camera=camera or CAMERA, expert=expert, scene_camera=SCENE)
        envs.append(env)
        return env

    yield make
    for e in envs:
        e.close()


class _WithObstacle:
    """Env proxy: a stationary obstacle 15 m ahead of the ego in its lane after every reset."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, seed=None):
        from highway_env.vehicle.objects import Obstacle

        out = self.env.reset(seed=seed)
        road = self.env.road
        road.objects.append(Obstacle(road, self.env.ego.position + np.array([15.0, 0.0])))
        return out


def _border(frame):
    """Colour of the frame's outer border (middle of the top edge)."""
    return frame[video.BORDER // 2, frame.shape[1] // 2].astype(int)


def _close(c, ref, tol=40):
    return bool(np.all(np.abs(np.asarray(c, int) - np.asarray(ref, int)) <= tol))


def test_expert_rollout_writes_a_browser_mp4(env_factory, tmp_path):
    env = env_factory(max_steps=6)
    r = video.record_rollout(env, ExpertPolicy(), seed=3)
    n = env.scenario.simulation_frequency // env.scenario.policy_frequency
    t = len(r["action"])
    assert t == 6 and r["substeps"] == n and r["fps"] == env.scenario.simulation_frequency
    assert r["scene"].shape == (1 + t * n, 96, 64, 3)
    assert r["camera"].shape == (t, 2, 64, 32)
    np.testing.assert_array_equal(r["action"], r["expert_action"])
    assert len(r["speed"]) == len(r["crashed"]) == len(r["on_road"]) == t + 1
    assert "saliency" not in r

    frames = list(video.compose_frames(r))
    assert len(frames) == 1 + t * n
    h, w = frames[0].shape[:2]
    assert h % 2 == 0 and w % 2 == 0 and frames[0].dtype == np.uint8

    path = video.write_video(r, tmp_path / "out" / "seed3.mp4")
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["seed3.mp4"]  # no temp left
    info = video.probe_video(path, decode=True)
    assert info["codec"] == "h264" and info["codec_tag"] == "avc1" and info["pix_fmt"] == "yuv420p"
    assert info["frames"] == 1 + t * n
    assert (info["width"], info["height"]) == (w, h)
    assert info["fps"] == pytest.approx(env.scenario.simulation_frequency)
    data = info["data"]
    assert all(np.abs(data[i + 1].astype(int) - data[i]).mean() > 0.05 for i in range(len(data) - 1))
    # what was decoded is what was composed, colours in the right order (lossy: close, not equal)
    for i in (0, len(data) - 1):
        assert np.abs(data[i].astype(int) - frames[i]).mean() < 4


def test_a_crash_is_marked_and_held(env_factory):
    env = _WithObstacle(env_factory(max_steps=8, expert=False))
    r = video.record_rollout(env, ConstantPolicy(0.0, 1.0), seed=0)
    assert r["crashed"][-1] and len(r["action"]) < 8  # the crash ended the episode
    first = int(np.argmax(r["crashed"])) * r["substeps"]  # first frame showing a crashed state
    frames = list(video.compose_frames(r))
    assert first > 0
    for k, f in enumerate(frames):
        assert _close(_border(f), video.CRASH_COLOUR) == (k >= first), k
    assert r["collision"] == "object"  # under the banner, what the ego hit
    unsaid = video.compose_frame({**r, "collision": ""}, len(frames) - 1)
    assert not np.array_equal(unsaid, frames[-1]) and np.array_equal(video.compose_frame(r, len(frames) - 1), frames[-1])


def test_off_road_is_marked(env_factory):
    env = env_factory(max_steps=12, expert=False)
    r = video.record_rollout(env, ConstantPolicy(1.0, 0.0), seed=1)
    off = ~r["on_road"]
    assert off.any() and not r["crashed"].any()
    frames = list(video.compose_frames(r))
    s = [video._status(r, k)[1] for k in range(len(frames))]
    for k, f in enumerate(frames):
        assert _close(_border(f), video.OFFROAD_COLOUR) == bool(off[s[k]]), k


def test_saliency_from_a_model_policy(env_factory, tmp_path):
    import torch

    from driving.models import InputSpec, ModelConfig, build_model
    from driving.policy import LoadedPolicy

    torch.manual_seed(0)
    cam = {**dataclasses.asdict(CameraConfig()), **CAMERA}
    model = build_model("pilotnet", ModelConfig(stack=2), InputSpec(64, 32, 1))
    policy = LoadedPolicy(model, {"camera": cam}, torch.device("cpu"), tmp_path / "ckpt")
    env = env_factory(max_steps=3)
    for method in ("vbp", "gradcam"):
        r = video.record_rollout(env, policy, seed=0, saliency_method=method)
        assert r["saliency"].shape == (3, 64, 32)
        assert r["saliency"].min() >= 0 and r["saliency"].max() <= 1 and r["saliency_method"] == method
    plain = dict(r, saliency_method=None)
    del plain["saliency"]
    with_map, without = video.compose_frame(r, 1), video.compose_frame(plain, 1)
    assert with_map.shape == without.shape and not np.array_equal(with_map, without)
    # a policy without a model gets no map; a bad method name is refused
    assert "saliency" not in video.record_rollout(env, ExpertPolicy(), seed=0, saliency_method="vbp")
    with pytest.raises(ValueError, match="saliency method"):
        video.record_rollout(env, ExpertPolicy(), seed=0, saliency_method="lime")


def test_record_needs_a_scene_camera():
    env = sim.DrivingEnv(_scenario(), camera=CAMERA, expert=False)
    try:
        with pytest.raises(ValueError, match="scene_camera"):
            video.record_rollout(env, ConstantPolicy(), seed=0)
    finally:
        env.close()


def test_failed_write_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((32, 48, 3), np.uint8)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        video.encode_mp4(frames(), tmp_path / "x.mp4", fps=10)
    with pytest.raises(ValueError, match="even"):
        video.encode_mp4([np.zeros((33, 48, 3), np.uint8)], tmp_path / "x.mp4", fps=10)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from driving.data.collect import CollectConfig, collect

    root = tmp_path_factory.mktemp("ds") / "highway"
    cfg = CollectConfig(scenario="highway", episodes=2, workers=1, seed=5, out=str(root), max_steps=5,
                        camera=CameraConfig(height=64, width=32, stack=2))
    return collect(cfg, progress=False)


def test_dataset_replay_equals_the_recording(dataset, tmp_path):
    ds = Dataset.open(dataset)
    ep = ds.episode(1)
    r = video.replay_episode(dataset, 1, scene_camera=SCENE)
    np.testing.assert_array_equal(r["camera"][:, -1], ep["frames"])
    np.testing.assert_array_equal(r["action"], ep["action"])
    np.testing.assert_array_equal(r["expert_action"], ep["expert_action"])
    np.testing.assert_allclose(r["speed"][:-1], ep["speed"], rtol=1e-6)
    assert r["labels"] == ("executed", "expert")

    paths = video.video_for_dataset(dataset, tmp_path / "v", episodes=[0, 1], scene_camera=SCENE)
    assert [p.name for p in paths] == ["episode_000000.mp4", "episode_000001.mp4"]
    n = r["substeps"]
    for p, row in zip(paths, ds.index):
        info = video.probe_video(p)
        assert info["codec"] == "h264" and info["frames"] == 1 + row["length"] * n


def test_dataset_replay_errors(dataset, tmp_path):
    import shutil

    with pytest.raises(UserError, match="no episode 7"):
        video.replay_episode(dataset, 7, scene_camera=SCENE)
    with pytest.raises(UserError, match="no episode 7"):
        video.video_for_dataset(dataset, tmp_path / "v", episodes=[0, 7], scene_camera=SCENE)
    assert not (tmp_path / "v").exists()

    # a recording the simulation no longer reproduces is named, with the step
    bad = tmp_path / "bad"
    shutil.copytree(dataset, bad)
    arrays, summary = read_episode_file(bad / episode_filename(0))
    arrays["frames"][3] = 255 - arrays["frames"][3]
    row = write_episode(bad, 0, arrays, summary)
    index = json.loads((bad / "index.json").read_text())
    index[0] = row  # a rewritten episode needs its new checksum in the index
    (bad / "index.json").write_text(json.dumps(index))
    with pytest.raises(DatasetError, match="diverged .* at step 3"):
        video.replay_episode(bad, 0, scene_camera=SCENE)

    from tests.helpers import synthetic_dataset

    syn = synthetic_dataset(tmp_path / "syn")
    with pytest.raises(DatasetError, match="driving collect"):
        video.replay_episode(syn, 0, scene_camera=SCENE)

    # a value a later version refuses (episodes longer than its max_steps cap) is named as such
    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    meta = json.loads((old / "meta.json").read_text())
    meta["config"]["max_steps"] = 200_000
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="config this version refuses .*max_steps must be in 1..100,000") as e:
        video.replay_episode(old, 0, scene_camera=SCENE)
    assert "only datasets made by" not in str(e.value)
    meta["config"]["max_steps"], meta["config"]["episodes"] = 5, "many"  # not a collect config: as before
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="holds no collect config .* only datasets made by"):
        video.replay_episode(old, 0, scene_camera=SCENE)


def test_a_long_title_is_wrapped_within_the_scene_and_keeps_the_checkpoints_step():
    import cv2

    from driving.video import FONT, _fit_lines

    title = "highway  seed 1000002  /a/very/long/path/to/runs/demo/round2/run/checkpoints/00001000"
    lines = _fit_lines(title, 292, 0.45)
    assert lines[0] == "highway  seed 1000002" and lines[-1].endswith("checkpoints/00001000")
    assert all(cv2.getTextSize(line, FONT, 0.45, 1)[0][0] <= 292 for line in lines)
    assert _fit_lines("highway  seed 1", 292, 0.45) == ["highway  seed 1"]  # a short one stays one line
