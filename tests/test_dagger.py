"""DAgger: training on several datasets at once, warm starts, disagreement weights, and the
`driving dagger` rounds (the student drives, the expert labels, every round scored, resumable)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from driving.cli import main
from driving.config import load_config
from driving.data.format import Dataset, DatasetError
from driving.data.tensors import DeviceData, check_compatible, fingerprint, split_episodes
from driving.errors import UserError
from driving.train import TrainConfig, sample_weights, split_seeds, train
from tests.helpers import synthetic_dataset

BASE = ["batch_size=8", "device=cpu", "wandb.mode=disabled", "log_every=2", "val_every=4",
        "checkpoint_every=4", "val_fraction=0.25", "optim.warmup_steps=2", "threads=1"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    return synthetic_dataset(root / "a", lengths=(6, 5, 7), seed=0), synthetic_dataset(root / "b", lengths=(4, 7, 3), seed=1)


def test_several_datasets_are_sampled_by_share_and_fingerprinted_together(two):
    a, b = (Dataset.open(p) for p in two)
    data = DeviceData([a, b], stack=2, device=CPU)
    assert data.n == 18 + 14
    assert data.source.tolist() == [0] * 18 + [1] * 14
    # frames of the second dataset still stack within their own episodes
    first_b = data.stacks(torch.tensor([18]))[0]
    assert first_b[:, 0, 0].tolist() == [0, 0] and first_b[:, 0, 1].tolist() == [0, 0]
    gen = torch.Generator().manual_seed(0)
    only_b = data.sample(500, gen, [0.0, 1.0])
    assert data.source[only_b].eq(1).all()
    quarter = data.source[data.sample(8000, gen, [1.0, 3.0])].eq(0).float().mean()
    assert abs(float(quarter) - 0.25) < 0.03
    assert fingerprint([a]) == fingerprint(a)
    assert len({fingerprint([a, b]), fingerprint([b, a]), fingerprint(a), fingerprint(b)}) == 4


def test_datasets_that_disagree_on_camera_or_scenario_are_refused(tmp_path, two):
    tall = synthetic_dataset(tmp_path / "tall", height=40)
    with pytest.raises(DatasetError, match="camera.height: 32 in .*40 in"):
        check_compatible([Dataset.open(two[0]), Dataset.open(tall)])
    cfg = load_config(TrainConfig, None, [f"dataset=[{two[0]},{tall}]", f"out={tmp_path / 'run'}", "steps=2", *BASE])
    with pytest.raises(UserError, match="must agree"):
        train(cfg, progress=False)
    with pytest.raises(UserError, match="dataset_weights"):
        load_config(TrainConfig, None, [f"dataset=[{two[0]},{tall}]", "dataset_weights=[1.0]"])


def test_training_on_two_datasets_resumes_exactly(two, tmp_path):
    args = [f"dataset=[{two[0]},{two[1]}]", "dataset_weights=[1.0,1.0]", "steps=8", *BASE]
    full = train(load_config(TrainConfig, None, [*args, f"out={tmp_path / 'full'}"]), progress=False)
    train(load_config(TrainConfig, None, [*args, f"out={tmp_path / 'split'}"]), progress=False, stop_at=4)
    split = train(load_config(TrainConfig, None, [*args, f"out={tmp_path / 'split'}"]), progress=False)
    assert split["param_digest"] == full["param_digest"]
    meta = json.loads((tmp_path / "full" / "checkpoints" / "last" / "policy.json").read_text())
    assert meta["dataset"]["path"] == [str(p) for p in two]
    assert meta["dataset"]["frames"] == 32


def test_warm_start_begins_from_the_checkpoint_and_refuses_another_model(two, tmp_path):
    first = tmp_path / "first"
    train(load_config(TrainConfig, None, [f"dataset={two[0]}", f"out={first}", "steps=8", *BASE]), progress=False)
    # with a learning rate far below float32's resolution (0 is refused), the warm-started run's parameters
    # are the checkpoint's (BatchNorm's running statistics move in any case)
    warm = load_config(TrainConfig, None, [f"dataset=[{two[0]},{two[1]}]", f"out={tmp_path / 'warm'}", "steps=2",
                                           f"init_from={first / 'checkpoints' / 'last'}", "optim.lr=1e-30", *BASE])
    train(warm, progress=False)
    a = torch.load(first / "checkpoints" / "last" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "warm" / "checkpoints" / "last" / "weights.pt", weights_only=True)
    params = [k for k in a if "running_" not in k and not k.endswith("num_batches_tracked")]
    assert len(params) > 10 and all(torch.equal(a[k], b[k]) for k in params)
    meta = json.loads((tmp_path / "warm" / "checkpoints" / "last" / "policy.json").read_text())
    assert meta["init_from"].endswith("00000008")
    cold = load_config(TrainConfig, None, [f"dataset={two[0]}", f"out={tmp_path / 'cold'}", "steps=2",
                                           "optim.lr=1e-30", *BASE])
    train(cold, progress=False)
    c = torch.load(tmp_path / "cold" / "checkpoints" / "last" / "weights.pt", weights_only=True)
    assert not any(torch.equal(a[k], c[k]) for k in params if k.endswith("weight") and a[k].dim() > 1)  # fresh
    wide = load_config(TrainConfig, None, [f"dataset={two[0]}", f"out={tmp_path / 'wide'}", "steps=2", "net.width=2.0",
                                           f"init_from={first}", *BASE])
    with pytest.raises(UserError, match="init_from .* different model .*net.width"):
        train(wide, progress=False)


def test_a_warm_start_with_another_seed_holds_out_the_episodes_its_init_held_out(two, tmp_path, capsys):
    """Validation of a warm start never scores episodes the initial weights were fitted to: each dataset
    its init checkpoint trained on is split as there (seed 7 alone would hold out another episode), a
    new dataset by the run's own seed; an interrupted warm start resumes to the uninterrupted one."""
    first = tmp_path / "first"
    train(load_config(TrainConfig, None, [f"dataset={two[0]}", f"out={first}", "steps=4", "seed=0", *BASE]),
          progress=False)
    assert split_episodes(3, 0.25, 0)[1].tolist() != split_episodes(3, 0.25, 7)[1].tolist()  # the test can fail

    def warm(out, **kw):
        return train(load_config(TrainConfig, None, [f"dataset=[{two[1]},{two[0]}]", f"out={tmp_path / out}",
                                                     "steps=8", "seed=7", f"init_from={first}", *BASE]), **kw)

    full = warm("warm", progress=False)
    meta = json.loads((tmp_path / "warm" / "checkpoints" / "last" / "policy.json").read_text())
    base = json.loads((first / "checkpoints" / "last" / "policy.json").read_text())
    assert [{k: x[k] for k in ("fingerprint", "seed", "val_fraction")} for x in base["splits"]] == [
        {"fingerprint": fingerprint(Dataset.open(two[0])), "seed": 0, "val_fraction": 0.25}]
    # two[1] is new (first in the list: the run's seed), two[0] keeps its split though listed second
    assert [x["seed"] for x in meta["splits"]] == [7, 0]
    warm("split", progress=False, stop_at=4)
    assert warm("split", progress=False)["param_digest"] == full["param_digest"]
    # a larger validation share than the init held out says which episodes it cannot keep unseen
    more = load_config(TrainConfig, None, [f"dataset={two[0]}", f"out={tmp_path / 'more'}", "steps=1",
                                           f"init_from={first}", *BASE, "val_fraction=0.6"])
    capsys.readouterr()
    assert split_seeds(more, [Dataset.open(two[0])], None, base) == [0]
    assert "larger share (0.6) than init_from held out (0.25)" in capsys.readouterr().err
    # the same collection with other episodes (extended since) is split afresh, and the run says so
    extended = tmp_path / "extended"
    shutil.copytree(two[0], extended)
    index = json.loads((extended / "index.json").read_text())
    (extended / "index.json").write_text(json.dumps(index[:2]))
    fresh = load_config(TrainConfig, None, [f"dataset={extended}", "seed=5", *BASE])
    assert split_seeds(fresh, [Dataset.open(extended)], None, base) == [5]
    assert "holds other episodes than when init_from trained on it" in capsys.readouterr().err


