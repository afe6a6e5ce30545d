"""The one episode recorder and the actors that drive it.

An *actor* chooses the executed action from a batch of observations: `start(seed)` makes its
per-episode state (a noise process, a coin for the expert share), `act(batch, states)` returns
(B, 2) actions; an optional `finish(state)` returns extra per-step arrays for the episode's record
(the mixture's student actions). The batch is what the env gives, plus the expert's label for that state:
{"camera": (B, K, H, W[, 3]), "speed": (B,), "expert_action": (B, 2)}.

- `ExpertActor`: the expert's label plus DART noise on what is executed (collection).
- `PolicyActor`: anything with `act(batch)`: a checkpoint, `ExpertPolicy`, a constant (evaluation).
- `MixtureActor`: per step the expert with probability beta, else the policy; noise on either
  (DAgger rounds). An optional takeover hands the wheel to the expert while the two disagree by
  more than a threshold, so an episode goes on past the student's first mistake.

`EpisodeRecorder` turns the steps of one episode into a record (the one definition of the facts
kept per step); `play_episode` drives one env at batch 1 with an actor (collection workers, videos);
`driving.evaluate.run_episodes` drives many envs, each at its own pace, with the same recorder and
actors.
Nothing here imports torch: collection workers stay light.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

# Facts of every state visited (T + 1 per episode, the initial state included): what metrics,
# datasets and videos read. The env's info carries them (sim/env.py).
STATE_FACTS = ("speed", "progress", "on_road", "on_route", "crashed", "heading", "lane_offset", "x", "y", "time",
               "expert_saturated", "expert_plan", "lane", "gap_ahead", "closing_speed", "collision")


@dataclass
class NoiseSpec:
    """Noise on the executed action, normalised units: stationary std per output, AR(1) coefficient,
    and per output the share of steps it is on (`duty`), in bursts of `burst` steps on average."""

    steer: float = 0.0
    accel: float = 0.0
    correlation: float = 0.6
    steer_duty: float = 1.0
    accel_duty: float = 1.0
    burst: float = 10.0


class NoiseProcess:
    """AR(1) Gaussian noise with stationary std `sigma`, seeded per episode, each output switched on
    and off by its own two-state Markov gate: on for a share `duty` of the steps in bursts of `burst`
    steps on average (duty 1: always on, and no gate is drawn)."""

    def __init__(self, sigma, correlation: float, seed: int, duty=(1.0, 1.0), burst: float = 10.0):
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.rho = correlation
        self.rng = np.random.default_rng([seed, 0x6E6F697365])  # independent of the sim's stream
        self.state = self.rng.normal(size=2) * self.sigma
        self.duty = np.asarray(duty, dtype=np.float64)
        self.gated = bool(np.any(self.duty < 1.0))
        if self.gated:
            # Markov gate: leave "on" with p_off = 1/burst; enter it with p_on so that the stationary
            # share of "on" is duty (p_on / (p_on + p_off) = duty). An output at duty 1 never leaves it.
            partial = self.duty < 1.0
            self.p_off = np.where(partial, 1.0 / max(burst, 1.0), 0.0)
            self.p_on = np.where(partial, self.p_off * self.duty / np.maximum(1.0 - self.duty, 1e-12), 1.0)
            self.gate_rng = np.random.default_rng([seed, 0x67617465])
            self.on = self.gate_rng.random(2) < self.duty

    def sample(self) -> np.ndarray:
        out = self.state
        eps = self.rng.normal(size=2) * self.sigma
        self.state = self.rho * self.state + np.sqrt(1 - self.rho ** 2) * eps
        if not self.gated:
            return out
        out = np.where(self.on, out, 0.0)
        u = self.gate_rng.random(2)
        self.on = np.where(self.on, u >= self.p_off, u < self.p_on)
        return out


def _noise(spec: NoiseSpec | None, seed: int) -> NoiseProcess | None:
    if spec is None or (spec.steer == 0 and spec.accel == 0):
        return None
    return NoiseProcess([spec.steer, spec.accel], spec.correlation, seed,
                        (spec.steer_duty, spec.accel_duty), spec.burst)


def _perturb(actions: np.ndarray, noises: list) -> np.ndarray:
    out = np.array(actions, dtype=np.float64)
    for i, n in enumerate(noises):
        if n is not None:
            out[i] = out[i] + n.sample()
    return np.clip(out, -1.0, 1.0).astype(np.float32)


class ExpertActor:
    """The expert's own action, with optional DART noise on what is executed (the label stays clean)."""

    name = "expert"

    def __init__(self, noise: NoiseSpec | None = None):
        self.noise = noise

    def start(self, seed: int):
        return _noise(self.noise, seed)

    def act(self, batch: dict, states: list) -> np.ndarray:
        return _perturb(batch["expert_action"], states)


