"""Live sources: a camera index, a video file or a folder of images played as a camera, an FFmpeg URL
(RTSP, HTTP, TCP, UDP, ...) or a GStreamer pipeline.

A `LiveGrabber` thread reads one source continuously and keeps only the newest frame (one slot, not a
queue), stamped with `time.monotonic()` at capture; a frame overwritten before anyone read it counts
as dropped. A lost stream is released and reopened with exponential backoff. `LiveSource` pairs the
newest frame of each grabber into `FrameBundle`s. Credentials in URLs never reach a log message.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from pipeline.errors import InputError
from pipeline.io.frames import FolderCapture, list_images
from pipeline.types import FrameBundle

log = logging.getLogger("dronetrack.live")

NO_GSTREAMER = ("this OpenCV has no GStreamer support; install an OpenCV built with GStreamer "
                "(e.g. Debian's python3-opencv) or use an FFmpeg URL")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
_SECRET_PROP = re.compile(r"\b((?:user-pw|proxy-pw|password|passwd)\s*=\s*)(\"[^\"]*\"|'[^']*'|\S+)", re.I)


def mask_credentials(text: str) -> str:
    """Hide `user:password@` in every URL of `text` (and GStreamer `user-pw=` style properties)."""
    return _SECRET_PROP.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def has_gstreamer() -> bool:
    m = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(m) and m.group(1).upper().startswith("YES")


URL_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtmpe", "rtmpt", "http", "https", "tcp", "udp", "rtp",
                         "srt", "rist", "mms", "mmsh", "mmst", "hls", "ftp", "sftp", "tls"})
LISTEN_SCHEMES = frozenset({"udp", "rtp", "srt", "rist", "tcp", "tls"})  # may omit the host (listen on a port)


def check_url(url: str) -> None:
    """InputError (credentials masked) unless `url` has a scheme FFmpeg streams from, a host, and a port
    in 1..65535 when it gives one. Whether the host answers is found out by connecting (and retrying)."""
    from urllib.parse import urlsplit

    shown = mask_credentials(url)
    scheme = url.split("://", 1)[0].lower()
    if scheme not in URL_SCHEMES:
        raise InputError(f"{shown}: unsupported URL scheme {scheme!r} (known: {', '.join(sorted(URL_SCHEMES))})")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InputError(f"{shown}: bad port (expected 1..65535)") from None
    if not parts.hostname and not (scheme in LISTEN_SCHEMES and port is not None):  # udp://@:5000 listens
        raise InputError(f"{shown}: no host in the URL")
    if port is not None and not 1 <= port <= 65535:
        raise InputError(f"{shown}: bad port {port} (expected 1..65535)")


@dataclass(frozen=True)
class SourceSpec:
    """kind: 'camera' (target: index or device path), 'file', 'frames' (a folder of images), 'url' or
    'gstreamer' (target: pipeline)."""

    kind: str
    target: int | str

    @property
    def display(self) -> str:
        return mask_credentials(str(self.target))

    def __repr__(self) -> str:
        return f"SourceSpec({self.kind}, {self.display!r})"

    __str__ = __repr__


def parse_source(spec: str) -> SourceSpec:
    """Camera index ("0"), /dev/video*, FFmpeg URL (scheme://), GStreamer pipeline ("gst:..." or one
    with "!"), a folder of images (played as a camera), else a video file (checked here: InputError
    if missing or unreadable, or a folder without images).

    Also silences FFmpeg's own log (unless OPENCV_FFMPEG_LOGLEVEL is set), which prints failing URLs
    with their credentials; OpenCV reads that setting once, at its first FFmpeg use in the process.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    s = str(spec).strip()
    if not s:
        raise InputError("empty live source")
    if s.isascii() and s.isdigit():  # not '¹' (found by tests/test_fuzz_parsers.py)
        return SourceSpec("camera", int(s))
    m = _URL.match(s)
    if m and m.group(1).lower() != "file":  # before "!": a password may hold one
        check_url(s)
        return SourceSpec("url", s)
    if s.startswith("gst:") or "!" in s:
        if not has_gstreamer():
            raise InputError(NO_GSTREAMER)
        return SourceSpec("gstreamer", s.removeprefix("gst:").strip())
    path = Path(s[len("file://"):] if m else s)
    if str(path).startswith("/dev/video"):
        return SourceSpec("camera", str(path))
    if path.is_dir():
        list_images(path)  # InputError when it holds no image
        return SourceSpec("frames", str(path))
    if not path.is_file():
        raise InputError("no such file (a live source is a camera index, a video file, an FFmpeg URL "
                         "or a GStreamer pipeline)", path)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    ok = cap.isOpened()
    cap.release()
    if not ok:
        raise InputError("cannot open video (corrupt, truncated or unknown format)", path)
    return SourceSpec("file", str(path))


