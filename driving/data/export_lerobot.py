"""`driving data export DATASET --format lerobot OUT`: a dataset as a LeRobotDataset (format v3.0).

    OUT/
      meta/info.json                               codebase_version "v3.0", fps, features, path templates,
                                                   totals, and "driving": where it came from
      meta/tasks.parquet                           one task (the scenario's driving task), index "task"
      meta/stats.json                              per-feature min, max, mean, std, count, q01..q99
      meta/episodes/chunk-000/file-000.parquet     one row per episode: length, where its rows and its
                                                   video segment are, its stats, and source/* (our
                                                   episode number, seed, outcome)
      data/chunk-000/file-000.parquet              one row per frame, all episodes in order
      videos/observation.images.top/chunk-000/file-000.mp4   the camera, all episodes one after another
      .driving-export.json                         which dataset this is an export of (for re-exports)

Features (what LeRobot's loader returns per frame):
  observation.images.top   video (H, W, 3)  the camera frame (grayscale cameras: 3 equal channels)
  observation.state        float32 (1,)     [speed] in m/s: with the image, what our policy is given
  action                   float32 (2,)     [steer, accel] in [-1, 1]: the EXPERT's clean label, the
                                            target of behaviour cloning (and of any LeRobot policy)
  executed_action          float32 (2,)     what the car executed (expert + injected noise, or the
                                            DAgger mix); the frames follow from these
  student_action, expert_plan               where the dataset has them (DAgger rounds; lane plan)
  on_road, crashed, expert_saturated  bool; progress, lane_offset, heading, x, y  float32: per-step
                                            facts (privileged: names without the observation.
                                            prefix, so LeRobot policies do not take them as inputs)
  timestamp, frame_index, episode_index, index, task_index   LeRobot's own
Why `action` is the label: LeRobot trains every policy to predict `action` from the observation; our
datasets inject noise into what is executed so that the frames show recoveries (DART), while the label
stays the expert's clean choice. Training on the executed action would teach the noise.

Shape (1,) features are scalar columns (LeRobot reads them as datasets.Value, so they load as 0-d
tensors): that is LeRobot's own convention for them, kept here.

The video is lossless H.264 in RGB (libx264rgb, qp 0; decoders give planar gbrp), so decoded frames
equal the recorded ones exactly, grayscale frames as three equal channels. RGB is kept as RGB: a YUV
encoding would be exact for gray only in full range, which not every encoder/decoder pair honours
(PyAV 15 writes limited-range luma into a stream flagged full range: errors up to 20 levels). A keyframe every
2 frames (LeRobot's choice, for fast random access), no B-frames. 4:4:4 H.264 does not play in
browsers; LeRobot's decoders (torchcodec, PyAV) and anything FFmpeg-based read it. Episode e occupies
[from_timestamp, to_timestamp) of its video file; frame j of it is at from_timestamp + j / fps.

The export is built in a temp folder inside OUT and moved into place at the end, so OUT holds either
the previous complete export, or the new one (or, after a kill during the final moves, no
meta/info.json: re-run the command).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np

from driving import atomic
from driving.data.format import OPTIONAL_STEP_KEYS, STEP_KEYS, Dataset, DatasetError, dataset_identity
from driving.errors import UserError
from driving.folder_lock import LOCK, writing

EXPORT_FORMATS = ("lerobot",)
CODEBASE_VERSION = "v3.0"
VIDEO_KEY = "observation.images.top"  # a top-down camera (LeRobot's name for one, e.g. in ALOHA)
CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's default)
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
MARKER = ".driving-export.json"
BUILD = ".lerobot-export.tmp"  # swept by folder_lock if a run is killed
TRASH = ".old-lerobot-export.tmp"
GOP = 2
# our step key -> (LeRobot feature, names); keys not listed keep their name
RENAME = {"expert_action": ("action", ["steer", "accel"]), "action": ("executed_action", ["steer", "accel"]),
          "speed": ("observation.state", ["speed"]), "student_action": ("student_action", ["steer", "accel"])}
_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.bool_): "bool", np.dtype(np.int8): "int8"}


def export_dataset(dataset: str | Path, fmt: str, out: str | Path, progress: bool = False) -> dict:
    """What the CLI calls: export DATASET in format `fmt` (one of EXPORT_FORMATS) to OUT."""
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}: known formats: {', '.join(EXPORT_FORMATS)}")
    return export_lerobot(dataset, out, progress=progress)


def export_lerobot(dataset_root: str | Path, out: str | Path, task: str | None = None, gop: int = GOP,
                   data_files_size_in_mb: float = DATA_FILES_SIZE_IN_MB,
                   video_files_size_in_mb: float = VIDEO_FILES_SIZE_IN_MB, chunks_size: int = CHUNKS_SIZE,
                   progress: bool = False) -> dict:
    """Write the dataset at `dataset_root` to `out` as a LeRobotDataset v3.0; returns a summary.
    `out` must not exist, be empty, or be an earlier export of the same dataset (it is replaced).
    `task`: the episodes' task text (default: from the scenario); `gop`: frames between keyframes;
    the sizes: when a data / video file is full and the next episode starts a new one."""
    if int(gop) < 1 or int(chunks_size) < 1 or not (data_files_size_in_mb > 0 and video_files_size_in_mb > 0):
        raise ValueError("gop, chunks_size and the file sizes must be positive")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UserError("exporting to LeRobot needs pyarrow: pip install pyarrow (the project's "
                        "[lerobot] extra)") from None
    ds = Dataset.open(dataset_root)
    if len(ds) == 0:
        raise DatasetError(f"dataset {ds.root} has no finished episode: nothing to export")
    if ds.unfinished:
        import sys

        print(f"warning: {ds.unfinished}", file=sys.stderr)
    fps = _fps(ds)
    out = Path(out)
    source = _source(ds)
    replaced = _check_out(out, ds, source)  # before the lock: a refused OUT is left untouched
    with writing(out, "driving data export"):
        replaced = _check_out(out, ds, source)
        build = out / BUILD
        shutil.rmtree(build, ignore_errors=True)
        try:
            summary = _Export(ds, build, fps, task or _task(ds), gop, data_files_size_in_mb,
                              video_files_size_in_mb, chunks_size, source).run(progress)
            atomic.write_json(out / MARKER, source)  # before the moves: a kill during them leaves it named
            _install(build, out)
        finally:
            shutil.rmtree(build, ignore_errors=True)
    return {"format": "lerobot", "codebase_version": CODEBASE_VERSION, "out": str(out), **summary,
            "replaced": replaced}


# -- checks ----------------------------------------------------------------------------------------
def _fps(ds: Dataset) -> int:
    scenario = ds.meta.get("scenario")
    scenario = scenario if isinstance(scenario, dict) else {}
    fps = ds.meta.get("policy_frequency") or scenario.get("policy_frequency")
    if fps is None and scenario.get("name"):
        try:
            from sim.scenarios import get_scenario

            fps = get_scenario(scenario["name"]).policy_frequency
        except Exception:  # noqa: BLE001 - an unknown scenario: say below what is missing
            fps = None
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0 or int(fps) != fps:
        raise DatasetError(f"{ds.root}/meta.json gives no whole policy_frequency (got {fps!r}): a LeRobot "
                           "dataset needs its frames per second; re-collect the dataset")
    return int(fps)


def _task(ds: Dataset) -> str:
    scenario = ds.meta.get("scenario")
    name = scenario.get("name") if isinstance(scenario, dict) else None
    return f"drive ({name or 'highway-env'}): keep to the road and avoid collisions"


def _source(ds: Dataset) -> dict:
    """What identifies the dataset an export came from: its meta without the counts and the state of
    its collection (a dataset that grew since, or finished, is the same dataset)."""
    meta = dataset_identity(ds.meta)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    return {"format": "lerobot", "written_by": "driving data export", "dataset": str(ds.root.resolve()),
            "dataset_meta_sha256": digest}


def _check_out(out: Path, ds: Dataset, source: dict) -> bool:
    """Refuse an OUT that holds anything but an earlier export of this dataset; True if it holds one."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a folder: choose another out= folder for the export")
    if out.resolve() == ds.root.resolve():
        raise UserError(f"{out} is the dataset itself: choose another out= folder for the export")
    entries = {p.name for p in out.iterdir()} - {LOCK, BUILD, TRASH}
    if not entries:
        return False
    marker = out / MARKER
    if marker.is_file():
        try:
            old = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            old = None
        if isinstance(old, dict) and old.get("dataset_meta_sha256") == source["dataset_meta_sha256"]:
            return True
        if isinstance(old, dict) and old.get("dataset"):
            raise UserError(f"{out} is an export of another dataset ({old['dataset']}): choose another out= "
                            "folder, or delete it first")
    raise UserError(f"{out} exists and is not an export of {ds.root} (it holds {', '.join(sorted(entries)[:4])}"
                    f"{', ...' if len(entries) > 4 else ''}): choose another out= folder, or delete it first")


