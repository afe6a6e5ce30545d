"""`driving data export DATASET --format lerobot OUT`: a LeRobotDataset v3.0 read back per the format
(pyarrow + PyAV) and, where the `lerobot` package is installed, by LeRobot's own loader."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from driving.data.format import Dataset
from driving.errors import UserError
from tests.helpers import synthetic_dataset

pa = pytest.importorskip("pyarrow", reason="the LeRobot export writes parquet with pyarrow (pip install pyarrow)")
pq = pytest.importorskip("pyarrow.parquet")
pc = pytest.importorskip("pyarrow.compute")

from driving.data.export_lerobot import (
    EXPORT_FORMATS,
    VIDEO_KEY,
    export_dataset,
    export_lerobot,
)

LENGTHS = (6, 5, 7, 4)
FPS = 5  # synthetic_dataset's policy_frequency
MAX_FRAME_ERROR = 0  # the video is lossless: decoded frames equal the recorded ones


def _export(tmp_path_factory, name, **kw):
    root = tmp_path_factory.mktemp(name)
    ds_kw = {k: kw.pop(k) for k in ("rgb", "student_offset", "lengths") if k in kw}
    ds = synthetic_dataset(root / "ds", **{"lengths": LENGTHS, **ds_kw})
    summary = export_lerobot(ds, root / "out", **kw)
    return ds, root / "out", summary


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(tmp_path_factory, "gray")


@pytest.fixture(scope="module")
def exported_split(tmp_path_factory):
    """RGB frames, a DAgger round's arrays, and files so small that every episode starts new ones."""
    return _export(tmp_path_factory, "split", rgb=True, student_offset=0.3, data_files_size_in_mb=1e-4,
                   video_files_size_in_mb=1e-4, chunks_size=2)


def _info(out: Path) -> dict:
    return json.loads((out / "meta/info.json").read_text())


