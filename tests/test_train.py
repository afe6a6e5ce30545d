"""The BC loop: checkpoints, exact resume, load_policy, bad input, DDP."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from driving import load_policy
from driving.config import load_config
from driving.errors import UserError
from driving.train import TrainConfig, train
from sim.metrics import METRICS_VERSION
from tests.helpers import synthetic_dataset

BASE = ["steps=8", "batch_size=8", "device=cpu", "wandb.mode=disabled", "log_every=2", "val_every=4",
        "checkpoint_every=4", "val_fraction=0.25", "optim.warmup_steps=2", "threads=1"]


def cfg_for(ds: Path, out: Path, *extra) -> TrainConfig:
    return load_config(TrainConfig, None, [f"dataset={ds}", f"out={out}", *BASE, *extra])


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return synthetic_dataset(tmp_path_factory.mktemp("train") / "ds")


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last" / "weights.pt", weights_only=True)


def test_training_writes_run_folder_checkpoints_and_metrics(ds, tmp_path):
    out = tmp_path / "run"
    result = train(cfg_for(ds, out), progress=False)
    assert result["step"] == 8
    assert (out / "config.yaml").is_file()
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir() if not p.name.startswith(".")) == ["00000004", "00000008", "last"]
    assert os.readlink(ck / "last") == "00000008"
    meta = json.loads((ck / "last" / "policy.json").read_text())
    for key in ("model", "net", "input", "camera", "action", "dataset", "step"):
        assert key in meta
    assert meta["dataset"]["fingerprint"] and meta["input"]["frame_std"] > 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8]
    assert all(r["samples_per_s"] > 0 and 0 <= r["data_wait"] <= 1 for r in train_rows)
    assert any("val_loss" in r for r in rows)


def test_resumed_run_equals_uninterrupted_run(ds, tmp_path):
    full, split = tmp_path / "full", tmp_path / "split"
    train(cfg_for(ds, full), progress=False)
    train(cfg_for(ds, split), progress=False, stop_at=4)
    assert os.readlink(split / "checkpoints" / "last") == "00000004"
    train(cfg_for(ds, split), progress=False)
    a, b = weights(full), weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # metrics of the resumed run continue where the interrupted one stopped, without duplicates
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [2, 4, 6, 8]


def test_a_run_resumed_with_more_steps_follows_the_new_schedule_from_its_first_step(ds, tmp_path, monkeypatch,
                                                                                    capsys):
    """The learning rate of each step after the resume is the new schedule's (the first one was the old
    schedule's last), and the checkpoint says its schedule changed."""
    import driving.train as train_mod

    used = []
    real = train_mod.optimisation_step
    monkeypatch.setattr(train_mod, "optimisation_step", lambda fwd, model, opt, *a, **k:
                        used.append(float(opt.param_groups[0]["lr"])) or real(fwd, model, opt, *a, **k))
    train(cfg_for(ds, tmp_path / "run", "steps=6"), progress=False)
    train(cfg_for(ds, tmp_path / "run", "steps=10"), progress=False)
    extended = used[6:]
    used.clear()
    train(cfg_for(ds, tmp_path / "fresh", "steps=10"), progress=False)
    assert len(extended) == 4 and extended == pytest.approx(used[6:], rel=1e-12)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last" / "policy.json").read_text())
    assert meta["schedule_changes"] == [{"step": 6, "steps_before": 6, "steps": 10}]
    assert "resumes at step 6 with steps=10 (planned 6)" in capsys.readouterr().out
    fresh = json.loads((tmp_path / "fresh" / "checkpoints" / "last" / "policy.json").read_text())
    assert fresh["schedule_changes"] == []


