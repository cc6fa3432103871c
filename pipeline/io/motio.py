"""MOTChallenge text files: frame, id, left, top, width, height, conf|flag, x|class, y|visibility, z.

Reading validates every line (a malformed line is an `InputError` naming the file and line); an empty
file is legal. A malformed last line without its newline is what a run killed while writing leaves: it
is dropped with a warning naming the file and line, and the lines before it are read. Writing goes through `MotWriter`, which flushes after every frame.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import IO

import numpy as np

from pipeline.errors import InputError
from pipeline.types import Detections

log = logging.getLogger("dronetrack.motio")


def read_mot(path: str | Path, min_cols: int = 6) -> np.ndarray:
    """All rows as a float64 array (N, 10), missing trailing columns filled with -1.
    Rows are sorted by frame (stable)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    rows: list[list[float]] = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for lineno, line in enumerate(f, 1):
                s = line.strip()
                if not s or s.startswith("#"):
                    continue
                try:
                    rows.append(_mot_row(s, min_cols, path, lineno))
                except InputError as e:
                    if line.endswith(("\n", "\r")):
                        raise
                    # an unterminated last line: a run killed while writing it (outputs are flushed
                    # line by line); the finished lines before it are kept
                    log.warning("%s (last line cut: dropped)", e)
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path) from None
    arr = np.asarray(rows, np.float64).reshape(-1, 10)
    return arr[np.argsort(arr[:, 0], kind="stable")]


def _mot_row(s: str, min_cols: int, path: Path, lineno: int) -> list[float]:
    """One stripped, non-comment line -> its 10 values (missing trailing columns -1)."""
    parts = s.replace(";", ",").split(",")
    if len(parts) == 1:
        parts = s.split()
    if len(parts) < min_cols or len(parts) > 10:
        raise InputError(f"expected {min_cols} to 10 comma-separated values, got {len(parts)}", path, lineno)
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"not a number in {s[:60]!r}", path, lineno) from None
    if not all(math.isfinite(v) for v in vals):
        raise InputError("NaN or infinite value", path, lineno)
    if not 0 <= vals[0] < 2**31 or vals[0] != int(vals[0]):
        raise InputError(f"frame must be a non-negative integer, got {parts[0]}", path, lineno)
    if not -2**31 <= vals[1] < 2**31 or vals[1] != int(vals[1]):
        raise InputError(f"id must be an integer, got {parts[1]}", path, lineno)
    if vals[4] < 0 or vals[5] < 0:
        raise InputError("negative box width or height", path, lineno)
    return vals + [-1.0] * (10 - len(vals))


def rows_to_detections(rows: np.ndarray, with_ids: bool = False) -> Detections:
    return Detections.from_xywh(
        rows[:, 2:6],
        scores=rows[:, 6].clip(min=0) if len(rows) else None,
        track_ids=rows[:, 1].astype(np.int64) if with_ids else None,
    )


def group_by_frame(rows: np.ndarray, with_ids: bool = False) -> dict[int, Detections]:
    out: dict[int, Detections] = {}
    if len(rows) == 0:
        return out
    frames = rows[:, 0].astype(np.int64)
    bounds = np.flatnonzero(np.diff(frames)) + 1
    for chunk in np.split(np.arange(len(rows)), bounds):
        out[int(frames[chunk[0]])] = rows_to_detections(rows[chunk], with_ids)
    return out


def read_detections(path: str | Path) -> dict[int, Detections]:
    """A MOTChallenge detection file -> {frame: Detections}."""
    return group_by_frame(read_mot(path))


def format_rows(frame: int, dets: Detections) -> str:
    ids = dets.track_ids if dets.track_ids is not None else np.full(len(dets), -1)
    lines = []
    for (x, y, w, h), tid, s in zip(dets.xywh, ids, dets.scores):
        lines.append(f"{frame},{int(tid)},{x:.2f},{y:.2f},{w:.2f},{h:.2f},{s:.4f},-1,-1,-1\n")
    return "".join(lines)


class MotWriter:
    """Appends one frame at a time and flushes, so an interrupted run keeps every finished frame."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] | None = open(self.path, "w", encoding="utf-8")

    def write(self, frame: int, dets: Detections) -> None:
        assert self._f is not None
        if len(dets):
            self._f.write(format_rows(frame, dets))
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "MotWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
