"""A faster highway-env road that computes exactly what the stock road computes.

The stock `Road` is quadratic in Python: every vehicle's neighbour search projects every other
vehicle onto a lane (`lane.local_coordinates`, about a million calls per 100 dense-highway steps),
and the collision check visits all pairs. Here numpy computes the same quantities for all vehicles
at once, but only to *discard* vehicles that cannot change the answer; the survivors go through
the stock code, in the stock order. So every neighbour, acceleration and collision is the stock
one, bit for bit: the vectorised values only need to be within `_TOL` of the scalar ones (they
differ by rounding, ~1e-12 m), and every decision that close to a boundary is left to stock code.

- Neighbours: per lane and per `Road.act` (positions are frozen while vehicles decide), vehicles
  that are surely on the lane are sorted by their lane coordinate; a query bisects to the nearest
  one ahead and behind. Vehicles near the lane's edge (possibly on it) are always checked.
- Collisions: pairwise distances against the stock spherical pre-check's radius, then the stock
  separating-axis test evaluated for all remaining pairs at once from box projections; only pairs
  that are not clearly apart (by `_SAT_TOL`) reach `handle_collisions`, in the stock (i, j) order.
- Regulated roads (intersection): `enforce_road_rules` predicts every vehicle's trajectory once
  per call instead of once per pair; the predictions depend on nothing but the vehicle.
- The lane a vehicle is on (`get_closest_lane_index`, after every substep) skips lanes whose
  distance is surely not the minimum. The network's lanes are tabled once; `add_lane` drops the
  table (highway-env builds every network through it): a graph edited directly, or shared with a
  shallow copy that adds lanes, must drop `_fast_lane_table` itself.

Lane shapes without a vectorised form here (poly-lanes) fall back to the stock code. The
per-vehicle side (IDM, steering, kinematics, memoised lane projections) is sim.fast_vehicles.
`install(road)` switches a road, its network, lanes and vehicles to the fast code in place;
scenarios do so at every reset unless their config sets `fast_road: false`.
tests/test_fast_road.py and scripts/check_fast_road.py compare the two side by side.
"""
from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

import numpy as np
from highway_env import utils
from highway_env.road.lane import CircularLane, SineLane, StraightLane
from highway_env.road.regulation import RegulatedRoad
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
from highway_env.vehicle.kinematics import Vehicle
from highway_env.vehicle.objects import Landmark, RoadObject

from sim.fast_vehicles import STOCK_CLASS, derived_class, fasten_lane, fasten_vehicle

# Metres. Vectorised coordinates differ from the scalar ones by rounding (~1e-12 m on roads a few
# km long); anything within _TOL of a decision boundary is decided by the stock code.
_TOL = 1e-6
_SAT_TOL = 1e-6  # m: separations smaller than this are left to the stock polygon test
_STOCK_VELOCITY = (RoadObject.velocity, Vehicle.velocity)
_NEIGHBOUR_MARGIN = 1.0  # the margin stock Road.neighbour_vehicles passes to lane.on_lane


_VECTOR_LANES = (StraightLane, SineLane, CircularLane)


def _shape_class(lane) -> type:
    """The stock lane class (lanes may have been given a memoising subclass)."""
    kind = type(lane)
    return STOCK_CLASS.get(kind, kind)


