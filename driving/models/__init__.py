"""Policy networks, picked by name from the config."""
from __future__ import annotations

from driving.errors import UserError
from driving.models.base import InputSpec, ModelConfig, Policy
from driving.models.pilotnet import build_pilotnet
from driving.models.resnet import build_resnet18
from sim.camera import MAX_STACK

MODELS = {"pilotnet": build_pilotnet, "resnet18": build_resnet18}


def build_model(name: str, cfg: ModelConfig, spec: InputSpec) -> Policy:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if not 1 <= cfg.stack <= MAX_STACK:
        raise UserError(f"net.stack must be within 1..{MAX_STACK} (frames of history), not {cfg.stack}")
    if cfg.weights and name != "resnet18":
        raise UserError(f"net.weights loads backbone weights for resnet18 only, not {name}: drop net.weights")
    model = MODELS[name](cfg, spec)
    model.name = name
    return model


__all__ = ["MODELS", "InputSpec", "ModelConfig", "Policy", "build_model"]
