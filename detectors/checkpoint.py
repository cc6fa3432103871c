"""Checkpoints: one file holds the weights, the config that built the model, its class names, the
validation scores and (while training) the optimizer state to resume from.

Loading never unpickles code: `torch.load(..., weights_only=True)`. A file that is not a checkpoint,
or is truncated, raises ValueError with a one-line message (the pipeline names the file).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

FORMAT = "dronetrack-checkpoint/1"
REQUIRED = ("format", "kind", "config", "classes", "state_dict")


def save_checkpoint(path: str | Path, *, kind: str, config: dict, classes: list[str], model: torch.nn.Module,
                    step: int = 0, val: dict | None = None, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, half: bool = False) -> Path:
    """Write atomically (a crash never leaves a half-written checkpoint). half=True stores floating
    weights as float16 (the shipped files) and no optimizer state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    ckpt: dict[str, Any] = {"format": FORMAT, "kind": kind, "config": config, "classes": list(classes),
                            "state_dict": state, "step": int(step), "val": dict(val or {})}
    if optimizer is not None and not half:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None and not half:
        ckpt["scheduler"] = scheduler.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict; ValueError when the file is missing, unreadable or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ValueError("no such checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        raise ValueError(f"unreadable checkpoint ({_reason(e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or any(k not in ckpt for k in REQUIRED):
        raise ValueError(f"not a dronetrack checkpoint (expected a dict with {', '.join(REQUIRED)})")
    state = ckpt["state_dict"]
    if not (isinstance(ckpt["kind"], str) and isinstance(ckpt["config"], dict) and isinstance(ckpt["classes"], list)
            and isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in state.items())):
        raise ValueError("malformed checkpoint (kind a string, config a dict, classes a list, state_dict "
                         "a dict of tensors)")
    return ckpt


def _reason(e: Exception) -> str:
    """torch.load's long, multi-line errors in a few words."""
    text = str(e)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return f"refused: it would run code ({refused.group(1)}); only weights are loaded"
    if "Weights only load failed" in text:
        return "not a torch checkpoint, or it holds objects other than weights"
    if "central directory" in text or "zip archive" in text:
        return "truncated or corrupt archive"
    return f"{type(e).__name__}: {text.strip().splitlines()[0][:120] if text.strip() else 'no detail'}"


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights (any float dtype) into `model`; ValueError naming the first mismatching keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{name}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if keys]
        raise ValueError("weights do not fit the model (" + "; ".join(parts) + ")")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
