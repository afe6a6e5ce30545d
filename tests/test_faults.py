"""Faults: one writer per folder, temp files swept, output locations that cannot be written, checksums
on episode and checkpoint files, rebuilding a dataset's meta, and kill -9 at several points of a
collection and a training followed by a resume equal to an uninterrupted run."""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from driving.cli import main
from driving.data.format import Dataset
from tests.helpers import synthetic_dataset

TINY = ["episodes=4", "workers=1", "max_steps=6", "camera.height=64", "camera.width=32", "-q"]
TRAIN = ["steps=12", "batch_size=8", "device=cpu", "threads=1", "wandb.mode=disabled", "log_every=1",
         "val_every=4", "checkpoint_every=2", "val_fraction=0.25", "optim.warmup_steps=2", "-q"]


def arrays_of(root: Path) -> dict:
    ds = Dataset.open(root)
    return {r["episode"]: ds.episode(i) for i, r in enumerate(ds.index)}


def same_dataset(a: Path, b: Path) -> None:
    x, y = arrays_of(a), arrays_of(b)
    assert x.keys() == y.keys()
    for e in x:
        for k in x[e]:
            assert np.array_equal(x[e][k], y[e][k]), (e, k)


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "clean"
    assert main(["collect", f"out={out}", *TINY]) == 0
    return out


def hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom driving.folder_lock import writing\n"
            "with writing(sys.argv[1], 'a test holder'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    out = tmp_path / "ds"
    holder = hold_lock(out)
    try:
        assert main(["collect", f"out={out}", *TINY]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and "a test holder" in err and "another out=" in err
        assert err.count("\n") == 1
        ds = synthetic_dataset(tmp_path / "syn")
        assert main(["train", f"dataset={ds}", f"out={out}", *TRAIN]) == 2  # any command writing there
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / ".lock").is_file()  # the killed holder's lock file stays; the kernel dropped its lock
    assert main(["collect", f"out={out}", *TINY]) == 0
    assert len(Dataset.open(out)) == 4


def test_video_neither_films_a_folder_being_written_nor_lets_a_writer_in_while_it_films(clean, tmp_path, capsys,
                                                                                        monkeypatch):
    # `driving video` of an evaluation still being written said it was "neither an evaluation nor a
    # dataset" (no eval.json yet), or filmed the old one into the folder the new one was replacing
    ev = tmp_path / "ev"
    holder = hold_lock(ev)
    try:
        assert main(["video", str(ev)]) == 2
        err = capsys.readouterr().err
        assert f"{ev} is being written by pid {holder.pid} (a test holder" in err and "then film it" in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # while it films into the source, the source is held: a collection into it is refused meanwhile
    from driving import video
    from driving.folder_lock import being_written

    held = []
    real = video.video_for_dataset
    monkeypatch.setattr(video, "video_for_dataset", lambda src, out, eps: held.append(being_written(src))
                        or real(src, out, eps))
    copy = tmp_path / "copy"
    shutil.copytree(clean, copy)
    assert main(["video", str(copy), "episodes=[0]"]) == 0
    assert held == [True] and not being_written(copy)
    assert main(["video", str(copy), "episodes=[0]", f"out={tmp_path / 'elsewhere'}"]) == 0
    assert held == [True, False]  # out= elsewhere: that folder is held, the source only read


def test_temp_files_of_killed_writes_are_swept_at_start(clean, tmp_path):
    ds = tmp_path / "ds"
    assert main(["collect", f"out={ds}", *TINY]) == 0
    left = [ds / ".index.json.x1y2.tmp", ds / "episodes" / ".000001.npz.abc.tmp"]
    for p in left:
        p.write_bytes(b"half")
    (ds / ".sub.tmp").mkdir()
    assert main(["collect", f"out={ds}", *TINY]) == 0
    assert not any(p.exists() for p in left) and not (ds / ".sub.tmp").exists()
    same_dataset(ds, clean)


def disk_full_for(monkeypatch, suffix: str) -> None:
    """Atomic writes of files ending in `suffix` fail as on a full disk."""
    from driving import atomic

    real = atomic.write_bytes

    def full(path, data):
        if str(path).endswith(suffix):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(atomic, "write_bytes", full)


