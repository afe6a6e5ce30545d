"""The training data path: the whole dataset as one uint8 tensor on the device (pinned host memory
when it does not fit), batches sampled by index, frame stacks built by index arithmetic within
episode bounds, augmentation on the device. No per-sample Python anywhere.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from driving.data.format import FRAME_KEYS, Dataset, DatasetError


@dataclass
class AugmentConfig:
    brightness: float = 0.2  # multiplicative jitter: x * U(1 - b, 1 + b)
    contrast: float = 0.2  # (x - mean) * U(1 - c, 1 + c) + mean
    noise: float = 4.0  # std of additive Gaussian pixel noise, in 0..255 units
    enabled: bool = True

    def __post_init__(self):
        from driving.config import check_number

        for name in ("brightness", "contrast"):  # beyond 1 the factor's range reaches below 0 (a negative image)
            check_number(f"augment.{name}", getattr(self, name), what="a number in [0, 1]")
            if getattr(self, name) > 1:
                raise ValueError(f"augment.{name} must be a number in [0, 1], got {getattr(self, name)}")
        check_number("augment.noise", self.noise, what="a number >= 0 (pixel units)")


def fingerprint(ds: "Dataset | list[Dataset]") -> str:
    """Identifies a dataset's content: its config identity and the episode index (seeds, lengths); for
    several datasets, all of theirs in order (one dataset keeps its own fingerprint)."""
    if isinstance(ds, (list, tuple)):
        if len(ds) == 1:
            return fingerprint(ds[0])
        return hashlib.sha256(" ".join(fingerprint(d) for d in ds).encode()).hexdigest()[:16]
    h = hashlib.sha256(_config_bytes(ds))
    h.update(json.dumps([(r["seed"], r["length"]) for r in ds.index]).encode())
    return h.hexdigest()[:16]


def config_fingerprint(ds: "Dataset") -> str:
    """Identifies how a dataset was collected, whatever its episodes: one collection before and after
    it was extended (`episodes` raised) shares it."""
    return hashlib.sha256(_config_bytes(ds)).hexdigest()[:16]


def _config_bytes(ds: "Dataset") -> bytes:
    return json.dumps(ds.meta["config"], sort_keys=True).encode()


def check_distinct(paths: list, datasets: list[Dataset]) -> None:
    """One DatasetError where two datasets hold the same episodes (one collection config, a seed in
    both: a copy, or a larger collection beside a smaller one): each would hold out validation episodes
    that the other trains on."""
    for i, a in enumerate(datasets):
        for j in range(i + 1, len(datasets)):
            b = datasets[j]
            if a.meta.get("config") != b.meta.get("config"):
                continue
            both = {r["seed"] for r in a.index} & {r["seed"] for r in b.index}
            if both:
                raise DatasetError(f"datasets {paths[i]} and {paths[j]} hold the same episodes ({len(both)} seeds "
                                   "collected with one config: a copy, or two collections of one config), so "
                                   "validation would score episodes that training sees: list one of them (the "
                                   "larger), or collect the other with other seeds (seed=)")


def check_compatible(datasets: list[Dataset]) -> None:
    """One DatasetError naming the first dataset whose scenario, camera, action ranges or expert
    perception differ from the first one's."""
    first = datasets[0]

    def facts(ds: Dataset) -> dict:
        cam = ds.meta["camera"]
        return {"scenario": ds.meta["scenario"]["name"],
                **{f"camera.{k}": cam.get(k) for k in FRAME_KEYS},
                "action": ds.meta["action"],
                "expert perception": ds.meta["expert"].get("perception", "privileged")}

    want = facts(first)
    for ds in datasets[1:]:
        got = facts(ds)
        diff = [f"{k}: {want[k]!r} in {first.root}, {got[k]!r} in {ds.root}" for k in want if got[k] != want[k]]
        if diff:
            raise DatasetError(f"datasets trained on together must agree ({'; '.join(diff)}): train on datasets "
                               "collected for the same scenario with the same camera and expert")


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode indices for training and validation: by episode, never by frame."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class DeviceData:
    """All frames, labels and speeds of one or several datasets in memory, plus a sampler of stacked
    batches. `episodes` picks episodes per dataset (default all). Each frame carries its source (the
    dataset's position) and whether the student's action there differed from the label by more than
    `disagree_threshold` (DAgger datasets record what the student did; others never disagree)."""

    def __init__(self, ds, stack: int, device: torch.device, episodes=None, disagree_threshold: float = float("inf"),
                 plans: bool = False):
        datasets = list(ds) if isinstance(ds, (list, tuple)) else [ds]
        if episodes is None:
            episodes = [np.arange(len(d)) for d in datasets]
        elif not isinstance(ds, (list, tuple)):
            episodes = [episodes]
        parts, sources, disagree = [], [], []
        for k, (d, eps) in enumerate(zip(datasets, episodes)):
            student = bool(d.meta.get("dagger"))
            keys = ("frames", "expert_action", "speed") + (("student_action",) if student else ()) \
                + (("expert_plan",) if plans else ())
            for i in np.asarray(eps):
                try:
                    p = d.episode(int(i), keys)
                except DatasetError as e:
                    if plans and "expert_plan" in str(e):
                        raise DatasetError(f"dataset {d.root} has no expert plans (collected before they were "
                                           "recorded): collect it again, or train without net.plan_head") from None
                    raise
                parts.append(p)
                sources.append(np.full(len(p["frames"]), k, dtype=np.int64))
                disagree.append(np.abs(p["student_action"] - p["expert_action"]).max(axis=1) > disagree_threshold
                                if student else np.zeros(len(p["frames"]), dtype=bool))
        if not parts or not sum(len(p["frames"]) for p in parts):
            raise DatasetError(f"dataset {datasets[0].root} has no episodes: collect some with `driving collect`")
        frames = np.concatenate([p["frames"] for p in parts])
        lengths = np.array([len(p["frames"]) for p in parts])
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        if device.type == "cuda" and device.index is None:  # "cuda" means the current device: name it
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self.stack = stack
        self.n = len(frames)
        self.frames = _place(torch.from_numpy(frames), device)
        self.actions = torch.from_numpy(np.concatenate([p["expert_action"] for p in parts])).to(device)
        self.speed = torch.from_numpy(np.concatenate([p["speed"] for p in parts])).to(device)
        self.episode_start = torch.from_numpy(starts).to(device)
        self.source = torch.from_numpy(np.concatenate(sources)).to(device)
        self.disagree = torch.from_numpy(np.concatenate(disagree)).to(device)
        self.plan = (torch.from_numpy(np.concatenate([p["expert_plan"] for p in parts]).astype(np.int64)).to(device)
                     if plans else None)
        # frames of each source are contiguous: sampling by source share is an offset plus a uniform draw
        counts = np.bincount(np.concatenate(sources), minlength=len(datasets))
        self.source_count = torch.from_numpy(counts).to(device)
        self.source_offset = torch.from_numpy(np.cumsum(counts) - counts).to(device)
        self.on_device = self.frames.device == device
        self._shares: dict = {}

    def sample(self, n: int, gen: torch.Generator, shares=None) -> torch.Tensor:
        """n frame indices: uniform over all frames, or with `shares` (one per source) the expected
        fraction of the batch drawn from each source, uniform within it."""
        if shares is None:
            return torch.randint(0, self.n, (n,), generator=gen, device=self.device)
        key = tuple(float(s) for s in shares)
        if key not in self._shares:  # made once: a host-to-device copy cannot be part of a CUDA graph
            self._shares[key] = torch.tensor(key, dtype=torch.float32, device=self.device)
        p = self._shares[key] * (self.source_count > 0)
        src = torch.multinomial(p / p.sum(), n, replacement=True, generator=gen)
        u = torch.rand(n, generator=gen, device=self.device)
        within = (u * self.source_count[src]).long().clamp_max(self.source_count[src] - 1)
        return self.source_offset[src] + within

    def stacks(self, idx: torch.Tensor) -> torch.Tensor:
        """Frames (B, K, H, W[, C]) ending at `idx`, oldest first; repeats an episode's first frame
        where the stack would reach into the previous episode (as the env does after reset)."""
        offsets = torch.arange(-(self.stack - 1), 1, device=idx.device)
        j = torch.maximum(idx[:, None] + offsets[None, :], self.episode_start[idx][:, None])
        if self.on_device:
            return self.frames[j]
        return self.frames[j.cpu()].to(self.device, non_blocking=True)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = idx.to(self.device)
        return self.stacks(idx), self.speed[idx], self.actions[idx]

    def stats(self, shares=None) -> dict:
        """Normalisation statistics, from a strided subsample of frames (cheap, deterministic). With
        `shares` (as `sample` takes them) every frame counts as often as batches draw it, so the label
        spread that standardises the loss is the spread of what training sees."""
        step = max(1, self.n // 2048)
        if shares is None:
            f = self.frames[::step].float()
            return {"frame_mean": float(f.mean()), "frame_std": float(f.std().clamp_min(1.0)),
                    "speed_mean": float(self.speed.mean()), "speed_std": float(self.speed.std().clamp_min(0.1)),
                    "action_std": self.actions.std(dim=0).clamp_min(1e-3).tolist()}
        # per source: exact label and speed moments, frame moments from a strided subsample of its own
        # frames (a small source with a large share is not left to the whole dataset's stride), combined by
        # the share each source gets of a batch; second moments are made unbiased over all frames
        p = [float(x) if c else 0.0 for x, c in zip(shares, self.source_count.tolist())]
        if sum(p) <= 0:  # no share on any frame here (sampling refuses it first): the frames as they are
            return self.stats()
        moments = {"frame": [0.0, 0.0], "speed": [0.0, 0.0], "steer": [0.0, 0.0], "accel": [0.0, 0.0]}
        pixels = 0
        for k, share in enumerate(p):
            if share <= 0:
                continue
            lo, n = int(self.source_offset[k]), int(self.source_count[k])
            weight = share / sum(p)
            f = self.frames[lo:lo + n:max(1, n // 2048)].float().flatten(1)
            var, mean = torch.var_mean(f, dim=1, unbiased=False)  # per frame, no second copy of f
            pixels += f.numel()
            parts = {"frame": (mean.double(), (var + mean * mean).double()),
                     "speed": (self.speed[lo:lo + n].double(), self.speed[lo:lo + n].double() ** 2)}
            for j, name in enumerate(("steer", "accel")):
                a = self.actions[lo:lo + n, j].double()
                parts[name] = (a, a * a)
            for name, (x, x2) in parts.items():
                moments[name][0] += weight * float(x.mean())
                moments[name][1] += weight * float(x2.mean())

        def mean_std(name: str, n: int) -> tuple[float, float]:
            m, m2 = moments[name]
            return m, (max(m2 - m * m, 0.0) * n / max(n - 1, 1)) ** 0.5

        frame_mean, frame_std = mean_std("frame", pixels)
        drawn = sum(c for c, x in zip(self.source_count.tolist(), p) if x > 0)  # frames batches draw from
        speed_mean, speed_std = mean_std("speed", drawn)
        return {"frame_mean": frame_mean, "frame_std": max(frame_std, 1.0), "speed_mean": speed_mean,
                "speed_std": max(speed_std, 0.1),
                "action_std": [max(mean_std(name, drawn)[1], 1e-3) for name in ("steer", "accel")]}


def _place(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if frames.numel() < 0.5 * free:  # leave room for the model and activations
            return frames.to(device)
        return frames.pin_memory()
    return frames


def augment(frames: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Photometric augmentation of uint8 stacks (B, K, ...) -> float in 0..255, same per stack."""
    x = frames.to(torch.float32, copy=True)  # a copy: what follows works in place
    if not cfg.enabled:
        return x
    b = x.shape[0]
    shape = (b,) + (1,) * (x.dim() - 1)
    dev = x.device
    gain = 1 + (torch.rand(shape, generator=gen, device=dev) * 2 - 1) * cfg.brightness
    contrast = 1 + (torch.rand(shape, generator=gen, device=dev) * 2 - 1) * cfg.contrast
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    # ((x - mean) * contrast + mean) * gain, as one scale and one shift per stack: two passes over the batch
    x.mul_(contrast * gain).add_(mean * (1 - contrast) * gain)
    if cfg.noise > 0:
        x.add_(pixel_noise(x.shape, gen, dev), alpha=cfg.noise)
    return x.clamp_(0, 255)


_BANKS: dict = {}


def pixel_noise(shape: tuple, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise of `shape`. On the GPU drawn afresh (cheap, and graph-capturable); on the
    CPU a window at a random offset into a fixed bank of twice the size, drawn once: the generator's
    randn of a batch was more than half of the CPU data path (8.7 of ~15 ms at the demo's batch).
    A window of an i.i.d. sequence is i.i.d. standard normal; values recur across batches at shifted
    pixels, on other frames, which a photometric augmentation does not care about."""
    device = torch.device(device)
    n = int(np.prod(shape))
    if device.type != "cpu":
        return torch.randn(shape, generator=gen, device=device)
    bank = _BANKS.get(n)
    if bank is None:  # depends on the batch shape only, so a run and its resumption see the same bank
        bank = _BANKS[n] = torch.randn(2 * n, generator=torch.Generator().manual_seed(n))
    offset = int(torch.randint(0, n + 1, (1,), generator=gen))
    return bank[offset:offset + n].view(shape)