def approx_lane_coords(lane, points: np.ndarray):
    """(longitudinal, lateral, unsure) of `points` (n, 2) on `lane`, vectorised; None if this lane
    type has no vectorised form. `unsure` marks points whose longitudinal coordinate may wrap
    differently from the scalar code (circular lanes, opposite the start), or None."""
    kind = _shape_class(lane)
    if kind is StraightLane or kind is SineLane:
        d0 = points[:, 0] - lane.start[0]
        d1 = points[:, 1] - lane.start[1]
        s = d0 * lane.direction[0] + d1 * lane.direction[1]
        lat = d0 * lane.direction_lateral[0] + d1 * lane.direction_lateral[1]
        if kind is SineLane:
            lat = lat - lane.amplitude * np.sin(lane.pulsation * s + lane.phase)
        return s, lat, None
    if kind is CircularLane:
        d0 = points[:, 0] - lane.center[0]
        d1 = points[:, 1] - lane.center[1]
        wrapped = (np.arctan2(d1, d0) - lane.start_phase + np.pi) % (2 * np.pi) - np.pi
        s = lane.direction * wrapped * lane.radius
        lat = lane.direction * (lane.radius - np.hypot(d0, d1))
        return s, lat, np.abs(wrapped) > np.pi - 1e-9
    return None


def _lane_masks(lane, points: np.ndarray):
    """(maybe, sure): which points may be, and which surely are, on `lane` in the sense of
    `lane.on_lane(margin=1)` (the stock neighbour search's test); None for non-vectorised lanes."""
    coords = approx_lane_coords(lane, points)
    if coords is None:
        return None
    s, lat, unsure = coords
    half = lane.width_at(0.0) / 2 + _NEIGHBOUR_MARGIN
    lo, hi = -lane.VEHICLE_LENGTH, lane.length + lane.VEHICLE_LENGTH
    alat = np.abs(lat)
    maybe = (alat <= half + _TOL) & (s >= lo - _TOL) & (s < hi + _TOL)
    sure = (alat <= half - _TOL) & (s >= lo + _TOL) & (s < hi - _TOL)
    if unsure is not None:
        maybe |= unsure
        sure &= ~unsure
    return maybe, sure, s


class _LaneMembers:
    """Who is on one lane (in the sense of `lane.on_lane(margin=1)`) at frozen positions."""

    __slots__ = ("edge_idx", "edge_set", "sorted_idx", "sorted_s")

    def __init__(self, lane, points: np.ndarray):
        maybe, sure, s = _lane_masks(lane, points)
        sure_idx = np.flatnonzero(sure)
        order = np.argsort(s[sure_idx], kind="stable")
        self.sorted_idx = sure_idx[order].tolist()
        self.sorted_s = s[sure_idx][order].tolist()
        self.edge_idx = np.flatnonzero(maybe & ~sure).tolist()
        self.edge_set = frozenset(self.edge_idx)  # the only ones whose on_lane needs checking

    def candidates(self, s: float) -> list[int]:
        """Indices (ascending) of every entity that could be the nearest one ahead of or behind
        longitudinal position `s`: the others are surely off the lane or surely farther."""
        vals, n = self.sorted_s, len(self.sorted_s)
        rear = bisect_left(vals, s - _TOL) - 1  # the nearest surely-behind
        lo = bisect_left(vals, vals[rear] - 2 * _TOL) if rear >= 0 else 0
        front = bisect_right(vals, s + _TOL)  # the nearest surely-ahead
        hi = bisect_right(vals, vals[front] + 2 * _TOL) if front < n else n
        if not self.edge_idx:
            return sorted(self.sorted_idx[lo:hi])
        return sorted(self.sorted_idx[lo:hi] + self.edge_idx)


