"""The camera: rasterises the simulator's true state into ego-centred frames with OpenCV.

Why not highway-env's own GrayscaleObservation: it renders through pygame (SDL traps, ~1.5 ms a
frame), returns (stack, W, H), frames the road into a thin band, cannot turn with the ego, and draws
the ego in a colour that vanishes in grayscale. Here the road geometry is sampled once per episode
into small polygon/segment chunks; each frame selects the chunks near the ego, applies one 2-D
affine transform and fills them. Frames are row-major (H, W) or (H, W, 3) uint8.
"""
from __future__ import annotations

import enum
import functools
import types
from collections import deque
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from sim.signals import turn_signal

# Classes drawn, with their grayscale value and RGB colour. The ego is the brightest thing in the
# frame and traffic sits between road and markings, so the filled shapes stay distinct in grayscale
# (anti-aliased edges and 1-px markings blend with what is under them).
PALETTE = {
    "offroad": (0, (24, 64, 24)),
    "road": (80, (90, 90, 90)),
    "marking": (190, (235, 235, 235)),
    "traffic": (135, (60, 110, 220)),
    "obstacle": (135, (200, 60, 60)),
    "ego": (255, (255, 210, 0)),
    "signal": (225, (255, 120, 0)),  # a lit indicator: the front quarter of the turning side
}
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_STRIPE_ON, _STRIPE_PERIOD = 3.0, 7.33  # m, as highway-env paints striped lines
_CHUNK = 10.0  # m of lane per polygon chunk
_SS = 4  # supersampling factor (each axis) of the road and marking coverage masks
_VIEW_MARGIN_PX = 8.0  # fine px beyond a shape's disc: marking width (_SS) plus rounding
_MAX_FINE_PX = 1 << 22  # cap on a mask's fine pixels: _SS is halved for frames larger than 512x512


MAX_SIDE = 2048  # px
CAR_WIDTH, CAR_LENGTH = 2.0, 5.0  # m, highway-env's vehicles
MIN_CAR_PX = 1.5  # the narrowest a car may be drawn, px
MAX_STACK = 32  # frames an observation holds: every env keeps them, a policy takes them as channels


class BlankFrameError(RuntimeError):
    """Raised instead of returning a frame with no content (a renderer fault, never data)."""


@dataclass
class CameraConfig:
    height: int = 128
    width: int = 64
    # 1 m/px: 96 m ahead, 32 m behind, +-32 m, what the expert reacts to on highways (`driving gap`)
    metres_per_pixel: float = 1.0
    stack: int = 2
    rgb: bool = False
    heading_up: bool = True  # turn with the ego (driver's view); False: world +x points up
    ego_row: float = 0.75  # where the ego's centre sits, as a fraction of the height from the top

    def __post_init__(self):
        if self.height < 8 or self.width < 8:
            raise ValueError(f"camera size {self.height}x{self.width} too small: use at least 8x8")
        if not self.metres_per_pixel > 0 or not np.isfinite(self.metres_per_pixel):
            raise ValueError("camera.metres_per_pixel must be a number > 0")
        if max(self.height, self.width) > MAX_SIDE:
            raise ValueError(f"camera size {self.height}x{self.width} cannot be drawn: use at most "
                             f"{MAX_SIDE} px a side (raise camera.metres_per_pixel to see further)")
        if CAR_WIDTH / self.metres_per_pixel < MIN_CAR_PX:
            raise ValueError(f"camera.metres_per_pixel={self.metres_per_pixel:g} is too coarse to show a vehicle "
                             f"(a car {CAR_WIDTH:g} m wide would cover {CAR_WIDTH / self.metres_per_pixel:.2f} px): "
                             f"use at most {CAR_WIDTH / MIN_CAR_PX:.2f}")
        if not 1 <= self.stack <= MAX_STACK:
            raise ValueError(f"camera.stack must be within 1..{MAX_STACK} (frames of history; {MAX_STACK} is "
                             f"{MAX_STACK / 5:g} s at 5 Hz), not {self.stack}")
        if not 0.0 <= self.ego_row <= 1.0:
            raise ValueError("camera.ego_row must be within [0, 1]")
        if self.footprint[0] < CAR_LENGTH:
            raise ValueError(f"the camera shows {self.footprint[0]:.1f} m ahead of the ego, less than a car length: "
                             "raise camera.ego_row, camera.height or camera.metres_per_pixel")

    @property
    def footprint(self) -> tuple[float, float, float]:
        """(ahead, behind, half width) in metres: the ground the frame shows around the ego's centre,
        along its heading if `heading_up`, else along world +x."""
        m = self.metres_per_pixel
        return self.ego_row * self.height * m, (1.0 - self.ego_row) * self.height * m, self.width * m / 2

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return (self.height, self.width, 3) if self.rgb else (self.height, self.width)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (self.stack, *self.frame_shape)

    def as_dict(self) -> dict:
        return asdict(self)


