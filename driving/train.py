"""Behaviour cloning: frames (+ speed) -> the expert's [steer, accel].

Read top to bottom: config, setup (device, data, model, optimiser, resume), the loop (sample ->
augment -> forward -> weighted loss -> step), validation, checkpoints, logs. Runs on one device, or
under `torchrun --nproc-per-node N` with DDP (each rank samples its own indices; gradients are
averaged; rank 0 writes).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from driving import atomic, checkpoint, precision
from driving.config import (ENVS_PER_WORKER, check_envs_per_worker, check_episodes, check_number, check_seed,
                            config_diff, to_dict)
from driving.data.format import FRAME_KEYS, Dataset
from driving.data.tensors import (
    AugmentConfig,
    DeviceData,
    augment,
    check_compatible,
    check_distinct,
    config_fingerprint,
    fingerprint,
    split_episodes,
)
from driving.errors import UserError
from driving.folder_lock import writing
from driving.models import InputSpec, ModelConfig, build_model
from driving.models.base import plan_classes
from driving.policy import pick_device
from driving.step_graph import Stepper, load_optimiser_state, lr_as_tensor, plain_lr_state
from sim.metrics import METRICS_VERSION


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0  # max global grad norm; 0 disables

    def __post_init__(self):
        for name in ("lr", "weight_decay", "warmup_steps", "min_lr_ratio", "grad_clip"):
            check_number(f"optim.{name}", getattr(self, name))
        if self.lr == 0:  # every step would leave the weights as they were (AdamW's decay is scaled by lr)
            raise ValueError("optim.lr must be > 0: at 0 training saves the initial weights as a trained policy")
        if self.min_lr_ratio > 1:  # the schedule would rise to it after the warm-up
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1] (the share of lr the cosine ends at), "
                             f"got {self.min_lr_ratio}")


@dataclass
class TrainEvalConfig:
    """A short closed-loop evaluation during training; `best` points at the best checkpoint by it."""

    every: int = 0  # steps between evaluations; 0 = never
    episodes: int = 4
    scenario: str | None = None  # default: the dataset's scenario
    seed: int = 2_000_000  # fixed seeds, apart from collection (0..) and final evaluation (1e6..)
    workers: int = 0
    envs_per_worker: int = ENVS_PER_WORKER
    max_steps: int | None = None
    video: bool = True  # render the worst episode and log it

    def __post_init__(self):
        if self.every < 0:
            raise ValueError(f"eval.every must be >= 0 (0: never), got {self.every}")
        check_episodes("eval.", self.episodes, self.seed, self.workers, self.max_steps)
        check_envs_per_worker("eval.", self.envs_per_worker)


_WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")  # what wandb's settings accept


@dataclass
class WandbConfig:
    mode: str = "offline"  # online | offline | disabled ; offline works with no network
    project: str = "driving"
    entity: str | None = None

    def __post_init__(self):
        if self.mode not in _WANDB_MODES:  # a typo: wandb itself warned in four lines and logged nothing
            raise ValueError(f"wandb.mode must be one of {', '.join(_WANDB_MODES)}, got {self.mode!r}")


@dataclass
class TrainConfig:
    dataset: Any = "data/highway"  # a dataset folder, or a list of folders trained on together
    dataset_weights: Optional[list[float]] = None  # with several datasets: each one's share of a batch
    init_from: Optional[str] = None  # warm start: a checkpoint's weights and normalisation (same model)
    out: str = "runs/pilotnet"
    model: str = "pilotnet"  # pilotnet | resnet18
    net: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 2000
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    loss: str = "l1"  # l1 | mse
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # steer, accel
    standardise_outputs: bool = True  # divide each output's error by its label std
    aux_speed_weight: float = 0.05
    # DAgger datasets record the student's action: frames where it differs from the label by more than
    # the threshold (either output, normalised) weigh `disagree_weight` times as much in the loss.
    disagree_threshold: float = 0.3
    disagree_weight: float = 1.0
    plan_weight: float = 1.0  # with net.plan_head: weight of the plan classification loss (cross-entropy)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    val_fraction: float = 0.1
    val_every: int = 500
    log_every: int = 50
    checkpoint_every: int = 1000
    amp: bool = True  # bf16 autocast on CUDA and on CPUs with native bf16 (driving/precision.py)
    channels_last: bool = True  # where bf16 autocast is on
    compile: bool = False
    cuda_graph: bool = True  # on CUDA: capture the whole step once and replay it (same results, no launch overhead)
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    eval: TrainEvalConfig = field(default_factory=TrainEvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def __post_init__(self):
        if self.loss not in ("l1", "mse"):
            raise ValueError(f"loss must be l1 or mse, got {self.loss!r}")
        if len(self.loss_weights) != 2:
            raise ValueError("loss_weights must be [steer, accel]")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        for k in ("log_every", "val_every", "checkpoint_every"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1 (steps between events; more than `steps` means only at the end)")
        if not 0 <= self.val_fraction < 1:
            raise ValueError("val_fraction must be in [0, 1)")
        paths = self.datasets
        if not paths or not all(isinstance(d, str) and d for d in paths):
            raise ValueError(f"dataset must be a folder or a list of folders, e.g. dataset=[data/a,data/b]; "
                             f"got {self.dataset!r}")
        real = [os.path.realpath(d) for d in paths]
        if len(set(real)) != len(real):
            twice = next(d for d, r in zip(paths, real) if real.count(r) > 1)
            raise ValueError(f"dataset lists {twice} twice (each copy would hold out other validation episodes, "
                             "which the other trains on): list each dataset once, and weigh it with dataset_weights")
        if self.dataset_weights is not None and (len(self.dataset_weights) != len(paths)
                                                 or min(self.dataset_weights) < 0 or sum(self.dataset_weights) <= 0):
            raise ValueError(f"dataset_weights must give one share >= 0 per dataset ({len(paths)}), not all 0; "
                             f"got {self.dataset_weights}")
        check_seed("seed", self.seed)
        if self.dataset_weights is not None:
            for w in self.dataset_weights:
                check_number("dataset_weights", w, what="shares >= 0")
        for w in self.loss_weights:
            check_number("loss_weights", w, what="weights >= 0")
        if not any(self.loss_weights):
            raise ValueError("loss_weights are both 0: the action would learn nothing; give steer or accel a weight > 0")
        check_number("disagree_weight", self.disagree_weight, what="a number > 0")
        check_number("disagree_threshold", self.disagree_threshold)
        check_number("plan_weight", self.plan_weight)
        check_number("aux_speed_weight", self.aux_speed_weight)
        from driving.models import MODELS

        if self.model not in MODELS:  # here, not when the model is built: dagger and scoreboard collect first
            raise ValueError(f"unknown model {self.model!r}; known models: {', '.join(MODELS)}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: torch's default), got {self.threads}")
        if self.disagree_weight <= 0 or self.disagree_threshold < 0:
            raise ValueError("disagree_weight must be > 0 and disagree_threshold >= 0")

    @property
    def datasets(self) -> list:
        return list(self.dataset) if isinstance(self.dataset, (list, tuple)) else [self.dataset]


# Keys that may change between an interrupted run and its resumption without changing the result.
_RUN_ONLY = ("steps", "device", "log_every", "val_every", "checkpoint_every", "compile", "cuda_graph", "threads",
             "wandb", "eval")


def _identity(cfg: TrainConfig) -> dict:
    d = to_dict(cfg)
    for k in _RUN_ONLY:
        d.pop(k)
    return d


def _comparable(identity: dict) -> dict:
    """A run's identity as resuming compares it: without `out` (the folder being resumed is the run,
    wherever it was moved), `dataset` (compared by content: the fingerprint) and `init_from` (by the
    checkpoint it names: `_same_init`), so a relative path given from another folder, or a project
    moved as a whole, resumes."""
    d = dict(identity)
    for k in ("out", "dataset", "init_from"):
        d.pop(k, None)
    return d


def _same_init(old: str | None, recorded: dict | None, now: str | None) -> bool:
    """Whether a resumed run's init_from names the checkpoint its first part started from: the same
    files, or the same run and step (`recorded`) wherever they are now."""
    if not old or not now:
        return not old and not now
    if os.path.realpath(old) == os.path.realpath(now):
        return True
    try:
        meta = checkpoint.load_meta(checkpoint.resolve(now))
    except UserError:
        return False
    return recorded is not None and {"run_id": meta.get("run_id"), "step": meta.get("step")} == recorded


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio at cfg.steps."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def _param_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _rng_state(gen: torch.Generator) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "sampler": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator, step: int = 0) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    try:
        gen.set_state(state["sampler"])
    except RuntimeError:  # a CPU and a CUDA generator's states differ in kind: no exact resume across them
        gen.manual_seed(int.from_bytes(hashlib.sha256(state["sampler"].numpy().tobytes()).digest()[:7], "big") + step)
        print(f"warning: this run was interrupted on another kind of device ({gen.device.type} now): it resumes, "
              "but not bit for bit as an uninterrupted run would", file=sys.stderr)
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError:  # saved with another number of GPUs
            pass


def _row_step(line: str) -> int | None:
    """The step of a metrics.jsonl row; None for a blank or torn line (a kill or a full disk mid-append)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row.get("step", 0) if isinstance(row, dict) else None


