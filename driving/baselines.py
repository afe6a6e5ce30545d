"""Policies that need no training, evaluated exactly like a checkpoint.

The evaluation runner hands every policy an observation dict that also carries the privileged
expert's action for that state (`obs["expert_action"]`, from the env's info). A learned policy
ignores it; `ExpertPolicy` returns it. Batched: obs values have a leading batch dimension.
"""
from __future__ import annotations

import numpy as np


class ExpertPolicy:
    name = "expert"

    def act(self, obs: dict) -> np.ndarray:
        if "expert_action" not in obs:
            raise ValueError("ExpertPolicy needs obs['expert_action'] (run the env with its expert on)")
        return np.asarray(obs["expert_action"], dtype=np.float32)


class ConstantPolicy:
    """Always the same [steer, accel], e.g. [0, 0]: keeps the wheel straight and coasts."""

    def __init__(self, steer: float = 0.0, accel: float = 0.0):
        self.action = np.array([steer, accel], dtype=np.float32)
        self.name = f"constant({steer:g},{accel:g})"

    def act(self, obs: dict) -> np.ndarray:
        cam = np.asarray(obs["camera"])
        batched = np.asarray(obs.get("speed", 0.0)).ndim == 1
        return np.tile(self.action, (cam.shape[0], 1)) if batched else self.action.copy()
