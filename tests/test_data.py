"""Dataset format, collection (noise, determinism, resume), and the reader's errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from driving.config import load_config
from driving.data.collect import CollectConfig, collect
from driving.rollout import NoiseProcess
from driving.data.format import Dataset, DatasetError, STEP_KEYS
from driving.errors import UserError

SMALL = ["max_steps=12", "camera.height=48", "camera.width=32", "camera.metres_per_pixel=1.0"]


def small_cfg(out: Path, *extra: str) -> CollectConfig:
    return load_config(CollectConfig, None, [f"out={out}", "episodes=3", "workers=1", "seed=7", *SMALL, *extra])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "hw"
    collect(small_cfg(root), progress=False)
    return root


def test_collect_writes_episodes_with_frames_labels_and_facts(dataset):
    ds = Dataset.open(dataset)
    assert len(ds) == 3 and [r["seed"] for r in ds.index] == [7, 8, 9]
    assert ds.meta["counts"] == {"episodes": 3, "frames": ds.frames}
    ep = ds.episode(0)
    assert set(STEP_KEYS) <= set(ep)
    n = ds.index[0]["length"]
    assert n == 12
    assert ep["frames"].shape == (n, 48, 32) and ep["frames"].dtype == np.uint8
    assert ep["action"].shape == ep["expert_action"].shape == (n, 2)
    assert np.all(np.abs(ep["action"]) <= 1) and np.all(np.abs(ep["expert_action"]) <= 1)
    # DART: what was executed is the label plus noise, so they differ, but not wildly
    diff = ep["action"] - ep["expert_action"]
    assert np.all(np.abs(diff).max(axis=0) > 1e-3)
    assert np.all(np.abs(diff).std(axis=0) < 0.5)
    # frames change as the ego drives; speed is recorded and plausible on the highway
    assert not np.array_equal(ep["frames"][0], ep["frames"][-1])
    assert 10 < ep["speed"].mean() < 40
    assert np.all(np.diff(ep["progress"]) > 0)


def test_noise_free_collection_executes_the_label(tmp_path):
    root = tmp_path / "clean"
    collect(small_cfg(root, "episodes=1", "noise.steer=0", "noise.accel=0"), progress=False)
    ep = Dataset.open(root).episode(0)
    np.testing.assert_array_equal(ep["action"], ep["expert_action"])


def test_noise_process_has_requested_std_and_correlation():
    n = NoiseProcess([0.2, 0.05], correlation=0.6, seed=3)
    x = np.array([n.sample() for _ in range(20000)])
    np.testing.assert_allclose(x.std(axis=0), [0.2, 0.05], rtol=0.08)
    rho = np.corrcoef(x[:-1, 0], x[1:, 0])[0, 1]
    assert abs(rho - 0.6) < 0.05
    again = NoiseProcess([0.2, 0.05], correlation=0.6, seed=3)
    np.testing.assert_array_equal(x[:5], [again.sample() for _ in range(5)])


def test_gated_noise_is_on_for_its_share_of_steps_in_bursts():
    n = NoiseProcess([0.2, 0.1], correlation=0.6, seed=3, duty=(0.4, 1.0), burst=8)
    x = np.array([n.sample() for _ in range(40000)])
    on = x[:, 0] != 0
    assert abs(on.mean() - 0.4) < 0.04
    starts = np.count_nonzero(np.diff(on.astype(int)) == 1)
    assert 7 < on.sum() / starts < 9  # mean burst length
    assert np.all(x[:, 1] != 0)  # accel's duty is 1: always on
    np.testing.assert_allclose(x[on, 0].std(), 0.2, rtol=0.1)  # while on, the same AR(1) noise
    # duty 1 draws no gate: the stream is the ungated one, so older datasets are reproduced
    plain, full = NoiseProcess([0.2, 0.1], 0.6, seed=3), NoiseProcess([0.2, 0.1], 0.6, seed=3, duty=(1, 1))
    np.testing.assert_array_equal([plain.sample() for _ in range(50)], [full.sample() for _ in range(50)])
    off = NoiseProcess([0.2, 0.1], 0.6, seed=3, duty=(0.0, 1.0))
    assert all(off.sample()[0] == 0 for _ in range(200))


def test_collection_with_steering_noise_on_part_of_the_time(tmp_path):
    root = tmp_path / "duty"
    collect(small_cfg(root, "episodes=1", "max_steps=60", "noise.steer_duty=0.5", "noise.burst=5"), progress=False)
    ep = Dataset.open(root).episode(0)
    clean = ep["action"][:, 0] == ep["expert_action"][:, 0]
    assert 0 < clean.sum() < len(clean)  # some steps executed the label, others were perturbed
    unclipped = np.abs(ep["action"][:, 1]) < 1
    assert unclipped.sum() > 10
    assert np.all(ep["action"][unclipped, 1] != ep["expert_action"][unclipped, 1])  # accel noise stays on
    assert Dataset.open(root).meta["noise"]["steer_duty"] == 0.5


def test_same_config_and_seeds_give_identical_arrays_whatever_the_worker_count(dataset, tmp_path):
    other = tmp_path / "par"
    collect(small_cfg(other, "workers=2"), progress=False)
    a, b = Dataset.open(dataset), Dataset.open(other)
    assert [r["seed"] for r in a.index] == [r["seed"] for r in b.index]
    for i in range(len(a)):
        ea, eb = a.episode(i), b.episode(i)
        for k in STEP_KEYS:
            np.testing.assert_array_equal(ea[k], eb[k], err_msg=k)


def test_resume_after_losing_episodes_recollects_only_those(dataset, tmp_path):
    import shutil

    root = tmp_path / "resume"
    shutil.copytree(dataset, root)
    kept = root / "episodes" / "000000.npz"
    mtime = kept.stat().st_mtime_ns
    (root / "episodes" / "000002.npz").unlink()  # as if killed while episode 2 was in flight
    (root / "index.json").unlink()  # and before the index was written
    collect(small_cfg(root), progress=False)
    assert kept.stat().st_mtime_ns == mtime  # finished episodes are not redone
    a, b = Dataset.open(dataset), Dataset.open(root)
    assert len(b) == 3
    np.testing.assert_array_equal(a.episode(2)["frames"], b.episode(2)["frames"])
    # asking for more episodes extends the same dataset
    collect(small_cfg(root, "episodes=4"), progress=False)
    assert [r["seed"] for r in Dataset.open(root).index] == [7, 8, 9, 10]


def test_killed_collection_resumes_to_the_same_dataset(dataset, tmp_path, capsys):
    """A real kill (SIGKILL mid-run), then the same command: equal to an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "killed"
    args = [sys.executable, "-m", "driving.cli", "collect", f"out={root}", "episodes=3", "workers=1",
            "seed=7", *SMALL, "-q"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (root / "episodes" / "000000.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in (root / "episodes").iterdir() if p.suffix != ".npz"]
    assert all(name.startswith(".") for name in leftovers)  # at most a temp file in flight
    # what the kill left says it is not finished, to `data info` and to training
    partial = Dataset.open(root)
    assert len(partial) < 3 and f"({len(partial)} episodes on disk, 3 asked for)" in partial.unfinished
    from driving.cli import main

    assert main(["data", "info", str(root)]) == 0
    assert f"NOT FINISHED: dataset {root} is an interrupted collection" in capsys.readouterr().out
    # while a collect holds the folder, the same dataset is one still being collected, not interrupted
    from driving.folder_lock import writing

    with writing(root, "driving collect"):
        assert "is still being collected" in Dataset.open(root).unfinished
        assert main(["data", "info", str(root)]) == 0
        assert "NOT FINISHED: dataset" in capsys.readouterr().out
    collect(small_cfg(root), progress=False)
    assert Dataset.open(root).unfinished is None
    a, b = Dataset.open(dataset), Dataset.open(root)
    for i in range(3):
        for k in ("frames", "action", "expert_action"):
            np.testing.assert_array_equal(a.episode(i)[k], b.episode(i)[k])


def test_stock_road_collects_the_same_dataset_and_may_extend_it(dataset, tmp_path):
    """fast_road only changes speed: a stock-road dataset equals the fast one array for array,
    and a fast-road run may extend it."""
    root = tmp_path / "stock"
    collect(small_cfg(root, "env.fast_road=false"), progress=False)
    a, b = Dataset.open(dataset), Dataset.open(root)
    for i in range(len(a)):
        for k in STEP_KEYS:
            np.testing.assert_array_equal(a.episode(i)[k], b.episode(i)[k], err_msg=k)
    collect(small_cfg(root, "episodes=4"), progress=False)
    assert len(Dataset.open(root)) == 4


def test_fewer_episodes_than_a_dataset_holds_keep_them_all_and_say_so(tmp_path, capsys):
    root = tmp_path / "ds"
    collect(small_cfg(root, "episodes=3"), progress=False)
    assert "beyond" not in capsys.readouterr().err
    collect(small_cfg(root, "episodes=1"), progress=False)
    assert (f"note: {root} holds 3 episodes, 2 of them beyond episodes=1: it keeps them all"
            in capsys.readouterr().err)
    assert len(Dataset.open(root)) == 3


def test_collect_needs_at_least_one_episode(tmp_path):
    with pytest.raises(UserError, match="episodes must be in 1..1,000,000"):
        small_cfg(tmp_path / "x", "episodes=0")


def test_output_folder_with_another_config_is_refused(dataset):
    with pytest.raises(UserError, match=r"different config .*noise\.steer"):
        collect(small_cfg(dataset, "noise.steer=0.3"), progress=False)


def test_unknown_scenario_and_key_fail_with_the_fix(tmp_path):
    with pytest.raises(UserError, match="known scenarios: highway"):
        collect(small_cfg(tmp_path / "x", "scenario=moon"), progress=False)
    with pytest.raises(UserError, match="unknown config key 'episodez'"):
        small_cfg(tmp_path / "x", "episodez=3")
    with pytest.raises(UserError, match="noise.correlation"):
        small_cfg(tmp_path / "x", "noise.correlation=1.5")
    with pytest.raises(UserError, match=r"noise.steer_duty .*\[0, 1\]"):
        small_cfg(tmp_path / "x", "noise.steer_duty=1.5")
    with pytest.raises(UserError, match="noise.burst"):
        small_cfg(tmp_path / "x", "noise.burst=0.5")
    with pytest.raises(UserError, match=r"noise.steer_duty=0.95 .*raise noise.burst to at least 19"):
        small_cfg(tmp_path / "x", "noise.steer_duty=0.95", "noise.burst=10")
    small_cfg(tmp_path / "x", "noise.steer_duty=0.95", "noise.burst=19")


def test_reader_names_corrupt_and_missing_files(dataset, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(dataset, root)
    f = root / "episodes" / "000001.npz"
    f.write_bytes(f.read_bytes()[:200])
    ds = Dataset.open(root)
    with pytest.raises(DatasetError, match=r"000001\.npz is corrupt"):
        ds.episode(1)
    with pytest.raises(DatasetError, match=r"000001\.npz is corrupt"):
        ds.validate()
    f.unlink()
    with pytest.raises(DatasetError, match=r"000001\.npz .* missing"):
        Dataset.open(root)
    meta = json.loads((root / "meta.json").read_text())
    meta["format_version"] = 99
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="format version 99"):
        Dataset.open(root)
    with pytest.raises(DatasetError, match="not found"):
        Dataset.open(tmp_path / "nope")
    os.remove(root / "meta.json")
    with pytest.raises(DatasetError, match="meta.json is missing"):
        Dataset.open(root)