def test_label_spread_follows_the_dataset_shares(two, tmp_path):
    """Under dataset_weights the loss is standardised by the spread of the labels training draws: a
    dataset with no share does not count, and equal shares of unequal datasets weigh their frames apart."""
    a, b = (Dataset.open(p) for p in two)
    data = DeviceData([a, b], stack=2, device=CPU)
    only_a = DeviceData([a], stack=2, device=CPU)
    for got, want in ((data.stats([1.0, 0.0]), only_a.stats()), (data.stats([18.0, 14.0]), data.stats())):
        # no share for b: a's own statistics; shares as the frame counts (18, 14): every frame alike
        for k in ("frame_mean", "frame_std", "speed_mean", "speed_std"):
            assert np.isclose(got[k], want[k], rtol=1e-5), k
        assert np.allclose(got["action_std"], want["action_std"], rtol=1e-5)
    equal = data.stats([1.0, 1.0])
    w = torch.cat([torch.full((18,), 0.5 / 18), torch.full((14,), 0.5 / 14)]).double()
    mean = (w * data.speed.double()).sum()
    assert np.isclose(equal["speed_mean"], float(mean))
    spread = (w * (data.speed.double() - mean) ** 2).sum().sqrt() * (32 / 31) ** 0.5  # unbiased over 32 frames
    assert np.isclose(equal["speed_std"], float(spread))
    assert not np.isclose(equal["speed_std"], data.stats()["speed_std"], rtol=1e-4)
    # a one-frame dataset beside 4,199 frames (the subsample takes every 2nd): its share is measured on
    # its own frame, not left to the stride of a subsample that skips it (was: NaN with all the share on it)
    big = Dataset.open(synthetic_dataset(tmp_path / "big", lengths=(200,) * 20 + (199,), seed=3))
    one = Dataset.open(synthetic_dataset(tmp_path / "one", lengths=(1,), seed=4))
    pair = DeviceData([big, one], stack=2, device=CPU)
    alone = pair.stats([0.0, 1.0])
    assert np.isclose(alone["frame_mean"], float(pair.frames[-1].double().mean()))
    assert alone["frame_std"] > 1.0 and np.isfinite(alone["frame_std"])