def _install(build: Path, out: Path) -> None:
    """Replace OUT's meta/, data/, videos/ with the built ones: meta/ goes first and comes back last,
    so OUT never holds a meta/info.json next to data of another export."""
    trash = out / TRASH
    shutil.rmtree(trash, ignore_errors=True)
    for name in ("meta", "data", "videos"):
        if (out / name).exists():
            trash.mkdir(exist_ok=True)
            os.replace(out / name, trash / name)
    for name in ("data", "videos", "meta"):
        if (build / name).exists():
            os.replace(build / name, out / name)
    _fsync_dir(out)
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- the export ------------------------------------------------------------------------------------
def _step_keys(arrays: dict) -> list[str]:
    """Our per-step arrays to export (all but the frames), in feature order."""
    order = ("speed", "expert_action", "action", *STEP_KEYS, *OPTIONAL_STEP_KEYS)
    return [k for k in dict.fromkeys(order) if k != "frames" and k in arrays]


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


class _Export:
    def __init__(self, ds: Dataset, root: Path, fps: int, task: str, gop: int, data_mb: float, video_mb: float,
                 chunks_size: int, source: dict):
        self.ds, self.root, self.fps, self.task, self.gop = ds, root, fps, task, int(gop)
        self.data_bytes, self.video_bytes = data_mb * 2**20, video_mb * 2**20
        self.chunks_size = int(chunks_size)
        self.source = source
        self.keys: list[str] | None = None  # our step keys exported, in feature order
        self.frame_shape: tuple | None = None
        self.features: dict = {}
        # lossless H.264 in RGB (see the module's docstring), a keyframe every `gop` frames, no B-frames
        self.settings = {"codec": "libx264rgb", "pix_fmt": "rgb24",
                         "options": {"qp": "0", "g": str(self.gop), "bf": "0", "preset": "medium"}}

    # features
    def _features(self, arrays: dict) -> dict:
        frames = arrays["frames"]
        h, w = frames.shape[1:3]
        self.frame_shape = frames.shape[1:]
        self.gray = frames.ndim == 3
        self.keys = _step_keys(arrays)
        feats = {VIDEO_KEY: {"dtype": "video", "shape": [int(h), int(w), 3],
                             "names": ["height", "width", "channels"]}}
        for k in self.keys:
            a = arrays[k]
            name, names = RENAME.get(k, (k, None))
            feats[name] = {"dtype": _DTYPES[a.dtype], "shape": [1] if a.ndim == 1 else [int(a.shape[1])],
                           "names": names}
        feats.update({"timestamp": {"dtype": "float32", "shape": [1], "names": None},
                      "frame_index": {"dtype": "int64", "shape": [1], "names": None},
                      "episode_index": {"dtype": "int64", "shape": [1], "names": None},
                      "index": {"dtype": "int64", "shape": [1], "names": None},
                      "task_index": {"dtype": "int64", "shape": [1], "names": None}})
        return feats

    def run(self, progress: bool) -> dict:
        import pyarrow as pa
        from tqdm import tqdm

        from driving.video import Mp4Writer

        ds = self.ds
        data_pos, video_pos = (0, 0), (0, 0)
        data_tables: list = []
        data_size = 0
        writer = None
        video_files, data_files = 0, 0
        episodes: list[dict] = []
        stats = _Stats()
        first_index, empty = 0, 0
        try:
            for i in tqdm(range(len(ds)), unit="episode", desc="export", disable=not progress, dynamic_ncols=True):
                row = ds.index[i]
                arrays = ds.episode(i)
                if self.keys is None:
                    self.features = self._features(arrays)
                self._check_same(arrays, row)
                frames = arrays["frames"]
                n = len(frames)
                if n == 0:  # nothing LeRobot could index
                    empty += 1
                    continue
                e = len(episodes)  # LeRobot's episode_index: the position in the export
                # video
                if writer is not None and writer.bytes >= self.video_bytes:
                    writer.close()
                    writer = None
                    video_pos = _next_file(*video_pos, self.chunks_size)
                if writer is None:
                    path = self.root / VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=video_pos[0],
                                                         file_index=video_pos[1])
                    writer = Mp4Writer(path, self.fps, faststart=True, **self.settings)
                    video_files += 1
                start = writer.frames
                for f in frames:
                    writer.write(np.repeat(f[..., None], 3, axis=2) if f.ndim == 2 else f)
                # data
                cols = self._columns(arrays, e, first_index)
                table = pa.table(cols)
                if data_tables and data_size + table.nbytes > self.data_bytes:
                    self._write_data(data_tables, data_pos)
                    data_files += 1
                    data_tables, data_size = [], 0
                    data_pos = _next_file(*data_pos, self.chunks_size)
                data_tables.append(table)
                data_size += table.nbytes
                # episode row and stats
                ep_stats = stats.add(cols, frames)
                episodes.append({
                    "episode_index": e, "tasks": [self.task], "length": n,
                    "data/chunk_index": data_pos[0], "data/file_index": data_pos[1],
                    "dataset_from_index": first_index, "dataset_to_index": first_index + n,
                    f"videos/{VIDEO_KEY}/chunk_index": video_pos[0], f"videos/{VIDEO_KEY}/file_index": video_pos[1],
                    f"videos/{VIDEO_KEY}/from_timestamp": start / self.fps,
                    f"videos/{VIDEO_KEY}/to_timestamp": (start + n) / self.fps,
                    "source/episode": int(row["episode"]), "source/seed": int(row["seed"]),
                    "source/outcome": str(row.get("outcome", "")),
                    **{f"stats/{k}/{s}": v for k, st in ep_stats.items() for s, v in st.items()},
                })
                first_index += n
            if writer is not None:
                writer.close()
                writer = None
        finally:
            if writer is not None:
                writer.abort()
        if not episodes:
            raise DatasetError(f"every episode of {ds.root} is empty: nothing to export")
        self._write_data(data_tables, data_pos)
        data_files += 1
        episode_files = self._write_episodes(episodes)
        video_info = self._video_info(self.settings)
        self.features[VIDEO_KEY]["info"] = video_info
        self._write_meta(len(episodes), first_index, stats.total())
        return {"episodes": len(episodes), "frames": first_index, "fps": self.fps, "task": self.task,
                "video_key": VIDEO_KEY, "video": {k: video_info[k] for k in
                                                  ("video.codec", "video.pix_fmt", "video.encoder", "video.lossless")},
                "files": {"data": data_files, "videos": video_files, "episodes": episode_files},
                "skipped_empty_episodes": empty}

    def _check_same(self, arrays: dict, row: dict) -> None:
        if arrays["frames"].shape[1:] != self.frame_shape or _step_keys(arrays) != self.keys:
            raise DatasetError(f"episode {row['episode']} of {self.ds.root} differs from the first in its frame "
                               f"shape or recorded arrays ({arrays['frames'].shape[1:]} vs {self.frame_shape}): "
                               "one export needs one kind of episode")

    def _columns(self, arrays: dict, episode_index: int, first_index: int) -> dict:
        import pyarrow as pa

        n = len(arrays["frames"])
        cols = {}
        for k in self.keys:
            a = arrays[k]
            name = RENAME.get(k, (k,))[0]
            if a.ndim == 1:
                cols[name] = pa.array(a)
            else:
                cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(a).reshape(-1)),
                                                               a.shape[1])
        frame_index = np.arange(n, dtype=np.int64)
        cols["timestamp"] = pa.array((frame_index / self.fps).astype(np.float32))
        cols["frame_index"] = pa.array(frame_index)
        cols["episode_index"] = pa.array(np.full(n, episode_index, np.int64))
        cols["index"] = pa.array(first_index + frame_index)
        cols["task_index"] = pa.array(np.zeros(n, np.int64))
        return cols

    # files
    def _write_data(self, tables: list, pos: tuple[int, int]) -> None:
        import pyarrow as pa

        _write_parquet(self.root / DATA_PATH.format(chunk_index=pos[0], file_index=pos[1]), pa.concat_tables(tables))

    def _write_episodes(self, episodes: list[dict]) -> int:
        import pyarrow as pa

        pos, rows, size, files = (0, 0), [], 0, 0
        for ep in episodes:
            row_size = len(json.dumps(ep, default=str))
            if rows and size + row_size > self.data_bytes:
                _write_parquet(self.root / EPISODES_PATH.format(chunk_index=pos[0], file_index=pos[1]),
                               pa.Table.from_pylist(rows))
                files += 1
                pos, rows, size = _next_file(*pos, self.chunks_size), [], 0
            rows.append({**ep, "meta/episodes/chunk_index": pos[0], "meta/episodes/file_index": pos[1]})
            size += row_size
        _write_parquet(self.root / EPISODES_PATH.format(chunk_index=pos[0], file_index=pos[1]),
                       pa.Table.from_pylist(rows))
        return files + 1

    def _video_info(self, settings: dict) -> dict:
        """What LeRobot's get_video_info reads from the first video file, and how it was encoded."""
        import av

        path = self.root / VIDEO_PATH.format(video_key=VIDEO_KEY, chunk_index=0, file_index=0)
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            info = {"video.height": vs.codec_context.height, "video.width": vs.codec_context.width,
                    "video.codec": vs.codec_context.name,
                    "video.pix_fmt": vs.codec_context.pix_fmt, "video.is_depth_map": False,
                    "video.fps": self.fps, "video.channels": 3, "has_audio": False}
        info.update({"video.encoder": settings["codec"], "video.encoder_options": dict(settings["options"]),
                     "video.lossless": True, "video.source_channels": 1 if self.gray else 3})
        return info

    def _write_meta(self, episodes: int, frames: int, stats: dict) -> None:
        import pyarrow as pa

        meta = self.ds.meta
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": "highway-env",
            "total_episodes": episodes,
            "total_frames": frames,
            "total_tasks": 1,
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": _mb(self.data_bytes),
            "video_files_size_in_mb": _mb(self.video_bytes),
            "fps": self.fps,
            "splits": {"train": f"0:{episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": self.features,
            "driving": {**{k: v for k, v in self.source.items() if k not in ("format", "written_by")},
                        "scenario": meta.get("scenario", {}).get("name"), "camera": meta.get("camera"),
                        "action": meta.get("action"), "noise": meta.get("noise"),
                        "dagger": meta.get("dagger"),
                        "features": {"action": "expert_action (the expert's clean label)",
                                     "executed_action": "action (what was executed)",
                                     "observation.state": "speed (m/s)", VIDEO_KEY: "frames"}},
        }
        atomic.write_json(self.root / "meta/info.json", info)
        atomic.write_json(self.root / "meta/stats.json", stats)
        task = pa.array([self.task], pa.string())
        pandas_meta = {"index_columns": ["task"], "column_indexes": [],
                       "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                    "numpy_type": "int64", "metadata": None},
                                   {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                    "numpy_type": "object", "metadata": None}],
                       "creator": {"library": "pyarrow", "version": pa.__version__}}
        tasks = pa.table({"task_index": pa.array([0], pa.int64()), "task": task}).replace_schema_metadata(
            {"pandas": json.dumps(pandas_meta)})
        _write_parquet(self.root / "meta/tasks.parquet", tasks)


