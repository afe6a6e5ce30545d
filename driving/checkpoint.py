"""Checkpoints: `runs/NAME/checkpoints/STEP/` folders, each self-contained, and a `last` pointer.

A checkpoint folder holds
  policy.json     model name and options, input spec (normalisation), camera and action spec,
                  scenario, dataset path and fingerprint, step, the resolved train config
  weights.pt      the model's state dict
  train_state.pt  optimiser, scheduler, RNG states, step: what resuming needs, nothing evaluation needs
It is written to a hidden temp folder and renamed into place; `last` is a symlink replaced atomically
after the rename, so a kill mid-save leaves the previous checkpoint and pointer intact.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from driving.errors import UserError

POINTERS = ("last", "best")


def step_dirname(step: int) -> str:
    return f"{step:08d}"


def save(ckpt_root: Path, step: int, policy_meta: dict, weights: dict, train_state: dict | None,
         pointers=("last",)) -> Path:
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / step_dirname(step)
    tmp = ckpt_root / f".{step_dirname(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "policy.json").write_text(json.dumps(policy_meta, indent=2) + "\n")
    torch.save(weights, tmp / "weights.pt")
    if train_state is not None:
        torch.save(train_state, tmp / "train_state.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (e.g. a resumed run ending where it started)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for name in pointers:
        point(ckpt_root, name, final.name)
    return final


def point(ckpt_root: Path, name: str, target: str) -> None:
    """Atomically make `ckpt_root/name` a symlink to `target` (a sibling folder)."""
    link = Path(ckpt_root) / name
    tmp = Path(ckpt_root) / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def resolve(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint path, a `last`/`best` pointer, or a run folder."""
    p = Path(path)
    if (p / "checkpoints" / "last").exists():
        p = p / "checkpoints" / "last"
    if not p.exists():
        raise UserError(f"checkpoint {path} not found: pass runs/NAME/checkpoints/last (or a step folder)")
    p = p.resolve()
    if not (p / "policy.json").is_file() or not (p / "weights.pt").is_file():
        raise UserError(f"{path} is not a checkpoint (no policy.json/weights.pt): pass "
                        "runs/NAME/checkpoints/last or a step folder")
    return p


def chosen(run_dir: str | Path) -> Path:
    """The checkpoint a run hands on: `best` where training evaluated closed loop, else `last`."""
    ckpts = Path(run_dir) / "checkpoints"
    return ckpts / ("best" if (ckpts / "best").exists() else "last")


def load_meta(path: Path) -> dict:
    from driving.jsonfile import read_json

    return read_json(Path(path) / "policy.json", dict, "use another checkpoint")


def load_tensors(path: Path, name: str, device="cpu") -> dict:
    try:
        return torch.load(Path(path) / name, map_location=device, weights_only=False)
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise UserError(f"{path}/{name} is corrupt ({type(e).__name__}): use another checkpoint") from None


def repair_last(ckpt_root: Path) -> str | None:
    """A `last` pointer whose target is gone is pointed at the newest complete step folder (or removed
    where there is none), so a run never silently starts again over its own checkpoints. Returns a
    note saying what was done, or None where `last` was fine."""
    link = Path(ckpt_root) / "last"
    if not link.is_symlink() or link.exists():
        return None
    complete = sorted(p.name for p in Path(ckpt_root).iterdir() if p.name.isdigit() and p.is_dir()
                      and all((p / f).is_file() for f in ("policy.json", "weights.pt", "train_state.pt")))
    target = os.readlink(link)
    if not complete:
        link.unlink()
        return f"{link} pointed at missing {target} and no complete checkpoint is left: starting from step 0"
    point(ckpt_root, "last", complete[-1])
    return f"{link} pointed at missing {target}: resuming from {complete[-1]}, the newest complete checkpoint"


def clean_temp(ckpt_root: Path) -> None:
    """Remove leftovers of a save that was killed."""
    for p in Path(ckpt_root).glob(".*.tmp"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
