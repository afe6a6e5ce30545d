"""The privileged expert: reads the simulator's true state and returns [steer, accel] in [-1, 1].

Perception is geometric and works on any road network: the expert samples the centre line of the
lane it wants to follow (its target lane, continued along its route into the next lanes) and
projects every other vehicle and obstacle onto that path. A vehicle whose footprint overlaps the
path, or is predicted to within `cut_in_horizon` (a lane change into our lane), or that drives on
a lane which ends by merging into our path (an on-ramp), is a leader. This sees across lane-segment
boundaries, which highway-env's own `Road.neighbour_vehicles` does not (merge-v0's ramp vehicle is
invisible to it until it is alongside).

Longitudinal: IDM towards the nearest leader, blended with the constant-acceleration heuristic
(Treiber's ACC model) so that a slower car appearing far ahead does not cause needless full braking,
with a desired speed capped by a curvature speed limit looked up along the path. Where crossing
traffic exists (`yield_to_crossing`), the other vehicles are predicted along their own routes, and a
point of our path is in conflict if one of them will be there within `conflict_window` of when we
would be. Before a junction (a node where roads merge or split) the expert accepts a gap only if its
whole way through the junction is free, else it waits at the junction's entry; inside a junction it
never waits at a stop line (it would block the junction): it stops only for a vehicle that will reach
a conflict point first, and otherwise hurries through. Path junctions that highway-env leaves
disconnected (the roundabout's entries and exits end metres from the ring, at an angle) are eased
over a blend, so that neither the curvature speed limit nor the steering sees a kink.
Lateral: MOBIL lane changes (where the scenario allows them, never into a forbidden lane such as an
on-ramp, aborted if the target lane stops being safe) and a path-tracking controller that commands a
path curvature, converts it with the kinematic bicycle model the simulator integrates, and limits
the lateral speed so that lane changes are smooth. Below `min_control_speed` it corrects errors over
a distance rather than a time, so that steering does not go to full lock at walking pace.

What a query may change: only the expert's own plan (target lane, route, time of the last lane
change) and caches of the static road geometry, which live here and never on the simulator's
vehicles. The simulation, its vehicles and its random generator are only read, so querying the
expert any number of times leaves the trajectory unchanged (tests/test_expert.py proves it). The
plan follows whatever state the ego is in, so a student driving (DAgger) moves the expert's plan
with it, as a human co-driver's would.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from highway_env.road.lane import CircularLane, SineLane, StraightLane

from sim.actions import ActionSpec
from sim.camera import CameraConfig, visible_fraction
from sim.signals import branching_ahead, next_road, turn_signal, way_signals
from sim.signals import wrap_angle as _wrap


PERCEPTIONS = ("camera", "privileged")
RECENTRE_DISTANCE = 10.0  # m a predicted vehicle drives before it is back on its lane centre


@dataclass
class ExpertConfig:
    target_speed: float = 30.0  # m/s, before curvature limits; lane speed limits are not enforced
    time_headway: float = 1.5  # IDM T, s
    min_gap: float = 10.0  # IDM s0 measured centre to centre, m (highway-env: 5 m + a car length)
    comfort_accel: float = 3.0  # IDM a, m/s^2
    comfort_decel: float = 5.0  # IDM b, m/s^2
    delta: float = 4.0
    lane_changes: bool = True
    politeness: float = 0.0
    lane_change_min_gain: float = 0.2  # m/s^2
    lane_change_max_braking: float = 2.0  # m/s^2 imposed on the new follower, at most
    lane_change_delay: float = 1.0  # s between lane-change decisions
    lane_change_speed: float = 2.5  # m/s, the largest lateral speed the lateral controller asks for
    cut_in_horizon: float = 1.0  # s: a neighbour predicted to enter our lane within it is a leader
    merge_min_speed: float = 5.0  # m/s: a slower vehicle on an on-ramp is passed, not followed
    max_lateral_accel: float = 3.0  # m/s^2, sets the curve speed limit
    curve_decel: float = 2.0  # m/s^2, deceleration planned when approaching a curve
    tau_heading: float = 0.3  # s
    tau_lateral: float = 0.6  # s
    min_control_speed: float = 5.0  # m/s; below it the steering gains are scheduled on distance
    destination: str | None = None  # road-network node the route leads to, if any
    yield_to_crossing: bool = False  # predict crossing traffic and stop before conflicts
    conflict_horizon: float = 5.0  # s of prediction of the other vehicles
    conflict_radius: float = 3.5  # m: a predicted position this close to our path occupies it
    conflict_window: float = 1.0  # s: occupied this close to when we would be there is a conflict
    conflict_distance: float = 40.0  # m of our own path checked for conflicts
    stop_decel: float = 2.5  # m/s^2 planned when stopping before a conflict
    yielding_stops: bool = True  # predict a vehicle that is yielding as braking to a stop
    hurry_factor: float = 1.3  # desired-speed factor while clearing a conflict inside a junction
    # camera: perceive only road users inside the camera's footprint and predict them from what a
    # sequence of frames shows (position, heading, speed, lane); privileged: the true state of every
    # road user, their routes, yielding flags and IDM parameters (an upper bound no camera reaches).
    perception: str = "camera"
    min_visible: float = 0.5  # camera: share of a road user's footprint in the frame for it to count

    def __post_init__(self):
        for f in fields(self):  # the types YAML and key=value give are not checked by a dataclass
            v = getattr(self, f.name)
            if f.type == "bool" and not isinstance(v, bool):
                raise ValueError(f"expert.{f.name} must be true or false, got {v!r}")
            if f.type == "float" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"expert.{f.name} must be a number, got {v!r}")
            if f.type == "str | None" and v is not None and not isinstance(v, str):
                raise ValueError(f"expert.{f.name} must be a name or null, got {v!r}")
        low = [k for k in _POSITIVE if getattr(self, k) <= 0] + [k for k in _NON_NEGATIVE if getattr(self, k) < 0]
        if low:
            k = low[0]
            raise ValueError(f"expert.{k} must be {'> 0' if k in _POSITIVE else '>= 0'} (a speed, time, distance "
                             f"or acceleration), got {getattr(self, k)}")
        if self.perception not in PERCEPTIONS:
            raise ValueError(f"unknown expert.perception {self.perception!r}: use one of {', '.join(PERCEPTIONS)}")
        if not 0.0 < self.min_visible <= 1.0:
            raise ValueError("expert.min_visible must be in (0, 1]: the share of a road user's footprint "
                             "that must be in the frame")

    @classmethod
    def from_dict(cls, d: dict | None) -> ExpertConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d or {}) - known
        if unknown:
            raise ValueError(f"unknown expert config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**(d or {}))

    def as_dict(self) -> dict:
        return asdict(self)


# ExpertConfig fields that must be > 0 (they divide, or a zero stops the expert for good), and >= 0
_POSITIVE = ("target_speed", "comfort_accel", "comfort_decel", "delta", "lane_change_speed", "max_lateral_accel",
             "curve_decel", "tau_heading", "tau_lateral", "conflict_horizon", "conflict_radius", "conflict_window",
             "conflict_distance", "stop_decel", "hurry_factor")
_NON_NEGATIVE = ("time_headway", "min_gap", "politeness", "lane_change_min_gain", "lane_change_max_braking",
                 "lane_change_delay", "cut_in_horizon", "merge_min_speed", "min_control_speed")


def _lane_samples(lane, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre-line positions (n, 2) and headings (n,) of `lane` at longitudinal coordinates `s`.

    Vectorised for highway-env's straight, sine and circular lanes (extrapolated past their ends),
    point by point for any other lane type.
    """
    s = np.asarray(s, dtype=np.float64)
    if isinstance(lane, CircularLane):
        phi = lane.direction * s / lane.radius + lane.start_phase
        xy = lane.center + lane.radius * np.stack([np.cos(phi), np.sin(phi)], axis=1)
        return xy, phi + np.pi / 2 * lane.direction
    if isinstance(lane, SineLane):
        arg = lane.pulsation * s + lane.phase
        lat = lane.amplitude * np.sin(arg)
        xy = lane.start + s[:, None] * lane.direction + lat[:, None] * lane.direction_lateral
        return xy, lane.heading + np.arctan(lane.amplitude * lane.pulsation * np.cos(arg))
    if isinstance(lane, StraightLane):
        return lane.start + s[:, None] * lane.direction, np.full(len(s), float(lane.heading))
    xy = np.array([lane.position(float(x), 0.0) for x in s]).reshape(-1, 2)
    return xy, np.array([lane.heading_at(float(x)) for x in s])


