"""Closed-loop evaluation: fixed seeds, batching, determinism, outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from driving.baselines import ConstantPolicy
from driving.cli import main
from driving.config import load_config
from driving.errors import UserError
from driving.evaluate import EvalConfig, evaluate, run_episodes
from driving.train import TrainConfig, train
from tests.helpers import synthetic_dataset

CAM = {"height": 32, "width": 16, "metres_per_pixel": 0.5, "stack": 2, "rgb": False, "heading_up": True,
       "ego_row": 0.75}


def cfg(out, *extra) -> EvalConfig:
    return load_config(EvalConfig, None, [f"out={out}", "episodes=3", "max_steps=8", "videos=0",
                                          "workers=1", *extra])


def tiny_run(tmp_path, *extra):
    """The run folder of a checkpoint trained 2 steps on a synthetic dataset."""
    ds = synthetic_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    train(load_config(TrainConfig, None, [f"dataset={ds}", f"out={run}", "steps=2", "batch_size=4",
                                          "device=cpu", "wandb.mode=disabled", *extra]), progress=False)
    return run


class Recorder:
    """Wraps a policy; records the batch size of every call."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def act(self, obs):
        self.batches.append(len(obs["camera"]))
        return self.inner.act(obs)


def test_expert_evaluation_writes_eval_json_with_contract_keys(tmp_path):
    r = evaluate("expert", cfg(tmp_path / "e"), progress=False)
    data = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert data["seeds"]["highway"] == [1_000_000, 1_000_001, 1_000_002]
    for who in ("policy", "expert"):
        for key in ("driving_score", "success_rate", "collision_rate", "mean_speed"):
            assert key in data["aggregate"][who]
    rows = data["scenarios"]["highway"]["episodes"]["expert"]
    assert [row["seed"] for row in rows] == data["seeds"]["highway"]
    assert all(row["steps"] == 8 for row in rows)
    assert all(row["collision_with"] == "" for row in rows)
    report = (tmp_path / "e" / "report.md").read_text()
    assert report.count("| driving score |") == report.count("|   into a wreck |") == 1
    assert "<table>" in (tmp_path / "e" / "report.html").read_text()
    assert r["result"]["aggregate"]["expert"]["collision_rate"]["mean"] == 0.0


def test_the_expert_is_evaluated_and_filmed_with_each_scenarios_own_camera(tmp_path):
    r = evaluate("expert", cfg(tmp_path / "e", "scenario=highway,intersection", "episodes=1", "videos=2"),
                 progress=False)["result"]
    assert r["camera"] is None
    cams = r["scenario_cameras"]
    assert (cams["highway"]["height"], cams["highway"]["width"]) == (128, 64)
    assert (cams["intersection"]["height"], cams["intersection"]["width"]) == (96, 96)
    # filmed with no policy camera given: each video builds its scenario's own
    assert sorted(v["scenario"] for v in r["videos"]) == ["highway", "intersection"]


def test_a_finished_evaluation_is_found_whatever_number_of_videos_it_could_film(tmp_path, monkeypatch):
    """dagger and the scoreboard skip an evaluation that finished: with videos=2 over two scenarios of one
    episode each it films 2 (not min(videos, episodes) = 1), and without video support none."""
    import driving.evaluate as ev

    ckpt = str(tiny_run(tmp_path) / "checkpoints" / "last")
    c = cfg(tmp_path / "two", "scenario=highway,merge", "episodes=1", "videos=2")
    r = evaluate(ckpt, c, progress=False)["result"]
    assert len(r["videos"]) == 2
    assert ev.finished_evaluation(ckpt, c) is not None
    assert ev.finished_evaluation(ckpt, cfg(tmp_path / "two", "scenario=highway,merge", "episodes=1")) is None
    monkeypatch.setattr(ev, "render_videos", lambda *a, **k: [])  # video support not installed
    c = cfg(tmp_path / "none", "episodes=1", "videos=1")
    evaluate(ckpt, c, progress=False)
    assert ev.finished_evaluation(ckpt, c) is not None


