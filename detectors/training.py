"""A training loop over any dataset of (image, target) batches: AdamW with linear warm-up and cosine
decay, gradient clipping, AMP on CUDA, periodic validation and checkpoints through callbacks.

The loop knows nothing of datasets or files: `loss_fn(model, batch) -> {name: loss}` turns a batch into
losses, `validate(model) -> {name: value}` scores the model, `save(step, val, best)` writes checkpoints.

Under torch.distributed (the model in DistributedDataParallel, each process fed its own shard of every
batch), the logged losses are the means over all processes, a non-finite loss stops every process at the
same step, and rank 0 alone logs, validates (the unwrapped model) and saves while the others wait.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class OptimConfig:
    steps: int = 3000             # optimizer steps in all
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 10.0       # max gradient norm (0: off)
    eval_every: int = 500         # steps between validations (and checkpoints)
    workers: int = 0              # DataLoader worker processes
    best_metric: str = "score"    # key of validate()'s result that selects the best checkpoint (higher wins)

    def validate(self, prefix: str = "") -> None:
        for key in ("steps", "batch_size", "eval_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"{prefix}{key}: must be >= 1")
        for key in ("lr", "weight_decay", "warmup_steps", "grad_clip", "workers"):
            if getattr(self, key) < 0:
                raise ValueError(f"{prefix}{key}: must be >= 0")


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (no decay on norms and biases) and a warm-up + cosine LambdaLR."""
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed; (0, 1) otherwise."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (what checkpoints and validation see)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def barrier(device: torch.device) -> None:
    """Wait for every process (NCCL is told its GPU, as it cannot guess it)."""
    if device.type == "cuda" and dist.get_backend() == "nccl":
        dist.barrier(device_ids=[device.index if device.index is not None else torch.cuda.current_device()])
    else:
        dist.barrier()


def mean_losses(losses: dict[str, torch.Tensor], world: int = 1) -> dict[str, float]:
    """Each loss as a float, averaged over the `world` processes (one all-reduce for all of them)."""
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    if world > 1:
        dist.all_reduce(values)
        values = values / world
    return dict(zip(losses, values.tolist()))


def train_loop(model: torch.nn.Module, batches: Iterator[Any], cfg: OptimConfig, device: torch.device,
               loss_fn: Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]],
               optimizer: torch.optim.Optimizer, scheduler: Any, start_step: int = 0,
               validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
               save: Callable[[int, dict[str, float], bool], None] | None = None,
               log: Callable[[str], None] = print, best: float = -math.inf,
               record: Callable[[int, dict[str, float], float], None] | None = None) -> dict[str, float]:
    """Run from start_step to cfg.steps; returns the last validation scores. A non-finite loss stops
    with TrainingDiverged (the last good checkpoint stays). `record(step, losses, lr)` receives every
    step's losses (means over the processes) and learning rate. Under torch.distributed, `log`, `record`,
    `validate` and `save` are called on rank 0 only (validate with the unwrapped model)."""
    rank, world = rank_and_world()
    main = rank == 0
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    val: dict[str, float] = {}
    running: dict[str, float] = {}
    t0 = time.perf_counter()
    model.train()
    for step in range(start_step, cfg.steps):
        batch = next(batches)
        with torch.autocast(device.type, enabled=amp):
            losses = loss_fn(model, batch)
            loss = sum(losses.values())
        values = mean_losses(losses, world)
        if not math.isfinite(sum(values.values())):
            raise TrainingDiverged(f"non-finite loss at step {step + 1}: "
                                   + ", ".join(f"{k}={v:.3g}" for k, v in values.items()))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for k, v in values.items():
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
        done = step + 1
        if main and record is not None:
            record(done, values, lr)
        if main and (done % 50 == 0 or done == cfg.steps):
            rate = (done - start_step) / (time.perf_counter() - t0)
            log(f"step {done}/{cfg.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in running.items())
                + f"  lr {scheduler.get_last_lr()[0]:.2e}  {rate:.2f} steps/s")
        if (done % cfg.eval_every == 0 or done == cfg.steps) and main:
            if validate is not None:
                model.eval()
                with torch.no_grad():
                    val = validate(unwrap(model))
                model.train()
                log(f"validation at step {done}: " + "  ".join(f"{k} {v:.4f}" for k, v in val.items()))
            score = val.get(cfg.best_metric, -math.inf)
            is_best = score > best
            best = max(best, score)
            if save is not None:
                save(done, val, is_best)
        if (done % cfg.eval_every == 0 or done == cfg.steps) and world > 1:
            barrier(device)  # the others wait for rank 0's validation and checkpoint
    return val
