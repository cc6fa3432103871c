"""Learned models by name: building them from a (validated) config and loading checkpoints.

A checkpoint (detectors/checkpoint.py) holds `kind` and the model config as a plain dict; the config is
validated again into its dataclass on load, so a checkpoint made by another version fails with a message
that names the key, not deep inside the model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from detectors.checkpoint import load_checkpoint, load_state
from pipeline.config import from_dict
from pipeline.errors import ConfigError, InputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def model_kinds() -> dict[str, tuple[type, Any]]:
    """kind -> (config dataclass, builder(config) -> nn.Module). Imported lazily (torch models)."""
    from detectors.dpfcn import DPFCN, DPFCNConfig

    return {"dpfcn": (DPFCNConfig, DPFCN)}


def build_model(kind: str, config: Any) -> torch.nn.Module:
    """`config`: the kind's config dataclass, or a dict validated into it."""
    kinds = model_kinds()
    if kind not in kinds:
        raise ConfigError(f"model kind {kind!r} is not one of {', '.join(kinds)}")
    cfg_cls, builder = kinds[kind]
    if isinstance(config, dict):
        config = from_dict(cfg_cls, config, kind)
    return builder(config)


def resolve_path(path: str | Path) -> Path:
    """A relative path is taken from the working directory, else from the project root (the shipped
    checkpoints under detectors/weights/ work from anywhere)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p


def load_model(path: str | Path, kind: str | None = None) -> tuple[torch.nn.Module, dict]:
    """(model with the checkpoint's weights, in eval mode, on CPU; the checkpoint dict). Any problem is
    an InputError naming the file."""
    path = resolve_path(path)
    try:
        ckpt = load_checkpoint(path)
        if kind is not None and ckpt["kind"] != kind:
            raise ValueError(f"a {ckpt['kind']!r} checkpoint, expected {kind!r}")
        model = build_model(ckpt["kind"], ckpt["config"])
        load_state(model, ckpt["state_dict"])
    except (ValueError, ConfigError) as e:
        raise InputError(str(e), path) from None
    return model.eval(), ckpt
