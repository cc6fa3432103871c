"""Frame folders: a folder of images (.jpg, .jpeg, .png, .bmp, .tif, .tiff; any case) is a stream whose
frames are the images in natural order (`frame_2` before `frame_10`).

`list_images(folder)` gives that order, `read_image(path)` one BGR uint8 frame (16-bit and float images,
e.g. radiometric thermal TIFFs, are stretched to 8 bits per frame between their 0.5 and 99.5 percentiles;
EXIF orientation is applied, as OpenCV does for photos), and `FolderCapture` reads a folder through the
part of `cv2.VideoCapture`'s interface the pipeline uses, so that `open_capture(path)` serves a video
file or a frame folder alike. An unreadable image is an `InputError` naming the file.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
log = logging.getLogger(__name__)
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: frame_2 < frame_10 < frame_10b; case-insensitive text."""
    parts = _DIGITS.split(name)  # text, digits, text, ...: digit runs at odd positions
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts)), name


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | Path) -> list[Path]:
    """The images directly in `folder` (not in its subfolders), in natural order. InputError when the
    folder does not exist or holds no image."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such frame folder", folder)
    files = sorted((p for p in folder.iterdir() if is_image(p) and (p.is_file() or p.is_symlink())),
                   key=lambda p: natural_key(p.name))
    if not files:
        raise InputError(f"frame folder holds no image ({', '.join(sorted(IMAGE_SUFFIXES))})", folder)
    return files


def has_images(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and any(is_image(p) for p in folder.iterdir())


def read_image(path: str | Path) -> np.ndarray:
    """One frame as BGR uint8 (H x W x 3). InputError naming the file when it cannot be decoded."""
    path = Path(path)
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the decoder's own complaint is not our one line
    try:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        img = None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if img is None or img.size == 0:
        what = "missing image (broken link?)" if not path.exists() else "cannot read image (corrupt or not an image)"
        raise InputError(what, path)
    return img if img.dtype == np.uint8 else to_uint8(img)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """A 16-bit or float image stretched to uint8 between its 0.5 and 99.5 percentiles (a simple AGC)."""
    f = img.astype(np.float32)
    finite = f[np.isfinite(f)]
    if finite.size == 0:
        return np.zeros(img.shape, np.uint8)
    lo, hi = np.percentile(finite, (0.5, 99.5))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.nan_to_num((f - lo) * scale, nan=0.0).clip(0, 255).astype(np.uint8)


class FolderCapture:
    """A frame folder read like a `cv2.VideoCapture`: `isOpened`, `read`, `grab`, `get` (frame count,
    fps, width and height of the first image, position) and `release`. `read` raises InputError on an
    unreadable image, or with `skip_unreadable` logs it, counts it in `skipped` and goes on."""

    def __init__(self, folder: str | Path, fps: float | None = None, skip_unreadable: bool = False):
        self.folder = Path(folder)
        self.files = list_images(self.folder)
        self.fps = fps
        self.skip_unreadable = skip_unreadable
        self.skipped = 0
        self.pos = 0
        self._size: tuple[int, int] | None = None

    def isOpened(self) -> bool:  # noqa: N802  (cv2.VideoCapture's name)
        return True

    def read(self) -> tuple[bool, np.ndarray | None]:
        while self.pos < len(self.files):
            path = self.files[self.pos]
            self.pos += 1
            try:
                return True, read_image(path)
            except InputError as e:
                if not self.skip_unreadable:
                    raise
                self.skipped += 1
                log.warning("%s; skipped", e)
        return False, None

    def grab(self) -> bool:
        if self.pos >= len(self.files):
            return False
        self.pos += 1
        return True

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(len(self.files))
        if prop == cv2.CAP_PROP_FPS:
            return float(self.fps or 0.0)
        if prop == cv2.CAP_PROP_POS_FRAMES:
            return float(self.pos)
        if prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            if self._size is None:
                h, w = read_image(self.files[0]).shape[:2]
                self._size = (w, h)
            return float(self._size[0] if prop == cv2.CAP_PROP_FRAME_WIDTH else self._size[1])
        return 0.0

    def release(self) -> None:
        self.pos = len(self.files)


def open_capture(path: str | Path, fps: float | None = None) -> "cv2.VideoCapture | FolderCapture":
    """A frame folder -> FolderCapture; anything else -> cv2.VideoCapture (check `isOpened()`)."""
    path = Path(path)
    if path.is_dir():
        return FolderCapture(path, fps)
    return cv2.VideoCapture(str(path))
