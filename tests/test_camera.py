"""The camera, checked on real rendered frames from DrivingEnv and from the core envs.

Pixel facts used throughout (sim.camera.PALETTE): offroad 0, road 80, markings 190 (drawn as
anti-aliased 1-px lines, so they show up as ~150..200 on the road), traffic 135, ego 255.
"""
from __future__ import annotations

import numpy as np
import pytest

import sim.camera as camera_mod
from sim.camera import PALETTE, BlankFrameError, Camera, CameraConfig
from sim.scenarios import SCENARIOS

EGO, TRAFFIC, ROAD, OFFROAD = (PALETTE[k][0] for k in ("ego", "traffic", "road", "offroad"))


def _frame(env, seed=0, steps=0, action=(0.0, 0.0)):
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        obs, *_ = env.step(np.array(action))
    return obs["camera"][-1]


def _ego_box_px(env):
    """Half-extents of the ego box in pixels (length along rows, width along columns)."""
    mpp = env.camera.config.metres_per_pixel
    return env.ego.LENGTH / 2 / mpp, env.ego.WIDTH / 2 / mpp


def _marking_mask(frame, env):
    """Marking-like pixels, with the ego and its anti-aliased rim excluded."""
    c = env.camera.config
    half_len, half_wid = _ego_box_px(env)
    rows, cols = np.indices(frame.shape[:2])
    near_ego = ((np.abs(rows - c.ego_row * c.height) <= half_len + 2)
                & (np.abs(cols - c.width / 2) <= half_wid + 2))
    return (frame >= 150) & (frame <= 200) & ~near_ego


# --- shapes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("size", [(64, 32), (40, 100), (100, 40)])
def test_frame_and_stack_shapes(make_env, rgb, size):
    h, w = size
    env = make_env("highway", camera={"height": h, "width": w, "stack": 3, "rgb": rgb})
    obs, _ = env.reset(seed=0)
    frame_shape = (h, w, 3) if rgb else (h, w)
    assert obs["camera"].shape == (3, *frame_shape)  # (H, W), never (W, H)
    assert obs["camera"].dtype == np.uint8
    assert env.observation_space["camera"].shape == (3, *frame_shape)
    assert env.camera.config.frame_shape == frame_shape
    obs, *_ = env.step(np.zeros(2))
    assert obs["camera"].shape == (3, *frame_shape)
    assert env.observation_space.contains(obs)


def test_stack_is_oldest_first(make_env):
    env = make_env("highway", camera={"stack": 3})
    obs0, _ = env.reset(seed=0)
    s0 = obs0["camera"]
    assert all(np.array_equal(s0[i], s0[0]) for i in range(3))  # reset fills the stack
    obs1, *_ = env.step(np.array([0.0, 1.0]))
    s1 = obs1["camera"]
    assert np.array_equal(s1[0], s0[-1]) and np.array_equal(s1[1], s0[-1])
    assert not np.array_equal(s1[2], s0[-1])  # the road moved under the ego
    obs2, *_ = env.step(np.array([0.0, 1.0]))
    s2 = obs2["camera"]
    assert np.array_equal(s2[1], s1[2]) and np.array_equal(s2[0], s1[1])


# --- content --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_scenario_renders_road_and_ego(make_core, name):
    core = make_core(name)
    cam = Camera(CameraConfig(height=64, width=64, stack=1))
    frame = cam.reset(core.unwrapped.road, core.unwrapped.vehicle)[0]
    assert frame.shape == (64, 64)
    assert (frame == ROAD).sum() > 64 * 4, "too little road around the ego"
    assert (frame == EGO).sum() >= 10


def test_lane_markings_are_drawn(make_env):
    env = make_env("highway", camera={"height": 128, "width": 64})
    frame = _frame(env)
    marks = _marking_mask(frame, env)
    assert marks.sum() > 128  # two continuous road edges alone span every row
    # Markings sit on the road: within 3 px of each marking pixel (past its anti-aliased rim)
    # there is plain road.
    rows, cols = np.nonzero(marks)
    near_road = [(frame[r, max(k - 3, 0):k + 4] == ROAD).any() for r, k in zip(rows, cols)]
    assert np.mean(near_road) > 0.95
    assert frame[marks].max() >= 175  # bright, close to PALETTE's 190


