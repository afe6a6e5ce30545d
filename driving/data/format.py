"""The dataset format.

    DATASET/
      meta.json            format version, scenario, camera, action spec, expert, noise, collect
                           config (the part that must match to resume), counts
      index.json           one row per finished episode: episode, seed, length, outcome, file, ...
      episodes/000017.npz  one file per episode, written atomically by the worker that ran it

An episode file holds, per step t (the state before the action of step t):
  frames         (T, H, W[, 3]) uint8   single camera frames (stacks are built at load time)
  action         (T, 2) float32         the EXECUTED [steer, accel] (expert + noise, clipped)
  expert_action  (T, 2) float32         the expert's clean label for frame t
  speed          (T,)   float32         ego speed, m/s
  on_road, crashed, expert_saturated (T,) bool; progress, lane_offset, heading, x, y (T,) float32
  student_action (T, 2) float32         DAgger rounds only (meta has "dagger"): what the student chose,
                                        before the expert's share, takeover and noise
  expert_plan    (T,)   int8            the expert's lane plan: -1 left, 0 keep, +1 right (datasets
                                        collected before it existed lack it)
and `summary`, a JSON string (seed, length, outcome, ...). Episode files are the source of truth:
index.json is rebuilt from them on resume, so a collection killed between the two loses nothing.
Each index row records the SHA-256 of its file's bytes, checked whenever the file is read; each file
also carries the dataset's meta (`dataset_meta`), so `driving data rebuild` can restore a lost
meta.json and index.json from the episodes alone.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driving import atomic
from driving.errors import UserError
from driving.jsonfile import read_json

FORMAT_VERSION = 1
STEP_KEYS = {
    "frames": np.uint8, "action": np.float32, "expert_action": np.float32, "speed": np.float32,
    "on_road": np.bool_, "crashed": np.bool_, "expert_saturated": np.bool_, "progress": np.float32,
    "lane_offset": np.float32, "heading": np.float32, "x": np.float32, "y": np.float32,
}
OPTIONAL_STEP_KEYS = {"student_action": np.float32, "expert_plan": np.int8}
META_KEYS = ("format_version", "scenario", "camera", "action", "expert", "noise", "config", "counts")
# meta.json keys about how a copy of the dataset was written, not what it is: the counts, which shard
# wrote it, how far its collection has got. Episode files, shard merges and exports leave them out.
WRITE_STATE_KEYS = ("counts", "shard", "collection")


def dataset_identity(meta: dict) -> dict:
    """meta.json without WRITE_STATE_KEYS: what every file, shard and later state of one dataset shares."""
    return {k: v for k, v in meta.items() if k not in WRITE_STATE_KEYS}
OUTCOMES = ("crash", "offroad", "ok")
# The camera settings that give a frame its meaning (the stack is built at load time, so it may differ).
FRAME_KEYS = ("height", "width", "metres_per_pixel", "rgb", "heading_up", "ego_row")
INDEX_KEYS = ("episode", "file", "seed", "length")  # what every index.json row holds


def meta_fault(meta: dict) -> str | None:
    """What is wrong with the shape of a meta.json that has every key, or None."""
    for key in ("scenario", "camera", "action", "expert", "noise", "config"):
        if not isinstance(meta[key], dict):
            return f"{key} is {meta[key]!r}, not a mapping"
    if not isinstance(meta["scenario"].get("name"), str):
        return "scenario.name is missing"
    cam = meta["camera"]
    for key in ("height", "width"):
        if isinstance(cam.get(key), bool) or not isinstance(cam.get(key), int) or cam[key] < 1:
            return f"camera.{key} is {cam.get(key)!r}, not a whole number >= 1"
    if not isinstance(cam.get("rgb", False), bool):
        return f"camera.rgb is {cam.get('rgb')!r}, not true or false"
    if "rgb" not in cam:
        return "camera.rgb is missing"
    return None


class DatasetError(UserError):
    pass


def episode_filename(episode: int) -> str:
    return f"episodes/{episode:06d}.npz"


def outcome_of(crashed: bool, offroad_steps: int) -> str:
    if crashed:
        return "crash"
    return "offroad" if offroad_steps > 0 else "ok"


def write_episode(root: Path, episode: int, steps: dict, summary: dict, meta: dict | None = None) -> dict:
    """Write one episode file atomically; returns its index row, with the SHA-256 of the file's bytes.
    `meta` (the dataset's meta.json, without counts) is stored in the file too, so that a dataset whose
    meta.json is lost can be rebuilt from its episodes (`driving data rebuild`)."""
    row, data = encode_episode(episode, steps, summary, meta)
    atomic.write_bytes(Path(root) / row["file"], data)
    return row


def encode_episode(episode: int, steps: dict, summary: dict, meta: dict | None = None) -> tuple[dict, bytes]:
    """(index row, file bytes) of one episode: what `write_episode` writes, for a writer elsewhere."""
    arrays = {k: np.asarray(steps[k], dtype=t) for k, t in STEP_KEYS.items()}
    arrays.update({k: np.asarray(steps[k], dtype=t) for k, t in OPTIONAL_STEP_KEYS.items() if k in steps})
    n = len(arrays["frames"])
    bad = [k for k, a in arrays.items() if len(a) != n]
    if bad:
        raise ValueError(f"episode {episode}: arrays {bad} do not have {n} steps")
    arrays["summary"] = np.array(json.dumps(summary))
    if meta is not None:  # what every file of the dataset shares
        arrays["dataset_meta"] = np.array(json.dumps(dataset_identity(meta)))
    data = npz_bytes(arrays)
    return {"episode": episode, "file": episode_filename(episode), **summary, "sha256": sha256_of(data)}, data


_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict) -> bytes:
    """`np.savez_compressed` with a fixed member timestamp: the same arrays give the same bytes (and so
    the same SHA-256) in every run, so a merged sharded collection equals an unsharded one byte for byte."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    return buf.getvalue()


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_episode_file(path: Path, keys=None, sha256: str | None = None, full_check: bool = False,
                      with_meta: bool = False):
    """(arrays, summary) of one episode file; a DatasetError names a missing or corrupt file. With
    `sha256` (index.json's), every byte is checked against it; with `full_check`, every member's zip
    CRC is checked (what a file can check by itself). `with_meta` adds the dataset meta the file
    carries (None in files from before it did), and the file's SHA-256."""
    path = Path(path)
    hint = "delete it and re-run the same `driving collect` command to collect it again"
    if not path.is_file():
        raise DatasetError(f"episode file {path} is missing: re-run the same `driving collect` command")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"episode file {path} cannot be read ({e.strerror})") from None
    digest = sha256_of(data) if sha256 is not None or with_meta else None
    if sha256 is not None and digest != sha256:
        raise DatasetError(f"episode file {path} is corrupt (its SHA-256 differs from the one index.json recorded "
                           f"when it was written): {hint}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if full_check:
                bad = z.zip.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"bad CRC in member {bad}")
            summary = json.loads(str(z["summary"]))
            arrays = {k: z[k] for k in (keys or (*STEP_KEYS, *(k for k in OPTIONAL_STEP_KEYS if k in z.files)))}
            meta = json.loads(str(z["dataset_meta"])) if with_meta and "dataset_meta" in z.files else None
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, json.JSONDecodeError) as e:
        raise DatasetError(f"episode file {path} is corrupt ({type(e).__name__}: {e}): {hint}") from None
    n = summary.get("length")
    for k, a in arrays.items():
        if len(a) != n:
            raise DatasetError(f"episode file {path} is corrupt ({k} has {len(a)} steps, summary says "
                               f"{n}): {hint}")
    if with_meta:
        return arrays, summary, meta, digest
    return arrays, summary