class FastRoadMixin(Road):
    """Road methods with the stock results and a cost linear in the number of nearby vehicles."""

    _frozen = None  # while act() runs: (entities, positions, {lane: _LaneMembers})
    _acting = False

    def act(self) -> None:
        # Vehicles only decide here; none moves, so positions can be gathered once.
        for vehicle in self.vehicles:  # traffic spawned since the last substep
            fasten_vehicle(vehicle)
        self._frozen = None
        self._acting = True
        try:
            super().act()
        finally:
            self._acting = False
            self._frozen = None

    def _entities(self):
        frozen = self._frozen
        if frozen is None:
            entities = self.vehicles + self.objects
            points = np.array([e.position for e in entities], dtype=np.float64).reshape(-1, 2)
            frozen = (entities, points, {})
            if self._acting:
                self._frozen = frozen
        return frozen

    def neighbour_vehicles(self, vehicle, lane_index=None):
        lane_index = lane_index or vehicle.lane_index
        if not lane_index:
            return None, None
        lane = self.network.get_lane(lane_index)
        if getattr(self, "neighbour_vehicles_connected_lanes", False) or _shape_class(lane) not in _VECTOR_LANES:
            return self._neighbours_filtered(vehicle, lane_index)
        entities, points, members = self._entities()
        m = members.get(lane)
        if m is None:
            m = members[lane] = _LaneMembers(lane, points)
        s = lane.local_coordinates(vehicle.position)[0]
        s_front = s_rear = None
        v_front = v_rear = None
        # The stock loop body (single lane, offset 0) over the candidates, in the stock order.
        for i in m.candidates(s):
            v = entities[i]
            if v is vehicle or isinstance(v, Landmark):
                continue
            s_v, lat_v = lane.local_coordinates(v.position)
            if i in m.edge_set and not lane.on_lane(v.position, s_v, lat_v, margin=1):
                continue
            if s <= s_v and (s_front is None or s_v <= s_front):
                s_front = s_v
                v_front = v
            if s_v < s and (s_rear is None or s_v > s_rear):
                s_rear = s_v
                v_rear = v
        return v_front, v_rear

    def _neighbours_filtered(self, vehicle, lane_index):
        """Stock search (connected lanes included) over the entities possibly on one of its lanes."""
        lanes = [self.network.get_lane(lane_index)]
        if getattr(self, "neighbour_vehicles_connected_lanes", False):
            _from, _to, _id = lane_index
            for next_lanes in self.network.graph.get(_to, {}).values():
                if next_lanes:
                    lanes.append(next_lanes[_id] if _id < len(next_lanes) else next_lanes[0])
            for to_dict in self.network.graph.values():
                prev_lanes = to_dict.get(_from)
                if prev_lanes:
                    lanes.append(prev_lanes[_id] if _id < len(prev_lanes) else prev_lanes[0])
        entities, points, _ = self._entities()
        keep = np.zeros(len(entities), dtype=bool)
        for lane in lanes:
            masks = _lane_masks(lane, points)
            if masks is None:
                return Road.neighbour_vehicles(self, vehicle, lane_index)
            keep |= masks[0]
        kept = [entities[i] for i in np.flatnonzero(keep)]
        saved = self.vehicles, self.objects
        try:  # the stock method iterates self.vehicles + self.objects: hand it the survivors
            self.vehicles, self.objects = kept, []
            return Road.neighbour_vehicles(self, vehicle, lane_index)
        finally:
            self.vehicles, self.objects = saved

    def step(self, dt: float) -> None:
        for vehicle in self.vehicles:
            vehicle.step(dt)
        vehicles, objects = self.vehicles, self.objects
        n = len(vehicles)
        if n == 0:
            return
        others = vehicles + objects
        points = np.array([o.position for o in others], dtype=np.float64).reshape(-1, 2)
        half_diag = np.array([o.diagonal for o in others], dtype=np.float64) / 2
        checks = np.array([o.check_collisions for o in others], dtype=bool)
        collidable = np.array([o.collidable for o in others], dtype=bool)
        speed = np.array([v.speed for v in vehicles], dtype=np.float64)
        # Stock pre-check: no collision if |p_j - p_i| > (diag_i + diag_j) / 2 + speed_i * dt.
        gap = np.hypot(points[None, :, 0] - points[:n, None, 0], points[None, :, 1] - points[:n, None, 1])
        reach = half_diag[:n, None] + half_diag[None, :] + (speed * dt)[:, None] + _TOL
        pairs = (gap <= reach) & (checks[:n, None] | checks[None, :])
        pairs &= collidable[:n, None] & collidable[None, :]
        pairs[:, :n] &= np.triu(np.ones((n, n), dtype=bool), k=1)  # vehicle pairs once, i < j
        ii, jj = np.nonzero(pairs)  # row-major: the stock visiting order
        if len(ii):
            keep = _may_collide([others[i] for i in ii], [others[j] for j in jj], dt)
            for i, j in zip(ii[keep], jj[keep]):
                vehicles[i].handle_collisions(others[j], dt)


