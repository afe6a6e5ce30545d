"""The one place where normalised actions [steer, accel] in [-1, 1] meet physical units.

highway-env's own ContinuousAction takes [accel, steer]; `to_highway` does the reordering so that
no other module has to know about it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEER, ACCEL = 0, 1


@dataclass(frozen=True)
class ActionSpec:
    steer_range: float  # max |front-wheel angle| in rad
    accel_range: float  # max |longitudinal acceleration| in m/s^2

    def to_physical(self, action) -> tuple[float, float]:
        """[steer, accel] in [-1, 1] -> (steering angle rad, acceleration m/s^2); clips to [-1, 1]."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return float(a[STEER] * self.steer_range), float(a[ACCEL] * self.accel_range)

    def to_normalized(self, steering: float, acceleration: float) -> np.ndarray:
        """Physical commands -> [steer, accel] (not clipped: callers decide what saturation means)."""
        return np.array([steering / self.steer_range, acceleration / self.accel_range], dtype=np.float64)

    def to_highway(self, action) -> np.ndarray:
        """[steer, accel] -> highway-env's ContinuousAction order [accel, steer], both in [-1, 1]."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return np.array([a[ACCEL], a[STEER]], dtype=np.float64)

    def highway_action_config(self) -> dict:
        return {
            "type": "ContinuousAction",
            "acceleration_range": [-self.accel_range, self.accel_range],
            "steering_range": [-self.steer_range, self.steer_range],
            "longitudinal": True,
            "lateral": True,
            "dynamical": False,
            "clip": True,
        }

    def as_dict(self) -> dict:
        return {"order": ["steer", "accel"], "steer_range_rad": self.steer_range,
                "accel_range_mps2": self.accel_range}