class MetricsLog:
    """metrics.jsonl in the run folder (always) and wandb (when enabled), rank 0 only."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, active: bool, resume_step: int, run_id: str):
        self.path = run_dir / "metrics.jsonl"
        self.active = active
        self.wandb = None
        if not active:
            return
        if self.path.is_file():  # drop rows logged after the checkpoint we resume, and a torn last line
            rows = [line for line in self.path.read_text(errors="replace").splitlines()
                    if _row_step(line) is not None and _row_step(line) <= resume_step]
            atomic.write_bytes(self.path, ("\n".join(rows) + "\n" if rows else "").encode())
        mode = os.environ.get("WANDB_MODE") or cfg.wandb.mode  # the environment's choice wins, as in wandb
        if mode != "disabled":
            try:
                os.environ.setdefault("WANDB_SILENT", "true")  # our own bar and log say enough
                import wandb

                self.wandb = wandb.init(project=cfg.wandb.project, entity=cfg.wandb.entity, id=run_id,
                                        resume="allow", mode=mode, dir=str(run_dir),
                                        config=to_dict(cfg), name=run_dir.name)
            except Exception as e:  # logging must never kill training
                print(f"warning: wandb disabled ({type(e).__name__}: {e})")

    def log(self, row: dict, video: Path | None = None) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            extra = {}
            if video is not None:
                import wandb

                extra["eval_video"] = wandb.Video(str(video), format="mp4")
            self.wandb.log({**{k: v for k, v in row.items() if k != "step"}, **extra}, step=row["step"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def _loss(pred, target, speed_pred, speed, weights, cfg: TrainConfig, sample_weight=None):
    err = pred.float() - target
    per = err.abs() if cfg.loss == "l1" else err ** 2
    if sample_weight is None:
        per_output = per.mean(dim=0)  # (2,) steer, accel
    else:  # a weighted mean: the loss keeps its scale whatever share of the batch is weighted up
        per_output = (per * sample_weight[:, None]).sum(dim=0) / sample_weight.sum()
    total = (per_output * weights).sum()
    out = {"loss_steer": per_output[0], "loss_accel": per_output[1]}
    if speed_pred is not None and cfg.aux_speed_weight > 0:
        ls = (speed_pred.float() - speed).abs().mean() / 10.0  # ~m/s scaled to O(1)
        total = total + cfg.aux_speed_weight * ls
        out["loss_speed"] = ls
    out["loss"] = total
    return out


@torch.no_grad()
def validate(model, data: DeviceData, weights, cfg: TrainConfig, chunk: int = 1024) -> dict:
    model.eval()
    sums, n = {}, 0
    for start in range(0, data.n, chunk):
        idx = torch.arange(start, min(start + chunk, data.n), device=data.device)
        frames, speed, target = data.batch(idx)
        with _autocast(data.device, cfg):
            pred, sp = model(frames, speed)
        parts = _loss(pred, target, sp, speed, weights, cfg)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
        n += len(idx)
    model.train()
    return {f"val_{k}": v / n for k, v in sums.items()}


def _autocast(device: torch.device, cfg: TrainConfig):
    return precision.autocast(device, cfg.amp)


def sample_batch(data: DeviceData, n: int, gen: torch.Generator, cfg: TrainConfig, with_weights: bool = False):
    """n random samples: stacked, augmented frames (float 0..255), speeds, expert labels (and, with
    `with_weights`, each sample's loss weight: None where no sample is weighted up; and the expert's
    plan classes where the data carries plans, else None)."""
    idx = data.sample(n, gen, cfg.dataset_weights)
    frames, speed, target = data.batch(idx)
    x = augment(frames, cfg.augment, gen)
    if not with_weights:
        return _to_channels_last(x, cfg), speed, target
    plan = plan_classes(data.plan[idx], target[:, 1]) if data.plan is not None else None
    return _to_channels_last(x, cfg), speed, target, sample_weights(data, idx, cfg), plan


def sample_weights(data: DeviceData, idx: torch.Tensor, cfg: TrainConfig):
    if cfg.disagree_weight == 1.0:
        return None
    return 1.0 + (cfg.disagree_weight - 1.0) * data.disagree[idx].float()


def _to_channels_last(x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    if x.dim() == 4 and precision.uses_channels_last(x.device, cfg.channels_last, cfg.amp):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def optimisation_step(fwd, model, opt, sched, x, speed, target, weights, cfg: TrainConfig,
                      sample_weight=None, plan=None) -> dict:
    with _autocast(x.device, cfg):
        if plan is None:
            pred, speed_pred = fwd(x, speed)
        else:  # the action is conditioned on the expert's true plan; the plan heads learn to predict it
            pred, speed_pred, logits = fwd(x, speed, plan=plan, return_plan=True)
    parts = _loss(pred, target, speed_pred, speed, weights, cfg, sample_weight)
    if plan is not None:
        lp = sum(torch.nn.functional.cross_entropy(lg.float(), c) for lg, c in zip(logits, plan))
        parts["loss_plan"] = lp
        parts["loss"] = parts["loss"] + cfg.plan_weight * lp
    opt.zero_grad(set_to_none=True)
    parts["loss"].backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    opt.step()
    if sched is not None:
        sched.step()
    # detached: a kept loss would keep this step's autograd graph (and its gradient streams) alive
    return {k: v.detach() for k, v in parts.items()}


def make_optimiser(model, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; on CUDA capturable with a tensor learning rate, so one optimiser serves the eager and the
    graphed step (a run resumes in either)."""
    if device.type != "cuda":
        return torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                            capturable=True, foreach=True)
    lr_as_tensor(opt, device)
    return opt


