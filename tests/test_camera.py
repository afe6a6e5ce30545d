"""The camera, checked on real rendered frames from DrivingEnv and from the core envs.

Pixel facts used throughout (sim.camera.PALETTE): offroad 0, road 80, markings 190, traffic 135,
ego 255. Road edges and markings are anti-aliased by coverage (supersampled masks): a road edge pixel
lies between 0 and 80, and a 1-px marking at a sub-pixel position shares its brightness between
neighbouring pixels (~120..190 on the road); at least one of them is >= 3/4 covered, so >= ~160.
"""
from __future__ import annotations

from types import SimpleNamespace

import cv2
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
    # Bright: a marking pixel at least 3/4 covered (80 + 0.75 * 110 = 162), up to PALETTE's 190.
    assert frame[marks].max() >= 160


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


# --- anti-aliasing --------------------------------------------------------------------------------

def _straight_network(lanes=2, width=4.0, line_types=(0, 0)):
    """highway-env straight lanes along world +x, side by side from y = 0, unmarked by default."""
    from highway_env.road.lane import StraightLane
    from highway_env.road.road import RoadNetwork

    net = RoadNetwork()
    for i in range(lanes):
        net.add_lane("a", "b", StraightLane([0.0, i * width], [1000.0, i * width], width=width,
                                            line_types=line_types))
    return net


def _scene(network, position, heading=0.0):
    """A road holding nothing but the ego, so every pixel is off-road, road, marking or ego."""
    ego = SimpleNamespace(position=np.asarray(position, dtype=np.float64), heading=heading,
                          LENGTH=5.0, WIDTH=2.0)
    return SimpleNamespace(network=network, objects=[], vehicles=[ego]), ego


def _away_from_ego(c, margin=3):
    """Rows of a heading-up frame clear of the ego box and its anti-aliased rim."""
    half_len = 5.0 / 2 / c.metres_per_pixel
    rows = np.arange(c.height)
    return rows[np.abs(rows - c.ego_row * c.height) > half_len + margin]


@pytest.mark.parametrize("mpp", [0.5, 1.0])
def test_road_edges_follow_a_subpixel_shift_of_the_ego(mpp):
    """Moving the ego sideways by a quarter pixel moves the road edges by a quarter pixel (partial
    coverage), not by 0 or 1 whole pixels; the road keeps its width."""
    cam = Camera(CameraConfig(height=128, width=64, metres_per_pixel=mpp, stack=1))
    net = _straight_network()  # road from y = -2 to y = 6
    rows = _away_from_ego(cam.config)
    left, width = [], []
    for quarter in range(5):
        road, ego = _scene(net, (500.0, 2.0 + 0.25 * quarter * mpp))
        frame = cam.render(road, ego)[rows].astype(np.float64)
        cover = (frame - OFFROAD) / (ROAD - OFFROAD)
        assert np.all((cover >= 0) & (cover <= 1))  # nothing but off-road, road and their blends
        assert np.any((cover > 0.1) & (cover < 0.9))  # partial edge pixels
        left.append((1 - cover[:, :32]).sum(axis=1).mean())  # off-road px left of the centre line
        width.append(cover.sum(axis=1).mean())
    # The ego moves right, so the left edge (and the road) moves left by 0.25 px per step.
    np.testing.assert_allclose(np.diff(left), -0.25, atol=0.06)
    np.testing.assert_allclose(width, 8.0 / mpp, atol=0.4)  # fills dilate by a fraction of a pixel
    assert np.ptp(width) < 0.05


@pytest.mark.parametrize("mpp", [0.5, 1.0])
def test_slightly_turned_road_edges_are_straight_not_stair_steps(mpp):
    """Heading-up with a 0.02 rad heading error: the road edges cross the frame at a slope of 0.02
    px per row. Anti-aliased, each row's edge position (its off-road coverage) lies on that line
    within a fraction of a pixel; a crisp fill makes 1-px stair steps (errors up to 0.5 px)."""
    heading = 0.02
    cam = Camera(CameraConfig(height=128, width=64, metres_per_pixel=mpp, stack=1))
    road, ego = _scene(_straight_network(), (500.0, 2.3), heading)
    frame = cam.render(road, ego).astype(np.float64)
    rows = _away_from_ego(cam.config)
    cover = (frame[rows] - OFFROAD) / (ROAD - OFFROAD)
    partial = (cover > 0.05) & (cover < 0.95)
    assert partial[:, :32].any(axis=1).mean() > 0.6  # most rows have a partial pixel on each edge
    assert partial[:, 32:].any(axis=1).mean() > 0.6
    for edge in ((1 - cover[:, :32]).sum(axis=1), cover[:, 32:].sum(axis=1)):
        slope, offset = np.polyfit(rows, edge, 1)
        # The ego turned right (+y), so the road ahead runs up and to the left: columns grow downwards.
        assert slope == pytest.approx(np.tan(heading), rel=0.15)
        assert np.abs(edge - (slope * rows + offset)).max() < 0.25