def test_same_seeds_same_results_whatever_the_number_of_workers(tmp_path):
    evaluate("expert", cfg(tmp_path / "a"), progress=False)
    evaluate("expert", cfg(tmp_path / "b"), progress=False)
    evaluate("expert", cfg(tmp_path / "c", "workers=2"), progress=False)
    a, b, c = ((tmp_path / n / "eval.json").read_text() for n in "abc")
    # same config (but for the output folder), same bytes
    assert a.replace(str(tmp_path / "a"), "OUT") == b.replace(str(tmp_path / "b"), "OUT")
    ja, jc = json.loads(a), json.loads(c)
    assert ja["scenarios"] == jc["scenarios"]


def test_envs_step_at_their_own_pace():
    """A slow episode holds up no other env: the policy acts on whichever envs have answered, so
    three fast envs finish five episodes while one env is still in its slow one."""
    from driving.envpool import EnvPool
    from tests.helpers import SlowSeedEnv

    rec = Recorder(ConstantPolicy(0.0, 0.0))
    done = []
    kwargs = {"factory": SlowSeedEnv, "obs_shape": (2, 32, 16), "slow_seed": 5, "slow_s": 0.1,
              "fast_s": 0.001, "length": 6}
    with EnvPool(4, kwargs) as pool:
        records = run_episodes(rec, "highway", [5, 6, 7, 8, 9, 10], None, 4, progress=False, pool=pool,
                               on_record=lambda r: done.append(r["seed"]) or r)
    assert [r["seed"] for r in records] == [5, 6, 7, 8, 9, 10]  # in seed order, whoever ran them
    assert done[-1] == 5 and sorted(done[:-1]) == [6, 7, 8, 9, 10]
    assert max(rec.batches) <= 4
    assert sum(rec.batches) == sum(len(r["actions"]) for r in records) == 36


@pytest.mark.parametrize("workers, per_worker", [(1, 1), (2, 1), (2, 2)])
def test_an_exception_while_stepping_is_one_user_error_naming_it(workers, per_worker):
    """In a worker process (with one env or two) or in this one: one UserError with the error and where
    it was raised."""
    from driving.envpool import EnvPool
    from tests.helpers import FailingEnv

    kwargs = {"factory": FailingEnv, "obs_shape": (2, 32, 16), "fail_at": 3, "length": 6}
    with EnvPool(workers, kwargs, per_worker) as pool:
        with pytest.raises(UserError, match=r"a simulation step failed: ZeroDivisionError: float division by zero "
                                            r"\(at helpers\.py:\d+\)"):
            run_episodes(ConstantPolicy(0.0, 0.0), "highway", [0, 1], None, workers, progress=False, pool=pool)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_policy_that_gives_nan_is_one_user_error_naming_seed_and_step(workers):
    class NanAfter:
        name = "nan"
        calls = 0

        def act(self, batch):
            self.calls += 1  # a diverging policy: NaN from its fifth call on
            return np.full((len(batch["speed"]), 2), np.nan if self.calls >= 5 else 0.0, np.float32)

    with pytest.raises(UserError, match=r"non-finite action \[nan, nan\] on highway, seed 1000000, step 4:"):
        run_episodes(NanAfter(), "highway", [1_000_000], None, workers, max_steps=30, progress=False)


def test_ctrl_c_stops_pool_workers_at_once_though_they_ignore_it():
    """Workers ignore SIGINT (no tracebacks of their own): the command stops them instead of waiting
    for the jobs they are running."""
    import signal
    import time

    from driving.envpool import run_in_workers, worker_setup
    from tests.helpers import sleep_job

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    t = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        with pytest.raises(KeyboardInterrupt):
            list(run_in_workers(sleep_job, [60.0, 60.0], 2, "test", worker_setup))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - t < 20  # not the 60 s the jobs would take


