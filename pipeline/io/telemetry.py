"""Telemetry logs (GPS-RTK of cooperative targets, turret pose) read strictly and interpolated at
frame timestamps.

`telemetry/gps_rtk.csv`: t, target_id, lat, lon, alt, fix     (per target, time increasing)
`telemetry/camera.csv`:  t, lat, lon, alt, pan, tilt, roll     (time increasing)
or the GPS-RTK log of ONE target as NMEA 0183 GGA sentences (`$GPGGA`, `$GNGGA`, any talker), what RTK
receivers write; the target's id is given by the caller (`nmea_target_id`). Other sentences are skipped.

Clocks: video time = telemetry time + `clock_offset`. GGA carries no date, only the UTC time of day, so
an NMEA log's time is seconds since midnight UTC of the day the log starts (a time of day smaller than
the previous one by more than 12 h is taken as the next day: +86400 s). For a video whose frame times
start at 0 when the UTC clock read 14:30:05.2, `clock_offset` is -52205.2.

Fix quality (GGA field 6, the CSV's `fix`): 0 invalid, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float (others
kept as written). Invalid samples (fix 0) are dropped, so their instants become gaps; an interpolated
position carries the worse fix of its two samples (`FIX_RANK`). NMEA heights are
ellipsoidal: the sentence's altitude above mean sea level plus its geoid separation.

A NaN, a missing column or field, a bad NMEA checksum or time going backwards is an `InputError` naming
the file and line. Interpolation is linear (angles on the circle); an instant outside the log or inside
a gap longer than `max_gap` seconds gives None ("unknown"), never an extrapolated guess.
"""
from __future__ import annotations

import csv
import functools
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.errors import InputError
from pipeline.io.flight import Flight
from pipeline.types import TargetState, TelemetrySample

GPS_COLUMNS = ("t", "target_id", "lat", "lon", "alt", "fix")
CAMERA_COLUMNS = ("t", "lat", "lon", "alt", "pan", "tilt", "roll")
ANGLE_COLUMNS = {"pan", "roll"}
FIX_INVALID = 0
FIX_RANK = {4: 0, 5: 1, 2: 2, 3: 3, 1: 4}  # best first: RTK fixed, RTK float, DGPS, PPS, GPS; others worst
DAY = 86400.0


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


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path) from None


def is_nmea(path: str | Path) -> bool:
    """A `.nmea` file, or a text file whose first non-blank line is an NMEA sentence."""
    path = Path(path)
    if path.suffix.lower() == ".nmea":
        return True
    return next((ln.strip().startswith("$") for ln in _read_lines(path) if ln.strip()), False)


def _nmea_fields(line: str, path: Path, lineno: int) -> list[str]:
    """The comma-separated fields of one sentence (field 0 is talker + type), checksum verified."""
    body, star, check = line[1:].partition("*")
    if not star or len(check.strip()) != 2:
        raise InputError("NMEA sentence without a *hh checksum", path, lineno)
    want = functools.reduce(operator.xor, body.encode("ascii", "replace"), 0)
    try:
        got = int(check, 16)
    except ValueError:
        raise InputError(f"bad checksum {check.strip()!r}", path, lineno) from None
    if got != want:
        raise InputError(f"checksum mismatch (says {got:02X}, sentence gives {want:02X})", path, lineno)
    return body.split(",")


def _number(text: str, what: str, path: Path, lineno: int) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InputError(f"{what}: not a number ({text!r})", path, lineno) from None
    if not math.isfinite(v):
        raise InputError(f"{what}: NaN or infinite value", path, lineno)
    return v


def _degrees(text: str, hemi: str, axis: str, path: Path, lineno: int) -> float:
    """NMEA (d)ddmm.mmmm plus hemisphere letter -> signed decimal degrees."""
    v = _number(text, axis, path, lineno)
    deg, minutes = divmod(v, 100.0)
    limit, signs = (90.0, {"N": 1, "S": -1}) if axis == "latitude" else (180.0, {"E": 1, "W": -1})
    if hemi not in signs or minutes >= 60.0 or deg + minutes / 60.0 > limit:
        raise InputError(f"bad {axis} {text!r} {hemi!r}", path, lineno)
    return signs[hemi] * (deg + minutes / 60.0)


def _time_of_day(text: str, path: Path, lineno: int) -> float:
    """hhmmss(.ss) -> seconds since midnight."""
    m = re.fullmatch(r"(\d\d)(\d\d)(\d\d(?:\.\d*)?)", text)
    if m is None or int(m[1]) >= 24 or int(m[2]) >= 60 or float(m[3]) >= 61:
        raise InputError(f"bad time {text!r} (expected hhmmss.ss)", path, lineno)
    return int(m[1]) * 3600.0 + int(m[2]) * 60.0 + float(m[3])


