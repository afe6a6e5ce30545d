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

from driving.data.format import Dataset, DatasetError


@dataclass
class AugmentConfig:
    brightness: float = 0.2  # multiplicative jitter: x * U(1 - b, 1 + b)
    contrast: float = 0.2  # (x - mean) * U(1 - c, 1 + c) + mean
    noise: float = 4.0  # std of additive Gaussian pixel noise, in 0..255 units
    enabled: bool = True


def fingerprint(ds: Dataset) -> str:
    """Identifies a dataset's content: its config identity and the episode index (seeds, lengths)."""
    h = hashlib.sha256(json.dumps(ds.meta["config"], sort_keys=True).encode())
    h.update(json.dumps([(r["seed"], r["length"]) for r in ds.index]).encode())
    return h.hexdigest()[:16]


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode indices for training and validation: by episode, never by frame."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction)) if n > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and n > 1 else 0), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class DeviceData:
    """All frames, labels and speeds of a dataset in memory, plus a sampler of stacked batches."""

    def __init__(self, ds: Dataset, stack: int, device: torch.device, episodes=None):
        if len(ds) == 0 or ds.frames == 0:
            raise DatasetError(f"dataset {ds.root} has no episodes: collect some with `driving collect`")
        episodes = np.arange(len(ds)) if episodes is None else np.asarray(episodes)
        parts = [ds.episode(int(i), ("frames", "expert_action", "speed")) for i in episodes]
        frames = np.concatenate([p["frames"] for p in parts])
        lengths = np.array([len(p["frames"]) for p in parts])
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        self.device = device
        self.stack = stack
        self.n = len(frames)
        self.frames = _place(torch.from_numpy(frames), device)
        self.actions = torch.from_numpy(np.concatenate([p["expert_action"] for p in parts])).to(device)
        self.speed = torch.from_numpy(np.concatenate([p["speed"] for p in parts])).to(device)
        self.episode_start = torch.from_numpy(starts).to(device)
        self.on_device = self.frames.device == device

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

    def stats(self) -> dict:
        """Normalisation statistics, from a strided subsample of frames (cheap, deterministic)."""
        step = max(1, self.n // 2048)
        f = self.frames[::step].float()
        return {"frame_mean": float(f.mean()), "frame_std": float(f.std().clamp_min(1.0)),
                "speed_mean": float(self.speed.mean()), "speed_std": float(self.speed.std().clamp_min(0.1)),
                "action_std": self.actions.std(dim=0).clamp_min(1e-3).tolist()}


def _place(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if frames.numel() < 0.5 * free:  # leave room for the model and activations
            return frames.to(device)
        return frames.pin_memory()
    return frames


def augment(frames: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Photometric augmentation of uint8 stacks (B, K, ...) -> float in 0..255, same per stack."""
    x = frames.float()
    if not cfg.enabled:
        return x
    b = x.shape[0]
    shape = (b,) + (1,) * (x.dim() - 1)
    dev = x.device
    gain = 1 + (torch.rand(shape, generator=gen, device=dev) * 2 - 1) * cfg.brightness
    contrast = 1 + (torch.rand(shape, generator=gen, device=dev) * 2 - 1) * cfg.contrast
    mean = x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    x = (x - mean) * contrast + mean
    x = x * gain
    if cfg.noise > 0:
        x = x + torch.randn(x.shape, generator=gen, device=dev) * cfg.noise
    return x.clamp_(0, 255)