class LiveGrabber:
    """A daemon thread that keeps the newest frame of one live source.

    `read(timeout)` returns `(frame, t_capture, seq)` for a frame not read before (the newest one),
    or None when none arrives within `timeout` seconds (or the grabber has stopped or ended).
    `seq` counts grabbed frames from 1. A file is paced at its own fps (a frame folder at `fps`, default
    30; an unreadable image in it is logged and skipped); at its end it is reopened
    like a lost stream (a reconnect), or with `loop=False` the grabber ends (`ended`).
    Timeouts are in seconds; `open_timeout` and `read_timeout` apply to FFmpeg URLs.
    """

    def __init__(self, spec: str | SourceSpec, name: str = "rgb", reconnect_initial: float = 0.5,
                 reconnect_max: float = 5.0, open_timeout: float = 10.0, read_timeout: float = 5.0,
                 loop: bool = True, fps: float | None = None):
        self.spec = spec if isinstance(spec, SourceSpec) else parse_source(spec)
        self.fps = fps  # a frame folder's rate (default 30); a video file has its own
        self.name = name
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.loop = loop
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._slot: tuple[np.ndarray, float, int] | None = None
        self._thread: threading.Thread | None = None
        self._frames = self._dropped = self._reconnects = self._failed_opens = 0
        self._connected = False

    # stats ----------------------------------------------------------------------------------------
    @property
    def frames(self) -> int:
        return self._frames

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def failed_opens(self) -> int:
        return self._failed_opens

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def stats(self) -> dict[str, int]:
        return {"frames": self._frames, "dropped": self._dropped, "reconnects": self._reconnects,
                "failed_opens": self._failed_opens}

    # life cycle -----------------------------------------------------------------------------------
    def start(self) -> "LiveGrabber":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"live-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.read_timeout + 1.0)

    def __enter__(self) -> "LiveGrabber":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def read(self, timeout: float | None = None) -> tuple[np.ndarray, float, int] | None:
        with self._cond:
            self._cond.wait_for(lambda: self._slot is not None or self._stop.is_set() or self._ended.is_set(),
                                timeout)
            item, self._slot = self._slot, None
            return item

    # grabber thread -------------------------------------------------------------------------------
    def _open(self) -> cv2.VideoCapture | None:
        kind, target = self.spec.kind, self.spec.target
        try:
            if kind == "url":
                params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                          cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000)]
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
            elif kind == "gstreamer":
                cap = cv2.VideoCapture(target, cv2.CAP_GSTREAMER)
            elif kind == "file":
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
            elif kind == "frames":  # listed again at each pass: images added meanwhile are played too
                cap = FolderCapture(target, self.fps or 30.0, skip_unreadable=True)
            else:
                cap = cv2.VideoCapture(target)
        except cv2.error as e:
            log.warning("%s: %s", self.name, mask_credentials(str(e)).strip().splitlines()[-1])
            return None
        except InputError as e:  # a frame folder emptied meanwhile
            log.warning("%s: %s", self.name, e)
            return None
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _publish(self, frame: np.ndarray, t: float) -> None:
        with self._cond:
            if self._slot is not None:
                self._dropped += 1
            self._frames += 1
            self._slot = (frame, t, self._frames)
            self._cond.notify_all()

    def _pump(self, cap: cv2.VideoCapture) -> int:
        """Read until the stream fails, ends or the grabber stops; returns the number of frames."""
        period = 0.0
        if self.spec.kind in ("file", "frames"):
            fps = cap.get(cv2.CAP_PROP_FPS)
            period = 1.0 / fps if fps and fps > 0 else 1.0 / 30
        t0, n = time.monotonic(), 0
        while not self._stop.is_set():
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if period and self._stop.wait(max(0.0, t0 + n * period - time.monotonic())):
                break
            self._publish(frame, time.monotonic())
            n += 1
        return n

    def _run(self) -> None:
        delay, opened_before = self.reconnect_initial, False
        who = f"{self.name} ({self.spec.display})"
        while not self._stop.is_set():
            cap = self._open()
            if cap is None:
                self._failed_opens += 1
                log.warning("%s: cannot open; retrying in %.1f s", who, delay)
                self._stop.wait(delay)
                delay = min(2 * delay, self.reconnect_max)
                continue
            if opened_before:
                self._reconnects += 1
                log.info("%s: reconnected", who)
            opened_before, self._connected = True, True
            try:
                n = self._pump(cap)
            finally:
                cap.release()
                self._connected = False
            if self._stop.is_set():
                break
            if self.spec.kind in ("file", "frames") and not self.loop:
                log.info("%s: end of file", who)
                self._ended.set()
                with self._cond:
                    self._cond.notify_all()
                break
            if n:  # a stream that gave frames is reopened at once; backoff applies to repeated failures
                delay = self.reconnect_initial
                if self.spec.kind not in ("file", "frames"):
                    log.warning("%s: stream lost after %d frames; reconnecting", who, n)
            else:
                log.warning("%s: opened but gave no frame; retrying in %.1f s", who, delay)
                self._stop.wait(delay)
                delay = min(2 * delay, self.reconnect_max)


