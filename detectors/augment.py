"""Sensor appearance augmentations: what changes from one camera to another, on uint8 numpy images.

Photometric only (boxes are unchanged). Thermal images are H x W grey, visible images H x W x 3 RGB.
`augment(image, modality, rng, cfg)` runs one sensor's chain, each operation with its own probability,
its parameters drawn from configured ranges with the numpy Generator `rng` (the same seed gives the same
output); `apply_op(image, name, modality, rng, cfg)` runs one operation unconditionally.

The chains follow the order in which a real camera forms the image:

thermal  optics (blur, defocus, motion_blur, vignette) -> sampling (resolution) -> detector non-uniformity
         (fixed_pattern) and temporal noise (noise) -> automatic gain control (agc) -> palette (polarity)
         -> compression (codec, then jpeg)
visible  atmosphere (haze) -> optics (blur, defocus, motion_blur, vignette) -> sampling (resolution) ->
         exposure -> colour -> noise -> greyscale -> compression (codec, then jpeg)

`codec` stands in for H.264 at a low bit rate: each block (8 x 8 or 16 x 16) of the luma goes through a
2-D DCT whose coefficients are quantised with a step growing with frequency and H.264's intra dead zone
(round(|c| / q - 1/6), so small coefficients vanish: faint texture and faint small targets fade, flat areas
turn blocky), chroma is halved in both directions (4:2:0) and quantised more coarsely, and an optional
deblocking filter smooths block edges whose step is small, as H.264's in-loop filter does. Encoding real
H.264 through cv2.VideoWriter costs tens of ms per frame; this costs about 1 ms per 256 x 256 crop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Callable

import cv2
import numpy as np

Range = tuple[float, float]
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601 luma weights of R, G, B


# configuration ------------------------------------------------------------------------------------
def _check_p(prefix: str, key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{prefix}{key}: must be a probability in [0, 1], got {value}")


def _check_range(prefix: str, key: str, r, lo: float = -math.inf, hi: float = math.inf) -> None:
    if len(r) != 2 or not (lo <= r[0] <= r[1] <= hi):
        raise ValueError(f"{prefix}{key}: need [low, high] with {lo} <= low <= high <= {hi}, got {list(r)}")


class _Op:
    """Validation shared by the operation configs: `p` and every field named in BOUNDS."""

    BOUNDS: dict[str, tuple[float, float]] = {}

    def validate(self, prefix: str = "") -> None:
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if f.name == "p" or f.name.startswith("p_"):
                _check_p(prefix, f.name, v)
            elif f.name in self.BOUNDS:
                _check_range(prefix, f.name, v, *self.BOUNDS[f.name])


@dataclass
class Polarity(_Op):
    """White-hot <-> black-hot: v -> 255 - v."""
    p: float = 0.3


@dataclass
class Agc(_Op):
    """Automatic gain control. With probability p_stretch, a re-stretch as real AGC does: the image's
    [low_pct, high_pct] percentile range is mapped onto [out_low, out_high] (gain at most max_gain, about
    the range's middle); otherwise a manual setting: contrast `gain` about the image mean plus `offset`
    grey levels. Then `gamma`, and with probability p_equalize a plateau histogram equalisation (as
    thermal cameras' "plateau / information-based" AGC), each grey level's count clipped at `plateau`
    times the pixel count."""
    p: float = 0.6
    gain: Range = (0.7, 1.4)
    offset: Range = (-30.0, 30.0)
    gamma: Range = (0.7, 1.4)
    p_stretch: float = 0.5
    low_pct: Range = (0.0, 3.0)
    high_pct: Range = (97.0, 100.0)
    out_low: Range = (0.0, 50.0)
    out_high: Range = (190.0, 255.0)
    max_gain: float = 6.0
    p_equalize: float = 0.15
    plateau: Range = (0.003, 0.03)
    BOUNDS = {"gain": (0.0, math.inf), "offset": (-255.0, 255.0), "gamma": (0.05, 20.0),
              "low_pct": (0.0, 100.0), "high_pct": (0.0, 100.0), "out_low": (0.0, 255.0),
              "out_high": (0.0, 255.0), "plateau": (1e-6, 1.0)}

    def validate(self, prefix: str = "") -> None:
        super().validate(prefix)
        if self.max_gain <= 0:
            raise ValueError(f"{prefix}max_gain: must be > 0, got {self.max_gain}")
        if self.low_pct[1] >= self.high_pct[0]:
            raise ValueError(f"{prefix}low_pct: must stay below high_pct, got {list(self.low_pct)} and "
                             f"{list(self.high_pct)}")
        if self.out_low[1] >= self.out_high[0]:
            raise ValueError(f"{prefix}out_low: must stay below out_high, got {list(self.out_low)} and "
                             f"{list(self.out_high)}")


@dataclass
class FixedPattern(_Op):
    """Microbolometer non-uniformity: one offset per column (`column_std` grey levels; stripes constant
    along each column), one per row, and a per-pixel gain about 1 (`pixel_gain_std`)."""
    p: float = 0.3
    column_std: Range = (0.5, 4.0)
    row_std: Range = (0.0, 1.5)
    pixel_gain_std: Range = (0.0, 0.03)
    BOUNDS = {"column_std": (0.0, 255.0), "row_std": (0.0, 255.0), "pixel_gain_std": (0.0, 1.0)}


@dataclass
class Noise(_Op):
    """Temporal noise: Gaussian, `std` grey levels (on visible: luma noise plus half as much chroma noise)."""
    p: float = 0.5
    std: Range = (1.0, 6.0)
    BOUNDS = {"std": (0.0, 255.0)}


@dataclass
class Blur(_Op):
    """Optics: Gaussian blur of `sigma` pixels."""
    p: float = 0.25
    sigma: Range = (0.4, 1.5)
    BOUNDS = {"sigma": (0.05, 50.0)}


@dataclass
class Defocus(_Op):
    """Defocus: a uniform disc of `radius` pixels (anti-aliased edge)."""
    p: float = 0.1
    radius: Range = (1.0, 3.0)
    BOUNDS = {"radius": (0.5, 50.0)}


@dataclass
class MotionBlur(_Op):
    """The camera or target moving during the exposure: a line `length` pixels long, random direction."""
    p: float = 0.1
    length: Range = (2.0, 8.0)
    BOUNDS = {"length": (0.5, 100.0)}


@dataclass
class Resolution(_Op):
    """Resolution loss: down-sampled by `scale` (area), up-sampled back (bilinear or bicubic)."""
    p: float = 0.2
    scale: Range = (0.35, 0.8)
    BOUNDS = {"scale": (0.05, 1.0)}


@dataclass
class Vignette(_Op):
    """Lens fall-off: the image times 1 - strength * r^2 (r = 1 at the corners, centre jittered)."""
    p: float = 0.25
    strength: Range = (0.1, 0.45)
    BOUNDS = {"strength": (0.0, 1.0)}


@dataclass
class ThermalVignette(Vignette):
    """Thermal cameras also show the opposite: a warm housing brightens the edges (with p_bright,
    + strength * 255 * r^2 / 2 grey levels instead of the fall-off)."""
    p_bright: float = 0.3


@dataclass
class Jpeg(_Op):
    """JPEG compression at `quality` (OpenCV, 4:2:0 chroma on visible)."""
    p: float = 0.25
    quality: tuple[int, int] = (15, 75)
    BOUNDS = {"quality": (1, 100)}


@dataclass
class Codec(_Op):
    """H.264-like block-DCT quantisation (see the module text): block size drawn from `blocks`, luma step
    `step` grey levels (DC; x up to 1 + 0.35 * 14 at the highest frequency), deblocking with p_deblock."""
    p: float = 0.2
    blocks: tuple[int, ...] = (8, 16)
    step: Range = (4.0, 24.0)
    p_deblock: float = 0.5
    BOUNDS = {"step": (0.01, 255.0)}

    def validate(self, prefix: str = "") -> None:
        super().validate(prefix)
        if not self.blocks or any(b not in (4, 8, 16, 32) for b in self.blocks):
            raise ValueError(f"{prefix}blocks: each must be 4, 8, 16 or 32, got {list(self.blocks)}")


@dataclass
class Colour(_Op):
    """Colour: hue rotated by `hue` degrees about the grey axis, `saturation` times the chroma, white
    balance gains `white_balance` on red and on blue (drawn separately; green 1)."""
    p: float = 0.5
    hue: Range = (-12.0, 12.0)
    saturation: Range = (0.5, 1.4)
    white_balance: Range = (0.8, 1.25)
    BOUNDS = {"hue": (-180.0, 180.0), "saturation": (0.0, 10.0), "white_balance": (0.0, 10.0)}


@dataclass
class Exposure(_Op):
    """Exposure (`ev` stops: times 2^ev), contrast about the mean, then gamma."""
    p: float = 0.5
    ev: Range = (-1.0, 1.0)
    contrast: Range = (0.7, 1.3)
    gamma: Range = (0.7, 1.4)
    BOUNDS = {"ev": (-10.0, 10.0), "contrast": (0.0, 10.0), "gamma": (0.05, 20.0)}


@dataclass
class Haze(_Op):
    """Haze: the image blended toward a bright bluish airlight (`airlight` grey levels), the airlight's
    share `strength` at the haziest edge falling by `gradient` (a share of it) across the image, thickest
    toward the bottom (the horizon) give or take 20 degrees."""
    p: float = 0.25
    strength: Range = (0.1, 0.6)
    gradient: Range = (0.0, 0.8)
    airlight: Range = (170.0, 245.0)
    BOUNDS = {"strength": (0.0, 1.0), "gradient": (0.0, 1.0), "airlight": (0.0, 255.0)}


@dataclass
class Greyscale(_Op):
    """A monochrome camera: luma in all three channels."""
    p: float = 0.1


@dataclass
class ThermalAppearance:
    polarity: Polarity = field(default_factory=Polarity)
    agc: Agc = field(default_factory=Agc)
    fixed_pattern: FixedPattern = field(default_factory=FixedPattern)
    noise: Noise = field(default_factory=Noise)
    blur: Blur = field(default_factory=Blur)
    defocus: Defocus = field(default_factory=Defocus)
    motion_blur: MotionBlur = field(default_factory=MotionBlur)
    resolution: Resolution = field(default_factory=Resolution)
    vignette: ThermalVignette = field(default_factory=ThermalVignette)
    jpeg: Jpeg = field(default_factory=Jpeg)
    codec: Codec = field(default_factory=Codec)

    def validate(self, prefix: str = "") -> None:
        _validate_fields(self, prefix)


@dataclass
class VisibleAppearance:
    haze: Haze = field(default_factory=Haze)
    exposure: Exposure = field(default_factory=Exposure)
    colour: Colour = field(default_factory=Colour)
    greyscale: Greyscale = field(default_factory=Greyscale)
    noise: Noise = field(default_factory=Noise)
    blur: Blur = field(default_factory=Blur)
    defocus: Defocus = field(default_factory=Defocus)
    motion_blur: MotionBlur = field(default_factory=MotionBlur)
    resolution: Resolution = field(default_factory=Resolution)
    vignette: Vignette = field(default_factory=Vignette)
    jpeg: Jpeg = field(default_factory=Jpeg)
    codec: Codec = field(default_factory=Codec)

    def validate(self, prefix: str = "") -> None:
        _validate_fields(self, prefix)


@dataclass
class AppearanceConfig:
    """`p`: probability that a sample is augmented at all; then each operation of the image's sensor runs
    with its own probability. `off()` gives a config with every probability 0."""
    p: float = 1.0
    thermal: ThermalAppearance = field(default_factory=ThermalAppearance)
    visible: VisibleAppearance = field(default_factory=VisibleAppearance)

    def validate(self, prefix: str = "") -> None:
        _check_p(prefix, "p", self.p)
        self.thermal.validate(f"{prefix}thermal.")
        self.visible.validate(f"{prefix}visible.")

    @classmethod
    def off(cls) -> "AppearanceConfig":
        cfg = cls()
        for section in (cfg.thermal, cfg.visible):
            for f in fields(section):
                op = getattr(section, f.name)
                for g in fields(op):
                    if g.name == "p":
                        setattr(op, "p", 0.0)
        return cfg


def _validate_fields(section, prefix: str) -> None:
    for f in fields(section):
        op = getattr(section, f.name)
        if is_dataclass(op):
            op.validate(f"{prefix}{f.name}.")


# operations: float32 images in [0, 255] (H x W or H x W x 3) in, float32 in [0, 255] out --------------
def _u(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1])) if r[1] > r[0] else float(r[0])


def _log_u(rng: np.random.Generator, r: Range) -> float:
    """Log-uniform in r (for multiplicative factors such as gain and gamma)."""
    return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1])))) if r[1] > r[0] and r[0] > 0 else float(r[0])


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 255.0, out=x)


def _grey(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        return x
    y = cv2.transform(x, LUMA.reshape(1, 3))
    return y if y.ndim == 2 else y[..., 0]


def op_polarity(x: np.ndarray, c: Polarity, rng: np.random.Generator) -> np.ndarray:
    return 255.0 - x


def op_agc(x: np.ndarray, c: Agc, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < c.p_stretch:
        lo_p, hi_p = _u(rng, c.low_pct), _u(rng, c.high_pct)
        lo, hi = np.percentile(_grey(x)[::2, ::2], [lo_p, hi_p])
        o_lo, o_hi = _u(rng, c.out_low), _u(rng, c.out_high)
        gain = min((o_hi - o_lo) / max(float(hi - lo), 1e-3), c.max_gain)
        x = (x - np.float32((lo + hi) / 2)) * np.float32(gain) + np.float32((o_lo + o_hi) / 2)
    else:
        gain, offset = _log_u(rng, c.gain), _u(rng, c.offset)
        m = np.float32(x.mean())
        x = (x - m) * np.float32(gain) + (m + np.float32(offset))
    x = _clip(x)
    gamma = _log_u(rng, c.gamma)
    if gamma != 1.0:
        x = cv2.pow(x * np.float32(1 / 255), gamma) * np.float32(255)
    if rng.random() < c.p_equalize:
        x = _plateau_equalize(x, _u(rng, c.plateau))
    return x


def _plateau_equalize(x: np.ndarray, plateau: float) -> np.ndarray:
    """Histogram equalisation with every grey level's count clipped at plateau * pixels."""
    u8 = _to_u8(x)
    hist = np.bincount(_to_u8(_grey(x)).ravel(), minlength=256).astype(np.float64)
    hist = np.minimum(hist, max(plateau * hist.sum(), 1.0))
    cdf = np.cumsum(hist)
    lut = (255.0 * (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)).astype(np.float32)
    return lut[u8]


def op_fixed_pattern(x: np.ndarray, c: FixedPattern, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    col = rng.standard_normal(w, dtype=np.float32) * np.float32(_u(rng, c.column_std))
    row = rng.standard_normal((h, 1), dtype=np.float32) * np.float32(_u(rng, c.row_std))
    pix = _u(rng, c.pixel_gain_std)
    if pix > 0:
        gain = 1.0 + rng.standard_normal((h, w), dtype=np.float32) * np.float32(pix)
        x = x * (gain if x.ndim == 2 else gain[..., None])
    stripes = row + col[None, :]
    return _clip(x + (stripes if x.ndim == 2 else stripes[..., None]))


def op_noise(x: np.ndarray, c: Noise, rng: np.random.Generator) -> np.ndarray:
    """Grey: white Gaussian noise. RGB: the same luma noise in every channel plus chroma noise of half the
    std at half resolution (demosaicing correlates a colour camera's noise across channels and pixels)."""
    std = np.float32(_u(rng, c.std))
    h, w = x.shape[:2]
    luma = rng.standard_normal((h, w), dtype=np.float32) * std
    if x.ndim == 2:
        return _clip(x + luma)
    chroma = rng.standard_normal(((h + 1) // 2, (w + 1) // 2, 3), dtype=np.float32) * (std / 2)
    return _clip(x + cv2.merge([luma] * 3) + cv2.resize(chroma, (w, h), interpolation=cv2.INTER_LINEAR))


def op_blur(x: np.ndarray, c: Blur, rng: np.random.Generator) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), _u(rng, c.sigma), borderType=cv2.BORDER_REFLECT)


def disc_kernel(radius: float) -> np.ndarray:
    """A uniform disc of `radius` pixels, its edge anti-aliased, summing to 1."""
    k = int(math.ceil(radius + 0.5))
    yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
    ker = np.clip(radius + 0.5 - np.hypot(xx, yy), 0.0, 1.0).astype(np.float32)
    return ker / ker.sum()


def line_kernel(length: float, angle: float) -> np.ndarray:
    """A line `length` pixels long at `angle` radians through the centre (anti-aliased), summing to 1."""
    k = int(math.ceil(length / 2)) + 1
    ker = np.zeros((2 * k + 1, 2 * k + 1), np.uint8)
    d = np.array([math.cos(angle), math.sin(angle)]) * length / 2
    a = np.round((k - d) * 16).astype(int)
    b = np.round((k + d) * 16).astype(int)
    cv2.line(ker, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 255, 1, cv2.LINE_AA, 4)
    ker = ker.astype(np.float32)
    return ker / ker.sum()


def op_defocus(x: np.ndarray, c: Defocus, rng: np.random.Generator) -> np.ndarray:
    return cv2.filter2D(x, -1, disc_kernel(_u(rng, c.radius)), borderType=cv2.BORDER_REFLECT)


def op_motion_blur(x: np.ndarray, c: MotionBlur, rng: np.random.Generator) -> np.ndarray:
    ker = line_kernel(_u(rng, c.length), float(rng.uniform(0, math.pi)))
    return cv2.filter2D(x, -1, ker, borderType=cv2.BORDER_REFLECT)


def op_resolution(x: np.ndarray, c: Resolution, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    s = _u(rng, c.scale)
    small = cv2.resize(x, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    interp = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
    return _clip(cv2.resize(small, (w, h), interpolation=interp))


def _radius2(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Squared distance from a jittered centre, 1 at the farthest corner of the centred image."""
    cx, cy = (w - 1) / 2 + rng.normal(0, 0.05) * w, (h - 1) / 2 + rng.normal(0, 0.05) * h
    norm = np.float32(1.0 / (((w - 1) / 2) ** 2 + ((h - 1) / 2) ** 2 + 1e-6))
    xs = (np.arange(w, dtype=np.float32) - np.float32(cx)) ** 2 * norm
    ys = (np.arange(h, dtype=np.float32) - np.float32(cy)) ** 2 * norm
    return ys[:, None] + xs[None, :]


def op_vignette(x: np.ndarray, c: Vignette, rng: np.random.Generator) -> np.ndarray:
    k = np.float32(_u(rng, c.strength))
    r2 = _radius2(*x.shape[:2], rng)
    if rng.random() < getattr(c, "p_bright", 0.0):
        add = r2 * (k * np.float32(127.5))
        return _clip(x + (add if x.ndim == 2 else add[..., None]))
    fall = np.maximum(1.0 - k * r2, 0.0)
    return x * (fall if x.ndim == 2 else fall[..., None])


def op_jpeg(x: np.ndarray, c: Jpeg, rng: np.random.Generator) -> np.ndarray:
    q = int(rng.integers(c.quality[0], c.quality[1] + 1))
    u8 = _to_u8(x)
    bgr = u8 if u8.ndim == 2 else np.ascontiguousarray(u8[..., ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 image
        raise RuntimeError("JPEG encoding failed")
    out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if u8.ndim == 2 else cv2.IMREAD_COLOR)
    return (out if out.ndim == 2 else out[..., ::-1]).astype(np.float32)


_DCT: dict[int, np.ndarray] = {}


def _dct_matrix(b: int) -> np.ndarray:
    if b not in _DCT:
        n = np.arange(b)
        m = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * b)) * math.sqrt(2.0 / b)
        m[0] /= math.sqrt(2.0)
        _DCT[b] = m.astype(np.float32)
    return _DCT[b]


def block_quantise(ch: np.ndarray, b: int, step: float) -> np.ndarray:
    """One channel (H, W) through a b x b block DCT, quantised with the dead zone, and back."""
    h, w = ch.shape
    ph, pw = -h % b, -w % b
    if ph or pw:
        ch = cv2.copyMakeBorder(ch, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    H, W = ch.shape
    d = _dct_matrix(b)
    blocks = ch.reshape(H // b, b, W // b, b).transpose(0, 2, 1, 3)
    coef = d @ (blocks - np.float32(128)) @ d.T
    u = np.arange(b, dtype=np.float32)
    # one step per coefficient, growing with frequency as the codecs' scaling matrices do (x 8 / b: the
    # same spatial frequency costs the same in 8 x 8 and 16 x 16 blocks; DCT gain grows with b / 8)
    q = np.float32(step * b / 8) * (1 + 0.35 * (u[:, None] + u[None, :]) * np.float32(8 / b))
    level = np.floor(np.abs(coef) / q + np.float32(1 / 3))  # H.264 intra dead zone: offset 1/3
    coef = np.sign(coef) * level * q
    out = (d.T @ coef @ d + np.float32(128)).transpose(0, 2, 1, 3).reshape(H, W)
    return out[:h, :w]


def _deblock(ch: np.ndarray, b: int, step: float) -> np.ndarray:
    """Soften block edges whose step is small (a codec's artefact, not an image edge)."""
    for axis in (0, 1):
        v = np.moveaxis(ch, axis, 0)
        edges = np.arange(b, v.shape[0], b)
        if len(edges) == 0:
            continue
        p0, q0 = v[edges - 1], v[edges]
        d = q0 - p0
        mask = (np.abs(d) < 2.5 * step).astype(np.float32)
        after = np.minimum(edges + 1, v.shape[0] - 1)
        p1, q1 = v[edges - 2], v[after]
        v[edges - 2] = p1 + mask * d * np.float32(0.125)
        v[after] = q1 - mask * d * np.float32(0.125)
        v[edges - 1] = p0 + mask * d * np.float32(0.375)
        v[edges] = q0 - mask * d * np.float32(0.375)
    return ch


_RGB2YCC = np.array([[0.299, 0.587, 0.114, 0.0], [-0.168736, -0.331264, 0.5, 128.0],
                     [0.5, -0.418688, -0.081312, 128.0]], np.float32)
_YCC2RGB = np.array([[1.0, 0.0, 1.402, -1.402 * 128], [1.0, -0.344136, -0.714136, (0.344136 + 0.714136) * 128],
                     [1.0, 1.772, 0.0, -1.772 * 128]], np.float32)


def op_codec(x: np.ndarray, c: Codec, rng: np.random.Generator) -> np.ndarray:
    b = int(c.blocks[int(rng.integers(len(c.blocks)))])
    step = _u(rng, c.step)
    deblock = rng.random() < c.p_deblock
    if x.ndim == 2:
        y = block_quantise(x, b, step)
        return _clip(_deblock(y, b, step) if deblock else y)
    ycc = cv2.transform(x, _RGB2YCC)
    h, w = x.shape[:2]
    out = [block_quantise(np.ascontiguousarray(ycc[..., 0]), b, step)]
    if deblock:
        out[0] = _deblock(out[0], b, step)
    for k in (1, 2):  # 4:2:0 chroma, quantised 1.5 x more coarsely
        small = cv2.resize(ycc[..., k], ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
        small = block_quantise(small, b, 1.5 * step)
        out.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    return _clip(cv2.transform(cv2.merge(out), _YCC2RGB))


def colour_matrix(hue_deg: float, saturation: float, red_gain: float, blue_gain: float) -> np.ndarray:
    """3 x 3 RGB matrix: white balance, then saturation about the luma, then a hue rotation about grey."""
    a = math.radians(hue_deg)
    k = np.ones((3, 3), np.float64) / 3.0
    rot = math.cos(a) * np.eye(3) + (1 - math.cos(a)) * k + math.sin(a) / math.sqrt(3) * np.array(
        [[0, -1, 1], [1, 0, -1], [-1, 1, 0]], np.float64)
    sat = saturation * np.eye(3) + (1 - saturation) * np.ones((3, 1)) * LUMA.astype(np.float64)[None, :]
    return (rot @ sat @ np.diag([red_gain, 1.0, blue_gain])).astype(np.float32)


def op_colour(x: np.ndarray, c: Colour, rng: np.random.Generator) -> np.ndarray:
    m = colour_matrix(_u(rng, c.hue), _log_u(rng, c.saturation) if c.saturation[0] > 0 else _u(rng, c.saturation),
                      _log_u(rng, c.white_balance), _log_u(rng, c.white_balance))
    return _clip(cv2.transform(x, m))


def op_exposure(x: np.ndarray, c: Exposure, rng: np.random.Generator) -> np.ndarray:
    x = x * np.float32(2.0 ** _u(rng, c.ev))
    m = np.float32(x.mean())
    x = _clip((x - m) * np.float32(_log_u(rng, c.contrast)) + m)
    gamma = _log_u(rng, c.gamma)
    return cv2.pow(x * np.float32(1 / 255), gamma) * np.float32(255) if gamma != 1.0 else x


def op_haze(x: np.ndarray, c: Haze, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    s, g, air = _u(rng, c.strength), _u(rng, c.gradient), _u(rng, c.airlight)
    ang = math.pi / 2 + rng.normal(0, math.radians(20))  # direction of thickening haze: down, roughly
    xs = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5) * np.float32(math.cos(ang))
    ys = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5) * np.float32(math.sin(ang))
    ramp = ys[:, None] + xs[None, :]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)  # 0 .. 1, 1 where haziest
    share = np.float32(s) * (1 - np.float32(g) * (1 - ramp))
    tint = (0.94, 0.98, 1.03) if x.ndim == 3 else (1.0,)
    light = cv2.merge([np.full((h, w), air * t, np.float32) for t in tint])
    return _clip(cv2.blendLinear(x, light.reshape(x.shape), 1 - share, share))


def op_greyscale(x: np.ndarray, c: Greyscale, rng: np.random.Generator) -> np.ndarray:
    return cv2.merge([_grey(x)] * 3) if x.ndim == 3 else x


OpFn = Callable[[np.ndarray, object, np.random.Generator], np.ndarray]
THERMAL_CHAIN: tuple[tuple[str, OpFn], ...] = (
    ("blur", op_blur), ("defocus", op_defocus), ("motion_blur", op_motion_blur), ("vignette", op_vignette),
    ("resolution", op_resolution), ("fixed_pattern", op_fixed_pattern), ("noise", op_noise), ("agc", op_agc),
    ("polarity", op_polarity), ("codec", op_codec), ("jpeg", op_jpeg))
VISIBLE_CHAIN: tuple[tuple[str, OpFn], ...] = (
    ("haze", op_haze), ("blur", op_blur), ("defocus", op_defocus), ("motion_blur", op_motion_blur),
    ("vignette", op_vignette), ("resolution", op_resolution), ("exposure", op_exposure), ("colour", op_colour),
    ("noise", op_noise), ("greyscale", op_greyscale), ("codec", op_codec), ("jpeg", op_jpeg))
THERMAL_OPS = tuple(name for name, _ in THERMAL_CHAIN)
VISIBLE_OPS = tuple(name for name, _ in VISIBLE_CHAIN)


def _check_image(image: np.ndarray, modality: str) -> None:
    if modality not in ("thermal", "rgb"):
        raise ValueError(f"modality must be 'thermal' or 'rgb', got {modality!r}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    want = "H x W" if modality == "thermal" else "H x W x 3"
    if (image.ndim != 2) if modality == "thermal" else (image.ndim != 3 or image.shape[2] != 3):
        raise ValueError(f"a {modality} image must be {want}, got shape {image.shape}")


def augment(image: np.ndarray, modality: str, rng: np.random.Generator, cfg: AppearanceConfig | None = None
            ) -> np.ndarray:
    """The image (uint8; thermal H x W, rgb H x W x 3) as another sensor might have given it: a new
    uint8 array of the same shape. With every probability 0 it is an unchanged copy."""
    _check_image(image, modality)
    cfg = cfg or AppearanceConfig()
    if not (rng.random() < cfg.p):
        return image.copy()
    section = cfg.thermal if modality == "thermal" else cfg.visible
    x = None
    for name, fn in THERMAL_CHAIN if modality == "thermal" else VISIBLE_CHAIN:
        op = getattr(section, name)
        if rng.random() < op.p:
            x = fn(image.astype(np.float32) if x is None else x, op, rng)
    return image.copy() if x is None else _to_u8(x)


def apply_op(image: np.ndarray, name: str, modality: str, rng: np.random.Generator,
             cfg: AppearanceConfig | None = None) -> np.ndarray:
    """One operation of the modality's chain, applied whatever its probability (parameters from cfg)."""
    _check_image(image, modality)
    cfg = cfg or AppearanceConfig()
    chain = dict(THERMAL_CHAIN if modality == "thermal" else VISIBLE_CHAIN)
    if name not in chain:
        raise ValueError(f"no operation {name!r} for {modality} (known: {', '.join(chain)})")
    section = cfg.thermal if modality == "thermal" else cfg.visible
    return _to_u8(chain[name](image.astype(np.float32), getattr(section, name), rng))