@dataclass
class Dataset:
    """A validated dataset folder. Episodes are loaded on demand."""

    root: Path
    meta: dict
    index: list[dict]

    @classmethod
    def open(cls, root: str | Path, check_files: bool = True) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            several = (" (several datasets are a list: dataset=[a,b])"
                       if "," in str(root) and all(Path(p).is_dir() for p in str(root).split(",")) else "")
            raise DatasetError(f"dataset {root} not found: pass a folder made by `driving collect`{several}")
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            if (root / "episodes").is_dir():  # its episodes are there: their files say what meta.json said
                raise DatasetError(f"{meta_path} is missing, though {root} holds episodes: `driving data rebuild "
                                   f"{root}` writes it again from them")
            raise DatasetError(f"{meta_path} is missing: {root} is not a dataset made by `driving collect`")
        meta = read_json(meta_path, dict, "re-run `driving collect`", DatasetError)
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise DatasetError(f"{meta_path} lacks keys {missing}: not a dataset of this format")
        if meta["format_version"] != FORMAT_VERSION:
            raise DatasetError(f"{meta_path} has format version {meta['format_version']}, this "
                               f"version reads {FORMAT_VERSION}: re-collect the dataset")
        bad = meta_fault(meta)
        if bad:  # a hand-edited file: named here, not a KeyError or TypeError where it is read
            raise DatasetError(f"{meta_path}: {bad}: run `driving data rebuild {root}` to restore it from the "
                               "episode files")
        index_path = root / "index.json"
        rebuild = "re-run the same `driving collect` command to rebuild it from the episode files"
        index = read_json(index_path, list, rebuild, DatasetError) if index_path.is_file() else []
        for row in index:
            if not isinstance(row, dict) or not all(k in row for k in INDEX_KEYS):
                raise DatasetError(f"{index_path} has a row without {', '.join(INDEX_KEYS)} ({str(row)[:80]}): "
                                   f"{rebuild}")
        for key in ("episode", "file"):
            counts = Counter(str(row[key]) for row in index)
            twice = sorted(v for v, n in counts.items() if n > 1)
            if twice:  # an edited index would train on one episode twice and never read another
                raise DatasetError(f"{index_path} lists {key} {', '.join(twice)} more than once: run "
                                   f"`driving data rebuild {root}` to rebuild it from the episode files")
        ds = cls(root, meta, index)
        if check_files:
            for row in index:
                if not (root / row["file"]).is_file():
                    raise DatasetError(f"episode file {root / row['file']} (episode {row['episode']}) is "
                                       "missing: re-run the same `driving collect` command")
        return ds

    def __len__(self) -> int:
        return len(self.index)

    @property
    def frames(self) -> int:
        return int(sum(r["length"] for r in self.index))

    @property
    def unfinished(self) -> str | None:
        """Why the dataset holds fewer episodes than its collection asked for, or None (finished, or a
        dataset written otherwise: merged shards, DAgger rounds)."""
        c = self.meta.get("collection")
        if not c or c.get("finished", True):
            return None
        from driving.folder_lock import being_written, holder

        # its collect is still running: not interrupted (another holder, e.g. `driving video` filming it, is not it)
        if being_written(self.root) and "driving video" not in holder(self.root):
            return (f"dataset {self.root} is still being collected ({len(self)} episodes on disk, "
                    f"{c.get('requested')} asked for): wait for its `driving collect` to finish")
        return (f"dataset {self.root} is an interrupted collection ({len(self)} episodes on disk, "
                f"{c.get('requested')} asked for): re-run its `driving collect` command to finish it")

    @property
    def frame_shape(self) -> tuple:
        """(H, W) or (H, W, 3): a frame as meta.json's camera draws it."""
        cam = self.meta["camera"]
        return (int(cam["height"]), int(cam["width"]), 3) if cam.get("rgb") else (int(cam["height"]), int(cam["width"]))

    def episode(self, i: int, keys=None) -> dict:
        """Arrays of the i-th episode in the index (all keys, or only `keys`)."""
        row = self.index[i]
        arrays, _ = read_episode_file(self.root / row["file"], keys, row.get("sha256"))
        return self._agreeing(row, arrays)

    def _agreeing(self, row: dict, arrays: dict) -> dict:
        """`arrays` of an index row, checked against the index (its length) and meta.json (the camera's
        frame shape): a hand-edited meta or index would otherwise train on wrong data or fail in torch."""
        path = self.root / row["file"]
        fix = f"run `driving data rebuild {self.root}`, or re-run its `driving collect` command"
        if "frames" in arrays and tuple(arrays["frames"].shape[1:]) != self.frame_shape:
            raise DatasetError(f"{path} holds frames of shape {tuple(arrays['frames'].shape[1:])}, "
                               f"{self.root / 'meta.json'}'s camera draws {self.frame_shape}: delete that "
                               f"meta.json and run `driving data rebuild {self.root}` (every episode file "
                               "carries the meta it was collected with)")
        for name in ("frames", "speed"):
            if name in arrays and len(arrays[name]) != row["length"]:
                raise DatasetError(f"{path} holds {len(arrays[name])} steps, {self.root / 'index.json'} says "
                                   f"{row['length']}: {fix}")
        return arrays

    def validate(self) -> None:
        """Read every episode file fully; raises DatasetError naming the first bad one."""
        for row in self.index:
            arrays, summary = read_episode_file(self.root / row["file"], sha256=row.get("sha256"), full_check=True)
            self._agreeing(row, arrays)
            if summary.get("seed") != row["seed"]:
                raise DatasetError(f"episode file {self.root / row['file']} holds seed {summary.get('seed')}, "
                                   f"index.json says {row['seed']}: re-run the same `driving collect` command")