def test_the_probe_blames_only_values_the_user_gave(monkeypatch):
    """A failure building the env with the user's env.*/expert.* values is one line naming where; with
    none given it is a bug, and keeps its traceback."""
    import driving.envpool as envpool

    def broken(*a, **k):
        raise KeyError("missing")

    monkeypatch.setattr(envpool, "build_env", broken)
    with pytest.raises(KeyError):
        envpool.probe_env("highway", None)
    with pytest.raises(UserError, match=r"bad config for scenario highway: KeyError: 'missing' \(at test_evaluate"):
        envpool.probe_env("highway", None, env={"lanes_count": 3})


@pytest.mark.parametrize("per_worker", [1, 2])
def test_a_dead_environment_worker_is_one_user_error(per_worker):
    """A worker killed mid-evaluation (out of memory, say): one UserError naming it, not EOFError."""
    from driving.envpool import EnvPool, SleepingEnv

    kwargs = {"factory": SleepingEnv, "obs_shape": (2, 32, 16), "step_s": [0.001], "reset_s": [0.0],
              "length": 50}
    with EnvPool(2 * per_worker, kwargs, per_worker) as pool:
        pool.envs[1].remote.proc.kill()
        with pytest.raises(UserError, match=r"a simulation worker process died \(it was killed by SIGKILL"):
            run_episodes(ConstantPolicy(0.0, 0.0), "highway", [1, 2, 3], None, 2, progress=False, pool=pool)


def test_envs_share_worker_processes_and_every_answer_reaches_its_env():
    """envs_per_worker: n envs in ceil(n / k) processes, the first ones in different processes; while one
    env of a process waits for its action the other steps, and every answer reaches its own env."""
    from driving.envpool import EnvPool
    from tests.helpers import SeedEchoEnv

    kwargs = {"factory": SeedEchoEnv, "obs_shape": (2, 32, 16), "step_s": 0.002}
    seeds = list(range(3, 23))
    with EnvPool(5, kwargs, 2) as pool:
        assert pool.workers == 3
        assert [pool.remotes.index(e.remote) for e in pool.envs] == [0, 1, 2, 0, 1]
        records = run_episodes(ConstantPolicy(0.0, 0.0), "highway", seeds, None, 3, progress=False, pool=pool,
                               keep_frames=True)
    assert [r["seed"] for r in records] == seeds
    assert [len(r["actions"]) for r in records] == [3 + s % 5 for s in seeds]
    assert all((r["frames"] == r["seed"]).all() for r in records)


def test_open_pool_puts_no_more_envs_than_episodes_and_uses_every_worker_it_may():
    """Fewer episodes than workers x envs_per_worker: one env a process on as many processes as there
    are envs (two envs packed in one process while another core idles would halve its speed)."""
    from driving.evaluate import open_pool

    with open_pool("highway", CAM, 2, 3, 5, envs_per_worker=2) as pool:
        assert (len(pool), pool.workers) == (3, 2)
    with open_pool("highway", CAM, 2, 8, 5, envs_per_worker=3) as pool:
        assert (len(pool), pool.workers) == (6, 2)
    with open_pool("highway", CAM, 4, 4, 5, envs_per_worker=2) as pool:
        assert (len(pool), pool.workers) == (4, 4)


@pytest.mark.parametrize("workers, per_worker", [(1, 1), (2, 1), (2, 3)])
def test_a_learned_policy_is_asked_for_one_batch_shape_whatever_the_envs(workers, per_worker):
    """On a GPU the rows are padded to this shape: the same kernels, so the same actions, with any
    number of workers and envs."""
    from driving.rollout import FIXED_BATCH, FIXED_ROWS

    shapes = set()

    class Shapes(ConstantPolicy):
        def act(self, obs):
            shapes.add(obs[FIXED_BATCH])
            return super().act(obs)

    run_episodes(Shapes(0.0, 0.0), "highway", [1, 2, 3, 4, 5], None, workers, max_steps=3, progress=False)
    assert shapes == {FIXED_ROWS}



