"""What happens in a synthetic flight: cameras, the turret's motion, and the 3D paths of drones, birds
and an occasional airliner in a local ENU frame centred on the turret (metres, up = 0 at the turret).

`make_scenario(..., randomize=True)` draws the domain-randomized profile instead (`_randomized`): sensor
sizes and fields of view, drone shapes (quadcopter, hexacopter, fixed wing) and sizes from about 3 to 200
px, cluttered worlds (hills, treelines, urban skylines, power lines; cloud textures) and distractors
(birds and flocks, airliners and light aircraft, helicopters), all in ground truth with their classes.
The default profile draws exactly what it always drew."""
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
    kind: str                  # drone | bird | airplane | helicopter
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
    profile: dict = field(default_factory=dict)  # randomized profile only: world, panorama extent, gt kinds

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


def _turret(rng: np.random.Generator, t: np.ndarray, centre: float, drones: list[SceneObject],
            pan_range: float = PAN_RANGE, slew: float = 55.0, slew_tilt: tuple[float, float] = (2.0, 20.0),
            tilt_limits: tuple[float, float] = (-2.0, 32.0)) -> Turret:
    """Commanded pointing (stare, slew, follow one of `drones`) through rate- and acceleration-limited axes."""
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
                cur = np.array([centre + rng.uniform(-slew, slew), rng.uniform(*slew_tilt)])
            cmd[sl] = cur
        cur = cmd[sl.stop - 1].copy()
        i = sl.stop
    cmd[:, 0] = np.clip(cmd[:, 0], centre - pan_range, centre + pan_range)
    cmd[:, 1] = np.clip(cmd[:, 1], *tilt_limits)
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


def sky_colours(scn: Scenario) -> tuple[tuple, tuple]:
    """RGB of the sky at the zenith and at the horizon: the sky kind's, or the flight's own (randomized)."""
    return scn.sky.get("colours") or SKIES[scn.sky["kind"]]


def make_scenario(seed: int, seconds: float, drones: int, birds: int, randomize: bool = False) -> Scenario:
    """Draw everything random about a flight from `seed` (the randomized profile with `randomize`)."""
    if randomize:
        return _randomized(seed, seconds, drones, birds)
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


# the randomized profile ---------------------------------------------------------------------------------
RANDOM_THERMAL_SIZES = ((320, 256), (640, 512))
RANDOM_RGB_SIZES = ((640, 512), (1280, 720))
THERMAL_HFOV = (12.0, 45.0)        # degrees, log-uniform; the RGB camera's is 1.1-2.2 times wider, up to RGB_HFOV_MAX
RGB_HFOV_MAX = 70.0
DRONE_PX = (3.0, 200.0)            # the drone's size in pixels where its path is anchored (log-uniform)
DRONE_SHAPES = {"quad": ((0.25, 1.2), 0.5), "hexa": ((0.6, 1.8), 0.25), "fixed_wing": ((0.8, 3.0), 0.25)}
GT_CLASSES = {"drone": 1, "bird": 2, "airplane": 3, "helicopter": 4}  # as pipeline/io/svanstrom.py
PANO_PIXELS = 10e6                 # the RGB panorama's pixel budget (its resolution is capped to fit)
FIXED_WING_BODIES = [((235, 235, 230), (200, 60, 40)), ((120, 125, 110), (70, 75, 60)),
                     ((180, 180, 185), (30, 30, 35)), ((240, 240, 235), (40, 90, 180))]
HELI_COLOURS = [(60, 75, 55), (230, 230, 228), (190, 40, 35), (235, 195, 40), (45, 45, 50), (30, 50, 110)]
PLANE_COLOURS = [(235, 235, 240), (215, 215, 220), (240, 240, 235), (200, 50, 45), (245, 205, 60)]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _anchor(rng: np.random.Generator, centre: float, spread: float, dist: float, el_deg: tuple[float, float],
            max_height: float) -> np.ndarray:
    """A point `dist` m away in the sector, at most `max_height` m up (so far objects stay low)."""
    hi = min(el_deg[1], float(np.degrees(np.arctan(max_height / dist))))
    return _sector_point(rng, centre, dist, (min(el_deg[0], hi), hi), spread)


