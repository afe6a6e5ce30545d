"""Policy networks, picked by name from the config."""
from __future__ import annotations

from driving.errors import UserError
from driving.models.base import InputSpec, ModelConfig, Policy
from driving.models.pilotnet import build_pilotnet
from driving.models.resnet import build_resnet18

MODELS = {"pilotnet": build_pilotnet, "resnet18": build_resnet18}


def build_model(name: str, cfg: ModelConfig, spec: InputSpec) -> Policy:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if cfg.stack < 1:
        raise UserError("net.stack must be >= 1")
    if cfg.weights and name != "resnet18":
        raise UserError(f"net.weights loads backbone weights for resnet18 only, not {name}: drop net.weights")
    model = MODELS[name](cfg, spec)
    model.name = name
    return model


__all__ = ["MODELS", "InputSpec", "ModelConfig", "Policy", "build_model"]
