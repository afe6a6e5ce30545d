"""Shared fixtures for the sim/ tests. Everything here is small: tiny cameras, few steps."""
from __future__ import annotations

import numpy as np
import pytest


def _closing(make):
    """A fixture body: yields a factory wrapping `make`, then closes every env it made."""
    envs = []

    def factory(*args, **kwargs):
        envs.append(make(*args, **kwargs))
        return envs[-1]

    yield factory
    for env in envs:
        env.close()


@pytest.fixture
def make_env():
    """Factory for DrivingEnv instances that are closed after the test.

    Defaults keep tests fast and independent of the expert (which is developed separately):
    expert=False unless asked for, and a small single-frame camera.
    """
    from sim import DrivingEnv

    def make(scenario="highway", camera=None, expert=False, **kwargs):
        cam = {"height": 64, "width": 32, "stack": 1}
        cam.update(camera or {})
        return DrivingEnv(scenario, camera=cam, expert=expert, **kwargs)

    yield from _closing(make)


@pytest.fixture
def make_core():
    """Factory for bare highway-env core envs (sim.scenarios.make_core_env), closed afterwards."""
    from sim.scenarios import get_scenario, make_core_env

    def make(name="highway", overrides=None, seed=0):
        env = make_core_env(get_scenario(name), overrides)
        env.reset(seed=seed)
        return env

    yield from _closing(make)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
