"""Whole-file outputs (summary.json, config.yaml, scores, indexes) written atomically: into a temporary
file in the same folder, flushed to disk, then renamed over the target with `os.replace`. A reader, or a
run killed half-way, sees the old file or the new one, never half of one; no temporary file is left.

Streamed outputs (tracks, COCO detections, JSON lines) are not written this way: they are flushed line
by line so an interrupted run keeps every finished frame, and their readers drop a cut last line
(`pipeline.io.motio.read_mot`, `pipeline.evaluation.evaluate.read_coco_results`).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import (setting it is process-wide)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; the parent folder is made if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """`data` as JSON, written atomically."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_yaml(path: str | Path, data: Any) -> Path:
    """`data` as YAML (plain types only, keys in their order), written atomically."""
    return write_text(path, yaml.safe_dump(data, sort_keys=False))
