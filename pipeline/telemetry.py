"""Telemetry logs (GPS-RTK of cooperative targets, turret pose) read strictly and interpolated at
frame timestamps.

`telemetry/gps_rtk.csv`: t, target_id, lat, lon, alt, fix     (per target, time increasing)
`telemetry/camera.csv`:  t, lat, lon, alt, pan, tilt, roll     (time increasing)

A NaN, a missing column or time going backwards is an `InputError` naming the file and line.
Interpolation is linear (angles on the circle); an instant outside the log or inside a gap longer than
`max_gap` seconds gives None ("unknown"), never an extrapolated guess.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.types import TargetState, TelemetrySample

GPS_COLUMNS = ("t", "target_id", "lat", "lon", "alt", "fix")
CAMERA_COLUMNS = ("t", "lat", "lon", "alt", "pan", "tilt", "roll")
ANGLE_COLUMNS = {"pan", "roll"}


def read_csv_table(path: str | Path, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the named columns as float64 (N, len(columns)) and each row's 1-based line number.
    The header must name every column (extra columns are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise InputError(f"empty file, expected a header {','.join(columns)}", path, 1)
            header = [h.strip() for h in header]
            missing = [c for c in columns if c not in header]
            if missing:
                raise InputError(f"missing column(s) {', '.join(missing)} in header", path, 1)
            idx = [header.index(c) for c in columns]
            rows, lines = [], []
            for lineno, rec in enumerate(reader, 2):
                if not rec or all(not x.strip() for x in rec):
                    continue
                if len(rec) < len(header):
                    raise InputError(f"expected {len(header)} values, got {len(rec)}", path, lineno)
                try:
                    vals = [float(rec[i]) for i in idx]
                except ValueError:
                    raise InputError("not a number", path, lineno) from None
                bad = [c for c, v in zip(columns, vals) if not math.isfinite(v)]
                if bad:
                    raise InputError(f"NaN or infinite value in {', '.join(bad)}", path, lineno)
                rows.append(vals)
                lines.append(lineno)
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path) from None
    return np.asarray(rows, np.float64).reshape(-1, len(columns)), np.asarray(lines, np.int64)


def _check_increasing(t: np.ndarray, lines: np.ndarray, path: Path, what: str = "") -> None:
    back = np.flatnonzero(np.diff(t) <= 0)
    if len(back):
        i = back[0] + 1
        kind = "goes backwards" if t[i] < t[i - 1] else "repeats"
        raise InputError(f"time {kind}{what} ({t[i]:.3f} after {t[i - 1]:.3f})", path, int(lines[i]))


@dataclass
class Series:
    """A time series with linear interpolation and gap detection."""

    t: np.ndarray
    values: np.ndarray  # (N, K)
    columns: tuple[str, ...]
    max_gap: float

    def at(self, t: float) -> np.ndarray | None:
        ts = self.t
        if len(ts) == 0 or t < ts[0] or t > ts[-1]:
            return None
        j = int(np.searchsorted(ts, t, side="right"))
        if j >= len(ts):
            return self.values[-1].copy()
        i = j - 1
        if ts[j] - ts[i] > self.max_gap:
            return None
        a = (t - ts[i]) / (ts[j] - ts[i])
        v0, v1 = self.values[i], self.values[j]
        out = v0 + a * (v1 - v0)
        for k, c in enumerate(self.columns):
            if c in ANGLE_COLUMNS:
                d = (v1[k] - v0[k] + 180.0) % 360.0 - 180.0
                out[k] = v0[k] + a * d
                out[k] = out[k] % 360.0 if c == "pan" else (out[k] + 180.0) % 360.0 - 180.0
        return out


class Telemetry:
    """Both logs of a flight; `sample(t)` gives the `TelemetrySample` at video time t."""

    def __init__(self, camera: Series | None, targets: dict[int, tuple[Series, np.ndarray]], clock_offset: float):
        self.camera = camera
        self.targets = targets  # id -> (lat/lon/alt series, fix per row)
        self.clock_offset = clock_offset

    @classmethod
    def load(cls, gps_path: str | Path | None, camera_path: str | Path | None,
             clock_offset: float = 0.0, max_gap: float = 1.0) -> "Telemetry":
        camera = None
        if camera_path is not None:
            rows, lines = read_csv_table(camera_path, CAMERA_COLUMNS)
            _check_increasing(rows[:, 0], lines, Path(camera_path))
            camera = Series(rows[:, 0], rows[:, 1:], CAMERA_COLUMNS[1:], max_gap)
        targets: dict[int, tuple[Series, np.ndarray]] = {}
        if gps_path is not None:
            rows, lines = read_csv_table(gps_path, GPS_COLUMNS)
            for tid in np.unique(rows[:, 1]).astype(int):
                sel = rows[:, 1] == tid
                r = rows[sel]
                _check_increasing(r[:, 0], lines[sel], Path(gps_path), f" for target {tid}")
                targets[int(tid)] = (Series(r[:, 0], r[:, 2:5], ("lat", "lon", "alt"), max_gap), r[:, 5])
        return cls(camera, targets, clock_offset)

    def sample(self, t_video: float) -> TelemetrySample:
        t = t_video - self.clock_offset
        cam = None
        if self.camera is not None:
            v = self.camera.at(t)
            if v is not None:
                cam = dict(zip(self.camera.columns, map(float, v)))
        states = []
        for tid, (series, fix) in self.targets.items():
            v = series.at(t)
            if v is None:
                continue
            j = min(int(np.searchsorted(series.t, t, side="right")) - 1, len(fix) - 1)
            states.append(TargetState(tid, float(v[0]), float(v[1]), float(v[2]), int(fix[max(j, 0)])))
        return TelemetrySample(t_video, cam, states)


def read_timestamps(path: str | Path) -> np.ndarray:
    """`frame,t` per-frame timestamps -> times indexed by frame-1; frames must be 1..N in order and
    times increasing."""
    rows, lines = read_csv_table(path, ("frame", "t"))
    path = Path(path)
    expect = np.arange(1, len(rows) + 1)
    bad = np.flatnonzero(rows[:, 0] != expect)
    if len(bad):
        i = bad[0]
        raise InputError(f"expected frame {expect[i]}, got {rows[i, 0]:g}", path, int(lines[i]))
    _check_increasing(rows[:, 1], lines, path)
    return rows[:, 1]
