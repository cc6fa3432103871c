"""A training loop over any dataset of (image, target) batches: AdamW with linear warm-up and cosine
decay, gradient clipping, AMP on CUDA, periodic validation and checkpoints through callbacks.

The loop knows nothing of datasets or files: `loss_fn(model, batch) -> {name: loss}` turns a batch into
losses, `validate(model) -> {name: value}` scores the model, `save(step, val, best)` writes checkpoints.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch


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


def train_loop(model: torch.nn.Module, batches: Iterator[Any], cfg: OptimConfig, device: torch.device,
               loss_fn: Callable[[torch.nn.Module, Any], dict[str, torch.Tensor]],
               optimizer: torch.optim.Optimizer, scheduler: Any, start_step: int = 0,
               validate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
               save: Callable[[int, dict[str, float], bool], None] | None = None,
               log: Callable[[str], None] = print, best: float = -math.inf) -> dict[str, float]:
    """Run from start_step to cfg.steps; returns the last validation scores. A non-finite loss stops
    with TrainingDiverged (the last good checkpoint stays)."""
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
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"non-finite loss at step {step + 1}: "
                               + ", ".join(f"{k}={v.item():.3g}" for k, v in losses.items()))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        for k, v in losses.items():
            running[k] = 0.9 * running.get(k, v.item()) + 0.1 * v.item()
        done = step + 1
        if done % 50 == 0 or done == cfg.steps:
            rate = (done - start_step) / (time.perf_counter() - t0)
            log(f"step {done}/{cfg.steps}  " + "  ".join(f"{k} {v:.4f}" for k, v in running.items())
                + f"  lr {scheduler.get_last_lr()[0]:.2e}  {rate:.2f} steps/s")
        if done % cfg.eval_every == 0 or done == cfg.steps:
            if validate is not None:
                model.eval()
                with torch.no_grad():
                    val = validate(model)
                model.train()
                log(f"validation at step {done}: " + "  ".join(f"{k} {v:.4f}" for k, v in val.items()))
            score = val.get(cfg.best_metric, -math.inf)
            is_best = score > best
            best = max(best, score)
            if save is not None:
                save(done, val, is_best)
    return val