def test_a_run_resumed_in_another_precision_says_so(ds, tmp_path, monkeypatch, capsys):
    """bf16 where the first machine had it, fp32 on one without (amp itself is the run's identity): the
    resumed run cannot equal an uninterrupted one, and the note says which precision each part ran in."""
    import driving.precision as precision

    monkeypatch.setattr(precision, "uses_bf16", lambda device, amp: amp)  # as on a CPU with native bf16
    train(cfg_for(ds, tmp_path / "run"), progress=False, stop_at=4)
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last" / "policy.json").read_text())
    assert meta["precision"] == "bf16 autocast"
    capsys.readouterr()
    monkeypatch.setattr(precision, "uses_bf16", lambda device, amp: False)  # resumed on a CPU without it
    train(cfg_for(ds, tmp_path / "run"), progress=False)
    out = capsys.readouterr().out
    assert "resumes at step 4 in fp32 where its steps before ran in bf16 autocast" in out, out
    meta = json.loads((tmp_path / "run" / "checkpoints" / "last" / "policy.json").read_text())
    assert meta["precision"] == "fp32"
    assert meta["precision_changes"] == [{"step": 4, "from": "bf16 autocast", "to": "fp32"}]
    train(cfg_for(ds, tmp_path / "same"), progress=False, stop_at=4)
    capsys.readouterr()
    train(cfg_for(ds, tmp_path / "same"), progress=False)
    assert "where its steps before ran in" not in capsys.readouterr().out
    meta = json.loads((tmp_path / "same" / "checkpoints" / "last" / "policy.json").read_text())
    assert meta["precision_changes"] == []


