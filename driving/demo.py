"""The README's main job on built-in defaults: collect demonstrations, train a small policy on the
CPU (or GPU), evaluate it closed loop beside the expert, and write a rollout video. About five
minutes on a 2-core CPU; every stage resumes if interrupted (re-run the same command). A stack of 4
frames (0.6 s) rather than 2: at 1 m/px a closing speed of 5 m/s moves the car ahead 1 px a step.
"""
from __future__ import annotations

import os
from pathlib import Path

from driving.config import load_config
from driving.data.collect import CollectConfig, collect
from driving.data.contact_sheet import write_contact_sheet
from driving.data.format import Dataset
from driving.data.stats import dataset_stats, format_stats
from driving.errors import UserError
from driving.folder_lock import writing

# Sizes per machine: what fits about eight minutes on 2 CPU cores, and more where a CUDA GPU trains.
SIZES = {
    "cpu": {"collect": ["episodes=100"],
            "train": ["steps=2000", "batch_size=64", "net.stack=4", "val_every=500", "checkpoint_every=500"],
            "eval": ["episodes=10", "videos=1"]},
    "cuda": {"collect": ["episodes=200"],
             "train": ["steps=5000", "batch_size=256", "net.stack=4", "val_every=1000", "checkpoint_every=1000"],
             "eval": ["episodes=30", "videos=2"]},
}


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


def split_overrides(out: str | Path, overrides: list[str]) -> tuple[Path, dict]:
    """(the demo's folder, {stage: its overrides}). `collect.KEY=V`, `train.KEY=V`, `eval.KEY=V` go to their
    stage, other keys to collect; a bare `out=DIR` is the demo's folder, as every other command names its
    output (given to collect, it would send only the dataset there and the run to the default folder)."""
    stage = {"collect": [], "train": [], "eval": []}
    for o in overrides:
        head, _, rest = o.partition(".")
        if o.startswith("out="):
            out = o[len("out="):]
        elif head in stage and "=" in rest:
            stage[head].append(rest)
        else:
            stage["collect"].append(o)
    if not str(out):
        raise UserError("out= is empty: give the demo's folder, e.g. out=runs/demo")
    return Path(out), stage


def run_demo(out: str | Path = "runs/demo", overrides: list[str] = (), progress: bool = True) -> dict:
    """`overrides`: see split_overrides."""
    out, stage = split_overrides(out, list(overrides))
    with writing(out, "driving demo"):
        return _run_demo(out, stage, progress)


def _run_demo(out: Path, stage: dict, progress: bool) -> dict:
    from driving.evaluate import EvalConfig, evaluate
    from driving.report import text_table
    from driving.train import TrainConfig, train
    found, sizes = demo_sizes()
    print(f"demo sizes for {found}: " + "; ".join(f"{k} " + " ".join(v) for k, v in sizes.items())
          + " (override any: collect.episodes=N train.steps=N eval.episodes=N)")
    print("== 1/4 collect expert demonstrations")
    ccfg = load_config(CollectConfig, None, [f"out={out / 'data'}", *sizes["collect"], *stage["collect"]])
    root = collect(ccfg, progress=progress)
    ds = Dataset.open(root)
    print(format_stats(dataset_stats(ds)))
    sheet = write_contact_sheet(ds, out / "data_contact_sheet.png")

    print("\n== 2/4 train a policy (behaviour cloning)")
    tcfg = load_config(TrainConfig, None, [f"dataset={root}", f"out={out / 'run'}", *sizes["train"],
                                             "wandb.mode=offline", *stage["train"]])
    result = train(tcfg, progress=progress)
    ckpt = Path(result["run_dir"]) / "checkpoints" / "last"

    print("\n== 3/4 evaluate closed loop beside the expert, 4/4 write a video")
    ecfg = load_config(EvalConfig, None, [f"scenario={ccfg.scenario}", f"out={out / 'eval'}", *sizes["eval"],
                                          *stage["eval"]])
    ev = evaluate(str(ckpt), ecfg, progress=progress)
    print(text_table(ev["result"]))
    videos = [ev["out"] / v["file"] for v in ev["result"]["videos"]]
    print(f"\ndataset {root}\ncontact sheet {sheet}\ncheckpoint {ckpt}\nreport {ev['out'] / 'report.html'}")
    for v in videos:
        print(f"video {v}")
    return {"dataset": root, "checkpoint": ckpt, "eval": ev["out"], "videos": videos, "contact_sheet": sheet}
