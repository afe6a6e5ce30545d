"""One writer per output folder.

`writing(folder, what)` holds an advisory lock (flock on FOLDER/.lock) while a command writes there:
a second command writing to the same folder is refused in one line naming the holder. The kernel
drops the lock when its holder dies, however it dies, so a lock left by a killed command is simply
taken over (its pid is still in the file, for the message). While holding the lock, temp files a
killed writer left behind (`.NAME.*.tmp`, from driving.atomic) are swept: nobody else can be
writing them. The lock's first act is to create the folder, so an output location that cannot be
written is refused here, before any work, in one line.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
import time
from pathlib import Path

from driving.errors import UserError

LOCK = ".lock"
_HELD: dict[str, int] = {}  # folders this process holds -> depth (re-entry from the same process is fine)


def unwritable(path: Path, e: OSError, fix: str = "choose another out= folder") -> UserError:
    """One line for an output location that cannot be written."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
           errno.EEXIST: "it exists and is not a folder",
           errno.EISDIR: "it is a folder, not a file",
           errno.ENAMETOOLONG: "a name in it is longer than the file system allows"}.get(e.errno, e.strerror or str(e))
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space (or " + fix + "), then re-run the same command: it resumes"
    return UserError(f"cannot write to {path}: {why}: {fix}")


# What each command's output folder holds, by what marks it: a command refuses a folder that holds
# another kind (an evaluation written into a dataset made `driving video DATASET` film the evaluation).
OUTPUTS = {
    "a dataset": lambda f: (f / "meta.json").is_file() and (f / "episodes").is_dir(),
    "a training run": lambda f: (f / "checkpoints").is_dir(),
    "an evaluation": lambda f: (f / "eval.json").is_file(),
    "a DAgger run": lambda f: (f / "rounds.json").is_file() or (f / "round0").is_dir(),
    "a scoreboard": lambda f: (f / "scoreboard.json").is_file(),
    # nothing is written into one (a run nested in its own checkpoint took over its `last` pointer)
    "a checkpoint": lambda f: (f / "policy.json").is_file() and (f / "weights.pt").is_file(),
}


# Everything a command writes into its output folder (hidden files aside), where a user may point out= at
# a folder of their own: anything else there is theirs, and the command would write among (or over) it.
OWN_ENTRIES = {
    "a dataset": {"meta.json", "index.json", "episodes", "contact_sheet.png"},  # (the sheet: `driving data show`)
    "a training run": {"checkpoints", "config.yaml", "metrics.jsonl", "wandb", "eval"},
    "an evaluation": {"eval.json", "report.md", "report.html", "actions.npz", "videos"},
}


def refuse_other_output(folder: Path, holds: str) -> None:
    """One line when `folder` holds another command's kind of output than `holds` (an OUTPUTS key) and
    none of its own (a folder written by both before this check existed stays usable), or files this
    command never writes."""
    if not folder.is_dir() or OUTPUTS[holds](folder):
        return
    for kind, marks in OUTPUTS.items():
        if kind != holds and marks(folder):
            raise UserError(f"{folder} holds {kind}, and this command writes {holds}: give it another out= folder")
    own = OWN_ENTRIES.get(holds)
    foreign = sorted(n for n in os.listdir(folder) if not n.startswith(".") and own is not None and n not in own)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UserError(f"{folder} holds files that are not {holds}'s ({', '.join(foreign[:3])}{more}): give a new or "
                        "empty out= folder")


@contextlib.contextmanager
def writing(folder: str | Path, what: str, sweep: bool = True, holds: str | None = None):
    """`holds`: the kind of output the command writes (an OUTPUTS key), checked against what is there."""
    folder = Path(folder)
    if holds is not None:
        refuse_other_output(folder, holds)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    created = not folder.exists()
    made = [p for p in folder.parents if not p.exists()]  # parents mkdir makes too (runs/ of runs/demo)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise unwritable(folder, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise UserError(f"{folder} is being written by {holder}: wait for it to finish, or use another "
                            "out= folder") from None
        stamp = f"pid {os.getpid()} ({what}, since {time.strftime('%H:%M:%S')})".encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp, 0)
        except OSError as e:
            raise unwritable(folder, e) from None
        if sweep:
            sweep_temp(folder)
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
            if created and [p.name for p in folder.iterdir()] == [LOCK]:  # refused before writing anything
                with contextlib.suppress(OSError):
                    (folder / LOCK).unlink()
                    folder.rmdir()
                    for parent in made:  # deepest first; one that something else wrote into stays
                        parent.rmdir()
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def sweep_temp(folder: Path) -> list[Path]:
    """Remove temp files and folders of interrupted atomic writes anywhere under `folder` (not inside
    other writers' locked subfolders: those sweep themselves). Returns what was removed."""
    gone = []
    for root, dirs, files in os.walk(folder):
        if Path(root) != folder and LOCK in files and being_written(Path(root)):
            dirs[:] = []
            continue
        for name in files + dirs:
            if name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name):
                p = Path(root) / name
                try:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                    gone.append(p)
                except OSError:
                    pass
        dirs[:] = [d for d in dirs if not (d.startswith(".") and d.endswith(".tmp"))]
    if gone:
        print(f"note: removed {len(gone)} temp file(s) left by an interrupted run in {folder}", file=sys.stderr)
    return gone


def holder(folder: Path) -> str:
    """Who holds (or last held) `folder`'s lock, as its stamp says: "pid N (driving eval, since HH:MM:SS)"."""
    try:
        return (Path(folder) / LOCK).read_text(errors="replace").strip() or "another process"
    except OSError:
        return "another process"


def being_written(folder: Path) -> bool:
    """Does a command (of this process or another) hold `folder`'s lock now?"""
    folder = Path(folder)
    if os.path.realpath(folder) in _HELD:
        return True
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
