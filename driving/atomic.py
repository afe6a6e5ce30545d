"""Atomic writes: write a temp file beside the target, fsync, rename. A reader never sees half a file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path, suffix: str = ".tmp") -> str:
    """A new empty temp file `.NAME.*SUFFIX` beside `path` (the folder lock sweeps leftovers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return tmp


def install(tmp: str | Path, path: Path) -> None:
    """Move a fully written temp file into place: fsync, a normal file's mode, rename."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give what open() would
    try:
        os.replace(tmp, path)
    except IsADirectoryError as e:  # the error names the temp file: name the target the user gave
        raise IsADirectoryError(e.errno, e.strerror, str(path)) from None


def _atomic(path: Path, write) -> None:
    tmp = temp_beside(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
        install(tmp, Path(path))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def write_json(path: Path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_npz(path: Path, arrays: dict, compress: bool = True) -> None:
    saver = np.savez_compressed if compress else np.savez
    _atomic(path, lambda f: saver(f, **arrays))