def use_graph(cfg: TrainConfig, device: torch.device, data: DeviceData, distributed: bool) -> bool:
    """CUDA graphs need the whole step on the GPU in one process. Not combined with torch.compile yet:
    that pairing is unmeasured (scripts/bench_train.py --compile measures it)."""
    return cfg.cuda_graph and device.type == "cuda" and data.on_device and not distributed and not cfg.compile


def train(cfg: TrainConfig, progress: bool = True, stop_at: int | None = None) -> dict:
    """Train (or resume) the run in cfg.out. `stop_at` ends early after that step, as an interruption
    would, leaving a checkpoint to resume from. Returns a summary dict."""
    if _dist_info()[0] != 0:  # rank 0 writes the run folder and holds its lock
        return _train(cfg, progress, stop_at)
    _refuse_a_config_of_the_users(Path(cfg.out))
    with writing(cfg.out, "driving train", holds="a training run"):
        return _train(cfg, progress, stop_at)


_CONFIG_MARK = "# driving train: this run's resolved config, written by the command (edit a copy)\n"


def _refuse_a_config_of_the_users(run_dir: Path) -> None:
    """The run writes OUT/config.yaml: one that is there before any checkpoint and was not written by a
    run is the user's (`driving train config.yaml out=.` replaced the very file it read)."""
    config = run_dir / "config.yaml"
    if not config.is_file() or (run_dir / "checkpoints").is_dir() or (run_dir / "metrics.jsonl").is_file():
        return  # (a run an older version stopped before its first checkpoint has its metrics there)
    try:
        with open(config, encoding="utf-8", errors="replace") as f:
            first = f.readline()
    except OSError:
        return  # unreadable: the lock's own checks name the folder
    if first != _CONFIG_MARK:
        raise UserError(f"{config} was not written by `driving train` (the run would replace it with its resolved "
                        "config): give another out= folder")