def _random_calibration(rng: np.random.Generator, size: tuple[int, int], hfov: float, mount: bool) -> Calibration:
    w, h = size
    f = float((w / 2) / np.tan(np.radians(hfov / 2)))
    extra = {}
    if mount:
        extra = dict(mount_pan=round(rng.uniform(-0.6, 0.6), 4), mount_tilt=round(rng.uniform(-0.5, 0.5), 4),
                     mount_roll=round(rng.uniform(-0.4, 0.4), 4),
                     mount_offset=[round(rng.uniform(0.05, 0.2), 4), round(rng.uniform(-0.05, 0.05), 4),
                                   round(rng.uniform(-0.15, -0.04), 4)])
    return Calibration(fx=round(f, 3), fy=round(f * rng.uniform(0.998, 1.002), 3),
                       cx=round(w / 2 - 0.5 + rng.normal(0, w / 300), 3), cy=round(h / 2 - 0.5 + rng.normal(0, h / 300), 3),
                       dist=[round(rng.uniform(-0.08, 0.0), 4), 0.0, 0.0, 0.0, 0.0], **extra)


def _random_drone(rng: np.random.Generator, oid: int, t: np.ndarray, centre: float, spread: float, seconds: float,
                  fxs: tuple[float, float]) -> SceneObject:
    shapes = list(DRONE_SHAPES)
    shape = str(rng.choice(shapes, p=[DRONE_SHAPES[k][1] for k in shapes]))
    span = float(rng.uniform(*DRONE_SHAPES[shape][0]))
    px = _log_uniform(rng, *DRONE_PX)  # in one camera, and at most DRONE_PX[1] in either
    dist = float(np.clip(fxs[rng.integers(2)] * span / px, max(6.0, max(fxs) * span / DRONE_PX[1]), 4000.0))
    anchor = _anchor(rng, centre, spread, dist, (-2.0, 25.0), 500.0)
    heading = np.arctan2(anchor[0], anchor[1]) + rng.choice([-1, 1]) * np.pi / 2 + rng.normal(0, 0.8)
    slow = float(np.clip(dist / 60.0, 0.15, 1.0))  # near the turret drones creep (and stay big in view)
    if shape == "fixed_wing":
        pos = _wander_path(rng, t, anchor, rng.uniform(0.2, 0.8) * seconds, rng.uniform(12.0, 25.0), heading,
                           turn_std=0.12, climb_std=0.6, wobble=0.05, r_min=12.0)
        body, accent = FIXED_WING_BODIES[rng.integers(len(FIXED_WING_BODIES))]
    else:
        pos = _wander_path(rng, t, anchor, rng.uniform(0.2, 0.8) * seconds, rng.uniform(0.8, 14.0) * slow, heading,
                           turn_std=0.25, climb_std=0.8 * slow, wobble=0.15, r_min=5.0)
        body, accent = DRONE_BODIES[rng.integers(len(DRONE_BODIES))]
    look = dict(shape=shape, body=body, accent=accent, rotor_opacity=float(rng.uniform(0.2, 0.5)),
                yaw_offset=float(rng.normal(0, 0.5)), body_temp=float(rng.uniform(8, 42)),
                motor_temp=float(rng.uniform(20, 75)))
    return SceneObject(oid, "drone", span, Path3(float(t[0]), pos), look)


def _random_birds(rng: np.random.Generator, first_id: int, n: int, t: np.ndarray, centre: float, spread: float,
                  seconds: float, fxs: tuple[float, float], flock: bool) -> list[SceneObject]:
    """`n` lone birds, or (flock) n birds of one kind flying together."""
    out = []
    span0, anchor0, heading0 = float(rng.uniform(0.25, 1.8)), None, rng.uniform(0, 2 * np.pi)
    if flock:
        dist = float(np.clip(fxs[rng.integers(2)] * span0 / _log_uniform(rng, 3.0, 30.0), 15.0, 500.0))
        anchor0 = _anchor(rng, centre, spread, dist, (0.0, 25.0), 200.0)
        colour = BIRD_COLOURS[rng.integers(len(BIRD_COLOURS))]
    for k in range(n):
        span = span0 * float(rng.uniform(0.85, 1.15)) if flock else float(rng.uniform(0.25, 1.8))
        if flock:
            anchor = anchor0 + rng.normal(0, 2.5 * span0 * np.sqrt(n), 3)
            heading = heading0 + rng.normal(0, 0.1)
        else:
            dist = float(np.clip(fxs[rng.integers(2)] * span / _log_uniform(rng, 3.0, 80.0), 6.0, 600.0))
            anchor = _anchor(rng, centre, spread, dist, (-1.0, 30.0), 250.0)
            heading = rng.uniform(0, 2 * np.pi)
            colour = BIRD_COLOURS[rng.integers(len(BIRD_COLOURS))]
        pos = _wander_path(rng, t, anchor, 0.5 * seconds if flock else rng.uniform(0.2, 0.8) * seconds,
                           rng.uniform(7.0, 12.0) if flock else rng.uniform(5.0, 16.0), heading,
                           turn_std=0.15 if flock else 0.5, climb_std=0.6 if flock else 1.0, wobble=0.3, r_min=5.0)
        look = dict(colour=colour, flap_hz=float(rng.uniform(2.5, 8.0)), glide_hz=float(rng.uniform(0.1, 0.3)),
                    phase=float(rng.uniform(0, 2 * np.pi)), body_temp=float(rng.uniform(25, 39)))
        out.append(SceneObject(first_id + k, "bird", span, Path3(float(t[0]), pos), look))
    return out