def test_same_seed_same_weights_other_seed_other_weights(ds, tmp_path):
    train(cfg_for(ds, tmp_path / "a", "steps=4"), progress=False)
    train(cfg_for(ds, tmp_path / "b", "steps=4"), progress=False)
    train(cfg_for(ds, tmp_path / "c", "steps=4", "seed=1"), progress=False)
    a, b, c = (weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_kill_mid_save_leaves_previous_checkpoint_usable(ds, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(cfg_for(ds, out), progress=False, stop_at=4)
    import driving.checkpoint as ck

    real_save = torch.save
    calls = {"n": 0}

    def dying_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # weights written, then the process "dies" before train_state
            raise KeyboardInterrupt
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(ds, out), progress=False)
    monkeypatch.setattr(ck.torch, "save", real_save)
    assert os.readlink(out / "checkpoints" / "last") == "00000004"
    policy = load_policy(out / "checkpoints" / "last", device="cpu")
    assert policy.act({"camera": np.zeros((2, 32, 16), np.uint8), "speed": 20.0}).shape == (2,)
    assert any(p.name.endswith(".tmp") for p in (out / "checkpoints").iterdir())
    train(cfg_for(ds, out), progress=False)  # resumes from 4 and cleans the leftover
    assert os.readlink(out / "checkpoints" / "last") == "00000008"
    assert not any(p.name.endswith(".tmp") for p in (out / "checkpoints").iterdir())


def test_load_policy_acts_on_single_and_batched_observations(ds, tmp_path):
    out = tmp_path / "run"
    train(cfg_for(ds, out, "steps=2"), progress=False)
    policy = load_policy(out, device="cpu")  # a run folder resolves to its last checkpoint
    one = policy.act({"camera": np.full((2, 32, 16), 30, np.uint8), "speed": 20.0})
    assert one.shape == (2,) and np.all(np.abs(one) <= 1)
    batch = policy.act({"camera": np.full((5, 3, 32, 16), 30, np.uint8), "speed": np.full(5, 20.0)})
    assert batch.shape == (5, 2)
    np.testing.assert_allclose(batch[0], one, atol=1e-6)  # extra stacked frames: the newest are used
    with pytest.raises(UserError, match="shape"):
        policy.act({"camera": np.zeros((2, 64, 32), np.uint8), "speed": 1.0})
    with pytest.raises(UserError, match="camera config does not match"):
        policy.check_camera({**policy.camera, "metres_per_pixel": 1.0})


def test_bc_learns_the_synthetic_mapping(tmp_path):
    """Steer is drawn as a bar's column: a few hundred steps must beat predicting the mean."""
    ds = synthetic_dataset(tmp_path / "big", lengths=(40,) * 10, seed=1)
    out = tmp_path / "learn"
    result = train(cfg_for(ds, out, "steps=300", "batch_size=32", "val_every=300", "augment.enabled=false",
                       "optim.lr=0.003", "net.dropout=0"), progress=False)
    # mean absolute deviation of a uniform(-1, 1) label around its mean is 0.5
    assert result["val_loss_steer"] < 0.25


@pytest.mark.parametrize("extra, needle", [
    (["model=vit"], "unknown model 'vit'"),
    (["bogus=1"], "unknown config key 'bogus'"),
    (["loss=huber"], "loss must be l1 or mse"),
])
def test_bad_config_is_one_clear_error(ds, tmp_path, extra, needle):
    with pytest.raises(UserError, match=needle):
        train(cfg_for(ds, tmp_path / "r", *extra), progress=False)


def test_empty_dataset_and_changed_resume_config_are_refused(ds, tmp_path):
    empty = tmp_path / "empty"
    shutil.copytree(ds, empty)
    (empty / "index.json").write_text("[]")
    with pytest.raises(UserError, match="no episodes"):
        train(cfg_for(empty, tmp_path / "r"), progress=False)
    out = tmp_path / "r2"
    train(cfg_for(ds, out, "steps=2"), progress=False)
    with pytest.raises(UserError, match=r"different config .*optim\.lr"):
        train(cfg_for(ds, out, "steps=4", "optim.lr=0.1"), progress=False)
    other = synthetic_dataset(tmp_path / "rgb", rgb=True)
    with pytest.raises(UserError, match="the checkpoint in .* was trained on .*use a dataset with the same camera"):
        train(cfg_for(other, out, "steps=4"), progress=False)


def test_closed_loop_evaluation_during_training_keeps_best(tmp_path):
    """Every K steps: a short closed-loop run on fixed seeds, logged; `best` by driving score."""
    from sim import CameraConfig

    ds = synthetic_dataset(tmp_path / "ds", height=32, width=16)
    out = tmp_path / "run"
    train(cfg_for(ds, out, "steps=4", "eval.every=2", "eval.episodes=2", "eval.max_steps=4", "eval.workers=1",
                  "eval.video=false"), progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_driving_score" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0 <= r["eval_driving_score"] <= 1 and r["eval_scenario"] == "highway" for r in evals)
    assert all(r["eval_metrics_version"] == METRICS_VERSION for r in evals)
    best_step = max(evals, key=lambda r: (r["eval_driving_score"], -r["step"]))["step"]
    assert os.readlink(out / "checkpoints" / "best") == f"{best_step:08d}"
    assert (out / "checkpoints" / "best" / "weights.pt").is_file()
    assert CameraConfig(**{k: v for k, v in json.loads((out / "checkpoints" / "best" / "policy.json")
                                                        .read_text())["camera"].items()}).height == 32


def scripted_closed_loop(monkeypatch, tmp_path, scores: dict) -> tuple:
    """Training-time closed-loop scores scripted by step (the monitor drives nothing); returns a small
    dataset and the keys of an 8-step run evaluated and saved every 2 steps."""
    import driving.train as T

    monkeypatch.setattr(T.ClosedLoopMonitor, "run",
                        lambda self, model, step: ({"step": step, "eval_driving_score": scores[step]}, None))
    monkeypatch.setattr(T.ClosedLoopMonitor, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(T.ClosedLoopMonitor, "close", lambda self: None)
    ds = synthetic_dataset(tmp_path / "ds", height=32, width=16)
    return ds, ("steps=8", "eval.every=2", "checkpoint_every=2", "eval.video=false")


def test_a_kill_between_the_pointer_moves_keeps_best_the_best(tmp_path, monkeypatch):
    """`best` moves before `last`: killed between the two, the resumed run still finds its best."""
    import driving.checkpoint as checkpoint

    ds, keys = scripted_closed_loop(monkeypatch, tmp_path, {2: 0.5, 4: 0.9, 6: 0.6, 8: 0.3})
    real_point = checkpoint.point
    moved = []

    def killed_between(root, name, target):
        if target == "00000004":
            moved.append(name)
            if len(moved) == 2:  # the second of step 4's two pointer moves never happens
                raise KeyboardInterrupt
        real_point(root, name, target)

    monkeypatch.setattr(checkpoint, "point", killed_between)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(ds, tmp_path / "run", *keys), progress=False)
    monkeypatch.setattr(checkpoint, "point", real_point)
    train(cfg_for(ds, tmp_path / "run", *keys), progress=False)
    assert os.readlink(tmp_path / "run" / "checkpoints" / "best") == "00000004"


def test_a_checkpoint_needs_no_backbone_file_to_load_or_resume(ds, tmp_path):
    """net.weights initialises a fresh run; the checkpoint then holds every weight, so moving the
    backbone file breaks neither loading the policy nor resuming the run."""
    import torchvision

    backbone = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), backbone)
    # fp32: bf16 on a CPU gives NaN for resnet18 on the synthetic 32x16 frames (the diverged-training check)
    keys = ("model=resnet18", f"net.weights={backbone}", "batch_size=4", "amp=false")
    train(cfg_for(ds, tmp_path / "run", *keys, "steps=2"), progress=False)
    backbone.unlink()
    policy = load_policy(tmp_path / "run" / "checkpoints" / "last")
    assert policy.act({"camera": np.zeros((2, 32, 16), np.uint8), "speed": 10.0}).shape == (2,)
    assert train(cfg_for(ds, tmp_path / "run", *keys, "steps=3"), progress=False)["step"] == 3
    # a warm start from it needs no backbone file either (was refused: "net.weights: ... there, None now")
    warm = train(cfg_for(ds, tmp_path / "warm", "model=resnet18", "batch_size=4", "amp=false", "steps=1",
                         f"init_from={tmp_path / 'run'}"), progress=False)
    assert warm["step"] == 1