def _train(cfg: TrainConfig, progress: bool = True, stop_at: int | None = None) -> dict:
    rank, world, local_rank = _dist_info()
    distributed = world > 1
    if distributed and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo"
        dist.init_process_group(backend)
    device = pick_device(cfg.device)
    if device.type == "cuda" and distributed:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.batch_size % world:
        raise UserError(f"batch_size {cfg.batch_size} must divide by the number of processes {world}")

    # -- data --------------------------------------------------------------------------------
    datasets = [Dataset.open(d) for d in cfg.datasets]
    for path, d in zip(cfg.datasets, datasets):
        if len(d) == 0:
            raise UserError(f"dataset {path} has no episodes: collect some with `driving collect`")
    check_compatible(datasets)
    check_distinct(cfg.datasets, datasets)
    for d in datasets:
        if d.unfinished and rank == 0:
            print(f"warning: {d.unfinished}", file=sys.stderr)
    ds = datasets[0]  # all agree on scenario, camera, action spec and expert
    cam = ds.meta["camera"]
    data_fingerprint = fingerprint(datasets)
    what = cfg.datasets[0] if len(datasets) == 1 else f"datasets {cfg.datasets}"

    # -- run folder and resume ---------------------------------------------------------------
    run_dir = Path(cfg.out)
    ckpt_root = run_dir / "checkpoints"
    note = checkpoint.repair_last(ckpt_root) if ckpt_root.is_dir() and rank == 0 else None
    if note:
        print(f"warning: {note}")
    if distributed:
        dist.barrier()  # every rank sees the repaired pointer
    resume = (ckpt_root / "last").exists()
    start, ckpt_meta, init_meta = 0, None, None
    if resume:
        ckpt = checkpoint.resolve(ckpt_root / "last")
        resume_fix = checkpoint.resume_fix(ckpt)
        ckpt_meta = checkpoint.load_meta(ckpt, resume_fix)
        old = ckpt_meta["train_identity"]
        if _comparable(old) != _comparable(_identity(cfg)):
            diff = config_diff(_comparable(old), _comparable(_identity(cfg)))
            raise UserError(f"{run_dir} holds a run with a different config ({diff}): "
                            "use the same config to resume, or another out= folder")
        if not _same_init(old.get("init_from"), ckpt_meta.get("init_from_run"), cfg.init_from):
            raise UserError(f"{run_dir} holds a run warm-started from {old.get('init_from')!r}, this run names "
                            f"{cfg.init_from!r}: use the same init_from to resume, or another out= folder")
        if ckpt_meta["camera"] != cam:
            raise UserError(f"dataset {what} has camera {cam}, the checkpoint in {run_dir} was "
                            f"trained on {ckpt_meta['camera']}: use a dataset with the same camera")
        if ckpt_meta["dataset"]["fingerprint"] != data_fingerprint:
            raise UserError(f"{what} holds other episodes than {run_dir} was trained on (trained on "
                            f"{ckpt_meta['dataset']['path']}; changed since, or another dataset): use another out= "
                            "folder to train on it")
        start = ckpt_meta["step"]
        spec = InputSpec(**ckpt_meta["input"])
        if start >= cfg.steps and stop_at is None:  # nothing left: no need to load the data
            if rank == 0:
                more = (f" (steps={cfg.steps} asks for fewer: nothing to do; steps above {start} train on, another "
                        "out= folder trains a shorter run)") if start > cfg.steps else ""
                print(f"{run_dir} already trained to step {start}{more}")
            return {"run_dir": run_dir, "step": start, "param_digest": None, "ranks_agree": True,
                    "already": True}
    elif cfg.init_from:
        init_ckpt, init_meta = warm_start_meta(cfg, cam)
    seeds = split_seeds(cfg, datasets, ckpt_meta if resume else None, init_meta, rank == 0)
    splits = [split_episodes(len(d), cfg.val_fraction, s) for d, s in zip(datasets, seeds)]
    data = DeviceData(datasets, cfg.net.stack, device, [t for t, _ in splits], cfg.disagree_threshold,
                      cfg.net.plan_head)
    val = (DeviceData(datasets, cfg.net.stack, device, [v for _, v in splits], cfg.disagree_threshold)
           if any(len(v) for _, v in splits) else None)
    if cfg.batch_size > data.n:
        raise UserError(f"batch_size {cfg.batch_size} is larger than the {data.n} training frames of {what}: use "
                        f"batch_size <= {data.n}, or collect more episodes")
    if not resume:
        # label spread (and, unless warm-started, normalisation) from the training episodes, as batches draw them
        stats = data.stats(cfg.dataset_weights)
        spec = InputSpec(**init_meta["input"]) if init_meta is not None else InputSpec(
            height=cam["height"], width=cam["width"], channels=3 if cam["rgb"] else 1,
            frame_mean=stats["frame_mean"], frame_std=stats["frame_std"],
            speed_mean=stats["speed_mean"], speed_std=stats["speed_std"])

    # -- model, optimiser, schedule ----------------------------------------------------------
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    # a backbone file (net.weights) initialises a fresh run only: a resumed or warm-started one loads
    # every weight from its checkpoint, which is all it needs
    net_cfg = replace(cfg.net, weights=None) if resume or init_meta is not None else cfg.net
    model = build_model(cfg.model, net_cfg, spec).to(device)
    if precision.uses_channels_last(device, cfg.channels_last, cfg.amp):
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimiser(model, cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1000 * rank)
    label_std = torch.tensor(ckpt_meta["label_std"] if resume else stats["action_std"], device=device)
    weights = torch.tensor(cfg.loss_weights, device=device, dtype=torch.float32)
    if cfg.standardise_outputs:
        weights = weights / (label_std if cfg.loss == "l1" else label_std ** 2)
    run_id = ckpt_meta["run_id"] if resume else f"{run_dir.name}-{os.urandom(4).hex()}"
    if init_meta is not None:
        model.load_state_dict(checkpoint.load_tensors(init_ckpt, "weights.pt", device))
    restarts = (ckpt_meta or {}).get("schedule_changes") or []
    precision_changes = (ckpt_meta or {}).get("precision_changes") or []
    if resume:
        model.load_state_dict(checkpoint.load_tensors(ckpt, "weights.pt", device, resume_fix))
        state = checkpoint.load_tensors(ckpt, "train_state.pt", "cpu", resume_fix)
        load_optimiser_state(opt, state["optimizer"], device)
        sched.load_state_dict(state["scheduler"])
        planned = (ckpt_meta.get("train_config") or {}).get("steps")
        if planned != cfg.steps:
            # the schedule is a function of `steps`: the optimiser holds the old schedule's rate for the
            # next step, the new one's is set here (from the next step on, the scheduler sets it)
            for g, base in zip(opt.param_groups, sched.base_lrs):
                lr = base * lr_factor(start, cfg)
                if isinstance(g["lr"], torch.Tensor):  # CUDA: a tensor the graphed step reads
                    g["lr"].fill_(lr)
                else:
                    g["lr"] = lr
            sched._last_lr = [float(g["lr"]) for g in opt.param_groups]
            restarts = [*restarts, {"step": start, "steps_before": planned, "steps": cfg.steps}]
            if rank == 0:
                print(f"note: {run_dir} resumes at step {start} with steps={cfg.steps} (planned {planned}): its "
                      f"learning-rate schedule is recomputed for {cfg.steps} steps from here, so it is not the run "
                      f"a fresh steps={cfg.steps} would give (recorded as schedule_changes in its checkpoints)")
        was, now = ckpt_meta.get("precision"), precision.precision_name(device, cfg.amp)
        if was and was != now:  # another device, or a CPU with(out) native bf16 (amp is the run's identity)
            precision_changes = [*precision_changes, {"step": start, "from": was, "to": now}]
            if rank == 0:
                print(f"note: {run_dir} resumes at step {start} in {now} where its steps before ran in {was} (another "
                      "device or CPU): it is not the run an uninterrupted one gives; resume where it ran to keep "
                      "it so (recorded as precision_changes in its checkpoints)")
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]  # one per rank that saved it
        _set_rng_state(rngs[min(rank, len(rngs) - 1)], gen, start)
        if rank >= len(rngs):  # resumed on more processes than saved it: this rank draws batches of its own
            gen.manual_seed(cfg.seed + 1000 * rank + start)
    net = DistributedDataParallel(model) if distributed else model
    fwd = torch.compile(net) if cfg.compile else net

    policy_meta = {
        "model": cfg.model, "net": asdict(cfg.net), "input": asdict(spec), "camera": cam,
        # datasets from before perception existed were labelled by the privileged expert
        "expert_perception": ds.meta["expert"].get("perception", "privileged"),
        "action": ds.meta["action"], "scenario": ds.meta["scenario"]["name"],
        "dataset": {"path": cfg.dataset if len(datasets) > 1 else str(cfg.datasets[0]), "fingerprint": data_fingerprint,
                    "frames": sum(d.frames for d in datasets)},
        "init_from": str(init_ckpt) if init_meta is not None else (ckpt_meta or {}).get("init_from"),
        # the warm start's checkpoint by identity, so a resume finds it under another path
        "init_from_run": ({"run_id": init_meta.get("run_id"), "step": init_meta.get("step")} if init_meta is not None
                          else (ckpt_meta or {}).get("init_from_run")),
        "label_std": label_std.tolist(), "run_id": run_id, "train_identity": _identity(cfg),
        # each dataset's split by episode: a warm start from this checkpoint holds out the same episodes
        "splits": [{"fingerprint": fingerprint(d), "config": config_fingerprint(d), "seed": s,
                    "val_fraction": cfg.val_fraction} for d, s in zip(datasets, seeds)],
        # resumes with another `steps` (each recomputed the learning-rate schedule from its step)
        "schedule_changes": restarts,
        "precision": precision.precision_name(device, cfg.amp),  # a resume in another one says so
        "precision_changes": precision_changes,
        "train_config": to_dict(cfg),
    }

    def diverged(step: int, what: str) -> UserError:
        # measured: oneDNN's bf16 channels-last ResNet-18 gives NaN where its last feature map is 1 or 2 px
        # wide (frames of 64x32 and smaller), from the first forward pass
        bf16 = (" or train in fp32 (amp=false: bf16 on a CPU gives NaN for resnet18 on frames of 64x32 px and "
                "smaller);") if precision.uses_bf16(device, cfg.amp) and device.type == "cpu" and cfg.model == "resnet18" \
            else ""
        return UserError(f"training diverged by step {step} ({what}): lower optim.lr (now {cfg.optim.lr:g}),{bf16} or "
                         f"check loss_weights and disagree_weight; earlier checkpoints, if any, stay in {ckpt_root}")

    def any_rank(flag: bool) -> bool:
        """`flag` of any process, on every process: a stop that one rank decides alone leaves the others
        in the next collective (a page of gloo's 'connection closed by peer' from each, or a hang)."""
        if not distributed:
            return flag
        t = torch.tensor([float(flag)], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def save(step: int, pointers=("last",)) -> None:
        # a checkpoint of NaN weights would be driven, scored and handed on (DAgger) before anything said why
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise diverged(step, "weights that are not finite")
        rngs = _gather_rng(gen, distributed)
        if rank == 0:
            state = {"optimizer": plain_lr_state(opt.state_dict()), "scheduler": plain_lr_state(sched.state_dict()),
                     "rng": rngs, "step": step}
            checkpoint.save(ckpt_root, step, {**policy_meta, "step": step}, model.state_dict(), state,
                            pointers=pointers)

    closed_loop = ClosedLoopMonitor(cfg, ds, run_dir, device, policy_meta) if cfg.eval.every and rank == 0 else None
    best = resumed_best(ckpt_root, ckpt_meta) if resume else -1.0
    if best > -1.0:  # every checkpoint saved from here carries it, so a second resume finds it too
        policy_meta["best_score"] = best
        scored_by = ckpt_meta.get("best_metrics_version")
        policy_meta["best_metrics_version"] = scored_by
        if scored_by != METRICS_VERSION and closed_loop is not None and rank == 0:
            was = scored_by or f"{METRICS_VERSION} or earlier (not recorded)"
            print(f"note: {run_dir}'s best so far ({best:.3f}) was scored by metrics version {was}, its "
                  f"evaluations from here by version {METRICS_VERSION}: `best` moves where a new score beats that "
                  "one", file=sys.stderr)

    if rank == 0:  # written once every key is checked (a refused run leaves no folder that looks like a run)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(run_dir / "config.yaml", (_CONFIG_MARK + _yaml(cfg)).encode())
    log = MetricsLog(run_dir, cfg, rank == 0, start, run_id)

    # -- loop --------------------------------------------------------------------------------
    per_rank = cfg.batch_size // world
    end = min(cfg.steps, stop_at) if stop_at else cfg.steps
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress or rank != 0, unit="step",
               desc=f"train {cfg.model}", dynamic_ncols=True)
    model.train()
    t_window, data_time, samples, last = time.perf_counter(), 0.0, 0, {}

    def one_step() -> dict:
        nonlocal data_time
        t0 = time.perf_counter()
        x, speed, target, w, plan = sample_batch(data, per_rank, gen, cfg, with_weights=True)
        data_time += time.perf_counter() - t0  # host time to enqueue it (with a graph: the first steps only)
        return optimisation_step(fwd, model, opt, None, x, speed, target, weights, cfg, w, plan)

    stepper = Stepper(one_step, graph=use_graph(cfg, device, data, distributed), generators=[gen])
    step = start
    for step in range(start + 1, end + 1):
        parts = stepper()
        sched.step()  # outside the graph: it sets the next step's learning rate
        samples += cfg.batch_size
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.perf_counter() - t_window
            last = {k: float(v.detach()) for k, v in parts.items()}
            if any_rank(not math.isfinite(last["loss"])):
                raise diverged(step, f"loss {last['loss']}" if not math.isfinite(last["loss"]) else
                               "a loss that is not finite in another process")
            row = {"step": step, **last, "lr": float(sched.get_last_lr()[0]), "samples_per_s": samples / dt,
                   "data_wait": data_time / dt, "world_size": world, "step_mode": stepper.mode,
                   "precision": precision.precision_name(device, cfg.amp)}
            bar.set_postfix_str(f"loss {last['loss']:.3f}  {samples / dt:.0f} samples/s  "
                                f"data {data_time / dt:.0%}", refresh=False)
            log.log(row)
            t_window, data_time, samples = time.perf_counter(), 0.0, 0
        if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            bad = False
            if rank == 0:
                row = {"step": step, **validate(model, val, weights, cfg)}
                bad = not all(math.isfinite(v) for k, v in row.items() if k.startswith("val_loss"))
                if not bad:
                    log.log(row)
                    last.update(row)
            if any_rank(bad):
                raise diverged(step, "a validation loss that is not finite")
        # stop_at ends like an interruption after a checkpoint: what the end of the run does (its last
        # log row, validation, closed-loop score and `best`) happens at `steps` only
        pointers = ["last"] if step % cfg.checkpoint_every == 0 or step == end else []
        if closed_loop is not None and (step % cfg.eval.every == 0 or step == cfg.steps):
            row, video = closed_loop.run(model, step)
            log.log(row, video)
            last.update(row)
            if row["eval_driving_score"] > best:  # best by closed-loop score, never by validation loss
                best = policy_meta["best_score"] = row["eval_driving_score"]
                policy_meta["best_metrics_version"] = row.get("eval_metrics_version", METRICS_VERSION)
                pointers.append("best")
        if distributed and cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.steps):
            # the other ranks wait for rank 0's evaluation and take its decision: a new `best` is saved
            # on a step that may not be a checkpoint step, and saving is collective (the samplers' states)
            decided = [pointers]
            dist.broadcast_object_list(decided, 0)
            pointers = decided[0]
        if pointers:
            save(step, pointers=tuple(pointers))
    bar.close()
    if closed_loop is not None:
        closed_loop.close()
    if step == start and start > 0 and rank == 0:
        print(f"{run_dir} already trained to step {start}")
    agree = True
    if distributed:
        # Parameters stay equal through DDP's gradient averaging; BatchNorm running statistics are
        # per rank (DDP broadcasts rank 0's at each forward): hand every rank rank 0's final ones.
        for b in model.buffers():
            dist.broadcast(b, 0)
    digest = _param_digest(model)
    if distributed:
        digests = [None] * world
        dist.all_gather_object(digests, digest)
        agree = len(set(digests)) == 1
        if rank == 0:
            log.log({"step": step, "ranks_agree": agree, "param_digest": digest, "param_digests": digests})
        dist.barrier()
    log.close()
    return {"run_dir": run_dir, "step": step, "param_digest": digest, "ranks_agree": agree, **last}


