"""The static world around the turret as equirectangular panoramas (azimuth x elevation), one per
modality: sky gradient, sun, clouds, haze, far hills, fields, trees, buildings and masts. Each frame
samples its panorama through the stream's calibration and pose (`Panorama.view`), so the background
moves between frames exactly as a rotating camera sees it. The randomized profile (scenario.profile) sets
the panorama's extent and resolution, the clouds' texture, and adds clutter: far hills, dense treelines,
urban skylines with towers, antennas and cranes, power lines."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.io.flight import Calibration
from pipeline.geometry.camera import CameraPose, camera_matrix, stream_extrinsics
from pipeline.synth.scenario import MAST, Scenario, sky_colours

AZ_HALF = 100.0                     # panorama covers centre +- this many degrees
EL_TOP, EL_BOTTOM = 60.0, -35.0
T_LOW, T_HIGH = -40.0, 60.0         # Celsius mapped to thermal grey 0 and 255
GRID = 8                            # pixel step of the exact ray grid that the sampling maps interpolate


def to_grey(temp_c):
    """Apparent temperature (Celsius) -> 8-bit thermal grey (white hot)."""
    return np.clip((np.asarray(temp_c, np.float32) - T_LOW) * (255.0 / (T_HIGH - T_LOW)), 0, 255)


@dataclass
class Panorama:
    image: np.ndarray    # (H, W) or (H, W, 3) uint8
    az0: float           # azimuth of the left edge of column 0 (degrees); row 0 starts at EL_TOP
    res_az: float        # degrees per pixel along a row
    res_el: float        # degrees per pixel along a column
    el0: float = EL_TOP  # elevation of the top edge of row 0 (degrees)

    def view(self, pose: CameraPose, cal: Calibration, rays_cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The panorama as the camera sees it. `rays_cam` comes from `ray_grid`."""
        rot, _ = stream_extrinsics(pose, cal)
        r = rays_cam @ rot
        az = np.degrees(np.arctan2(r[..., 0], r[..., 1]))
        az = self.az0 + (az - self.az0) % 360.0
        el = np.degrees(np.arctan2(r[..., 2], np.hypot(r[..., 0], r[..., 1])))
        mx = ((az - self.az0) / self.res_az - 0.5).astype(np.float32)
        my = ((self.el0 - el) / self.res_el - 0.5).astype(np.float32)
        w, h = size
        gh, gw = rays_cam.shape[:2]
        mx = cv2.resize(mx, (gw * GRID, gh * GRID))[GRID:GRID + h, GRID:GRID + w]
        my = cv2.resize(my, (gw * GRID, gh * GRID))[GRID:GRID + h, GRID:GRID + w]
        return cv2.remap(self.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def ray_grid(cal: Calibration, size: tuple[int, int]) -> np.ndarray:
    """Camera-frame rays on a grid of pixels every GRID px, one cell beyond the image on each side, laid
    out so that cv2.resize by GRID followed by a crop of GRID px interpolates them at every pixel."""
    w, h = size
    xs = (np.arange(-(-w // GRID) + 2) - 0.5) * GRID - 0.5
    ys = (np.arange(-(-h // GRID) + 2) - 0.5) * GRID - 0.5
    gx, gy = np.meshgrid(xs, ys)
    pix = np.stack([gx, gy], -1).reshape(-1, 1, 2)
    norm = cv2.undistortPoints(pix, camera_matrix(cal), np.asarray(cal.dist, float)).reshape(gx.shape + (2,))
    return np.concatenate([norm, np.ones(gx.shape + (1,))], -1)


def _fbm(rng: np.random.Generator, shape: tuple[int, int], base: int, octaves: int = 5) -> np.ndarray:
    """Fractal noise in [0, 1] of `shape` (h, w) whose coarsest cells are about `base` px."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cell = max(base / 2 ** o, 2.0)
        small = rng.random((int(h / cell) + 3, int(w / cell) + 3)).astype(np.float32)
        out += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    return np.clip((out - out.mean()) / (out.std() + 1e-6) * 0.18 + 0.5, 0, 1)


def _plane_lookup(tex: np.ndarray, az: np.ndarray, dist: np.ndarray, metres_per_px: float) -> np.ndarray:
    """Sample a horizontal-plane texture at azimuth `az` (deg) and horizontal distance `dist` (units)."""
    a = np.radians(az)
    c = tex.shape[0] / 2
    mx = (c + dist * np.sin(a) / metres_per_px).astype(np.float32)
    my = (c - dist * np.cos(a) / metres_per_px).astype(np.float32)
    return cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


class _Canvas:
    """An RGB panorama and a thermal-grey panorama drawn with the same shapes."""

    def __init__(self, rgb: np.ndarray, grey: np.ndarray, az0: float, res: float, el0: float = EL_TOP):
        self.rgb, self.grey, self.az0, self.res, self.el0 = rgb, grey, az0, res, el0

    def xy(self, az, el) -> np.ndarray:
        return np.stack([(np.asarray(az) - self.az0) / self.res - 0.5, (self.el0 - np.asarray(el)) / self.res - 0.5], -1)

    def line(self, az, el, colour, temp, width_deg: float) -> None:
        """An open polyline; one thinner than a pixel is drawn 1 px wide at its coverage (fainter)."""
        pts = np.round(self.xy(az, el) * 16).astype(np.int32).reshape(1, -1, 2)
        px = width_deg / self.res
        lo, hi = pts[0].min(0) // 16 - 2, pts[0].max(0) // 16 + 3
        x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
        x1, y1 = min(int(hi[0]), self.grey.shape[1]), min(int(hi[1]), self.grey.shape[0])
        if x0 >= x1 or y0 >= y1:
            return
        shifted = pts - np.array([x0 * 16, y0 * 16], np.int32)
        for img, val in ((self.rgb, tuple(float(v) for v in colour[::-1])), (self.grey, (float(to_grey(temp)),))):
            roi = img[y0:y1, x0:x1]
            if px < 1.0:  # sub-pixel: a 1 px line blended in at its coverage
                layer = roi.copy()
                cv2.polylines(layer, shifted, False, val, 1, cv2.LINE_AA, 4)
                cv2.addWeighted(layer, px, roi, 1 - px, 0, dst=roi)
            else:
                cv2.polylines(roi, shifted, False, val, int(round(px)), cv2.LINE_AA, 4)

    def poly(self, az, el, colour, temp) -> None:
        pts = np.round(self.xy(az, el) * 16).astype(np.int32).reshape(1, -1, 2)
        cv2.fillPoly(self.rgb, pts, colour[::-1], cv2.LINE_AA, 4)
        cv2.fillPoly(self.grey, pts, float(to_grey(temp)), cv2.LINE_AA, 4)

    def ellipse(self, az, el, r_az, r_el, colour, temp) -> None:
        c = tuple(int(v) for v in np.round(self.xy(az, el) * 16))
        axes = (max(int(r_az / self.res * 16), 8), max(int(r_el / self.res * 16), 8))
        cv2.ellipse(self.rgb, c, axes, 0, 0, 360, colour[::-1], -1, cv2.LINE_AA, 4)
        cv2.ellipse(self.grey, c, axes, 0, 0, 360, float(to_grey(temp)), -1, cv2.LINE_AA, 4)

    def rect(self, az0, az1, el0, el1, colour, temp) -> None:
        self.poly([az0, az1, az1, az0], [el0, el0, el1, el1], colour, temp)


def _sky(scn: Scenario, rng: np.random.Generator, az: np.ndarray, el: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """Sky colour (RGB float) and apparent temperature; `az` is a row (1, W), `el` a column (H, 1)."""
    zen, hor = (np.array(c, np.float32) for c in sky_colours(scn))
    zen = zen * np.float32(rng.uniform(0.93, 1.05))
    e = np.maximum(el, 0.0)
    mix = np.exp(-e / np.float32(rng.uniform(10, 20)))[..., None]
    rgb = zen * (1 - mix) + hor * mix
    sa, se = np.radians(scn.sun)
    a, b = np.radians(az), np.radians(el)
    cos_g = np.sin(b) * np.float32(np.sin(se)) + np.cos(b) * np.float32(np.cos(se)) * np.cos(a - np.float32(sa))
    gamma = np.degrees(np.arccos(np.clip(cos_g, -1, 1)))
    glow = np.minimum(0.7 * np.exp(-gamma / 2.5) + 0.35 * np.exp(-gamma / 14.0), 1.0)[..., None]
    rgb = rgb + (np.array([255, 250, 235], np.float32) - rgb) * glow
    temp = 5.0 - 40.0 * np.sqrt(np.sin(np.radians(np.clip(el, 0.0, 90.0)))) + 60.0 * np.exp(-gamma / 0.6)

    h = 0.5 / np.tan(np.radians(np.clip(el, 0.8, 90.0)))  # distance to the cloud layer, in layer heights
    dens = _plane_lookup(_fbm(rng, (1024, 1024), scn.sky.get("cloud_scale", 160)), az, h, 0.004)
    light = _plane_lookup(_fbm(rng, (1024, 1024), 40), az, h, 0.004)
    thr = 1.0 - scn.sky["clouds"]
    cover = np.clip((dens - thr * 0.9 - 0.05) / scn.sky.get("cloud_edge", 0.12), 0, 1) * np.clip((el - 0.5) / 4.0, 0, 1)
    thick = np.clip((dens - thr) / 0.3, 0, 1) * light
    cloud_rgb = np.array([248, 248, 250], np.float32) * (1 - scn.sky.get("cloud_shade", 0.3) * thick[..., None]) + 40 * glow
    rgb = rgb * (1 - cover[..., None]) + cloud_rgb * cover[..., None]
    temp = temp * (1 - cover) + (rng.uniform(*scn.sky.get("cloud_temp", (-12, 2))) + 6 * thick) * cover
    haze = np.exp(-np.abs(el) / 1.5)[..., None] * 0.5
    rgb = rgb * (1 - haze) + hor * haze
    sun = (gamma < 0.27) * (1 - cover)  # the disk, hidden by clouds
    rgb = rgb + (255 - rgb) * sun[..., None]
    temp = temp + (150 - temp) * sun
    return rgb, temp


def _ground(rng: np.random.Generator, az: np.ndarray, el: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fields seen from the mast: a patchwork on the ground plane (2 m/px) times fine grass grain."""
    size = 1024
    base = ((90, 120, 58), 15.0)
    tex_rgb = np.full((size, size, 3), base[0][::-1], np.uint8)
    tex_t = np.full((size, size), to_grey(base[1]), np.uint8)
    palette = [((95, 125, 60), 16), ((130, 140, 70), 20), ((150, 130, 85), 24), ((80, 105, 55), 14),
               ((170, 160, 110), 22), ((115, 112, 100), 27)]
    for _ in range(80):
        c = rng.uniform(0, size, 2)
        ang, w, l = rng.uniform(0, 180), rng.uniform(30, 150), rng.uniform(30, 200)
        box = cv2.boxPoints(((float(c[0]), float(c[1])), (float(w), float(l)), float(ang))).astype(np.int32)
        colour, temp = palette[rng.integers(len(palette))]
        cv2.fillPoly(tex_rgb, [box], colour[::-1])
        cv2.fillPoly(tex_t, [box], float(to_grey(temp + rng.normal(0, 2))))
    cv2.circle(tex_rgb, (size // 2, size // 2), 25, base[0][::-1], -1)   # the turret stands on grass
    cv2.circle(tex_t, (size // 2, size // 2), 25, float(to_grey(base[1])), -1)
    dist = MAST / np.tan(np.radians(np.clip(-el, 0.02, 90.0)))
    grain = 0.75 + 0.5 * _plane_lookup(_fbm(rng, (512, 512), 24, 4), az, dist, 0.05)
    rgb = _plane_lookup(tex_rgb, az, dist, 2.0).astype(np.float32)[..., ::-1] * grain[..., None]
    temp = _plane_lookup(tex_t, az, dist, 2.0).astype(np.float32) * ((T_HIGH - T_LOW) / 255.0) + T_LOW
    return rgb, temp + 6.0 * (grain - 1.0)


def _skyline(c: _Canvas, rng: np.random.Generator, scn: Scenario, az_half: float = AZ_HALF) -> None:
    lo, hi = scn.centre_az - az_half, scn.centre_az + az_half
    azs = np.linspace(lo, hi, 400)
    hill = 0.25 + 0.9 * np.abs(np.cumsum(rng.normal(0, 0.08, len(azs))))
    hill = cv2.GaussianBlur(hill.reshape(1, -1), (0, 0), 6).ravel()
    c.poly(np.r_[azs, hi, lo], np.r_[hill, -0.3, -0.3], (120, 135, 140), 6.0)
    for _ in range(int(rng.integers(4, 9))):                        # woods along the skyline
        a0 = rng.uniform(lo, hi)
        width, dist = rng.uniform(3, 25), rng.uniform(200, 900)
        for a in np.sort(rng.uniform(a0, a0 + width, int(width * 6))):
            _tree(c, rng, a, dist * rng.uniform(0.95, 1.05))
    for _ in range(int(rng.integers(5, 15))):                       # lone trees, some near
        _tree(c, rng, rng.uniform(lo, hi), rng.uniform(80, 600))
    for _ in range(int(rng.integers(3, 9))):
        _building(c, rng, rng.uniform(lo, hi), rng.uniform(150, 900))
    for _ in range(int(rng.integers(1, 4))):                        # masts and poles
        a, dist, height = rng.uniform(lo, hi), rng.uniform(150, 700), rng.uniform(15, 45)
        base, top, half = -np.degrees(np.arctan(MAST / dist)), np.degrees(np.arctan((height - MAST) / dist)), \
            np.degrees(0.4 / dist)
        c.rect(a - half, a + half, base, top, (70, 70, 72), 12.0)


def _tree(c: _Canvas, rng: np.random.Generator, az: float, dist: float) -> None:
    height = rng.uniform(6, 22)
    base = -np.degrees(np.arctan(MAST / dist))
    top = np.degrees(np.arctan((height - MAST) / dist))
    crown = (top - base) * rng.uniform(0.3, 0.45)
    green = np.array([rng.uniform(40, 75), rng.uniform(70, 105), rng.uniform(35, 60)])
    shade = 1.0 - 0.4 * np.exp(-dist / 400)
    temp = rng.uniform(11, 17)
    c.rect(az - 0.15 * crown, az + 0.15 * crown, base, top - crown, (55, 45, 35), temp)
    for _ in range(4):
        dx, dy = rng.normal(0, 0.3 * crown, 2)
        col = tuple(float(v) for v in np.clip(green * shade * rng.uniform(0.8, 1.2), 0, 255))
        c.ellipse(az + dx, top - crown + dy, crown * rng.uniform(0.5, 0.9), crown * rng.uniform(0.6, 1.0),
                  col, temp + rng.normal(0, 1))


def _building(c: _Canvas, rng: np.random.Generator, az: float, dist: float) -> None:
    width, height = rng.uniform(10, 45), rng.uniform(5, 25)
    base = -np.degrees(np.arctan(MAST / dist))
    top = np.degrees(np.arctan((height - MAST) / dist))
    half = np.degrees(width / 2 / dist)
    facade = [(200, 190, 170), (170, 170, 175), (150, 90, 70), (225, 225, 220)][rng.integers(4)]
    wall_t = rng.uniform(14, 26)
    c.rect(az - half, az + half, base, top, facade, wall_t)
    if rng.random() < 0.6:                                                     # pitched roof
        ridge = top + np.degrees(rng.uniform(2, 5) / dist)
        c.poly([az - half * 1.05, az + half * 1.05, az], [top, top, ridge], (90, 60, 50), rng.uniform(25, 40))
    step_az, step_el = np.degrees(3.0 / dist), np.degrees(3.0 / dist)
    for wa in np.arange(az - half + step_az * 0.6, az + half - step_az * 0.4, step_az):
        for we in np.arange(base + step_el * 0.8, top - step_el * 0.3, step_el):
            c.rect(wa, wa + step_az * 0.45, we, we + step_el * 0.45, (60, 70, 85), wall_t - rng.uniform(5, 15))


def _hills(c: _Canvas, rng: np.random.Generator, scn: Scenario, lo: float, hi: float) -> None:
    """One to three ridges beyond the skyline, paler and cooler with distance (aerial perspective)."""
    hor = np.array(sky_colours(scn)[1], float)
    layers = int(rng.integers(1, 4))
    for i in range(layers):
        far = (layers - i) / layers  # 1 for the farthest ridge
        azs = np.linspace(lo, hi, 300)
        ridge = np.abs(np.cumsum(rng.normal(0, rng.uniform(0.05, 0.25), len(azs))))
        ridge = cv2.GaussianBlur(ridge.reshape(1, -1), (0, 0), rng.uniform(3, 10)).ravel()
        ridge = 0.3 + ridge / max(ridge.max(), 1e-6) * rng.uniform(1.0, 8.0) * (0.5 + 0.5 * far)
        base = np.array([rng.uniform(60, 110), rng.uniform(80, 125), rng.uniform(60, 100)])
        colour = tuple(float(v) for v in base * (1 - 0.7 * far) + hor * 0.7 * far)
        c.poly(np.r_[azs, hi, lo], np.r_[ridge, -0.3, -0.3], colour, rng.uniform(0, 10) + 6 * (1 - far))


def _treeline(c: _Canvas, rng: np.random.Generator, lo: float, hi: float) -> None:
    """A dense wood edge across much of the sector, 100-500 m away."""
    for _ in range(int(rng.integers(1, 3))):
        width = rng.uniform(0.3, 1.0) * (hi - lo)
        a0 = rng.uniform(lo, hi - width)
        dist = rng.uniform(100, 500)
        n = int(width * rng.uniform(1.5, 4.0) * 200 / dist)
        for a in np.sort(rng.uniform(a0, a0 + width, n)):
            _tree(c, rng, a, dist * rng.uniform(0.9, 1.15))


def _urban(c: _Canvas, rng: np.random.Generator, lo: float, hi: float) -> None:
    """An urban skyline: many buildings and towers 250-2500 m away, floors of windows, roof antennas, cranes."""
    width = rng.uniform(0.3, 1.0) * (hi - lo)
    a0 = rng.uniform(lo, hi - width)
    n = int(rng.integers(15, 60))
    for a, dist in sorted(zip(rng.uniform(a0, a0 + width, n), np.exp(rng.uniform(np.log(250), np.log(2500), n))),
                          key=lambda p: -p[1]):
        w_m, h_m = rng.uniform(12, 60), float(np.exp(rng.uniform(np.log(8), np.log(140))))
        base = -np.degrees(np.arctan(MAST / dist))
        top = np.degrees(np.arctan((h_m - MAST) / dist))
        half = np.degrees(w_m / 2 / dist)
        grey = rng.uniform(90, 220)
        facade = tuple(float(v) for v in np.clip(grey * rng.uniform(0.85, 1.1, 3), 0, 255))
        wall_t = rng.uniform(8, 28)
        c.rect(a - half, a + half, base, top, facade, wall_t)
        floor = np.degrees(3.2 / dist)
        if floor / c.res >= 1.5:  # floors of windows, one band per floor
            glass = tuple(float(v) for v in np.clip(rng.uniform(40, 120) * rng.uniform(0.8, 1.2, 3), 0, 255))
            glass_t = wall_t + rng.uniform(-12, 6)
            for fe in np.arange(base + floor * 0.9, top - floor * 0.3, floor):
                c.rect(a - half * 0.92, a + half * 0.92, fe, fe + floor * 0.45, glass, glass_t)
        if rng.random() < 0.3:  # a roof antenna or mast
            c.line([a, a], [top, top + np.degrees(rng.uniform(3, 20) / dist)], (60, 60, 62), rng.uniform(5, 25),
                   np.degrees(0.3 / dist))
    for _ in range(int(rng.integers(0, 3))):  # tower cranes: a mast and a jib
        a, dist, h_m = rng.uniform(a0, a0 + width), rng.uniform(200, 1200), rng.uniform(30, 70)
        base, top = -np.degrees(np.arctan(MAST / dist)), np.degrees(np.arctan((h_m - MAST) / dist))
        jib = np.degrees(rng.uniform(25, 60) / dist) * rng.choice([-1, 1])
        col = (200, 170, 40) if rng.random() < 0.6 else (200, 60, 40)
        c.line([a, a], [base, top], col, 12.0, np.degrees(1.5 / dist))
        c.line([a - 0.3 * jib, a + jib], [top, top], col, 12.0, np.degrees(1.0 / dist))


def _power_lines(c: _Canvas, rng: np.random.Generator, lo: float, hi: float) -> None:
    """Pylons 60-400 m away with sagging wires between them: thin lines across the sky."""
    dist = rng.uniform(60, 400)
    h_m = rng.uniform(15, 40)
    spacing = np.degrees(rng.uniform(150, 350) / dist)
    start = rng.uniform(lo, lo + spacing)
    pylons = np.arange(start, hi, spacing)
    base = -np.degrees(np.arctan(MAST / dist))
    top = np.degrees(np.arctan((h_m - MAST) / dist))
    half = np.degrees(rng.uniform(2, 4) / dist)
    for a in pylons:
        c.poly([a - half, a + half, a + half * 0.25, a - half * 0.25], [base, base, top, top], (80, 82, 85), 14.0)
        c.line([a - half * 2.2, a + half * 2.2], [top * 0.93, top * 0.93], (80, 82, 85), 14.0, np.degrees(0.5 / dist))
    sag = np.degrees(rng.uniform(3, 10) / dist)
    for k in range(int(rng.integers(2, 5))):
        off = (k - 1.5) * half * 1.3
        for a, b in zip(pylons[:-1], pylons[1:]):
            xs = np.linspace(0, 1, 24)
            c.line(a + off + (b - a) * xs, top * 0.93 - sag * 4 * xs * (1 - xs), (45, 45, 48), rng.uniform(10, 20),
                   np.degrees(0.03 / dist))


def _texture(c: _Canvas, rng: np.random.Generator, plain: tuple[np.ndarray, np.ndarray]) -> None:
    """Fine grain (foliage, facades, rock) on everything drawn over the plain sky and ground: the flat
    shapes would otherwise teach a detector that texture means target."""
    drawn = (c.rgb != plain[0]).any(axis=2) | (c.grey != plain[1])
    tex = _fbm(rng, c.grey.shape, float(rng.uniform(3.0, 8.0)), octaves=3) - np.float32(0.5)
    gain = np.float32(rng.uniform(0.5, 1.2))
    f = np.where(drawn, 1.0 + gain * tex, 1.0).astype(np.float32)
    c.rgb[:] = np.clip(c.rgb * f[..., None], 0, 255).astype(np.uint8)
    c.grey[:] = np.clip(c.grey + np.where(drawn, 40.0 * gain * tex, 0.0), 0, 255).astype(np.uint8)


def build_panoramas(scn: Scenario, rng: np.random.Generator) -> dict[str, Panorama]:
    """RGB and thermal panoramas of the flight's world, at each stream's angular resolution (the
    randomized profile: over the turret's sector, at the finer camera's resolution within a budget)."""
    rgb_cal, th_cal = scn.streams["rgb"].calibration, scn.streams["thermal"].calibration
    prof = scn.profile
    res = float(prof["pano_res"]) if "pano_res" in prof else float(np.degrees(1.0 / rgb_cal.fx))
    az_half, el_top, el_bottom = prof.get("az_half", AZ_HALF), prof.get("el_top", EL_TOP), prof.get("el_bottom", EL_BOTTOM)
    az0 = scn.centre_az - az_half
    w, h = int(2 * az_half / res), int((el_top - el_bottom) / res)
    az = az0 + (np.arange(w, dtype=np.float32) + 0.5) * res
    el = el_top - (np.arange(h, dtype=np.float32) + 0.5) * res
    az2, el2 = az[None, :], el[:, None]
    k = int(np.searchsorted(-el, np.degrees(np.arctan(MAST / 4000.0))))  # first row below the horizon
    sky_rgb, sky_t = _sky(scn, rng, az2[:, ::2], el2[:k:2])  # smooth: computed at half resolution
    sky_rgb = cv2.resize(sky_rgb, (w, k), interpolation=cv2.INTER_LINEAR)
    sky_t = cv2.resize(sky_t.astype(np.float32), (w, k), interpolation=cv2.INTER_LINEAR)
    gr_rgb, gr_t = _ground(rng, az2, el2[k:])
    haze = np.exp(-np.abs(el2[k:]) / 0.8)[..., None] * np.float32(0.6)
    gr_rgb = gr_rgb * (1 - haze) + np.array(sky_colours(scn)[1], np.float32) * haze
    rgb = np.concatenate([sky_rgb, gr_rgb])
    temp = np.concatenate([sky_t, gr_t])
    canvas = _Canvas(np.ascontiguousarray(np.clip(rgb[..., ::-1], 0, 255).astype(np.uint8)),
                     to_grey(temp).astype(np.uint8), az0, res, el_top)
    world = prof.get("world") or {}
    lo, hi = scn.centre_az - az_half, scn.centre_az + az_half
    plain = (canvas.rgb.copy(), canvas.grey.copy()) if world else None
    if world.get("hills"):
        _hills(canvas, rng, scn, lo, hi)
    _skyline(canvas, rng, scn, az_half)
    if world.get("urban"):
        _urban(canvas, rng, lo, hi)
    if world.get("treeline"):
        _treeline(canvas, rng, lo, hi)
    if world.get("power_lines"):
        _power_lines(canvas, rng, lo, hi)
    if plain is not None:
        _texture(canvas, rng, plain)
    th_res = float(np.degrees(1.0 / th_cal.fx))
    tw, th = int(round(w * res / th_res)), int(round(h * res / th_res))
    interp = cv2.INTER_AREA if tw <= w else cv2.INTER_LINEAR  # finer than the RGB panorama (randomized, capped)
    grey = cv2.GaussianBlur(cv2.resize(canvas.grey, (tw, th), interpolation=interp), (0, 0), 0.7)
    return {"rgb": Panorama(canvas.rgb, az0, res, res, el_top),
            "thermal": Panorama(grey, az0, res * w / tw, res * h / th, el_top)}
