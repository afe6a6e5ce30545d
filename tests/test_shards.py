"""Shards (shard=K/N) of collection and evaluation, and their merges: what N shards write, merged,
equals what one unsharded run writes; bad specs and bad merges are one line and write nothing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from driving.cli import main
from driving.config import load_config
from driving.data.collect import CollectConfig, collect
from driving.data.format import Dataset
from driving.data.merge import merge_datasets
from driving.eval_merge import merge_evaluations
from driving.evaluate import EvalConfig, evaluate
from driving.shards import Shard, parse_shard
from driving.train import TrainConfig, train
from tests.helpers import synthetic_dataset

CAM = ["camera.height=32", "camera.width=16", "camera.stack=1"]


def collect_cfg(out, *extra) -> CollectConfig:
    return load_config(CollectConfig, None, [f"out={out}", "episodes=5", "max_steps=6", "workers=1", *CAM, *extra])


def test_shard_specs_split_the_episodes_exactly_once():
    shards = [parse_shard(f"{k}/3") for k in range(3)]
    taken = sorted(i for s in shards for i in s.take(10))
    assert taken == list(range(10))
    assert shards[1].take(10) == [1, 4, 7]
    assert parse_shard(None) is None and parse_shard("") is None
    assert parse_shard(" 2 / 4 ") == Shard(2, 4)


def test_a_shard_past_the_episodes_says_it_writes_an_empty_part(tmp_path, capsys):
    collect(collect_cfg(tmp_path / "c", "episodes=2", "shard=2/3"), progress=False)
    assert "note: shard 2/3 of 2 episodes holds none: this collection writes an empty part" in capsys.readouterr().err
    assert len(Dataset.open(tmp_path / "c")) == 0
    collect(collect_cfg(tmp_path / "d", "episodes=2", "shard=1/3"), progress=False)
    assert "holds none" not in capsys.readouterr().err
    ev = load_config(EvalConfig, None, [f"out={tmp_path / 'e'}", "episodes=1", "shard=1/2", "max_steps=3",
                                        "videos=0", "workers=1"])
    evaluate("expert", ev, progress=False)
    assert "note: shard 1/2 of 1 episode holds none: this evaluation writes an empty part" in capsys.readouterr().err


@pytest.mark.parametrize("spec, words", [("3/2", "0..N-1"), ("a/b", "not K/N"), ("1", "not K/N"),
                                         ("0/0", "0..N-1"), ("-1/2", "not K/N")])
def test_bad_shard_specs_are_one_line_naming_the_key(tmp_path, capsys, spec, words):
    for argv in (["collect", f"out={tmp_path / 'd'}", f"shard={spec}"],
                 ["eval", "expert", f"out={tmp_path / 'e'}", f"shard={spec}"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "shard=" in err and words in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("collect")
    collect(collect_cfg(root / "full"), progress=False)
    # different worker counts per shard: which process ran an episode never changes it
    collect(collect_cfg(root / "s0", "shard=0/2"), progress=False)
    collect(collect_cfg(root / "s1", "shard=1/2", "workers=2"), progress=False)
    return root


def test_a_shard_collects_its_own_episodes_only(collected):
    ds = Dataset.open(collected / "s1")
    assert [r["episode"] for r in ds.index] == [1, 3]
    assert [r["seed"] for r in ds.index] == [1, 3]
    assert ds.meta["shard"] == {"index": 1, "count": 2, "episodes": 5}


def test_merged_shards_equal_the_unsharded_dataset_byte_for_byte(collected, tmp_path):
    out = merge_datasets(tmp_path / "m", [collected / "s1", collected / "s0"])
    full = collected / "full"
    assert json.loads((out / "index.json").read_text()) == json.loads((full / "index.json").read_text())
    assert json.loads((out / "meta.json").read_text()) == json.loads((full / "meta.json").read_text())
    files = sorted(p.name for p in (full / "episodes").iterdir())
    assert files == sorted(p.name for p in (out / "episodes").iterdir()) and len(files) == 5
    for name in files:
        assert (out / "episodes" / name).read_bytes() == (full / "episodes" / name).read_bytes()
    Dataset.open(out).validate()


def test_merging_into_a_larger_collection_keeps_its_other_episodes(collected, tmp_path):
    """As a collection of fewer episodes into a larger dataset does (was: the index shrank to the shards')."""
    import shutil

    big = tmp_path / "big"
    shutil.copytree(collected / "full", big)
    collect(collect_cfg(big, "episodes=7"), progress=False)
    before = json.loads((big / "index.json").read_text())
    assert len(before) == 7
    merge_datasets(big, [collected / "s0", collected / "s1"])
    assert json.loads((big / "index.json").read_text()) == before
    assert json.loads((big / "meta.json").read_text())["counts"]["episodes"] == 7
    Dataset.open(big).validate()


def test_a_shard_folder_refuses_another_shard_and_resumes_its_own(collected, tmp_path, capsys):
    assert main(["collect", f"out={collected / 's0'}", "episodes=5", "max_steps=6", "workers=1", *CAM,
                 "shard=1/2", "-q"]) == 2
    assert "holds shard 0/2" in capsys.readouterr().err
    # the same shard of a collection of another size: not the same shard, and the message says which size
    assert main(["collect", f"out={collected / 's0'}", "episodes=7", "max_steps=6", "workers=1", *CAM,
                 "shard=0/2", "-q"]) == 2
    assert "holds shard 0/2 of a collection of 5 episodes, this run asks for 7: use episodes=5" \
        in capsys.readouterr().err
    before = (collected / "s0" / "index.json").read_text()
    collect(collect_cfg(collected / "s0", "shard=0/2"), progress=False)  # finished: nothing to redo
    assert (collected / "s0" / "index.json").read_text() == before


def test_bad_merges_are_one_line_and_write_nothing(collected, tmp_path, capsys):
    other = collect(collect_cfg(tmp_path / "other", "shard=1/2", "noise.steer=0.3"), progress=False)
    partial = tmp_path / "partial"
    collect(collect_cfg(partial, "shard=1/2"), progress=False)
    (partial / "episodes" / "000003.npz").unlink()
    rows = json.loads((partial / "index.json").read_text())
    (partial / "index.json").write_text(json.dumps([r for r in rows if r["episode"] != 3]))
    cases = [
        ([collected / "s0"], "1/2 missing"),
        ([collected / "s0", collected / "s0"], "given twice"),
        ([collected / "s0", collected / "full"], "not a shard"),
        ([collected / "s0", other], "different config"),
        ([collected / "s0", partial], "unfinished (1 of 2 episodes)"),
        ([collected / "s0", tmp_path / "nothing"], "not found"),
    ]
    # hand-edited meta.json (were KeyError tracebacks)
    import shutil

    for name, shard, words in [("noepisodes", {"index": 1, "count": 2}, "does not say how many episodes"),
                               ("badrecord", {"index": "1", "count": 2, "episodes": 5}, "its shard record")]:
        shutil.copytree(collected / "s1", tmp_path / name)
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        (tmp_path / name / "meta.json").write_text(json.dumps({**meta, "shard": shard}))
        cases.append(([collected / "s0", tmp_path / name], words))
    for inputs, words in cases:
        assert main(["data", "merge", str(tmp_path / "m"), *map(str, inputs)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
        assert not (tmp_path / "m").exists()


def _trained(tmp_path):
    ds = synthetic_dataset(tmp_path / "ds")
    run = tmp_path / "run"
    train(load_config(TrainConfig, None, [f"dataset={ds}", f"out={run}", "steps=2", "batch_size=4",
                                          "device=cpu", "wandb.mode=disabled", "threads=1"]), progress=False)
    return str(run / "checkpoints" / "last")


def eval_cfg(out, *extra) -> EvalConfig:
    # one environment: the policy's batches (and so its floating-point results) are the same in
    # every shard as unsharded
    return load_config(EvalConfig, None, [f"out={out}", "scenario=highway,racetrack", "episodes=5",
                                          "max_steps=8", "videos=1", "workers=1", "device=cpu", *extra])


def test_merged_evaluation_shards_equal_the_unsharded_evaluation(tmp_path):
    ckpt = _trained(tmp_path)
    out = tmp_path / "merged"
    full = evaluate(ckpt, eval_cfg(out), progress=False)["result"]
    (out / "eval.json").rename(tmp_path / "full.json")
    for k in range(3):
        r = evaluate(ckpt, eval_cfg(tmp_path / f"e{k}", f"shard={k}/3"), progress=False)["result"]
        assert r["shard"] == {"index": k, "count": 3} and r["videos"] == []  # shards film nothing
        rows = r["scenarios"]["racetrack"]["episodes"]["policy"]
        assert [row["episode"] for row in rows] == list(range(k, 5, 3))
        assert not (tmp_path / f"e{k}" / "videos").exists()
    merged = merge_evaluations(out, [tmp_path / f"e{k}" for k in (2, 0, 1)], device="cpu")["result"]
    assert json.loads((out / "eval.json").read_text()) == merged
    assert merged == full == json.loads((tmp_path / "full.json").read_text())
    assert len(merged["videos"]) == 1 and (out / merged["videos"][0]["file"]).is_file()
    with np.load(out / "actions.npz") as z:
        assert len(z.files) == 2 * 2 * 5  # scenarios x (policy, expert) x episodes


def test_bad_evaluation_merges_are_one_line(tmp_path, capsys):
    for k, extra in ((0, []), (1, []), (1, ["max_steps=9"])):
        evaluate("expert", load_config(EvalConfig, None, [f"out={tmp_path / f'e{k}{len(extra)}'}", "episodes=2",
                                                          "max_steps=5", "videos=0", "workers=1", f"shard={k}/2",
                                                          *extra]), progress=False)
    evaluate("expert", load_config(EvalConfig, None, [f"out={tmp_path / 'plain'}", "episodes=2", "max_steps=5",
                                                      "videos=0", "workers=1"]), progress=False)
    cases = [(["e00"], "1/2 missing"), (["e00", "e11"], "different evaluation"), (["e00", "plain"], "not a shard"),
             (["e00", "e00"], "given twice"), (["e00", "none"], "no finished evaluation")]
    for inputs, words in cases:
        assert main(["eval", "merge", str(tmp_path / "m"), *(str(tmp_path / i) for i in inputs)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
        assert not (tmp_path / "m").exists()
    # a shard's damaged actions.npz (was numpy's "pickled data" ValueError traceback)
    import shutil

    shutil.copytree(tmp_path / "e10", tmp_path / "e10bad")
    with open(tmp_path / "e10bad" / "actions.npz", "r+b") as f:
        f.truncate(100)
    assert main(["eval", "merge", str(tmp_path / "m"), str(tmp_path / "e00"), str(tmp_path / "e10bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "e10bad/actions.npz cannot be read" in err, err
    assert not (tmp_path / "m").exists()
    # hand-edited shard files (were KeyError/TypeError tracebacks)
    def edited(name, change):
        shutil.copytree(tmp_path / "e10", tmp_path / name)
        result = json.loads((tmp_path / name / "eval.json").read_text())
        change(result)
        (tmp_path / name / "eval.json").write_text(json.dumps(result))
        return tmp_path / name

    for change, words in [(lambda r: r.update(shard={"index": 1}), "its shard record {'index': 1} is not"),
                          (lambda r: r["config"].update(modle=1), "config is not a `driving eval` config"),
                          (lambda r: r.pop("config"), "holds no evaluation config"),
                          (lambda r: r["scenarios"]["highway"].pop("episodes"),
                           "lacks highway's policy and expert episode rows"),
                          (lambda r: r.pop("camera"), "lacks camera")]:
        bad = edited(f"edit{len(words)}", change)
        assert main(["eval", "merge", str(tmp_path / "m"), str(tmp_path / "e00"), str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "re-run its" in err, err
        assert not (tmp_path / "m").exists()
    assert main(["eval", "merge", str(tmp_path / "m")]) == 2
    assert "usage: driving eval merge OUT SHARD_FOLDER" in capsys.readouterr().err
    # OUT may not be one of the shards: the merge would write over that shard's episodes
    shard0 = (tmp_path / "e00" / "eval.json").read_bytes()
    assert main(["eval", "merge", str(tmp_path / "e00"), str(tmp_path / "e00"), str(tmp_path / "e10")]) == 2
    assert "is one of the shards" in capsys.readouterr().err
    assert (tmp_path / "e00" / "eval.json").read_bytes() == shard0
    # nor a folder holding another run's evaluation (the expert's shards merged over a checkpoint's)
    ckpt = _trained(tmp_path)
    evaluate(ckpt, load_config(EvalConfig, None, [f"out={tmp_path / 'theirs'}", "episodes=1", "max_steps=5",
                                                  "videos=0", "workers=1"]), progress=False)
    theirs = (tmp_path / "theirs" / "eval.json").read_bytes()
    assert main(["eval", "merge", str(tmp_path / "theirs"), str(tmp_path / "e00"), str(tmp_path / "e10")]) == 2
    assert "holds the evaluation of" in capsys.readouterr().err
    assert (tmp_path / "theirs" / "eval.json").read_bytes() == theirs


def test_a_shards_folder_is_not_written_over_by_another_shard(tmp_path, capsys):
    args = ["eval", "expert", f"out={tmp_path / 'e'}", "episodes=2", "max_steps=5", "videos=0", "workers=1"]
    assert main([*args, "shard=0/2"]) == 0
    kept = (tmp_path / "e" / "eval.json").read_bytes()
    capsys.readouterr()
    for other in (["shard=1/2"], []):
        assert main([*args, *other]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "holds shard 0/2 of an evaluation" in err, err
    assert (tmp_path / "e" / "eval.json").read_bytes() == kept
    assert main([*args, "shard=0/2"]) == 0  # the same shard again is its own to redo
