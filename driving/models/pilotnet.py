"""PilotNet (Bojarski et al. 2016) adapted to small top-down frames: 5 conv + 3 FC layers, ~250k
parameters at the default 128x64 input."""
from __future__ import annotations

import torch
from torch import nn

from driving.models.base import InputSpec, ModelConfig, Policy

# (out channels, kernel, stride) of the five convolutions
LAYERS = ((24, 5, 2), (36, 5, 2), (48, 5, 2), (64, 3, 1), (64, 3, 1))


def _out_size(n: int, pad: bool) -> int:
    for _, k, s in LAYERS:
        n = (n + 2 * (k // 2 if pad else 0) - k) // s + 1
    return n


def build_pilotnet(cfg: ModelConfig, spec: InputSpec) -> Policy:
    # Unpadded convolutions as in the paper; frames too small for them (< ~61 px) get 'same' padding.
    pad = min(_out_size(spec.height, False), _out_size(spec.width, False)) < 1
    cin = cfg.stack * spec.channels
    layers = []
    for cout, k, s in LAYERS:
        cout = max(4, int(round(cout * cfg.width)))
        layers += [nn.Conv2d(cin, cout, k, stride=s, padding=k // 2 if pad else 0), nn.BatchNorm2d(cout), nn.ELU()]
        cin = cout
    backbone = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        n = backbone.eval()(torch.zeros(1, cfg.stack * spec.channels, spec.height, spec.width)).shape[1]
    backbone.train()
    return Policy(cfg, spec, backbone, n)
