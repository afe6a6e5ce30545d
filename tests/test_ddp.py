"""Multi-process training (issue 13 part 3): two CPU processes under torchrun (gloo) on a tiny dataset.

One DDP run (module fixture) is checked three ways: the ranks end with identical weights (every rank's
final parameter digest, which the run records, and the checkpoint's); the loss falls; the checkpoint
resumes in a single process from the saved step and state. A last test resumes that single-process
checkpoint on two processes again. Four torchrun launches in all (one diverges on purpose, one evaluates closed loop), about 55 s on 2 cores.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from driving import load_policy
from driving.config import load_config
from driving.train import TrainConfig, _param_digest, lr_factor, train
from tests.helpers import synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
# Learnable quickly (no augmentation, a higher lr); every step logged, validation every 4 steps.
BASE = ["batch_size=16", "device=cpu", "wandb.mode=disabled", "log_every=1", "val_every=4", "checkpoint_every=20",
        "val_fraction=0.34", "optim.warmup_steps=5", "optim.lr=0.003", "augment.enabled=false", "threads=1"]
DDP_STEPS, RESUMED_STEPS, DDP_AGAIN_STEPS = 40, 50, 56
TIMEOUT_S = 180  # a hung collective must fail the test, not the suite

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no torch.distributed with the gloo backend")


def torchrun(ds: Path, out: Path, steps: int, nproc: int = 2, extra=(), check=True) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m driving.cli train ...` on CPU (gloo), one thread each.
    On a timeout the whole process group (torchrun and its workers) is killed."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "driving.cli", "train", f"dataset={ds}", f"out={out}", f"steps={steps}", *BASE, *extra, "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT_S} s:\n{stdout[-2000:]}\n{stderr[-4000:]}")
    assert proc.returncode == 0 or not check, f"torchrun exited {proc.returncode}:\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train_rows(run: Path) -> list[dict]:
    return [r for r in rows(run) if "loss" in r]


def final_digests(run: Path) -> list[str]:
    """Every rank's parameter digest at the end of the (last) DDP run, as the run recorded them."""
    final = [r for r in rows(run) if "param_digests" in r]
    assert final, "the DDP run recorded no per-rank digests"
    return final[-1]["param_digests"]


def train_state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last" / "train_state.pt", weights_only=False)


def checkpoint_digest(run: Path) -> str:
    return _param_digest(load_policy(run / "checkpoints" / "last", device="cpu").model)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)  # `last` stays a pointer
    return dst


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    # 6 episodes of 40 frames: 4 train, 2 validation; the steering label is drawn as a bar, so learnable
    return synthetic_dataset(tmp_path_factory.mktemp("ddp") / "ds", lengths=(40,) * 6, seed=1)


@pytest.fixture(scope="module")
def ddp_run(ds, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp") / "run"
    return out, torchrun(ds, out, DDP_STEPS)


@pytest.fixture(scope="module")
def resumed(ds, ddp_run, tmp_path_factory) -> tuple[Path, str, dict]:
    """The DDP run's folder (a copy) trained on in this one process to RESUMED_STEPS; also the digest of
    the weights its first step started from."""
    out = copy_run(ddp_run[0], tmp_path_factory.mktemp("resume") / "run")
    import driving.train as train_mod

    real_step, seen = train_mod.optimisation_step, []

    def step(fwd, model, *args, **kwargs):
        if not seen:
            seen.append(_param_digest(model))
        return real_step(fwd, model, *args, **kwargs)

    cfg = load_config(TrainConfig, None, [f"dataset={ds}", f"out={out}", f"steps={RESUMED_STEPS}", *BASE])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "optimisation_step", step)
        result = train(cfg, progress=False)
    return out, seen[0], result


def test_both_ranks_end_with_identical_weights(ddp_run):
    out, proc = ddp_run
    assert proc.stdout.count(f"to step {DDP_STEPS}") == 2  # both ranks finished (each prints its summary)
    assert [r["step"] for r in train_rows(out)] == list(range(1, DDP_STEPS + 1))
    assert all(r["world_size"] == 2 for r in train_rows(out))
    digests = final_digests(out)
    assert len(digests) == 2 and digests[0] == digests[1], digests
    assert rows(out)[-1]["ranks_agree"] is True
    # ... and they are the weights the run saved
    assert os.readlink(out / "checkpoints" / "last") == f"{DDP_STEPS:08d}"
    assert checkpoint_digest(out) == digests[0]
    # the ranks really drew different batches (else agreeing would prove nothing about gradient averaging)
    rng = train_state(out)["rng"]
    assert isinstance(rng, list) and len(rng) == 2
    assert not torch.equal(rng[0]["sampler"], rng[1]["sampler"])