def test_a_batch_takes_one_speed_per_stack_or_one_for_all(ds, tmp_path):
    train(cfg_for(ds, tmp_path / "run", "steps=1"), progress=False)
    policy = load_policy(tmp_path / "run" / "checkpoints" / "last")
    frames = np.zeros((3, 2, 32, 16), np.uint8)
    each = policy.act({"camera": frames, "speed": np.array([5.0, 5.0, 5.0])})
    np.testing.assert_array_equal(policy.act({"camera": frames, "speed": 5.0}), each)
    assert policy.act({"camera": frames}).shape == (3, 2)
    with pytest.raises(UserError, match="3 frame stacks and 2 speeds"):
        policy.act({"camera": frames, "speed": np.array([5.0, 5.0])})


def test_a_dataset_listed_twice_is_refused(ds, tmp_path):
    import shutil

    with pytest.raises(UserError, match="lists .* twice"):
        cfg_for([ds, ds], tmp_path / "run")
    # a copy of it under another name holds the same episodes: each copy's validation episodes would be
    # trained on through the other (was accepted)
    shutil.copytree(ds, tmp_path / "copy")
    with pytest.raises(UserError, match=f"datasets {ds} and {tmp_path / 'copy'} hold the same episodes"):
        train(cfg_for(f"[{ds},{tmp_path / 'copy'}]", tmp_path / "run", "steps=1"), progress=False)
    assert not (tmp_path / "run").exists()


def test_a_run_started_on_a_one_item_list_resumes_on_the_plain_path(ds, tmp_path):
    from driving.train import TrainConfig

    train(load_config(TrainConfig, None, [f"dataset=[{ds}]", f"out={tmp_path / 'run'}", *BASE, "steps=2"]),
          progress=False)
    assert train(cfg_for(ds, tmp_path / "run", "steps=4"), progress=False)["step"] == 4


def test_training_on_an_interrupted_collection_says_so(tmp_path, capsys):
    ds = synthetic_dataset(tmp_path / "ds")
    meta = json.loads((ds / "meta.json").read_text())
    (ds / "meta.json").write_text(json.dumps({**meta, "collection": {"requested": 9, "finished": False}}))
    train(cfg_for(ds, tmp_path / "run", "steps=1"), progress=False)
    err = capsys.readouterr().err
    assert f"warning: dataset {ds} is an interrupted collection (4 episodes on disk, 9 asked for)" in err


