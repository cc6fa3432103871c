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

A NaN, a missing column or field, a bad NMEA checksum, time going backwards or repeating, a value in an
implausible unit (lat outside [-90, 90], altitude beyond 20 km, an angle beyond a turn, a target 100 km
from the turret) or a position jumping faster than `max_speed` is an `InputError` naming the file and
line. Gaps longer than `max_gap` are not errors: one warning per log, counted in `Telemetry.gaps`. Interpolation is linear (angles on the circle); an instant outside the log or inside
a gap longer than `max_gap` seconds gives None ("unknown"), never an extrapolated guess.
"""
from __future__ import annotations

import csv
import functools
import logging
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

log = logging.getLogger("dronetrack.telemetry")

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
    except csv.Error as e:  # a NUL byte, a field over the csv module's size limit
        raise InputError(f"malformed CSV ({e})", path, reader.line_num) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path) from None
    return np.asarray(rows, np.float64).reshape(-1, len(columns)), np.asarray(lines, np.int64)


# Plausible ranges: a value outside is in another unit (radians are caught by the turret-to-target
# distance instead, millidegrees, 1e-7 degrees, feet or millimetres of altitude here) or garbage.
RANGES = {"lat": (-90.0, 90.0), "lon": (-180.0, 360.0), "alt": (-20000.0, 20000.0),
          "pan": (-360.0, 360.0), "tilt": (-360.0, 360.0), "roll": (-360.0, 360.0)}
UNITS = {"lat": "degrees", "lon": "degrees", "alt": "metres", "pan": "degrees", "tilt": "degrees", "roll": "degrees"}
JITTER_M = 50.0  # metres a position may jump beyond max_speed * dt (noise of a plain GPS fix)
MAX_TARGET_DISTANCE_M = 100_000.0  # a cooperative target farther than this from the turret is another unit


def _check_ranges(rows: np.ndarray, lines: np.ndarray, columns: tuple[str, ...], path: Path) -> None:
    for k, c in enumerate(columns):
        if c not in RANGES or not len(rows):
            continue
        lo, hi = RANGES[c]
        bad = np.flatnonzero((rows[:, k] < lo) | (rows[:, k] > hi))
        if len(bad):
            i = bad[0]
            raise InputError(f"{c} {rows[i, k]:g} is outside [{lo:g}, {hi:g}] (expected {UNITS[c]}: "
                             "another unit?)", path, int(lines[i]))


def _metres(lla0: np.ndarray, lla1: np.ndarray) -> np.ndarray:
    """Distance between lat/lon/alt rows (degrees, metres), locally flat: enough to tell glitches."""
    lat = np.radians(0.5 * (lla0[..., 0] + lla1[..., 0]))
    d = lla1 - lla0
    dlon = (d[..., 1] + 180.0) % 360.0 - 180.0
    return np.sqrt((d[..., 0] * 111_320.0) ** 2 + (dlon * 111_320.0 * np.cos(lat)) ** 2 + d[..., 2] ** 2)


def _check_speed(t: np.ndarray, lla: np.ndarray, lines: np.ndarray, path: Path, max_speed: float,
                 what: str) -> None:
    """A position that jumps farther than max_speed allows (plus GPS noise) is a glitch: InputError
    naming the line of the sample it jumps to."""
    if len(t) < 2:
        return
    dt, dist = np.diff(t), _metres(lla[:-1], lla[1:])
    bad = np.flatnonzero(dist > max_speed * dt + JITTER_M)
    if len(bad):
        i = bad[0]
        size = f"{dist[i] / 1000:.1f} km" if dist[i] >= 1000 else f"{dist[i]:.0f} m"
        raise InputError(f"{what} jumps {size} in {dt[i]:.3g} s ({dist[i] / dt[i]:.0f} m/s; telemetry.max_speed "
                         f"is {max_speed:g} m/s): a glitch, or positions in another unit", path, int(lines[i + 1]))


def _warn_gaps(path: Path, series: dict[str, tuple[np.ndarray, np.ndarray]], max_gap: float,
               counts: dict[str, int]) -> None:
    """Count each series' gaps longer than max_gap into `counts`; one warning for the file if any."""
    longest: tuple[float, int] | None = None
    total = 0
    for name, (t, lines) in series.items():
        big = np.flatnonzero(np.diff(t) > max_gap) if len(t) > 1 else np.zeros(0, np.int64)
        counts[name] = len(big)
        total += len(big)
        for i in big:
            if longest is None or t[i + 1] - t[i] > longest[0]:
                longest = (float(t[i + 1] - t[i]), int(lines[i + 1]))
    if longest is not None:
        log.warning("%s:%d: %d gap(s) longer than telemetry.max_gap (%g s), the longest %.3g s ending here: "
                    "telemetry is unknown inside them", path, longest[1], total, max_gap, longest[0])


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

    def __init__(self, camera: Series | None, targets: dict[int, tuple[Series, np.ndarray]], clock_offset: float,
                 gaps: dict[str, int] | None = None):
        self.camera = camera
        self.targets = targets  # id -> (lat/lon/alt series, fix per row)
        self.clock_offset = clock_offset
        self.gaps = gaps or {}  # "camera" / "target <id>" -> gaps longer than max_gap

    @classmethod
    def load(cls, gps_path: str | Path | None, camera_path: str | Path | None,
             clock_offset: float = 0.0, max_gap: float = 1.0,
             gps_format: Literal["auto", "csv", "nmea"] = "auto", nmea_target_id: int = 1,
             max_speed: float = 150.0) -> "Telemetry":
        """Read the logs. `gps_format` auto: NMEA for a `.nmea` file or one starting with '$', else CSV;
        an NMEA log holds one target, `nmea_target_id`. Values outside plausible ranges (`RANGES`: lat
        in [-90, 90], altitude within 20 km, angles within a turn), a position jumping faster than
        `max_speed` m/s (plus 50 m of GPS noise), or a target more than 100 km from the turret (lat/lon
        in radians, say) are errors naming the line. Gaps longer than `max_gap` are not errors (the
        instants inside are unknown): each log with some is reported in one warning, and counted in
        `gaps`."""
        camera, gaps = None, {}
        if camera_path is not None:
            camera_path = Path(camera_path)
            rows, lines = read_csv_table(camera_path, CAMERA_COLUMNS)
            _check_increasing(rows[:, 0], lines, camera_path)
            _check_ranges(rows, lines, CAMERA_COLUMNS, camera_path)
            _check_speed(rows[:, 0], rows[:, 1:4], lines, camera_path, max_speed, "the turret")
            camera = Series(rows[:, 0], rows[:, 1:], CAMERA_COLUMNS[1:], max_gap)
            _warn_gaps(camera_path, {"camera": (camera.t, lines)}, max_gap, gaps)
        targets: dict[int, tuple[Series, np.ndarray]] = {}
        if gps_path is not None:
            gps_path = Path(gps_path)
            if gps_format == "nmea" or (gps_format == "auto" and is_nmea(gps_path)):
                rows, lines = read_nmea_gga(gps_path)
                rows, ids = np.insert(rows, 1, nmea_target_id, axis=1), [nmea_target_id]
            else:
                rows, lines = read_csv_table(gps_path, GPS_COLUMNS)
                for k, c in ((1, "target_id"), (5, "fix")):
                    bad = np.flatnonzero((rows[:, k] != np.round(rows[:, k])) | (rows[:, k] < 0))
                    if len(bad):
                        raise InputError(f"{c} must be a non-negative integer, got {rows[bad[0], k]:g}", gps_path,
                                         int(lines[bad[0]]))
                ids = np.unique(rows[:, 1]).astype(int).tolist()
            _check_ranges(rows[:, 2:5], lines, GPS_COLUMNS[2:5], gps_path)
            series_lines = {}
            for tid in ids:
                sel = rows[:, 1] == tid
                _check_increasing(rows[sel, 0], lines[sel], gps_path, f" for target {tid}")
                keep = sel & (rows[:, 5] != FIX_INVALID)
                r = rows[keep]
                _check_speed(r[:, 0], r[:, 2:5], lines[keep], gps_path, max_speed, f"target {tid}")
                if camera is not None and len(r):
                    far = _metres(np.append(camera.values[0, :2], r[0, 4]), r[0, 2:5])
                    if far > MAX_TARGET_DISTANCE_M:
                        raise InputError(f"target {tid} is {far / 1000:.0f} km from the turret of {camera_path.name}: "
                                         "lat/lon in another unit (radians?) or logs of another place",
                                         gps_path, int(lines[keep][0]))
                targets[int(tid)] = (Series(r[:, 0], r[:, 2:5], ("lat", "lon", "alt"), max_gap), r[:, 5])
                series_lines[f"target {tid}"] = (r[:, 0], lines[keep])
            _warn_gaps(gps_path, series_lines, max_gap, gaps)
        return cls(camera, targets, clock_offset, gaps)

    def report(self) -> dict[str, int]:
        """For summary.json: gaps longer than max_gap per log ("camera", "target <id>"), where any."""
        return {k: v for k, v in self.gaps.items() if v}

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
                          spec.gps_format, spec.nmea_target_id, spec.max_speed)