def _episodes(out: Path) -> list[dict]:
    files = sorted((out / "meta/episodes").glob("*/*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _data_rows(out: Path, info: dict, ep: dict) -> dict:
    path = out / info["data_path"].format(chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"])
    t = pq.read_table(path)
    rows = t.filter(pc.equal(t["episode_index"], ep["episode_index"]))
    return {k: np.asarray(rows[k].to_pylist()) for k in rows.column_names}


def _decode(path: Path) -> tuple[np.ndarray, list[float], str]:
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames, ts = [], []
        for f in c.decode(vs):
            frames.append(f.to_ndarray(format="rgb24"))
            ts.append(float(f.pts * f.time_base))
        return np.stack(frames), ts, vs.codec_context.pix_fmt


def _rgb(frames: np.ndarray) -> np.ndarray:
    return frames if frames.ndim == 4 else np.repeat(frames[..., None], 3, axis=3)


# -- the layout, read back per the format ------------------------------------------------------------
def test_info_json_describes_the_export(exported):
    ds_root, out, summary = exported
    info = _info(out)
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS
    assert info["total_episodes"] == len(LENGTHS) == summary["episodes"]
    assert info["total_frames"] == sum(LENGTHS) == summary["frames"]
    assert info["total_tasks"] == 1 and info["splits"] == {"train": f"0:{len(LENGTHS)}"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert {"chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "robot_type"} <= set(info)
    f = info["features"]
    assert f[VIDEO_KEY]["dtype"] == "video" and f[VIDEO_KEY]["shape"] == [32, 16, 3]
    assert f[VIDEO_KEY]["names"] == ["height", "width", "channels"]
    video = f[VIDEO_KEY]["info"]
    assert video["video.codec"] == "h264" and video["video.lossless"] is True and video["video.fps"] == FPS
    assert video["video.pix_fmt"] == "gbrp" and video["video.encoder"] == "libx264rgb"
    assert f["action"] == {"dtype": "float32", "shape": [2], "names": ["steer", "accel"]}
    assert f["executed_action"]["shape"] == [2] and f["observation.state"]["names"] == ["speed"]
    assert f["crashed"]["dtype"] == "bool" and f["expert_plan"]["dtype"] == "int8"
    for k, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                     ("index", "int64"), ("task_index", "int64")):
        assert f[k]["dtype"] == dtype and f[k]["shape"] == [1]
    assert not any("/" in k for k in f)  # LeRobot refuses feature names with '/'
    assert info["driving"]["dataset"] == str(Path(ds_root).resolve())
    assert json.loads((out / ".driving-export.json").read_text())["dataset"] == str(Path(ds_root).resolve())


def test_tasks_parquet_is_indexed_by_task(exported):
    _, out, summary = exported
    t = pq.read_table(out / "meta/tasks.parquet")
    assert t.to_pylist() == [{"task_index": 0, "task": summary["task"]}]
    assert json.loads(t.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    pd = pytest.importorskip("pandas")
    df = pd.read_parquet(out / "meta/tasks.parquet")  # how LeRobot reads it
    assert list(df.index) == [summary["task"]] and int(df.loc[summary["task"]].task_index) == 0


def test_data_rows_equal_the_dataset(exported):
    ds_root, out, _ = exported
    ds, info = Dataset.open(ds_root), _info(out)
    eps = _episodes(out)
    assert [e["episode_index"] for e in eps] == list(range(len(ds)))
    start = 0
    for i, ep in enumerate(eps):
        a = ds.episode(i)
        rows = _data_rows(out, info, ep)
        n = len(a["frames"])
        assert ep["length"] == n == len(rows["index"])
        assert (ep["dataset_from_index"], ep["dataset_to_index"]) == (start, start + n)
        np.testing.assert_array_equal(rows["index"], np.arange(start, start + n))
        np.testing.assert_array_equal(rows["frame_index"], np.arange(n))
        np.testing.assert_array_equal(rows["timestamp"], (np.arange(n) / FPS).astype(np.float32))
        assert (rows["episode_index"] == i).all() and (rows["task_index"] == 0).all()
        # the label is `action`; what was executed is `executed_action`: both exact
        np.testing.assert_array_equal(rows["action"].astype(np.float32), a["expert_action"])
        np.testing.assert_array_equal(rows["executed_action"].astype(np.float32), a["action"])
        np.testing.assert_array_equal(rows["observation.state"].astype(np.float32), a["speed"])
        for k in ("on_road", "crashed", "expert_saturated", "progress", "lane_offset", "heading", "x", "y",
                  "expert_plan"):
            np.testing.assert_array_equal(rows[k].astype(a[k].dtype), a[k])
        assert ep["source/episode"] == ds.index[i]["episode"] and ep["source/seed"] == ds.index[i]["seed"]
        assert ep["tasks"] == [pq.read_table(out / "meta/tasks.parquet")["task"][0].as_py()]
        start += n
    data_files = sorted((out / "data").glob("*/*.parquet"))
    assert len(data_files) == 1 and pq.read_metadata(data_files[0]).num_rows == sum(LENGTHS)


def test_decoded_video_frames_equal_the_recorded_ones(exported):
    ds_root, out, _ = exported
    ds, info = Dataset.open(ds_root), _info(out)
    eps = _episodes(out)
    ep = eps[0]
    path = out / info["video_path"].format(video_key=VIDEO_KEY, chunk_index=ep[f"videos/{VIDEO_KEY}/chunk_index"],
                                           file_index=ep[f"videos/{VIDEO_KEY}/file_index"])
    frames, ts, pix_fmt = _decode(path)
    assert pix_fmt == "gbrp" and len(frames) == sum(LENGTHS)
    np.testing.assert_allclose(ts, np.arange(len(frames)) / FPS, atol=1e-9)
    for i, ep in enumerate(eps):
        lo = round(ep[f"videos/{VIDEO_KEY}/from_timestamp"] * FPS)
        hi = round(ep[f"videos/{VIDEO_KEY}/to_timestamp"] * FPS)
        assert hi - lo == ep["length"]
        ours = _rgb(ds.episode(i, ("frames",))["frames"]).astype(int)
        assert np.abs(frames[lo:hi].astype(int) - ours).max() <= MAX_FRAME_ERROR


def test_stats_are_those_of_the_data(exported):
    ds_root, out, _ = exported
    ds = Dataset.open(ds_root)
    stats = json.loads((out / "meta/stats.json").read_text())
    label = np.concatenate([ds.episode(i, ("expert_action",))["expert_action"] for i in range(len(ds))])
    np.testing.assert_allclose(stats["action"]["mean"], label.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats["action"]["q50"], np.quantile(label.astype(np.float64), 0.5, axis=0))
    assert stats["action"]["count"] == [sum(LENGTHS)]
    frames = np.concatenate([ds.episode(i, ("frames",))["frames"] for i in range(len(ds))]).astype(np.float64)
    img = stats[VIDEO_KEY]
    assert np.array(img["mean"]).shape == (3, 1, 1) and img["count"] == [sum(LENGTHS)]
    np.testing.assert_allclose(np.array(img["mean"]).ravel(), [frames.mean() / 255] * 3, rtol=1e-9)
    np.testing.assert_allclose(np.array(img["std"]).ravel(), [frames.std() / 255] * 3, rtol=1e-9)
    for q in (1, 10, 50, 90, 99):
        np.testing.assert_allclose(np.array(img[f"q{q:02d}"]).ravel()[0], np.quantile(frames, q / 100) / 255)
    ep0 = _episodes(out)[0]
    np.testing.assert_allclose(ep0["stats/action/max"], ds.episode(0)["expert_action"].max(0), rtol=1e-6)
    assert np.array(ep0[f"stats/{VIDEO_KEY}/min"]).shape == (3, 1, 1)


def test_rgb_frames_and_split_files_read_back_exactly(exported_split):
    ds_root, out, summary = exported_split
    ds, info = Dataset.open(ds_root), _info(out)
    eps = _episodes(out)
    assert summary["files"]["data"] == summary["files"]["videos"] == len(LENGTHS)  # one episode a file
    assert info["features"][VIDEO_KEY]["info"]["video.encoder"] == "libx264rgb"
    assert (eps[2]["data/chunk_index"], eps[2]["data/file_index"]) == (1, 0)  # chunks of 2 files
    assert info["features"]["student_action"]["shape"] == [2]
    for i, ep in enumerate(eps):
        a = ds.episode(i)
        rows = _data_rows(out, info, ep)
        np.testing.assert_array_equal(rows["student_action"].astype(np.float32), a["student_action"])
        np.testing.assert_array_equal(rows["action"].astype(np.float32), a["expert_action"])
        path = out / info["video_path"].format(video_key=VIDEO_KEY, chunk_index=ep[f"videos/{VIDEO_KEY}/chunk_index"],
                                               file_index=ep[f"videos/{VIDEO_KEY}/file_index"])
        frames, _, pix_fmt = _decode(path)
        assert ep[f"videos/{VIDEO_KEY}/from_timestamp"] == 0.0 and pix_fmt == "gbrp"
        assert np.abs(frames.astype(int) - a["frames"].astype(int)).max() <= MAX_FRAME_ERROR


def test_export_again_replaces_the_earlier_export(tmp_path):
    ds = synthetic_dataset(tmp_path / "ds", lengths=(3, 4))
    first = export_dataset(ds, "lerobot", tmp_path / "out")
    (tmp_path / "out/README.md").write_text("a card the user wrote\n")
    again = export_dataset(ds, "lerobot", tmp_path / "out")
    assert not first["replaced"] and again["replaced"] and again["frames"] == 7
    assert (tmp_path / "out/README.md").is_file()  # what is not the export's stays
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == \
        ["README.md", "data", "meta", "videos"]


def test_a_dataset_whose_collection_went_on_is_exported_again_in_place(tmp_path):
    """The export's source is the dataset, not how far its collection had got."""
    ds = synthetic_dataset(tmp_path / "ds", lengths=(3, 4))
    meta = json.loads((ds / "meta.json").read_text())
    (ds / "meta.json").write_text(json.dumps({**meta, "collection": {"requested": 3, "finished": False}}))
    export_dataset(ds, "lerobot", tmp_path / "out")
    (ds / "meta.json").write_text(json.dumps({**meta, "collection": {"requested": 3, "finished": True}}))
    assert export_dataset(ds, "lerobot", tmp_path / "out")["replaced"]


# -- bad input: one UserError, nothing written --------------------------------------------------------
def _listing(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_bad_input_is_refused_and_nothing_is_written(tmp_path):
    ds = synthetic_dataset(tmp_path / "ds", lengths=(3,))
    other = synthetic_dataset(tmp_path / "other", lengths=(2,), seed=1)
    with pytest.raises(UserError, match="unknown export format 'hdf5'.*lerobot"):
        export_dataset(ds, "hdf5", tmp_path / "a")
    with pytest.raises(UserError, match="not found"):
        export_dataset(tmp_path / "nope", "lerobot", tmp_path / "b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="meta.json is missing"):
        export_dataset(tmp_path / "empty", "lerobot", tmp_path / "c")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an export of"):
        export_dataset(ds, "lerobot", busy)
    assert _listing(busy) == ["notes.txt"]  # not even a lock file
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        export_dataset(ds, "lerobot", tmp_path / "file")
    with pytest.raises(UserError, match="dataset itself"):
        export_dataset(ds, "lerobot", ds)
    export_dataset(other, "lerobot", tmp_path / "theirs")
    before = _listing(tmp_path / "theirs")
    with pytest.raises(UserError, match="export of another dataset"):
        export_dataset(ds, "lerobot", tmp_path / "theirs")
    assert _listing(tmp_path / "theirs") == before
    (ds / "episodes/000000.npz").write_bytes(b"not an npz")
    with pytest.raises(UserError, match="corrupt"):
        export_dataset(ds, "lerobot", tmp_path / "d")
    for name in "abcd":
        assert not (tmp_path / name).exists()
    assert EXPORT_FORMATS == ("lerobot",)


def test_a_failed_export_leaves_nothing_and_keeps_the_earlier_one(tmp_path, monkeypatch):
    from driving.data import export_lerobot as mod

    ds = synthetic_dataset(tmp_path / "ds", lengths=(3, 2))

    def boom(self, *a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(mod._Export, "_write_meta", boom)
    with pytest.raises(RuntimeError):
        export_dataset(ds, "lerobot", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    export_dataset(ds, "lerobot", tmp_path / "out")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != ".lock"}
    monkeypatch.setattr(mod._Export, "_write_meta", boom)
    with pytest.raises(RuntimeError):
        export_dataset(ds, "lerobot", tmp_path / "out")
    after = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


# -- LeRobot's own loader -----------------------------------------------------------------------------
def test_lerobot_loader_reads_the_same_frames_and_actions(exported, exported_split, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a local root: the hub is never needed
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))  # where `datasets` caches parquet
    pytest.importorskip("lerobot", reason="LeRobot is not installed (pip install lerobot; Python >= 3.10): "
                                          "the export is checked per the format by the other tests")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    for ds_root, out, _ in (exported, exported_split):
        ds = Dataset.open(ds_root)
        lr = LeRobotDataset("local/driving-export", root=out)
        assert lr.fps == FPS and lr.num_episodes == len(ds) and len(lr) == ds.frames
        assert lr.meta.video_keys == [VIDEO_KEY]
        k = 0
        for i in range(len(ds)):
            a = ds.episode(i)
            frames = _rgb(a["frames"])
            for t in range(len(frames)):
                item = lr[k]
                assert int(item["episode_index"]) == i and int(item["frame_index"]) == t
                np.testing.assert_array_equal(item["action"].numpy(), a["expert_action"][t])
                np.testing.assert_array_equal(item["executed_action"].numpy(), a["action"][t])
                assert float(item["observation.state"]) == float(a["speed"][t])
                img = (item[VIDEO_KEY].numpy() * 255).round().astype(int).transpose(1, 2, 0)  # CHW in [0, 1]
                assert np.abs(img - frames[t].astype(int)).max() <= MAX_FRAME_ERROR
                k += 1
        # training-style queries: a frame stack and an action chunk, padded at episode ends
        lr = LeRobotDataset("local/driving-export", root=out,
                            delta_timestamps={VIDEO_KEY: [-1 / FPS, 0.0], "action": [0.0, 1 / FPS]})
        last = ds.frames - 1
        item = lr[last]
        a = ds.episode(len(ds) - 1)
        np.testing.assert_array_equal(item["action"][0].numpy(), a["expert_action"][-1])
        assert item["action_is_pad"].tolist() == [False, True]
        img = (item[VIDEO_KEY].numpy() * 255).round().astype(int).transpose(0, 2, 3, 1)
        assert np.abs(img - _rgb(a["frames"][-2:]).astype(int)).max() <= MAX_FRAME_ERROR


def test_the_command_line_form_of_the_issue(tmp_path, capsys):
    from driving.cli import main

    ds = synthetic_dataset(tmp_path / "ds", lengths=(3, 4))
    assert main(["data", "export", str(ds), "--format", "lerobot", str(tmp_path / "lr"), "-q"]) == 0
    assert "2 episodes, 7 frames as lerobot" in capsys.readouterr().out
    assert json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["total_frames"] == 7
    assert main(["data", "export", str(ds), "--format", "rlds", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown export format 'rlds'" in err and not (tmp_path / "x").exists()