def test_best_survives_resuming_twice(tmp_path, monkeypatch):
    """`best` stays the best closed-loop checkpoint when a run is interrupted more than once (each
    checkpoint carries the best score so far, so a second resume does not take the next one as best)."""
    ds, keys = scripted_closed_loop(monkeypatch, tmp_path, {2: 0.9, 4: 0.5, 6: 0.4, 8: 0.3})
    for out, stops in ((tmp_path / "whole", [None]), (tmp_path / "split", [4, 6, None])):
        for stop in stops:
            train(cfg_for(ds, out, *keys), progress=False, stop_at=stop)
        assert os.readlink(out / "checkpoints" / "best") == "00000002"
        assert json.loads((out / "checkpoints" / "00000008" / "policy.json").read_text())["best_score"] == 0.9


def test_a_best_scored_by_older_metrics_is_named_on_resume(tmp_path, monkeypatch, capsys):
    """A run interrupted under one version of the metrics and resumed under another compares new scores
    with the old best: it says so, and the checkpoints record which version scored the best."""
    ds, keys = scripted_closed_loop(monkeypatch, tmp_path, {2: 0.9, 4: 0.5, 6: 0.4, 8: 0.3})
    import driving.train as T

    out = tmp_path / "run"
    with monkeypatch.context() as older:  # the first part ran code of the version before
        older.setattr(T, "METRICS_VERSION", METRICS_VERSION - 1)
        train(cfg_for(ds, out, *keys), progress=False, stop_at=4)
    assert json.loads((out / "checkpoints" / "00000004" / "policy.json").read_text())["best_metrics_version"] \
        == METRICS_VERSION - 1
    capsys.readouterr()
    train(cfg_for(ds, out, *keys), progress=False)
    assert f"scored by metrics version {METRICS_VERSION - 1}" in capsys.readouterr().err
    last = json.loads((out / "checkpoints" / "00000008" / "policy.json").read_text())
    assert (last["best_score"], last["best_metrics_version"]) == (0.9, METRICS_VERSION - 1)


