"""Frames of one stream: the panorama seen through the stream's pose, then every object drawn as a
sprite (anti-aliased, supersampled when small, motion-blurred over the exposure), sun glare and sensor
noise. Ground-truth boxes come from the very alpha masks that are composited."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.geometry.camera import CameraPose, project_enu, stream_extrinsics
from pipeline.synth.background import Panorama, ray_grid, to_grey
from pipeline.synth.models import AMBIENT_C, MODELS, Part
from pipeline.synth.scenario import Scenario, StreamSetup, sky_colours

GT_ALPHA = 0.2       # a pixel belongs to an object's box where its coverage reaches this (or half
                     # the sprite's peak coverage, for tiny or motion-blurred objects)
THERMAL_PSF = 0.7    # sigma in pixels of the thermal optics' blur
MIN_BOX = 2          # smallest longer box side (pixels) written to ground truth
SHIFT = 4            # sub-pixel bits for cv2 drawing
GLARE_TINT = np.array([215.0, 240.0, 255.0], np.float32)  # BGR of the veiling glare at full strength


@dataclass
class Sprite:
    oid: int
    kind: str
    depth: float
    x0: int
    y0: int
    colour: np.ndarray   # premultiplied, float32 (h, w, C) in 0..255
    alpha: np.ndarray    # float32 (h, w) in 0..1


@dataclass
class Box:
    oid: int
    ltwh: tuple[int, int, int, int]
    visibility: float
    kind: str = "drone"


def _line_kernel(d: np.ndarray) -> np.ndarray | None:
    """Normalised kernel of a line of displacement d (pixels), centred; None when shorter than 0.5 px."""
    n = float(np.hypot(*d))
    if n < 0.5:
        return None
    k = 2 * int(np.ceil(max(abs(d[0]), abs(d[1])) / 2)) + 3
    ker = np.zeros((k, k), np.uint8)
    c = (k - 1) / 2
    a = np.round((np.array([c, c]) - d / 2) * 16).astype(int)
    b = np.round((np.array([c, c]) + d / 2) * 16).astype(int)
    cv2.line(ker, tuple(a), tuple(b), 255, 1, cv2.LINE_AA, SHIFT)
    ker = ker.astype(np.float32)
    return ker / ker.sum()


class StreamRenderer:
    """Renders frames and ground-truth boxes of one stream of a scenario."""

    def __init__(self, scn: Scenario, setup: StreamSetup, pano: Panorama, rng: np.random.Generator):
        self.scn, self.s, self.pano = scn, setup, pano
        self.thermal = setup.modality == "thermal"
        self.size = (setup.width, setup.height)
        self.rays = ray_grid(setup.calibration, self.size)
        w, h = self.size
        channels = () if self.thermal else (3,)
        self.noise = (rng.normal(0, 2.5, (4, h + 32, w + 32) + channels)).astype(np.int16)
        self.rng = rng
        if self.thermal:
            yy, xx = np.mgrid[0:h, 0:w]
            r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w / 2) ** 2
            fixed = rng.normal(0, 1.5, (1, w)) + rng.normal(0, 1.0, (h, w)) + 8.0 * (0.6 - r2)
            self.fixed = np.round(fixed).astype(np.int16)
            self.agc: np.ndarray | None = None  # smoothed (low, high) grey of the scene
        sa, se = np.radians(scn.sun)
        self.sun_dir = np.array([np.sin(sa) * np.cos(se), np.cos(sa) * np.cos(se), np.sin(se)])
        self.horizon_rgb = np.array(sky_colours(scn)[1], float)
        self.gt_kinds = tuple(scn.profile.get("gt_kinds", ("drone",)))  # object kinds given boxes

    def render(self, t: float) -> tuple[np.ndarray, list[Box]]:
        """The frame at time t (uint8, grey for thermal) and the boxes of visible drones (of every object
        kind in the randomized profile)."""
        turret = self.scn.turret
        pose = turret.pose(t)
        exp = self.s.exposure
        pose_a, pose_b = turret.pose(t - exp / 2), turret.pose(t + exp / 2)
        cal = self.s.calibration
        frame = self.pano.view(pose, cal, self.rays, self.size)
        centre_ray = 1e6 * stream_extrinsics(pose, cal)[0][2]
        d = project_enu(centre_ray[None], pose_b, cal)[0][0] - project_enu(centre_ray[None], pose_a, cal)[0][0]
        ker = _line_kernel(d)
        if ker is not None:
            frame = cv2.filter2D(frame, -1, ker, borderType=cv2.BORDER_REPLICATE)
        sprites = [sp for o in self.scn.objects if (sp := self._sprite(o, t, pose, pose_a, pose_b)) is not None]
        sprites.sort(key=lambda sp: -sp.depth)
        for sp in sprites:
            self._composite(frame, sp)
        frame = self._agc(frame) if self.thermal else self._glare(frame, pose)
        frame = self._noise(frame)
        boxes = [b for i, sp in enumerate(sprites) if sp.kind in self.gt_kinds and (b := self._box(sp, sprites[i + 1:]))]
        return frame, boxes

    def _sprite(self, obj, t: float, pose: CameraPose, pose_a: CameraPose, pose_b: CameraPose) -> Sprite | None:
        cal, (w, h) = self.s.calibration, self.size
        rot, centre = stream_extrinsics(pose, cal)
        pos = obj.path.at(t)[0]
        depth = float((pos - centre) @ rot[2])
        if depth < 1.0:
            return None
        exp = self.s.exposure
        pa = project_enu(obj.path.at(t - exp / 2), pose_a, cal)[0][0]
        pb = project_enu(obj.path.at(t + exp / 2), pose_b, cal)[0][0]
        uv0 = project_enu(pos[None], pose, cal)[0][0]
        reach = cal.fx * obj.span / depth + abs(pb - pa).max() + 8
        if not (-reach < uv0[0] < w + reach and -reach < uv0[1] < h + reach):
            return None
        parts = MODELS[obj.kind](obj, t)
        pts = np.concatenate([p.points for p in parts])
        uv, front = project_enu(pts, pose, cal)
        if not front.all():
            return None
        scale = cal.fx / np.maximum((pts - centre) @ rot[2], 1e-3)
        thick = max(p.size for p in parts) * float(scale.max())  # widest line or disc, in pixels
        margin = 3 + int(np.ceil(thick + abs(pb - pa).max() / 2)) + (3 if self.thermal else 0)
        x0 = int(np.floor(uv[:, 0].min())) - margin
        y0 = int(np.floor(uv[:, 1].min())) - margin
        pw = int(np.ceil(uv[:, 0].max())) + margin + 1 - x0
        ph = int(np.ceil(uv[:, 1].max())) + margin + 1 - y0
        if max(pw, ph) > 1000:
            return None
        ss = 4 if max(pw, ph) < 40 else 2 if max(pw, ph) < 120 else 1
        colour, alpha = self._draw(parts, uv, scale, x0, y0, pw, ph, ss, obj, pos, centre)
        ker = _line_kernel(pb - pa)
        if ker is not None:
            colour = cv2.filter2D(colour, -1, ker, borderType=cv2.BORDER_CONSTANT)
            alpha = cv2.filter2D(alpha, -1, ker, borderType=cv2.BORDER_CONSTANT)
        if self.thermal:
            colour = cv2.GaussianBlur(colour, (0, 0), THERMAL_PSF)
            alpha = cv2.GaussianBlur(alpha, (0, 0), THERMAL_PSF)
        return Sprite(obj.id, obj.kind, depth, x0, y0, colour.reshape(alpha.shape + (-1,)), alpha)

    def _shade(self, part: Part, obj, pos: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Part colour (BGR) or grey as the camera sees it: backlight and atmospheric haze."""
        dist = float(np.linalg.norm(pos - centre))
        view = (pos - centre) / dist
        vis = self.scn.sky["visibility_m"]
        if self.thermal:
            tau = np.exp(-dist / (2 * vis))
            return np.array([to_grey(part.temp * tau + AMBIENT_C * (1 - tau))])
        backlit = max(float(view @ self.sun_dir), 0.0)
        tau = np.exp(-dist / vis)
        col = np.array(part.colour, float) * (1.0 - 0.45 * backlit)
        return (col * tau + self.horizon_rgb * 0.85 * (1 - tau))[::-1]

    def _draw(self, parts: list[Part], uv: np.ndarray, scale: np.ndarray, x0: int, y0: int, pw: int, ph: int,
              ss: int, obj, pos: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Draw parts at `ss` times the resolution into premultiplied colour and alpha, then shrink."""
        nc = 1 if self.thermal else 3
        col = np.zeros((ph * ss, pw * ss, nc), np.uint8)
        alp = np.zeros((ph * ss, pw * ss), np.uint8)
        sub = (uv - [x0, y0]) * ss + (ss - 1) / 2
        fix = np.round(sub * (1 << SHIFT)).astype(np.int32)
        k = 0
        for part in sorted(parts, key=lambda p: p.opacity):
            n = len(part.points)
            p2, s_px = fix[k:k + n], scale[k:k + n] * ss
            k += n
            o = part.opacity
            c = tuple(float(v) * o for v in self._shade(part, obj, pos, centre)) + (0,) * (3 - nc)
            a = 255.0 * o
            for img, val in ((col, c), (alp, a)):
                if part.kind == "poly":
                    cv2.fillPoly(img, [p2], val, cv2.LINE_AA, SHIFT)
                elif part.kind == "hull":
                    cv2.fillConvexPoly(img, cv2.convexHull(p2), val, cv2.LINE_AA, SHIFT)
                elif part.kind == "line":
                    th = max(1, int(round(part.size * s_px.mean())))
                    cv2.line(img, tuple(p2[0]), tuple(p2[1]), val, th, cv2.LINE_AA, SHIFT)
                else:
                    r = max(int(round(part.size * s_px[0] * (1 << SHIFT))), 1 << (SHIFT - 1))
                    cv2.circle(img, tuple(p2[0]), r, val, -1, cv2.LINE_AA, SHIFT)
        if ss > 1:
            col = cv2.resize(col, (pw, ph), interpolation=cv2.INTER_AREA)
            alp = cv2.resize(alp, (pw, ph), interpolation=cv2.INTER_AREA)
        return col.reshape(ph, pw, nc).astype(np.float32), alp.astype(np.float32) / 255.0

    def _composite(self, frame: np.ndarray, sp: Sprite) -> None:
        w, h = self.size
        ph, pw = sp.alpha.shape
        xa, ya, xb, yb = max(sp.x0, 0), max(sp.y0, 0), min(sp.x0 + pw, w), min(sp.y0 + ph, h)
        if xa >= xb or ya >= yb:
            return
        a = sp.alpha[ya - sp.y0:yb - sp.y0, xa - sp.x0:xb - sp.x0]
        c = sp.colour[ya - sp.y0:yb - sp.y0, xa - sp.x0:xb - sp.x0]
        roi = frame[ya:yb, xa:xb].astype(np.float32)
        if self.thermal:
            out = roi * (1 - a) + c[..., 0]
        else:
            out = roi * (1 - a[..., None]) + c
        frame[ya:yb, xa:xb] = np.clip(out + 0.5, 0, 255).astype(np.uint8)

    def _box(self, sp: Sprite, nearer: list[Sprite]) -> Box | None:
        """Tight box of the sprite's coverage inside the image, and the share of it not hidden."""
        w, h = self.size
        ph, pw = sp.alpha.shape
        xa, ya, xb, yb = max(sp.x0, 0), max(sp.y0, 0), min(sp.x0 + pw, w), min(sp.y0 + ph, h)
        if xa >= xb or ya >= yb:
            return None
        inside = sp.alpha[ya - sp.y0:yb - sp.y0, xa - sp.x0:xb - sp.x0]
        mask = inside >= min(GT_ALPHA, 0.5 * float(sp.alpha.max()))
        cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
        if len(cols) == 0 or max(cols[-1] - cols[0], rows[-1] - rows[0]) + 1 < MIN_BOX:
            return None
        trans = np.ones_like(inside)
        for o in nearer:
            oh, ow = o.alpha.shape
            ua, va = max(xa, o.x0), max(ya, o.y0)
            ub, vb = min(xb, o.x0 + ow), min(yb, o.y0 + oh)
            if ua < ub and va < vb:
                trans[va - ya:vb - ya, ua - xa:ub - xa] *= 1 - o.alpha[va - o.y0:vb - o.y0, ua - o.x0:ub - o.x0]
        vis = float((inside * trans).sum() / max(sp.alpha.sum(), 1e-6))
        if vis < 0.05:
            return None
        return Box(sp.oid, (xa + int(cols[0]), ya + int(rows[0]), int(cols[-1] - cols[0] + 1),
                            int(rows[-1] - rows[0] + 1)), round(min(vis, 1.0), 3), sp.kind)

    def _glare(self, frame: np.ndarray, pose: CameraPose) -> np.ndarray:
        """Veiling glare and lens ghosts when the sun is in or near the field of view."""
        cal, (w, h) = self.s.calibration, self.size
        axis = stream_extrinsics(pose, cal)[0][2]
        off = np.degrees(np.arccos(np.clip(axis @ self.sun_dir, -1, 1)))
        if off > 45:
            return frame
        uv, front = project_enu(1e6 * self.sun_dir[None], pose, cal)
        if not front[0]:
            return frame
        sx, sy = uv[0]
        strength = float(np.exp(-off / 12.0))
        xs, ys = np.arange(2, w, 4, dtype=np.float32), np.arange(2, h, 4, dtype=np.float32)  # quarter resolution
        r = np.hypot(xs[None] - sx, ys[:, None] - sy)
        glow = (0.6 * np.exp(-r / 160.0) + 0.4 * np.exp(-r / 25.0))[..., None] * (0.9 * strength * GLARE_TINT)
        frame = cv2.add(frame, cv2.resize(glow.astype(np.uint8), (w, h)))
        ghosts = np.zeros_like(frame)
        centre = np.array([w / 2, h / 2])
        for k, radius in ((0.35, 10), (0.8, 22), (1.3, 40)):
            gx, gy = (centre + (centre - [sx, sy]) * k).astype(int)
            cv2.circle(ghosts, (int(gx), int(gy)), radius, tuple(float(v) for v in 14 * strength * GLARE_TINT / 255),
                       -1, cv2.LINE_AA)
        return cv2.add(frame, ghosts)

    def _agc(self, frame: np.ndarray) -> np.ndarray:
        """Automatic gain control of a thermal camera: stretch the scene's 1-99 % range, adapting slowly."""
        lo_hi = np.percentile(frame[::4, ::4], [1.0, 99.0])
        self.agc = lo_hi if self.agc is None else 0.85 * self.agc + 0.15 * lo_hi
        lo, hi = self.agc
        gain = float(np.clip(215.0 / max(hi - lo, 1.0), 1.0, 4.0))
        return cv2.convertScaleAbs(frame, alpha=gain, beta=25.0 - lo * gain)

    def _noise(self, frame: np.ndarray) -> np.ndarray:
        w, h = self.size
        i, dx, dy = self.rng.integers(4), self.rng.integers(32), self.rng.integers(32)
        noise = self.noise[i, dy:dy + h, dx:dx + w]
        if self.thermal:
            noise = noise + self.fixed
        return cv2.add(frame, noise, dtype=cv2.CV_8U)
