"""Traffic vehicles and lanes with highway-env's results at a lower cost per call.

After the road's quadratic searches are gone (sim.fast_road), the profile is the traffic's own
per-vehicle Python: `np.clip` on scalars (~4 us a call, six per IDM decision) and the lane
projection `lane.local_coordinates`, which each vehicle's controller, IDM, neighbour search and
lane-end check compute again for the same positions.

- `FastIDMMixin`: IDMVehicle.act / acceleration / desired_gap and ControlledVehicle.steering_control
  with the stock arithmetic, scalar clipping done by comparisons (the same value np.clip returns).
- `direction` / `velocity` arrays cached per (heading, speed) value (read-only).
- `FastVehicleMixin` (the ego and other kinematic vehicles): Vehicle.step without temporary arrays,
  and trajectory predictions that no longer deep-copy the whole road with the vehicle.
- Lanes memoise `local_coordinates` on the exact bytes of the position: a pure function of an
  immutable lane and the position, so a cached answer is the stock answer.

`fasten_vehicle` / `fasten_lane` switch an object's class in place; classes that override the
replaced methods keep their own (stock) versions through the MRO.
"""
from __future__ import annotations

import copy

import numpy as np
from highway_env import utils
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.kinematics import Vehicle
from highway_env.vehicle.objects import RoadObject

_F64 = np.dtype(np.float64)
_MEMO_LIMIT = 8192  # entries per lane before its memo is dropped (positions never repeat for long)
_TWO_SQRT: dict = {}  # 2 * np.sqrt(ab) per value of ab (IDM class constants)


def _clip(x, lo, hi):
    """np.clip for scalars: the same value (NaN passes through, like np.clip's maximum/minimum)."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def _vehicle_step(self, dt: float) -> None:
    """Vehicle.step, component by component instead of through 2-element arrays (same arithmetic:
    position += (speed * [cos, sin]) * dt)."""
    self.clip_actions()
    delta_f = self.action["steering"]
    beta = np.arctan(1 / 2 * np.tan(delta_f))
    angle = self.heading + beta
    position = self.position
    position[0] += self.speed * np.cos(angle) * dt
    position[1] += self.speed * np.sin(angle) * dt
    if self.impact is not None:
        self.position += self.impact
        self.crashed = True
        self.impact = None
    self.heading += self.speed * np.sin(beta) / (self.LENGTH / 2) * dt
    self.speed += self.action["acceleration"] * dt
    self.on_state_update()


class _CachedMotion(Vehicle):
    """`direction` and `velocity` computed once per (heading, speed) value instead of at every read
    (IDM and MOBIL read them several times per decision). The arrays are read-only: the stock code
    only reads them, and a writer would fail loudly instead of corrupting the cache."""

    @property
    def direction(self) -> np.ndarray:
        heading = self.heading
        cached = self.__dict__.get("_direction")
        if cached is None or cached[0] is not heading:
            array = np.array([np.cos(heading), np.sin(heading)])
            array.flags.writeable = False
            cached = self._direction = (heading, array)
        return cached[1]

    @property
    def velocity(self) -> np.ndarray:
        heading, speed = self.heading, self.speed
        cached = self.__dict__.get("_velocity")
        if cached is None or cached[0] is not heading or cached[1] is not speed:
            array = speed * self.direction
            array.flags.writeable = False
            cached = self._velocity = (heading, speed, array)
        return cached[2]


class FastVehicleMixin(_CachedMotion):
    step = _vehicle_step

    def predict_trajectory_constant_speed(self, times):
        # Vehicle's own code, except that its deep copy of self no longer copies the whole road
        # (~10 ms at an intersection, once per vehicle pair in RegulatedRoad): the copy only
        # reads the road's lanes, which it now shares, its current lane included (that lane's
        # memo of projections would otherwise be copied with it: thousands of entries).
        if self.prediction_type == "zero_steering":
            action = {"acceleration": 0.0, "steering": 0.0}
        elif self.prediction_type == "constant_steering":
            action = {"acceleration": 0.0, "steering": self.action["steering"]}
        else:
            raise ValueError("Unknown predition type")
        dt = np.diff(np.concatenate(([0.0], times)))
        positions, headings = [], []
        v = copy.deepcopy(self, {id(self.road): self.road, id(self.lane): self.lane})
        v.act(action)
        for t in dt:
            v.step(t)
            positions.append(v.position.copy())
            headings.append(v.heading)
        return positions, headings


class FastIDMMixin(_CachedMotion, IDMVehicle):
    def step(self, dt: float) -> None:
        self.timer += dt
        _vehicle_step(self, dt)

    def act(self, action=None):
        if self.crashed:
            return
        action = {}
        self.follow_road()
        if self.enable_lane_change:
            self.change_lane_policy()
        action["steering"] = _clip(self.steering_control(self.target_lane_index),
                                   -self.MAX_STEERING_ANGLE, self.MAX_STEERING_ANGLE)
        front_vehicle, rear_vehicle = self.road.neighbour_vehicles(self, self.lane_index)
        action["acceleration"] = self.acceleration(
            ego_vehicle=self, front_vehicle=front_vehicle, rear_vehicle=rear_vehicle)
        if self.lane_index != self.target_lane_index:
            front_vehicle, rear_vehicle = self.road.neighbour_vehicles(self, self.target_lane_index)
            target_idm_acceleration = self.acceleration(
                ego_vehicle=self, front_vehicle=front_vehicle, rear_vehicle=rear_vehicle)
            action["acceleration"] = min(action["acceleration"], target_idm_acceleration)
        action["acceleration"] = _clip(action["acceleration"], -self.ACC_MAX, self.ACC_MAX)
        Vehicle.act(self, action)

    def acceleration(self, ego_vehicle, front_vehicle=None, rear_vehicle=None) -> float:
        if not ego_vehicle or not isinstance(ego_vehicle, Vehicle):
            return 0
        ego_target_speed = getattr(ego_vehicle, "target_speed", 0)
        if ego_vehicle.lane and ego_vehicle.lane.speed_limit is not None:
            ego_target_speed = _clip(ego_target_speed, 0, ego_vehicle.lane.speed_limit)
        acceleration = self.COMFORT_ACC_MAX * (
            1 - np.power(max(ego_vehicle.speed, 0) / abs(utils.not_zero(ego_target_speed)), self.DELTA))
        if front_vehicle:
            d = ego_vehicle.lane_distance_to(front_vehicle)
            acceleration -= self.COMFORT_ACC_MAX * np.power(
                self.desired_gap(ego_vehicle, front_vehicle) / utils.not_zero(d), 2)
        return acceleration

    def desired_gap(self, ego_vehicle, front_vehicle=None, projected: bool = True) -> float:
        d0 = self.DISTANCE_WANTED
        tau = self.TIME_WANTED
        ab = -self.COMFORT_ACC_MAX * self.COMFORT_ACC_MIN
        if projected:
            dv = np.dot(ego_vehicle.velocity - front_vehicle.velocity, ego_vehicle.direction)
        else:
            dv = ego_vehicle.speed - front_vehicle.speed
        root = _TWO_SQRT.get(ab)
        if root is None:  # 2 * np.sqrt(ab), which depends on class constants only
            root = _TWO_SQRT[ab] = 2 * np.sqrt(ab)
        return d0 + ego_vehicle.speed * tau + ego_vehicle.speed * dv / root

    def steering_control(self, target_lane_index) -> float:
        target_lane = self.road.network.get_lane(target_lane_index)
        lane_coords = target_lane.local_coordinates(self.position)
        lane_next_coords = lane_coords[0] + self.speed * self.TAU_PURSUIT
        lane_future_heading = target_lane.heading_at(lane_next_coords)
        lateral_speed_command = -self.KP_LATERAL * lane_coords[1]
        heading_command = np.arcsin(_clip(lateral_speed_command / utils.not_zero(self.speed), -1, 1))
        heading_ref = lane_future_heading + _clip(heading_command, -np.pi / 4, np.pi / 4)
        heading_rate_command = self.KP_HEADING * utils.wrap_to_pi(heading_ref - self.heading)
        slip_angle = np.arcsin(_clip(
            self.LENGTH / 2 / utils.not_zero(self.speed) * heading_rate_command, -1, 1))
        steering_angle = np.arctan(2 * np.tan(slip_angle))
        steering_angle = _clip(steering_angle, -self.MAX_STEERING_ANGLE, self.MAX_STEERING_ANGLE)
        return float(steering_angle)


class MemoLaneMixin:
    """`local_coordinates` memoised on the position's bytes (float64 (2,) arrays only)."""

    def local_coordinates(self, position):
        if type(position) is not np.ndarray or position.dtype is not _F64 or position.ndim != 1:
            return super().local_coordinates(position)
        memo = self.__dict__.get("_coords_memo")
        if memo is None or len(memo) > _MEMO_LIMIT:
            memo = self._coords_memo = {}
        key = position.tobytes()
        coords = memo.get(key)
        if coords is None:
            coords = memo[key] = super().local_coordinates(position)
        return coords


