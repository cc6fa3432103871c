"""Live sources: source parsing, credential masking, the single-slot grabber, file-as-camera pacing,
and a loopback TCP stream that is cut and restarted (the grabber must reconnect)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import cv2
import pytest

from conftest import make_video
from pipeline.errors import InputError
from pipeline.io.live import NO_GSTREAMER, LiveGrabber, LiveSource, SourceSpec, mask_credentials, parse_source
from streamserver import StreamServer, free_port

FAST = dict(reconnect_initial=0.1, reconnect_max=0.4, open_timeout=3.0, read_timeout=2.0)


def wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


def test_mask_credentials():
    assert mask_credentials("rtsp://admin:s3cret@10.0.0.5:554/stream1") == "rtsp://***@10.0.0.5:554/stream1"
    assert mask_credentials("http://user@cam/x?a=1") == "http://***@cam/x?a=1"
    assert mask_credentials("rtsp://admin:p@ss@cam/s") == "rtsp://***@cam/s"
    assert mask_credentials("tcp://127.0.0.1:5000") == "tcp://127.0.0.1:5000"
    assert mask_credentials("/videos/a@b.mp4") == "/videos/a@b.mp4"
    pipe = "rtspsrc location=rtsp://u:pw@cam/s user-pw=pw2 latency=0 ! decodebin ! appsink"
    masked = mask_credentials(pipe)
    assert "pw@" not in masked and "pw2" not in masked
    assert masked == "rtspsrc location=rtsp://***@cam/s user-pw=*** latency=0 ! decodebin ! appsink"


def test_parse_source(tmp_path):
    assert (parse_source("0").kind, parse_source("0").target) == ("camera", 0)
    assert parse_source(" 2 ").target == 2
    assert parse_source("/dev/video1").kind == "camera"
    url = parse_source("rtsp://admin:s3cret@cam:554/s")
    assert (url.kind, url.target) == ("url", "rtsp://admin:s3cret@cam:554/s")
    assert "s3cret" not in repr(url) and "s3cret" not in str(url) and url.display == "rtsp://***@cam:554/s"
    for u in ("udp://127.0.0.1:5000", "http://cam/video.mjpg", "srt://127.0.0.1:9000", "rtsp://a:pa!ss@cam/s"):
        assert parse_source(u).kind == "url"
    clip = make_video(tmp_path / "c.mp4", 5)
    assert parse_source(str(clip)) == parse_source(f"file://{clip}")
    assert parse_source(str(clip)).kind == "file"
    with pytest.raises(InputError, match=re.escape(str(tmp_path / "missing.mp4"))):
        parse_source(str(tmp_path / "missing.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="cannot open video"):
        parse_source(str(bad))
    with pytest.raises(InputError, match="empty"):
        parse_source("  ")


def test_gstreamer_pipeline():
    has_gst = re.search(r"GStreamer:\s*YES", cv2.getBuildInformation()) is not None
    for spec in ("videotestsrc ! videoconvert ! appsink", "gst:videotestsrc ! appsink"):
        if has_gst:
            assert parse_source(spec) == SourceSpec("gstreamer", spec.removeprefix("gst:"))
            continue
        with pytest.raises(InputError) as e:
            parse_source(spec)
        assert str(e.value) == NO_GSTREAMER and "\n" not in str(e.value)


def test_file_as_camera_is_paced_and_keeps_only_the_newest(tmp_path):
    clip = make_video(tmp_path / "c.mp4", 100, fps=25.0)
    with LiveGrabber(str(clip), "rgb", **FAST) as g:
        t0 = time.monotonic()
        seqs = []
        for _ in range(5):  # a slow consumer: 3.3 reads per second on a 25 fps camera
            time.sleep(0.3)
            got = g.read(timeout=1.0)
            assert got is not None
            frame, t_cap, seq = got
            assert frame.shape == (48, 64, 3)
            assert time.monotonic() - t_cap < 0.2, "read() must give a fresh frame, not an old one"
            seqs.append(seq)
        again = g.read(timeout=0)
        assert again is None or again[2] > seqs[-1]  # a frame is read only once
        elapsed, frames = time.monotonic() - t0, g.frames
    assert all(b - a >= 3 for a, b in zip(seqs, seqs[1:])), seqs
    assert abs(frames - 25 * elapsed) <= 8, (frames, elapsed)  # real time, not as fast as decoding
    assert g.dropped >= frames - len(seqs) - 2 and g.dropped > 10
    assert g.reconnects == 0


def test_file_end_reopens_or_ends(tmp_path):
    clip = make_video(tmp_path / "short.mp4", 8, fps=25.0)
    with LiveGrabber(str(clip), "rgb", loop=False, **FAST) as g:
        assert wait_until(lambda: g.ended, 3.0)
        assert g.frames == 8 and g.reconnects == 0
        assert g.read(timeout=0) is not None  # the last frame is still there
        t = time.monotonic()
        assert g.read(timeout=2.0) is None and time.monotonic() - t < 0.5  # ended: no wait
    with LiveGrabber(str(clip), "rgb", **FAST) as g:
        assert wait_until(lambda: g.reconnects >= 2, 3.0)
        assert g.frames >= 16 and not g.ended


def test_loopback_stream_cut_and_restart(tmp_path):
    server = StreamServer(make_video(tmp_path / "c.mp4", 60, fps=25.0))
    g = LiveGrabber(server.url, "rgb", **FAST)
    try:
        server.start()
        g.start()
        before = [g.read(timeout=5.0) for _ in range(5)]
        assert all(x is not None for x in before), "no frames from the stream"
        assert before[0][0].shape == (48, 64, 3) and g.reconnects == 0 and g.connected
        server.stop()  # the cut
        assert wait_until(lambda: not g.connected, 5.0), "grabber did not notice the cut"
        assert wait_until(lambda: g.failed_opens >= 2, 5.0), "grabber did not retry"
        g.read(0)
        frames_while_down = g.frames
        assert g.read(timeout=0.3) is None and g.frames == frames_while_down
        server.start()
        assert wait_until(lambda: g.reconnects >= 1, 10.0), "grabber did not reconnect"
        after = [g.read(timeout=1.0) for _ in range(5)]
        assert all(x is not None for x in after)
        assert after[-1][2] > frames_while_down and after[-1][0].shape == (48, 64, 3)
        assert g.connected
    finally:
        server.stop()
        g.stop()


def test_credentials_never_logged(tmp_path):
    """FFmpeg itself prints failing URLs; check the whole stderr of a fresh process."""
    url = f"tcp://admin:s3cret@127.0.0.1:{free_port()}"
    code = (
        "import logging, time\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from pipeline.io.live import LiveGrabber\n"
        f"g = LiveGrabber({url!r}, 'rgb', reconnect_initial=0.05, reconnect_max=0.1).start()\n"
        "time.sleep(0.6)\n"
        "g.stop()\n"
        "print(g.failed_opens)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}  # the default setup
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[-1]) >= 3
    assert "s3cret" not in res.stderr + res.stdout and "admin" not in res.stderr + res.stdout
    assert "tcp://***@127.0.0.1" in res.stderr


def test_live_source_pairs_newest_frames(tmp_path):
    rgb = make_video(tmp_path / "rgb.mp4", 50, fps=25.0)
    thermal = make_video(tmp_path / "thermal.mp4", 20, size=(32, 24), fps=5.0)
    src = LiveSource(str(rgb), str(thermal), **FAST)
    assert src.streams == {"rgb": "rgb", "thermal": "thermal"}
    bundles = []
    t0 = time.monotonic()
    for b in src:
        bundles.append(b)
        if time.monotonic() - t0 > 1.5 or len(bundles) > 200:
            src.stop()
    assert 25 <= len(bundles) <= 50
    with_thermal = [b for b in bundles if b.thermal is not None]
    assert 4 <= len(with_thermal) <= 12 and len(with_thermal) < len(bundles) / 2
    assert all(b.rgb.shape == (48, 64, 3) for b in bundles)
    assert all(b.thermal.shape == (24, 32, 3) for b in with_thermal)
    assert [b.index for b in bundles] == list(range(len(bundles)))
    ts = [b.timestamp for b in bundles]
    assert ts == sorted(ts) and 0 <= ts[0] < 0.5 and ts[-1] < 2.0
    b = with_thermal[-1]
    assert set(b.extras["captured_at"]) == {"rgb", "thermal"} and set(b.frame_ids) == {"rgb", "thermal"}
    assert b.modalities == {"rgb": "rgb", "thermal": "thermal"}
    st = src.stats()
    assert set(st) == {"rgb", "thermal"} and st["rgb"]["frames"] >= len(bundles)
    assert {"frames", "dropped", "reconnects"} <= set(st["thermal"])


def test_live_source_thermal_only_and_empty(tmp_path):
    thermal = make_video(tmp_path / "t.mp4", 10)
    with LiveSource(None, str(thermal), **FAST) as src:
        b = next(iter(src))
        assert src.streams == {"thermal": "thermal"} and b.present() == ["thermal"]
    with pytest.raises(InputError, match="no live source"):
        LiveSource(None, None)


def collect_json_lines(stream, lines: list[tuple[float, dict]]) -> None:
    for line in stream:
        lines.append((time.monotonic(), json.loads(line)))


def test_cli_live_keeps_going_after_the_stream_is_cut(tmp_path):
    """`dronetrack live tcp://...`: JSON lines, a cut of the server, a restart, and lines again."""
    server = StreamServer(make_video(tmp_path / "c.mp4", 60, fps=25.0))
    config = tmp_path / "run.yaml"
    config.write_text("{}\n")  # the built-in defaults: this test is about the stream, not the detector
    cmd = [str(Path(sys.executable).with_name("dronetrack")), "live", server.url, "--max-frames", "60",
           "--config", str(config)]
    lines: list[tuple[float, dict]] = []
    proc = None
    try:
        server.start()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=collect_json_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        assert wait_until(lambda: len(lines) >= 10, 40.0), "no JSON lines from dronetrack live"
        server.stop()  # the cut
        time.sleep(1.0)
        n_cut = len(lines)
        assert wait_until(lambda: len(lines) > n_cut, 0.5) is False, "lines kept coming with the server down"
        t_restart = time.monotonic()
        server.start()
        proc.wait(timeout=30)
        reader.join(timeout=5)
        err = proc.stderr.read()
    finally:
        server.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert len(lines) == 60 and n_cut < 40
    after = [rec for t, rec in lines if t > t_restart]
    assert len(after) == 60 - n_cut
    assert [rec["index"] for _, rec in lines] == list(range(60))
    frames = [rec["streams"]["rgb"]["frame"] for _, rec in lines]
    assert frames == sorted(frames) and len(set(frames)) == 60
    assert all(0 <= rec["streams"]["rgb"]["latency_ms"] < 1000 for rec in after)
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    assert summary["live"]["rgb"]["reconnects"] >= 1 and summary["frames"] == 60