def test_frames_where_the_student_disagreed_weigh_more(tmp_path, two):
    dagger = Dataset.open(synthetic_dataset(tmp_path / "d", lengths=(4, 3), seed=2, student_offset=0.5))
    data = DeviceData([Dataset.open(two[0]), dagger], stack=2, device=CPU, disagree_threshold=0.3)
    # demonstrations never disagree; the DAgger round's odd steps do (offset 0.5 > 0.3)
    assert data.disagree.tolist() == [False] * 18 + [False, True, False, True, False, True, False]
    cfg = load_config(TrainConfig, None, ["disagree_weight=4"])
    idx = torch.tensor([0, 19, 20])
    assert sample_weights(data, idx, cfg).tolist() == [1.0, 4.0, 1.0]
    assert sample_weights(data, idx, load_config(TrainConfig, None, [])) is None  # off by default
    strict = DeviceData([dagger], stack=2, device=CPU, disagree_threshold=0.6)
    assert not strict.disagree.any()


TINY = ["size=cpu", "collect.episodes=3", "collect.max_steps=12", "collect.workers=1", "collect.camera.height=48",
        "collect.camera.width=24", "train.steps=4", "train.batch_size=8", "train.net.stack=2", "train.val_every=2",
        "train.checkpoint_every=2", "train.device=cpu", "train.threads=1", "eval.episodes=2", "eval.max_steps=12",
        "eval.videos=0", "eval.workers=1", "episodes=2", "workers=1", "beta=[0.5]", "device=cpu", "-q"]