def _mb(n_bytes: float) -> float | int:
    mb = n_bytes / 2**20
    return int(mb) if mb == int(mb) else mb


def _write_parquet(path: Path, table) -> None:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    atomic.write_bytes(path, buf.getvalue())


# -- statistics ------------------------------------------------------------------------------------
def _hist_quantile(cum: np.ndarray, q: float) -> float:
    """np.quantile's linear interpolation, from a histogram's cumulative counts over 0..255."""
    n = cum[-1]
    pos = q * (n - 1)
    lo, frac = int(np.floor(pos)), pos - np.floor(pos)
    v_lo = int(np.searchsorted(cum, lo, side="right"))
    v_hi = int(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
    return v_lo + frac * (v_hi - v_lo)


def _image_stats(hist: np.ndarray, count: int) -> dict:
    """LeRobot's per-channel image stats (shape (3, 1, 1), in [0, 1]) from (3, 256) histograms."""
    v = np.arange(256, dtype=np.float64)
    out = {k: [] for k in ("min", "max", "mean", "std", *(f"q{int(q * 100):02d}" for q in QUANTILES))}
    for h in hist:
        n = h.sum()
        nz = np.nonzero(h)[0]
        mean = (h * v).sum() / n
        cum = np.cumsum(h)
        out["min"].append(nz[0])
        out["max"].append(nz[-1])
        out["mean"].append(mean)
        out["std"].append(np.sqrt((h * (v - mean) ** 2).sum() / n))
        for q in QUANTILES:
            out[f"q{int(q * 100):02d}"].append(_hist_quantile(cum, q))
    res = {k: [[[float(x) / 255.0]] for x in vals] for k, vals in out.items()}
    res["count"] = [int(count)]
    return res


def _vector_stats(a: np.ndarray) -> dict:
    a = np.asarray(a, dtype=np.float64)
    a2 = a.reshape(len(a), -1)
    qs = np.quantile(a2, QUANTILES, axis=0)
    res = {"min": a2.min(0), "max": a2.max(0), "mean": a2.mean(0), "std": a2.std(0)}
    res.update({f"q{int(q * 100):02d}": qs[i] for i, q in enumerate(QUANTILES)})
    res = {k: [float(x) for x in v] for k, v in res.items()}
    res["count"] = [len(a)]
    return res


class _Stats:
    """Per-episode stats (for meta/episodes) and exact whole-dataset stats (meta/stats.json)."""

    def __init__(self):
        self.columns: dict[str, list] = {}
        self.hist = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, cols: dict, frames: np.ndarray) -> dict:
        out = {}
        hist = _histograms(frames)
        self.hist += hist
        self.frames += len(frames)
        out[VIDEO_KEY] = _image_stats(hist, len(frames))
        for k, col in cols.items():
            a = _column_array(col)
            self.columns.setdefault(k, []).append(a)
            out[k] = _vector_stats(a)
        return out

    def total(self) -> dict:
        out = {VIDEO_KEY: _image_stats(self.hist, self.frames)}
        for k, parts in self.columns.items():
            out[k] = _vector_stats(np.concatenate(parts))
        return out


def _histograms(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 3:  # grayscale: the video has three equal channels
        h = np.bincount(frames.reshape(-1), minlength=256)
        return np.stack([h, h, h])
    return np.stack([np.bincount(frames[..., c].reshape(-1), minlength=256) for c in range(3)])


def _column_array(col) -> np.ndarray:
    import pyarrow as pa

    if isinstance(col, pa.FixedSizeListArray):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    return col.to_numpy(zero_copy_only=False)


__all__ = ["EXPORT_FORMATS", "export_dataset", "export_lerobot"]
