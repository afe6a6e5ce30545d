"""The training step as a CUDA graph: the same results as the eager step, resumable either way.
The CUDA tests run where torch sees a GPU (the lent GPU machine); the rest everywhere."""
from __future__ import annotations

import json

import pytest
import torch

from driving.config import load_config
from driving.step_graph import Stepper, lr_as_tensor, plain_lr_state
from driving.train import TrainConfig, train
from tests.helpers import synthetic_dataset

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
BASE = ["steps=10", "batch_size=8", "wandb.mode=disabled", "log_every=2", "val_every=5", "checkpoint_every=5",
        "val_fraction=0.25", "optim.warmup_steps=3"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return synthetic_dataset(tmp_path_factory.mktemp("graph") / "ds")


def run(ds, out, *extra) -> dict:
    cfg = load_config(TrainConfig, None, [f"dataset={ds}", f"out={out}", *BASE, *extra])
    return train(cfg, progress=False)


def weights(out) -> dict:
    return torch.load(out / "checkpoints" / "last" / "weights.pt", weights_only=True, map_location="cpu")


def modes(out) -> list[str]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["step_mode"] for r in rows if "step_mode" in r]


def test_checkpointed_learning_rates_are_plain_floats():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], lr=0.01)
    lr_as_tensor(opt, torch.device("cpu"))
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) and opt.param_groups[0]["initial_lr"] == 0.01
    state = plain_lr_state(opt.state_dict())
    assert state["param_groups"][0]["lr"] == pytest.approx(0.01) and type(state["param_groups"][0]["lr"]) is float
    sched = plain_lr_state({"base_lrs": [torch.tensor(0.5)], "_last_lr": [0.25], "last_epoch": 3})
    assert sched == {"base_lrs": [0.5], "_last_lr": [0.25], "last_epoch": 3}


def test_eager_stepper_calls_the_step_every_time():
    calls = []
    st = Stepper(lambda: calls.append(1) or {"loss": torch.tensor(float(len(calls)))}, graph=False)
    assert [float(st()["loss"]) for _ in range(4)] == [1.0, 2.0, 3.0, 4.0]
    assert st.mode == "eager"


def test_cpu_training_steps_eagerly(ds, tmp_path):
    run(ds, tmp_path / "r", "device=cpu", "threads=1")
    assert set(modes(tmp_path / "r")) == {"eager"}


@cuda
def test_graphed_training_equals_eager_training(ds, tmp_path):
    run(ds, tmp_path / "eager", "device=cuda", "cuda_graph=false")
    run(ds, tmp_path / "graph", "device=cuda")
    assert set(modes(tmp_path / "eager")) == {"eager"}
    assert modes(tmp_path / "graph")[-1] == "cuda graph"
    a, b = weights(tmp_path / "eager"), weights(tmp_path / "graph")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-5), k


@cuda
def test_graphed_run_resumes_equal_and_moves_between_devices(ds, tmp_path):
    run(ds, tmp_path / "full", "device=cuda")
    run(ds, tmp_path / "split", "device=cuda")
    # an interrupted graphed run resumes to the same weights
    cfg = load_config(TrainConfig, None, [f"dataset={ds}", f"out={tmp_path / 'half'}", *BASE, "device=cuda"])
    train(cfg, progress=False, stop_at=5)
    run(ds, tmp_path / "half", "device=cuda")
    a, b = weights(tmp_path / "full"), weights(tmp_path / "half")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-5), k
    # a checkpoint written on the GPU resumes on the CPU (learning rates are stored as floats)
    cfg = load_config(TrainConfig, None, [f"dataset={ds}", f"out={tmp_path / 'moved'}", *BASE, "device=cuda"])
    train(cfg, progress=False, stop_at=5)
    run(ds, tmp_path / "moved", "device=cpu", "steps=10")
    assert weights(tmp_path / "moved")


@cuda
def test_a_run_saved_on_the_cpu_resumes_graphed_on_the_gpu(ds, tmp_path):
    """The optimiser's saved steps go onto the GPU with the capturable flag (AdamW in a graph needs both)."""
    cfg = load_config(TrainConfig, None, [f"dataset={ds}", f"out={tmp_path / 'moved'}", *BASE, "device=cpu"])
    train(cfg, progress=False, stop_at=5)
    run(ds, tmp_path / "moved", "device=cuda")
    assert modes(tmp_path / "moved")[-1] == "cuda graph"
    assert all(torch.isfinite(v.float()).all() for v in weights(tmp_path / "moved").values())