class PolicyActor:
    """A policy (`act(batch) -> (B, 2)`) as an actor: no per-episode state, no noise."""

    def __init__(self, policy):
        self.policy = policy
        self.name = getattr(policy, "name", None) or type(policy).__name__

    def start(self, seed: int):
        return None

    def act(self, batch: dict, states: list) -> np.ndarray:
        return np.asarray(self.policy.act(batch), dtype=np.float32).reshape(len(states), 2)


class MixtureActor:
    """Per step: the expert with probability `beta`, else the policy; `takeover` > 0 also gives the
    expert the wheel whenever |policy - expert| exceeds it in either output (normalised units)."""

    def __init__(self, policy, beta: float, noise: NoiseSpec | None = None, takeover: float = 0.0):
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta (the expert's share) must be in [0, 1], got {beta}")
        self.policy, self.beta, self.noise, self.takeover = policy, beta, noise, takeover
        self.name = f"mixture(beta={beta:g})"

    def start(self, seed: int):
        return {"coin": np.random.default_rng([seed, 0x62657461]), "noise": _noise(self.noise, seed),
                "student": [], "expert_chose": []}

    def act(self, batch: dict, states: list) -> np.ndarray:
        expert = np.asarray(batch["expert_action"], dtype=np.float32)
        student = np.asarray(self.policy.act(batch), dtype=np.float32).reshape(len(states), 2)
        use_expert = np.array([s["coin"].random() < self.beta for s in states])
        if self.takeover > 0:
            use_expert |= np.abs(student - expert).max(axis=1) > self.takeover
        for s, a, e in zip(states, student, use_expert):
            s["student"].append(a)
            s["expert_chose"].append(bool(e))
        chosen = np.where(use_expert[:, None], expert, student)
        return _perturb(chosen, [s["noise"] for s in states])

    def finish(self, state) -> dict:
        """What the student chose at every step, and whether the expert's action was taken instead."""
        return {"student_actions": np.array(state["student"], dtype=np.float32).reshape(-1, 2),
                "expert_chose": np.array(state["expert_chose"], dtype=bool)}


class ReplayActor:
    """Executes recorded actions in order (a scored episode filmed exactly as it was driven)."""

    name = "replay"

    def __init__(self, actions, what: str = "the recorded episode"):
        self.actions = np.asarray(actions, dtype=np.float32).reshape(-1, 2)
        self.what = what

    def start(self, seed: int):
        return {"t": 0}

    def act(self, batch: dict, states: list) -> np.ndarray:
        out = []
        for s in states:
            if s["t"] >= len(self.actions):
                raise EpisodeMismatch(f"re-simulating {self.what} ran past its {len(self.actions)} recorded steps")
            out.append(self.actions[s["t"]])
            s["t"] += 1
        return np.stack(out)


class EpisodeMismatch(RuntimeError):
    """A re-simulated episode differs from the one recorded or scored."""


def check_same_episode(record: dict, row: dict, what: str) -> None:
    """Raise EpisodeMismatch unless `record` (re-simulated) ends as the scored `row` says: the same
    number of steps, crash flag and distance (to 1 mm)."""
    steps = len(record["actions"])
    crashed = bool(np.any(record["steps"]["crashed"]))
    progress = record["steps"]["progress"]
    distance = float(progress[-1] - progress[0])
    diffs = [f"{k}: scored {a}, re-simulated {b}" for k, a, b in
             (("steps", row["steps"], steps), ("crashed", row["crashed"], crashed))
             if a != b]
    if abs(distance - row["distance_m"]) > 1e-3:
        diffs.append(f"distance: scored {row['distance_m']:.3f} m, re-simulated {distance:.3f} m")
    if diffs:
        raise EpisodeMismatch(f"{what} does not match its scored row ({'; '.join(diffs)})")


def worst(rows: list[dict], n: int) -> list[dict]:
    """The one definition of "worst": lowest driving score, crashes before others, then by seed."""
    return sorted(rows, key=lambda r: (r["driving_score"], not r["crashed"], r["seed"]))[:n]


def finished(actor, record: dict, state) -> dict:
    """The episode's record with the actor's own per-step arrays added (where it has any)."""
    if hasattr(actor, "finish"):
        record.update(actor.finish(state))
    return record


def closed_loop(actor):
    """The actor's policy's set-up for driving many envs (`closed_loop()`, e.g. LoadedPolicy's one
    CPU thread), or nothing."""
    scope = getattr(getattr(actor, "policy", None), "closed_loop", None)
    return scope() if scope is not None else nullcontext()


def as_actor(policy_or_actor):
    """An actor as it is, or a policy (`act(batch)`) wrapped as one."""
    return policy_or_actor if hasattr(policy_or_actor, "start") else PolicyActor(policy_or_actor)


class EpisodeRecorder:
    """One episode's steps -> its record: {"seed", "steps": {fact: T+1 values}, "actions" (T, 2)
    executed, "expert_actions" (T, 2) labels, "frames" (T, ...) the newest camera frame seen before
    each action (only with keep_frames), "terminated", "truncated"}."""

    def __init__(self, seed: int, obs: dict, info: dict, keep_frames: bool = False):
        self.seed = int(seed)
        self.keep_frames = keep_frames
        self.steps = {k: [info[k]] for k in STATE_FACTS if k in info}
        self.actions: list = []
        self.expert_actions: list = []
        self.frames: list = []
        self.obs, self.info = obs, info
        self.terminated = self.truncated = False

    def add(self, action, obs: dict, terminated: bool, truncated: bool, info: dict) -> bool:
        """Record the step taken from the current state; True when the episode is over."""
        if self.keep_frames:
            self.frames.append(self.obs["camera"][-1])
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.expert_actions.append(np.asarray(self.info.get("expert_action", (np.nan, np.nan)), dtype=np.float32))
        for k, values in self.steps.items():
            values.append(info[k])
        self.obs, self.info = obs, info
        self.terminated, self.truncated = bool(terminated), bool(truncated)
        return self.terminated or self.truncated

    def record(self) -> dict:
        rec = {"seed": self.seed, "steps": self.steps, "terminated": self.terminated,
               "truncated": self.truncated,
               "actions": np.array(self.actions, dtype=np.float32).reshape(-1, 2),
               "expert_actions": np.array(self.expert_actions, dtype=np.float32).reshape(-1, 2)}
        if self.keep_frames:
            rec["frames"] = np.stack(self.frames) if self.frames else np.zeros((0,), np.uint8)
        return rec


# A batch key the engine adds: the most rows it will ever pass. A learned policy computes every row
# at one fixed shape (driving.policy), so that a row's action never depends on how many envs, or
# which, answered at the same moment: an evaluation is the same whatever the envs' timing.
FIXED_BATCH = "fixed_batch"
# The one batch shape a learned policy computes its rows at on a GPU (padded; more rows go in chunks of
# it): one shape whatever the number of workers and envs, so the kernels chosen by shape are the same
# and so are the actions (a GPU forward costs about the same for 1 row or 32: launch-bound).
FIXED_ROWS = 32

_NO_EXPERT = np.full(2, np.nan, np.float32)  # an env built without its expert


def batch_of(obs: list[dict], infos: list[dict]) -> dict:
    """The actors' batch from per-env observations and infos."""
    return {"camera": np.stack([o["camera"] for o in obs]),
            "speed": np.array([o["speed"] for o in obs], dtype=np.float32),
            "expert_action": np.stack([i.get("expert_action", _NO_EXPERT) for i in infos]).astype(np.float32)}


def play_episode(env, actor, seed: int, keep_frames: bool = False, on_state=None) -> dict:
    """One episode of `actor` in one env at batch 1; `on_state(obs, info)` sees every state visited,
    the last included (videos keep the scene frames and compute saliency there)."""
    actor = as_actor(actor)
    obs, info = env.reset(seed=seed)
    rec = EpisodeRecorder(seed, obs, info, keep_frames)
    state = actor.start(seed)
    done = False
    while not done:
        if on_state is not None:
            on_state(obs, info)
        action = actor.act(batch_of([obs], [info]), [state])[0]
        obs, _, terminated, truncated, info = env.step(action)
        done = rec.add(action, obs, terminated, truncated, info)
    if on_state is not None:
        on_state(obs, info)
    return finished(actor, rec.record(), state)