def _random_airplane(rng: np.random.Generator, oid: int, t: np.ndarray, centre: float, spread: float,
                     seconds: float, fxs: tuple[float, float]) -> SceneObject:
    """An airliner far away or a light aircraft nearer, crossing the sector in a straight line."""
    if rng.random() < 0.5:
        span, px, lim, speed, top = rng.uniform(28.0, 65.0), _log_uniform(rng, 3.0, 60.0), (1500.0, 12000.0), \
            rng.uniform(70.0, 220.0), 3000.0
    else:
        span, px, lim, speed, top = rng.uniform(8.0, 15.0), _log_uniform(rng, 4.0, 150.0), (150.0, 5000.0), \
            rng.uniform(35.0, 70.0), 800.0
    dist = float(np.clip(fxs[rng.integers(2)] * span / px, *lim))
    anchor = _anchor(rng, centre, spread, dist, (1.0, 25.0), top)
    heading = np.arctan2(anchor[0], anchor[1]) + rng.choice([-1, 1]) * rng.uniform(0.8, 2.3)
    vel = speed * np.array([np.sin(heading), np.cos(heading), 0.0])
    pos = anchor + (t - rng.uniform(0.3, 0.7) * seconds)[:, None] * vel
    pos[:, 2] = np.maximum(pos[:, 2], -MAST + 20.0)
    look = dict(colour=PLANE_COLOURS[rng.integers(len(PLANE_COLOURS))], skin_temp=float(rng.uniform(-20, 10)),
                engine_temp=float(rng.uniform(60, 200)))
    return SceneObject(oid, "airplane", float(span), Path3(float(t[0]), pos), look)


def _random_helicopter(rng: np.random.Generator, oid: int, t: np.ndarray, centre: float, spread: float,
                       seconds: float, fxs: tuple[float, float]) -> SceneObject:
    span = float(rng.uniform(8.0, 16.0))  # main rotor diameter
    dist = float(np.clip(fxs[rng.integers(2)] * span / _log_uniform(rng, 4.0, 150.0), 60.0, 5000.0))
    anchor = _anchor(rng, centre, spread, dist, (0.3, 15.0), 600.0)
    heading = rng.uniform(0, 2 * np.pi)
    pos = _wander_path(rng, t, anchor, rng.uniform(0.2, 0.8) * seconds, rng.uniform(2.0, 55.0), heading,
                       turn_std=0.1, climb_std=0.5, wobble=0.3, r_min=40.0)
    pos[:, 2] = np.maximum(pos[:, 2], -MAST + 10.0)
    look = dict(colour=HELI_COLOURS[rng.integers(len(HELI_COLOURS))], rotor_opacity=float(rng.uniform(0.12, 0.3)),
                skin_temp=float(rng.uniform(5, 30)), engine_temp=float(rng.uniform(80, 250)),
                yaw_offset=float(rng.normal(0, 0.3)))
    return SceneObject(oid, "helicopter", span, Path3(float(t[0]), pos), look)


def _random_sky(rng: np.random.Generator) -> dict:
    kind = str(rng.choice(list(SKIES), p=[0.45, 0.3, 0.25]))
    zen, hor = (np.array(c, float) for c in SKIES[kind])
    zen = zen * rng.uniform(0.8, 1.1) * rng.uniform(0.95, 1.05, 3)  # brightness, and a slight tint
    hor = hor * rng.uniform(0.9, 1.05) * rng.uniform(0.97, 1.03, 3)
    if rng.random() < 0.12:  # low sun: a warm horizon
        hor = np.array([235.0, 190.0, 150.0]) * rng.uniform(0.9, 1.05)
    clouds = float(rng.uniform(0.0, 0.8) if kind != "overcast" else rng.uniform(0.55, 0.98))
    return dict(kind=kind, clouds=clouds, visibility_m=float(_log_uniform(rng, 1500.0, 25000.0)),
                colours=(tuple(round(float(v), 1) for v in np.clip(zen, 0, 255)),
                         tuple(round(float(v), 1) for v in np.clip(hor, 0, 255))),
                cloud_scale=float(_log_uniform(rng, 90.0, 320.0)), cloud_edge=float(_log_uniform(rng, 0.03, 0.25)),
                cloud_shade=float(rng.uniform(0.1, 0.45)),  # clouds are warmer than the clear sky above them
                cloud_temp=(float(rng.uniform(-14, -2)), float(rng.uniform(0, 10))))