class RoadGeometry:
    """Lane surfaces and markings of a road network, sampled once, chunked for fast culling."""

    def __init__(self, network):
        polys, markings = [], []
        for _from, tos in network.graph.items():
            for _to, lanes in tos.items():
                for lane in lanes:
                    polys += _lane_chunks(lane)
                    for side, line_type in enumerate(lane.line_types or ()):
                        markings += _marking_segments(lane, side, int(line_type))
        self.polys = polys
        self.poly_centres = np.array([p.mean(axis=0) for p in polys]).reshape(-1, 2)
        self.poly_radii = np.array(
            [np.max(np.linalg.norm(p - p.mean(axis=0), axis=1)) for p in polys]).reshape(-1)
        self.markings = np.array(markings, dtype=np.float64).reshape(-1, 2, 2)
        self.marking_centres = self.markings.mean(axis=1)
        self.marking_radii = np.linalg.norm(self.markings[:, 0] - self.markings[:, 1], axis=1) / 2


_GEOMETRY_CACHE: dict = {}


def _network_key(network) -> tuple:
    """Identifies a road network's drawable geometry exactly: every lane's class and public attributes
    (start, end, width, radius, phases, sine amplitude, line types, ...). highway-env rebuilds the
    (identical) network at every reset; sampling it again cost ~0.1 s per highway reset. A key of a
    few sampled points per lane would take two different sine lanes through the same points for one."""
    key = []
    for _from, tos in network.graph.items():
        for _to, lanes in tos.items():
            for lane in lanes:
                attrs = tuple((k, _frozen(v)) for k, v in sorted(vars(lane).items()) if not k.startswith("_"))
                key.append((_from, _to, type(lane).__module__, type(lane).__qualname__, attrs))
    return tuple(key)


_CODE_TYPES = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial, types.ModuleType)


def _frozen(value, depth: int = 0):
    """A hashable, exact stand-in for a lane attribute: arrays by bytes, containers and plain objects
    (a poly-lane's spline) and closures (its interpolators) by their contents, a few levels deep.
    Anything else (a builtin, a deeper object) equals nothing, so that network is sampled again:
    never a wrong match."""
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v, depth) for v in value)
    if isinstance(value, (bool, int, float, str, type(None), np.generic, enum.Enum)):
        return value
    if depth < 4 and isinstance(value, types.FunctionType):  # a closure: its code and what it captured
        cells = tuple(_frozen(c.cell_contents, depth + 1) for c in value.__closure__ or ())
        return (value.__module__, value.__qualname__, cells, _frozen(value.__defaults__, depth + 1))
    if depth < 4 and hasattr(value, "__dict__") and not isinstance(value, (type, _CODE_TYPES)):
        return (type(value).__module__, type(value).__qualname__,
                tuple((k, _frozen(v, depth + 1)) for k, v in sorted(vars(value).items()) if not k.startswith("_")))
    return object()


