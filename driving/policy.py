"""`load_policy(path)`: a checkpoint back as an object with `act(obs) -> [steer, accel]`."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from driving import checkpoint
from driving.data.format import FRAME_KEYS
from driving.errors import UserError
from driving.rollout import FIXED_BATCH
from driving.step_graph import Stepper
from driving.models import InputSpec, ModelConfig, build_model


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: built and tested for CUDA and CPU only
        raise UserError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    if dev.type == "cpu" and dev.index:
        raise UserError(f"device {name!r}: there is one CPU device, use device=cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available: use device=cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def _padded(frames: np.ndarray, speed: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch with zero rows appended up to `rows`."""
    pad = rows - len(speed)
    if pad <= 0:
        return frames, speed
    return (np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)]),
            np.concatenate([speed, np.zeros(pad, speed.dtype)]))


class LoadedPolicy:
    """A trained policy. `act` takes one observation or a batch:
    obs = {"camera": (K, H, W[, 3]) or (B, K, H, W[, 3]) uint8, "speed": float or (B,)}.
    With obs[FIXED_BATCH] = N (the evaluation engine sets it), every row is computed at one shape
    whatever B: one at a time on a CPU, padded to N rows on a GPU (where a forward pass costs the
    same for 1 row or N). Kernels chosen by batch shape then never make a row's action depend on
    which envs answered with it."""

    def __init__(self, model, meta: dict, device: torch.device, path: Path, cuda_graph: bool = True):
        self.model = model.eval()
        self.meta = meta
        self.device = device
        self.path = path
        # On CUDA the fixed-shape forward is replayed as one graph: eagerly, a batch of a few rows costs
        # the launch of every kernel (overhead-bound, like the training step), and the evaluation
        # engine's parent computes one batch per answer it gets from its envs.
        self.cuda_graph = cuda_graph and device.type == "cuda"
        self._graphs: dict[tuple, tuple] = {}
        self.stack = model.cfg.stack
        cam = meta["camera"]
        self.frame_shape = (cam["height"], cam["width"], 3) if cam["rgb"] else (cam["height"], cam["width"])

    @property
    def camera(self) -> dict:
        return self.meta["camera"]

    def check_camera(self, camera: dict) -> None:
        """Raise if an environment's camera config would give frames this model was not trained on."""
        diff = [f"{k}: {self.camera[k]!r} trained, {camera.get(k)!r} given" for k in FRAME_KEYS
                if camera.get(k) != self.camera[k]]
        if diff:
            raise UserError(f"camera config does not match the model at {self.path} ({'; '.join(diff)}): "
                            "use the checkpoint's camera")

    @torch.no_grad()
    def act(self, obs: dict) -> np.ndarray:
        frames = np.asarray(obs["camera"])
        single = frames.ndim == len(self.frame_shape) + 1
        if single:
            frames = frames[None]
        if tuple(frames.shape[2:]) != self.frame_shape:
            raise UserError(f"observation frames have shape {frames.shape[2:]}, the model at {self.path} "
                            f"takes {self.frame_shape}: use the checkpoint's camera config")
        if frames.shape[1] < self.stack:
            raise UserError(f"observation has {frames.shape[1]} stacked frames, the model needs "
                            f"{self.stack}: set camera.stack >= {self.stack}")
        frames = np.ascontiguousarray(frames[:, -self.stack:])
        speed = np.asarray(obs.get("speed", 0.0), dtype=np.float32).reshape(-1)
        if len(speed) == 1 and len(frames) > 1:  # one speed (or none: 0) for every row
            speed = np.repeat(speed, len(frames))
        if len(speed) != len(frames):
            raise UserError(f"observation has {len(frames)} frame stacks and {len(speed)} speeds: give one "
                            "speed per stack (or one for all)")
        fixed = obs.get(FIXED_BATCH)
        if fixed is None:
            out = self._forward(frames, speed)
        elif self.device.type == "cpu":
            # one row at a time, the one shape whose rows never differ: 1.2-1.4x the CPU time of a
            # batch of 2-16 rows (PilotNet, 1 thread), the price of results independent of timing
            out = np.concatenate([self._forward(frames[i:i + 1], speed[i:i + 1]) for i in range(len(speed))])
        else:
            out = np.concatenate([self._fixed_forward(*_padded(frames[j:j + fixed], speed[j:j + fixed], fixed))
                                  [:min(fixed, len(speed) - j)] for j in range(0, len(speed), fixed)])
        return out[0] if single else out

    @torch.no_grad()
    def _forward(self, frames: np.ndarray, speed: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(frames).to(self.device)
        s = torch.from_numpy(speed).to(self.device)
        action, _ = self.model(x, s)
        return action.float().cpu().numpy()

    @torch.no_grad()
    def _fixed_forward(self, frames: np.ndarray, speed: np.ndarray) -> np.ndarray:
        """A padded batch, at the one shape the evaluation uses: eagerly, or replayed as a CUDA graph
        captured after a few eager calls (step_graph.Stepper; the same kernels, so the same values)."""
        if not self.cuda_graph:
            return self._forward(frames, speed)
        key = (frames.shape, frames.dtype.str)
        if key not in self._graphs:
            x = torch.empty_like(torch.from_numpy(frames), device=self.device)
            s = torch.empty_like(torch.from_numpy(speed), device=self.device)
            stepper = Stepper(lambda: {"action": self.model(x, s)[0]}, graph=self.device.type == "cuda",
                              what="the policy's forward",
                              fallback="the policy runs eagerly")
            self._graphs[key] = (stepper, x, s)
        stepper, x, s = self._graphs[key]
        x.copy_(torch.from_numpy(frames))
        s.copy_(torch.from_numpy(speed))
        return stepper()["action"].float().cpu().numpy()

    __call__ = act

    @contextmanager
    def closed_loop(self):
        """While the policy drives many envs: on a CPU, one intra-op thread. It computes one row at a
        time there (a batch of 1), which a second thread speeds up by ~13% on an idle machine, while
        with the cores busy (the env workers, another job) torch's thread pool waits on threads that
        are not scheduled: 47-125 ms a forward pass instead of 1.6 (PilotNet, 2 cores, one other job;
        scripts/bench_eval.py --torch-threads). The caller's setting comes back afterwards (training
        goes on in the same process)."""
        threads = torch.get_num_threads()
        if self.device.type != "cpu" or threads == 1:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def for_scenario(self, scenario) -> "LoadedPolicy | ScaledPolicy":
        """This policy driving `scenario` (a sim Scenario): itself where the action ranges are the
        ones it was trained with, else rescaled (action_scale)."""
        scale = action_scale(self.meta, scenario, self.path)
        return self if scale is None else ScaledPolicy(self, scale)


def action_scale(meta: dict, scenario, where) -> np.ndarray | None:
    """None where `scenario` has the action ranges the checkpoint (its `meta`) was trained with; where
    the scenario's are wider, the factor that keeps every physical command the same; where narrower,
    a UserError (commands it learned could not be executed)."""
    trained = meta.get("action")
    if not trained:  # checkpoints from before the ranges were recorded
        return None
    spec = scenario.action
    pairs = [("steering", "rad", trained["steer_range_rad"], spec.steer_range),
             ("acceleration", "m/s²", trained["accel_range_mps2"], spec.accel_range)]
    if all(abs(t - g) <= 1e-9 * max(t, g) for _, _, t, g in pairs):
        return None
    narrow = [f"{name} ±{g:g} {unit} (trained ±{t:g})" for name, unit, t, g in pairs if g < t]
    if narrow:
        raise UserError(f"the checkpoint at {where} was trained on {meta.get('scenario')} and commands more than "
                        f"scenario {scenario.name} allows: {', '.join(narrow)}; evaluate it on scenarios whose "
                        "action ranges are at least its own")
    return np.array([t / g for _, _, t, g in pairs], dtype=np.float32)


class ScaledPolicy:
    """A policy trained with narrower action ranges than the scenario it drives: its normalised
    outputs are clipped to [-1, 1] (as its own scenario would) and scaled to the same physical command."""

    def __init__(self, policy: LoadedPolicy, scale: np.ndarray):
        self.inner, self.scale = policy, scale
        self.model, self.meta, self.path, self.stack = policy.model, policy.meta, policy.path, policy.stack

    @property
    def camera(self) -> dict:
        return self.inner.camera

    def closed_loop(self):
        return self.inner.closed_loop()

    def act(self, obs: dict) -> np.ndarray:
        return np.clip(self.inner.act(obs), -1.0, 1.0) * self.scale

    __call__ = act


def policy_from_model(model, meta: dict, device: torch.device, path: Path | str = "<training>") -> LoadedPolicy:
    """Wrap an in-memory model (e.g. during training) exactly as a loaded checkpoint would be."""
    return LoadedPolicy(model, meta, device, Path(path))


def load_policy(path: str | Path, device: str = "auto", plan_threshold: float | None = None) -> LoadedPolicy:
    """Rebuild a policy from a checkpoint folder (or `last`, or a run folder) on `device`.
    `plan_threshold` replaces the checkpoint's lane-change threshold (a plan head's decision rule:
    net.plan_threshold), e.g. to trade lane changes against swerves without retraining."""
    ckpt = checkpoint.resolve(path)
    meta = checkpoint.load_meta(ckpt)
    dev = pick_device(device)
    fix = "retrain, or pass a checkpoint that `driving train` wrote"
    bad = [k for k, kind in (("model", str), ("net", dict), ("input", dict), ("camera", dict), ("action", dict))
           if not isinstance(meta.get(k), kind)]
    if bad:  # a hand-edited or foreign policy.json (without checksums.json nothing else catches it)
        raise UserError(f"{ckpt}/policy.json lacks {', '.join(bad)} (or holds another kind of value): {fix}")
    net = dict(meta["net"])
    if plan_threshold is not None:
        if not net.get("plan_head"):
            raise UserError(f"plan_threshold applies to a policy with a plan head; {ckpt} has none: "
                            "drop plan_threshold")
        net["plan_threshold"] = plan_threshold
        meta = {**meta, "net": net}
    try:
        # weights.pt holds every weight: the backbone file it was initialised from is not needed
        cfg = ModelConfig(**{**net, "weights": None})
        spec = InputSpec(**meta["input"])
    except ValueError as e:
        raise UserError(str(e).replace("net.plan_threshold", "plan_threshold")) from None
    except TypeError as e:  # keys this version does not know
        raise UserError(f"{ckpt}/policy.json: {e}: {fix}") from None
    model = build_model(meta["model"], cfg, spec)
    try:
        model.load_state_dict(checkpoint.load_tensors(ckpt, "weights.pt"))
    except RuntimeError as e:
        raise UserError(f"weights in {ckpt} do not fit model {meta['model']!r} as this version builds it "
                        f"({str(e).splitlines()[0]}): retrain, or use the version that wrote it") from None
    return LoadedPolicy(model.to(dev), meta, dev, ckpt)