def _is_plain_box(o) -> bool:
    """Collides as RoadObject does: a LENGTH x WIDTH box at position/heading moving at velocity."""
    cls = type(o)
    return (cls._is_colliding is RoadObject._is_colliding and cls.polygon is RoadObject.polygon
            and cls.velocity in _STOCK_VELOCITY)


def _may_collide(a_objs: list, b_objs: list, dt: float) -> np.ndarray:
    """For each pair (a, b), False if the stock separating-axis test (utils.are_polygons_
    intersecting on a's and b's edge normals) surely finds a's box, and a's box swept by the
    relative displacement, apart from b's box: then a.handle_collisions(b) changes nothing.
    Computed with rectangle projections instead of polygon corners (equal up to rounding)."""
    def boxes(objs):
        heading = np.array([o.heading for o in objs], dtype=np.float64)
        half = np.array([(o.LENGTH / 2, o.WIDTH / 2) for o in objs], dtype=np.float64)
        speed = np.array([o.speed for o in objs], dtype=np.float64)
        centre = np.array([o.position for o in objs], dtype=np.float64)
        u = np.stack([np.cos(heading), np.sin(heading)], axis=1)
        v = np.stack([-u[:, 1], u[:, 0]], axis=1)
        return centre, half, u, v, speed[:, None] * u * dt

    ca, ha, ua, va, da = boxes(a_objs)
    cb, hb, ub, vb, db = boxes(b_objs)
    d, rel = cb - ca, da - db
    separated = np.zeros(len(a_objs), dtype=bool)
    for n in (ua, va, ub, vb):
        def extent(half, u, v):
            return (half[:, 0] * np.abs(np.sum(u * n, axis=1))
                    + half[:, 1] * np.abs(np.sum(v * n, axis=1)))
        dn = np.sum(d * n, axis=1)
        sweep = np.maximum(np.sign(dn) * np.sum(rel * n, axis=1), 0.0)
        separated |= np.abs(dn) - extent(ha, ua, va) - extent(hb, ub, vb) - sweep > _SAT_TOL
    plain = np.array([_is_plain_box(a) and _is_plain_box(b) for a, b in zip(a_objs, b_objs)], dtype=bool)
    return ~(separated & plain)


class FastRegulatedRoadMixin(RegulatedRoad):
    """`enforce_road_rules` with each vehicle's constant-speed prediction computed once."""

    def enforce_road_rules(self) -> None:
        for v in self.vehicles:
            if getattr(v, "is_yielding", False):
                if v.yield_timer >= self.YIELD_DURATION * self.REGULATION_FREQUENCY:
                    v.target_speed = v.lane.speed_limit
                    delattr(v, "color")
                    v.is_yielding = False
                else:
                    v.yield_timer += 1
        vehicles = self.vehicles
        times = np.arange(0.25, 3, 0.25)  # the stock is_conflict_possible horizon and step
        predictions = [v.predict_trajectory_constant_speed(times) for v in vehicles]
        near = _may_conflict(vehicles, predictions)
        for i in range(len(vehicles) - 1):
            for j in range(i + 1, len(vehicles)):
                if near[i, j] and _conflict_possible(vehicles[i], vehicles[j], predictions[i], predictions[j]):
                    yielding = self.respect_priorities(vehicles[i], vehicles[j])
                    if (yielding is not None and isinstance(yielding, ControlledVehicle)
                            and not isinstance(yielding, MDPVehicle)):
                        yielding.color = self.YIELDING_COLOR
                        yielding.target_speed = 0
                        yielding.is_yielding = True
                        yielding.yield_timer = 0