@pytest.mark.parametrize("where", ["under_a_file", "a_file", "full_disk"])
def test_output_locations_that_cannot_be_written_are_one_line(tmp_path, capsys, monkeypatch, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = {"under_a_file": blocker / "ds", "a_file": blocker, "full_disk": tmp_path / "ds"}[where]
    if where == "full_disk":
        disk_full_for(monkeypatch, ".npz")
    assert main(["collect", f"out={out}", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to ") and err.count("\n") == 1
    assert {"under_a_file": "is a file, not a folder", "a_file": "not a folder",
            "full_disk": "disk is full"}[where] in err
    if where == "full_disk":
        assert "re-run the same command" in err
        assert Dataset.open(out).index == []  # consistent: meta and an empty index, no half episode
    else:
        assert blocker.read_text() == "x"


def test_a_corrupt_episode_is_named_and_collected_again(clean, tmp_path, capsys):
    ds = tmp_path / "ds"
    assert main(["collect", f"out={ds}", *TINY]) == 0
    ep = ds / "episodes" / "000002.npz"
    flip_byte(ep, 0.2)  # inside the frames member: the file still opens as a zip
    with pytest.raises(Exception, match="000002.npz is corrupt"):
        Dataset.open(ds).episode(2)
    assert main(["data", "info", str(ds), "validate=true"]) == 2
    assert "000002.npz is corrupt" in capsys.readouterr().err
    assert main(["collect", f"out={ds}", *TINY]) == 0
    assert "000002.npz is corrupt" in capsys.readouterr().err
    same_dataset(ds, clean)
    assert main(["data", "info", str(ds), "validate=true"]) == 0


def test_a_corrupt_checkpoint_file_is_refused_by_eval_and_resume(tmp_path, capsys):
    ds = synthetic_dataset(tmp_path / "syn")
    run = tmp_path / "run"
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=4"]) == 0
    step = run / "checkpoints" / "00000004"
    assert json.loads((step / "checksums.json").read_text()).keys() == {"policy.json", "weights.pt", "train_state.pt"}
    flip_byte(step / "weights.pt", 0.6)
    assert main(["eval", str(step), "episodes=1", "max_steps=3", "videos=0", "workers=1", "-q"]) == 2
    err = capsys.readouterr().err
    assert "weights.pt is corrupt" in err and err.count("\n") == 1
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=6"]) == 2
    err = capsys.readouterr().err
    # a resuming run cannot pick another checkpoint itself: the message says how it goes on
    assert "weights.pt is corrupt" in err and f"delete {step} and run the same command again" in err
    for older in (run / "checkpoints").glob("0000000[0-3]"):
        shutil.rmtree(older)
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=6"]) == 2
    assert "(no other step folder is left: it starts at step 0)" in capsys.readouterr().err


def test_a_run_whose_last_checkpoint_is_corrupt_resumes_from_the_one_before_once_it_is_deleted(tmp_path, capsys):
    ds = synthetic_dataset(tmp_path / "syn")
    run = tmp_path / "run"
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=4", "checkpoint_every=2"]) == 0
    flip_byte(run / "checkpoints" / "00000004" / "train_state.pt", 0.6)
    capsys.readouterr()
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=6", "checkpoint_every=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_state.pt is corrupt" in err
    assert f"delete {run / 'checkpoints' / '00000004'} and run the same command again (it resumes from 00000002)" in err
    shutil.rmtree(run / "checkpoints" / "00000004")  # what the message says
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=6", "checkpoint_every=2"]) == 0
    assert "resuming from 00000002" in capsys.readouterr().out
    assert os.readlink(run / "checkpoints" / "last") == "00000006"


def test_a_run_whose_last_checkpoint_lost_its_weights_resumes_from_the_one_before(tmp_path, capsys):
    # weights.pt deleted by hand from the newest step folder: as with the whole folder gone, the run goes on
    # from the newest complete checkpoint (before, it stopped: "is not a checkpoint")
    ds = synthetic_dataset(tmp_path / "syn")
    run = tmp_path / "run"
    args = ["train", f"dataset={ds}", f"out={run}", *TRAIN, "checkpoint_every=2"]
    assert main([*args, "steps=4"]) == 0
    (run / "checkpoints" / "00000004" / "weights.pt").unlink()
    capsys.readouterr()
    assert main([*args, "steps=6"]) == 0
    assert "pointed at 00000004, which lacks weights.pt: resuming from 00000002" in capsys.readouterr().out
    assert os.readlink(run / "checkpoints" / "last") == "00000006"
    assert (run / "checkpoints" / "00000004" / "weights.pt").is_file()  # the step it redid is whole again
    # a finished run without train_state.pt (e.g. removed to save space) is finished: nothing is redone
    (run / "checkpoints" / "00000006" / "train_state.pt").unlink()
    weights = (run / "checkpoints" / "00000006" / "weights.pt").read_bytes()
    assert main([*args, "steps=6"]) == 0
    assert "already trained to step 6" in capsys.readouterr().out
    assert (run / "checkpoints" / "00000006" / "weights.pt").read_bytes() == weights
    # no complete checkpoint to go on from: refused as before, not started again over the other folders
    for step in ("00000002", "00000004"):
        (run / "checkpoints" / step / "train_state.pt").unlink()
    (run / "checkpoints" / "00000006" / "weights.pt").unlink()
    assert main([*args, "steps=8"]) == 2
    assert "is not a checkpoint" in capsys.readouterr().err
    assert os.readlink(run / "checkpoints" / "last") == "00000006"


def test_a_best_pointer_whose_step_folder_was_deleted_is_named_not_silently_replaced(tmp_path, capsys):
    from driving import checkpoint

    ds = synthetic_dataset(tmp_path / "syn")
    run = tmp_path / "run"
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=4"]) == 0
    ckpts = run / "checkpoints"
    assert checkpoint.chosen(run) == ckpts / "last" and "warning" not in capsys.readouterr().err  # no best: last
    checkpoint.point(ckpts, "best", "00000002")
    assert checkpoint.chosen(run) == ckpts / "best"
    shutil.rmtree(ckpts / "00000002")
    capsys.readouterr()
    assert checkpoint.chosen(run) == ckpts / "last"
    err = capsys.readouterr().err
    assert f"{ckpts / 'best'} points to 00000002, which is missing: handing on {ckpts / 'last'}" in err
    assert main(["eval", str(ckpts / "best"), "episodes=1", "max_steps=3", "videos=0", "workers=1", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "points to 00000002, which is missing" in err


def test_a_lost_meta_and_index_are_rebuilt_from_the_episode_files(clean, tmp_path, capsys):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(clean, ds)
    meta, index = (json.loads((ds / f).read_text()) for f in ("meta.json", "index.json"))
    (ds / "meta.json").unlink()
    (ds / "index.json").write_bytes(b"\xff\xfe garbage")
    assert main(["data", "rebuild", str(ds)]) == 0
    assert "rebuilt from 4 episode files" in capsys.readouterr().out
    # all but how far the collection got, which no episode file knows (a collect re-run records it again)
    assert json.loads((ds / "meta.json").read_text()) == {k: v for k, v in meta.items() if k != "collection"}
    assert json.loads((ds / "index.json").read_text()) == index
    same_dataset(ds, clean)
    # a corrupt episode is named and left out; a collect re-run then brings it back
    flip_byte(ds / "episodes" / "000001.npz", 0.2)  # inside the frames
    assert main(["data", "rebuild", str(ds)]) == 0
    assert "000001.npz is corrupt" in capsys.readouterr().err
    assert [r["episode"] for r in json.loads((ds / "index.json").read_text())] == [0, 2, 3]
    assert main(["collect", f"out={ds}", *TINY]) == 0
    same_dataset(ds, clean)


def test_a_hand_edited_meta_is_named_and_rebuilt(clean, tmp_path, capsys):
    """Fields of the wrong shape were KeyError/TypeError/AttributeError tracebacks in training."""
    import shutil

    meta = json.loads((clean / "meta.json").read_text())
    for i, (edit, words) in enumerate([
            (lambda m: m["camera"].pop("rgb"), "camera.rgb is missing"),
            (lambda m: m.update(scenario="highway"), "scenario is 'highway', not a mapping"),
            (lambda m: m.update(expert=None), "expert is None, not a mapping"),
            (lambda m: m["camera"].update(height="48"), "camera.height is '48', not a whole number >= 1")]):
        ds = tmp_path / f"ds{i}"
        shutil.copytree(clean, ds)
        edited = json.loads(json.dumps(meta))
        edit(edited)
        (ds / "meta.json").write_text(json.dumps(edited))
        assert main(["train", f"dataset={ds}", f"out={tmp_path / 'run'}", "steps=1", "batch_size=4", "device=cpu",
                     "wandb.mode=disabled", "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and f"driving data rebuild {ds}" in err, err
        assert main(["data", "rebuild", str(ds)]) == 0  # the episode files carry the meta
        assert json.loads((ds / "meta.json").read_text()) == {k: v for k, v in meta.items() if k != "collection"}
    assert not (tmp_path / "run").exists()


def _kill_when(cmd: list[str], ready, timeout: float = 120) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "driving.cli", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def _rows(path: Path) -> int:
    try:
        return len(json.loads(path.read_text()))
    except (OSError, ValueError):
        return 0


def test_collection_killed_at_several_points_resumes_to_the_same_dataset(clean, tmp_path):
    out = tmp_path / "ds"
    cmd = ["collect", f"out={out}", *TINY[:1], "workers=2", *TINY[2:]]
    for n in (0, 1, 3):  # before any episode, after the first, near the end
        _kill_when(cmd, lambda: _rows(out / "index.json") >= n and (n > 0 or (out / "meta.json").exists()))
    assert main(cmd) == 0
    same_dataset(out, clean)


def _metrics_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(x).get("step", 0) for x in lines if x.strip().endswith("}")]
    return max(steps, default=0)


def test_training_killed_at_several_points_resumes_to_the_same_weights(tmp_path):
    ds = synthetic_dataset(tmp_path / "syn")
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", f"dataset={ds}", f"out={full}", *TRAIN]) == 0
    cmd = ["train", f"dataset={ds}", f"out={split}", *TRAIN]
    for step in (1, 5, 9):
        _kill_when(cmd, lambda: _metrics_step(split) >= step)
    assert main(cmd) == 0
    a, b = (torch.load(r / "checkpoints" / "last" / "weights.pt", weights_only=True) for r in (full, split))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (split / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # no step logged twice after the resumes


def test_a_full_disk_during_training_and_evaluation_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    from driving import checkpoint

    ds = synthetic_dataset(tmp_path / "syn")
    run = tmp_path / "run"
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=2"]) == 0

    def full_open(path, mode="r", *a, **kw):
        if "w" in mode and str(path).endswith(".pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return builtins.open(path, mode, *a, **kw)

    monkeypatch.setattr(checkpoint, "open", full_open, raising=False)
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=4"]) == 2
    err = capsys.readouterr().err
    assert "cannot write to" in err and "disk is full" in err and err.count("\n") == 1
    assert os.readlink(run / "checkpoints" / "last") == "00000002"  # the last good checkpoint stays
    monkeypatch.undo()
    assert main(["train", f"dataset={ds}", f"out={run}", *TRAIN, "steps=4"]) == 0  # space freed: it resumes
    assert "removed 1 temp file" in capsys.readouterr().err  # the half-saved checkpoint folder

    disk_full_for(monkeypatch, "eval.json")
    assert main(["eval", str(run), f"out={tmp_path / 'ev'}", "episodes=1", "max_steps=3", "videos=0", "workers=1",
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "eval.json" in err and "disk is full" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", [["data", "info"], ["train", "out=/tmp/never", "dataset="], ["eval"]])
def test_a_path_too_long_for_the_file_system_is_one_line(tmp_path, capsys, command):
    long = str(tmp_path / ("a" * 300))
    argv = [*command[:-1], command[-1] + long] if command[-1].endswith("=") else [*command, long]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "too long" in err


def test_a_file_that_cannot_be_read_is_named_as_such_not_as_a_place_to_write(tmp_path, monkeypatch):
    from driving.cli import _os_error_line

    meta = tmp_path / "meta.json"
    meta.write_text("{}")
    denied = PermissionError(errno.EACCES, "Permission denied", str(meta))
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as another user than root sees a chmod 000
    assert _os_error_line(denied).startswith(f"cannot read {meta}: permission denied")
    monkeypatch.undo()
    assert _os_error_line(denied).startswith(f"cannot write to {meta}")  # readable: it was the write


def test_an_episode_file_lost_after_the_collection_finished_marks_it_unfinished_on_rebuild(clean, tmp_path, capsys):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(clean, ds)
    assert json.loads((ds / "meta.json").read_text())["collection"] == {"requested": 4, "finished": True}
    (ds / "episodes" / "000002.npz").unlink()
    assert main(["data", "rebuild", str(ds)]) == 0
    assert "1 of the 4 episodes its collection made are missing" in capsys.readouterr().out
    assert json.loads((ds / "meta.json").read_text())["collection"] == {"requested": 4, "finished": False}
    assert main(["data", "info", str(ds)]) == 0
    assert "NOT FINISHED" in capsys.readouterr().out
    assert main(["collect", f"out={ds}", *TINY]) == 0  # what the note says: the episode comes back
    same_dataset(ds, clean)
    assert json.loads((ds / "meta.json").read_text())["collection"]["finished"] is True


@pytest.mark.parametrize("edit, needle", [
    ("camera", "holds frames of shape (64, 32), {ds}/meta.json's camera draws (48, 32)"),
    ("duplicate", "lists episode 0 more than once"),
    ("length", "holds 6 steps, {ds}/index.json says 50"),
])
def test_a_hand_edited_meta_or_index_is_refused_by_validation_and_training(clean, tmp_path, capsys, edit, needle):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(clean, ds)
    meta, index = (json.loads((ds / f).read_text()) for f in ("meta.json", "index.json"))
    if edit == "camera":
        meta["camera"]["height"] = 48
    elif edit == "duplicate":
        index[1] = dict(index[0])  # would train on episode 0 twice and never read episode 1
    else:
        index[0]["length"] = 50
    (ds / "meta.json").write_text(json.dumps(meta))
    (ds / "index.json").write_text(json.dumps(index))
    needle = needle.format(ds=ds)
    assert main(["data", "info", str(ds), "validate=true"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert main(["train", f"dataset={ds}", f"out={tmp_path / 'run'}", *TRAIN]) == 2
    assert needle in capsys.readouterr().err
    # what the messages say to do restores the dataset
    if edit == "camera":
        (ds / "meta.json").unlink()
    assert main(["data", "rebuild", str(ds)]) == 0
    assert main(["data", "info", str(ds), "validate=true"]) == 0
    same_dataset(ds, clean)
