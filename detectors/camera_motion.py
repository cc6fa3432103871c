"""Frame-to-frame camera motion (the turret's pan, tilt and roll) as a 3x3 homography.

Corners of a downscaled copy of the previous frame (an absolute strength floor keeps noise out) are
tracked into the current one with pyramidal Lucas-Kanade, forward-backward checked. A RANSAC
homography at a loose threshold drops moving targets and bad tracks; the model then comes from a
ladder: the rotation of a camera turning about its centre (K R K^-1, 3 degrees of freedom plus a focal
length learnt over time), a translation, and up to `max_model` a similarity or a free homography; the
first that explains nearly as many corners as the best one wins. Corners crowd the horizon, and a
free homography fitted there extrapolates badly into the sky where the targets are.

The sky is often textureless: when too few corners track, a translation from phase correlation (which
uses clouds and gradients that have no corners) is used if its peak is clear, else the identity. The
identity is the right last resort: a scene with nothing to register looks the same after any small
shift, so compensating with the identity costs the background model nothing there, whereas returning
None would make every consumer guess. None therefore only means "no previous frame" (the first frame,
after `reset()`, or when the image size changes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np


MODELS = ("translation", "rotation", "similarity", "homography")  # in order of freedom


@dataclass
class CameraMotionConfig:
    max_side: int = 320               # px; the image is downscaled so its longer side is at most this
    max_corners: int = 100
    quality_level: float = 0.01       # corner strength relative to the strongest corner
    min_eigen: float = 5e-4           # absolute corner strength (cv2.cornerMinEigenVal, block 5): noise stays below
    min_distance: int = 6             # px (downscaled) between corners
    lk_window: int = 11               # px (downscaled) Lucas-Kanade window side
    lk_levels: int = 3                # pyramid levels above the base
    fb_max_error: float = 0.5         # px (downscaled) forward-backward disagreement allowed
    ransac_px: float = 0.5            # px (downscaled) RANSAC reprojection threshold
    min_inliers: int = 12             # fewer RANSAC inliers than this: fall back
    max_model: Literal["translation", "rotation", "similarity", "homography"] = "rotation"  # richest model tried
    focal: float = 1.5                # first guess of the focal length, in image widths (learnt as the camera slews)
    focal_frames: int = 5             # revealing motions after which the rotation model is trusted first
    model_margin: float = 1.25        # a freer model must cut the robust cost by this factor ...
    model_min_px: float = 0.25        # ... and move some part of the image by more than this (px, downscaled)
    phase_fallback: bool = True       # translation from phase correlation when corners fail
    min_phase_response: float = 0.15  # phase-correlation peak (0..1) needed to trust its shift
    max_shift_frac: float = 0.25      # a motion moving a corner by more than this fraction of the width is rejected
    source: Literal["image", "pose"] = "image"  # pose: from the turret's pose log where known (pipeline/stages.py)

    def validate(self, prefix: str = "") -> None:
        _check(self.max_side >= 32, prefix, "max_side", "must be at least 32")
        _check(self.max_corners >= 4, prefix, "max_corners", "must be at least 4")
        _check(0 < self.quality_level < 1, prefix, "quality_level", "must be in (0, 1)")
        _check(self.min_eigen >= 0, prefix, "min_eigen", "must not be negative")
        _check(self.min_distance >= 1, prefix, "min_distance", "must be at least 1")
        _check(self.lk_window >= 3, prefix, "lk_window", "must be at least 3")
        _check(0 <= self.lk_levels <= 8, prefix, "lk_levels", "must be in 0..8")
        _check(self.fb_max_error > 0, prefix, "fb_max_error", "must be positive")
        _check(self.ransac_px > 0, prefix, "ransac_px", "must be positive")
        _check(self.min_inliers >= 4, prefix, "min_inliers", "a homography needs at least 4 points")
        _check(self.max_model in MODELS, prefix, "max_model", f"must be one of {', '.join(MODELS)}")
        _check(0.05 <= self.focal <= 50, prefix, "focal", "must be in [0.05, 50] image widths")
        _check(self.focal_frames >= 0, prefix, "focal_frames", "must not be negative")
        _check(self.model_margin >= 1, prefix, "model_margin", "must be at least 1")
        _check(self.model_min_px >= 0, prefix, "model_min_px", "must not be negative")
        _check(0 <= self.min_phase_response <= 1, prefix, "min_phase_response", "must be in [0, 1]")
        _check(0 < self.max_shift_frac <= 1, prefix, "max_shift_frac", "must be in (0, 1]")
        _check(self.source in ("image", "pose"), prefix, "source", "must be image or pose")


def _check(cond: bool, prefix: str, key: str, message: str) -> None:
    if not cond:
        raise ValueError(f"{prefix}{key}: {message}")


class CameraMotionEstimator:
    """`estimator(gray)` -> homography (float64 3x3) mapping the previous frame's pixels to this
    frame's, in full-resolution pixel coordinates; None for the first frame. `last_method` says how
    it was found: "first", "rotation", "translation", "similarity", "homography" (tracked corners),
    "phase" or "identity"; `last_inliers` counts the corners that agree with it."""

    def __init__(self, cfg: CameraMotionConfig | None = None) -> None:
        self.cfg = cfg or CameraMotionConfig()
        self.cfg.validate()
        self.reset()

    def reset(self) -> None:
        self._prev: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._window: np.ndarray | None = None
        self._focal = self.cfg.focal
        self._focal_frames = 0  # frames whose motion revealed the focal length
        self.last_method = "first"
        self.last_inliers = 0

    def __call__(self, gray: np.ndarray) -> np.ndarray | None:
        if gray.ndim == 3:
            gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)
        small, scale = self._downscale(gray)
        prev, self._prev = self._prev, small
        if prev is None or gray.shape != self._shape:
            self._shape = gray.shape
            self._window = None
            self.last_method, self.last_inliers = "first", 0
            return None
        self.last_inliers = 0
        tracked = self._track(prev, small)
        fit = None if tracked is None else self._fit(*tracked, prev.shape)
        if fit is None and self.cfg.phase_fallback:
            fit = self._from_phase(prev, small)
        self.last_method, h = fit if fit is not None else ("identity", np.eye(3))
        return _rescale(h, scale)

    # internals ----------------------------------------------------------------------------------
    def _downscale(self, gray: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """Downscaled copy (longer side <= max_side) and its (x, y) scale factors."""
        h, w = gray.shape
        f = min(1.0, self.cfg.max_side / max(h, w))
        if f == 1.0:
            return np.ascontiguousarray(gray), (1.0, 1.0)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA), (size[0] / w, size[1] / h)

    def _corners(self, gray: np.ndarray) -> np.ndarray:
        """The strongest corners (N x 1 x 2 float32, x y): local maxima of the minimum eigenvalue above
        both quality_level of the best one and min_eigen (the relative floor alone would keep noise
        "corners" on a textureless sky), the strongest of each min_distance cell."""
        c = self.cfg
        eig = cv2.cornerMinEigenVal(gray, 5)
        floor = max(c.min_eigen, c.quality_level * float(eig.max()))
        ys, xs = np.nonzero((eig >= floor) & (eig >= cv2.dilate(eig, np.ones((3, 3), np.uint8))))
        order = np.argsort(-eig[ys, xs], kind="stable")
        ys, xs = ys[order], xs[order]
        _, first = np.unique((ys // c.min_distance) * gray.shape[1] + xs // c.min_distance, return_index=True)
        keep = np.sort(first)[: c.max_corners]
        return np.stack([xs[keep], ys[keep]], axis=1).astype(np.float32).reshape(-1, 1, 2)

    def _track(self, prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Corners of `prev` and where they are in `cur` (N x 2 each), forward-backward checked."""
        c = self.cfg
        pts = self._corners(prev)
        if len(pts) < c.min_inliers:
            return None
        lk = dict(winSize=(c.lk_window, c.lk_window), maxLevel=c.lk_levels,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01))
        nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, pts, None, **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, nxt, None, **lk)
        ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm((back - pts)[:, 0], axis=1) < c.fb_max_error)
        if ok.sum() < c.min_inliers:
            return None
        return pts[ok, 0].astype(np.float64), nxt[ok, 0].astype(np.float64)

    def _fit(self, p: np.ndarray, q: np.ndarray, shape: tuple[int, int]) -> tuple[str, np.ndarray] | None:
        """Up the ladder translation, rotation, similarity, homography (to `max_model`), a freer model
        replaces the current one only if it cuts the robust cost by `model_margin` and moves some part of
        the image by over `model_min_px` differently: noise fitted as roll or zoom would pile up in a
        background warped frame after frame, and a free model fitted to corners that crowd the horizon
        extrapolates badly into the sky where the targets are. Once slews have taught the focal length
        (`focal_frames` times), the rotation is the turret's known motion and starts the ladder."""
        c = self.cfg
        allowed = MODELS[:MODELS.index(c.max_model) + 1]
        fits = [self._translation(p, q)]
        if "rotation" in allowed:
            rot = self._rotation(p, q, shape)
            fits = [rot] if self._focal_frames >= c.focal_frames and rot[1] is not None else fits + [rot]
        if "similarity" in allowed:
            a, _ = cv2.estimateAffinePartial2D(p, q, method=cv2.RANSAC, ransacReprojThreshold=c.ransac_px)
            fits.append(("similarity", None if a is None else np.vstack([a, [0, 0, 1.0]])))
        if "homography" in allowed:
            fits.append(("homography", cv2.findHomography(p, q, cv2.RANSAC, c.ransac_px)[0]))
        hh, ww = shape
        grid = np.stack(np.meshgrid(np.linspace(0, ww - 1, 5), np.linspace(0, hh - 1, 5)), -1).reshape(-1, 1, 2)
        chosen = None
        for name, h in fits:
            if h is None or not self._plausible(h, shape):
                continue
            res = np.linalg.norm(cv2.perspectiveTransform(p.reshape(-1, 1, 2), h).reshape(-1, 2) - q, axis=1)
            inliers = int((res < c.ransac_px).sum())
            cost = float((np.minimum(res, 2 * c.ransac_px) ** 2).sum())
            if inliers < c.min_inliers:
                continue
            if chosen is not None:
                moved = np.abs(cv2.perspectiveTransform(grid, h) - cv2.perspectiveTransform(grid, chosen[1])).max()
                if cost * c.model_margin >= chosen[2] or moved <= c.model_min_px:
                    continue
            chosen = (name, h, cost, inliers)
        if chosen is None:
            return None
        self.last_inliers = chosen[3]
        return chosen[0], chosen[1]

    def _translation(self, p: np.ndarray, q: np.ndarray) -> tuple[str, np.ndarray]:
        d = q - p
        t = np.median(d, axis=0)
        close = np.linalg.norm(d - t, axis=1) < self.cfg.ransac_px
        t = d[close].mean(axis=0) if close.any() else t
        return "translation", np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]], [0.0, 0.0, 1.0]])

    def _rotation(self, p: np.ndarray, q: np.ndarray, shape: tuple[int, int]) -> tuple[str, np.ndarray | None]:
        """The homography K R K^-1 of a camera turning about its centre (the turret's pan, tilt and roll),
        principal point at the image centre. The focal length is learnt from motions that reveal it
        (fast slews: the image motion is uneven across the view, and the worst of nine focal lengths
        around the running estimate costs over twice the best): the frame then takes the best (refined
        by a parabola) and the running estimate moves a third of the way (geometrically) towards it.
        Other frames keep the running estimate."""
        c = self.cfg
        h, m = cv2.findHomography(p, q, cv2.RANSAC, 2 * c.ransac_px)  # drops targets and bad tracks
        core = np.ones(len(p), bool) if m is None else m.ravel().astype(bool)
        if core.sum() < c.min_inliers:
            return "rotation", None
        centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])
        focals = self._focal * shape[1] * 2.0 ** np.linspace(-1, 1, 9)  # around the focal length learnt so far
        hs = _rotation_homographies(p[core], q[core], focals, centre)
        pred = np.einsum("fij,nj->fni", hs, np.c_[p[core], np.ones(core.sum())])
        res = np.linalg.norm(pred[..., :2] / pred[..., 2:] - q[core], axis=2)
        cost = (np.minimum(res, 2 * c.ransac_px) ** 2).sum(axis=1)
        k = int(np.argmin(cost))
        if cost.max() < 2 * cost[k]:  # this motion hardly depends on the focal length: keep the one learnt
            return "rotation", hs[len(focals) // 2]
        best = focals[k]
        if 0 < k < len(focals) - 1:  # parabola through the three costs around the minimum, in log focal
            a, b, d = cost[k - 1], cost[k], cost[k + 1]
            step = 0.5 * (a - d) / (a - 2 * b + d) if a - 2 * b + d > 0 else 0.0
            best = focals[k] * 2.0 ** (0.25 * float(np.clip(step, -1, 1)))
        self._focal = float(np.clip(self._focal ** 0.7 * (best / shape[1]) ** 0.3, 0.05, 50.0))
        self._focal_frames += 1
        return "rotation", _rotation_homographies(p[core], q[core], np.array([best]), centre)[0]

    def _from_phase(self, prev: np.ndarray, cur: np.ndarray) -> tuple[str, np.ndarray] | None:
        if self._window is None:
            self._window = cv2.createHanningWindow(prev.shape[::-1], cv2.CV_32F)
        (dx, dy), response = cv2.phaseCorrelate(prev.astype(np.float32), cur.astype(np.float32), self._window)
        h = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
        ok = response >= self.cfg.min_phase_response and self._plausible(h, prev.shape)
        return ("phase", h) if ok else None

    def _plausible(self, h: np.ndarray, shape: tuple[int, int]) -> bool:
        """Reject homographies that no turret motion between two frames could produce."""
        if not np.all(np.isfinite(h)) or abs(h[2, 2]) < 1e-9:
            return False
        hh, ww = shape
        corners = np.array([[0, 0], [ww, 0], [ww, hh], [0, hh]], np.float64).reshape(-1, 1, 2)
        moved = cv2.perspectiveTransform(corners, h)
        if np.abs(moved - corners).max() > self.cfg.max_shift_frac * ww:
            return False
        det = np.linalg.det(h[:2, :2] / h[2, 2])
        return 0.8 < det < 1.25


def _rotation_homographies(p: np.ndarray, q: np.ndarray, focals: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """For each focal length (F,), the rotation best turning the rays of p into those of q (Kabsch),
    as homographies (F, 3, 3)."""
    def rays(x: np.ndarray) -> np.ndarray:
        r = np.concatenate([(x - centre)[None] / focals[:, None, None], np.ones((len(focals), len(x), 1))], axis=2)
        return r / np.linalg.norm(r, axis=2, keepdims=True)

    u, _, vt = np.linalg.svd(np.einsum("fni,fnj->fij", rays(q), rays(p)))
    u[:, :, 2] *= np.sign(np.linalg.det(u @ vt))[:, None]
    k = np.zeros((len(focals), 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = focals
    k[:, :2, 2] = centre
    k[:, 2, 2] = 1.0
    return k @ (u @ vt) @ np.linalg.inv(k)


def resize_matrix(sx: float, sy: float) -> np.ndarray:
    """3x3 affine map of pixel coordinates from an image to that image resized by (sx, sy) with cv2.resize,
    which keeps pixel centres: x_s = sx (x + 0.5) - 0.5. A homography H between full-size images is
    A H A^-1 between the resized ones."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def _rescale(h: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Homography between downscaled images -> between full-resolution images (pixel centres kept)."""
    s = resize_matrix(*scale)
    full = np.linalg.inv(s) @ h @ s
    return full / full[2, 2]