@dataclass
class _Path:
    """A sampled centre line, parametrised by arc length relative to where the ego projects on it."""

    s: np.ndarray  # (M,) m, increasing, uniform step
    xy: np.ndarray  # (M, 2)
    heading: np.ndarray  # (M,) unwrapped
    lanes: list  # lane indices followed ahead, in order
    width: float
    starts: list  # arc length at which each of `lanes` begins (the first one's is <= 0)

    def at(self, s: float) -> tuple[float, float]:
        """(heading, curvature) at arc length s."""
        k = int(np.clip(np.searchsorted(self.s, s), 1, len(self.s) - 1))
        step = self.s[k] - self.s[k - 1]
        frac = float(np.clip((s - self.s[k - 1]) / step, 0.0, 1.0))
        heading = self.heading[k - 1] + frac * (self.heading[k] - self.heading[k - 1])
        return float(heading), float((self.heading[k] - self.heading[k - 1]) / step)

    def project(self, points: np.ndarray):
        """Arc length, lateral offset, nearest sample and whether each point lies beside the path."""
        d2 = ((points[:, None, :] - self.xy[None, :, :]) ** 2).sum(-1)
        k = d2.argmin(axis=1)
        rel = points - self.xy[k]
        c, s = np.cos(self.heading[k]), np.sin(self.heading[k])
        lon = self.s[k] + rel[:, 0] * c + rel[:, 1] * s
        lat = -rel[:, 0] * s + rel[:, 1] * c
        step = self.s[1] - self.s[0]
        inside = (lon >= self.s[0] - step) & (lon <= self.s[-1] + step)
        return lon, lat, k, inside