def test_traffic_is_drawn_where_the_vehicles_are(make_env):
    """Heading 0, heading-up: world +x is up (-row) and world +y is right (+col)."""
    env = make_env("highway", camera={"height": 128, "width": 64})
    c = env.camera.config
    checked, traffic_pixels = 0, 0
    obs, _ = env.reset(seed=0)
    for step in range(10):
        frame = obs["camera"][-1]
        traffic_pixels += int((frame == TRAFFIC).sum())
        ego = env.ego
        for v in env.road.vehicles:
            if v is ego:
                continue
            col = c.width / 2 + (v.position[1] - ego.position[1]) / c.metres_per_pixel
            row = c.ego_row * c.height - (v.position[0] - ego.position[0]) / c.metres_per_pixel
            r, k = int(round(row)), int(round(col))
            if 2 <= r < c.height - 2 and 2 <= k < c.width - 2 and abs(v.heading - ego.heading) < 0.05:
                assert frame[r, k] == TRAFFIC, f"vehicle at {v.position} not drawn at ({r}, {k})"
                checked += 1
        obs, *_ = env.step(np.zeros(2))
        if step >= 2 and checked >= 3:
            break
    assert traffic_pixels > 0, "no traffic drawn in 10 highway frames"
    assert checked >= 1, "no traffic in view: pick another seed"


@pytest.mark.parametrize("size, ego_row", [((128, 64), 0.75), ((64, 64), 0.5), ((48, 96), 0.25),
                                           ((96, 40), 0.9)])
def test_ego_is_where_the_config_says(make_env, size, ego_row):
    h, w = size
    env = make_env("highway", camera={"height": h, "width": w, "ego_row": ego_row})
    frame = _frame(env)
    half_len, half_wid = _ego_box_px(env)  # heading 0, heading-up: length runs along rows
    rows, cols = np.nonzero(frame == EGO)
    assert len(rows) >= (2 * half_len - 2) * (2 * half_wid - 2)
    assert np.all(np.abs(rows - ego_row * h) <= half_len + 1)
    assert np.all(np.abs(cols - w / 2) <= half_wid + 1)
    assert abs(rows.mean() - ego_row * h) <= 1.0
    assert abs(cols.mean() - w / 2) <= 1.0


def test_road_edges_map_world_right_to_image_right(make_env):
    """Catches a mirrored camera: the road edge on the driver's right (+y) is at larger columns."""
    env = make_env("highway", camera={"height": 64, "width": 64, "ego_row": 0.5})
    frame = _frame(env)
    c = env.camera.config
    lanes = env.road.network.graph["0"]["1"]
    ego_x, ego_y = env.ego.position
    left_y = min(l.position(ego_x, -l.width / 2)[1] for l in lanes)
    right_y = max(l.position(ego_x, l.width / 2)[1] for l in lanes)
    row = int(c.ego_row * c.height) + 8  # a row just behind the ego box
    on_road = np.nonzero(frame[row] != OFFROAD)[0]
    expect_left = c.width / 2 + (left_y - ego_y) / c.metres_per_pixel
    expect_right = c.width / 2 + (right_y - ego_y) / c.metres_per_pixel
    assert on_road.min() == pytest.approx(expect_left, abs=1.5)
    assert on_road.max() == pytest.approx(expect_right, abs=1.5)
    assert abs(expect_left - expect_right) > 8  # the test means something: lanes are far apart


# --- orientation ----------------------------------------------------------------------------------

def test_heading_up_straight_highway_markings_run_vertically(make_env):
    env = make_env("highway", camera={"height": 128, "width": 64, "heading_up": True})
    frame = _frame(env)
    rows, cols = np.nonzero(_marking_mask(frame, env))
    assert len(np.unique(rows)) >= 0.9 * 128  # markings run through (almost) every row...
    assert len(np.unique(cols)) <= 12  # ...at a handful of columns (3 lanes: 4 lines)
    assert np.ptp(rows) > 3 * np.ptp(cols)


