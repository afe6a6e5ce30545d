"""Policy networks and the on-device data path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from driving.data.format import Dataset
from driving.data.tensors import AugmentConfig, DeviceData, augment, split_episodes
from driving.errors import UserError
from driving.models import InputSpec, ModelConfig, build_model
from tests.helpers import synthetic_dataset


def test_pilotnet_has_about_250k_parameters_and_bounded_outputs():
    m = build_model("pilotnet", ModelConfig(stack=2), InputSpec(128, 64, 1, 100.0, 50.0, 20.0, 5.0)).eval()
    n = sum(p.numel() for p in m.parameters())
    assert 200_000 < n < 300_000
    frames = torch.full((4, 2, 128, 64), 255, dtype=torch.uint8)
    action, speed = m(frames, torch.tensor([0.0, 10.0, 30.0, 1e4]))
    assert action.shape == (4, 2) and speed.shape == (4,)
    assert torch.all(action.abs() <= 1)
    # normalisation lives in the model, so it is saved with the weights
    sd = m.state_dict()
    assert float(sd["frame_mean"]) == 100.0 and float(sd["speed_std"]) == 5.0


@pytest.mark.parametrize("rgb, stack", [(False, 1), (False, 3), (True, 2)])
def test_resnet18_adapts_to_camera_channels(rgb, stack):
    spec = InputSpec(64, 32, 3 if rgb else 1)
    m = build_model("resnet18", ModelConfig(stack=stack, use_speed=False, aux_speed=False), spec).eval()
    assert m.backbone.conv1.in_channels == stack * spec.channels
    shape = (2, stack, 64, 32, 3) if rgb else (2, stack, 64, 32)
    action, speed = m(torch.randint(0, 255, shape, dtype=torch.uint8))
    assert action.shape == (2, 2) and speed is None


def test_resnet18_loads_local_weights_and_rejects_missing(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    m = build_model("resnet18", ModelConfig(stack=1, weights=str(path)), InputSpec(64, 32, 1))
    torch.testing.assert_close(m.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    torch.testing.assert_close(m.backbone.conv1.weight, ref.conv1.weight.mean(dim=1, keepdim=True) * 3)
    with pytest.raises(UserError, match="not found"):
        build_model("resnet18", ModelConfig(weights=str(tmp_path / "nope.pt")), InputSpec(64, 32, 1))
    # a file that is no state dict, and another network's: one line each (were torch tracebacks)
    (tmp_path / "text.pt").write_text("not weights")
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pt")
    for name, words in (("text.pt", "UnpicklingError"), ("other.pt", "Missing key")):
        with pytest.raises(UserError, match=f"net.weights .*{name} is not a resnet18 state dict .*{words}"):
            build_model("resnet18", ModelConfig(weights=str(tmp_path / name)), InputSpec(64, 32, 1))


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(UserError, match="known models: pilotnet, resnet18"):
        build_model("transformer", ModelConfig(), InputSpec(64, 32, 1))


def test_model_rejects_wrong_channel_count():
    m = build_model("pilotnet", ModelConfig(stack=2), InputSpec(64, 32, 1))
    with pytest.raises(ValueError, match="expects 2 input channels"):
        m(torch.zeros(1, 3, 64, 32, dtype=torch.uint8), torch.zeros(1))


def test_stacks_are_built_within_episode_bounds(tmp_path):
    ds = Dataset.open(synthetic_dataset(tmp_path / "d", lengths=(3, 4)))
    data = DeviceData(ds, stack=3, device=torch.device("cpu"))
    assert data.n == 7 and data.frames.dtype == torch.uint8
    stacks = data.stacks(torch.arange(7))
    ep, t = stacks[:, :, 0, 0], stacks[:, :, 0, 1]  # (sample, k) -> episode, step encoded in pixels
    # first sample of each episode repeats its own first frame, never the previous episode's
    assert ep.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]]
    assert t.tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]
    frames, speed, target = data.batch(torch.tensor([4]))
    assert frames.shape == (1, 3, 32, 16) and target.shape == (1, 2) and speed.shape == (1,)


def test_train_validation_split_is_by_episode():
    train, val = split_episodes(20, 0.2, seed=1)
    assert len(val) == 4 and len(train) == 16
    assert not set(train) & set(val) and set(train) | set(val) == set(range(20))
    again = split_episodes(20, 0.2, seed=1)
    assert np.array_equal(again[1], val)
    assert len(split_episodes(3, 0.1, 0)[1]) == 1  # at least one validation episode when asked


def test_augmentation_is_photometric_seeded_and_switchable():
    x = torch.randint(0, 255, (8, 2, 16, 8), dtype=torch.uint8)
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, x.float())
    assert a.min() >= 0 and a.max() <= 255
    off = augment(x, AugmentConfig(enabled=False), torch.Generator().manual_seed(0))
    assert torch.equal(off, x.float())
    # geometry is untouched: the brightest pixel of a single bright dot stays where it was
    dot = torch.zeros(1, 1, 16, 8, dtype=torch.uint8)
    dot[0, 0, 5, 3] = 255
    aug = augment(dot, AugmentConfig(noise=0.0), torch.Generator().manual_seed(3))
    assert int(aug.flatten().argmax()) == 5 * 8 + 3


def test_augmentation_is_contrast_then_brightness_per_stack():
    x = torch.randint(0, 255, (6, 3, 10, 7), dtype=torch.uint8)
    cfg = AugmentConfig(brightness=0.3, contrast=0.4, noise=0.0)
    out = augment(x, cfg, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, applied as the formula says
    gain = 1 + (torch.rand(6, 1, 1, 1, generator=g) * 2 - 1) * 0.3
    contrast = 1 + (torch.rand(6, 1, 1, 1, generator=g) * 2 - 1) * 0.4
    f = x.float()
    mean = f.mean(dim=(1, 2, 3), keepdim=True)
    want = (((f - mean) * contrast + mean) * gain).clamp(0, 255)
    assert torch.allclose(out, want, atol=1e-3)
    assert not torch.allclose(out, f, atol=1.0)  # it did something
    before = f.clone()  # works in place, but never on its input, float or not
    augment(f, AugmentConfig(), torch.Generator().manual_seed(1))
    assert torch.equal(f, before)


def test_pixel_noise_has_the_asked_std_and_differs_between_batches():
    grey = torch.full((16, 4, 32, 24), 128, dtype=torch.uint8)
    cfg = AugmentConfig(brightness=0.0, contrast=0.0, noise=4.0)
    g = torch.Generator().manual_seed(0)
    a = augment(grey, cfg, g) - 128
    b = augment(grey, cfg, g) - 128
    for n in (a, b):
        assert abs(float(n.mean())) < 0.1 and abs(float(n.std()) - 4.0) < 0.1
    assert not torch.equal(a, b)
    # samples within a batch and the same sample in two batches are uncorrelated
    flat_a, flat_b = a.flatten(1), b.flatten(1)
    assert abs(float(torch.corrcoef(flat_a[:2])[0, 1])) < 0.05
    assert abs(float(torch.corrcoef(torch.stack([flat_a[0], flat_b[0]]))[0, 1])) < 0.05


@pytest.mark.parametrize("name", ["pilotnet", "resnet18"])
def test_a_plan_head_classifies_and_conditions_the_action(name):
    from driving.models.base import PLAN_CLASSES, plan_classes

    torch.manual_seed(0)
    spec = InputSpec(64, 32, 1, 100.0, 50.0, 20.0, 5.0)
    m = build_model(name, ModelConfig(stack=2, plan_head=True, dropout=0.0), spec).eval()
    frames = torch.randint(0, 255, (4, 2, 64, 32), dtype=torch.uint8)
    speed = torch.full((4,), 20.0)
    action, _, (lane, spd) = m(frames, speed, return_plan=True)
    assert action.shape == (4, 2) and lane.shape == spd.shape == (4, PLAN_CLASSES)
    left = (torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long))
    right = (torch.full((4,), 2), torch.ones(4, dtype=torch.long))
    a_left, _ = m(frames, speed, plan=left)
    a_right, _ = m(frames, speed, plan=right)
    assert not torch.allclose(a_left, a_right)  # the plan conditions the action
    chosen = (lane.argmax(1), spd.argmax(1))  # without a plan, the predicted one conditions it
    assert torch.allclose(m(frames, speed)[0], m(frames, speed, plan=chosen)[0])
    lane_c, speed_c = plan_classes(torch.tensor([-1, 0, 1, 0]), torch.tensor([-0.5, 0.0, 0.1, 0.9]))
    assert lane_c.tolist() == [0, 1, 2, 1] and speed_c.tolist() == [0, 1, 1, 2]


def test_a_lane_threshold_changes_lanes_only_where_the_head_is_sure_of_the_side():
    from driving.models.base import LANE_KEEP, LANE_LEFT, LANE_RIGHT

    spec = InputSpec(64, 32, 1)
    probs = torch.tensor([[0.48, 0.44, 0.08],   # argmax left, not sure: keep at 0.7
                          [0.75, 0.05, 0.20],   # sure left
                          [0.10, 0.15, 0.75],   # sure right
                          [0.30, 0.40, 0.30],   # keep either way
                          [0.70, 0.00, 0.30]])  # exactly at the threshold: left
    logits = probs.clamp_min(1e-9).log()
    argmax = build_model("pilotnet", ModelConfig(plan_head=True), spec)
    assert argmax.decide_lane(logits).tolist() == [LANE_LEFT, LANE_LEFT, LANE_RIGHT, LANE_KEEP, LANE_LEFT]
    sure = build_model("pilotnet", ModelConfig(plan_head=True, plan_threshold=0.7), spec)
    assert sure.decide_lane(logits).tolist() == [LANE_KEEP, LANE_LEFT, LANE_RIGHT, LANE_KEEP, LANE_LEFT]
    # the driven action is conditioned on the thresholded lane class
    sure.load_state_dict(argmax.state_dict())
    sure.eval(), argmax.eval()
    torch.manual_seed(0)
    frames = torch.randint(0, 255, (8, 2, 64, 32), dtype=torch.uint8)
    speed = torch.full((8,), 20.0)
    _, _, (lane, spd) = sure(frames, speed, return_plan=True)
    chosen = (sure.decide_lane(lane), spd.argmax(1))
    assert torch.equal(sure(frames, speed)[0], sure(frames, speed, plan=chosen)[0])


@pytest.mark.parametrize("kw, match", [({"plan_head": True, "plan_threshold": 1.0}, r"\[0, 1\)"),
                                       ({"plan_head": True, "plan_threshold": -0.1}, r"\[0, 1\)"),
                                       ({"plan_threshold": 0.7}, "needs net.plan_head")])
def test_a_lane_threshold_outside_its_range_or_without_a_plan_head_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kw)
