"""Training throughput, in one run, on one device:
  (a) the model's forward+backward+step alone, on synthetic tensors already on the device
  (b) the full training step with our data path (whole dataset as one uint8 tensor, index sampling,
      stacking and augmentation on the device)
  (c) the same step fed by a conventional torch DataLoader over the episode files (worker
      processes read episodes, build stacks in numpy, collate, pin, copy)
  (f) where (b) runs in bf16 (`amp`, driving/precision.py: CUDA, or a CPU with native bf16), (b) in fp32
and on CUDA, as `driving train` runs it by default (cuda_graph=true):
  (ag) (a) captured as one CUDA graph and replayed
  (g)  (b) captured as one CUDA graph and replayed
Prints samples/s of each, the ratios b/a (target >= 0.9 on a GPU) and b/c (target >= 3), the graph's
speed-up g/b and our data path's share of the graphed step (1 - g/ag, target <= 5%), and how far the
eager and graphed steps drift apart from the same start (largest relative loss difference).

    python scripts/bench_train.py [--dataset DIR] [--model pilotnet] [--batch-size 256] [--device auto]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import numpy as np
import torch


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


class EpisodeFiles(torch.utils.data.Dataset):
    """The conventional way: samples indexed globally, episodes read from disk by the workers."""

    def __init__(self, ds, stack: int):
        self.ds, self.stack = ds, stack
        lengths = np.array([r["length"] for r in ds.index])
        self.ends = np.cumsum(lengths)
        self.cache: dict = {}  # per worker: episodes already decompressed (not a strawman)

    def __len__(self):
        return int(self.ends[-1])

    def __getitem__(self, i):
        e = int(np.searchsorted(self.ends, i, side="right"))
        t = i - (self.ends[e - 1] if e else 0)
        if e not in self.cache:
            self.cache[e] = self.ds.episode(e, ("frames", "speed", "expert_action"))
        ep = self.cache[e]
        idx = np.maximum(np.arange(t - self.stack + 1, t + 1), 0)
        return (torch.from_numpy(ep["frames"][idx]), torch.tensor(ep["speed"][t]),
                torch.from_numpy(ep["expert_action"][t]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", help="a dataset folder (default: collect 8 highway episodes)")
    p.add_argument("--model", default="pilotnet")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=0, help="timed steps per measurement (default by device)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (as train's compile=true)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    return p


def early(line: str) -> None:
    """A figure as it is measured: a run stopped at its time limit keeps what it had (the table follows)."""
    print(f"measured {line}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = build_parser()
    a = p.parse_args(argv)

    from driving.config import load_config
    from driving.data.format import Dataset
    from driving.data.tensors import DeviceData
    from driving.models import InputSpec, build_model
    from driving import precision
    from driving.policy import pick_device
    from driving.step_graph import Stepper
    from driving.train import (TrainConfig, _to_channels_last, augment, make_optimiser, optimisation_step,
                               sample_batch)

    device = pick_device(a.device)
    steps = a.steps or (200 if device.type == "cuda" else 20)
    if a.dataset is None:
        from driving.data.collect import CollectConfig, collect

        tmp = tempfile.mkdtemp(prefix="bench_train_")
        a.dataset = str(collect(load_config(CollectConfig, None, [f"out={tmp}/ds", "episodes=8"]),
                                progress=False))
    ds = Dataset.open(a.dataset)
    if ds.frames < a.batch_size:  # the DataLoader leg drops the last partial batch: it would have none
        p.error(f"--dataset {a.dataset} has {ds.frames} frames, fewer than --batch-size {a.batch_size}: "
                "collect more episodes or use a smaller batch")
    cfg = load_config(TrainConfig, None, [f"dataset={a.dataset}", f"model={a.model}",
                                          f"batch_size={a.batch_size}", "wandb.mode=disabled"])
    data = DeviceData(ds, cfg.net.stack, device)
    cam = ds.meta["camera"]
    spec = InputSpec(cam["height"], cam["width"], 3 if cam["rgb"] else 1, 80.0, 60.0, 20.0, 5.0)
    def fresh(seed: int = 0, cfg=cfg):
        torch.manual_seed(seed)
        m = build_model(a.model, cfg.net, spec).to(device)
        if precision.uses_channels_last(device, cfg.channels_last, cfg.amp):
            m = m.to(memory_format=torch.channels_last)
        return m, make_optimiser(m, cfg, device), torch.Generator(device=device).manual_seed(seed)

    def forward_of(m):
        return torch.compile(m) if a.compile else m

    model, opt, gen = fresh()
    fwd = forward_of(model)
    weights = torch.ones(2, device=device)
    B = a.batch_size

    # (a) model alone: a fixed batch already on the device, already augmented
    x0, s0, y0 = sample_batch(data, B, gen, cfg)
    t_a = _timed(lambda: optimisation_step(fwd, model, opt, None, x0, s0, y0, weights, cfg), steps, 5, device)
    early(f"(a) {steps * B / t_a:.0f} samples/s")

    # (b) our data path + the same step
    def ours():
        x, s, y = sample_batch(data, B, gen, cfg)
        optimisation_step(fwd, model, opt, None, x, s, y, weights, cfg)

    t_b = _timed(ours, steps, 5, device)
    early(f"(b) {steps * B / t_b:.0f} samples/s")

    # (f) the same step in fp32, where (b) ran in bf16: what the fast path gains on this machine
    sf = None
    if precision.uses_bf16(device, cfg.amp):
        cfg32 = dataclasses.replace(cfg, amp=False)
        m32, o32, g32 = fresh(0, cfg32)
        f32 = forward_of(m32)  # compiled where (b) is: the ratio is the precision's alone

        def fp32():
            x, s, y = sample_batch(data, B, g32, cfg32)
            optimisation_step(f32, m32, o32, None, x, s, y, weights, cfg32)

        sf = steps * B / _timed(fp32, steps, 5, device)
        early(f"(f) {sf:.0f} samples/s")
        del m32, o32, g32, f32

    # (c) DataLoader over the episode files + the same device-side augmentation and step
    loader = torch.utils.data.DataLoader(
        EpisodeFiles(ds, cfg.net.stack), batch_size=B, shuffle=True, num_workers=a.workers,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=a.workers > 0)
    it = iter(loader)

    def conventional():
        nonlocal it
        try:
            f, s, y = next(it)
        except StopIteration:
            it = iter(loader)
            f, s, y = next(it)
        f, s, y = (t.to(device, non_blocking=True) for t in (f, s, y))
        x = _to_channels_last(augment(f, cfg.augment, gen), cfg)
        optimisation_step(fwd, model, opt, None, x, s, y, weights, cfg)

    t_c = _timed(conventional, steps, 5, device)
    sa, sb, sc = (steps * B / t for t in (t_a, t_b, t_c))
    early(f"(c) {sc:.0f} samples/s")
    del it, conventional, loader  # its workers and pin-memory thread stop before a graph is captured
    graphed = {}
    if device.type == "cuda":
        alone = Stepper(lambda: optimisation_step(fwd, model, opt, None, x0, s0, y0, weights, cfg),
                        graph=True, generators=[gen])
        graphed["ag"] = steps * B / _timed(alone, steps, 5, device)
        early(f"(ag) {graphed['ag']:.0f} samples/s")

        def full(m, o, g, f=None):
            f = f if f is not None else forward_of(m)  # a compiled module has no truth value

            def step():
                x, s, y = sample_batch(data, B, g, cfg)
                return optimisation_step(f, m, o, None, x, s, y, weights, cfg)
            return Stepper(step, graph=True, generators=[g])

        graphed["g"] = steps * B / _timed(full(model, opt, gen, fwd), steps, 5, device)
        early(f"(g) {graphed['g']:.0f} samples/s")
        # the same 30 steps from the same start, eagerly and graphed: the losses should agree
        losses = []
        for graph in (False, True):
            m, o, g = fresh(1)
            st = full(m, o, g)
            st.graph = graph
            losses.append(torch.stack([st()["loss"].detach().float().clone() for _ in range(30)]))
        drift = float(((losses[0] - losses[1]).abs() / losses[0].abs()).max())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    n_params = sum(p.numel() for p in model.parameters())
    print(f"device {name}; model {a.model} ({n_params / 1e3:.0f}k params){' compiled' if a.compile else ''}; batch {B}; "
          f"dataset {ds.frames} frames, on device: {data.on_device}; {steps} timed steps")
    print(f"(a) forward+backward alone, synthetic on device : {sa:10.0f} samples/s")
    label = f"(b) full step, our data path, {precision.precision_name(device, cfg.amp)}"
    print(f"{label:<48}: {sb:10.0f} samples/s")
    if sf is not None:
        print(f"(f) (b) in fp32 (amp=false)                     : {sf:10.0f} samples/s   b/f = {sb / sf:.2f}")
    print(f"(c) full step, DataLoader ({a.workers} workers) over files  : {sc:10.0f} samples/s")
    print(f"b/a = {sb / sa:.2f}   (data path overhead {1 - sb / sa:.0%})")
    print(f"b/c = {sb / sc:.2f}")
    if graphed:
        print(f"(ag) (a) as one CUDA graph                      : {graphed['ag']:10.0f} samples/s")
        print(f"(g)  (b) as one CUDA graph (driving train's default): {graphed['g']:10.0f} samples/s")
        print(f"g/b = {graphed['g'] / sb:.2f}   data path share of the graphed step {1 - graphed['g'] / graphed['ag']:.0%}")
        print(f"eager vs graphed, 30 steps from the same start: largest relative loss difference {drift:.2e}")


if __name__ == "__main__":
    main()