def test_a_run_stopped_between_evaluations_resumes_to_the_uninterrupted_runs_best_and_metrics(tmp_path, monkeypatch):
    """stop_at ends like an interruption: a stop at step 5 neither scores nor validates nor logs step 5
    (was: step 5 scored as if it were the end, and became `best`, a step the whole run never scored)."""
    ds, keys = scripted_closed_loop(monkeypatch, tmp_path, {2: 0.1, 4: 0.5, 5: 0.95, 6: 0.9, 8: 0.6})
    keys = (*keys, "eval.every=4", "val_every=3", "log_every=2")
    for out, stops in ((tmp_path / "whole", [None]), (tmp_path / "split", [5, None])):
        for stop in stops:
            train(cfg_for(ds, out, *keys), progress=False, stop_at=stop)
    rows = {name: [{k: v for k, v in json.loads(line).items() if k in ("step", "eval_driving_score", "val_loss")}
                   for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("whole", "split")}
    assert os.readlink(tmp_path / "split" / "checkpoints" / "best") == "00000008"
    assert os.readlink(tmp_path / "whole" / "checkpoints" / "best") == "00000008"
    assert [r["step"] for r in rows["split"]] == [r["step"] for r in rows["whole"]]
    assert [r for r in rows["split"] if "eval_driving_score" in r] == [{"step": 4, "eval_driving_score": 0.5},
                                                                       {"step": 8, "eval_driving_score": 0.6}]


def test_training_time_evaluation_starts_its_workers_once_and_films_the_scored_episode(tmp_path, monkeypatch):
    """The evaluation during training runs on `driving eval`'s engine with one pool for every call;
    its video is the worst scored episode, re-simulated with the actions it executed."""
    import driving.envpool as envpool

    opened = []
    real = envpool.EnvPool.__init__

    def counting(self, n, env_kwargs, *args, **kwargs):
        opened.append(n)
        real(self, n, env_kwargs, *args, **kwargs)

    monkeypatch.setattr(envpool.EnvPool, "__init__", counting)
    ds = synthetic_dataset(tmp_path / "ds", height=32, width=16)
    out = tmp_path / "run"
    train(cfg_for(ds, out, "steps=6", "eval.every=2", "eval.episodes=2", "eval.max_steps=4", "eval.workers=2",
                  "eval.video=true"), progress=False)
    assert opened == [2]  # three evaluations, one pool of two envs
    videos = sorted((out / "eval").glob("train_*/*.mp4"))
    assert [v.parent.name for v in videos] == ["train_00000002", "train_00000004", "train_00000006"]


@pytest.mark.parametrize("extra, needle", [
    (["checkpoint_every=0"], "checkpoint_every must be >= 1"),
    (["val_every=0"], "val_every must be >= 1"),
    (["log_every=0"], "log_every must be >= 1"),
    (["batch_size=100000"], "batch_size 100000 is larger than the"),
    (["net.weights=missing.pt"], "net.weights loads backbone weights for resnet18 only"),
])
def test_settings_that_cannot_work_are_refused_in_one_line(ds, tmp_path, extra, needle):
    with pytest.raises(UserError, match=needle):
        train(load_config(TrainConfig, None, [f"dataset={ds}", f"out={tmp_path / 'r'}", *BASE, *extra]),
              progress=False)


def test_a_torn_metrics_line_and_a_dangling_last_pointer_resume_cleanly(ds, tmp_path, capsys):
    full, run = tmp_path / "full", tmp_path / "run"
    train(cfg_for(ds, full), progress=False)
    train(cfg_for(ds, run), progress=False, stop_at=4)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.')  # what a kill or a full disk mid-append leaves
    os.remove(run / "checkpoints" / "last")
    os.symlink("00000999", run / "checkpoints" / "last")  # a pointer to a folder that is gone
    result = train(cfg_for(ds, run), progress=False)
    assert "resuming from 00000004" in capsys.readouterr().out
    assert result["step"] == 8 and weights(run).keys() == weights(full).keys()
    assert all(torch.equal(weights(run)[k], weights(full)[k]) for k in weights(full))  # as if never interrupted
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]  # no torn row, no duplicate