def test_heading_up_true_and_false_agree_on_straight_highway(make_env):
    up = make_env("highway", camera={"heading_up": True, "height": 64, "width": 64})
    north = make_env("highway", camera={"heading_up": False, "height": 64, "width": 64})
    assert up.reset(seed=0)[1]["heading"] == 0.0
    a, b = _frame(up), _frame(north)
    assert np.array_equal(a, b)
    # A barely turned ego: still nearly the same picture.
    a = _frame(up, steps=1, action=(0.05, 0.0))
    b = _frame(north, steps=1, action=(0.05, 0.0))
    assert 0 < abs(up.ego.heading) < 0.01
    assert np.mean(np.abs(a.astype(int) - b.astype(int)) <= 20) > 0.95


def test_heading_up_turns_with_the_ego(make_env):
    """Roundabout: the ego starts heading north (world -y). heading_up=False puts world +x up, so the
    ego points left; heading_up=True puts the ego's forward up: the same picture turned clockwise
    by 90 degrees (np.rot90 k=-1), give or take a pixel, never the mirrored/anticlockwise one."""
    cam = {"height": 64, "width": 64, "ego_row": 0.5}
    up = make_env("roundabout", camera={**cam, "heading_up": True})
    fixed = make_env("roundabout", camera={**cam, "heading_up": False})
    a, b = _frame(up), _frame(fixed)
    assert up.ego.heading == pytest.approx(-np.pi / 2)
    assert np.mean(np.abs(a.astype(int) - b.astype(int)) > 20) > 0.1  # they differ

    def best_agreement(k):
        rotated = np.rot90(b, k=k)
        return max(np.mean(np.abs(a.astype(int) - np.roll(rotated, (dr, dc), axis=(0, 1))) <= 20)
                   for dr in (-1, 0, 1) for dc in (-1, 0, 1))

    # Rasterised edges and 1-px markings are not exactly rotation-invariant, hence the margin.
    print(best_agreement(-1), best_agreement(1))
    assert best_agreement(-1) > 0.93
    assert best_agreement(1) < best_agreement(-1) - 0.05
    # heading_up=False: the ego box lies across (its length along columns).
    rows, cols = np.nonzero(b == EGO)
    assert np.ptp(cols) > np.ptp(rows)


def test_heading_up_differs_on_curved_road_after_some_steps(make_env):
    up = make_env("racetrack", camera={"heading_up": True, "height": 64, "width": 64})
    fixed = make_env("racetrack", camera={"heading_up": False, "height": 64, "width": 64})
    a = _frame(up, steps=4, action=(0.5, 0.0))
    b = _frame(fixed, steps=4, action=(0.5, 0.0))
    assert abs(up.ego.heading) > 0.3
    assert np.mean(np.abs(a.astype(int) - b.astype(int)) > 20) > 0.1


# --- scale ----------------------------------------------------------------------------------------

def _ego_extent(frame):
    rows, cols = np.nonzero(frame == EGO)
    return np.ptp(rows) + 1, np.ptp(cols) + 1


def test_halving_metres_per_pixel_doubles_the_ego(make_env):
    coarse = make_env("highway", camera={"height": 96, "width": 64, "metres_per_pixel": 0.5})
    fine = make_env("highway", camera={"height": 96, "width": 64, "metres_per_pixel": 0.25})
    (l1, w1), (l2, w2) = _ego_extent(_frame(coarse)), _ego_extent(_frame(fine))
    assert l1 == pytest.approx(coarse.ego.LENGTH / 0.5, abs=1.5)
    assert l2 / l1 == pytest.approx(2.0, rel=0.2)
    assert w2 / w1 == pytest.approx(2.0, rel=0.35)


# --- rgb ------------------------------------------------------------------------------------------