def test_dagger_rounds_label_the_students_states_and_resume_after_a_kill(tmp_path, capsys, monkeypatch):
    import driving.evaluate as evaluate_mod

    out = tmp_path / "dagger"
    args = ["dagger", f"out={out}", "rounds=1", *TINY]
    real = evaluate_mod.evaluate
    calls = []

    def killed_in_round_1(ckpt, cfg, progress=True, **kw):
        calls.append(cfg.out)
        if "round1" in str(cfg.out):
            raise KeyboardInterrupt
        return real(ckpt, cfg, progress, **kw)

    monkeypatch.setattr(evaluate_mod, "evaluate", killed_in_round_1)
    assert main(args) == 130  # killed while scoring round 1
    partial = json.loads((out / "rounds.json").read_text())  # round 0's table, marked as not the whole run
    assert [r["round"] for r in partial["rounds"]] == [0] and partial["finished"] is False
    assert "NOT FINISHED: 1 of 2 rounds (0 is BC) done" in (out / "rounds.md").read_text()
    round0_eval = (out / "round0" / "eval" / "eval.json").stat().st_mtime_ns
    episodes1 = sorted((out / "round1" / "data" / "episodes").iterdir())
    driven = [p.stat().st_mtime_ns for p in episodes1]
    assert len(driven) == 2
    monkeypatch.setattr(evaluate_mod, "evaluate", real)
    assert main(args) == 0
    # the second run did not redo round 0's evaluation nor drive round 1 again
    assert (out / "round0" / "eval" / "eval.json").stat().st_mtime_ns == round0_eval
    assert [p.stat().st_mtime_ns for p in episodes1] == driven

    ds = Dataset.open(out / "round1" / "data")
    assert ds.meta["dagger"]["round"] == 1 and ds.meta["dagger"]["beta"] == 0.5
    assert ds.meta["dagger"]["checkpoint"] == str((out / "round0" / "run" / "checkpoints" / "last").resolve())
    assert [r["seed"] for r in ds.index] == [100_000, 100_001]
    assert ds.meta["camera"]["height"] == 48  # round 0's camera
    ep = ds.episode(0)
    assert ep["student_action"].shape == ep["expert_action"].shape == (12, 2)
    took_expert = np.all(ep["action"] == ep["expert_action"], axis=1)
    took_student = np.all(ep["action"] == ep["student_action"], axis=1)
    assert np.all(took_expert | took_student)  # no noise by default: one of the two was executed
    assert 0.0 < ds.index[0]["expert_share"] < 1.0
    assert ep["frames"].shape == (12, 48, 24) and ep["frames"].max() > ep["frames"].min()

    policy = json.loads((out / "round1" / "run" / "checkpoints" / "last" / "policy.json").read_text())
    assert policy["dataset"]["path"] == [str(out / "round0" / "data"), str(out / "round1" / "data")]
    assert policy["init_from"] == str((out / "round0" / "run" / "checkpoints" / "last").resolve())
    assert policy["step"] == 2  # round_steps default: half of round 0's

    board = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in board["rounds"]] == [0, 1]
    r0, r1 = board["rounds"]
    assert r0["beta"] is None and r1["beta"] == 0.5 and r1["frames"] == 3 * 12 + 2 * 12
    assert r0["expert"]["driving_score"]["mean"] == r1["expert"]["driving_score"]["mean"]  # same seeds
    # round 1 is scored beside round 0's expert episodes, not a second drive of them
    ev0, ev1 = (json.loads((out / f"round{r}" / "eval" / "eval.json").read_text()) for r in (0, 1))
    assert ev1["config"]["expert_from"] == str(out / "round0" / "eval") and ev0["config"]["expert_from"] is None
    assert ev1["scenarios"]["highway"]["episodes"]["expert"] == ev0["scenarios"]["highway"]["episodes"]["expert"]
    assert {"driving_score", "collision_rate", "lane_changes"} <= set(r1["gain_over_bc"]) and r0["gain_over_bc"] == {}
    assert "| 1 | 0.5 |" in (out / "rounds.md").read_text() and "NOT FINISHED" not in (out / "rounds.md").read_text()
    assert board["finished"] is True and board["rounds_planned"] == 2
    assert "rounds.md" in capsys.readouterr().out
    # the same folder asked for fewer student episodes or fine-tuning steps than its rounds hold: refused
    for smaller, needle in [("episodes=1", "already holds episodes up to number 1 and episodes=1 asks for fewer"),
                            ("round_steps=1", "is already trained to step 2 and round_steps=1 asks for fewer")]:
        assert main([*args, smaller]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err


def test_a_round_checkpoint_for_another_camera_is_refused(tmp_path):
    from driving.dagger import DaggerConfig, drive_round

    out = tmp_path / "d"
    assert main(["dagger", f"out={out}", "rounds=0", *TINY]) == 0
    meta = Dataset.open(out / "round0" / "data").meta
    other = {**meta, "camera": {**meta["camera"], "height": 64}}
    with pytest.raises(UserError, match="camera config does not match .*height: 48 trained, 64 given"):
        drive_round(out / "round0" / "run", other, tmp_path / "r1", 1, 0.0, [100_000], DaggerConfig())


@pytest.mark.parametrize("extra, needle", [
    (["beta=[0.5,1.5]"], "beta (the expert's share per round) must list values in [0, 1]"),
    (["takeover=-1"], "takeover must be a number >= 0"),
    (["dataset=/nonexistent/data"], "dataset /nonexistent/data not found"),
    (["train.init_from=/x"], "train.init_from is set by the rounds themselves"),
    (["noise_rounds=sometimes"], "noise_rounds must be all or alone"),
    (["shares=episodes"], "shares must be frames (uniform over every frame) or rounds"),
    (["train.dataset_weights=[1.0]"], "train.dataset_weights is set by the rounds themselves"),
])
def test_bad_dagger_input_is_one_line(tmp_path, capsys, extra, needle):
    assert main(["dagger", f"out={tmp_path / 'x'}", "size=cpu", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_round_noise_goes_to_every_round_or_only_where_the_student_drives_alone():
    from driving.dagger import DaggerConfig

    every = load_config(DaggerConfig, None, ["noise.steer=0.15", "noise.steer_duty=0.5"])
    alone = load_config(DaggerConfig, None, ["noise.steer=0.15", "noise.steer_duty=0.5", "noise_rounds=alone"])
    assert every.noise_of(0.5).steer == every.noise_of(0.0).steer == 0.15
    assert alone.noise_of(0.0) == every.noise_of(0.0)  # beta 0: the same noise, duty and all
    quiet = alone.noise_of(0.5)
    assert quiet.steer == quiet.accel == 0.0 and alone.noise.steer == 0.15  # the config itself is untouched


def test_rounds_share_batches_equally_or_by_frames(tmp_path, two):
    """shares=rounds: every round's dataset an equal share of a fine-tuning batch, whatever its frames."""
    from driving.dagger import DaggerConfig, resolve_stages

    plans = {how: resolve_stages(load_config(DaggerConfig, None, [
        f"dataset={two[0]}", f"out={tmp_path / how}", "size=cpu", "rounds=2", f"shares={how}"]))
        for how in ("frames", "rounds")}
    assert [x["train"].dataset_weights for x in plans["frames"]["rounds"]] == [None, None, None]
    by_round = [x["train"] for x in plans["rounds"]["rounds"]]
    assert [t.dataset_weights for t in by_round] == [None, [1.0, 1.0], [1.0, 1.0, 1.0]]
    assert [len(t.datasets) for t in by_round] == [1, 2, 3]
    # the weights reach the sampler: two datasets of 18 and 14 frames, equal shares of the batch
    data = DeviceData([Dataset.open(p) for p in two], stack=2, device=CPU)
    src = data.source[data.sample(20000, torch.Generator().manual_seed(0), by_round[1].dataset_weights)]
    assert abs(src.float().mean().item() - 0.5) < 0.02
    src = data.source[data.sample(20000, torch.Generator().manual_seed(0), None)]
    assert abs(src.float().mean().item() - 14 / 32) < 0.02


def test_a_bc_run_trained_before_is_round_0(tmp_path, capsys):
    """round0=RUN: the rounds go on from a BC run trained elsewhere, exactly as if this command had
    trained it (the same student episodes, the same fine-tuned weights), and RUN is not trained again."""
    whole, reuse = tmp_path / "whole", tmp_path / "reuse"
    assert main(["dagger", f"out={whole}", "rounds=1", *TINY]) == 0
    run0 = whole / "round0" / "run"
    def files(run):  # wandb's own service may still append to its logs: not this command's writing
        return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and "wandb" not in p.parts}

    before = files(run0)
    assert main(["dagger", f"out={reuse}", f"round0={run0}", "rounds=1", *TINY]) == 0
    said = capsys.readouterr()
    assert "== round 0: the BC run" in said.out
    assert "note: round 0 trains on" not in said.err  # TINY's collect.* keys are those its data had
    assert not (reuse / "round0" / "run").exists() and not (reuse / "round0" / "data").exists()
    assert files(run0) == before  # untouched

    a, b = Dataset.open(whole / "round1" / "data"), Dataset.open(reuse / "round1" / "data")
    last = str((run0 / "checkpoints" / "last").resolve())
    assert a.meta["dagger"]["checkpoint"] == b.meta["dagger"]["checkpoint"] == last
    assert np.array_equal(a.episode(0)["frames"], b.episode(0)["frames"])
    assert np.array_equal(a.episode(1)["action"], b.episode(1)["action"])
    wa, wb = (torch.load(d / "round1" / "run" / "checkpoints" / "last" / "weights.pt", weights_only=False)
              for d in (whole, reuse))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    boards = [json.loads((d / "rounds.json").read_text()) for d in (whole, reuse)]
    assert [r["policy"] for r in boards[0]["rounds"]] == [r["policy"] for r in boards[1]["rounds"]]
    assert boards[1]["dataset0"] == str(whole / "round0" / "data")
    assert f"Round 0 is the BC run {run0}" in (reuse / "rounds.md").read_text()
    # re-run without round0, it would collect and train a round 0 of its own: refused before it starts
    assert main(["dagger", f"out={reuse}", "rounds=1", *TINY]) == 2
    assert f"went on from round0={run0}" in capsys.readouterr().err
    assert not (reuse / "round0" / "data").exists()
    # collect.* keys its demonstrations were not collected with are unused, and named (a recipe carries them)
    other = ["collect.noise.steer=0.05", "collect.camera.height=64", "collect.workers=2", "collect.episodes=5",
             "collect.env.vehicles_count=7"]
    assert main(["dagger", f"out={tmp_path / 'noted'}", f"round0={run0}", "rounds=0", *TINY, *other]) == 0
    err = capsys.readouterr().err
    assert (f"note: round 0 trains on {whole / 'round0' / 'data'} as collected: collect.episodes=5 where they are "
            "3, collect.camera.height=64 where they had 48, collect.noise.steer=0.05 where they had 0.15, "
            "collect.env.vehicles_count=7 where they had the scenario's own (collect.* keys apply only where "
            "round 0 collects") in err and "collect.workers" not in err


def test_a_round0_run_that_cannot_be_round_0_is_one_line(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["dagger", f"out={out}", "rounds=0", *TINY]) == 0
    run0 = out / "round0" / "run"
    other = synthetic_dataset(tmp_path / "other", lengths=(6, 5), seed=3)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run0, unfinished)
    text = (unfinished / "config.yaml").read_text()
    assert "steps: 4\n" in text
    (unfinished / "config.yaml").write_text(text.replace("steps: 4\n", "steps: 8\n"))  # stopped at 4 of 8
    capsys.readouterr()
    dangling = tmp_path / "dangling"
    shutil.copytree(run0, dangling, symlinks=True)
    target = (dangling / "checkpoints" / "last").readlink()
    shutil.rmtree(dangling / "checkpoints" / target)
    extended = tmp_path / "extended"  # the run's own dataset collected further since
    shutil.copytree(out / "round0", extended)
    assert main(["collect", "scenario=highway", f"out={extended / 'data'}", "episodes=4", "max_steps=12",
                 "workers=1", "camera.height=48", "camera.width=24", "-q"]) == 0
    (extended / "run" / "config.yaml").write_text(
        (extended / "run" / "config.yaml").read_text().replace(str(out / "round0" / "data"), str(extended / "data")))
    capsys.readouterr()
    for extra, needle in [([f"round0={tmp_path}"], "is not a `driving train` run folder"),
                          ([f"round0={unfinished}"], "stopped at step 4 of its 8: finish it first"),
                          ([f"round0={dangling}"], "checkpoints/last points to"),
                          ([f"round0={run0}", f"dataset={other}"], "holds other episodes than round0"),
                          ([f"round0={extended / 'run'}"], "which holds other episodes now (extended or collected"),
                          ([f"round0={run0}", "scenario=merge"], "was trained on highway data, scenario=merge: set "
                                                                 "scenario=highway"),
                          # the rounds would fine-tune another model: refused before round 0 is scored
                          ([f"round0={run0}", "train.net.plan_head=true"], "whose model differs from the rounds' "
                                                                           "train keys (net.plan_head")]:
        assert main(["dagger", f"out={tmp_path / 'x'}", "rounds=1", *TINY, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err, err
        assert not (tmp_path / "x" / "round0").exists()
    # the rounds would write into the run: refused
    inside = tmp_path / "y" / "round0"
    shutil.copytree(run0, inside)
    assert main(["dagger", f"out={tmp_path / 'y'}", f"round0={inside}", "rounds=0", *TINY]) == 2
    assert "overlap (the run lies in y/round0, where a round writes)" in capsys.readouterr().err
    # a folder whose rounds went on from its own round 0, re-run with round0 (and the reverse): refused at once
    assert main(["dagger", f"out={out}", f"round0={unfinished}", "rounds=0", *TINY]) == 2
    assert "went on from its own round 0 (no round0)" in capsys.readouterr().err
    assert main(["scoreboard", f"out={tmp_path / 's'}", "rounds=1", f"dagger.round0={run0}", "size=cpu"]) == 2
    assert "dagger.round0 is set by the scoreboard itself" in capsys.readouterr().err