class LiveSource:
    """Bundles of the newest frame of each live stream ('rgb' and/or 'thermal').

    Each bundle is led by a new frame of the first stream; every other stream joins with its newest
    unread frame or None. `timestamp` is the lead frame's capture time since `start()`;
    `extras['captured_at']` holds each present stream's `time.monotonic()` capture time. Iteration
    ends on `stop()` (or when a file played once ends). Extra keywords go to each `LiveGrabber`.
    """

    expected_frames = None

    def __init__(self, rgb_spec: str | None, thermal_spec: str | None = None, **grabber_options: Any):
        specs = {name: s for name, s in (("rgb", rgb_spec), ("thermal", thermal_spec)) if s is not None}
        if not specs:
            raise InputError("no live source given")
        self.streams = {name: name for name in specs}
        self.grabbers = {name: LiveGrabber(s, name, **grabber_options) for name, s in specs.items()}
        self._stop = threading.Event()
        self._t0: float | None = None

    def start(self) -> "LiveSource":
        if self._t0 is None:
            self._t0 = time.monotonic()
            for g in self.grabbers.values():
                g.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for g in self.grabbers.values():
            g.stop()

    def __enter__(self) -> "LiveSource":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: g.stats() for name, g in self.grabbers.items()}

    def __iter__(self) -> Iterator[FrameBundle]:
        self.start()
        assert self._t0 is not None
        lead, *partners = self.grabbers
        index = 0
        while not self._stop.is_set():
            got = self.grabbers[lead].read(timeout=0.1)
            if got is None:
                if self.grabbers[lead].ended:
                    return
                continue
            images: dict[str, np.ndarray | None] = {lead: got[0]}
            captured, frame_ids = {lead: got[1]}, {lead: got[2]}
            for name in partners:
                other = self.grabbers[name].read(timeout=0)
                images[name] = None if other is None else other[0]
                if other is not None:
                    captured[name], frame_ids[name] = other[1], other[2]
            yield FrameBundle(index, got[1] - self._t0, images, frame_ids, dict(self.streams),
                              extras={"captured_at": captured})
            index += 1
