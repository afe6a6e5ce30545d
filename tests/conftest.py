"""Shared fixtures for the sim/ tests. Everything here is small: tiny cameras, few steps."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def make_env():
    """Factory for DrivingEnv instances that are closed after the test.

    Defaults keep tests fast and independent of the expert (which is developed separately):
    expert=False unless asked for, and a small single-frame camera.
    """
    from sim import DrivingEnv

    envs = []

    def factory(scenario="highway", camera=None, expert=False, **kwargs):
        cam = {"height": 64, "width": 32, "stack": 1}
        cam.update(camera or {})
        env = DrivingEnv(scenario, camera=cam, expert=expert, **kwargs)
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()


@pytest.fixture
def make_core():
    """Factory for bare highway-env core envs (sim.scenarios.make_core_env), closed afterwards."""
    from sim.scenarios import get_scenario, make_core_env

    envs = []

    def factory(name="highway", overrides=None, seed=0):
        env = make_core_env(get_scenario(name), overrides)
        env.reset(seed=seed)
        envs.append(env)
        return env

    yield factory
    for env in envs:
        env.close()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