@pytest.mark.parametrize("per_worker", ["1", "3"])
def test_a_learned_policy_evaluates_the_same_whatever_the_envs_per_worker(tmp_path, per_worker):
    """Two envs of one process step in turns set by timing; the rows do not depend on it."""
    run = tiny_run(tmp_path)
    ckpt = str(run / "checkpoints" / "last")
    base = evaluate(ckpt, cfg(tmp_path / "base", "episodes=5", "workers=2"), progress=False)["result"]
    other = evaluate(ckpt, cfg(tmp_path / "other", "episodes=5", "workers=2", f"envs_per_worker={per_worker}"),
                     progress=False)["result"]
    assert base["scenarios"] == other["scenarios"]


def test_a_learned_policy_evaluates_the_same_whatever_the_workers(tmp_path):
    """Envs answer in an order set by timing, so batches differ from run to run; with the engine's
    fixed batch a row's action does not depend on its batch, and the rows are equal value for value."""
    run = tiny_run(tmp_path)
    ckpt = str(run / "checkpoints" / "last")
    one = evaluate(ckpt, cfg(tmp_path / "one", "episodes=5"), progress=False)["result"]
    three = evaluate(ckpt, cfg(tmp_path / "three", "episodes=5", "workers=3"), progress=False)["result"]
    assert one["scenarios"] == three["scenarios"]


def test_a_cpu_policy_drives_with_one_torch_thread_and_gives_the_callers_setting_back(tmp_path):
    """On a CPU the policy computes one row at a time, where a busy core makes torch's thread pool
    wait (47-125 ms a forward pass instead of 1.6): the engine drives with one thread, and training
    in the same process gets its own setting back."""
    from driving.policy import ScaledPolicy, load_policy

    tiny_run(tmp_path)
    policy = load_policy(tmp_path / "run", device="cpu")
    seen, act = [], policy.act
    policy.act = lambda obs: seen.append(torch.get_num_threads()) or act(obs)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        records = run_episodes(policy, "highway", [0, 1], dict(CAM), 1, max_steps=4, progress=False)
        assert seen and set(seen) == {1} and sum(len(r["actions"]) for r in records) == len(seen)
        assert torch.get_num_threads() == 2
        with ScaledPolicy(policy, np.ones(2, dtype=np.float32)).closed_loop():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_fixed_batch_rows_do_not_depend_on_their_batch(tmp_path):
    from driving.policy import load_policy
    from driving.rollout import FIXED_BATCH

    tiny_run(tmp_path)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(7, 2, 32, 16), dtype=np.uint8)
    speed = rng.uniform(0, 30, 7).astype(np.float32)
    for device in devices:
        policy = load_policy(tmp_path / "run", device=device)
        alone = np.stack([policy.act({"camera": frames[i:i + 1], "speed": speed[i:i + 1], FIXED_BATCH: 8})[0]
                          for i in range(7)])
        order = rng.permutation(7)
        together = policy.act({"camera": frames[order], "speed": speed[order], FIXED_BATCH: 8})
        assert np.array_equal(together, alone[order]), device
        assert np.array_equal(policy.act({"camera": frames, "speed": speed, FIXED_BATCH: 3}), alone), device
        assert np.allclose(policy.act({"camera": frames, "speed": speed}), alone, atol=1e-5)


def test_static_buffer_forward_gives_the_plain_forwards_values(tmp_path):
    """The graph's input buffers, filled anew each call (checked here eagerly on the CPU; the capture
    itself in the CUDA test below): stale rows from an earlier call would change the values."""
    from driving.policy import _padded, load_policy

    tiny_run(tmp_path)
    policy = load_policy(tmp_path / "run", device="cpu")
    policy.cuda_graph = True
    rng = np.random.default_rng(2)
    for n in (5, 2, 5, 1):
        frames = rng.integers(0, 256, size=(n, 2, 32, 16), dtype=np.uint8)
        speed = rng.uniform(0, 30, n).astype(np.float32)
        padded = _padded(frames, speed, 5)
        assert np.array_equal(policy._fixed_forward(*padded), policy._forward(*padded))
    assert len(policy._graphs) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_forward_gives_the_eager_forwards_values(tmp_path):
    """On CUDA the fixed-shape forward is captured after a few eager calls and replayed; every call,
    before and after the capture, gives what the eager policy gives."""
    from driving.policy import load_policy
    from driving.rollout import FIXED_BATCH

    tiny_run(tmp_path)
    graphed = load_policy(tmp_path / "run", device="cuda")
    eager = load_policy(tmp_path / "run", device="cuda")
    eager.cuda_graph = False
    rng = np.random.default_rng(1)
    for call in range(8):
        n = int(rng.integers(1, 6))
        obs = {"camera": rng.integers(0, 256, size=(n, 2, 32, 16), dtype=np.uint8),
               "speed": rng.uniform(0, 30, n).astype(np.float32), FIXED_BATCH: 5}
        assert np.array_equal(graphed.act(obs), eager.act(obs)), call
    (stepper, _, _), = graphed._graphs.values()
    assert stepper.mode == "cuda graph" and not eager._graphs


