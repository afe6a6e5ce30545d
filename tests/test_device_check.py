"""scripts/device_check.py: the prepared GPU-machine command. Its steps must parse (a renamed flag
would waste a device call), and a slow step must not starve the others."""
import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return mod


def _check_parses(step, capsys):
    """A bench script's argv through its own parser; a driving command through the CLI with
    --print-config (the config resolved and checked, nothing run)."""
    if step.argv[0] == "-m":
        from driving.cli import main

        assert main([*step.argv[2:], "--print-config"]) == 0, step.name
        assert capsys.readouterr().out.strip(), step.name
    else:
        mod = _script(Path(step.argv[0]).stem)
        mod.build_parser().parse_args(step.argv[1:])


@pytest.mark.parametrize("workers", [2, 16])
def test_every_bench_step_parses_and_reaches_200_episodes(tmp_path, capsys, workers):
    dc = _script("device_check")
    steps = dc.bench_steps(tmp_path, workers)
    assert [s.name for s in steps][:2] == ["collect", "eval"]
    for step in steps:
        _check_parses(step, capsys)
    collect = dc.bench_steps(tmp_path, workers)[0].argv
    per_worker = int(collect[collect.index("--per-worker") + 1])
    assert per_worker * workers >= 200 and (per_worker - 1) * workers < 200
    assert sum(s.timeout_s for s in steps) <= 600  # one device command


def test_the_scoreboard_step_resolves_the_dagger_scoreboard(tmp_path, capsys):
    dc = _script("device_check")
    (step,) = dc.scoreboard_steps(tmp_path, [0, 2])
    from driving.cli import main

    assert main([*step.argv[2:], "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "- 0\n" in out and "- 2\n" in out and str(tmp_path / "scoreboard") in out
    # a subset of scenarios, for a device session that cannot run all six in one command
    (step,) = dc.scoreboard_steps(tmp_path, [0], "intersection,roundabout")
    assert main([*step.argv[2:], "--print-config"]) == 0
    assert "scenario: intersection,roundabout" in capsys.readouterr().out.splitlines()


def test_a_step_past_its_timeout_is_killed_and_the_next_still_runs(tmp_path):
    dc = _script("device_check")
    steps = [dc.Step("slow", ["-c", "import time; print('started', flush=True); time.sleep(60)"], 2),
             dc.Step("quick", ["-c", "print('figure 42')"], 30),
             dc.Step("late", ["-c", "print('never')"], 30)]
    t = time.monotonic()
    rows = dc.run_steps(steps[:2], tmp_path, deadline_s=60)
    assert time.monotonic() - t < 30
    assert rows[0]["rc"] == "timeout" and rows[0]["tail"][-1] == "started"
    assert rows[1]["rc"] == 0 and rows[1]["tail"][-1] == "figure 42"
    assert (tmp_path / "quick.log").read_text().splitlines()[-1] == "figure 42"
    # with the deadline spent, the remaining steps are skipped, not started
    rows = dc.run_steps([steps[0], steps[2]], tmp_path / "d", deadline_s=11)
    assert rows[0]["rc"] == "timeout" and rows[1].get("skipped")
    assert not (tmp_path / "d" / "late.log").exists()


def test_main_writes_the_summary_and_copies_only_the_tables(tmp_path, monkeypatch):
    dc = _script("device_check")
    work = tmp_path / "work" / "scoreboard"
    (work / "highway" / "seed0" / "round0" / "eval").mkdir(parents=True)
    (work / "highway" / "seed0" / "round0" / "eval" / "eval.json").write_text("{}")
    (work / "scoreboard.md").write_text("| table |")
    (work / "highway" / "data.npz").write_bytes(b"0" * 100)
    monkeypatch.setattr(dc, "scoreboard_steps", lambda w, seeds, scenarios=None: [dc.Step("scoreboard", ["-c", "pass"], 30)])
    out = tmp_path / "out"
    assert dc.main(["scoreboard", "--scenarios", "highway", "--out", str(out), "--work", str(work.parent)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"][0]["rc"] == 0 and summary["steps"][1]["files"] == 2
    assert (out / "scoreboard" / "scoreboard.md").exists()
    assert not (out / "scoreboard" / "highway" / "data.npz").exists()
    with pytest.raises(SystemExit, match="--seeds"):
        dc.main(["scoreboard", "--seeds", "0,x", "--out", str(out), "--dry-run"])
    with pytest.raises(SystemExit, match="--workers"):
        dc.main(["bench", "--workers", "0", "--out", str(out), "--dry-run"])
    with pytest.raises(SystemExit, match="--scenarios"):  # all six do not fit one device command
        dc.main(["scoreboard", "--out", str(out), "--dry-run"])


def test_the_tables_are_copied_while_the_scoreboard_still_runs(tmp_path, monkeypatch):
    """The device budget may end the command before the scoreboard does: what it finished by then must
    already be in OUT."""
    dc = _script("device_check")
    monkeypatch.setattr(dc, "TICK_S", 0.2)
    work, out = tmp_path / "work", tmp_path / "out"
    finished = work / "scoreboard" / "intersection" / "seed0" / "rounds.json"
    writer = (f"import pathlib, time; p = pathlib.Path({str(finished)!r}); p.parent.mkdir(parents=True); "
              "p.write_text('{}'); time.sleep(60)")
    monkeypatch.setattr(dc, "scoreboard_steps", lambda w, seeds, scenarios=None: [dc.Step("scoreboard", ["-c", writer], 3)])
    t = time.monotonic()
    copied = []
    real = dc.copy_tables

    def spy(src, dest):
        copied.append((time.monotonic() - t, real(src, dest)))
        return copied[-1][1]

    monkeypatch.setattr(dc, "copy_tables", spy)
    assert dc.main(["scoreboard", "--scenarios", "intersection", "--out", str(out), "--work", str(work)]) == 1
    # copied during the step (before its 3 s timeout), not only after it
    assert any(when < 2.9 and n == 1 for when, n in copied), copied
    assert (out / "scoreboard" / "intersection" / "seed0" / "rounds.json").exists()