STOCK_CLASS: dict[type, type] = {}  # fast subclass -> the stock class it was made from
_DERIVED: dict[tuple, type] = {}
_FAST: dict[type, type | None] = {}  # vehicle or lane class -> its fast subclass (None: keep it)


def derived_class(cls: type, mixins: tuple, name: str | None = None, mixins_first: bool = False) -> type:
    """The subclass of `cls` with `mixins`, made once and recorded in STOCK_CLASS.

    By default the stock class comes first, so its own overrides (a RegulatedRoad.step, an
    IDMVehicle subclass's act) still win and reach the mixins through super(); where a mixin
    already derives from `cls` (FastIDMMixin for IDMVehicle), the mixins alone are the bases.
    `mixins_first` is for mixins that wrap the stock method itself (memoisation)."""
    key = (cls, mixins, mixins_first)
    if key not in _DERIVED:
        if any(issubclass(m, cls) for m in mixins):
            bases = mixins
        else:
            bases = (*mixins, cls) if mixins_first else (cls, *mixins)
        made = _DERIVED[key] = type(name or cls.__name__, bases, {"__module__": cls.__module__})
        STOCK_CLASS[made] = cls
    return _DERIVED[key]


def _fast_vehicle_class(cls: type) -> type | None:
    if issubclass(cls, _CachedMotion):
        return None
    if not (cls.direction is RoadObject.direction and cls.velocity is Vehicle.velocity):
        return None
    if issubclass(cls, IDMVehicle) and cls.step is IDMVehicle.step:
        return derived_class(cls, (FastIDMMixin,))
    if (cls.step is Vehicle.step and cls.clip_actions is Vehicle.clip_actions
            and cls.predict_trajectory_constant_speed is Vehicle.predict_trajectory_constant_speed):
        return derived_class(cls, (FastVehicleMixin,))
    return None


def _fast_lane_class(cls: type) -> type | None:
    return None if issubclass(cls, MemoLaneMixin) else derived_class(cls, (MemoLaneMixin,), mixins_first=True)


def _fasten(obj, make) -> None:
    cls = type(obj)
    if cls not in _FAST:
        _FAST[cls] = make(cls)
    if _FAST[cls] is not None:
        obj.__class__ = _FAST[cls]


def fasten_vehicle(vehicle) -> None:
    _fasten(vehicle, _fast_vehicle_class)


def fasten_lane(lane) -> None:
    _fasten(lane, _fast_lane_class)