def _randomized(seed: int, seconds: float, drones: int, birds: int) -> Scenario:
    """The domain-randomized profile (see the module text); deterministic for a seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    t = np.arange(-1.0, seconds + 1.0, DT)
    centre = float(rng.uniform(0.0, 360.0))
    th_size = RANDOM_THERMAL_SIZES[rng.integers(len(RANDOM_THERMAL_SIZES))]
    rgb_size = RANDOM_RGB_SIZES[rng.integers(len(RANDOM_RGB_SIZES))]
    th_hfov = _log_uniform(rng, *THERMAL_HFOV)
    rgb_hfov = min(th_hfov * float(rng.uniform(1.1, 2.2)), RGB_HFOV_MAX)
    rgb_cal = _random_calibration(rng, rgb_size, rgb_hfov, mount=False)
    th_cal = _random_calibration(rng, th_size, th_hfov, mount=True)
    fxs = (rgb_cal.fx, th_cal.fx)
    pan_range = float(rng.uniform(15.0, 40.0))
    spread = pan_range + 0.3 * rgb_hfov
    objects = [_random_drone(rng, i + 1, t, centre, spread, seconds, fxs) for i in range(drones)]
    objects += _random_birds(rng, 101, birds, t, centre, spread, seconds, fxs, flock=False)
    if rng.random() < 0.3:
        objects += _random_birds(rng, 101 + birds, int(rng.integers(4, 10)), t, centre, spread, seconds, fxs, flock=True)
    objects += [_random_airplane(rng, 201 + k, t, centre, spread, seconds, fxs)
                for k in range(int(rng.random() < 0.6) + int(rng.random() < 0.25))]
    objects += [_random_helicopter(rng, 301 + k, t, centre, spread, seconds, fxs)
                for k in range(int(rng.random() < 0.5) + int(rng.random() < 0.15))]
    drone_objs = [o for o in objects if o.kind == "drone"]
    others = [o for o in objects if o.kind != "drone" and not (o.kind == "bird" and o.id > 100 + birds)]
    targets = drone_objs * 2 + others  # the operator follows drones mostly, sometimes what looks like one
    tilt_limits = (-3.0, 25.0)
    turret = _turret(rng, t, centre, targets, pan_range=pan_range, slew=0.8 * pan_range, slew_tilt=(-1.0, 18.0),
                     tilt_limits=tilt_limits)
    sky = _random_sky(rng)
    streams = {
        "rgb": StreamSetup("rgb", "rgb", *rgb_size, 30.0, rgb_cal,
                           _timestamps(rng, int(round(seconds * 30.0)), 30.0, 0.0015), float(rng.uniform(1 / 500, 1 / 60))),
        "thermal": StreamSetup("thermal", "thermal", *th_size, 25.0, th_cal,
                               _timestamps(rng, int(round(seconds * 25.0)), 25.0, 0.002), float(rng.uniform(1 / 200, 1 / 50))),
    }
    ref = (round(float(rng.uniform(35.0, 60.0)), 7), round(float(rng.uniform(-10.0, 25.0)), 7),
           round(float(rng.uniform(0.0, 1200.0)), 3))
    sun = (centre + float(rng.uniform(-120, 120)), float(rng.uniform(5, 60)))
    # the panorama: the sector the turret can see, at the finer camera's resolution within a pixel budget
    vfov = max(float(np.degrees(2 * np.arctan(s.height / 2 / s.calibration.fy))) for s in streams.values())
    hfov = max(rgb_hfov, th_hfov)
    az_half = pan_range + 0.5 * hfov * 1.15 + 4.0
    el_top = min(tilt_limits[1] + 0.5 * vfov * 1.15 + 3.0, 85.0)
    el_bottom = max(tilt_limits[0] - 0.5 * vfov * 1.15 - 3.0, -60.0)
    finest = float(np.degrees(1.0 / max(rgb_cal.fx, th_cal.fx)))
    res = max(finest, float(np.sqrt(2 * az_half * (el_top - el_bottom) / PANO_PIXELS)))
    world = dict(hills=bool(rng.random() < 0.5), treeline=bool(rng.random() < 0.6), urban=bool(rng.random() < 0.35),
                 power_lines=bool(rng.random() < 0.3))
    profile = dict(randomized=True, gt_kinds=tuple(GT_CLASSES), az_half=round(az_half, 3), el_top=round(el_top, 3),
                   el_bottom=round(el_bottom, 3), pano_res=res, world=world)
    return Scenario(seed, seconds, ref, centre, sun, sky, objects, turret, streams, profile)