def test_the_loss_falls(ddp_run):
    out, _ = ddp_run
    # Validation (rank 0, the same held-out episodes every time) is a deterministic function of the
    # weights: a model that did not change would log the same value at every step, so a drop this
    # large is learning, never chance.
    val = [r for r in rows(out) if "val_loss" in r]
    assert [r["step"] for r in val] == list(range(4, DDP_STEPS + 1, 4))
    first, last = val[0], val[-1]
    assert last["val_loss"] < 0.75 * first["val_loss"], (first, last)
    assert last["val_loss_steer"] < 0.5 * first["val_loss_steer"], (first, last)  # the learnable output
    # the training loss (rank 0's batches) too: the last 10 steps against the first 5
    loss = [r["loss"] for r in train_rows(out)]
    early, late = sum(loss[:5]) / 5, sum(loss[-10:]) / 10
    assert late < 0.8 * early, (early, late)


def test_the_ddp_checkpoint_resumes_in_one_process(ddp_run, resumed):
    ddp_out, _ = ddp_run
    out, start_digest, result = resumed
    # the first resumed step started from the weights both ranks ended with
    assert start_digest == final_digests(ddp_out)[0]
    assert result["step"] == RESUMED_STEPS and result["ranks_agree"] is True
    assert os.readlink(out / "checkpoints" / "last") == f"{RESUMED_STEPS:08d}"
    # metrics continue from the saved step: no step repeated or skipped, the new ones from one process
    tr = train_rows(out)
    assert [r["step"] for r in tr] == list(range(1, RESUMED_STEPS + 1))
    assert [r["world_size"] for r in tr] == [2] * DDP_STEPS + [1] * (RESUMED_STEPS - DDP_STEPS)
    # the schedule continues where it stopped (a fresh one would be back in warmup), to the new end
    cfg = load_config(TrainConfig, None, ["dataset=x", f"steps={RESUMED_STEPS}", *BASE])
    for r in tr[DDP_STEPS:]:
        assert math.isclose(r["lr"], cfg.optim.lr * lr_factor(r["step"], cfg), rel_tol=1e-6), r
    # it keeps the trained level, well below where the DDP run started
    val = [r for r in rows(out) if "val_loss" in r]
    assert val[-1]["step"] == RESUMED_STEPS and val[-1]["val_loss"] < 0.75 * val[0]["val_loss"]
    assert isinstance(train_state(out)["rng"], dict)  # saved by one process
    assert checkpoint_digest(out) != start_digest  # and it trained


def test_a_one_process_checkpoint_resumes_on_two(ds, resumed, tmp_path):
    out = copy_run(resumed[0], tmp_path / "run")
    torchrun(ds, out, DDP_AGAIN_STEPS)
    tr = train_rows(out)
    assert [r["step"] for r in tr] == list(range(1, DDP_AGAIN_STEPS + 1))
    assert all(r["world_size"] == 2 for r in tr[RESUMED_STEPS:])
    digests = final_digests(out)
    assert len(digests) == 2 and digests[0] == digests[1] == checkpoint_digest(out)
    # one saved sampler state, two ranks: each still draws batches of its own
    rng = train_state(out)["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["sampler"], rng[1]["sampler"])


def test_a_divergence_stops_every_rank_with_its_one_line(ds, tmp_path):
    # validation runs on rank 0 only (the logged loss, too, is each rank's own): a stop that one rank
    # decided alone left the other in its next collective, which failed with a page of gloo's errors
    extra = ["optim.lr=1e8", "optim.warmup_steps=0", "log_every=100", "val_every=2"]
    proc = torchrun(ds, tmp_path / "run", 40, extra=extra, check=False)
    assert proc.returncode != 0
    assert proc.stderr.count("error: training diverged by step 2") == 2, proc.stderr[-3000:]
    assert "[rank0]" not in proc.stderr and "[rank1]" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints" / "last").exists()


def test_a_new_best_on_a_step_that_is_no_checkpoint_step_is_saved_by_every_rank(ds, tmp_path):
    # only rank 0 evaluates; saving gathers every rank's sampler state: a `best` decided on rank 0 alone
    # left rank 1 in the next step's gradient all-reduce while rank 0 waited in the gather (a hang)
    out = tmp_path / "run"
    torchrun(ds, out, 8, extra=["eval.every=4", "eval.episodes=1", "eval.max_steps=4", "eval.workers=1",
                                "eval.video=false"])  # checkpoint_every=20: step 4 saves only `best`
    assert os.readlink(out / "checkpoints" / "last") == "00000008"
    assert (out / "checkpoints" / "best" / "weights.pt").is_file()
    assert len(train_state(out)["rng"]) == 2
    digests = final_digests(out)
    assert len(digests) == 2 and digests[0] == digests[1]