class _Scene:
    """The other road users at one instant, as arrays (read once per query). With a camera, only
    those of which at least `min_visible` of the footprint lies inside its frame."""

    def __init__(self, road, ego, camera: CameraConfig | None = None, min_visible: float = 0.5):
        vehicles = [v for v in road.vehicles if v is not ego]
        objects = [o for o in road.objects if getattr(o, "collidable", True)]
        if camera is not None:
            seen = visible_fraction(camera, ego.position, ego.heading, vehicles + objects) >= min_visible
            vehicles = [v for v, keep in zip(vehicles, seen) if keep]
            objects = [o for o, keep in zip(objects, seen[len(seen) - len(objects):]) if keep]
        objs = vehicles
        n_vehicles = len(objs)
        objs += objects
        self.objs = objs
        n = len(objs)
        self.is_vehicle = np.arange(n) < n_vehicles
        self.P = np.array([o.position for o in objs], dtype=np.float64).reshape(n, 2)
        self.H = np.array([o.heading for o in objs], dtype=np.float64)
        self.V = np.array([getattr(o, "speed", 0.0) for o in objs], dtype=np.float64)
        self.W = np.array([getattr(o, "WIDTH", 2.0) for o in objs], dtype=np.float64)
        self.L = np.array([getattr(o, "LENGTH", 5.0) for o in objs], dtype=np.float64)
        self.lane = [getattr(o, "lane_index", None) for o in objs]


@dataclass
class _Neighbours:
    front_gap: float | None = None  # centre to centre along the path, m
    front_speed: float = 0.0  # along the path, m/s
    rear_gap: float | None = None  # positive, m
    rear: object = None