def _may_conflict(vehicles, predictions) -> np.ndarray:
    """near[i, j]: whether the stock pair check can find a conflict between vehicles i and j.

    The stock check skips every predicted time at which the two are more than v_i.LENGTH apart
    (its spherical pre-check), as most pairs are at every time: one array computation rules those
    pairs out, within _TOL of the stock norm, and the others go through the stock code."""
    n = len(vehicles)
    try:
        points = np.array([prediction[0] for prediction in predictions], dtype=np.float64)
    except ValueError:  # predictions of different lengths: every pair the stock way
        points = None
    if points is None or points.ndim != 3 or points.shape[2:] != (2,) \
            or any(len(prediction[1]) != points.shape[1] for prediction in predictions):
        return np.ones((n, n), dtype=bool)
    delta = points[None, :, :, :] - points[:, None, :, :]  # [i, j]: position_2 - position_1
    distance = np.sqrt(delta[..., 0] ** 2 + delta[..., 1] ** 2)
    lengths = np.array([v.LENGTH for v in vehicles], dtype=np.float64)
    # NaN stays near: the stock pre-check does not skip it
    return ~(distance > lengths[:, None, None] + _TOL).all(axis=2)


def _conflict_possible(v1, v2, prediction_1, prediction_2) -> bool:
    """RegulatedRoad.is_conflict_possible on precomputed predictions."""
    positions_1, headings_1 = prediction_1
    positions_2, headings_2 = prediction_2
    for position_1, heading_1, position_2, heading_2 in zip(positions_1, headings_1, positions_2, headings_2):
        if np.linalg.norm(position_2 - position_1) > v1.LENGTH:
            continue
        if utils.rotated_rectangles_intersect(
            (position_1, 1.5 * v1.LENGTH, 0.9 * v1.WIDTH, heading_1),
            (position_2, 1.5 * v2.LENGTH, 0.9 * v2.WIDTH, heading_2),
        ):
            return True
    return False


class FastRoadNetwork(RoadNetwork):
    """`get_closest_lane_index` evaluating the stock distance only for lanes that may be closest."""

    def add_lane(self, _from, _to, lane) -> None:
        super().add_lane(_from, _to, lane)
        self.__dict__.pop("_fast_lane_table", None)

    def get_closest_lane_index(self, position, heading=None):
        # Built once per network: lanes are added through add_lane (highway-env builds its networks
        # so), which drops it. Counting the lanes at every call instead cost a fifth of this call.
        table = self.__dict__.get("_fast_lane_table")
        if table is None:
            table = self._fast_lane_table = _lane_table(self.graph)
        indexes, lanes, shapes, headings = table
        bounds, tight = _distance_bounds(shapes, float(position[0]), float(position[1]))
        return indexes[_closest(position, heading, lanes, bounds, tight, headings)]


def _closest(position, heading, lanes, bounds, tight, headings) -> int:
    """The index k of the (first) minimum of lanes[k].distance_with_heading(position, heading),
    given bounds[k] <= the positional part of that distance (tight[k]: equal to it).

    The distance is the positional part plus a heading term in [0, pi]. Where the lowest bound is
    a lane's actual positional part, a lane whose bound exceeds it by more than pi cannot be
    closer, nor can one by more than _TOL if both are straight with the same heading (equal heading
    terms): when every other lane is ruled out so, no stock distance is needed at all."""
    first = min(range(len(bounds)), key=bounds.__getitem__)
    low, head = bounds[first], headings[first]
    if tight[first]:
        limit = low + math.pi + _TOL
        if not any(k != first and b <= limit and (head is None or headings[k] != head or b <= low + _TOL)
                   for k, b in enumerate(bounds)):
            return first
    best_d, best_k = lanes[first].distance_with_heading(position, heading), first
    for k, bound in enumerate(bounds):
        if k != first and bound <= best_d + _TOL:
            d = lanes[k].distance_with_heading(position, heading)
            if d < best_d or (d == best_d and k < best_k):
                best_d, best_k = d, k
    return best_k