def resumed_best(ckpt_root: Path, last_meta: dict) -> float:
    """The best closed-loop score so far: the last checkpoint's record, else the `best` checkpoint's own
    (runs saved before checkpoints carried it after a resume), else -1 (none yet)."""
    if last_meta.get("best_score") is not None:
        return float(last_meta["best_score"])
    if (ckpt_root / "best").exists():
        score = checkpoint.load_meta(checkpoint.resolve(ckpt_root / "best")).get("best_score")
        if score is not None:
            return float(score)
    return -1.0


def split_seeds(cfg: TrainConfig, datasets: list, resumed: dict | None, init: dict | None,
                talk: bool = True) -> list[int]:
    """The seed of each dataset's train/validation split. A fresh run's dataset k splits with seed + k (one
    dataset as ever); a resumed run keeps its recorded seeds; a warm start splits every dataset its init
    checkpoint trained on as that checkpoint did, so validation never scores episodes the initial weights
    were fitted to (a warm start with another seed did, before splits were recorded)."""
    seeds = [cfg.seed + k for k in range(len(datasets))]
    if resumed is not None:
        return [int(x["seed"]) for x in resumed["splits"]] if resumed.get("splits") else seeds
    if init is None or not init.get("splits"):
        return seeds
    theirs = {x["fingerprint"]: x for x in init["splits"]}
    collected = {x.get("config") for x in init["splits"]}
    for k, d in enumerate(datasets):
        x = theirs.get(fingerprint(d))
        if x is None:
            if talk and config_fingerprint(d) in collected:
                print(f"note: {cfg.datasets[k]} holds other episodes than when init_from trained on it (extended "
                      "since?): it is split afresh, so its validation episodes may include some the initial "
                      "weights were fitted to", file=sys.stderr)
            continue
        seeds[k] = int(x["seed"])
        if talk and cfg.val_fraction > x["val_fraction"]:
            kept = (f"val_fraction <= {x['val_fraction']:g} keeps validation unseen" if x["val_fraction"] > 0
                    else "it held out none")
            print(f"note: {cfg.datasets[k]} is validated on a larger share ({cfg.val_fraction:g}) than init_from "
                  f"held out ({x['val_fraction']:g}): part of its validation episodes trained the initial weights "
                  f"({kept})", file=sys.stderr)
    return seeds