def _cached_geometry(network) -> RoadGeometry:
    key = _network_key(network)
    geo = _GEOMETRY_CACHE.get(key)
    if geo is None:
        if len(_GEOMETRY_CACHE) >= 16:
            _GEOMETRY_CACHE.pop(next(iter(_GEOMETRY_CACHE)))
        geo = _GEOMETRY_CACHE[key] = RoadGeometry(network)
    return geo


def _stations(lane, step: float) -> np.ndarray:
    """Longitudinal sample points: ends only for straight lanes, every `step` m otherwise."""
    from highway_env.road.lane import StraightLane, SineLane

    length = float(lane.length)
    if isinstance(lane, StraightLane) and not isinstance(lane, SineLane):
        n = max(1, int(np.ceil(length / _CHUNK)))
    else:
        n = max(1, int(np.ceil(length / step)))
    return np.linspace(0.0, length, n + 1)


def _lane_chunks(lane) -> list[np.ndarray]:
    s = _stations(lane, 1.0)
    half = np.array([lane.width_at(x) / 2 for x in s])
    left = np.array([lane.position(x, -h) for x, h in zip(s, half)])
    right = np.array([lane.position(x, h) for x, h in zip(s, half)])
    per_chunk = max(1, int(round(_CHUNK / max(s[1] - s[0], 1e-6))))
    chunks = []
    for i in range(0, len(s) - 1, per_chunk):
        j = min(i + per_chunk, len(s) - 1)
        chunks.append(np.concatenate([left[i:j + 1], right[i:j + 1][::-1]]))
    return chunks


def _marking_segments(lane, side: int, line_type: int) -> list:
    # highway-env LineType: 0 NONE, 1 STRIPED, 2 CONTINUOUS, 3 CONTINUOUS_LINE
    if line_type == 0:
        return []
    lateral_sign = -1.0 if side == 0 else 1.0
    length = float(lane.length)
    if line_type == 1:
        starts = np.arange(0.0, length, _STRIPE_PERIOD)
        ends = np.minimum(starts + _STRIPE_ON, length)
        pieces = list(zip(starts, ends))
    else:
        s = _stations(lane, 1.0)
        pieces = list(zip(s[:-1], s[1:]))
    segs = []
    for a, b in pieces:
        pa = lane.position(a, lateral_sign * lane.width_at(a) / 2)
        pb = lane.position(b, lateral_sign * lane.width_at(b) / 2)
        segs.append((pa, pb))
    return segs


