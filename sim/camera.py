"""The camera: rasterises the simulator's true state into ego-centred frames with OpenCV.

Why not highway-env's own GrayscaleObservation: it renders through pygame (SDL traps, ~1.5 ms a
frame), returns (stack, W, H), frames the road into a thin band, cannot turn with the ego, and draws
the ego in a colour that vanishes in grayscale. Here the road geometry is sampled once per episode
into small polygon/segment chunks; each frame selects the chunks near the ego, applies one 2-D
affine transform and fills them. Frames are row-major (H, W) or (H, W, 3) uint8.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import cv2
import numpy as np

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
}
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT
_STRIPE_ON, _STRIPE_PERIOD = 3.0, 7.33  # m, as highway-env paints striped lines
_CHUNK = 10.0  # m of lane per polygon chunk


class BlankFrameError(RuntimeError):
    """Raised instead of returning a frame with no content (a renderer fault, never data)."""


@dataclass
class CameraConfig:
    height: int = 128
    width: int = 64
    metres_per_pixel: float = 0.5
    stack: int = 2
    rgb: bool = False
    heading_up: bool = True  # turn with the ego (driver's view); False: world +x points up
    ego_row: float = 0.75  # where the ego's centre sits, as a fraction of the height from the top

    def __post_init__(self):
        if self.height < 8 or self.width < 8:
            raise ValueError(f"camera size {self.height}x{self.width} too small: use at least 8x8")
        if not self.metres_per_pixel > 0:
            raise ValueError("camera.metres_per_pixel must be > 0")
        if self.stack < 1:
            raise ValueError("camera.stack must be >= 1")
        if not 0.0 <= self.ego_row <= 1.0:
            raise ValueError("camera.ego_row must be within [0, 1]")

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
    """Identifies a road network's drawable geometry. highway-env rebuilds the (identical) network
    at every reset; sampling it again cost ~0.1 s per highway reset."""
    key = []
    for _from, tos in network.graph.items():
        for _to, lanes in tos.items():
            for lane in lanes:
                length = float(lane.length)
                pts = [lane.position(x, 0.0) for x in (0.0, length / 3, 2 * length / 3, length)]
                key.append((_from, _to, type(lane).__name__, round(length, 6),
                            tuple(np.round(np.concatenate(pts), 6)), round(float(lane.width_at(0.0)), 6),
                            tuple(int(t) for t in (lane.line_types or ()))))
    return tuple(key)


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
        self._view_radius = np.hypot(c.height, c.width) * c.metres_per_pixel
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
        c = self.config
        geo = self.geometry(road)
        m = self.world_to_pixel_matrix(ego.position, ego.heading)
        shape = c.frame_shape
        img = np.full(shape, self._colours["offroad"], dtype=np.uint8)
        centre = np.asarray(ego.position, dtype=np.float64)

        near = np.linalg.norm(geo.poly_centres - centre, axis=1) < self._view_radius + geo.poly_radii
        if near.any():
            # One call per chunk: a single multi-polygon call fills by parity, so overlapping
            # lanes (junctions) would cancel out into holes.
            visible = [geo.polys[i] for i in np.flatnonzero(near)]
            points = _to_fixed(np.concatenate(visible), m)  # one transform for all of them
            for poly in np.split(points, np.cumsum([len(p) for p in visible])[:-1]):
                cv2.fillPoly(img, [poly], self._colours["road"], lineType=cv2.LINE_8, shift=_SHIFT)
        if len(geo.markings):
            near = (np.linalg.norm(geo.marking_centres - centre, axis=1)
                    < self._view_radius + geo.marking_radii)
            if near.any():
                segs = _to_fixed(geo.markings[near].reshape(-1, 2), m).reshape(-1, 2, 2)
                # Crisp 1-px lines: anti-aliasing would halve their value where a marking falls
                # between two pixel centres, and they would vanish into the road.
                cv2.polylines(img, list(segs), False, self._colours["marking"], 1,
                              lineType=cv2.LINE_8, shift=_SHIFT)
        # Obstacles first (static, e.g. the end of merge's ramp, can be hit), then traffic, ego last.
        obstacles = [o for o in road.objects if o.collidable]
        traffic = [v for v in road.vehicles if v is not ego]
        for group, colour in ((obstacles, "obstacle"), (traffic, "traffic")):
            if not group:
                continue
            pos = np.array([o.position for o in group], dtype=np.float64).reshape(-1, 2)
            length = np.array([o.LENGTH for o in group], dtype=np.float64)
            near = np.hypot(*(pos - centre).T) < self._view_radius + length
            if near.any():
                near_objs = [o for o, keep in zip(group, near) if keep]
                polys = _to_fixed(_boxes(near_objs).reshape(-1, 2), m).reshape(-1, 4, 2)
                for poly in polys:
                    cv2.fillConvexPoly(img, poly, self._colours[colour], lineType=cv2.LINE_AA, shift=_SHIFT)
        cv2.fillConvexPoly(img, _to_fixed(_boxes([ego])[0], m), self._colours["ego"],
                           lineType=cv2.LINE_AA, shift=_SHIFT)
        if img.min() == img.max():
            raise BlankFrameError(f"camera produced a constant frame (value {img.flat[0]})")
        return img

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


def _to_fixed(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    px = points @ m[:, :2].T + m[:, 2]
    # Clamp far-away points so int32 fixed-point never overflows (cv2 clips the polygons itself).
    return np.round(np.clip(px, -1e5, 1e5) * _ONE).astype(np.int32)