def test_rgb_edges_blend_like_gray_ones():
    """RGB frames get the same coverage: each edge pixel is off-road and road mixed in the share its
    grayscale twin shows."""
    road, ego = _scene(_straight_network(), (500.0, 2.3), 0.02)
    cfg = dict(height=128, width=64, metres_per_pixel=1.0, stack=1)
    gray = Camera(CameraConfig(**cfg)).render(road, ego)
    rgb = Camera(CameraConfig(**cfg, rgb=True)).render(road, ego)
    rows = _away_from_ego(CameraConfig(**cfg))
    cover = (gray[rows].astype(np.float64) - OFFROAD) / (ROAD - OFFROAD)
    off, rd = (np.array(PALETTE[k][1], dtype=np.float64) for k in ("offroad", "road"))
    expect = off + (rd - off) * cover[..., None]
    assert ((cover > 0.05) & (cover < 0.95)).sum() > 50
    assert np.abs(rgb[rows] - expect).max() <= 1.0 + 66 * 0.5 / 80  # gray's rounding, scaled


def _world_of_pixels(cam, ego):
    """World (x, y) of every pixel centre of a frame rendered around `ego`, shape (H, W, 2)."""
    c = cam.config
    inverse = cv2.invertAffineTransform(cam.world_to_pixel_matrix(ego.position, ego.heading))
    rows, cols = np.indices((c.height, c.width), dtype=np.float64)
    pix = np.stack([cols, rows, np.ones_like(rows)], axis=-1)
    return pix @ inverse.T


@pytest.mark.parametrize("mpp", [0.5, 1.0])
@pytest.mark.parametrize("heading", [0.0, 0.03])
def test_no_seams_inside_a_straight_road(make_core, mpp, heading):
    """highway's lanes are filled as 10 m chunks: everywhere well inside the road surface, away from
    the markings and the ego, the frame is exactly the road value (no seams where chunks meet)."""
    core = make_core("highway")
    network = core.unwrapped.road.network
    lanes = network.graph["0"]["1"]
    bounds = sorted({round(float(l.position(0.0, s * l.width / 2)[1]), 6) for l in lanes for s in (-1, 1)})
    cam = Camera(CameraConfig(height=128, width=64, metres_per_pixel=mpp, stack=1))
    road, ego = _scene(network, (400.13, float(lanes[1].position(0.0, 0.0)[1]) + 0.37 * mpp), heading)
    frame = cam.render(road, ego)
    world = _world_of_pixels(cam, ego)
    margin = 1.2 * mpp  # metres: clear of a marking's (1.25 px wide) or an edge's partial pixels
    y = world[..., 1]
    inside = (y > bounds[0] + margin) & (y < bounds[-1] - margin)
    for b in bounds:  # every lane boundary carries a marking (continuous at the edges, striped within)
        inside &= np.abs(y - b) > margin
    forward = np.array([np.cos(heading), np.sin(heading)])
    along, across = (world - ego.position) @ forward, (world - ego.position) @ [-forward[1], forward[0]]
    rim = 2.5 * mpp  # the ego's LINE_AA rim reaches ~2 px out
    inside &= ~((np.abs(along) < ego.LENGTH / 2 + rim) & (np.abs(across) < ego.WIDTH / 2 + rim))
    assert inside.any(axis=1).mean() > 0.9 and inside.sum() > 2 * cam.config.height  # not vacuous
    assert np.all(frame[inside] == ROAD), np.unique(frame[inside], return_counts=True)