class Camera:
    """Renders frames around a vehicle and keeps the last `stack` of them."""

    def __init__(self, config: CameraConfig | None = None):
        self.config = config or CameraConfig()
        self._geometry: RoadGeometry | None = None
        self._network = None
        self._frames: deque = deque(maxlen=self.config.stack)
        c = self.config
        self._colours = {k: tuple(int(x) for x in rgb) if c.rgb else int(g) for k, (g, rgb) in PALETTE.items()}

    def geometry(self, road) -> RoadGeometry:
        if self._network is not road.network:
            self._geometry = _cached_geometry(road.network)
            self._network = road.network
        return self._geometry

    def world_to_pixel_matrix(self, position, heading: float) -> np.ndarray:
        """2x3 affine matrix mapping world metres (x, y) to pixel (col, row) coordinates.

        highway-env's y axis points to the driver's right when the heading is 0, so the ego's right
        is (-sin h, cos h). Forward maps to up (-row), the ego's right to +col.
        """
        c = self.config
        angle = heading if c.heading_up else 0.0
        forward = np.array([np.cos(angle), np.sin(angle)])
        right = np.array([-forward[1], forward[0]])
        k = 1.0 / c.metres_per_pixel
        rot = np.stack([right * k, -forward * k])
        # OpenCV pixel centres are integers: pixel i covers [i - 0.5, i + 0.5].
        origin = np.array([c.width / 2.0 - 0.5, c.ego_row * c.height - 0.5])
        offset = origin - rot @ np.asarray(position, dtype=np.float64)
        return np.concatenate([rot, offset[:, None]], axis=1)

    def render(self, road, ego) -> np.ndarray:
        """One frame centred on `ego` (a highway-env vehicle on `road`)."""
        geo = self.geometry(road)
        c = self.config
        m = self.world_to_pixel_matrix(ego.position, ego.heading)
        img = self._ground(geo, m)
        # Obstacles first (static, e.g. the end of merge's ramp, can be hit), then traffic, ego last.
        obstacles = [o for o in road.objects if o.collidable]
        traffic = [v for v in road.vehicles if v is not ego]
        for group, colour in ((obstacles, "obstacle"), (traffic, "traffic")):
            if not group:
                continue
            pos = np.array([o.position for o in group], dtype=np.float64).reshape(-1, 2)
            length = np.array([o.LENGTH for o in group], dtype=np.float64)
            near = _in_view(pos, length, m, (c.height, c.width))  # a footprint lies within its length
            if near.any():
                near_objs = [o for o, keep in zip(group, near) if keep]
                polys = _to_fixed(_boxes(near_objs).reshape(-1, 2), m).reshape(-1, 4, 2)
                for poly in polys:
                    cv2.fillConvexPoly(img, poly, self._colours[colour], lineType=cv2.LINE_AA, shift=_SHIFT)
                if colour == "traffic":
                    self._draw_signals(img, road.network, near_objs, m)
        cv2.fillConvexPoly(img, _to_fixed(_boxes([ego])[0], m), self._colours["ego"],
                           lineType=cv2.LINE_AA, shift=_SHIFT)
        if img.min() == img.max():
            raise BlankFrameError(f"camera produced a constant frame (value {img.flat[0]})")
        return img

    def _draw_signals(self, img: np.ndarray, network, vehicles: list, m: np.ndarray) -> None:
        """Lit indicators (sim/signals.py): what tells a driver where another car will turn."""
        sides = [turn_signal(network, v) for v in vehicles]
        lit = [(v, side) for v, side in zip(vehicles, sides) if side]
        if not lit:
            return
        corners = _signal_patches([v for v, _ in lit], np.array([side for _, side in lit], dtype=np.float64))
        for poly in _to_fixed(corners.reshape(-1, 2), m).reshape(-1, 4, 2):
            cv2.fillConvexPoly(img, poly, self._colours["signal"], lineType=cv2.LINE_AA, shift=_SHIFT)

    def _ground(self, geo: RoadGeometry, m: np.ndarray) -> np.ndarray:
        """Off-road, road and markings, anti-aliased: coverage masks of the road surface and of the
        markings are drawn `_SS` times finer in each axis, averaged down to the frame's pixels and
        blended (road over off-road, markings over that) by coverage.

        Why supersampled masks rather than LINE_AA fills: each anti-aliased chunk would blend its
        partial edge coverage with what is under it, leaving seams where adjacent chunks meet. In
        the binary masks chunks simply overlap, so the inside of the road is exactly the road colour
        and only true edges get intermediate values, at a sub-pixel position.
        """
        c = self.config
        ss = _SS
        while ss > 1 and c.height * c.width * ss * ss > _MAX_FINE_PX:  # huge frames: coarser
            ss //= 2
        # Frame pixel i covers [i - 0.5, i + 0.5], fine pixels ss*i .. ss*i + ss - 1 (centres at
        # integers too): fine = ss * frame + (ss - 1) / 2.
        fine = m * ss
        fine[:, 2] += (ss - 1) / 2.0
        size = (c.height * ss, c.width * ss)

        road = np.zeros(size, dtype=np.uint8)
        near = _in_view(geo.poly_centres, geo.poly_radii, fine, size)
        if near.any():
            # One call per chunk: a single multi-polygon call fills by parity, so overlapping
            # lanes (junctions) would cancel out into holes.
            visible = [geo.polys[i] for i in np.flatnonzero(near)]
            points = _to_fixed(np.concatenate(visible), fine)  # one transform for all of them
            end = 0
            for poly in visible:
                start, end = end, end + len(poly)
                cv2.fillPoly(road, [points[start:end]], 255, lineType=cv2.LINE_8, shift=_SHIFT)
        road = _downsample(road, ss)

        marks = None
        if len(geo.markings):
            near = _in_view(geo.marking_centres, geo.marking_radii, fine, size)
            if near.any():
                segs = _to_fixed(geo.markings[near].reshape(-1, 2), fine).reshape(-1, 2, 2)
                marks = np.zeros(size, dtype=np.uint8)
                # One frame pixel wide, as the old crisp 1-px lines, but at a sub-pixel position.
                cv2.polylines(marks, list(segs), False, 255, ss, lineType=cv2.LINE_8, shift=_SHIFT)
                marks = _downsample(marks, ss)

        col = self._colours
        table = _blend_table(col["offroad"], col["road"], col["marking"])
        index = road.astype(np.intp) << 8
        if marks is not None:
            index |= marks
        return table.take(index, axis=0)

    def reset(self, road, ego) -> np.ndarray:
        frame = self.render(road, ego)
        self._frames.clear()
        for _ in range(self.config.stack):
            self._frames.append(frame)
        return self.stacked()

    def step(self, road, ego) -> np.ndarray:
        self._frames.append(self.render(road, ego))
        return self.stacked()

    def stacked(self) -> np.ndarray:
        return np.stack(self._frames)


