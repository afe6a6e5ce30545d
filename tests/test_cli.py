"""The `driving` command: contract keys, data info/show, one-line errors."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from driving.cli import main


@pytest.fixture(scope="module")
def cli_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ds"
    rc = main(["collect", f"out={out}", "episodes=2", "workers=1", "seed=3", "max_steps=10",
               "scenario=highway", "-q"])
    assert rc == 0
    return out


def test_collect_prints_a_summary(cli_dataset, capsys):
    assert main(["data", "info", str(cli_dataset)]) == 0
    out = capsys.readouterr().out
    assert "episodes  2" in out and "label steer" in out


def test_data_info_json_has_contract_keys(cli_dataset, capsys):
    assert main(["data", "info", str(cli_dataset), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2
    assert info["frames"] == 20
    assert sum(info["outcomes"].values()) == 2 and set(info["outcomes"]) == {"crash", "offroad", "ok"}
    assert -1 <= info["expert_action"]["steer"]["min"] <= info["expert_action"]["steer"]["max"] <= 1


def test_data_show_writes_a_contact_sheet_of_real_frames(cli_dataset, tmp_path, capsys):
    png = tmp_path / "sheet.png"
    assert main(["data", "show", str(cli_dataset), "--out", str(png), "--frames", "6", "--columns", "3"]) == 0
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 2 * 128 and img.shape[1] > 3 * 64
    # the tiles hold the road (grey) and the ego (white, 255) as drawn by the camera
    assert (img == 255).all(axis=2).sum() > 50
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10


@pytest.mark.parametrize("args, needle", [
    (["collect", "scenario=moon", "out=/tmp/never"], "unknown scenario 'moon'"),
    (["collect", "bogus=1"], "unknown config key 'bogus'"),
    (["collect", "missing.yaml"], "config file missing.yaml not found"),
    (["data", "info", "/nonexistent/ds"], "not found"),
])
def test_user_errors_are_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_demo_runs_the_whole_pipeline_at_tiny_scale(tmp_path, capsys):
    """The README's main job: collect -> train -> eval -> video, wired end to end."""
    from driving.video import probe_video

    rc = main(["demo", "--out", str(tmp_path / "demo"), "-q", "collect.episodes=2", "max_steps=10",
               "camera.height=64", "camera.width=32", "train.steps=4", "train.wandb.mode=disabled",
               "train.batch_size=8", "eval.episodes=1", "eval.max_steps=5", "eval.workers=1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "driving score" in out
    ev = json.loads((tmp_path / "demo" / "eval" / "eval.json").read_text())
    assert ev["policy"] == "pilotnet" and len(ev["videos"]) == 1
    video = tmp_path / "demo" / "eval" / ev["videos"][0]["file"]
    info = probe_video(video)
    assert info["codec"] == "h264" and info["frames"] > 5
    assert (tmp_path / "demo" / "data_contact_sheet.png").is_file()