def _lane_table(graph):
    indexes, lanes, shapes, headings = [], [], [], []
    for _from, to_dict in graph.items():
        for _to, lane_list in to_dict.items():
            for _id, lane in enumerate(lane_list):
                indexes.append((_from, _to, _id))
                lanes.append(lane)
                shapes.append(_lane_shape(lane))
                # straight lanes: the constant heading that local_angle subtracts
                headings.append(float(lane.heading) if _shape_class(lane) is StraightLane else None)
    return indexes, lanes, shapes, headings


def _lane_shape(lane):
    kind = _shape_class(lane)
    if kind is StraightLane or kind is SineLane:
        slack = abs(lane.amplitude) if kind is SineLane else 0.0
        return ("line", float(lane.start[0]), float(lane.start[1]), float(lane.direction[0]),
                float(lane.direction[1]), float(lane.length), slack)
    if kind is CircularLane:
        return ("arc", float(lane.center[0]), float(lane.center[1]), float(lane.start_phase),
                float(lane.direction), float(lane.radius), float(lane.length))
    return None


def _distance_bounds(shapes, x: float, y: float) -> tuple[list[float], list[bool]]:
    """Per lane shape (b, tight): b <= lane.distance(position) up to rounding; tight when b is that
    distance itself (straight and circular lanes) rather than a looser bound (sine lanes; 0 if
    unknown). One loop with the arithmetic inline: it runs per vehicle per substep."""
    bounds, tight = [], []
    for shape in shapes:
        kind = None if shape is None else shape[0]
        if kind == "line":
            _, sx, sy, dx, dy, length, slack = shape
            s = (x - sx) * dx + (y - sy) * dy
            lat = abs((y - sy) * dx - (x - sx) * dy) - slack
            past = s - length
            # `0.0 if a < 0.0 else a` is max(a, 0.0), NaN and -0.0 included, without the call
            bounds.append((0.0 if lat < 0.0 else lat) + (0.0 if past < 0.0 else past) + (0.0 if s > 0.0 else -s))
            tight.append(slack == 0.0)
        elif kind == "arc":
            _, cx, cy, phase, direction, radius, length = shape
            wrapped = (math.atan2(y - cy, x - cx) - phase + math.pi) % (2 * math.pi) - math.pi
            if abs(wrapped) > math.pi - 1e-9:  # the scalar code may wrap the other way
                bounds.append(0.0)
                tight.append(False)
                continue
            s = direction * wrapped * radius
            past = s - length
            bounds.append(abs(radius - math.hypot(x - cx, y - cy)) + (0.0 if past < 0.0 else past)
                          + (0.0 if s > 0.0 else -s))
            tight.append(True)
        else:
            bounds.append(0.0)
            tight.append(False)
    return bounds, tight


def install(road: Road) -> Road:
    """Switch `road` and its network to the fast code in place (their state is untouched); on a
    road already switched, switch the vehicles added since."""
    if isinstance(road, FastRoadMixin):
        for vehicle in road.vehicles:
            fasten_vehicle(vehicle)
        return road
    cls = type(road)
    mixins = (FastRegulatedRoadMixin, FastRoadMixin) if isinstance(road, RegulatedRoad) else (FastRoadMixin,)
    road.__class__ = derived_class(cls, mixins, f"Fast{cls.__name__}")
    if road.network is not None and not isinstance(road.network, FastRoadNetwork):
        network_cls = type(road.network)
        road.network.__class__ = derived_class(network_cls, (FastRoadNetwork,), f"Fast{network_cls.__name__}")
        for lane in road.network.lanes_list():
            fasten_lane(lane)
    for vehicle in road.vehicles:
        fasten_vehicle(vehicle)
    return road


def is_fast(road: Road) -> bool:
    return isinstance(road, FastRoadMixin)
