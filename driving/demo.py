"""The README's main job on built-in defaults: collect demonstrations, train a small policy on the
CPU (or GPU), let it drive and learn from the expert's labels on its own states (two DAgger rounds),
evaluate every round closed loop beside the expert, and write a rollout video. Seven to nine minutes
on a 2-core CPU; every stage resumes if interrupted (re-run the same command).

The recipe is `configs/dagger/highway.yaml` (tests/test_cli.py keeps the two equal), measured over
three training seeds on 50 held-out seeds (docs/FIGURES.md): behaviour cloning alone on DART data
either weaves (steering noise on every step: the data never holds a centred car) or, with the noise
on half the steps, rear-ends 4% of the time and hardly changes lanes; two DAgger rounds with a plan
head meet the expert on driving score, collisions, lane changes and lateral acceleration.
A stack of 4 frames (0.6 s) rather than 2: at 1 m/px a closing speed of 5 m/s moves the car ahead
1 px a step.
"""
from __future__ import annotations

import os
from pathlib import Path

from driving.errors import UserError
from driving.folder_lock import writing

# Sizes per machine: what fits a few minutes per stage on 2 CPU cores, and more where a CUDA GPU trains.
SIZES = {
    "cpu": {"collect": ["episodes=100"],
            "train": ["steps=2000", "batch_size=64", "net.stack=4", "val_every=500", "checkpoint_every=500"],
            "eval": ["episodes=10", "videos=1"]},
    "cuda": {"collect": ["episodes=200"],
             "train": ["steps=5000", "batch_size=256", "net.stack=4", "val_every=1000", "checkpoint_every=1000"],
             "eval": ["episodes=30", "videos=2"]},
}

# `driving dagger` keys of the demo: configs/dagger/highway.yaml without its output folder and its
# 50-seed evaluation (the demo evaluates on the sizes' seeds). Steering noise on half the steps, so
# the data also holds a car centred in its lane; a plan head that decides lane changes (only where it
# gives the side at least 0.7); the student's own states labelled in two rounds, with steering noise
# on half the steps of the round it drives alone (else it learns to weave from its own episodes).
RECIPE = ["scenario=highway", "rounds=2", "beta=[0.5,0.0]", "takeover=0.0", "episodes=0", "round_steps=0",
          "noise.steer=0.15", "noise.steer_duty=0.5", "noise_rounds=alone",
          "collect.noise.steer_duty=0.5", "train.net.plan_head=true", "train.net.plan_threshold=0.7"]


def demo_sizes() -> tuple[str, dict]:
    """(what was found, the sizes for it): the GPU's sizes where torch sees a CUDA device."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA GPU ({torch.cuda.get_device_name(0)})", SIZES["cuda"]
    return f"CPU ({os.cpu_count()} cores, no CUDA GPU)", SIZES["cpu"]


def sizes_for(size: str) -> tuple[str, dict]:
    """`auto` (this machine's, as the demo picks them), `cpu` or `cuda` -> (what it is, the sizes)."""
    if size == "auto":
        return demo_sizes()
    if size == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("size=cuda but torch sees no CUDA GPU: use size=auto or size=cpu")
    return size, SIZES[size]


def split_overrides(out: str | Path, overrides: list[str]) -> tuple[Path, list[str]]:
    """(the demo's folder, the `driving dagger` overrides). A bare `out=DIR` is the demo's folder, as
    every other command names its output; everything else is a dagger key: `collect.K=V`, `train.K=V`,
    `eval.K=V` for a stage, `rounds=0` for behaviour cloning alone."""
    rest = []
    for o in overrides:
        if o.startswith("out="):
            out = o[len("out="):]
        else:
            rest.append(o)
    if not str(out):
        raise UserError("out= is empty: give the demo's folder, e.g. out=runs/demo")
    return Path(out), rest


def demo_config(out: str | Path = "runs/demo", overrides: list[str] = ()):
    """The demo's DaggerConfig: the recipe, then the user's overrides."""
    from driving.config import load_config
    from driving.dagger import DaggerConfig

    out, rest = split_overrides(out, list(overrides))
    return load_config(DaggerConfig, None, [*RECIPE, f"out={out}", *rest])


def run_demo(out: str | Path = "runs/demo", overrides: list[str] = (), progress: bool = True) -> dict:
    """`overrides`: see split_overrides."""
    cfg = demo_config(out, overrides)
    with writing(cfg.out, "driving demo", holds="a DAgger run"):
        return _run_demo(cfg, progress, " ".join(["driving demo", *overrides]))


def _run_demo(cfg, progress: bool, command: str) -> dict:
    from driving.dagger import chosen_path, markdown, run_dagger
    from driving.data.contact_sheet import write_contact_sheet
    from driving.data.format import Dataset
    from driving.data.stats import dataset_stats, format_stats
    from driving.jsonfile import read_json
    from driving.report import text_table

    out = Path(cfg.out)
    print("driving demo: collect expert demonstrations, train a policy (behaviour cloning), then "
          f"{cfg.rounds} DAgger round(s) in which it drives and the expert labels its states; every round "
          "evaluated closed loop beside the expert (override any key: collect.episodes=N train.steps=N "
          "eval.episodes=N rounds=N)")
    board = run_dagger(cfg, progress=progress, command=command)
    last = board["rounds"][-1]
    ds = Dataset.open(board["dataset0"])
    print("\n" + format_stats(dataset_stats(ds)))
    sheet = write_contact_sheet(ds, out / "data_contact_sheet.png")
    eval_dir = Path(last["eval_dir"])
    result = read_json(eval_dir / "eval.json", dict)
    print(f"\nround {last['round']} (the policy the demo hands on), closed loop:")
    print(text_table(result))
    print("\n" + markdown(board))
    videos = [eval_dir / v["file"] for v in result["videos"]]
    ckpt = chosen_path(out, last["round"], cfg.round0)
    print(f"dataset {ds.root}\ncontact sheet {sheet}\ncheckpoint {ckpt}\nrounds {out / 'rounds.md'}\n"
          f"report {eval_dir / 'report.html'}")
    for v in videos:
        print(f"video {v}")
    return {"dataset": ds.root, "checkpoint": ckpt, "eval": eval_dir, "videos": videos, "contact_sheet": sheet,
            "rounds": board}
