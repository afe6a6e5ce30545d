"""torchvision ResNet-18 as a backbone, its first convolution adapted to the camera's channels.
Weights are never fetched from the internet: `weights` may point to a local state dict."""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from driving.errors import UserError
from driving.models.base import InputSpec, ModelConfig, Policy


def build_resnet18(cfg: ModelConfig, spec: InputSpec) -> Policy:
    net = torchvision.models.resnet18(weights=None)
    if cfg.weights:
        path = Path(cfg.weights)
        fix = ("pass a local torchvision resnet18 state dict (torch.save(torchvision.models.resnet18(...)"
               ".state_dict(), PATH)) or drop net.weights")
        if not path.is_file():
            raise UserError(f"net.weights {path} not found: {fix}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - torch raises several types for files that are no state dict
            said = " ".join(str(e).split())  # torch's message spans lines: one line, its start
            raise UserError(f"net.weights {path} is not a resnet18 state dict ({type(e).__name__}: {said[:160]}): "
                            f"{fix}") from None
    cin = cfg.stack * spec.channels
    old = net.conv1
    conv1 = nn.Conv2d(cin, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():  # keep pretrained filters meaningful: mean over RGB, spread over inputs
        conv1.weight.copy_(old.weight.mean(dim=1, keepdim=True).repeat(1, cin, 1, 1) * 3 / cin)
    net.conv1 = conv1
    features = net.fc.in_features
    net.fc = nn.Identity()
    return Policy(cfg, spec, net, features)
