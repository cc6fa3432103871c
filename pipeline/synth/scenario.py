"""What happens in a synthetic flight: cameras, the turret's motion, and the 3D paths of drones, birds
and an occasional airliner in a local ENU frame centred on the turret (metres, up = 0 at the turret)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.io.flight import Calibration
from pipeline.geometry.camera import CameraPose, direction_to_pan_tilt

DT = 0.005          # seconds between samples of the dense paths
MAST = 4.0          # turret height above the ground, metres
PAN_RANGE = 70.0    # turret pan limit either side of the sector centre, degrees
RGB_SIZE = (640, 512)
THERMAL_SIZE = (320, 256)


@dataclass
class Path3:
    """A 3D path sampled every DT seconds from t0; `at(t)` interpolates linearly."""

    t0: float
    pos: np.ndarray  # (N, 3) ENU metres

    def at(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, float))
        idx = np.clip((t - self.t0) / DT, 0.0, len(self.pos) - 1.000001)
        i = idx.astype(int)
        w = (idx - i)[:, None]
        return self.pos[i] * (1 - w) + self.pos[i + 1] * w

    def velocity(self, t) -> np.ndarray:
        return (self.at(np.asarray(t) + DT) - self.at(np.asarray(t) - DT)) / (2 * DT)


@dataclass
class SceneObject:
    id: int
    kind: str                  # drone | bird | airplane
    span: float                # metres, tip to tip
    path: Path3
    look: dict = field(default_factory=dict)  # colours, temperatures, flapping ...


@dataclass
class Turret:
    """Pan, tilt, roll (degrees) sampled every DT seconds from t0."""

    t0: float
    angles: np.ndarray  # (N, 3)

    def angles_at(self, t) -> np.ndarray:
        t = np.atleast_1d(np.asarray(t, float))
        idx = (t - self.t0) / DT
        grid = np.arange(len(self.angles))
        return np.column_stack([np.interp(idx, grid, self.angles[:, k]) for k in range(3)])

    def pose(self, t: float) -> CameraPose:
        pan, tilt, roll = self.angles_at(t)[0]
        return CameraPose((0.0, 0.0, 0.0), float(pan), float(tilt), float(roll))


@dataclass
class StreamSetup:
    name: str
    modality: str
    width: int
    height: int
    fps: float
    calibration: Calibration
    timestamps: np.ndarray     # per frame, seconds on the common clock
    exposure: float            # seconds over which motion blurs


@dataclass
class Scenario:
    seed: int
    seconds: float
    ref: tuple[float, float, float]   # WGS84 of the turret (lat, lon, ellipsoidal alt)
    centre_az: float                  # middle of the watched sector, degrees
    sun: tuple[float, float]          # azimuth, elevation in degrees
    sky: dict
    objects: list[SceneObject]
    turret: Turret
    streams: dict[str, StreamSetup]

    @property
    def drones(self) -> list[SceneObject]:
        return [o for o in self.objects if o.kind == "drone"]


def _smooth(rng: np.random.Generator, t: np.ndarray, std: float, fmin: float, fmax: float, k: int = 3
            ) -> np.ndarray:
    """A smooth zero-mean random signal: a sum of k sinusoids with random frequencies and phases."""
    f = rng.uniform(fmin, fmax, k)
    ph = rng.uniform(0, 2 * np.pi, k)
    return std * np.sqrt(2.0 / k) * np.sin(2 * np.pi * f[None, :] * t[:, None] + ph[None, :]).sum(1)


def _wander_path(rng: np.random.Generator, t: np.ndarray, anchor: np.ndarray, t_anchor: float, speed: float,
                 heading: float, turn_std: float, climb_std: float, wobble: float, r_min: float) -> np.ndarray:
    """Integrate a wandering heading and speed into positions that pass `anchor` at `t_anchor`."""
    omega = _smooth(rng, t, turn_std, 0.03, 0.25)
    head = heading + np.cumsum(omega) * DT
    v = speed * (1.0 + np.clip(_smooth(rng, t, 0.2, 0.05, 0.3), -0.6, 0.6))
    vel = np.column_stack([v * np.sin(head), v * np.cos(head), _smooth(rng, t, climb_std, 0.05, 0.3)])
    disp = np.cumsum(vel, axis=0) * DT
    disp += np.column_stack([_smooth(rng, t, wobble, 0.3, 1.5) for _ in range(3)])
    pos = disp - disp[np.searchsorted(t, t_anchor)] + anchor
    horiz = np.linalg.norm(pos[:, :2], axis=1, keepdims=True)
    pos[:, :2] *= np.maximum(1.0, r_min / np.maximum(horiz, 1e-6))
    pos[:, 2] = np.maximum(pos[:, 2], -MAST + 3.0)
    return pos


def _sector_point(rng: np.random.Generator, centre: float, rng_m: float, el_deg: tuple[float, float],
                  spread: float = 45.0) -> np.ndarray:
    az = np.radians(centre + rng.uniform(-spread, spread))
    el = np.radians(rng.uniform(*el_deg))
    return np.array([rng_m * np.sin(az), rng_m * np.cos(az), max(rng_m * np.tan(el), -MAST + 3.0)])


DRONE_BODIES = [((225, 225, 220), (70, 70, 75)), ((60, 62, 66), (35, 35, 38)),
                ((28, 28, 30), (20, 20, 22)), ((150, 150, 145), (200, 60, 40))]  # RGB (body, accent)
BIRD_COLOURS = [(25, 25, 30), (210, 210, 205), (110, 85, 60), (80, 80, 85)]


def _drone(rng: np.random.Generator, oid: int, t: np.ndarray, centre: float, seconds: float, fx: float
           ) -> SceneObject:
    span = float(rng.uniform(0.35, 1.2))
    px = float(np.exp(rng.uniform(np.log(4.0), np.log(60.0))))
    rng_m = float(np.clip(fx * span / px, 10.0, 320.0))
    anchor = _sector_point(rng, centre, rng_m, (1.0, 20.0))
    heading = np.arctan2(anchor[0], anchor[1]) + rng.choice([-1, 1]) * np.pi / 2 + rng.normal(0, 0.6)
    pos = _wander_path(rng, t, anchor, rng.uniform(0.2, 0.8) * seconds, rng.uniform(2.0, 12.0), heading,
                       turn_std=0.2, climb_std=0.8, wobble=0.15, r_min=8.0)
    body, accent = DRONE_BODIES[rng.integers(len(DRONE_BODIES))]
    look = dict(body=body, accent=accent, rotor_opacity=float(rng.uniform(0.25, 0.45)),
                yaw_offset=float(rng.normal(0, 0.5)), body_temp=float(rng.uniform(25, 40)),
                motor_temp=float(rng.uniform(40, 65)))
    return SceneObject(oid, "drone", span, Path3(float(t[0]), pos), look)


def _bird(rng: np.random.Generator, oid: int, t: np.ndarray, centre: float, seconds: float, fx: float
          ) -> SceneObject:
    span = float(rng.uniform(0.4, 1.3))
    px = float(np.exp(rng.uniform(np.log(4.0), np.log(35.0))))
    anchor = _sector_point(rng, centre, float(np.clip(fx * span / px, 12.0, 250.0)), (1.0, 25.0))
    heading = rng.uniform(0, 2 * np.pi)
    pos = _wander_path(rng, t, anchor, rng.uniform(0.2, 0.8) * seconds, rng.uniform(6.0, 14.0), heading,
                       turn_std=0.5, climb_std=1.0, wobble=0.3, r_min=10.0)
    look = dict(colour=BIRD_COLOURS[rng.integers(len(BIRD_COLOURS))], flap_hz=float(rng.uniform(3.0, 7.0)),
                glide_hz=float(rng.uniform(0.1, 0.3)), phase=float(rng.uniform(0, 2 * np.pi)),
                body_temp=float(rng.uniform(28, 38)))
    return SceneObject(oid, "bird", span, Path3(float(t[0]), pos), look)


def _airplane(rng: np.random.Generator, oid: int, t: np.ndarray, centre: float, seconds: float
              ) -> SceneObject:
    span = float(rng.uniform(30.0, 60.0))
    anchor = _sector_point(rng, centre, float(rng.uniform(3000, 9000)), (3.0, 15.0), spread=35.0)
    heading = np.arctan2(anchor[0], anchor[1]) + rng.choice([-1, 1]) * rng.uniform(1.0, 2.0)
    vel = rng.uniform(70, 120) * np.array([np.sin(heading), np.cos(heading), 0.0])
    pos = anchor + (t - rng.uniform(0.3, 0.7) * seconds)[:, None] * vel
    look = dict(colour=(235, 235, 240), skin_temp=float(rng.uniform(-15, 0)), engine_temp=float(rng.uniform(80, 150)))
    return SceneObject(oid, "airplane", span, Path3(float(t[0]), pos), look)


def _unwrap_pan(pan, centre: float):
    return centre + (np.asarray(pan) - centre + 180.0) % 360.0 - 180.0


def _turret(rng: np.random.Generator, t: np.ndarray, centre: float, drones: list[SceneObject]) -> Turret:
    """Commanded pointing (stare, slew, follow a drone) through rate- and acceleration-limited axes."""
    cmd = np.zeros((len(t), 2))
    start = drones[rng.integers(len(drones))].path.pos[0] if drones else None
    cur = np.array([centre, 8.0]) if start is None else np.array(
        [_unwrap_pan(direction_to_pan_tilt(start)[0], centre), direction_to_pan_tilt(start)[1]])
    i = 0
    while i < len(t):
        kind = rng.choice(["stare", "slew", "follow"], p=[0.3, 0.25, 0.45] if drones else [0.5, 0.5, 0.0])
        n = int(rng.uniform(1.5, 5.0) / DT)
        sl = slice(i, min(i + n, len(t)))
        if kind == "follow":
            target = drones[rng.integers(len(drones))]
            pan, tilt = direction_to_pan_tilt(target.path.pos[sl])
            cmd[sl] = np.column_stack([_unwrap_pan(pan, centre), tilt])
        else:
            if kind == "slew":
                cur = np.array([centre + rng.uniform(-55, 55), rng.uniform(2.0, 20.0)])
            cmd[sl] = cur
        cur = cmd[sl.stop - 1].copy()
        i = sl.stop
    cmd[:, 0] = np.clip(cmd[:, 0], centre - PAN_RANGE, centre + PAN_RANGE)
    cmd[:, 1] = np.clip(cmd[:, 1], -2.0, 32.0)
    max_rate, max_acc, tau = rng.uniform(25, 50), 150.0, 0.25
    ang, rate = cmd[0].copy(), np.zeros(2)
    out = np.empty_like(cmd)
    for k in range(len(t)):
        want = np.clip((cmd[k] - ang) / tau, -max_rate, max_rate)
        rate += np.clip(want - rate, -max_acc * DT, max_acc * DT)
        ang = ang + rate * DT
        out[k] = ang
    jitter = np.column_stack([_smooth(rng, t, 0.015, 4.0, 12.0) for _ in range(2)])
    roll = rng.uniform(-0.5, 0.5) + _smooth(rng, t, 0.01, 2.0, 8.0)
    return Turret(float(t[0]), np.column_stack([out + jitter, roll]))


def _calibrations(rng: np.random.Generator) -> tuple[Calibration, Calibration]:
    (w, h), (tw, th) = RGB_SIZE, THERMAL_SIZE
    f = 800.0 * rng.uniform(0.98, 1.02)
    rgb = Calibration(fx=round(f, 3), fy=round(f * rng.uniform(0.998, 1.002), 3),
                      cx=round(w / 2 - 0.5 + rng.normal(0, 2), 3), cy=round(h / 2 - 0.5 + rng.normal(0, 2), 3),
                      dist=[round(rng.uniform(-0.05, 0.0), 4), 0.0, 0.0, 0.0, 0.0])
    ft = 560.0 * rng.uniform(0.98, 1.02)
    thermal = Calibration(fx=round(ft, 3), fy=round(ft, 3),
                          cx=round(tw / 2 - 0.5 + rng.normal(0, 1.5), 3),
                          cy=round(th / 2 - 0.5 + rng.normal(0, 1.5), 3),
                          dist=[round(rng.uniform(-0.08, -0.02), 4), 0.0, 0.0, 0.0, 0.0],
                          mount_pan=round(rng.uniform(-0.6, 0.6), 4), mount_tilt=round(rng.uniform(-0.5, 0.5), 4),
                          mount_roll=round(rng.uniform(-0.4, 0.4), 4),
                          mount_offset=[round(rng.uniform(0.08, 0.15), 4), round(rng.uniform(-0.03, 0.03), 4),
                                        round(rng.uniform(-0.12, -0.06), 4)])
    return rgb, thermal


def _timestamps(rng: np.random.Generator, n: int, fps: float, jitter: float) -> np.ndarray:
    """Frame times with clock jitter; they start after 0.1 s so that the 0-based telemetry logs cover them."""
    t = rng.uniform(0.1, 0.14) + np.arange(n) / fps + np.clip(rng.normal(0, jitter, n), -0.3 / fps, 0.3 / fps)
    return np.round(t, 6)


SKIES = {"clear": ((70, 125, 205), (190, 210, 230)), "hazy": ((120, 150, 195), (210, 214, 220)),
         "overcast": ((150, 156, 166), (198, 200, 204))}


def make_scenario(seed: int, seconds: float, drones: int, birds: int) -> Scenario:
    """Draw everything random about a flight from `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    t = np.arange(-1.0, seconds + 1.0, DT)
    centre = float(rng.uniform(100.0, 260.0))
    rgb_cal, th_cal = _calibrations(rng)
    objects = [_drone(rng, i + 1, t, centre, seconds, rgb_cal.fx) for i in range(drones)]
    objects += [_bird(rng, 101 + i, t, centre, seconds, rgb_cal.fx) for i in range(birds)]
    if rng.random() < 0.4:
        objects.append(_airplane(rng, 201, t, centre, seconds))
    turret = _turret(rng, t, centre, [o for o in objects if o.kind == "drone"])
    sky_kind = str(rng.choice(list(SKIES), p=[0.5, 0.3, 0.2]))
    sky = dict(kind=sky_kind, clouds=float(rng.uniform(0.1, 0.7) if sky_kind != "overcast" else rng.uniform(0.6, 0.95)),
               visibility_m=float(rng.uniform(3000, 15000)))
    streams = {
        "rgb": StreamSetup("rgb", "rgb", *RGB_SIZE, 30.0, rgb_cal,
                           _timestamps(rng, int(round(seconds * 30.0)), 30.0, 0.0015), 1 / 120),
        "thermal": StreamSetup("thermal", "thermal", *THERMAL_SIZE, 25.0, th_cal,
                               _timestamps(rng, int(round(seconds * 25.0)), 25.0, 0.002), 1 / 80),
    }
    ref = (round(float(rng.uniform(43.0, 49.0)), 7), round(float(rng.uniform(-1.0, 6.0)), 7),
           round(float(rng.uniform(60.0, 400.0)), 3))
    sun = (centre + float(rng.uniform(-80, 80)), float(rng.uniform(12, 45)))
    return Scenario(seed, seconds, ref, centre, sun, sky, objects, turret, streams)
