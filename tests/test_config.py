"""Config loading: what a user types becomes the value they meant, or one line naming the problem."""
from __future__ import annotations

import os

import pytest

from driving.config import load_config
from driving.errors import UserError


def test_a_path_that_starts_with_the_home_tilde_is_expanded(tmp_path):
    """YAML, a quoted override and zsh pass `~` on as it is: `out=~/ds` made a folder named `~`."""
    from driving.data.collect import CollectConfig

    cfg = load_config(CollectConfig, None, ["out=~/ds"])
    assert cfg.out == os.path.expanduser("~/ds") and not cfg.out.startswith("~")
    path = tmp_path / "c.yaml"
    path.write_text("out: ~/data/x\nscenario: highway\n")
    assert load_config(CollectConfig, path, []).out == os.path.expanduser("~/data/x")


@pytest.mark.parametrize("override, needle", [
    ("dataset=", "override 'dataset=' has no value: give one, or drop it"),
    ("configs/train/pilotnet.yaml", "a CONFIG.yaml comes first, before the key=value overrides"),
])
def test_an_empty_value_or_a_late_config_file_is_named(override, needle):
    from driving.train import TrainConfig

    with pytest.raises(UserError, match=needle):
        load_config(TrainConfig, None, ["steps=3", override])


def test_paths_given_one_level_off_are_named_with_the_fix(tmp_path):
    """A checkpoint's file for its folder, a comma list for a dataset list, a dataset that lost only
    its meta.json: each message says what to pass or run instead."""
    import shutil

    from driving.checkpoint import resolve
    from driving.data.format import Dataset, DatasetError
    from tests.helpers import synthetic_dataset

    a, b = synthetic_dataset(tmp_path / "a"), synthetic_dataset(tmp_path / "b", seed=1)
    with pytest.raises(DatasetError, match=r"several datasets are a list: dataset=\[a,b\]"):
        Dataset.open(f"{a},{b}")
    (b / "meta.json").unlink()
    with pytest.raises(DatasetError, match="driving data rebuild"):
        Dataset.open(b)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "policy.json").write_text("{}")
    (ckpt / "weights.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"is a file of a checkpoint: pass the folder that holds it, .*ckpt$"):
        resolve(ckpt / "weights.pt")
    shutil.rmtree(ckpt)


def test_a_stage_key_set_to_an_empty_string_is_a_value_not_an_empty_override():
    """A recipe's `train: {wandb: {entity: ""}}` goes to the stage as an override: an empty string, not
    the empty `key=` a user is told to fill in."""
    from driving.config import as_overrides
    from driving.train import TrainConfig

    overrides = as_overrides({"wandb": {"entity": "", "mode": "dryrun"}})
    cfg = load_config(TrainConfig, None, overrides)
    assert cfg.wandb.entity == "" and cfg.wandb.mode == "dryrun"


def test_gaps_free_camera_keys_are_typed_as_the_camera_types_them(tmp_path):
    # gap keeps camera.* as a dict laid over each scenario's own camera: a YAML "48" was a str that
    # reached the camera (a traceback); it is converted, and what cannot be is one line naming the key
    from driving.gap import GapConfig

    f = tmp_path / "gap.yaml"
    f.write_text('camera:\n  height: "48"\n  rgb: true\n')
    cfg = load_config(GapConfig, f, ["camera.metres_per_pixel=2"])
    assert cfg.camera == {"height": 48, "rgb": True, "metres_per_pixel": 2.0}
    assert type(cfg.camera["height"]) is int and type(cfg.camera["metres_per_pixel"]) is float
    with pytest.raises(UserError, match=r"bad config value for 'camera.stack': Value 'two'"):
        load_config(GapConfig, None, ["camera.stack=two"])
