"""The `driving` command: contract keys, data info/show, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from driving.cli import main
from driving.config import load_config, to_dict
from driving.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


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
    assert "steer 0.15  accel" in out  # noise on every step: no duty printed


def test_collected_episodes_record_the_experts_lane_plan(cli_dataset):
    from driving.data.format import Dataset

    ds = Dataset.open(cli_dataset)
    for i in range(len(ds)):
        ep = ds.episode(i)
        assert ep["expert_plan"].dtype == np.int8 and len(ep["expert_plan"]) == len(ep["frames"])
        assert set(np.unique(ep["expert_plan"])) <= {-1, 0, 1}


def test_data_info_json_has_contract_keys(cli_dataset, capsys):
    assert main(["data", "info", str(cli_dataset), "json=true"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 2
    assert info["frames"] == 20
    assert sum(info["outcomes"].values()) == 2 and set(info["outcomes"]) == {"crash", "offroad", "ok"}
    assert -1 <= info["expert_action"]["steer"]["min"] <= info["expert_action"]["steer"]["max"] <= 1


def test_data_show_writes_a_contact_sheet_of_real_frames(cli_dataset, tmp_path, capsys):
    png = tmp_path / "sheet.png"
    assert main(["data", "show", str(cli_dataset), f"out={png}", "frames=6", "columns=3"]) == 0
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 2 * 128 and img.shape[1] > 3 * 64
    # the tiles hold the road (grey) and the ego (white, 255) as drawn by the camera
    assert (img == 255).all(axis=2).sum() > 50
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10
    assert main(["data", "show", str(cli_dataset), f"out={png}", "frames=2"]) == 0  # its own PNG: replaced
    assert cv2.imread(str(png)).shape[0] < img.shape[0]


@pytest.mark.parametrize("out, needle", [("meta.json", "must name a .png file"),
                                         ("index.png", "exists and is not a PNG image")])
def test_data_show_never_writes_over_what_is_not_a_png(cli_dataset, tmp_path, capsys, out, needle):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(cli_dataset, ds)
    (ds / "index.png").write_bytes((ds / "index.json").read_bytes())
    before = {p.name: p.read_bytes() for p in ds.iterdir() if p.is_file()}
    assert main(["data", "show", str(ds), f"out={ds / out}"]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in ds.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("args, needle", [
    (["collect", "scenario=moon", "out=/tmp/never"], "unknown scenario 'moon'"),
    (["collect", "bogus=1"], "unknown config key 'bogus'"),
    (["collect", "missing.yaml"], "config file missing.yaml not found"),
    # a scenario's name where the config file goes: the natural first try
    (["collect", "highway"], "highway is a scenario, not a config file: use scenario=highway"),
    (["gap", "roundabout,merge"], "roundabout,merge are scenarios, not a config file: use scenario=roundabout,merge"),
    (["train", "highway"], "config file highway not found"),  # train has no scenario key
    (["collect", "highway,merge"], "highway,merge are scenarios, not a config file: this command takes one, e.g. "
                                   "scenario=highway"),
    (["data", "info", "/nonexistent/ds"], "not found"),
    (["data", "show", "/nonexistent/ds", "seed=-1"], "seed must be in 0.."),
    # values torch would take without a word (a negative loss, a rising schedule, negative images)
    (["train", "dataset=/tmp/never", "plan_weight=-1"], "plan_weight must be a number >= 0"),
    # values that run and learn or collect nothing worth having
    (["train", "dataset=/tmp/never", "optim.lr=0"], "optim.lr must be > 0"),
    (["train", "dataset=/tmp/never", "loss_weights=[0,0]"], "loss_weights are both 0"),
    (["collect", "noise.steer=1e9", "out=/tmp/never"], "use values <= 1 (got 1e+09 and 0.3"),
    (["collect", "env.vehicles_density=-1", "out=/tmp/never"], "env.vehicles_density=-1 must be a number > 0"),
    (["collect", "env.vehicles_count=100000", "out=/tmp/never"], "env.vehicles_count=100000 is more than 1000"),
    (["train", "dataset=/tmp/never", "optim.min_lr_ratio=5"], "optim.min_lr_ratio must be in [0, 1]"),
    (["train", "dataset=/tmp/never", "augment.brightness=-1"], "augment.brightness must be a number in [0, 1]"),
    (["train", "dataset=/tmp/never", "augment.contrast=nan"], "augment.contrast must be a number in [0, 1]"),
    (["gap", "steer_threshold=nan"], "steer_threshold must be numbers > 0"),
    # gap's camera keys are a free dict (over each scenario's own camera): typed as collect types them
    (["gap", "camera.height=abc"], "bad config value for 'camera.height': Value 'abc'"),
    (["gap", "camera.metres_per_pixel=nan"], "camera.metres_per_pixel must be a number > 0"),
    (["gap", "camera.rgb=maybe"], "bad config value for 'camera.rgb'"),
    (["gap", "expert.perception=privileged"], "expert.perception is gap's own"),
    (["dagger", "workers=-1", "out=/tmp/never"], "workers must be >= 0"),
    # simulator keys are checked in this process before any worker starts, whatever the workers
    (["collect", "env.bogus=1", "workers=2", "out=/tmp/never"], "unknown highway-env config key 'bogus'"),
    (["collect", "expert.bogus=1", "workers=2", "out=/tmp/never"], "unknown expert config keys ['bogus']"),
    (["eval", "expert", "env.bogus=1", "workers=2", "out=/tmp/never"], "unknown highway-env config key 'bogus'"),
    (["eval", "expert", "expert_perception=psychic", "out=/tmp/never"], "expert_perception must be one of"),
    (["eval", "expert", "missing.yaml"], "config file missing.yaml not found"),
    # one config style: the old flags of `data info/show` point to their key=value form
    (["data", "info", "/nonexistent/ds", "--json"], "not --json: driving data info DATASET json=true"),
    (["data", "show", "/nonexistent/ds", "--frames", "6"], "not --frames: driving data show DATASET frames=N"),
    (["eval", "expert", "scenario=roundabout", "env.vehicles_count=lots", "out=/tmp/never"], "bad config"),
    (["eval", "expert", "max_steps=0", "out=/tmp/never"], "max_steps must be in 1..100,000, got 0"),
    (["collect", "max_steps=100000001", "out=/tmp/never"], "max_steps must be in 1..100,000, got 100000001"),
    (["eval", "expert", "workers=-1", "out=/tmp/never"], "workers and videos must be >= 0"),
    (["eval", "expert", "videos=-1", "out=/tmp/never"], "workers and videos must be >= 0"),
    (["eval", "expert", "envs_per_worker=0", "out=/tmp/never"], "envs_per_worker must be in 1..16, got 0"),
    (["train", "dataset=/tmp/never", "wandb.mode=offlin"], "wandb.mode must be one of online, offline, disabled"),
    (["eval"], "driving eval takes what to evaluate first: driving eval CHECKPOINT|expert"),
    (["dagger", "envs_per_worker=17", "out=/tmp/never"], "envs_per_worker must be in 1..16, got 17"),
    (["train", "dataset=/tmp/never", "eval.envs_per_worker=0"], "eval.envs_per_worker must be in 1..16"),
    # a value YAML cannot parse is named, whichever command it was given to
    (["dagger", "beta=[0.5,", "out=/tmp/never"], "override 'beta=[0.5,': its value is not valid YAML"),
    (["scoreboard", "scenario=,", "out=/tmp/never"], "override 'scenario=,': its value is not valid YAML"),
    # what the scoreboard and dagger set for every run is theirs: a stage key may not override it
    (["scoreboard", "train.seed=5", "out=/tmp/never"], "train.seed is set by the scoreboard itself: use seeds="),
    (["scoreboard", "collect.scenario=merge", "out=/tmp/never"], "collect.scenario is set by the scoreboard"),
    (["scoreboard", "per_scenario.merge.eval.out=/tmp/z", "out=/tmp/never"],
     "per_scenario.merge.eval.out is set by the scoreboard itself: use out="),
    (["scoreboard", "seeds=[0,0]", "out=/tmp/never"], "seeds must be different training seeds >= 0"),
    (["scoreboard", "seeds=[-1]", "out=/tmp/never"], "seeds must be different training seeds >= 0"),
    (["scoreboard", "dagger.beta=[0.2]", "out=/tmp/never"], "dagger keys are for DAgger rounds"),
    (["scoreboard", "train.device=bogus", "out=/tmp/never"], "unknown device 'bogus'"),
    (["scoreboard", "scenario=highway", "per_scenario.merge.train.bogus=1", "out=/tmp/never"],
     "unknown config key 'bogus'"),  # checked though merge does not run
    # a scoreboard runs whole stages: a shard of one would be scored as the whole (its table said 3 seeds, 2 ran)
    (["scoreboard", "eval.shard=0/2", "out=/tmp/never"], "eval.shard is set by the scoreboard itself"),
    (["scoreboard", "collect.shard=1/2", "out=/tmp/never"], "collect.shard is set by the scoreboard itself"),
    # a scenario's stage given one value (was an AttributeError traceback)
    (["scoreboard", "per_scenario.highway.train=[1,2]", "out=/tmp/never"],
     "per_scenario.highway.train is a group of keys"),
    (["scoreboard", "per_scenario.highway.eval=abc", "out=/tmp/never"], "per_scenario.highway.eval is a group of keys"),
    (["dagger", "train.out=/tmp/x", "out=/tmp/never"], "train.out is set by driving dagger itself: use out="),
    (["dagger", "train.dataset=/tmp/y", "out=/tmp/never"], "train.dataset is set by driving dagger itself"),
    (["dagger", "collect.scenario=merge", "out=/tmp/never"], "collect.scenario is set by driving dagger itself"),
    (["dagger", "device=bogus", "out=/tmp/never"], "unknown device 'bogus'"),
    # a count whose seed list filled the memory (a silent hang), seeds past gymnasium's, and a collection
    # on the held-out evaluation seeds
    (["collect", "episodes=99999999999999", "out=/tmp/never"], "episodes must be in 1..1,000,000"),
    (["eval", "expert", "seed=2147483000", "episodes=1000", "out=/tmp/never"], "(the last episode's seed) must be"),
    (["collect", "seed=999990", "episodes=20", "out=/tmp/never"], "seeds 999990..1000009 reach the held-out"),
    # config files and interpolations: what is wrong, not "not found" or "unknown key"
    (["collect", "out=${oc.env:DRIVING_TEST_UNSET_VARIABLE}"], "Environment variable 'DRIVING_TEST_UNSET_VARIABLE'"),
    (["train", "/tmp", "dataset=/tmp/never"], "config file /tmp is a folder, not a YAML file"),
    # a pipeline's stage keys are named with their group (was "episodes must be ..." where dagger's own
    # episodes=0 is fine), and a key given twice is suggested as its last value
    (["dagger", "eval.episodes=0", "out=/tmp/never"], "in eval.*: bad config: episodes must be in 1.."),
    (["scoreboard", "scenario=highway", "per_scenario.highway.eval.seed=-1", "out=/tmp/never"],
     "in eval.* or per_scenario.highway.eval.*: bad config: seed must be in 0.."),
    (["dagger", "train.net.bogus=1", "out=/tmp/never"], "in train.*: unknown config key 'net.bogus'"),
    (["train", "dataset=/tmp/never", "loss_weights=[1,1]", "loss_weights=3"], "loss_weights=[3]"),
    # devices torch knows but this project does not run on (were tracebacks deep in training)
    (["train", "dataset=/tmp/never", "device=mps"], "device 'mps' is not supported: use auto, cpu, cuda"),
    (["eval", "expert", "device=meta", "out=/tmp/never"], "device 'meta' is not supported"),
    (["train", "dataset=/tmp/never", "device=cpu:1"], "there is one CPU device, use device=cpu"),
    (["train", "dataset=/tmp/never", "seed=-1"], "seed must be in 0.."),
    # env.* keys the scenario fixes (timing, actions, episode ends) are refused; values highway-env
    # cannot use are one line before any worker starts, in every command that builds envs
    (["eval", "expert", "env.policy_frequency=10", "out=/tmp/never"], "env.policy_frequency is fixed by scenario"),
    (["collect", "env.duration=5", "out=/tmp/never"], "env.duration is fixed by scenario 'highway': use max_steps="),
    (["collect", "env.controlled_vehicles=2", "out=/tmp/never"], "the stack drives one ego"),
    (["collect", "scenario=racetrack", "env.other_vehicles=-1", "out=/tmp/never"],
     "env.other_vehicles=-1 must be a whole number >= 0"),
    (["collect", "env.vehicles_count=abc", "workers=2", "out=/tmp/never"],
     "env.vehicles_count='abc' must be a whole number >= 0"),
    (["eval", "expert", "env.other_vehicles_type=foo.Bar", "workers=2", "out=/tmp/never"],
     "ModuleNotFoundError: No module named 'foo'"),
    (["gap", "env.lanes_count=abc", "episodes=1", "workers=2"], "env.lanes_count='abc' must be a whole number >= 1"),
    # a value of the wrong shape: what the key takes, not OmegaConf's words
    (["scoreboard", "seeds=0", "--print-config"], "seeds takes a list: seeds=[0]"),
    (["eval", "expert", "scenario=[highway,merge]", "out=/tmp/never"], "scenario takes one value"),
    (["collect", "camera=5", "out=/tmp/never"], "camera is a group of keys, not one value"),
    # free-form groups (a dict of keys, not a dataclass): OmegaConf said "Cannot assign str to Dict[str, Any]"
    (["collect", "expert=fast", "out=/tmp/never"], "expert is a group of keys, not one value"),
    (["eval", "expert", "env=3", "out=/tmp/never"], "env is a group of keys, not one value"),
    # seeds below 0 reached gymnasium (a traceback, or after collecting and training)
    (["collect", "seed=-5", "out=/tmp/never"], "seed must be in 0.."),
    (["gap", "seed=-1"], "seed must be in 0.."),
    (["eval", "expert", "seed=-1", "out=/tmp/never"], "seed must be in 0.."),
    (["train", "dataset=/tmp/never", "eval.seed=-1"], "eval.seed must be in 0.."),
    # values torch would take and fail on (or NaN that trains silently)
    (["train", "dataset=/tmp/never", "optim.lr=nan"], "optim.lr must be a number >= 0"),
    (["train", "dataset=/tmp/never", "optim.weight_decay=-1"], "optim.weight_decay must be a number >= 0"),
    (["train", "dataset=/tmp/never", "net.dropout=2"], "net.dropout is a probability"),
    (["train", "dataset=/tmp/never", "threads=-1"], "threads must be >= 0"),
    (["train", "dataset=/tmp/never", "eval.every=2", "eval.episodes=0"], "eval.episodes must be in 1..1,000,000"),
    (["train", "dataset=[/tmp/a,/tmp/b]", "dataset_weights=[1,.nan]"], "dataset_weights must be shares >= 0"),
    (["train", "dataset=/tmp/never", "loss_weights=[.nan,1]"], "loss_weights must be weights >= 0"),
    (["collect", "noise.steer=.nan", "out=/tmp/never"], "finite values >= 0"),
    (["dagger", "takeover=.nan", "out=/tmp/never"], "takeover must be a number >= 0"),
    (["data", "show", "/nonexistent", "frames=100000"], "frames must be <= 1000"),
    # keys highway-env does not read for that scenario did nothing, silently
    (["collect", "scenario=merge", "env.vehicles_count=10", "out=/tmp/never"],
     "unknown highway-env config key 'vehicles_count' for scenario 'merge'"),
    (["eval", "expert", "scenario=intersection", "env.destination=o3", "out=/tmp/never"],
     "env.destination does not steer the ego of scenario 'intersection'"),
    (["eval", "expert", "scenario=highway,highway", "out=/tmp/never"], "scenario highway is listed twice"),
    (["gap", "scenario=merge,merge"], "scenario merge is listed twice"),
    (["data", "show", "/nonexistent", "frames=0"], "frames and columns must be >= 1"),
    (["collect", "expert.conflict_radius=0", "out=/tmp/never"], "expert.conflict_radius must be > 0"),
])
def test_user_errors_are_one_line(args, needle, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_bad_keys_are_refused_before_any_work(cli_dataset, tmp_path, capsys):
    """Nothing is collected or trained before every key is checked: the folder is not even made, and
    round 0's collect keys are checked where dataset= stands in for the collection."""
    out = tmp_path / "never"
    for args in (["scoreboard", "train.device=bogus"], ["dagger", "device=bogus"], ["dagger", "train.model=foo"],
                 ["scoreboard", "per_scenario.highway.train.model=foo"],
                 # the keys the rounds set themselves, in a DAgger scoreboard (refused after collecting before)
                 ["scoreboard", "rounds=1", "train.init_from=/tmp/x"], ["scoreboard", "rounds=1", "train.dataset_weights=[1]"]):
        assert main([*args, f"out={out}"]) == 2
    assert main(["dagger", f"dataset={cli_dataset}", "collect.bogus=1", f"out={out}"]) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err
    # refused where they are used, after round 0 had trained or a run's config.yaml was written (a folder
    # that looks like a run)
    for args, words in ((["dagger", f"dataset={cli_dataset}", "eval.env.bogus=1"], "unknown highway-env config key"),
                        (["train", f"dataset={cli_dataset}", "batch_size=4", "net.stack=0"],
                         "net.stack must be within 1..32"),
                        (["train", f"dataset={cli_dataset}", "batch_size=4", "eval.every=1", "eval.scenario=moon"],
                         "eval.scenario")):
        assert main([*args, f"out={out}", "-q"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not out.exists(), args
    # a command refused inside its folder lock leaves none of the parents it made (was an empty runs/)
    assert main(["demo", "dataset=/nonexistent", f"out={out / 'runs' / 'demo'}", "-q"]) == 2
    assert "dataset /nonexistent not found" in capsys.readouterr().err and not out.exists()


def test_a_checkpoint_is_no_output_folder_and_a_foreign_policy_json_is_one_line(cli_dataset, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    assert main(["train", f"dataset={cli_dataset}", f"out={run}", "steps=1", "batch_size=4", "device=cpu",
                 "threads=1", "wandb.mode=disabled", "-q"]) == 0
    last = run / "checkpoints" / "last"
    before = sorted(p.name for p in last.resolve().iterdir())
    for args in (["train", f"dataset={cli_dataset}", "steps=1", "batch_size=4", "device=cpu", "wandb.mode=disabled"],
                 ["eval", "expert", "episodes=1", "max_steps=2", "videos=0", "workers=1"]):
        assert main([*args, f"out={last}", "-q"]) == 2  # was: a run nested in the checkpoint took over `last`
        err = capsys.readouterr().err
        assert "holds a checkpoint, and this command writes" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in last.resolve().iterdir()) == before
    foreign = tmp_path / "foreign"
    shutil.copytree(last.resolve(), foreign)
    (foreign / "checksums.json").unlink()
    for text, words in (("{}", "lacks model, net, input, camera, action"),
                        (json.dumps({**json.loads((last / "policy.json").read_text()), "net": {"bogus": 1}}),
                         "unexpected keyword argument 'bogus'")):
        (foreign / "policy.json").write_text(text)
        assert main(["eval", str(foreign), "episodes=1", "max_steps=2", "videos=0", "workers=1",
                     f"out={tmp_path / 'e'}", "-q"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_an_interrupt_says_whether_a_rerun_resumes_or_starts_again(monkeypatch, capsys):
    import driving.data.collect as collect_mod
    import driving.evaluate as evaluate_mod

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_mod, "evaluate", stop)
    monkeypatch.setattr(collect_mod, "collect", stop)
    assert main(["eval", "expert", "out=/tmp/never"]) == 130
    assert "interrupted: re-run the same command to start it again (an evaluation does not resume" \
        in capsys.readouterr().err
    assert main(["collect", "out=/tmp/never"]) == 130
    assert "interrupted: re-run the same command to resume" in capsys.readouterr().err


def test_an_empty_group_in_a_config_file_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("camera:\nepisodes: 3\n")  # was "field 'camera' is not Optional"
    assert main(["collect", str(tmp_path / "empty.yaml"), f"out={tmp_path / 'never'}"]) == 2
    err = capsys.readouterr().err
    assert f"camera in {tmp_path / 'empty.yaml'} is empty" in err and err.count("\n") == 1


def test_a_config_file_that_is_not_yaml_is_one_line_naming_it_and_where(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("episodes: [1,\nscenario: highway\n")
    assert main(["collect", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"config file {bad} is not valid YAML" in err and "line 3" in err and "\n" not in err


@pytest.mark.parametrize("text, needle", [
    ("- 1\n- 2\n", "must hold `key: value` lines at its top level"),
    ("5\n", "must hold `key: value` lines at its top level"),
    ("camera: 5\n", "camera in {bad} is a group of keys, not one value"),
    ("camera:\n  height: 64\nnoise: 0.3\n", "noise in {bad} is a group of keys"),
    ("expert: fast\n", "expert in {bad} is a group of keys"),
])
def test_a_config_file_of_the_wrong_shape_is_one_line_naming_it(tmp_path, capsys, text, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["collect", str(bad), f"out={tmp_path / 'never'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle.format(bad=bad) in err and "\n" not in err and "None" not in err


def test_a_key_where_eval_expects_its_checkpoint_says_so(capsys):
    assert main(["eval", "episodes=1"]) == 2
    assert "takes the checkpoint first" in capsys.readouterr().err


def test_a_library_error_on_a_bad_env_value_names_where_and_what_to_check(capsys):
    # highway-env's IndexError names neither the key nor the fix by itself: the line names the values given
    assert main(["collect", "env.initial_lane_id=7", "expert.target_speed=20", "episodes=1", "out=/tmp/never"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad config for scenario highway: IndexError:" in err and "\n" not in err, err
    assert "check the values given: env.initial_lane_id=7, expert.target_speed=20" in err, err
    # counts its road and traffic generators take without a word (a negative count) or fail on deep in numpy
    for kv in ("env.lanes_count=0", "env.vehicles_count=-1", "env.lanes_count=2.5"):
        assert main(["collect", kv, "episodes=1", "out=/tmp/never"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{kv} must be a whole number >=" in err and "\n" not in err, err
    assert not Path("/tmp/never").exists()


def test_demo_out_key_names_the_demo_folder_and_the_rest_are_dagger_keys():
    """`driving demo out=X` (how every other command names its output) names the demo's folder; every
    other key is a `driving dagger` key on top of the demo's recipe."""
    from driving.demo import demo_config, split_overrides

    out, rest = split_overrides("runs/demo", ["out=/tmp/d", "rounds=1", "train.steps=5", "eval.episodes=2",
                                              "collect.seed=7"])
    assert out == Path("/tmp/d") and rest == ["rounds=1", "train.steps=5", "eval.episodes=2", "collect.seed=7"]
    assert split_overrides("runs/demo", ["train.steps=5"])[0] == Path("runs/demo")
    with pytest.raises(UserError, match="out= is empty"):
        split_overrides("runs/demo", ["out="])
    cfg = demo_config("runs/demo", ["out=/tmp/d", "rounds=1", "train.steps=5"])
    assert cfg.out == "/tmp/d" and cfg.rounds == 1 and cfg.train["steps"] == 5
    assert cfg.train["net"]["plan_head"] is True  # the user's key went on top of the recipe, not instead
    with pytest.raises(UserError, match="unknown config key 'episode'"):
        demo_config("runs/demo", ["episode=3"])


def test_the_demo_drives_the_recipe_of_the_shipped_highway_dagger_config():
    """The demo's built-in recipe and configs/dagger/highway.yaml are one recipe (measured in
    docs/FIGURES.md): they differ only in the output folder and the number of evaluation seeds."""
    from driving.dagger import DaggerConfig
    from driving.demo import demo_config

    shipped = to_dict(load_config(DaggerConfig, ROOT / "configs" / "dagger" / "highway.yaml", ["out=x"]))
    demo = to_dict(demo_config("x"))
    assert shipped.pop("eval") == {"episodes": 50, "videos": 1} and demo.pop("eval") == {}
    assert demo == shipped


@pytest.mark.parametrize("path", sorted(str(p) for p in (ROOT / "configs" / "collect").glob("*.yaml")))
def test_a_scenarios_collect_config_is_the_recipe_the_scoreboard_collects_with(path):
    """`driving collect configs/collect/S.yaml` gives the data the scoreboard's and dagger's rows were
    measured on (they collect with `scenario=S` and the defaults): the same noise and camera."""
    from driving.data.collect import CollectConfig

    shipped = to_dict(load_config(CollectConfig, path, []))
    default = to_dict(load_config(CollectConfig, None, [f"scenario={shipped['scenario']}"]))
    for key in ("noise", "camera", "expert", "env", "max_steps"):
        assert shipped[key] == default[key], f"{path}: {key}"


def test_demo_runs_the_whole_pipeline_at_tiny_scale(tmp_path, capsys):
    """The README's main job: collect -> train -> a DAgger round -> eval every round -> video, wired end
    to end."""
    from driving.video import probe_video

    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "-q", "collect.episodes=2", "collect.max_steps=10", "rounds=1",
               "episodes=1", "collect.camera.height=64", "collect.camera.width=32", "train.steps=4",
               "train.wandb.mode=disabled", "train.batch_size=8", "eval.episodes=1", "eval.max_steps=5",
               "eval.workers=1", "workers=1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "driving score" in printed and "| round |" in printed
    board = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in board["rounds"]] == [0, 1] and board["command"].startswith("driving demo")
    ev = json.loads((out / "round1" / "eval" / "eval.json").read_text())
    assert ev["policy"] == "pilotnet" and len(ev["videos"]) == 1
    assert ev["checkpoint"].startswith(str(out / "round1" / "run"))
    meta = json.loads((out / "round0" / "data" / "meta.json").read_text())
    assert meta["noise"]["steer_duty"] == 0.5  # the recipe reached collection, and its summary says so
    assert "steer 0.15 (on 50% of steps, bursts of 10)" in printed
    video = out / "round1" / "eval" / ev["videos"][0]["file"]
    info = probe_video(video)
    assert info["codec"] == "h264" and info["frames"] > 5
    assert (out / "data_contact_sheet.png").is_file()
    assert f"video {video}" in printed


def test_scoreboard_runs_every_stage_per_seed_and_resumes_without_redoing_work(tmp_path, capsys):
    out = tmp_path / "board"
    args = ["scoreboard", "scenario=highway", "seeds=[0,1]", "size=cpu", f"out={out}",
            "collect.episodes=2", "collect.max_steps=6", "train.steps=2", "train.batch_size=4",
            "train.val_every=1", "train.checkpoint_every=1", "train.device=cpu",
            "eval.episodes=2", "eval.max_steps=6", "eval.videos=0", "eval.workers=1", "-q"]
    assert main(args) == 0
    board = json.loads((out / "scoreboard.json").read_text())
    row = board["scenarios"]["highway"]
    assert row["training_seeds"] == [0, 1] and row["eval_episodes"] == 2
    assert row["policy"]["driving_score"]["n"] == 2 and 0 <= row["policy"]["driving_score"]["mean"] <= 1
    assert row["expert"]["driving_score"]["mean"] == 1.0
    assert board["hardware"]["cpu_cores"] >= 1 and board["command"].startswith("driving scoreboard")
    table = (out / "scoreboard.md").read_text()
    assert "| highway |" in table and "driving scoreboard" in table
    weights = [json.loads((out / "highway" / f"seed{s}" / "run" / "checkpoints" / "last" / "policy.json")
                          .read_text())["train_config"]["seed"] for s in (0, 1)]
    assert weights == [0, 1]
    ev0, ev1 = (json.loads((out / "highway" / f"seed{s}" / "eval" / "eval.json").read_text()) for s in (0, 1))
    assert ev1["config"]["expert_from"] == str(out / "highway" / "seed0" / "eval")  # the expert drove once
    assert ev1["scenarios"]["highway"]["episodes"]["expert"] == ev0["scenarios"]["highway"]["episodes"]["expert"]
    evals = {s: (out / "highway" / f"seed{s}" / "eval" / "eval.json").stat().st_mtime_ns for s in (0, 1)}
    assert main(args) == 0  # a second run finds everything done
    assert {s: (out / "highway" / f"seed{s}" / "eval" / "eval.json").stat().st_mtime_ns for s in (0, 1)} == evals
    said = capsys.readouterr()
    assert "scoreboard.md" in said.out and "had rows for" not in said.err
    # the sizes line states what runs: the machine's sizes with the stage keys given on top
    assert "collect episodes=2; train steps=2 batch_size=4 net.stack=4 val_every=1 checkpoint_every=1; " \
           "eval episodes=2" in said.out
    # asking the same folder for less than it holds: refused (the table would state sizes not run)
    table = (out / "scoreboard.md").read_text()
    for smaller, needle in [("collect.episodes=1", f"{out / 'highway' / 'data'} already holds episodes up to "
                                                   "number 1 and collect.episodes=1 asks for fewer"),
                            ("train.steps=1", f"{out / 'highway' / 'seed0' / 'run'} is already trained to step 2 "
                                              "and train.steps=1 asks for fewer")]:
        assert main([a if a.split("=")[0] != smaller.split("=")[0] else smaller for a in args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err
    assert (out / "scoreboard.md").read_text() == table
    # another scenario alone into the same folder: the table is its own, and the row it drops is named
    alone = {"scenario": "scenario=merge", "seeds": "seeds=[0]"}
    assert main([alone.get(a.split("=")[0], a) for a in args]) == 0
    assert (f"note: {out / 'scoreboard.md'} had rows for highway, which this run does not list: the table now "
            "holds merge only") in capsys.readouterr().err
    assert list(json.loads((out / "scoreboard.json").read_text())["scenarios"]) == ["merge"]


def test_scoreboard_with_dagger_rounds_puts_bc_beside_the_last_round_with_the_gain(tmp_path, capsys):
    """Issue 11's bookkeeping in one command: per scenario and training seed BC then DAgger rounds, the
    table BC beside the last round, the gain over BC across training seeds, the targets met."""
    out = tmp_path / "board"
    args = ["scoreboard", "scenario=highway", "seeds=[0,1]", "size=cpu", f"out={out}", "rounds=1",
            "dagger.episodes=1", "dagger.workers=1", "dagger.device=cpu", "collect.episodes=2", "collect.max_steps=6",
            "collect.workers=1", "train.steps=2", "train.batch_size=4", "train.val_every=1",
            "train.checkpoint_every=1", "train.device=cpu", "train.threads=1", "train.wandb.mode=disabled",
            "eval.episodes=2", "eval.max_steps=6", "eval.videos=0", "eval.workers=1", "-q"]
    assert main(args) == 0
    board = json.loads((out / "scoreboard.json").read_text())
    row = board["scenarios"]["highway"]
    assert row["rounds"] == 1 and row["training_seeds"] == [0, 1]
    for s in (0, 1):  # each training seed ran its own rounds, with its own seed, on the one dataset
        rounds = json.loads((out / "highway" / f"seed{s}" / "rounds.json").read_text())
        assert [r["round"] for r in rounds["rounds"]] == [0, 1]
        for r in (0, 1):
            policy = json.loads((out / "highway" / f"seed{s}" / f"round{r}" / "run" / "checkpoints" / "last"
                                 / "policy.json").read_text())
            assert policy["train_config"]["seed"] == s
            paths = policy["dataset"]["path"]
            assert (paths if r else [paths])[0] == str(out / "highway" / "data")
        assert row["checkpoints"][s].startswith(str(out / "highway" / f"seed{s}" / "round1" / "run"))
    # the policy row is the last round's evaluation, BC round 0's, the gain their paired difference
    last = [json.loads((out / "highway" / f"seed{s}" / "round1" / "eval" / "eval.json").read_text())
            for s in (0, 1)]
    ds = [ev["scenarios"]["highway"]["aggregate"]["policy"]["driving_score"]["mean"] for ev in last]
    assert row["policy"]["driving_score"]["mean"] == pytest.approx(sum(ds) / 2)
    assert row["policy"]["driving_score"]["n"] == 2 and row["bc"]["driving_score"]["n"] == 2
    gains = [json.loads((out / "highway" / f"seed{s}" / "rounds.json").read_text())["rounds"][1]["gain_over_bc"]
             for s in (0, 1)]
    assert row["gain_over_bc"]["driving_score"]["mean"] == pytest.approx(
        (gains[0]["driving_score"]["mean"] + gains[1]["driving_score"]["mean"]) / 2)
    assert row["gain_interval_over"] == "training seeds"
    assert set(row["targets"]) == set(row["bc_targets"]) == {"driving_score", "collision_rate", "lane_changes",
                                                             "mean_abs_lat_accel"}
    assert set(board["stage_s"]) == {"collect", "dagger"} and board["stage_s"]["dagger"] > 0
    # every training seed is scored beside the first seed's expert episodes
    first = str(out / "highway" / "seed0" / "round0" / "eval")
    assert [ev["config"]["expert_from"] for ev in last] == [first, str(out / "highway" / "seed1" / "round0" / "eval")]
    seed1_bc = json.loads((out / "highway" / "seed1" / "round0" / "eval" / "eval.json").read_text())
    assert seed1_bc["config"]["expert_from"] == first
    table = (out / "scoreboard.md").read_text()
    assert "| highway | BC |" in table and "| highway | DAgger round 1 |" in table
    assert "Gain of DAgger round 1 over BC" in table
    evals = {s: (out / "highway" / f"seed{s}" / "round1" / "eval" / "eval.json").stat().st_mtime_ns for s in (0, 1)}
    assert main(args) == 0  # a second run finds everything done
    assert {s: (out / "highway" / f"seed{s}" / "round1" / "eval" / "eval.json").stat().st_mtime_ns
            for s in (0, 1)} == evals
    capsys.readouterr()
    assert main(["scoreboard", f"out={tmp_path / 'x'}", "dagger.rounds=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "dagger.rounds is set by the scoreboard itself: use the scoreboard's own key" in err and "\n" not in err


def test_a_scenarios_own_scoreboard_keys_reach_that_scenario_only(tmp_path, capsys):
    from driving.scoreboard import ScoreboardConfig, resolve_stages

    cfg = load_config(ScoreboardConfig, ROOT / "configs" / "scoreboard" / "dagger.yaml",
                      [f"out={tmp_path / 'b'}", "scenario=highway,intersection,racetrack,roundabout,merge",
                       "size=cpu"])
    _, _, stages = resolve_stages(cfg)
    (hw, hw_runs), (ix, ix_runs) = stages["highway"], stages["intersection"]
    # racetrack's and roundabout's recipes weigh disagreement frames up; no other scenario's does
    for name in ("racetrack", "roundabout"):
        assert stages[name][1][0][1].disagree_weight == 5.0 == stages[name][1][0][3].train["disagree_weight"]
    assert hw_runs[0][1].disagree_weight == ix_runs[0][1].disagree_weight == 1.0
    # roundabout runs six rounds, the others two
    assert stages["roundabout"][1][0][3].rounds == 6 and hw_runs[0][3].rounds == stages["racetrack"][1][0][3].rounds == 2
    # and 100 student episodes per round, as its recipe (the measured one) says; the others the default
    from driving.dagger import DaggerConfig

    ra_recipe = load_config(DaggerConfig, ROOT / "configs" / "dagger" / "roundabout.yaml", ["out=x"])
    assert stages["roundabout"][1][0][3].episodes == ra_recipe.episodes == 100
    assert hw_runs[0][3].episodes == stages["racetrack"][1][0][3].episodes == 0
    # highway-dense: highway's recipe, with its own lane-change threshold on top
    dense = resolve_stages(load_config(ScoreboardConfig, ROOT / "configs" / "scoreboard" / "dagger.yaml",
                                       [f"out={tmp_path / 'd'}", "scenario=highway-dense", "size=cpu"]))[2]
    dense_run = dense["highway-dense"][1][0]
    assert dense_run[3].train["net"] == {"plan_head": True, "plan_threshold": 0.5} == \
        {"plan_head": dense_run[1].net.plan_head, "plan_threshold": dense_run[1].net.plan_threshold}
    assert dense_run[3].noise_rounds == "alone" and dense["highway-dense"][0].noise.steer_duty == 0.5
    assert hw.noise.steer_duty == 0.5 and ix.noise.steer_duty == 1.0
    assert hw_runs[1][1].net.plan_head and hw_runs[1][1].seed == 1 and not ix_runs[1][1].net.plan_head
    d = hw_runs[2][3]  # the dagger rounds of training seed 2 on highway
    assert d.train["net"] == {"plan_head": True, "plan_threshold": 0.7} and d.train["seed"] == 2
    assert d.eval["episodes"] == 50 and d.beta == [0.5, 0.0] and d.dataset == str(tmp_path / "b" / "highway" / "data")
    assert "net" not in ix_runs[0][3].train
    # merge takes highway's recipe unchanged: the plan head at 0.7, half-time steering noise
    merge, merge_runs = stages["merge"]
    assert merge.noise.steer_duty == 0.5 and merge_runs[0][3].noise_rounds == "alone"
    assert merge_runs[0][3].train["net"] == {"plan_head": True, "plan_threshold": 0.7} and merge_runs[0][1].net.plan_head
    # highway's keys are configs/dagger/highway.yaml's recipe (the measured one), intersection's not
    shipped = load_config(DaggerConfig, ROOT / "configs" / "dagger" / "highway.yaml", ["out=x"])
    assert (d.noise, d.noise_rounds, d.train["net"]) == (shipped.noise, shipped.noise_rounds, shipped.train["net"])
    assert hw.noise.steer_duty == shipped.collect["noise"]["steer_duty"]
    assert ix_runs[0][3].noise_rounds == "all" and ix_runs[0][3].noise.steer == 0.0
    for extra, needle in ((["per_scenario.highway.colect.episodes=3"],
                           "per_scenario.highway.colect: a scenario's own keys go under per_scenario.highway.collect"),
                          (["per_scenario.highway.dagger.out=x"], "per_scenario.highway.dagger.out is set by the "
                                                                  "scoreboard itself: use out= instead"),
                          (["per_scenario.nowhere.train.steps=3"], "nowhere")):
        assert main(["scoreboard", f"out={tmp_path / 'x'}", "size=cpu", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err


def test_a_recipe_file_gives_a_scenario_its_keys_under_the_scenarios_own(tmp_path, capsys):
    from driving.scoreboard import ScoreboardConfig, resolve_stages

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("scenario: intersection\nout: elsewhere\nrounds: 5\nbeta: [0.3]\nepisodes: 7\n"
                      "noise: {steer: 0.2}\ncollect: {noise: {steer_duty: 0.25}, episodes: 9}\n"
                      "train: {net: {plan_head: true}, steps: 11}\neval: {episodes: 3}\n")
    cfg = load_config(ScoreboardConfig, None, [
        f"out={tmp_path / 'b'}", "scenario=highway,merge", "size=cpu", "rounds=1", "eval.episodes=4",
        "dagger.beta=[0.5]", f"per_scenario.highway.recipe={recipe}", "per_scenario.highway.train.steps=13"])
    _, _, stages = resolve_stages(cfg)
    (hw, hw_runs), (mg, mg_runs) = stages["highway"], stages["merge"]
    d, t = hw_runs[0][3], hw_runs[0][1]
    # the recipe's own keys reach highway (the scenario's own train.steps over the recipe's)...
    assert (hw.noise.steer_duty, hw.episodes, t.net.plan_head, t.steps) == (0.25, 9, True, 13)
    assert d.beta == [0.3] and d.noise.steer == 0.2 and d.train["steps"] == 13
    # ...not what the scoreboard decides for every scenario: its name, out, rounds, sizes, evaluation
    assert d.scenario == "highway" and d.rounds == 1 and d.out == str(tmp_path / "b" / "highway" / "seed0")
    assert d.episodes == 0 and d.eval["episodes"] == 4 and hw_runs[0][2].episodes == 4
    assert mg.noise.steer_duty == 1.0 and not mg_runs[0][1].net.plan_head and mg_runs[0][3].beta == [0.5]
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle: resnet18\n")
    for value, needle in ((tmp_path / "none.yaml", "per_scenario.highway.recipe: no file"),
                          (bad, "is not a `driving dagger` config (unknown config key 'modle'")):
        assert main(["scoreboard", f"out={tmp_path / 'x'}", f"per_scenario.highway.recipe={value}"]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err


def test_a_scenario_may_have_its_own_number_of_dagger_rounds(tmp_path, capsys):
    from driving.scoreboard import ScoreboardConfig, markdown, resolve_stages

    cfg = load_config(ScoreboardConfig, None, [f"out={tmp_path / 'b'}", "scenario=highway,roundabout", "size=cpu",
                                               "rounds=2", "per_scenario.roundabout.rounds=4"])
    stages = resolve_stages(cfg)[2]
    assert stages["highway"][1][0][3].rounds == 2 and stages["roundabout"][1][0][3].rounds == 4
    # the table names each scenario's own last round
    m = {k: {"mean": 0.5, "ci_low": 0.5, "ci_high": 0.5, "n": 1}
         for k in ("driving_score", "collision_rate", "lane_changes", "mean_abs_lat_accel")}
    row = {"policy": m, "expert": m, "bc": m, "targets": {}, "bc_targets": {}, "gain_over_bc": m,
           "gain_interval_over": "evaluation seeds", "training_seeds": [0], "eval_episodes": 2}
    board = {"scenarios": {"highway": {**row, "rounds": 2}, "roundabout": {**row, "rounds": 4}}, "sizes": "cpu",
             "hardware": {"cpu_cores": 2, "gpu": None, "torch": "x"}, "wall_s": 60.0, "command": "c"}
    table = markdown(board)
    assert "| highway | DAgger round 2 |" in table and "| roundabout | DAgger round 4 |" in table
    assert "Gain of each scenario's last DAgger round over BC" in table
    assert "each evaluated on 2 held-out seeds" in table
    board["scenarios"]["roundabout"]["eval_episodes"] = 5  # a scenario's own eval.episodes: stated per scenario
    assert "each evaluated on its scenario's held-out seeds (highway 2, roundabout 5)" in markdown(board)
    for extra, needle in ((["rounds=0", "per_scenario.roundabout.rounds=4"], "set rounds (e.g. rounds=2) too"),
                          (["rounds=2", "per_scenario.roundabout.rounds=0"], "must be a whole number >= 1, got 0")):
        assert main(["scoreboard", f"out={tmp_path / 'x'}", "size=cpu", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "per_scenario.roundabout.rounds" in err and needle in err and "\n" not in err


def test_targets_against_the_expert_are_met_on_the_right_side_of_each_bound():
    from driving.scoreboard import meets_targets

    expert = {"driving_score": {"mean": 1.0}, "collision_rate": {"mean": 0.04}, "lane_changes": {"mean": 1.0},
              "mean_abs_lat_accel": {"mean": 0.2}}

    def met(**policy):
        return meets_targets({k: {"mean": v} for k, v in policy.items()}, expert)

    edge = met(driving_score=0.97, collision_rate=0.06, lane_changes=0.7, mean_abs_lat_accel=0.3)
    assert edge == {"driving_score": True, "collision_rate": True, "lane_changes": True, "mean_abs_lat_accel": True}
    past = met(driving_score=0.969, collision_rate=0.061, lane_changes=0.69, mean_abs_lat_accel=0.301)
    assert past == {"driving_score": False, "collision_rate": False, "lane_changes": False,
                    "mean_abs_lat_accel": False}
    assert met(driving_score=0.99) == {"driving_score": True}  # only the metrics both sides have


def test_scenarios_run_at_once_give_the_same_board_as_one_after_another(tmp_path, capsys):
    tiny = ["collect.episodes=2", "collect.max_steps=5", "collect.workers=1", "train.steps=2", "train.batch_size=4",
            "train.val_every=1", "train.checkpoint_every=1", "train.device=cpu", "train.threads=1",
            "eval.episodes=2", "eval.max_steps=5", "eval.videos=0", "eval.workers=1", "-q"]
    boards = {}
    for parallel in (1, 2):
        out = tmp_path / f"p{parallel}"
        assert main(["scoreboard", "scenario=merge,highway", "size=cpu", f"parallel={parallel}", f"out={out}",
                     *tiny]) == 0
        boards[parallel] = json.loads((out / "scoreboard.json").read_text())
    assert boards[2]["parallel"] == 2 and boards[1]["parallel"] == 1
    assert list(boards[2]["scenarios"]) == ["merge", "highway"]  # the table keeps the asked order
    for name in ("merge", "highway"):
        assert boards[1]["scenarios"][name]["policy"] == boards[2]["scenarios"][name]["policy"]
    assert all(v > 0 for v in boards[2]["stage_s"].values())
    assert "2 scenarios at once" in (tmp_path / "p2" / "scoreboard.md").read_text()
    assert main(["scoreboard", "parallel=-1", f"out={tmp_path / 'x'}"]) == 2
    assert "parallel must be >= 0" in capsys.readouterr().err


def test_options_may_come_anywhere_on_the_line(capsys):
    assert main(["train", "steps=3", "--print-config", "batch_size=5", "-q", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "steps: 3" in out and "batch_size: 5" in out and "seed: 7" in out
    with pytest.raises(SystemExit):
        main(["train", "steps=3", "-q", "--no-such-flag"])
    err = capsys.readouterr().err
    assert "driving train: error: unrecognized arguments: --no-such-flag" in err and err.count("\n") == 1, err


def test_a_command_line_mistake_is_one_line_with_the_help_to_read(capsys):
    for argv, words in (([], "give a command: collect, train,"),
                        (["data"], "driving data: error: give a command: info, show,"),
                        (["nosuch"], "invalid choice: 'nosuch'"),
                        (["collect", "--bogus"], "driving collect: error: unrecognized arguments: --bogus")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and words in err and "--help` lists" in err, (argv, err)


def test_every_command_with_keys_prints_its_config(capsys):
    """--print-config resolves the keys without running anything (no source folder needed)."""
    for args, line in ((["video", "/nonexistent", "count=3", "--print-config"], "count: 3"),
                       (["demo", "--print-config", "rounds=1"], "rounds: 1"),
                       (["data", "info", "/nonexistent", "--print-config", "json=true"], "json: true"),
                       (["data", "show", "/nonexistent", "frames=4", "--print-config"], "frames: 4")):
        assert main(args) == 0
        assert line in capsys.readouterr().out.splitlines()


def test_workers_die_with_a_killed_collection(tmp_path):
    """kill -9 of `driving collect` leaves no worker simulating on (and writing episodes), nor the
    fork server they come from."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "driving.cli", "collect", f"out={out}", "episodes=40",
                             "workers=2", "camera.height=64", "camera.width=32", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    episodes = out / "episodes"
    deadline = time.time() + 120
    while time.time() < deadline and not (episodes.is_dir() and any(episodes.glob("*.npz"))):
        time.sleep(0.2)
    def descendants(pid: str) -> list[str]:  # workers come from a fork server: grandchildren
        kids = subprocess.run(["pgrep", "-P", pid], capture_output=True, text=True).stdout.split()
        return kids + [d for k in kids for d in descendants(k)]

    children = descendants(str(proc.pid))
    assert len(children) >= 2, "the collection should run worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # without the parent-death signal a worker finishes its episode (about a second) first
    def running(pid: str) -> bool:  # a zombie has exited; only its parent's reaping is left
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False

    assert not [c for c in children if running(c)]
    written = sorted(p.name for p in episodes.glob("*.npz"))
    time.sleep(2.0)
    assert sorted(p.name for p in episodes.glob("*.npz")) == written  # nothing written after the kill


def test_a_killed_collection_worker_is_one_line_and_a_rerun_finishes(tmp_path):
    """A worker killed from outside (the out-of-memory killer, say) ends the command with one line,
    not a hang (multiprocessing.Pool waits forever for the lost episode) nor a traceback; the
    episodes written are kept and the same command finishes the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "driving.cli", "collect", f"out={out}", "episodes=30", "workers=2",
           "camera.height=64", "camera.width=32", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any((out / "episodes").glob("*.npz")):
        time.sleep(0.2)
    server = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "forkserver"], capture_output=True,
                            text=True).stdout.split()
    workers = subprocess.run(["pgrep", "-P", server[0]], capture_output=True, text=True).stdout.split()
    assert workers, "the collection should run worker processes"
    os.kill(int(workers[0]), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: a collection worker process died (it was killed")
    assert "re-run the same command" in lines[0]
    kept = len(list((out / "episodes").glob("*.npz")))
    assert 0 < kept < 30
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(json.loads((out / "index.json").read_text())) == 30


@pytest.mark.parametrize("name, content, needle", [
    ("index.json", b"\xff\xfe[]", "index.json is not UTF-8 text"),
    ("index.json", b'{"episodes": 3}', "index.json holds dict where an array belongs"),
    ("index.json", b'[{"seed": 1}]', "index.json has a row without episode, file, seed, length"),
    ("meta.json", b"[1, 2, 3]", "meta.json holds list where an object belongs"),
    ("meta.json", b"{\xff}", "meta.json is not UTF-8 text"),
])
def test_damaged_dataset_json_is_one_line_and_a_collect_rerun_repairs_the_index(cli_dataset, tmp_path, capsys,
                                                                                  name, content, needle):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(cli_dataset, ds)
    (ds / name).write_bytes(content)
    for args in (["data", "info", str(ds)], ["data", "info", str(ds), "validate=true"],
                 ["train", f"dataset={ds}", f"out={tmp_path / 'run'}", "steps=1", "-q"]):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and "\n" not in err and "Traceback" not in err
    rerun = ["collect", f"out={ds}", "episodes=2", "workers=1", "seed=3", "max_steps=10", "scenario=highway", "-q"]
    if name == "index.json":  # the episode files are the source of truth: the index is rebuilt from them
        assert main(rerun) == 0
        assert [r["seed"] for r in json.loads((ds / "index.json").read_text())] == [3, 4]
    else:  # a damaged meta.json cannot be trusted to say what the dataset is
        assert main(rerun) == 2
        assert "meta.json" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(str(p) for p in (Path(__file__).parents[1] / "configs").glob("*/*.yaml")
                                        if p.parent.name != "scenarios"))
def test_every_shipped_config_loads_and_resolves(path, tmp_path):
    """A key misspelt in a shipped YAML fails here, not in a user's first run."""
    from driving.config import load_config
    from driving.dagger import DaggerConfig, resolve_stages
    from driving.data.collect import CollectConfig
    from driving.evaluate import EvalConfig
    from driving.train import TrainConfig

    from driving.scoreboard import ScoreboardConfig
    from driving.scoreboard import resolve_stages as scoreboard_stages

    kind = Path(path).parent.name
    cls = {"collect": CollectConfig, "train": TrainConfig, "eval": EvalConfig, "dagger": DaggerConfig,
           "scoreboard": ScoreboardConfig}[kind]
    cfg = load_config(cls, path, [f"out={tmp_path / 'x'}"] if kind != "eval" else [])
    if kind == "scoreboard":  # every scenario's and seed's stages, its own keys included
        _, _, stages = scoreboard_stages(cfg)
        assert list(stages) == cfg.scenarios
        for name, (collect, runs) in stages.items():
            assert collect.scenario == name and [r[0] for r in runs] == cfg.seeds
            assert all((r[3] is not None) == bool(cfg.rounds) for r in runs)
    if kind == "dagger":  # every stage's keys, too
        plan = resolve_stages(cfg)
        assert plan["collect"].scenario == plan["scenario"] == cfg.scenario
        assert len(plan["rounds"]) == cfg.rounds + 1


def test_a_diverged_training_stops_in_one_line_and_saves_no_nan_weights(cli_dataset, tmp_path, capsys):
    """optim.lr=1e8 trained to NaN, exited 0 and saved the NaN weights as `last` for eval and DAgger."""
    run = tmp_path / "run"
    rc = main(["train", f"dataset={cli_dataset}", f"out={run}", "steps=20", "batch_size=8", "optim.lr=1e8",
               "log_every=5", "checkpoint_every=10", "wandb.mode=disabled", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "training diverged by step 5 (loss nan)" in err, err
    assert not (run / "checkpoints" / "last").exists()
    # validated before the loss is logged: no NaN row reaches metrics.jsonl either
    run2 = tmp_path / "run2"
    rc = main(["train", f"dataset={cli_dataset}", f"out={run2}", "steps=20", "batch_size=8", "optim.lr=1e8",
               "log_every=10", "val_every=1", "wandb.mode=disabled", "-q"])
    assert rc == 2 and "validation loss that is not finite" in capsys.readouterr().err
    assert "NaN" not in (run2 / "metrics.jsonl").read_text() if (run2 / "metrics.jsonl").exists() else True


def test_a_command_refuses_a_folder_that_holds_another_commands_output(cli_dataset, tmp_path, capsys):
    """An evaluation written into a dataset made `driving video DATASET` film the evaluation."""
    before = sorted(p.name for p in cli_dataset.iterdir())
    run = tmp_path / "run"
    assert main(["train", f"dataset={cli_dataset}", f"out={run}", "steps=2", "batch_size=4", "wandb.mode=disabled",
                 "-q"]) == 0
    cases = [(["eval", str(run / "checkpoints" / "last"), f"out={cli_dataset}", "episodes=1", "max_steps=3",
               "workers=1", "videos=0"], "holds a dataset, and this command writes an evaluation"),
             (["train", f"dataset={cli_dataset}", f"out={cli_dataset}", "steps=2"], "holds a dataset"),
             (["dagger", f"dataset={cli_dataset}", f"out={run}"], "holds a training run"),
             (["collect", f"out={run}", "episodes=1"], "holds a training run")]
    for argv, needle in cases:
        capsys.readouterr()
        assert main([*argv, "-q"]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, (argv, err)
    assert sorted(p.name for p in cli_dataset.iterdir()) == before


def test_video_refuses_keys_that_do_not_apply_to_its_source(cli_dataset, tmp_path, capsys):
    assert main(["video", str(cli_dataset), "count=5"]) == 2
    assert "is a dataset: count= applies to an evaluation" in capsys.readouterr().err
    # out= names a folder: `out=clip.mp4` made a folder of that name
    assert main(["video", str(cli_dataset), "out=clips/run.MP4"]) == 2
    assert "out= is the folder the videos go to" in capsys.readouterr().err and not Path("clips").exists()
    assert main(["video", str(cli_dataset), "episodes=[]"]) == 2
    assert "episodes=[] lists none" in capsys.readouterr().err
    assert main(["video", str(cli_dataset), "episodes=[0,0]", f"out={tmp_path / 'v'}"]) == 0  # filmed once
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "v" / "episode_000000.mp4")]


def test_output_into_a_closed_pipe_ends_in_one_line(cli_dataset, monkeypatch, capsys):
    """`driving data info D | head -1` ended in a BrokenPipeError traceback; now as a Unix tool (141),
    with one line, since a run that writes (dagger) stops unfinished."""
    import os

    read, write = os.pipe()
    os.close(read)
    pipe = os.fdopen(write, "w", buffering=1)
    monkeypatch.setattr("sys.stdout", pipe)
    assert main(["data", "info", str(cli_dataset)]) == 141
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the output pipe was closed" in err


def test_an_output_file_that_is_a_folder_is_one_line_naming_it(cli_dataset, tmp_path, capsys):
    (tmp_path / "sheet.png").mkdir()
    assert main(["data", "show", str(cli_dataset), f"out={tmp_path / 'sheet.png'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write to {tmp_path / 'sheet.png'}: it is a folder" in err, err


def test_video_of_a_damaged_evaluation_or_an_empty_dataset_is_one_line(cli_dataset, tmp_path, capsys):
    import shutil

    ev = tmp_path / "ev"
    assert main(["eval", "expert", f"out={ev}", "episodes=1", "max_steps=3", "videos=0", "workers=1", "-q"]) == 0
    cases = []
    bad = tmp_path / "truncated"
    shutil.copytree(ev, bad)
    with open(bad / "actions.npz", "r+b") as f:
        f.truncate(100)
    cases.append((bad, "actions.npz cannot be read"))  # was zipfile's BadZipFile traceback
    bad = tmp_path / "keyless"
    shutil.copytree(ev, bad)
    (bad / "eval.json").write_text("{}")
    cases.append((bad, "eval.json is not a complete evaluation result (no scenarios, checkpoint"))  # KeyError
    empty = tmp_path / "empty"
    shutil.copytree(cli_dataset, empty)
    (empty / "index.json").write_text("[]")
    cases.append((empty, "has no finished episode: nothing to film"))  # made nothing and exited 0
    for src, needle in cases:
        capsys.readouterr()
        assert main(["video", str(src), f"out={tmp_path / 'v'}"]) == 2, src
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "v").exists()


def test_collect_into_a_folder_of_the_users_leaves_it_as_it_was(tmp_path, capsys):
    """Refused before the lock is taken: no .lock left among the user's files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["collect", "episodes=1", "max_steps=3", f"out={mine}", "-q"]) == 2
    assert "holds files that are not a dataset's (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
