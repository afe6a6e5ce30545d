"""The one episode recorder and its actors: collection, evaluation, videos and training-time checks
drive the same engine, so an episode recorded one way equals the same episode recorded another."""
from __future__ import annotations

import json

import numpy as np
import pytest

from driving.baselines import ConstantPolicy, ExpertPolicy
from driving.config import load_config
from driving.data.collect import CollectConfig, collect
from driving.data.format import Dataset
from driving.envpool import build_env
from driving.errors import UserError
from driving.evaluate import ACTIONS_FILE, EvalConfig, evaluate, run_episodes
from driving.rollout import (EpisodeMismatch, ExpertActor, MixtureActor, ReplayActor, STATE_FACTS,
                             check_same_episode, play_episode)

CAM = {"height": 32, "width": 16, "metres_per_pixel": 1.0, "stack": 2, "rgb": False, "heading_up": True,
       "ego_row": 0.75}


def test_collection_equals_the_lockstep_engine_with_the_same_actor(tmp_path):
    """A collected episode (worker loop, batch 1) and the same seed driven by the evaluation's
    engine (pool, lock-step) with the same noisy expert: identical frames, actions and labels."""
    root = collect(load_config(CollectConfig, None, [f"out={tmp_path / 'ds'}", "episodes=2", "max_steps=12",
                                                     "workers=1", "seed=7", *(f"camera.{k}={v}" for k, v in
                                                                              CAM.items())]), progress=False)
    ds = Dataset.open(root)
    noise = CollectConfig().noise
    actor = ExpertActor(noise)
    records = run_episodes(actor, "highway", [7, 8], CAM, workers=2, max_steps=12, progress=False, keep_frames=True)
    for i, rec in enumerate(records):
        ep = ds.episode(i)
        assert np.array_equal(rec["frames"], ep["frames"])
        assert np.array_equal(rec["actions"], ep["action"])
        assert np.array_equal(rec["expert_actions"], ep["expert_action"])
        assert np.allclose(rec["steps"]["speed"][:-1], ep["speed"])
        assert not np.allclose(ep["action"], ep["expert_action"])  # noise was executed, labels are clean


def test_mixture_shares(tmp_path):
    env = build_env("highway", CAM, max_steps=10)
    try:
        coast = ConstantPolicy(0.0, -0.2)
        expert = play_episode(env, MixtureActor(coast, beta=1.0), seed=3)
        assert np.array_equal(expert["actions"], expert["expert_actions"])
        student = play_episode(env, MixtureActor(coast, beta=0.0), seed=3)
        assert np.all(student["actions"] == np.float32([0.0, -0.2]))
        half = play_episode(env, MixtureActor(coast, beta=0.5), seed=3)
        from_expert = np.all(half["actions"] == half["expert_actions"], axis=1)
        assert 0 < from_expert.sum() < len(from_expert)
        # the record keeps what the student chose at every step, and which steps the expert took
        assert np.all(half["student_actions"] == np.float32([0.0, -0.2]))
        assert np.array_equal(half["expert_chose"], from_expert)
        again = play_episode(env, MixtureActor(coast, beta=0.5), seed=3)
        assert np.array_equal(half["actions"], again["actions"])  # the coin is seeded per episode
        # takeover: whenever the two differ by more than 0.1 the expert drives
        taken = play_episode(env, MixtureActor(ConstantPolicy(1.0, 1.0), beta=0.0, takeover=0.1), seed=3)
        assert np.array_equal(taken["actions"], taken["expert_actions"])
    finally:
        env.close()
    with pytest.raises(ValueError, match="beta"):
        MixtureActor(coast, beta=1.5)