@pytest.mark.parametrize("name", ["intersection", "roundabout", "merge"])
def test_no_under_road_values_away_from_the_road_edges(make_core, name):
    """Overlapping lanes at junctions and curved chunks: values between off-road and road (partial
    road coverage) only occur next to off-road, never inside the road surface."""
    core = make_core(name)
    cam = Camera(CameraConfig(height=128, width=128, metres_per_pixel=0.5, stack=1, ego_row=0.5))
    road, ego = _scene(core.unwrapped.road.network, core.unwrapped.vehicle.position,
                       core.unwrapped.vehicle.heading + 0.01)
    frame = cam.render(road, ego)
    under = (frame > OFFROAD) & (frame < ROAD)
    assert under.any()  # the road has anti-aliased edges...
    near_offroad = cv2.dilate((frame == OFFROAD).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert not (under & ~near_offroad).any()  # ...and nothing like them inside
    assert (frame == ROAD).sum() > 0.05 * frame.size


@pytest.mark.parametrize("mpp", [0.5, 1.0])
def test_markings_are_one_pixel_lines_at_a_subpixel_position(mpp):
    """A marking's brightness above the road sums to about one pixel of marking colour per row,
    wherever it falls, and its centre follows a quarter-pixel shift of the ego."""
    from highway_env.road.lane import StraightLane
    from highway_env.road.road import RoadNetwork

    net = RoadNetwork()  # two lanes, y = -3..3 and 3..9, one continuous line between them at y = 3
    net.add_lane("a", "b", StraightLane([0.0, 0.0], [1000.0, 0.0], width=6.0, line_types=(0, 2)))
    net.add_lane("a", "b", StraightLane([0.0, 6.0], [1000.0, 6.0], width=6.0, line_types=(0, 0)))
    cam = Camera(CameraConfig(height=128, width=64, metres_per_pixel=mpp, stack=1))
    rows = _away_from_ego(cam.config)
    centres = []
    for quarter in range(5):
        road, ego = _scene(net, (500.0, 6.0 + 0.25 * quarter * mpp))
        frame = cam.render(road, ego)[rows].astype(np.float64)
        expect = 31.5 - 3.0 / mpp - 0.25 * quarter  # the line's column
        cols = np.arange(int(round(expect)) - 3, int(round(expect)) + 4)
        ink = (frame[:, cols] - ROAD) / (PALETTE["marking"][0] - ROAD)
        assert np.all(ink >= 0)  # on the road, nothing darker than it
        assert np.all(frame[:, cols[0]] == ROAD) and np.all(frame[:, cols[-1]] == ROAD)  # a thin line
        per_row = ink.sum(axis=1)
        assert per_row.min() > 0.9 and per_row.max() < 1.5  # about one pixel's worth of marking...
        assert ink.max(axis=1).min() >= 0.7  # ...with one pixel at least ~3/4 covered
        centres.append((ink * cols).sum() / ink.sum())
    np.testing.assert_allclose(centres[0], 31.5 - 3.0 / mpp, atol=0.2)
    # Four quarter-pixel steps move it one pixel, a little at every step (a crisp line stays put or
    # jumps a whole pixel); the 1.25-px line's centroid on the pixel grid wobbles by < 0.1 px.
    assert centres[-1] - centres[0] == pytest.approx(-1.0, abs=0.1)
    assert np.all((np.diff(centres) < -0.1) & (np.diff(centres) > -0.45)), np.diff(centres)


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
    """A camera that sees nothing but the ego (8x8 px at 1 cm/px) renders a constant frame: it raises.
    CameraConfig now rejects such a config, so the renderer's own check is reached by setting the
    scale after validation."""
    core = make_core("highway")
    cfg = CameraConfig(height=8, width=8, stack=1)
    cfg.metres_per_pixel = 0.01
    cam = Camera(cfg)
    with pytest.raises(BlankFrameError):
        cam.render(core.unwrapped.road, core.unwrapped.vehicle)


@pytest.mark.parametrize("bad", [
    {"height": 4}, {"width": 7}, {"height": 0, "width": 0},
    {"metres_per_pixel": 0.0}, {"metres_per_pixel": -0.5}, {"metres_per_pixel": float("nan")},
    {"stack": 0}, {"stack": 33}, {"ego_row": 1.5}, {"ego_row": -0.1},
])
def test_camera_config_validation(bad):
    with pytest.raises(ValueError):
        CameraConfig(**bad)


def test_driving_env_validates_camera_config():
    from sim import DrivingEnv
    with pytest.raises(ValueError, match="too small"):
        DrivingEnv("highway", camera={"height": 4, "width": 64}, expert=False)


def test_the_longest_stack_is_accepted_and_the_next_refused_in_one_line():
    """Every env keeps its stack and the policy takes it as channels: an unbounded one (stack=100000)
    allocated gigabytes per observation before anything said why."""
    from sim.camera import MAX_STACK

    assert CameraConfig(stack=MAX_STACK).obs_shape[0] == MAX_STACK
    with pytest.raises(ValueError, match=f"camera.stack must be within 1..{MAX_STACK}"):
        CameraConfig(stack=MAX_STACK + 1)


def test_camera_config_round_trips():
    cfg = CameraConfig(height=96, width=48, stack=4, rgb=True, heading_up=False, ego_row=0.6)
    assert CameraConfig(**cfg.as_dict()) == cfg
    assert cfg.obs_shape == (4, 96, 48, 3)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_culling_to_the_frame_draws_exactly_what_drawing_every_shape_does(make_core, name, monkeypatch):
    # _in_view leaves out the road chunks and markings that cannot touch the frame; cv2 clips the
    # rest. Reference: every shape of the network drawn, at random poses, headings and scales.
    core = make_core(name)
    road, ego = core.unwrapped.road, core.unwrapped.vehicle
    rng = np.random.default_rng(0)
    start = np.array(ego.position, dtype=np.float64)
    configs = [CameraConfig(height=96, width=96, stack=1), CameraConfig(height=64, width=128, stack=1,
               metres_per_pixel=0.5, heading_up=False, ego_row=0.4), CameraConfig(height=40, width=24, stack=1,
               metres_per_pixel=1.3, ego_row=1.0)]
    real = camera_mod._in_view
    for cfg in configs:
        for _ in range(6):
            ego.position = start + rng.uniform(-120, 120, size=2)
            ego.heading = float(rng.uniform(-np.pi, np.pi))
            try:
                culled = Camera(cfg).render(road, ego)
            except BlankFrameError:  # away from every road: nothing to compare
                continue
            monkeypatch.setattr(camera_mod, "_in_view", lambda centres, *a: np.ones(len(centres), dtype=bool))
            everything = Camera(cfg).render(road, ego)
            monkeypatch.setattr(camera_mod, "_in_view", real)
            assert np.array_equal(culled, everything)
    # the culling has something to cull: far fewer chunks than the network has
    cam = Camera(configs[0])
    fine = cam.world_to_pixel_matrix(start, 0.0) * 4
    geo = cam.geometry(road)
    kept = real(geo.poly_centres, geo.poly_radii, fine, (96 * 4, 96 * 4))
    assert 0 < kept.sum() < len(kept) or len(kept) < 20


def test_networks_that_differ_in_any_lane_attribute_get_their_own_geometry():
    from highway_env.road.lane import SineLane, StraightLane
    from highway_env.road.road import RoadNetwork

    def network(amplitude):
        net = RoadNetwork()
        # pulsation 3*pi/L: both sines cross the centre line at 0, L/3, 2L/3 and L
        net.add_lane("a", "b", SineLane([0, 0], [90, 0], amplitude, 3 * np.pi / 90, 0.0, width=4))
        net.add_lane("b", "c", StraightLane([90, 0], [200, 0], width=4))
        return net

    camera_mod._GEOMETRY_CACHE.clear()
    small, large = camera_mod._cached_geometry(network(2.0)), camera_mod._cached_geometry(network(6.0))
    assert small is not large
    assert np.abs(large.poly_centres[:, 1]).max() > np.abs(small.poly_centres[:, 1]).max() + 2
    assert camera_mod._cached_geometry(network(2.0)) is small  # the same network rebuilt: cached


def test_a_rebuilt_network_of_poly_lanes_hits_the_geometry_cache():
    from highway_env.road.lane import PolyLaneFixedWidth
    from highway_env.road.road import RoadNetwork

    def network(bend):
        net = RoadNetwork()
        net.add_lane("a", "b", PolyLaneFixedWidth([(0, 0), (30, 0), (60, bend), (90, 2 * bend)], width=4))
        return net

    camera_mod._GEOMETRY_CACHE.clear()
    first = camera_mod._cached_geometry(network(5.0))
    assert camera_mod._cached_geometry(network(5.0)) is first  # its spline is compared by content
    assert camera_mod._cached_geometry(network(9.0)) is not first
    assert camera_mod._network_key(network(5.0)) != camera_mod._network_key(network(5.0 + 1e-9))
