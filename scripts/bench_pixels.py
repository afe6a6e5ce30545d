"""What a camera's pixels cost in training: the training step (augmentation, forward, backward,
optimiser) on synthetic uint8 stacks of each frame size, in one run, interleaved, with samples/s and
the ratio to the first size. A scenario's default camera (sim/scenarios.py) is chosen with this,
`driving gap` and scripts/expert_quality.py.

    python scripts/bench_pixels.py [--sizes 128x64,96x96,128x96] [--model pilotnet] [--batch-size 64]
                                   [--stack 4] [--device auto] [--steps 0] [--repeats 3]
"""
from __future__ import annotations

import argparse

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128x64,96x96,128x96", help="HxW frame sizes, the first is the reference")
    p.add_argument("--model", default="pilotnet")
    p.add_argument("--batch-size", type=int, default=64, help="default: the demo's CPU batch")
    p.add_argument("--stack", type=int, default=4, help="frames per sample (the demo's net.stack)")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=0, help="timed steps per measurement (default by device)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all sizes; the best of each is kept")
    a = p.parse_args()
    try:
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in a.sizes.split(",") if s.strip()]
        assert sizes and all(len(s) == 2 and min(s) >= 8 for s in sizes)
    except (ValueError, AssertionError):
        p.error(f"--sizes {a.sizes!r}: give HxW sizes of at least 8x8 separated by commas, e.g. 128x64,96x96")

    from bench_train import _timed  # its sibling's timer (scripts/ is on the path when run as a script)

    from driving.config import load_config
    from driving.models import InputSpec, build_model
    from driving import precision
    from driving.policy import pick_device
    from driving.train import TrainConfig, _to_channels_last, augment, make_optimiser, optimisation_step

    device = pick_device(a.device)
    steps = a.steps or (200 if device.type == "cuda" else 10)
    cfg = load_config(TrainConfig, None, ["dataset=unused", f"model={a.model}", f"batch_size={a.batch_size}",
                                          f"net.stack={a.stack}", "wandb.mode=disabled"])
    weights = torch.ones(2, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    B = a.batch_size
    runs = {}
    for h, w in sizes:
        torch.manual_seed(0)
        model = build_model(a.model, cfg.net, InputSpec(h, w, 1, 80.0, 60.0, 20.0, 5.0)).to(device)
        if precision.uses_channels_last(device, cfg.channels_last, cfg.amp):
            model = model.to(memory_format=torch.channels_last)
        opt = make_optimiser(model, cfg, device)
        frames = torch.randint(0, 256, (B, a.stack, h, w), dtype=torch.uint8, device=device, generator=gen)
        speed, target = torch.rand(B, device=device) * 30, torch.rand(B, 2, device=device) * 2 - 1

        def step(model=model, opt=opt, frames=frames, speed=speed, target=target):
            x = _to_channels_last(augment(frames, cfg.augment, gen), cfg)
            optimisation_step(model, model, opt, None, x, speed, target, weights, cfg)

        runs[(h, w)] = step
    best = {s: 0.0 for s in sizes}
    for _ in range(a.repeats):  # interleaved: a slow moment of the machine hits every size alike
        for s, step in runs.items():
            best[s] = max(best[s], steps * B / _timed(step, steps, 3, device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device {name}; model {a.model}; batch {B}; stack {a.stack}; best of {a.repeats} x {steps} steps")
    ref = sizes[0]
    for h, w in sizes:
        print(f"{h:4d}x{w:<4d} {h * w / (ref[0] * ref[1]):5.3f}x pixels  {best[(h, w)]:9.0f} samples/s  "
              f"{best[(h, w)] / best[ref]:5.2f}x the {ref[0]}x{ref[1]} speed")


if __name__ == "__main__":
    main()