def read_nmea_gga(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """GGA sentences of an NMEA log -> rows (N, 5) of t (seconds since midnight UTC of the first
    sentence's day), lat, lon, ellipsoidal alt, fix; and each row's 1-based line number. Sentences with
    fix 0 are skipped (no position); other sentence types are ignored."""
    path = Path(path)
    rows, lines, day, last = [], [], 0.0, None
    for lineno, raw in enumerate(_read_lines(path), 1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("$"):
            raise InputError("not an NMEA sentence (expected '$')", path, lineno)
        if len(line) < 6 or line[3:6] != "GGA":
            continue
        f = _nmea_fields(line, path, lineno)
        if len(f) < 12:
            raise InputError(f"GGA needs at least 12 fields up to the geoid separation, got {len(f)}", path, lineno)
        if not f[6].strip():
            raise InputError("missing fix quality", path, lineno)
        fix = int(_number(f[6], "fix quality", path, lineno))
        if fix == FIX_INVALID:
            continue
        t = _time_of_day(f[1], path, lineno)
        if last is not None and t + day < last - DAY / 2:
            day += DAY  # past midnight UTC
        last = t + day
        lat = _degrees(f[2], f[3], "latitude", path, lineno)
        lon = _degrees(f[4], f[5], "longitude", path, lineno)
        alt = _number(f[9], "altitude", path, lineno) + _number(f[11], "geoid separation", path, lineno)
        rows.append((t + day, lat, lon, alt, fix))
        lines.append(lineno)
    return np.asarray(rows, np.float64).reshape(-1, 5), np.asarray(lines, np.int64)


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
             clock_offset: float = 0.0, max_gap: float = 1.0,
             gps_format: Literal["auto", "csv", "nmea"] = "auto", nmea_target_id: int = 1) -> "Telemetry":
        """Read the logs. `gps_format` auto: NMEA for a `.nmea` file or one starting with '$', else CSV;
        an NMEA log holds one target, `nmea_target_id`."""
        camera = None
        if camera_path is not None:
            rows, lines = read_csv_table(camera_path, CAMERA_COLUMNS)
            _check_increasing(rows[:, 0], lines, Path(camera_path))
            camera = Series(rows[:, 0], rows[:, 1:], CAMERA_COLUMNS[1:], max_gap)
        targets: dict[int, tuple[Series, np.ndarray]] = {}
        if gps_path is not None:
            gps_path = Path(gps_path)
            if gps_format == "nmea" or (gps_format == "auto" and is_nmea(gps_path)):
                rows, lines = read_nmea_gga(gps_path)
                rows, ids = np.insert(rows, 1, nmea_target_id, axis=1), [nmea_target_id]
            else:
                rows, lines = read_csv_table(gps_path, GPS_COLUMNS)
                ids = np.unique(rows[:, 1]).astype(int).tolist()
            for tid in ids:
                sel = rows[:, 1] == tid
                _check_increasing(rows[sel, 0], lines[sel], gps_path, f" for target {tid}")
                r = rows[sel & (rows[:, 5] != FIX_INVALID)]
                targets[int(tid)] = (Series(r[:, 0], r[:, 2:5], ("lat", "lon", "alt"), max_gap), r[:, 5])
        return cls(camera, targets, clock_offset)

    def camera_at(self, t_video: float) -> dict[str, float] | None:
        """The turret's lat, lon, alt, pan, tilt, roll at video time t; None when unknown."""
        v = None if self.camera is None else self.camera.at(t_video - self.clock_offset)
        return None if v is None else dict(zip(self.camera.columns, map(float, v)))

    def target_at(self, target_id: int, t_video: float) -> TargetState | None:
        """One target's interpolated position at video time t, with the worse fix of the samples it is
        interpolated from; None when unknown."""
        series, fix = self.targets[target_id]
        t = t_video - self.clock_offset
        v = series.at(t)
        if v is None:
            return None
        i = min(int(np.searchsorted(series.t, t, side="right")) - 1, len(fix) - 1)
        used = fix[i:i + 2] if t > series.t[i] else fix[i:i + 1]
        worst = max(used.astype(int), key=lambda f: FIX_RANK.get(f, len(FIX_RANK)))
        return TargetState(target_id, float(v[0]), float(v[1]), float(v[2]), int(worst))

    def sample(self, t_video: float) -> TelemetrySample:
        """Everything known at video time t; targets that are unknown there are left out."""
        states = [s for tid in self.targets if (s := self.target_at(tid, t_video)) is not None]
        return TelemetrySample(t_video, self.camera_at(t_video), states)


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


def load_flight_telemetry(flight: Flight) -> Telemetry | None:
    """The flight's telemetry as its flight.yaml names it; None when it names no log."""
    spec = flight.spec.telemetry
    if spec.gps_rtk is None and spec.camera is None:
        return None
    return Telemetry.load(flight.path(spec.gps_rtk), flight.path(spec.camera), spec.clock_offset, spec.max_gap,
                          spec.gps_format, spec.nmea_target_id)