def _boxes(objects) -> np.ndarray:
    """(n, 4, 2) world corners of the objects' footprints."""
    half_l = np.array([o.LENGTH for o in objects], dtype=np.float64)[:, None] / 2
    half_w = np.array([o.WIDTH for o in objects], dtype=np.float64)[:, None] / 2
    heading = np.array([o.heading for o in objects], dtype=np.float64)[:, None]
    pos = np.array([o.position for o in objects], dtype=np.float64)
    a = half_l * np.array([1.0, 1.0, -1.0, -1.0])  # along the heading
    b = half_w * np.array([1.0, -1.0, -1.0, 1.0])  # to the left
    c, s = np.cos(heading), np.sin(heading)
    return np.stack([a * c - b * s + pos[:, :1], a * s + b * c + pos[:, 1:]], axis=-1)


def _signal_patches(vehicles, sides: np.ndarray) -> np.ndarray:
    """(n, 4, 2) world corners of the front quarter of each vehicle's signalling half (side -1: its
    left, +1: its right; (-sin h, cos h) is a vehicle's right in highway-env's frame)."""
    half_l = np.array([v.LENGTH for v in vehicles], dtype=np.float64)[:, None] / 2
    half_w = np.array([v.WIDTH for v in vehicles], dtype=np.float64)[:, None] / 2
    heading = np.array([v.heading for v in vehicles], dtype=np.float64)[:, None]
    pos = np.array([v.position for v in vehicles], dtype=np.float64)
    a = half_l * np.array([1.0, 1.0, 0.5, 0.5])  # the front quarter of the length
    b = sides[:, None] * half_w * np.array([0.0, 1.0, 1.0, 0.0])  # centre line to the signalling side
    c, s = np.cos(heading), np.sin(heading)
    return np.stack([a * c - b * s + pos[:, :1], a * s + b * c + pos[:, 1:]], axis=-1)


# Points of a footprint sampled for visibility: corners, edge midpoints and centre (3 x 3).
_GRID = np.array([(a, b) for a in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)])