class Expert:
    """Call `reset(core_env)` at the start of an episode, then `act(core_env)` at any state."""

    def __init__(self, config: ExpertConfig, action_spec: ActionSpec, camera: CameraConfig | None = None):
        self.config = config
        self.spec = action_spec
        # camera perception sees what this camera (default: the default camera) shows
        self.camera = (camera or CameraConfig()) if config.perception == "camera" else None
        self.target_lane = None
        self.route: list | None = None  # road segments (from, to) still to drive, current first
        self.last_change_time = -np.inf
        self.saturated = False  # whether the last command hit the action range
        # the last query's lane plan: -1 towards the left lane, +1 towards the right, 0 keep (a change
        # counts until the ego is in the target lane): the discrete decision a student may classify
        self.plan_lane = 0
        self.saturation = (False, False)  # (steer, accel) of the last command
        self.last_physical = (0.0, 0.0)  # (steering rad, acceleration m/s^2) before clipping
        self._net = None  # the road network the caches below describe
        self._successors: dict = {}
        self._merging: dict = {}
        self._blends: dict = {}
        self._junctions: set | None = None

    # -- road geometry (static per episode; cached) -------------------------------------------
    def _sync_network(self, net) -> None:
        if net is not self._net:
            self._net, self._successors, self._merging, self._blends = net, {}, {}, {}
            self._junctions = None

    def _successor(self, net, lane_index, route) -> tuple:
        """The lane after `lane_index`, following `route` (a list of segments) where it says."""
        seg = next_road(route, lane_index[:2])
        key = (lane_index, seg)
        if key not in self._successors:
            lane = net.get_lane(lane_index)
            end = lane.position(lane.length, 0.0)
            nxt = net.next_lane(lane_index, route=[(seg[0], seg[1], None)] if seg else None,
                                position=end)
            if nxt != lane_index:
                _, h_end = _lane_samples(lane, np.array([lane.length]))
                _, h_next = _lane_samples(net.get_lane(nxt), np.array([0.0]))
                if abs(_wrap(h_next[0] - h_end[0])) > np.pi / 2:
                    nxt = lane_index  # a U-turn (an exit's end meets the entry beside it): a dead end
            self._successors[key] = nxt
        return self._successors[key]

    def _merging_lanes(self, net, lanes) -> set:
        """Lanes that run beside `lanes` and end by flowing into them (an on-ramp's acceleration
        lane), and the lanes leading into those (the ramp itself)."""
        key = tuple(lanes)
        if key not in self._merging:
            on_path = set(lanes)
            for _ in range(2):  # a ramp that joins just past the sampled stretch still counts
                nxt = self._successor(net, lanes[-1], None)
                if nxt in on_path:
                    break
                lanes = [*lanes, nxt]
                on_path.add(nxt)
            beside = set()
            for idx in lanes:
                for i in range(len(net.graph[idx[0]][idx[1]])):
                    other = (idx[0], idx[1], i)
                    if other not in on_path and self._successor(net, other, None) in on_path:
                        beside.add(other)
            feeding = set()
            if beside:
                for _from, to_dict in net.graph.items():
                    for _to, group in to_dict.items():
                        for i in range(len(group)):
                            idx = (_from, _to, i)
                            if idx not in on_path and self._successor(net, idx, None) in beside:
                                feeding.add(idx)
            self._merging[key] = beside | feeding
        return self._merging[key]

    def _blend(self, net, a_index, b_index) -> float:
        """Half-width (m) of the stretch over which the path eases from lane a into lane b where they
        do not join smoothly (highway-env's roundabout entries and exits end metres away from the
        ring, at an angle), else 0."""
        key = (a_index, b_index)
        if key not in self._blends:
            a, b = net.get_lane(a_index), net.get_lane(b_index)
            end_a, h_a = _lane_samples(a, np.array([a.length]))
            start_b, h_b = _lane_samples(b, np.array([0.0]))
            gap = float(np.linalg.norm(end_a[0] - start_b[0]))
            jump = abs(float(_wrap(h_b[0] - h_a[0])))
            self._blends[key] = 4.0 + gap + 4.0 * jump if gap > 0.3 or jump > 0.05 else 0.0
        return self._blends[key]

    def _path(self, net, lane_index, route, position, back: float, ahead: float,
              step: float = 1.0) -> _Path:
        """The centre line of `lane_index` and the lanes after it, around `position`."""
        lane = net.get_lane(lane_index)
        s0 = lane.local_coordinates(position)[0]
        chain = [(lane_index, lane, -s0)]  # lane, arc length of its start relative to the ego
        end = lane.length - s0
        while end < ahead + 20.0 and len(chain) < 12:
            nxt = self._successor(net, chain[-1][0], route)
            if nxt == chain[-1][0]:
                break
            nlane = net.get_lane(nxt)
            chain.append((nxt, nlane, end))
            end += nlane.length
        grid = np.arange(-back, ahead + 1e-9, step)
        xy = np.empty((len(grid), 2))
        heading = np.empty(len(grid))
        for i, (_, ln, start) in enumerate(chain):
            lo = -np.inf if i == 0 else start
            hi = chain[i + 1][2] if i + 1 < len(chain) else np.inf
            sel = (grid >= lo) & (grid < hi)
            if sel.any():
                xy[sel], heading[sel] = _lane_samples(ln, grid[sel] - start)
        blended = np.zeros(len(grid), dtype=bool)
        for (a_idx, a, a_start), (b_idx, b, junction) in itertools.pairwise(chain):
            half = self._blend(net, a_idx, b_idx)
            win = (grid > junction - half) & (grid < junction + half)
            if not half or not win.any():
                continue
            g = grid[win]
            pa, _ = _lane_samples(a, np.minimum(g, junction) - a_start)  # then a's end tangent
            end_a, h_a = _lane_samples(a, np.array([a.length]))
            pa = np.where((g > junction)[:, None],
                          end_a + (g - junction)[:, None] * [np.cos(h_a[0]), np.sin(h_a[0])], pa)
            pb, _ = _lane_samples(b, np.maximum(g - junction, 0.0))  # b's start tangent, then b
            start_b, h_b = _lane_samples(b, np.array([0.0]))
            pb = np.where((g < junction)[:, None],
                          start_b + (g - junction)[:, None] * [np.cos(h_b[0]), np.sin(h_b[0])], pb)
            x = (g - (junction - half)) / (2 * half)
            w = (3 * x ** 2 - 2 * x ** 3)[:, None]
            xy[win] = (1 - w) * pa + w * pb
            blended |= win
        if blended.any():
            d = np.gradient(xy, axis=0)
            heading[blended] = np.arctan2(d[blended, 1], d[blended, 0])
        return _Path(grid, xy, np.unwrap(heading), [c[0] for c in chain], float(lane.width_at(s0)),
                     [c[2] for c in chain])

    # -- plan ------------------------------------------------------------------------------
    def reset(self, core) -> None:
        env = core.unwrapped
        ego = env.vehicle
        self._sync_network(env.road.network)
        self.target_lane = ego.lane_index
        self.last_change_time = -np.inf
        self._plan_route(env.road.network, ego.lane_index)

    def _plan_route(self, net, lane_index) -> None:
        self.route = None
        dest = self.config.destination
        if dest and dest not in net.graph and not any(dest in ends for ends in net.graph.values()):
            nodes = sorted(set(net.graph) | {n for ends in net.graph.values() for n in ends})
            raise ValueError(f"expert.destination {dest!r} is not a node of this road network; its nodes: "
                             f"{', '.join(nodes)}")
        if dest and lane_index:
            nodes = net.shortest_path(lane_index[1], dest)
            if nodes:
                self.route = [lane_index[:2]] + list(itertools.pairwise(nodes))

    def _update_target(self, net, ego) -> None:
        if self.target_lane is None:
            self.target_lane = ego.lane_index
        for _ in range(4):
            lane = net.get_lane(self.target_lane)
            nxt = self._successor(net, self.target_lane, self.route)
            if nxt == self.target_lane:
                break
            s = lane.local_coordinates(ego.position)[0]
            if s < lane.length - ego.LENGTH / 2:
                break  # move on at the lane's end ...
            half = self._blend(net, self.target_lane, nxt)
            if half and s < lane.length + half and \
                    net.get_lane(nxt).local_coordinates(ego.position)[0] < half:
                break  # ... or, where the lanes do not join, past the stretch that eases between
            if self.route and self.route[0] == self.target_lane[:2] and len(self.route) > 1:
                self.route = self.route[1:]
            self.target_lane = nxt
        lane = net.get_lane(self.target_lane)
        s, lat = lane.local_coordinates(ego.position)
        nxt = self._successor(net, self.target_lane, self.route)
        overshoot = ego.LENGTH + (self._blend(net, self.target_lane, nxt) if nxt != self.target_lane else 0.0)
        lost = (abs(lat) > 1.5 * lane.width_at(s) + (overshoot if s > lane.length else 0.0)
                or s < -ego.LENGTH or s > lane.length + overshoot)
        if lost and ego.lane_index is not None:  # any state: re-seat the plan on the nearest lane
            self.target_lane = ego.lane_index
            self._plan_route(net, ego.lane_index)

    # -- perception --------------------------------------------------------------------------
    def _neighbours(self, net, scene: _Scene, path: _Path, ego) -> _Neighbours:
        out = _Neighbours()
        if not len(scene.objs):
            return out
        c = self.config
        lon, lat, k, inside = path.project(scene.P)
        dh = _wrap(scene.H - path.heading[k])
        v_lon = scene.V * np.cos(dh)
        v_lat = scene.V * np.sin(dh)
        # lateral half-extent of each footprint across the path (a car turned across it is wider)
        half_other = 0.5 * (scene.W * np.abs(np.cos(dh)) + scene.L * np.abs(np.sin(dh)))
        overlap = 0.5 * ego.WIDTH + half_other + 0.3
        here = inside & (np.abs(lat) < overlap)
        # a neighbour in an adjacent lane moving into ours
        lat_pred = lat + v_lat * c.cut_in_horizon
        lat_min = np.where(lat * lat_pred <= 0, 0.0, np.minimum(np.abs(lat), np.abs(lat_pred)))
        cutting_in = (inside & (np.abs(lat) < 1.6 * path.width) & (np.abs(dh) < np.pi / 4)
                      & (lat_min < overlap))
        # a moving vehicle on a lane that ends by merging into ours: it has to come in, and may do so
        # without seeing us (highway-env's vehicles do not look across lane segments)
        merging = self._merging_lanes(net, path.lanes)
        if merging:
            on_merge = np.array([ln in merging for ln in scene.lane]) & scene.is_vehicle
            cutting_in |= inside & on_merge & (np.abs(lat) < 3 * path.width) & (scene.V > c.merge_min_speed)
        ahead = (here | cutting_in) & (lon > 0)
        if ahead.any():
            i = int(np.flatnonzero(ahead)[np.argmin(lon[ahead])])
            out.front_gap, out.front_speed = float(lon[i]), float(v_lon[i])
        behind = here & (lon <= 0)
        if behind.any():
            i = int(np.flatnonzero(behind)[np.argmax(lon[behind])])
            out.rear_gap, out.rear = float(-lon[i]), scene.objs[i]
        return out

    # -- longitudinal ------------------------------------------------------------------------
    def _idm(self, speed: float, target: float, gap: float | None, front_speed: float) -> float:
        c = self.config
        free = c.comfort_accel * (1 - (max(speed, 0.0) / max(target, 1e-3)) ** c.delta)
        acc = max(free, -c.comfort_decel)  # slowing for a lower desired speed is comfortable
        if gap is not None:
            dv = speed - front_speed
            desired = c.min_gap + max(speed, 0.0) * c.time_headway \
                + speed * dv / (2 * np.sqrt(c.comfort_accel * c.comfort_decel))
            acc -= c.comfort_accel * (max(desired, 0.0) / max(gap, 1e-2)) ** 2
            # ACC model (Kesting, Treiber & Helbing 2010): where IDM brakes harder than the
            # kinematics require (a slower car appearing well ahead), blend towards the
            # constant-acceleration heuristic, which assumes the leader keeps its speed.
            cah = -max(dv, 0.0) ** 2 / (2 * max(gap - 0.5 * c.min_gap, 0.5))
            if acc < cah:
                acc = 0.01 * acc + 0.99 * (cah + c.comfort_decel * np.tanh((acc - cah) / c.comfort_decel))
        return acc

    def _stop_acc(self, speed: float, distance: float, dt: float) -> float:
        """Acceleration that stops at `distance` ahead: drive up at a speed from which a braking of
        `stop_decel` ends there, or brake harder where that is already too late."""
        c = self.config
        speed = max(speed, 0.0)
        if distance <= 0.5:
            return -speed / dt
        need = speed ** 2 / (2 * distance)
        if need >= c.stop_decel:
            return -1.1 * need
        v_des = np.sqrt(2 * c.stop_decel * (distance - 0.5))
        return min(c.comfort_accel, (v_des - speed) / 0.6)

    def _follow(self, n: _Neighbours, speed: float, target_speed: float) -> float:
        return self._idm(speed, target_speed, n.front_gap, n.front_speed)

    def _target_speed(self, path: _Path, speed: float, dt: float) -> float:
        c = self.config
        sel = path.s >= 0
        s = path.s[sel]
        kappa = np.abs(np.gradient(path.heading[sel], s))
        v_curve = np.sqrt(c.max_lateral_accel / np.maximum(kappa, 1e-6))
        allowed = np.sqrt(v_curve ** 2 + 2 * c.curve_decel * np.maximum(s - speed * dt, 0.0))
        return float(min(c.target_speed, allowed.min()))

    def _predict(self, net, obj, times: np.ndarray) -> list[np.ndarray]:
        """Possible positions (K, 2) of another vehicle at `times`, one array per way it may go.

        Privileged: along its route where it follows lanes (speeding up towards its target speed
        unless it is yielding), else straight ahead. Camera: only what frames show, so its current
        acceleration kept (`_observed_motion`) along the lane it is in (its position and heading
        tell which), the way its indicator shows at the next branching (sim/signals.py) and every
        way the road lets it go after that."""
        speed = max(float(getattr(obj, "speed", 0.0)), 0.0)
        lane_index = getattr(obj, "lane_index", None)
        if self.camera is not None:
            if lane_index is None or not hasattr(obj, "route"):
                return [self._straight(obj, speed, times)]
            profiles = self._observed_motion(net, obj, speed, lane_index, times)
            reach = max(float(d[-1]) for d in profiles) + 1.0
            routes = self._possible_routes(net, lane_index, obj.position, reach, signal=turn_signal(net, obj))
            paths = [self._path(net, lane_index, route, obj.position, 0.0, reach) for route in routes]
            return [self._along(path, dist, obj.position) for path in paths for dist in profiles]
        if lane_index is not None and hasattr(obj, "route"):
            target = float(getattr(obj, "target_speed", speed) or 0.0)
            # its own IDM parameters where it has them (privileged), else ours
            acc = float(getattr(obj, "COMFORT_ACC_MAX", self.config.comfort_accel))
            dec = abs(float(getattr(obj, "COMFORT_ACC_MIN", -self.config.comfort_decel)))
            if getattr(obj, "is_yielding", False) and self.config.yielding_stops:
                tt = np.minimum(times, speed / dec)
                dist = speed * tt - 0.5 * dec * tt ** 2
            elif getattr(obj, "is_yielding", False) or target <= speed:
                dist = speed * times
            else:
                tt = np.minimum(times, (target - speed) / acc)
                dist = speed * tt + 0.5 * acc * tt ** 2 + target * (times - tt)
            path = self._path(net, lane_index, [r[:2] for r in (obj.route or [])] or None,
                              obj.position, 0.0, float(dist[-1]) + 1.0)
            return [self._along(path, dist)]
        return [self._straight(obj, speed, times)]

    @staticmethod
    def _observed_motion(net, obj, speed: float, lane_index, times: np.ndarray) -> list[np.ndarray]:
        """Distances travelled at `times`, one profile per way it may move: keeping the acceleration
        consecutive frames show (the one it drove with over the last step), capped at the lane's
        speed limit (a sign on the map) or its current speed where that is higher. A braking car
        may stop (it yields) or go on (it braked for something else, or its wait ends): frames do
        not tell which, so it gets both a stop and its current speed (measured on intersection,
        50 seeds: 7 crashes with the stop alone, 5 with both, at the same driving score)."""
        acc = float((getattr(obj, "action", None) or {}).get("acceleration", 0.0))
        if acc < 0.0:
            tt = np.minimum(times, speed / -acc)
            return [speed * tt + 0.5 * acc * tt ** 2, speed * times]
        limit = getattr(net.get_lane(lane_index), "speed_limit", None) or speed
        v_max = max(speed, float(limit))
        tt = np.minimum(times, (v_max - speed) / acc) if acc > 0.0 else np.zeros_like(times)
        return [speed * times + 0.5 * acc * tt ** 2 + acc * tt * (times - tt)]

    @staticmethod
    def _along(path: _Path, dist: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Points `dist` metres along `path`; with the vehicle's `position`, shifted by its offset from
        the lane centre, fading out over `RECENTRE_DISTANCE` of travel. A car stopped beside its lane
        (pushed there in a crash, or waiting askew at an entry) stays where the camera sees it
        rather than on the lane centre, which may lie in our way (roundabout seed 1014: the expert
        waited behind such a car until the episode ended)."""
        pts = np.stack([np.interp(dist, path.s, path.xy[:, 0]), np.interp(dist, path.s, path.xy[:, 1])], axis=1)
        if position is None:
            return pts
        offset = np.asarray(position, dtype=float) - Expert._along(path, np.zeros(1))[0]
        return pts + offset[None, :] * np.clip(1.0 - dist / RECENTRE_DISTANCE, 0.0, 1.0)[:, None]

    @staticmethod
    def _straight(obj, speed: float, times: np.ndarray) -> np.ndarray:
        return obj.position + times[:, None] * speed * np.array([np.cos(obj.heading), np.sin(obj.heading)])

    def _possible_routes(self, net, lane_index, position, ahead: float, depth: int = 2,
                         signal: int | None = None) -> list:
        """Routes (lists of road segments) for every way out of the next `depth` branchings within
        `ahead` metres of `position` on `lane_index`; at a branching the vehicle's indicator covers
        (sim/signals.py), only the ways with the `signal` it shows."""
        lane = net.get_lane(lane_index)
        routes = []
        signalled = None if signal is None else branching_ahead(net, lane_index, position)
        frontier = [([lane_index[:2]], lane_index, lane.length - lane.local_coordinates(position)[0], 0)]
        while frontier:
            route, idx, end, branchings = frontier.pop()
            outs = self._ways_out(net, idx)
            if signalled is not None and idx == lane_index:
                ways = way_signals(net, signalled)
                outs = [o for o in outs if ways.get(o[1], signal) == signal] or outs
            if end >= ahead or not outs or (len(outs) > 1 and branchings >= depth):
                routes.append(route)
                continue
            for nxt in outs:
                frontier.append(([*route, nxt[:2]], nxt, end + net.get_lane(nxt).length,
                                 branchings + (len(outs) > 1)))
        return routes

    def _ways_out(self, net, lane_index) -> list:
        """The lane taken on each road leaving the end of `lane_index` (never a U-turn)."""
        _from, to, _ = lane_index
        outs = [self._successor(net, lane_index, [lane_index[:2], (to, nxt)]) for nxt in net.graph.get(to, {})]
        return [o for o in outs if o != lane_index]

    def _junction_nodes(self, net) -> set:
        """Nodes where roads merge or split (cached)."""
        if self._junctions is None:
            incoming: dict = {}
            for to_dict in net.graph.values():
                for _to in to_dict:
                    incoming[_to] = incoming.get(_to, 0) + 1
            self._junctions = {n for n in set(net.graph) | set(incoming)
                               if incoming.get(n, 0) > 1 or len(net.graph.get(n, {})) > 1}
        return self._junctions

    def _first_conflict(self, net, scene: _Scene, path: _Path, ego, d_max: float, t_ego):
        """Distance along our path to the first point that another vehicle will occupy within
        `conflict_window` of when we would be there (`t_ego(d)`), up to `d_max` ahead."""
        c = self.config
        if not len(scene.objs):
            return None
        sel = (path.s > 0) & (path.s <= d_max)
        d, pts = path.s[sel], path.xy[sel]
        if not len(d):
            return None
        t_d = t_ego(d)
        times = np.arange(0.0, c.conflict_horizon + 1e-9, 0.25)
        _lon, lat, k, inside = path.project(scene.P)
        dh = _wrap(scene.H - path.heading[k])
        in_lane = inside & (np.abs(lat) < 0.5 * path.width + 0.5) & (np.abs(dh) < np.pi / 4)
        reach = float(d[-1]) + c.conflict_horizon * 15.0
        near = np.linalg.norm(scene.P - ego.position, axis=1) < reach
        nearest = None
        for i in np.flatnonzero(near & ~in_lane):  # same lane, same way: car following handles it
            hit = np.zeros((len(times), len(d)), dtype=bool)
            for pred in self._predict(net, scene.objs[i], times):  # (K, 2) for each way it may go
                dist = ((pred[:, None, :] - pts[None, :, :]) ** 2).sum(-1)  # (K, M)
                hit |= (dist < c.conflict_radius ** 2) & (np.abs(times[:, None] - t_d[None, :]) < c.conflict_window)
            cols = np.flatnonzero(hit.any(axis=0))
            if len(cols) and (nearest is None or d[cols[0]] < nearest[0]):
                j = cols[0]
                nearest = (float(d[j]), float(times[np.argmax(hit[:, j])]), float(t_d[j]))
        return nearest  # (distance, when the other is there, when we would be there)

    def _crossing_acc(self, net, scene: _Scene, path: _Path, ego, target_speed: float, dt: float):
        """(Acceleration bound for crossing traffic, +inf where none; whether to hurry through.)

        Before a junction (a node where roads merge or split): gap acceptance. The expert waits at
        the junction's entry until its whole way through the junction is predicted free, assuming it
        would drive off now at `comfort_accel`. Inside a junction it never waits at a stop line (it
        would block the junction): it stops only for a vehicle predicted to reach a conflict point
        first, and hurries through where it would get there first (others here do not yield to it).
        """
        c = self.config
        speed = max(ego.speed, 0.0)
        junctions = self._junction_nodes(net)
        stop_line = region_end = None
        if path.lanes[0][0] not in junctions:  # not inside a junction yet
            for i, idx in enumerate(path.lanes):
                if idx[1] in junctions:
                    ends = [path.starts[j] + net.get_lane(l).length for j, l in enumerate(path.lanes)]
                    stop_line = ends[i]
                    later = [ends[j] for j in range(i + 1, len(path.lanes)) if path.lanes[j][1] in junctions]
                    region_end = (later[0] if later else stop_line + 30.0) + 2 * ego.LENGTH
                    break
        stop_at = None if stop_line is None else stop_line - 0.5 * ego.LENGTH - 1.0
        if stop_at is not None and stop_at > -0.5 and stop_at < c.conflict_distance                 and speed ** 2 / (2 * max(stop_at, 0.1)) <= self.spec.accel_range:
            a, v_go = c.comfort_accel, max(target_speed, 1.0)

            def t_go(d):  # driving off now: speed up at `a` to v_go, then keep it
                if speed >= v_go:
                    return d / max(speed, 0.1)
                d1 = (v_go ** 2 - speed ** 2) / (2 * a)
                return np.where(d <= d1, (np.sqrt(speed ** 2 + 2 * a * d) - speed) / a,
                                (v_go - speed) / a + (d - d1) / v_go)

            if self._first_conflict(net, scene, path, ego, region_end, t_go) is not None:
                return self._stop_acc(speed, stop_at, dt), False
            return np.inf, False
        conflict = self._first_conflict(net, scene, path, ego, c.conflict_distance,
                                        lambda d: d / max(speed, 3.0))
        if conflict is None:
            return np.inf, False
        gap, t_other, t_self = conflict
        stop = gap - 0.5 * ego.LENGTH - 1.0
        if t_other < t_self and stop > 0 and speed ** 2 / (2 * stop) <= self.spec.accel_range:
            return self._stop_acc(speed, stop, dt), False  # it gets there first: let it pass
        return np.inf, True  # we get there first, or can no longer stop: clear the way quickly

    # -- lateral -----------------------------------------------------------------------------
    def _steering(self, ego, path: _Path, dt: float) -> float:
        c = self.config
        lon, lat, _, _ = path.project(ego.position[None, :])
        lon, lat = float(lon[0]), float(lat[0])
        speed = max(ego.speed, 0.0)
        v_c = max(speed, c.min_control_speed)
        heading0, _ = path.at(lon)
        _, kappa_ff = path.at(lon + speed * dt / 2)
        half = ego.LENGTH / 2
        beta_ff = np.arcsin(np.clip(kappa_ff * half, -1, 1))
        max_offset = min(np.pi / 3, np.arcsin(min(1.0, c.lane_change_speed / max(speed, 1e-3))))
        heading_offset = np.clip(-np.arctan2(lat, v_c * c.tau_lateral), -max_offset, max_offset)
        heading_ref = heading0 + heading_offset - beta_ff  # velocity = heading + slip
        kappa = kappa_ff + _wrap(heading_ref - ego.heading) / (v_c * c.tau_heading)
        beta = np.arcsin(np.clip(kappa * half, -1, 1))
        return float(np.arctan(2 * np.tan(beta)))

    def _desired_speed(self, obj, speed: float) -> float:
        """Another vehicle's desired speed: its own (privileged), else the speed the frames show."""
        if self.camera is not None:
            return speed
        return float(getattr(obj, "target_speed", speed) or speed)

    def _lane_change_safe(self, n: _Neighbours, ego, target_speed: float, max_braking: float) -> bool:
        min_gap = ego.LENGTH + 2.0
        if n.front_gap is not None and n.front_gap < min_gap:
            return False
        if n.rear is not None:
            if n.rear_gap < min_gap:
                return False
            rear_speed = float(getattr(n.rear, "speed", 0.0))
            rear_target = self._desired_speed(n.rear, rear_speed)
            dv_ok = self._idm(rear_speed, rear_target, n.rear_gap, ego.speed)
            if dv_ok < -max_braking:
                return False
        return True

    def _mobil(self, net, scene, ego, target_speed, now, current: _Neighbours, ahead: float) -> None:
        c = self.config
        lane = net.get_lane(self.target_lane)
        if abs(lane.local_coordinates(ego.position)[1]) > 1.0:
            # a lane change is in progress: abort it if the target lane stopped being safe
            if ego.lane_index and ego.lane_index[:2] == self.target_lane[:2] \
                    and ego.lane_index != self.target_lane \
                    and not self._lane_change_safe(current, ego, target_speed, 2 * c.lane_change_max_braking):
                self.target_lane = ego.lane_index
                self.last_change_time = now
            return
        if now - self.last_change_time < c.lane_change_delay:
            return
        self_a = self._follow(current, ego.speed, target_speed)
        best, best_gain = None, c.lane_change_min_gain
        for side in net.side_lanes(self.target_lane):
            if not net.get_lane(side).is_reachable_from(ego.position):
                continue  # forbidden (an on-ramp) or too far
            path = self._path(net, side, self.route, ego.position, 40.0, ahead, 2.0)
            n = self._neighbours(net, scene, path, ego)
            if not self._lane_change_safe(n, ego, target_speed, c.lane_change_max_braking):
                continue
            gain = self._follow(n, ego.speed, target_speed) - self_a
            if c.politeness and n.rear is not None:
                rear_speed = float(n.rear.speed)
                rear_target = self._desired_speed(n.rear, rear_speed)
                before = self._idm(rear_speed, rear_target, None, 0.0)
                after = self._idm(rear_speed, rear_target, n.rear_gap, ego.speed)
                gain += c.politeness * (after - before)
            if gain > best_gain:
                best, best_gain = side, gain
        if best is not None:
            self.target_lane = best
            self.last_change_time = now

    # -- query -------------------------------------------------------------------------------
    def act_physical(self, core) -> tuple[float, float]:
        env = core.unwrapped
        road, ego = env.road, env.vehicle
        net = road.network
        self._sync_network(net)
        dt = 1.0 / env.config["policy_frequency"]
        c = self.config
        self._update_target(net, ego)
        speed = max(ego.speed, 0.0)
        ahead = max(60.0, 5.0 * speed)
        scene = _Scene(road, ego, self.camera, c.min_visible)
        path = self._path(net, self.target_lane, self.route, ego.position, 40.0, ahead)
        target_speed = self._target_speed(path, speed, dt)
        current = self._neighbours(net, scene, path, ego)
        if c.lane_changes:
            old = self.target_lane
            self._mobil(net, scene, ego, target_speed, float(env.time), current, ahead)
            if self.target_lane != old:
                path = self._path(net, self.target_lane, self.route, ego.position, 40.0, ahead)
                target_speed = self._target_speed(path, speed, dt)
                current = self._neighbours(net, scene, path, ego)
        acc = self._follow(current, ego.speed, target_speed)
        self.plan_lane = 0
        if ego.lane_index is not None and ego.lane_index != self.target_lane \
                and ego.lane_index[:2] == self.target_lane[:2]:
            self.plan_lane = int(np.sign(self.target_lane[2] - ego.lane_index[2]))
            # changing lanes: keep a safe distance in the lane we are leaving, too
            old_path = self._path(net, ego.lane_index, self.route, ego.position, 0.0, ahead, 2.0)
            acc = min(acc, self._follow(self._neighbours(net, scene, old_path, ego), ego.speed, target_speed))
        if c.yield_to_crossing:
            bound, hurry = self._crossing_acc(net, scene, path, ego, target_speed, dt)
            if hurry:
                acc = self._follow(current, ego.speed, c.hurry_factor * target_speed)
            acc = min(acc, bound)
        acc = max(acc, -ego.speed / dt)  # brake to a stop, never into reverse
        return self._steering(ego, path, dt), float(acc)

    def act(self, core) -> np.ndarray:
        """[steer, accel] in [-1, 1]; `saturated` tells whether the range clipped the command."""
        steering, acc = self.act_physical(core)
        self.last_physical = (steering, acc)
        a = self.spec.to_normalized(steering, acc)
        self.saturation = (bool(abs(a[0]) > 1.0), bool(abs(a[1]) > 1.0))
        self.saturated = any(self.saturation)
        return np.clip(a, -1.0, 1.0)