def test_record_holds_every_state_fact_once_per_state():
    env = build_env("highway", CAM, max_steps=6)
    try:
        rec = play_episode(env, ExpertPolicy(), seed=1, keep_frames=True)
    finally:
        env.close()
    assert set(rec["steps"]) == set(STATE_FACTS) - {"on_route"}  # highway names no route (sim/route.py)
    assert all(len(v) == 7 for v in rec["steps"].values())  # 6 actions, 7 states
    assert rec["actions"].shape == rec["expert_actions"].shape == (6, 2)
    assert rec["frames"].shape == (6, 32, 16) and rec["frames"].max() > 0
    assert rec["truncated"] and not rec["terminated"]


def test_replay_reproduces_an_episode_and_a_changed_row_is_refused():
    env = build_env("highway", CAM, max_steps=8)
    try:
        first = play_episode(env, ConstantPolicy(0.05, 0.3), seed=4)
        replayed = play_episode(env, ReplayActor(first["actions"]), seed=4)
        assert replayed["steps"]["progress"] == first["steps"]["progress"]
        row = {"steps": 8, "crashed": False, "distance_m": first["steps"]["progress"][-1]}
        check_same_episode(replayed, row, "seed 4")
        with pytest.raises(EpisodeMismatch, match="distance"):
            check_same_episode(replayed, {**row, "distance_m": row["distance_m"] + 1.0}, "seed 4")
        with pytest.raises(EpisodeMismatch, match="ran past"):
            play_episode(env, ReplayActor(first["actions"][:3]), seed=4)
    finally:
        env.close()


def test_eval_keeps_the_executed_actions_and_films_exactly_the_scored_episode(tmp_path, capsys):
    from driving.video_cli import video_command

    out = tmp_path / "ev"
    cfg = load_config(EvalConfig, None, [f"out={out}", "episodes=2", "max_steps=6", "videos=0", "workers=1",
                                         "env.vehicles_density=2.0"])
    evaluate("expert", cfg, progress=False)
    with np.load(out / ACTIONS_FILE) as z:
        assert sorted(z.files) == sorted(f"highway__{s}__{w}" for s in (1_000_000, 1_000_001)
                                         for w in ("policy", "expert"))
        assert z["highway__1000000__policy"].shape == (6, 2)
    made = video_command(str(out), ["count=1", "saliency=none"])  # uses the evaluation's env overrides
    assert len(made) == 1 and made[0].stat().st_size > 0
    # keys that would be dropped without a word: each is named
    assert len(video_command(str(out), ["count=5", "saliency=gradcam", f"out={out / 'more'}"])) == 2
    err = capsys.readouterr().err
    assert f"count=5, and {out} holds 2 episodes of the policy: filming all 2" in err
    assert "saliency=gradcam needs a network; the expert has none" in err
    with pytest.raises(UserError, match=r"seeds=\[\] lists none"):
        video_command(str(out), ["seeds=[]"])
    # bad keys are one line each, before anything is filmed
    for bad, words in ((["saliency=bogus"], "saliency must be vbp, gradcam or none"), (["count=-1"], "count must be >= 1"),
                       (["scenario=nope"], "scenario 'nope' is not in"), (["who=driver"], "who must be policy or expert")):
        with pytest.raises(UserError, match=words):
            video_command(str(out), bad)
    # a scored row that the re-simulation does not reproduce is an error, not a wrong video
    data = json.loads((out / "eval.json").read_text())
    for row in data["scenarios"]["highway"]["episodes"]["policy"]:
        row["distance_m"] += 5.0
    (out / "eval.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="does not match its scored row"):
        video_command(str(out), ["count=1", "saliency=none"])


def test_metrics_are_written_before_the_videos(tmp_path, monkeypatch):
    from driving import video

    def broken(*a, **k):
        raise OSError("disk full while encoding")

    monkeypatch.setattr(video, "policy_episode_video", broken)
    out = tmp_path / "ev"
    cfg = load_config(EvalConfig, None, [f"out={out}", "episodes=1", "max_steps=4", "videos=1", "workers=1"])
    with pytest.raises(OSError):
        evaluate("expert", cfg, progress=False)
    data = json.loads((out / "eval.json").read_text())
    assert data["aggregate"]["policy"]["driving_score"]["mean"] == 1.0 and data["videos"] == []
