"""Checkpoints: `runs/NAME/checkpoints/STEP/` folders, each self-contained, and a `last` pointer.

A checkpoint folder holds
  policy.json     model name and options, input spec (normalisation), camera and action spec,
                  scenario, dataset path and fingerprint, step, the resolved train config
  weights.pt      the model's state dict
  train_state.pt  optimiser, scheduler, RNG states, step: what resuming needs, nothing evaluation needs
  checksums.json  the SHA-256 of each file above, checked on every load (PyTorch does not check its
                  zip's CRC: flipped bytes in weights.pt would otherwise load as garbage weights)
It is written to a hidden temp folder and renamed into place; `last` is a symlink replaced atomically
after the rename, so a kill mid-save leaves the previous checkpoint and pointer intact.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
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
    # serialised in memory first: a failed write is then an OSError naming the cause (a full disk),
    # not torch's stream-writer error
    files = {"policy.json": (json.dumps(policy_meta, indent=2) + "\n").encode(), "weights.pt": _serialise(weights)}
    if train_state is not None:
        files["train_state.pt"] = _serialise(train_state)
    files[CHECKSUMS] = (json.dumps({k: _sha256(v) for k, v in files.items()}, indent=2) + "\n").encode()
    for name, data in files.items():
        with open(tmp / name, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    if final.exists():  # re-saving the same step (e.g. a resumed run ending where it started)
        shutil.rmtree(final)
    os.replace(tmp, final)
    # `last` moves last: it carries the best score so far, so a kill between the two moves must not
    # leave it ahead of a `best` that then never moves again
    for name in sorted(pointers, key=lambda n: n == "last"):
        point(ckpt_root, name, final.name)
    return final


CHECKSUMS = "checksums.json"
# what a reader of a bad checkpoint can do; a resuming training says instead how the run goes on
ANOTHER = "use another checkpoint, e.g. an earlier step folder of the run"


def _serialise(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checked(path: Path, name: str, fix: str = ANOTHER) -> bytes:
    """The bytes of a checkpoint file, checked against checksums.json (checkpoints from before
    checksums have none: read as they are)."""
    path = Path(path)
    try:
        data = (path / name).read_bytes()
    except OSError as e:
        raise UserError(f"{path}/{name} cannot be read ({e.strerror}): {fix}") from None
    sums = path / CHECKSUMS
    if sums.is_file():
        from driving.jsonfile import read_json

        want = read_json(sums, dict, fix).get(name)
        if want is not None and _sha256(data) != want:
            raise UserError(f"{path}/{name} is corrupt (its SHA-256 differs from the one recorded when it was "
                            f"written): {fix}")
    return data


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
    if p.is_symlink() and not p.exists():
        raise UserError(f"checkpoint {path} points to {os.readlink(p)}, which is missing: pass another step "
                        f"folder of {p.parent}, or `last`")
    if not p.exists():
        raise UserError(f"checkpoint {path} not found: pass runs/NAME/checkpoints/last (or a step folder)")
    p = p.resolve()
    if p.is_file() and p.name in ("policy.json", "weights.pt") and (p.parent / "policy.json").is_file():
        raise UserError(f"{path} is a file of a checkpoint: pass the folder that holds it, {p.parent}")
    if not (p / "policy.json").is_file() or not (p / "weights.pt").is_file():
        raise UserError(f"{path} is not a checkpoint (no policy.json/weights.pt): pass "
                        "runs/NAME/checkpoints/last or a step folder")
    return p


def chosen(run_dir: str | Path) -> Path:
    """The checkpoint a run hands on: `best` where training evaluated closed loop, else `last`."""
    ckpts = Path(run_dir) / "checkpoints"
    best = ckpts / "best"
    if best.is_symlink() and not best.exists():  # its step folder was deleted (e.g. as resume advice said)
        print(f"warning: {best} points to {os.readlink(best)}, which is missing: handing on {ckpts / 'last'}",
              file=sys.stderr)
    return best if best.exists() else ckpts / "last"


def load_meta(path: Path, fix: str = ANOTHER) -> dict:
    from driving.jsonfile import read_json

    read_checked(path, "policy.json", fix)
    return read_json(Path(path) / "policy.json", dict, fix)


def load_tensors(path: Path, name: str, device="cpu", fix: str = ANOTHER) -> dict:
    data = read_checked(path, name, fix)
    try:
        return torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    except Exception as e:  # torch raises several types for truncated/corrupt files
        raise UserError(f"{path}/{name} is corrupt ({type(e).__name__}): {fix}") from None


def resume_fix(ckpt: Path) -> str:
    """What to do when the checkpoint a training resumes from is unreadable: the run cannot use another
    one by itself, but without that step folder it resumes from the newest complete one left (repair_last)."""
    ckpt = Path(ckpt)
    others = [p.name for p in _complete_steps(ckpt.parent) if p.name != ckpt.name]  # repair_last's choice
    then = f"it resumes from {others[-1]}" if others else "no other step folder is left: it starts at step 0"
    return f"delete {ckpt} and run the same command again ({then})"


def _complete_steps(ckpt_root: Path) -> list[Path]:
    """The step folders that hold every file of a checkpoint, oldest first."""
    return sorted(p for p in Path(ckpt_root).iterdir() if p.name.isdigit() and p.is_dir()
                  and all((p / f).is_file() for f in ("policy.json", "weights.pt", "train_state.pt")))


def repair_last(ckpt_root: Path) -> str | None:
    """A `last` pointer whose target is gone is pointed at the newest complete step folder (or removed
    where there is none), so a run never silently starts again over its own checkpoints. One whose target
    lost its weights or policy.json (deleted by hand: a save never leaves one so) is pointed at the newest
    complete step folder where there is one, else left for resume to refuse (other step folders may hold
    weights worth keeping). A target without train_state.pt stays: a finished run needs none, and a
    resume names it. Returns a note saying what was done, or None where `last` was left as it was."""
    link = Path(ckpt_root) / "last"
    if not link.is_symlink():
        return None
    target = os.readlink(link)
    complete = [p.name for p in _complete_steps(ckpt_root)]
    if link.exists():
        lacking = [f for f in ("policy.json", "weights.pt") if not (link / f).is_file()]
        if not lacking or not complete:
            return None
        point(ckpt_root, "last", complete[-1])
        return (f"{link} pointed at {target}, which lacks {' and '.join(lacking)}: resuming from {complete[-1]}, "
                "the newest complete checkpoint")
    if not complete:
        link.unlink()
        return f"{link} pointed at missing {target} and no complete checkpoint is left: starting from step 0"
    point(ckpt_root, "last", complete[-1])
    return f"{link} pointed at missing {target}: resuming from {complete[-1]}, the newest complete checkpoint"
