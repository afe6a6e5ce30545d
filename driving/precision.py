"""How a training step computes: bf16 autocast and channels-last layout, where the hardware has them.

bf16 autocast halves what convolutions read and write; on CUDA it is the default since the first GPU
runs. CPUs differ: one with native bf16 arithmetic (AVX512-BF16 or AMX tiles, e.g. AMD Zen 4,
Intel Sapphire Rapids) trains PilotNet 1.5-1.65x as fast with it, one without emulates bf16 and is
slower than fp32 (docs/FIGURES.md, `python scripts/bench_train.py`: its line (f)). So `amp` means bf16
wherever it is native, fp32 elsewhere, and the run records which one it used.
"""
from __future__ import annotations

import contextlib
import functools

import torch


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (oneDNN then runs bf16 convolutions natively)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume not, fp32 is always correct
        return False


def uses_bf16(device: torch.device, amp: bool) -> bool:
    """Whether `amp` gives bf16 autocast on `device` (always on CUDA; on a CPU only where bf16 is native)."""
    return amp and (device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()))


def autocast(device: torch.device, amp: bool):
    """The context a forward pass runs in. No weight-cast cache: a CUDA graph may not keep tensors cached
    across captures, and eager steps then compute exactly what the graph does."""
    if uses_bf16(device, amp):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def uses_channels_last(device: torch.device, channels_last: bool, amp: bool) -> bool:
    """Channels-last layout: on CUDA, and on a CPU that computes in bf16 (oneDNN's fast bf16
    convolutions are channels-last; in fp32 on a CPU it measured no faster)."""
    return channels_last and (device.type == "cuda" or uses_bf16(device, amp))


def precision_name(device: torch.device, amp: bool) -> str:
    return "bf16 autocast" if uses_bf16(device, amp) else "fp32"