def test_rgb_and_gray_draw_the_same_scene(make_core):
    core = make_core("highway")
    road, ego = core.unwrapped.road, core.unwrapped.vehicle
    gray = Camera(CameraConfig(height=96, width=48, stack=1)).render(road, ego)
    rgb = Camera(CameraConfig(height=96, width=48, stack=1, rgb=True)).render(road, ego)
    assert gray.shape == (96, 48) and rgb.shape == (96, 48, 3) and rgb.dtype == np.uint8
    for name in ("ego", "road", "offroad"):
        g, colour = PALETTE[name]
        in_gray = gray == g
        in_rgb = np.all(rgb == np.array(colour, dtype=np.uint8), axis=-1)
        assert in_gray.sum() > 0
        iou = (in_gray & in_rgb).sum() / (in_gray | in_rgb).sum()
        assert iou > 0.9, name


# --- the projection itself ------------------------------------------------------------------------

@pytest.mark.parametrize("heading", [0.0, 0.7, -2.0, np.pi])
def test_world_to_pixel_matrix_puts_forward_up_and_right_right(heading):
    cfg = CameraConfig(height=100, width=60, metres_per_pixel=0.5, ego_row=0.8, heading_up=True)
    m = Camera(cfg).world_to_pixel_matrix(np.array([12.0, -3.0]), heading)
    f = np.array([np.cos(heading), np.sin(heading)])
    right = np.array([-f[1], f[0]])  # highway-env: +y is the driver's right at heading 0

    def px(p):
        return m[:, :2] @ p + m[:, 2]

    ego = np.array([12.0, -3.0])
    # pixel centres are integers, so the ego's centre sits at (W/2 - 0.5, ego_row * H - 0.5)
    np.testing.assert_allclose(px(ego), [29.5, 79.5], atol=1e-9)
    np.testing.assert_allclose(px(ego + 10 * f), [29.5, 59.5], atol=1e-9)  # 10 m ahead: 20 px up
    np.testing.assert_allclose(px(ego + 5 * right), [39.5, 79.5], atol=1e-9)  # 5 m right: 10 px right


# --- failures -------------------------------------------------------------------------------------

def test_constant_frame_raises(monkeypatch, make_core):
    core = make_core("highway")
    flat = {k: (ROAD, (90, 90, 90)) for k in PALETTE}
    monkeypatch.setattr(camera_mod, "PALETTE", flat)
    cam = Camera(CameraConfig(height=32, width=32, stack=1))
    with pytest.raises(BlankFrameError, match="constant"):
        cam.reset(core.unwrapped.road, core.unwrapped.vehicle)


def test_camera_inside_the_ego_is_a_blank_frame(make_core):
    """A legitimate config that sees nothing but the ego (8x8 px at 1 cm/px): constant, so it raises."""
    core = make_core("highway")
    cam = Camera(CameraConfig(height=8, width=8, metres_per_pixel=0.01, stack=1))
    with pytest.raises(BlankFrameError):
        cam.render(core.unwrapped.road, core.unwrapped.vehicle)


@pytest.mark.parametrize("bad", [
    {"height": 4}, {"width": 7}, {"height": 0, "width": 0},
    {"metres_per_pixel": 0.0}, {"metres_per_pixel": -0.5}, {"metres_per_pixel": float("nan")},
    {"stack": 0}, {"ego_row": 1.5}, {"ego_row": -0.1},
])
def test_camera_config_validation(bad):
    with pytest.raises(ValueError):
        CameraConfig(**bad)


def test_driving_env_validates_camera_config():
    from sim import DrivingEnv
    with pytest.raises(ValueError, match="too small"):
        DrivingEnv("highway", camera={"height": 4, "width": 64}, expert=False)


def test_camera_config_round_trips():
    cfg = CameraConfig(height=96, width=48, stack=4, rgb=True, heading_up=False, ego_row=0.6)
    assert CameraConfig(**cfg.as_dict()) == cfg
    assert cfg.obs_shape == (4, 96, 48, 3)