def test_wandb_mode_from_the_environment_wins(ds, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    train(cfg_for(ds, tmp_path / "r", "wandb.mode=offline"), progress=False)
    assert not (tmp_path / "r" / "wandb").exists()


def test_a_run_resumes_when_its_dataset_is_named_another_way_or_its_folder_moved(ds, tmp_path, monkeypatch):
    full = tmp_path / "full"
    train(cfg_for(ds, full), progress=False)
    train(cfg_for(ds, tmp_path / "first"), progress=False, stop_at=4)
    (tmp_path / "first").rename(tmp_path / "moved")
    monkeypatch.chdir(ds.parent)
    result = train(cfg_for(Path(".") / ds.name, tmp_path / "moved"), progress=False)
    assert result["step"] == 8
    assert all(torch.equal(weights(tmp_path / "moved")[k], weights(full)[k]) for k in weights(full))


def test_a_run_resumes_from_another_working_folder_with_relative_paths(ds, tmp_path, monkeypatch):
    """Relative dataset and init_from paths given from another folder name the same data and checkpoint
    (was refused: the stored relative path was resolved against the new folder)."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(ds, work / "ds")
    monkeypatch.chdir(work)
    train(cfg_for(Path("ds"), Path("base"), "steps=2"), progress=False)
    train(cfg_for(Path("ds"), Path("warm"), "init_from=base"), progress=False, stop_at=4)
    monkeypatch.chdir(work / "warm")
    result = train(cfg_for(Path("../ds"), Path("."), "init_from=../base"), progress=False)
    assert result["step"] == 8
    # another dataset, or another warm start, is still refused
    other = synthetic_dataset(tmp_path / "other", seed=3)
    with pytest.raises(UserError, match="holds other episodes than"):
        train(cfg_for(other, Path("."), "init_from=../base", "steps=9"), progress=False)
    train(cfg_for(Path("../ds"), tmp_path / "base2", "steps=1"), progress=False)
    with pytest.raises(UserError, match="warm-started from '../base', this run names"):
        train(cfg_for(Path("../ds"), Path("."), f"init_from={tmp_path / 'base2'}", "steps=9"), progress=False)


def test_a_plan_head_trains_on_recorded_plans_and_needs_them(ds, tmp_path, capsys):
    out = tmp_path / "plan"
    train(cfg_for(ds, out, "net.plan_head=true"), progress=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_plan"] > 0 for r in rows if "loss" in r)
    policy = load_policy(out, device="cpu")
    assert policy.model.cfg.plan_head
    old = synthetic_dataset(tmp_path / "old", plans=False)  # collected before plans were recorded
    with pytest.raises(UserError, match="no expert plans .* net.plan_head"):
        train(cfg_for(old, tmp_path / "p2", "net.plan_head=true"), progress=False)


def test_a_lane_threshold_is_carried_by_the_checkpoint_and_can_be_replaced_when_loading(ds, tmp_path):
    out = tmp_path / "plan"
    train(cfg_for(ds, out, "net.plan_head=true", "net.plan_threshold=0.7"), progress=False)
    assert load_policy(out, device="cpu").model.cfg.plan_threshold == 0.7
    looser = load_policy(out, device="cpu", plan_threshold=0.0)
    assert looser.model.cfg.plan_threshold == 0.0 and looser.meta["net"]["plan_threshold"] == 0.0
    with pytest.raises(UserError, match=r"plan_threshold must be in \[0, 1\)"):
        load_policy(out, device="cpu", plan_threshold=1.5)
    # a warm start may drive with another threshold (a rule, not weights)
    warm = train(cfg_for(ds, tmp_path / "warm", "net.plan_head=true", f"init_from={out}"), progress=False)
    assert load_policy(warm["run_dir"], device="cpu").model.cfg.plan_threshold == 0.0
    plain = tmp_path / "plain"
    train(cfg_for(ds, plain), progress=False)
    with pytest.raises(UserError, match="plan_threshold applies to a policy with a plan head"):
        load_policy(plain, device="cpu", plan_threshold=0.7)


def test_a_folder_of_the_users_is_refused_before_anything_is_written(ds, tmp_path):
    """`driving train config.yaml out=.` in a project folder replaced the user's config.yaml with the
    resolved config and put checkpoints among their files; now refused, the folder as it was."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds files that are not a training run's \(notes.txt\)"):
        train(cfg_for(ds, proj), progress=False)
    assert sorted(p.name for p in proj.iterdir()) == ["notes.txt"]
    (proj / "notes.txt").unlink()
    (proj / "config.yaml").write_text("# my settings\nsteps: 3\n")
    with pytest.raises(UserError, match=r"config.yaml was not written by `driving train`"):
        train(cfg_for(ds, proj), progress=False)
    assert (proj / "config.yaml").read_text() == "# my settings\nsteps: 3\n"
    assert sorted(p.name for p in proj.iterdir()) == ["config.yaml"]


def test_a_run_stopped_before_its_first_checkpoint_resumes_in_its_folder(ds, tmp_path):
    """Its own config.yaml (and metrics) are there, no checkpoint yet: not someone else's folder."""
    run = tmp_path / "run"
    train(cfg_for(ds, run), progress=False, stop_at=1)
    shutil.rmtree(run / "checkpoints")  # as if stopped before checkpoint_every
    assert (run / "config.yaml").is_file()
    summary = train(cfg_for(ds, run), progress=False)
    assert (run / "checkpoints" / "last").exists() and summary


def test_asking_a_trained_run_for_fewer_steps_says_nothing_was_done(ds, tmp_path, capsys):
    from driving.cli import main

    run = tmp_path / "run"
    train(cfg_for(ds, run), progress=False)
    capsys.readouterr()
    assert main(["train", f"dataset={ds}", f"out={run}", *BASE, "steps=2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "steps=2 asks for fewer: nothing to do" in out and "\ntrained " not in "\n" + out
