"""What every policy network shares: input normalisation inside the model (so a checkpoint carries
it), frame-stack and speed inputs, outputs bounded to [-1, 1], an optional auxiliary speed head."""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch
from torch import nn


PLAN_CLASSES = 3  # lane: left, keep, right; speed: brake, hold, accelerate
LANE_LEFT, LANE_KEEP, LANE_RIGHT = 0, 1, 2  # lane classes: the expert's lane plan -1, 0, +1, shifted
SPEED_PLAN_EDGE = 0.2  # normalised accel label below -edge: brake, above +edge: accelerate


def plan_classes(expert_plan: torch.Tensor, accel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class indices of the expert's plan: lane from its lane plan (-1, 0, +1), speed from its label."""
    speed = (accel > -SPEED_PLAN_EDGE).long() + (accel > SPEED_PLAN_EDGE).long()
    return (expert_plan.long() + 1).clamp(0, 2), speed


@dataclass
class ModelConfig:
    """Options of the network (its architecture is picked by name: `model=` in the train config)."""

    stack: int = 2  # frames per input (1..K), newest last
    use_speed: bool = True  # ego speed as an input to the head
    aux_speed: bool = True  # auxiliary head predicting the ego speed from frames only
    dropout: float = 0.1
    width: float = 1.0  # channel multiplier
    weights: str | None = None  # optional local path to backbone weights (never downloaded)
    # classify the expert's discrete plan (lane: left/keep/right; speed: brake/hold/accelerate) and
    # condition the action regression on it: the true plan in training, the predicted one when driving,
    # so a decision is taken rather than averaged (a half lane change is neither of the expert's modes)
    plan_head: bool = False
    # with plan_head, when driving: change lanes only where the head gives that side at least this
    # probability (0: the most probable class). A false start costs a swerve and a swerve back (the
    # student's lane changes ping-pong where a slow drift reads as one in progress); a late one, a step.
    plan_threshold: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"net.dropout is a probability: use a value in [0, 1), got {self.dropout}")
        if not (self.width > 0 and math.isfinite(self.width)):
            raise ValueError(f"net.width multiplies the channels: use a value > 0, got {self.width}")
        if not 0.0 <= self.plan_threshold < 1.0:
            raise ValueError(f"net.plan_threshold must be in [0, 1) (0: the most probable lane class), "
                             f"got {self.plan_threshold}")
        if self.plan_threshold and not self.plan_head:
            raise ValueError("net.plan_threshold needs net.plan_head=true (it thresholds the plan head's "
                             "lane classes): set both, or drop plan_threshold")


@dataclass
class InputSpec:
    """Shapes and normalisation of the model's inputs, taken from the dataset."""

    height: int
    width: int
    channels: int  # 1 grayscale, 3 RGB
    frame_mean: float = 0.0
    frame_std: float = 255.0
    speed_mean: float = 0.0
    speed_std: float = 1.0


class Policy(nn.Module):
    """frames uint8 (B, K, H, W[, C]) + speed (B,) -> (action (B, 2) in [-1, 1], speed prediction)."""

    def __init__(self, cfg: ModelConfig, spec: InputSpec, backbone: nn.Module, features: int):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.name = ""
        self.backbone = backbone
        self.register_buffer("frame_mean", torch.tensor(float(spec.frame_mean)))
        self.register_buffer("frame_std", torch.tensor(float(spec.frame_std)))
        self.register_buffer("speed_mean", torch.tensor(float(spec.speed_mean)))
        self.register_buffer("speed_std", torch.tensor(float(spec.speed_std)))
        extra = 1 if cfg.use_speed else 0
        if cfg.plan_head:
            self.plan_lane = nn.Linear(features + extra, PLAN_CLASSES)
            self.plan_speed = nn.Linear(features + extra, PLAN_CLASSES)
        cond = 2 * PLAN_CLASSES if cfg.plan_head else 0
        self.head = nn.Sequential(
            nn.Linear(features + extra + cond, 200), nn.ELU(), nn.Dropout(cfg.dropout),
            nn.Linear(200, 50), nn.ELU(), nn.Linear(50, 10), nn.ELU(), nn.Linear(10, 2),
        )
        self.speed_head = nn.Linear(features, 1) if cfg.aux_speed else None

    @property
    def in_channels(self) -> int:
        return self.cfg.stack * self.spec.channels

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, K, H, W[, C]) -> float (B, K*C, H, W), standardised."""
        if frames.dim() == 5:  # RGB: channels last in frames, first in the network
            frames = frames.permute(0, 1, 4, 2, 3)
        b = frames.shape[0]
        x = frames.reshape(b, -1, frames.shape[-2], frames.shape[-1]).float()
        return (x - self.frame_mean) / self.frame_std

    def decide_lane(self, lane_logits: torch.Tensor) -> torch.Tensor:
        """The lane class to drive: the most probable, or with cfg.plan_threshold the likelier side
        where its probability reaches the threshold, else keep (no host sync: graph-capturable)."""
        if not self.cfg.plan_threshold:
            return lane_logits.argmax(1)
        p = torch.softmax(lane_logits.float(), 1)
        side = torch.where(p[:, LANE_LEFT] >= p[:, LANE_RIGHT], LANE_LEFT, LANE_RIGHT)
        sure = p.gather(1, side[:, None])[:, 0] >= self.cfg.plan_threshold
        return torch.where(sure, side, torch.full_like(side, LANE_KEEP))

    def forward(self, frames: torch.Tensor, speed: torch.Tensor | None = None, normalised: bool = False,
                plan: tuple | None = None, return_plan: bool = False):
        """With a plan head: `plan` = (lane class, speed class) per sample conditions the action (training);
        without it the predicted classes do. `return_plan` adds the (lane, speed) logits."""
        x = frames if normalised else self.normalise(frames)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"model expects {self.in_channels} input channels "
                             f"(stack {self.cfg.stack} x {self.spec.channels}), got {x.shape[1]}")
        f = self.backbone(x)
        z = f
        if self.cfg.use_speed:
            if speed is None:
                raise ValueError("this model takes the ego speed as input: pass speed")
            s = (speed.float().reshape(-1, 1) - self.speed_mean) / self.speed_std
            z = torch.cat([f, s.to(f.dtype)], dim=1)
        logits = None
        if self.cfg.plan_head:
            logits = (self.plan_lane(z), self.plan_speed(z))
            chosen = plan if plan is not None else (self.decide_lane(logits[0]), logits[1].argmax(1))
            classes = torch.arange(PLAN_CLASSES, device=z.device)
            z = torch.cat([z, *((c[:, None] == classes).to(z.dtype) for c in chosen)], dim=1)  # one-hot, no sync
        action = torch.tanh(self.head(z))
        speed_pred = None
        if self.speed_head is not None:
            speed_pred = self.speed_head(f).squeeze(1) * self.speed_std + self.speed_mean
        if return_plan:
            return action, speed_pred, logits
        return action, speed_pred
