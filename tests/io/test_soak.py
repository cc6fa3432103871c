"""A short soak of `dronetrack live` (the long one is tools/soak_live.py): a loopback stream is cut and
restarted twice while the real CLI runs, then SIGTERM stops it. It must reconnect each time, stop
cleanly with exit status 143, and every frame it finished must be in its outputs: one JSON line per
frame on stdout, the summary's frame count, and OUT/tracks/<stream>.txt."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.io.motio import read_mot
from streamserver import StreamServer
from test_live import collect_json_lines, wait_until


def target_video(path: Path, frames: int = 100, size=(160, 120), fps: float = 25.0) -> Path:
    """A warm 7 px blob circling over a flat, slightly noisy background: the default config's contrast
    channel finds it on a thermal stream, so there are tracks to check."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    rng = np.random.default_rng(0)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 90, np.uint8) + rng.integers(0, 6, (size[1], size[0], 3), dtype=np.uint8)
        a = 2 * np.pi * i / frames
        cv2.circle(img, (int(size[0] / 2 + 50 * np.cos(a)), int(size[1] / 2 + 35 * np.sin(a))), 3, (230, 230, 230), -1)
        w.write(img)
    w.release()
    return path


def test_live_reconnects_twice_and_stops_on_sigterm(tmp_path):
    server = StreamServer(target_video(tmp_path / "target.mp4"))
    out = tmp_path / "out"
    cmd = [str(Path(sys.executable).with_name("dronetrack")), "live", server.url, "--modality", "thermal",
           "--out", str(out), "--config", "configs/default.yaml", "--device", "cpu"]
    lines: list[tuple[float, dict]] = []
    proc = None
    try:
        server.start()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[2])
        reader = threading.Thread(target=collect_json_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        assert wait_until(lambda: len(lines) >= 10, 40.0), "no JSON lines from dronetrack live"
        for _ in range(2):
            server.stop()  # an abrupt cut (SIGKILL of the server)
            time.sleep(0.8)
            n = len(lines)
            server.start()
            assert wait_until(lambda: len(lines) >= n + 10, 15.0), "no frames after the restart"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        reader.join(timeout=5)
        err = proc.stderr.read()
    finally:
        server.stop()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 143, err  # SIGTERM: a clean stop, 128 + 15 (Ctrl-C gives 130)
    assert "Traceback" not in err
    summary = json.loads(err.strip().splitlines()[-1])["summary"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["frames"] == summary["frames"] and on_disk["stopped_by"] == "SIGTERM"
    assert summary["interrupted"] is True and summary["live"]["thermal"]["reconnects"] >= 2
    # every finished frame is a JSON line, counted once, in order
    recs = [rec for _, rec in lines]
    assert len(recs) == summary["frames"] and [r["index"] for r in recs] == list(range(len(recs)))
    assert all(r["streams"]["thermal"]["latency_ms"] >= 0 for r in recs)
    frames = [r["streams"]["thermal"]["frame"] for r in recs]
    assert frames == sorted(set(frames))
    # every track printed is in OUT/tracks (which also holds the backfilled rows of tentative frames)
    printed = {(r["streams"]["thermal"]["frame"], t["id"]): t["bbox"] for r in recs for t in r["streams"]["thermal"]["tracks"]}
    assert len(printed) >= 10, "the target was not tracked: the check below would be empty"
    rows = read_mot(out / "tracks" / "thermal.txt")
    on_file = {(int(r[0]), int(r[1])): r[2:6] for r in rows}
    assert set(printed) <= set(on_file)
    assert all(np.allclose(on_file[k], v, atol=0.06) for k, v in printed.items())
    assert set(on_file) and {f for f, _ in on_file} <= set(frames)


def test_sigterm_elsewhere_is_ctrl_c_once():
    """Outside `live` (process, train, ...), SIGTERM raises KeyboardInterrupt once in the main thread, so
    the runner keeps every finished frame, and the CLI exits 143; a second SIGTERM does not break the
    cleanup. The previous handler comes back afterwards."""
    import os

    import pytest

    from pipeline.cli import _on_sigterm

    before = signal.getsignal(signal.SIGTERM)
    terminated, restore = _on_sigterm()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2.0)  # the handler runs before this ends
        assert terminated == ["SIGTERM"]
        os.kill(os.getpid(), signal.SIGTERM)  # ignored
        time.sleep(0.05)
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is before