def test_checkpoint_is_evaluated_beside_the_expert(tmp_path):
    run = tiny_run(tmp_path)
    r = evaluate(str(run / "checkpoints" / "last"), cfg(tmp_path / "ev"), progress=False)["result"]
    assert r["policy"] == "pilotnet" and r["camera"]["height"] == 32
    pol = r["scenarios"]["highway"]["episodes"]["policy"]
    exp = r["scenarios"]["highway"]["episodes"]["expert"]
    assert [p["seed"] for p in pol] == [e["seed"] for e in exp]
    # route completion is measured against the expert on the same seed
    for p, e in zip(pol, exp):
        assert p["route_completion"] == pytest.approx(min(1.0, p["distance_m"] / e["distance_m"]))
    again = evaluate(str(run / "checkpoints" / "last"), cfg(tmp_path / "ev2"), progress=False)["result"]
    assert again["scenarios"] == r["scenarios"]


def test_the_expert_taken_from_an_earlier_evaluation_gives_the_same_result_without_driving_it(tmp_path,
                                                                                             monkeypatch):
    """expert_from: DAgger rounds and training seeds on one seed list drive the reference expert once.
    The expert is deterministic, so the result equals a full evaluation's value for value; an earlier
    evaluation of other seeds or settings is refused in one line."""
    import driving.evaluate as ev_mod

    run = tiny_run(tmp_path)
    ckpt = str(run / "checkpoints" / "last")
    full = evaluate(ckpt, cfg(tmp_path / "full", "videos=1"), progress=False)["result"]
    driven = []
    real = ev_mod.run_episodes
    monkeypatch.setattr(ev_mod, "run_episodes", lambda actor, *a, **k: driven.append(type(actor).__name__)
                        or real(actor, *a, **k))
    reused = evaluate(ckpt, cfg(tmp_path / "reused", "videos=1", f"expert_from={tmp_path / 'full'}"),
                      progress=False)["result"]
    assert "ExpertPolicy" not in driven and driven  # the policy drove, the expert did not
    assert reused["scenarios"] == full["scenarios"]
    assert reused["videos"] == full["videos"]
    a, b = np.load(tmp_path / "full" / "actions.npz"), np.load(tmp_path / "reused" / "actions.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    # the shards of an evaluation take their part of it, numbered as their own episodes: merged, they
    # are the whole evaluation (was refused: the shard's seeds were not all of the earlier one's)
    from driving.eval_merge import merge_evaluations

    for k in (0, 1):
        evaluate(ckpt, cfg(tmp_path / f"s{k}", f"shard={k}/2", f"expert_from={tmp_path / 'full'}"), progress=False)
    assert "ExpertPolicy" not in driven
    merged = merge_evaluations(tmp_path / "m", [tmp_path / "s0", tmp_path / "s1"], device="cpu")["result"]
    assert merged["scenarios"] == full["scenarios"] and merged["config"]["expert_from"] == str(tmp_path / "full")
    first = evaluate(ckpt, cfg(tmp_path / "one", "episodes=1", f"expert_from={tmp_path / 'full'}"),
                     progress=False)["result"]  # fewer seeds: the first of them
    assert first["scenarios"]["highway"]["episodes"]["expert"] == full["scenarios"]["highway"]["episodes"]["expert"][:1]
    for extra, what in ((["episodes=4"], "seeds"), (["seed=7"], "seeds"), (["max_steps=9"], "max_steps"),
                        (["expert_perception=privileged"], "expert_perception")):
        with pytest.raises(UserError, match=f"its expert drove highway with other {what} than this evaluation"):
            evaluate(ckpt, cfg(tmp_path / "x", *extra, f"expert_from={tmp_path / 'full'}"), progress=False)
    with pytest.raises(UserError, match="its expert did not drive merge \\(it drove highway\\)"):
        evaluate(ckpt, cfg(tmp_path / "x", "scenario=merge", f"expert_from={tmp_path / 'full'}"), progress=False)
    (tmp_path / "full" / "actions.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="expert_from=.*: cannot read its actions.npz .*: drop expert_from"):
        evaluate(ckpt, cfg(tmp_path / "x", f"expert_from={tmp_path / 'full'}"), progress=False)
    with pytest.raises(UserError, match="nothing is missing: drop expert_from"):
        evaluate(ckpt, cfg(tmp_path / "x", f"expert_from={tmp_path / 'nothing'}"), progress=False)


def test_unknown_scenario_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="known scenarios"):
        evaluate("expert", cfg(tmp_path / "x", "scenario=highway,moon"), progress=False)


def test_cli_eval_expert(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["eval", "expert", "scenario=racetrack", "episodes=2", "max_steps=5", "videos=0", "workers=1",
               f"out={out}", "-q"])
    assert rc == 0
    assert "driving score" in capsys.readouterr().out
    assert json.loads((out / "eval.json").read_text())["seeds"] == {"racetrack": [1_000_000, 1_000_001]}


def _trained(tmp_path, steer_range: float):
    ds = synthetic_dataset(tmp_path / f"ds{steer_range}")
    meta = json.loads((ds / "meta.json").read_text())
    meta["action"]["steer_range_rad"] = steer_range
    (ds / "meta.json").write_text(json.dumps(meta))
    run = tmp_path / f"run{steer_range}"
    train(load_config(TrainConfig, None, [f"dataset={ds}", f"out={run}", "steps=2", "batch_size=4",
                                          "device=cpu", "wandb.mode=disabled"]), progress=False)
    return run / "checkpoints" / "last"


def test_a_checkpoint_keeps_its_physical_commands_on_a_scenario_with_wider_ranges(tmp_path):
    """Trained at ±0.15 rad (highway), driving racetrack (±0.8 rad): every output is rescaled so the
    front wheels turn exactly as far as they would have on the highway."""
    from driving.policy import load_policy
    from sim import get_scenario

    policy = load_policy(_trained(tmp_path, 0.15), device="cpu")
    obs = {"camera": np.random.default_rng(0).integers(0, 255, (3, 2, 32, 16), dtype=np.uint8),
           "speed": np.array([10.0, 20.0, 30.0], dtype=np.float32)}
    assert policy.for_scenario(get_scenario("highway")) is policy
    track = get_scenario("racetrack")
    scaled = policy.for_scenario(track)
    own = np.clip(policy.act(obs), -1, 1)
    got = scaled.act(obs)
    assert np.allclose(got[:, 0] * track.action.steer_range, own[:, 0] * 0.15, atol=1e-6)
    assert np.allclose(got[:, 1] * track.action.accel_range, own[:, 1] * 6.0, atol=1e-6)
    r = evaluate(str(_trained(tmp_path, 0.15)), cfg(tmp_path / "ev", "scenario=racetrack"), progress=False)
    assert r["result"]["scenarios"]["racetrack"]["episodes"]["policy"][0]["steps"] == 8


def test_a_checkpoint_is_refused_where_the_scenario_cannot_execute_its_commands(tmp_path):
    ckpt = _trained(tmp_path, 0.8)  # trained to steer up to ±0.8 rad; the highway allows ±0.15
    with pytest.raises(UserError, match=r"steering ±0.15 rad \(trained ±0.8\)"):
        evaluate(str(ckpt), cfg(tmp_path / "ev"), progress=False)
    assert not (tmp_path / "ev").exists()  # refused before any work


def test_an_evaluation_can_drive_a_plan_head_with_another_lane_threshold(tmp_path):
    import shutil

    from driving import checkpoint

    run = tiny_run(tmp_path, "net.plan_head=true")
    ckpt = run / "checkpoints" / "last"
    # the same weights with the threshold carried in the checkpoint itself
    carried = tmp_path / "carried"
    shutil.copytree(checkpoint.resolve(ckpt), carried)
    meta = json.loads((carried / "policy.json").read_text())
    meta["net"]["plan_threshold"] = 0.99
    (carried / "policy.json").write_text(json.dumps(meta))
    (carried / "checksums.json").unlink()

    def episodes(path, *extra):
        r = evaluate(str(path), cfg(tmp_path / f"ev{len(list(tmp_path.iterdir()))}", *extra), progress=False)
        return r["result"]["scenarios"]["highway"]["episodes"]["policy"], r["result"]["config"]

    argmax, _ = episodes(ckpt)
    sure, config = episodes(ckpt, "plan_threshold=0.99")
    assert config["plan_threshold"] == 0.99
    assert sure != argmax  # an untrained head's classes are near 1/3 each: at 0.99 it always keeps its lane
    assert episodes(carried)[0] == sure
    with pytest.raises(UserError, match="the expert has none"):
        evaluate("expert", cfg(tmp_path / "ex", "plan_threshold=0.5"), progress=False)


def test_another_runs_evaluation_is_not_written_over(tmp_path, capsys):
    """`driving eval B out=X` where X holds A's evaluation lost A's results without a word; the same run
    again (a re-run, `last` after more training) writes over its own, and says what the one it replaces had."""
    run = tiny_run(tmp_path)
    out = tmp_path / "ev"
    evaluate(str(run / "checkpoints" / "last"), cfg(out, "episodes=1"), progress=False)
    capsys.readouterr()
    # the same result again, however it runs: nothing to say
    evaluate(str(run / "checkpoints" / "last"), cfg(out, "episodes=1", "envs_per_worker=1", "saliency=none",
                                                    "device=cpu"), progress=False)
    assert "replaces" not in capsys.readouterr().err
    # nor where a pipeline owns the folder (a DAgger round's or a scoreboard's evaluation)
    evaluate(str(run / "checkpoints" / "last"), cfg(out, "episodes=2"), progress=False, note_replaced=False)
    assert "replaces" not in capsys.readouterr().err
    evaluate(str(run / "checkpoints" / "last"), cfg(out, "episodes=1"), progress=False)
    capsys.readouterr()
    before = (out / "eval.json").read_text()
    ds = synthetic_dataset(tmp_path / "ds2")
    other = tmp_path / "other"
    train(load_config(TrainConfig, None, [f"dataset={ds}", f"out={other}", "steps=2", "batch_size=4",
                                          "device=cpu", "wandb.mode=disabled"]), progress=False)
    with pytest.raises(UserError, match=r"holds the evaluation of .*run.*another out="):
        evaluate(str(other / "checkpoints" / "last"), cfg(out, "episodes=1"), progress=False)
    with pytest.raises(UserError, match="holds the evaluation"):
        evaluate("expert", cfg(out, "episodes=1"), progress=False)
    assert (out / "eval.json").read_text() == before
    train(load_config(TrainConfig, None, [f"dataset={tmp_path / 'ds'}", f"out={run}", "steps=4", "batch_size=4",
                                          "device=cpu", "wandb.mode=disabled"]), progress=False)  # resumed
    capsys.readouterr()
    r = evaluate(str(run / "checkpoints" / "last"), cfg(out, "episodes=2"), progress=False)["result"]
    assert len(r["scenarios"]["highway"]["episodes"]["policy"]) == 2
    err = capsys.readouterr().err
    assert f"note: {out} held a finished evaluation that this one replaces (" in err and "give out= to keep both" in err
    assert "checkpoints/00000002 there" in err and "checkpoints/00000004 now" in err
    assert "episodes: 1 there, 2 now" in err
    # a run moved since: the folder's old checkpoint path is gone, so it cannot be told from another run's
    moved = tmp_path / "moved"
    run.rename(moved)
    evaluate(str(moved / "checkpoints" / "last"), cfg(out, "episodes=1"), progress=False)


def test_results_of_other_metrics_are_scored_again_not_mixed(tmp_path):
    """An evaluation stored before a metric changed (lane changes, the route) is evaluated again by
    dagger and the scoreboard rather than reused, and is refused as expert_from."""
    from driving.evaluate import finished_evaluation
    from sim.metrics import METRICS_VERSION

    run = tiny_run(tmp_path)
    ckpt = str(run / "checkpoints" / "last")
    c = cfg(tmp_path / "ev", "episodes=1")
    r = evaluate(ckpt, c, progress=False)["result"]
    assert r["metrics_version"] == METRICS_VERSION and finished_evaluation(ckpt, c) is not None
    path = tmp_path / "ev" / "eval.json"
    old = json.loads(path.read_text())
    old.pop("metrics_version")  # as written before the version existed
    path.write_text(json.dumps(old))
    assert finished_evaluation(ckpt, c) is None
    with pytest.raises(UserError, match=r"scored by other metrics \(version 1, now"):
        evaluate(ckpt, cfg(tmp_path / "ev2", "episodes=1", f"expert_from={tmp_path / 'ev'}"), progress=False)


def test_an_evaluation_into_a_folder_of_the_users_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(UserError, match=r"holds files that are not an evaluation's \(thesis.tex\)"):
        evaluate("expert", cfg(out), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_evaluating_on_the_training_episodes_seeds_is_noted(tmp_path, capsys):
    """seed=100 scores the episodes the policy learned from (the synthetic dataset's seeds are 100...):
    said once, with the dataset; the default evaluation seeds say nothing."""
    run = tiny_run(tmp_path)
    ckpt = str(run / "checkpoints" / "last")
    evaluate(ckpt, cfg(tmp_path / "own", "episodes=2", "seed=100"), progress=False)
    err = capsys.readouterr().err
    assert "note: 2 of the 2 evaluation seeds (100, 101) are episodes of the training data" in err, err
    evaluate(ckpt, cfg(tmp_path / "held_out", "episodes=2"), progress=False)
    assert "training data" not in capsys.readouterr().err


def test_an_evaluation_whose_checkpoint_moved_is_filmed_from_its_recorded_actions(tmp_path, capsys):
    """`driving video EVAL` after the run was moved (or its step folder deleted) stopped on 'checkpoint not
    found' and named a key video does not have; the recorded actions replay without the policy."""
    from driving.video_cli import video_command

    run = tiny_run(tmp_path)
    out = tmp_path / "ev"
    evaluate(str(run / "checkpoints" / "last"), cfg(out, "episodes=2"), progress=False)
    before = video_command(str(out), ["count=1", "saliency=none", f"out={tmp_path / 'a'}"])
    run.rename(tmp_path / "moved")
    capsys.readouterr()
    after = video_command(str(out), ["count=1", "saliency=none", f"out={tmp_path / 'b'}"])
    assert "is gone (moved or deleted): filming its recorded actions without the saliency overlay" \
        in capsys.readouterr().err
    assert [p.name for p in after] == [p.name for p in before]
    from driving.video import probe_video

    a, b = (probe_video(v[0], decode=True)["data"] for v in (before, after))
    assert a.shape == b.shape  # the same episode, step for step; only the title's second line differs
    a[:, :100, :320] = b[:, :100, :320] = 0  # ("run/checkpoints/00000002" against "... (recorded actions; ...")
    diff = np.abs(a.astype(int) - b)
    # H.264 noise only (one step later in the same episode differs by ~3.6 on average, 3.5% of pixels by > 40)
    assert diff.mean() < 0.5 and (diff.max(axis=-1) > 40).mean() < 1e-4
    (out / "actions.npz").unlink()
    with pytest.raises(UserError, match=r"is gone \(moved or deleted\) and seed \d+ has no recorded actions"):
        video_command(str(out), ["count=1"])
