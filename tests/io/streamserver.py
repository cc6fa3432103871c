"""A loopback test stream: an ffmpeg process (the binary in the imageio-ffmpeg wheel) serving a clip
in a loop, in real time, over one TCP connection on 127.0.0.1, in the NUT container. NUT carries the
codec header in-stream and sends each frame as it comes (Matroska batches frames into ~1 s clusters,
MPEG-TS needs a re-encode and a slow probe), and a 1 s initial burst fills FFmpeg's probe at once,
so OpenCV opens the stream in a few ms."""
from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import imageio_ffmpeg


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamServer:
    """`start()` / `stop()` (SIGKILL: an abrupt cut) an ffmpeg serving `clip` on tcp://127.0.0.1:port."""

    def __init__(self, clip: Path, port: int | None = None):
        self.clip = clip
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> "StreamServer":
        self.stop()
        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
               "-readrate_initial_burst", "1", "-re", "-stream_loop", "-1", "-i", str(self.clip),
               "-c", "copy", "-f", "nut", f"{self.url}?listen=1"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> "StreamServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
