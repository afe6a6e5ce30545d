"""The training step, and the policy's fixed-shape inference forward, as one CUDA graph each.

PilotNet's step is a few hundred small kernels (sampling, stacking, augmentation, forward, backward,
clipping, AdamW); launched one by one from Python it costs about 7.7 ms on an H100 whatever the
batch (MEASURED.md: overhead-bound). Captured once and replayed, the same kernels run back to back
with one launch. The replay computes what the eager step computes: the sampler's and dropout's
random numbers come from the same generators (registered with the graph, so each replay draws fresh
ones), and the learning rate is a tensor the schedule fills before each replay.

Where capture is impossible (CPU, DDP, torch.compile, frames in host memory) or fails, the step runs
eagerly; a failed capture says why once.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import torch

WARMUP = 3  # eager steps before capture, on a side stream (cuBLAS/cuDNN workspaces, autograd state)


def lr_as_tensor(opt: torch.optim.Optimizer, device: torch.device) -> None:
    """Each group's lr becomes a device tensor, so a captured optimiser step reads the current lr.
    `initial_lr` stays a float: the schedule then computes floats and fills the tensor without a sync."""
    for g in opt.param_groups:
        lr = float(g["lr"])
        g.setdefault("initial_lr", lr)
        g["lr"] = torch.tensor(lr, device=device)


def load_optimiser_state(opt: torch.optim.Optimizer, state: dict, device: torch.device) -> None:
    """A checkpoint's optimiser state, on this device: CUDA's capturable flags and tensor learning
    rates, or the CPU's plain ones, whichever device wrote it."""
    # the flag goes in before loading: torch places each saved `step` by it (on the parameters' device
    # where capturable, as a CUDA graph's AdamW needs; a CPU-saved run resumed on CUDA failed otherwise)
    capturable = device.type == "cuda"
    opt.load_state_dict({**state, "param_groups": [{**g, "capturable": capturable} for g in state["param_groups"]]})
    if device.type == "cuda":
        lr_as_tensor(opt, device)


def plain_lr_state(state: dict) -> dict:
    """An optimiser or scheduler state dict with float learning rates (a checkpoint then resumes on any
    device, with or without graphs)."""
    def plain(v):
        return float(v) if isinstance(v, torch.Tensor) and v.numel() == 1 else v

    out = dict(state)
    if "param_groups" in out:
        out["param_groups"] = [{k: plain(v) if k in ("lr", "initial_lr") else v for k, v in g.items()}
                               for g in out["param_groups"]]
    for k in ("base_lrs", "_last_lr"):
        if k in out:
            out[k] = [plain(v) for v in out[k]]
    return out


class Stepper:
    """Calls `step()` (which returns a dict of scalar tensors) once per training step: eagerly, or,
    with `graph`, eagerly for WARMUP steps and then by replaying one captured CUDA graph. The dict a
    replay returns holds the graph's output tensors: read them before the next call."""

    def __init__(self, step: Callable[[], dict], graph: bool, generators=(), what: str = "the training step",
                 fallback: str = "training goes on eagerly (cuda_graph=false skips the attempt)"):
        self.step = step
        self.graph = graph
        self.generators = list(generators)
        self.what, self.fallback = what, fallback
        self.calls = 0
        self.captured: torch.cuda.CUDAGraph | None = None
        self.outputs: dict | None = None

    @property
    def mode(self) -> str:
        return "cuda graph" if self.captured is not None else ("cuda graph (warming up)" if self.graph else "eager")

    def __call__(self) -> dict:
        self.calls += 1
        if self.captured is not None:
            self.captured.replay()
            return self.outputs
        if not self.graph:
            return self.step()
        if self.calls <= WARMUP:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step()
            torch.cuda.current_stream().wait_stream(side)
            return out
        try:
            g = torch.cuda.CUDAGraph()
            for gen in self.generators:
                g.register_generator_state(gen)
            with torch.cuda.graph(g):
                self.outputs = self.step()
        except Exception as e:  # noqa: BLE001 - any capture failure: train on, eagerly
            self.graph = False
            torch.cuda.synchronize()
            print(f"warning: CUDA graph capture of {self.what} failed ({type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''}); {self.fallback}", file=sys.stderr)
            return self.step()
        self.captured = g
        g.replay()  # capture records without running: this call's step runs now
        return self.outputs