def model_diff(cfg: TrainConfig, meta: dict) -> str:
    """How `cfg`'s model differs from a checkpoint's (its meta), "" where a warm start can load it: the
    same network; its lane-change threshold is a driving rule, not weights, and may differ; so may the
    backbone file that initialised it (a warm start loads every weight from the checkpoint)."""
    theirs = {**asdict(ModelConfig(**meta["net"])), "plan_threshold": cfg.net.plan_threshold,
              "weights": cfg.net.weights}
    if meta["model"] == cfg.model and theirs == asdict(cfg.net):
        return ""
    return config_diff({"model": meta["model"], "net": theirs}, {"model": cfg.model, "net": asdict(cfg.net)})


def warm_start_meta(cfg: TrainConfig, camera: dict) -> tuple[Path, dict]:
    """(checkpoint folder, its meta) for `init_from`, refused unless it builds the same model for the
    same camera as this run."""
    ckpt = checkpoint.resolve(cfg.init_from)
    meta = checkpoint.load_meta(ckpt)
    diff = model_diff(cfg, meta)
    if diff:
        raise UserError(f"init_from {cfg.init_from} holds a different model ({diff}): set model and net.* as "
                        "it was trained, or drop init_from")
    diff = [f"{k}: {meta['camera'].get(k)!r} there, {camera.get(k)!r} in the data" for k in
            FRAME_KEYS if meta["camera"].get(k) != camera.get(k)]
    if diff:
        raise UserError(f"init_from {cfg.init_from} was trained on another camera ({'; '.join(diff)}): warm start "
                        "from a checkpoint trained with the dataset's camera")
    return ckpt, meta


