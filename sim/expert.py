"""The privileged expert: reads the simulator's true state and returns [steer, accel] in [-1, 1].

Longitudinal: IDM towards the vehicle ahead (in the current and the target lane), capped by a
curvature speed limit looked up along the lanes ahead, plus, where crossing traffic exists, a
conflict check that treats a predicted path crossing as a stopped obstacle.
Lateral: MOBIL lane changes (where the scenario allows them) and a pursuit/heading controller that
inverts the kinematic bicycle model the simulator uses.

What a query may change: only the expert's own plan (target lane, route, time of the last lane
change), which lives here and never on the simulator's vehicles. The simulation, its vehicles and its
random generator are only read, so querying the expert any number of times leaves the trajectory
unchanged (tests/test_expert.py proves it). The plan follows whatever state the ego is in, so a
student driving (DAgger) moves the expert's plan with it, as a human co-driver's would.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from sim.actions import ActionSpec


@dataclass
class ExpertConfig:
    target_speed: float = 30.0  # m/s, before lane speed limits and curvature
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
    max_lateral_accel: float = 3.0  # m/s^2, sets the curve speed limit
    tau_heading: float = 0.3  # s
    tau_lateral: float = 0.6  # s
    destination: str | None = None  # road-network node the route leads to, if any
    yield_to_crossing: bool = False  # predict crossing traffic and stop before conflicts
    conflict_horizon: float = 3.0  # s
    conflict_radius: float = 3.5  # m

    @classmethod
    def from_dict(cls, d: dict | None) -> "ExpertConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d or {}) - known
        if unknown:
            raise ValueError(f"unknown expert config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**(d or {}))

    def as_dict(self) -> dict:
        return asdict(self)


def _wrap(angle: float) -> float:
    return (angle + np.pi) % (2 * np.pi) - np.pi


class Expert:
    """Call `reset(core_env)` at the start of an episode, then `act(core_env)` at any state."""

    def __init__(self, config: ExpertConfig, action_spec: ActionSpec):
        self.config = config
        self.spec = action_spec
        self.target_lane = None
        self.route: list | None = None
        self.last_change_time = -np.inf
        self.saturated = False  # whether the last command hit the action range

    # -- plan ------------------------------------------------------------------------------
    def reset(self, core) -> None:
        ego = core.unwrapped.vehicle
        self.target_lane = ego.lane_index
        self.last_change_time = -np.inf
        self._plan_route(core.unwrapped.road, ego.lane_index)

    def _plan_route(self, road, lane_index) -> None:
        self.route = None
        dest = self.config.destination
        if dest and lane_index:
            path = road.network.shortest_path(lane_index[1], dest)
            if path:
                self.route = [lane_index] + [(path[i], path[i + 1], None) for i in range(len(path) - 1)]

    def _next_lane(self, road, lane_index, route, position):
        return road.network.next_lane(lane_index, route=route, position=position)

    def _update_target(self, road, ego) -> None:
        net = road.network
        if self.target_lane is None:
            self.target_lane = ego.lane_index
        for _ in range(4):
            lane = net.get_lane(self.target_lane)
            if not lane.after_end(ego.position):
                break
            nxt = self._next_lane(road, self.target_lane, self.route, ego.position)
            if nxt == self.target_lane:
                break
            self.target_lane = nxt
        lane = net.get_lane(self.target_lane)
        s, lat = lane.local_coordinates(ego.position)
        lost = abs(lat) > 1.5 * lane.width_at(s) or s < -ego.LENGTH or s > lane.length + ego.LENGTH
        if lost and ego.lane_index is not None:  # any state: re-seat the plan on the nearest lane
            self.target_lane = ego.lane_index
            self._plan_route(road, ego.lane_index)

    # -- longitudinal ------------------------------------------------------------------------
    def _idm(self, speed: float, target: float, gap: float | None, front_speed: float) -> float:
        c = self.config
        acc = c.comfort_accel * (1 - (max(speed, 0.0) / max(target, 1e-3)) ** c.delta)
        if gap is not None:
            dv = speed - front_speed
            desired = c.min_gap + max(speed, 0.0) * c.time_headway + speed * dv / (
                2 * np.sqrt(c.comfort_accel * c.comfort_decel))
            acc -= c.comfort_accel * (desired / max(gap, 1e-2)) ** 2
        return acc

    def _ego_acc(self, road, ego, lane_index, target_speed, front=None) -> float:
        if front is None:
            front, _ = road.neighbour_vehicles(ego, lane_index)
        if front is None:
            return self._idm(ego.speed, target_speed, None, 0.0)
        gap = ego.lane_distance_to(front, road.network.get_lane(lane_index))
        return self._idm(ego.speed, target_speed, gap, front.speed * np.cos(front.heading - ego.heading))

    def _lookahead(self, road, ego, distances):
        """(position, heading) of the target lane's centre `distances` metres ahead of the ego."""
        net = road.network
        lane_index = self.target_lane
        route = list(self.route) if self.route else None
        lane = net.get_lane(lane_index)
        s0 = lane.local_coordinates(ego.position)[0]
        out = []
        offset = 0.0  # length of the lanes already passed
        for d in distances:
            s = s0 + d - offset
            for _ in range(4):
                if s <= lane.length:
                    break
                nxt = self._next_lane(road, lane_index, route, lane.position(lane.length, 0))
                if nxt == lane_index:
                    break
                offset += lane.length
                s -= lane.length
                lane_index, lane = nxt, net.get_lane(nxt)
                s0 = 0.0
            out.append((lane.position(s, 0.0), lane.heading_at(s)))
        return out

    def _target_speed(self, road, ego) -> float:
        c = self.config
        target = c.target_speed  # the scenario sets it; lane speed limits are not enforced
        ds = np.arange(0.0, 60.0, 2.0)
        pts = self._lookahead(road, ego, ds)
        heads = np.array([h for _, h in pts])
        kappa = np.abs(np.array([_wrap(b - a) for a, b in zip(heads[:-1], heads[1:])])) / 2.0
        for d, k in zip(ds[:-1], kappa):
            if k > 1e-4:
                v_curve = np.sqrt(c.max_lateral_accel / k)
                target = min(target, np.sqrt(v_curve ** 2 + 2 * c.comfort_decel * d))
        return target

    def _conflict_gap(self, road, ego) -> float | None:
        """Distance along the ego's path to the first predicted crossing with another vehicle."""
        c = self.config
        ds = np.arange(2.0, 40.0, 1.0)
        path = np.array([p for p, _ in self._lookahead(road, ego, ds)])
        t_ego = ds / max(ego.speed, 3.0)
        nearest = None
        for v in road.vehicles:
            if v is ego or np.linalg.norm(v.position - ego.position) > 60.0:
                continue
            vel = v.speed * np.array([np.cos(v.heading), np.sin(v.heading)])
            rel = v.position - ego.position
            ahead = rel @ np.array([np.cos(ego.heading), np.sin(ego.heading)])
            if abs(_wrap(v.heading - ego.heading)) < np.pi / 6 and ahead > 0:
                continue  # same direction and ahead: IDM's car following handles it
            in_time = t_ego <= c.conflict_horizon
            pred = v.position + vel * t_ego[:, None]
            hit = in_time & (np.linalg.norm(pred - path, axis=1) < c.conflict_radius)
            # also: the vehicle already sits on our path (stopped or crossing slowly)
            hit |= np.linalg.norm(path - v.position, axis=1) < c.conflict_radius * 0.8
            if hit.any():
                d = float(ds[np.argmax(hit)])
                nearest = d if nearest is None else min(nearest, d)
        return nearest

    # -- lateral -----------------------------------------------------------------------------
    def _steering(self, road, ego, lane_index) -> float:
        c = self.config
        lane = road.network.get_lane(lane_index)
        s, lat = lane.local_coordinates(ego.position)
        speed = max(ego.speed, 1.0)
        future_heading = lane.heading_at(s + speed * c.tau_heading / 2)
        lateral_speed_cmd = -lat / c.tau_lateral
        heading_cmd = np.arcsin(np.clip(lateral_speed_cmd / speed, -1, 1))
        heading_ref = future_heading + np.clip(heading_cmd, -np.pi / 4, np.pi / 4)
        heading_rate = _wrap(heading_ref - ego.heading) / c.tau_heading
        slip = np.arcsin(np.clip(ego.LENGTH / 2 / speed * heading_rate, -1, 1))
        return float(np.arctan(2 * np.tan(slip)))

    def _mobil(self, road, ego, target_speed, now) -> None:
        c = self.config
        if now - self.last_change_time < c.lane_change_delay:
            return
        net = road.network
        lane = net.get_lane(self.target_lane)
        if abs(lane.local_coordinates(ego.position)[1]) > 1.0:
            return  # a lane change is still in progress
        old_front, old_rear = road.neighbour_vehicles(ego, self.target_lane)
        self_a = self._ego_acc(road, ego, self.target_lane, target_speed, old_front)
        best, best_gain = None, c.lane_change_min_gain
        for side in net.side_lanes(self.target_lane):
            if self.route and not net.get_lane(side).is_reachable_from(ego.position):
                continue
            new_front, new_rear = road.neighbour_vehicles(ego, side)
            new_rear_pred = _follower_acc(new_rear, ego, self) if new_rear else 0.0
            if new_rear is not None and new_rear_pred < -c.lane_change_max_braking:
                continue
            self_pred = self._ego_acc(road, ego, side, target_speed, new_front)
            gain = self_pred - self_a
            if c.politeness:
                new_rear_a = _follower_acc(new_rear, new_front, self) if new_rear else 0.0
                old_rear_a = _follower_acc(old_rear, ego, self) if old_rear else 0.0
                old_rear_pred = _follower_acc(old_rear, old_front, self) if old_rear else 0.0
                gain += c.politeness * (new_rear_pred - new_rear_a + old_rear_pred - old_rear_a)
            if gain > best_gain:
                best, best_gain = side, gain
        if best is not None:
            self.target_lane = best
            self.last_change_time = now

    # -- query -------------------------------------------------------------------------------
    def act_physical(self, core) -> tuple[float, float]:
        env = core.unwrapped
        road, ego = env.road, env.vehicle
        dt = 1.0 / env.config["policy_frequency"]
        self._update_target(road, ego)
        target_speed = self._target_speed(road, ego)
        if self.config.lane_changes:
            self._mobil(road, ego, target_speed, float(env.time))
        acc = self._ego_acc(road, ego, self.target_lane, target_speed)
        if ego.lane_index is not None and ego.lane_index != self.target_lane:
            acc = min(acc, self._ego_acc(road, ego, ego.lane_index, target_speed))
        if self.config.yield_to_crossing:
            gap = self._conflict_gap(road, ego)
            if gap is not None:
                acc = min(acc, self._idm(ego.speed, target_speed, gap + self.config.min_gap * 0.5, 0.0))
        acc = max(acc, -ego.speed / dt)  # brake to a stop, never into reverse
        return self._steering(road, ego, self.target_lane), float(acc)

    def act(self, core) -> np.ndarray:
        """[steer, accel] in [-1, 1]; `saturated` tells whether the range clipped the command."""
        steering, acc = self.act_physical(core)
        a = self.spec.to_normalized(steering, acc)
        self.saturated = bool(np.any(np.abs(a) > 1.0))
        return np.clip(a, -1.0, 1.0)


def _follower_acc(follower, front, expert: Expert) -> float:
    """The follower's own IDM where it has one (highway-env's IDMVehicle), else ours."""
    if hasattr(follower, "acceleration"):
        return float(follower.acceleration(ego_vehicle=follower, front_vehicle=front))
    gap = follower.lane_distance_to(front) if front is not None else None
    return expert._idm(follower.speed, getattr(follower, "target_speed", follower.speed), gap,
                       front.speed if front is not None else 0.0)