def visible_fraction(config: CameraConfig, position, heading: float, objects) -> np.ndarray:
    """Share of each object's footprint (3 x 3 sample points) inside the frame of a camera on a
    vehicle at `position`, `heading`: the geometry `Camera.render` draws, heading-up or not."""
    if not len(objects):
        return np.zeros(0)
    ahead, behind, half = config.footprint
    angle = heading if config.heading_up else 0.0
    forward = np.array([np.cos(angle), np.sin(angle)])
    right = np.array([-forward[1], forward[0]])
    pos = np.array([o.position for o in objects], dtype=np.float64).reshape(-1, 1, 2)
    hl = np.array([o.LENGTH for o in objects], dtype=np.float64)[:, None, None] / 2
    hw = np.array([o.WIDTH for o in objects], dtype=np.float64)[:, None, None] / 2
    h = np.array([o.heading for o in objects], dtype=np.float64)[:, None]
    along = np.stack([np.cos(h), np.sin(h)], axis=-1)  # (n, 1, 2)
    across = np.stack([-np.sin(h), np.cos(h)], axis=-1)
    pts = pos + _GRID[None, :, :1] * hl * along + _GRID[None, :, 1:] * hw * across - np.asarray(position)
    f, r = pts @ forward, pts @ right
    inside = (f <= ahead) & (f >= -behind) & (np.abs(r) <= half)
    return inside.mean(axis=1)


def _in_view(centres: np.ndarray, radii: np.ndarray, m: np.ndarray, size: tuple) -> np.ndarray:
    """Which shapes (world centre, radius of the disc around all their points) may touch an image of
    `size` (rows, cols) under the affine map `m` (world -> px, a rotation scaled by the same factor on
    both axes): the disc's bounding box in pixels overlaps the image, with a margin for line width
    and fixed-point rounding. Only shapes that cannot cover a pixel are left out, so the drawing is
    the same as drawing them all (cv2 clips), at a fraction of the calls."""
    scale = float(np.hypot(m[0, 0], m[0, 1]))
    px = centres @ m[:, :2].T + m[:, 2]
    r = radii * scale + _VIEW_MARGIN_PX
    return (px[:, 0] + r > 0) & (px[:, 0] - r < size[1]) & (px[:, 1] + r > 0) & (px[:, 1] - r < size[0])


def _downsample(mask: np.ndarray, ss: int) -> np.ndarray:
    """Mean of each ss x ss block of a uint8 mask (cv2 INTER_AREA). A factor of 2 has a fast path in
    OpenCV, so powers of two go down in halves (4x: ~10 us, not ~45 us; full and empty blocks stay
    exactly 255 and 0, partial ones within 1 of the exact mean)."""
    while ss > 1:
        step = 2 if ss % 2 == 0 else ss
        h, w = mask.shape[0] // step, mask.shape[1] // step
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
        ss //= step
    return mask


@functools.lru_cache(maxsize=8)
def _blend_table(offroad, road, marking) -> np.ndarray:
    """(65536,) or (65536, 3) uint8: the colour of a pixel with road coverage a and marking coverage
    b (both 0..255) at index a * 256 + b: road over off-road by a, then the marking over that by b."""
    a = np.arange(256, dtype=np.float64)[:, None, None] / 255.0
    b = np.arange(256, dtype=np.float64)[None, :, None] / 255.0
    off, rd, mk = (np.asarray(x, dtype=np.float64).reshape(-1) for x in (offroad, road, marking))
    ground = off + (rd - off) * a
    table = np.rint(ground + (mk - ground) * b).clip(0, 255).astype(np.uint8)
    table = table.reshape(256 * 256, -1)
    if np.ndim(offroad) == 0:
        table = table[:, 0]
    table.flags.writeable = False
    return table


def _to_fixed(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    px = points @ m[:, :2].T + m[:, 2]
    # Clamp far-away points so int32 fixed-point never overflows (cv2 clips the polygons itself).
    return np.round(np.clip(px, -1e5, 1e5) * _ONE).astype(np.int32)