def _gather_rng(gen: torch.Generator, distributed: bool):
    state = _rng_state(gen)
    if not distributed:
        return state
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def _yaml(cfg: TrainConfig) -> str:
    from driving.config import to_yaml

    return to_yaml(cfg)


class ClosedLoopMonitor:
    """Short closed-loop evaluations of the model being trained, on fixed seeds, with the engine of
    `driving eval`; its worker processes start at the first call and serve every later one."""

    def __init__(self, cfg: TrainConfig, ds: Dataset, run_dir: Path, device: torch.device, meta: dict):
        self.cfg = cfg.eval
        from driving.policy import action_scale
        from sim import UnknownScenarioError, get_scenario

        self.scenario = cfg.eval.scenario or ds.meta["scenario"]["name"]
        try:  # before the first training step, not at the first evaluation
            action_scale(meta, get_scenario(self.scenario), "this run")
        except UnknownScenarioError as e:
            raise UserError(f"eval.scenario: {e}") from None
        self.seeds = [cfg.eval.seed + i for i in range(cfg.eval.episodes)]
        from driving.evaluate import note_training_seeds

        # `best` would be picked on episodes the run learned from
        note_training_seeds({"dataset": {"path": cfg.datasets}}, self.seeds, "eval.seed")
        self.camera = dict(ds.meta["camera"])
        self.camera["stack"] = max(self.camera.get("stack", 1), cfg.net.stack)
        from driving.evaluate import EvalConfig

        self.expert = {"perception": EvalConfig().expert_perception}  # the reference of `driving eval`
        self.run_dir, self.device, self.meta = run_dir, device, meta
        self.reference = None
        self.pool = None

    def run(self, model, step: int) -> tuple[dict, Path | None]:
        from driving.baselines import ExpertPolicy
        from driving.evaluate import open_pool, run_episodes, score_records, worst
        from driving.policy import policy_from_model
        from sim import get_scenario
        from sim.metrics import aggregate

        dt = 1.0 / get_scenario(self.scenario).policy_frequency
        c = self.cfg
        if self.pool is None:
            self.pool = open_pool(self.scenario, self.camera, c.workers, len(self.seeds), c.max_steps,
                                  expert=self.expert, envs_per_worker=c.envs_per_worker)
        run = {"scenario": self.scenario, "seeds": self.seeds, "camera": self.camera, "workers": c.workers,
               "max_steps": c.max_steps, "progress": False, "pool": self.pool}
        if self.reference is None:
            recs = run_episodes(ExpertPolicy(), **run)
            self.reference = {r["seed"]: r["distance_m"] for r in score_records(recs, self.scenario, dt, None)}
        was_training = model.training
        policy = policy_from_model(model.eval(), self.meta, self.device).for_scenario(get_scenario(self.scenario))
        try:
            recs = run_episodes(policy, **run)
            rows = score_records(recs, self.scenario, dt, self.reference)
            video = None
            if c.video:
                row = worst(rows, 1)[0]
                actions = next(r["actions"] for r in recs if r["seed"] == row["seed"])
                video = self._video(policy, row, step, actions)
        finally:
            model.train(was_training)
        agg = aggregate(rows)
        # the version of sim/metrics.py that scored it: a resumed run's rows may come from two
        row = {"step": step, "eval_scenario": self.scenario, "eval_metrics_version": METRICS_VERSION}
        for k in ("driving_score", "success_rate", "collision_rate", "mean_speed", "route_completion",
                  "offroad_fraction"):
            row[f"eval_{k}"] = agg[k]["mean"]
        return row, video

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def _video(self, policy, row: dict, step: int, actions) -> Path | None:
        try:
            from driving import video
        except ImportError:
            return None
        path = self.run_dir / "eval" / f"train_{step:08d}" / f"{row['scenario']}_seed{row['seed']}.mp4"
        video.policy_episode_video(policy, row["scenario"], row["seed"], self.camera, path,
                                   max_steps=self.cfg.max_steps, saliency=None, expert=self.expert,
                                   actions=actions, expect=row)
        return path
