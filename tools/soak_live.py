"""Live soak: `dronetrack live` (the real CLI, a subprocess) on a loopback stream that is killed and
restarted at random for a while, with frame-rate spikes, then stopped with SIGTERM.

    .venv/bin/python tools/soak_live.py [--minutes 10] [--seed 0] [--out runs/soak]

The stream: a synthetic flight's thermal video (320x256, 25 fps) retimed into a variable-frame-rate
clip (per 20 s loop: 8 s at 25 fps, 1 s burst at 100 fps, 4 s at 25 fps, 6 s at 8 fps, the rest at
25 fps), served in a loop in real time by the bundled ffmpeg (imageio-ffmpeg) over TCP in NUT, as
tests/io/streamserver.py does. The server is SIGKILLed after a random up time (--up, seconds) and
restarted after a random down time (--down); each restart also draws a read rate (0.5x to 4x real
time) and an initial burst (1 to 10 s of video sent at once), more spikes.

Sampled every second: dronetrack's resident memory (psutil when installed, else /proc/PID/status
VmRSS), threads and open file descriptors. Reported (OUT/soak.json, OUT/soak.png): frames, dropped
frames, reconnects against restarts, latency p50/p99 from the JSON lines (each frame's capture-to-output
latency), RSS at the start (median over --warmup..--warmup+30 s) and the end (median of the last 30 s)
and the change (goal: within 5 %), and the checks that the exit status after SIGTERM is 143, the summary
(stderr and OUT/live/summary.json) counts exactly the JSON lines printed, and every printed track is
in OUT/live/tracks/thermal.txt. Exit status 0 when every check passes, 1 otherwise.

Latencies are wall-clock figures on a machine shared with other work: they are noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# per 20 s loop of the 25 fps clip (500 frames): frame N's time in seconds
RETIME = ("if(lt(N,200),N/25,if(lt(N,300),8+(N-200)/100,if(lt(N,400),9+(N-300)/25,"
          "if(lt(N,450),13+(N-400)/8,19.25+(N-450)/25))))")


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clip(out: Path, seed: int) -> Path:
    """The synthetic flight's thermal video retimed with spikes (RETIME), MPEG-4 in NUT."""
    from pipeline.synth import generate_flight

    flight = out / "flight"
    if not (flight / "flight.yaml").is_file():
        generate_flight(flight, seed=seed, seconds=20.0)
    clip = out / "spike.nut"
    subprocess.run([ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i",
                    str(flight / "thermal.mp4"), "-vf", f"settb=1/1000,setpts='({RETIME})/TB'",
                    "-fps_mode", "passthrough", "-enc_time_base", "1/1000", "-c:v", "mpeg4", "-q:v", "3",
                    "-f", "nut", str(clip)], check=True)
    return clip


class Server:
    """ffmpeg serving `clip` in a loop on tcp://127.0.0.1:port (one client), at `readrate` x real time
    after an initial burst of `burst` seconds."""

    def __init__(self, clip: Path):
        self.clip, self.port = clip, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, readrate: float = 1.0, burst: float = 1.0) -> None:
        self.stop()
        cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-readrate", str(readrate),
               "-readrate_initial_burst", str(burst), "-stream_loop", "-1", "-i", str(self.clip),
               "-c", "copy", "-f", "nut", f"{self.url}?listen=1"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # an abrupt cut, as a camera losing power or the network
            self.proc.wait(timeout=10)
            self.proc = None


def proc_sample(pid: int) -> dict | None:
    """Resident memory (bytes), threads and open file descriptors of a process."""
    try:
        import psutil
    except ImportError:
        psutil = None
    try:
        if psutil is not None:
            p = psutil.Process(pid)
            return {"rss": p.memory_info().rss, "threads": p.num_threads(), "fds": p.num_fds()}
        status = Path(f"/proc/{pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) * 1024, "threads": int(fields["Threads"]),
                "fds": len(os.listdir(f"/proc/{pid}/fd"))}
    except (OSError, KeyError, ValueError):
        return None
    except Exception:  # psutil.NoSuchProcess and friends: the process has ended
        return None


def dronetrack_cmd(url: str, out: Path, config: str) -> list[str]:
    exe = Path(sys.executable).with_name("dronetrack")
    head = [str(exe)] if exe.is_file() else [sys.executable, "-m", "pipeline.cli"]
    return head + ["live", url, "--modality", "thermal", "--out", str(out), "--config", config, "--device", "cpu"]


def median_in(samples: list[dict], key: str, t0: float, t1: float) -> float | None:
    vals = [s[key] for s in samples if t0 <= s["t"] <= t1]
    return float(np.median(vals)) if vals else None


def check_outputs(recs: list[dict], summary: dict, tracks_file: Path, stream: str) -> dict[str, bool]:
    """The summary counts exactly the JSON lines, in order; every printed track is in the tracks file,
    which holds nothing for a frame that was not finished."""
    from pipeline.io.motio import read_mot

    frames = [r["streams"][stream]["frame"] for r in recs if stream in r["streams"]]
    printed = {(r["streams"][stream]["frame"], t["id"]): t["bbox"]
               for r in recs if stream in r["streams"] for t in r["streams"][stream]["tracks"]}
    rows = read_mot(tracks_file) if tracks_file.is_file() else np.zeros((0, 10))
    on_file = {(int(r[0]), int(r[1])): r[2:6] for r in rows}
    return {
        "summary_frames_equal_json_lines": summary.get("frames") == len(recs),
        "json_lines_in_order": [r["index"] for r in recs] == list(range(len(recs))),
        "printed_tracks_in_tracks_file": set(printed) <= set(on_file)
        and all(np.allclose(on_file[k], v, atol=0.06) for k, v in printed.items()),
        "tracks_file_only_finished_frames": {f for f, _ in on_file} <= set(frames),
        "some_tracks": len(printed) > 0,
    }


def plot(path: Path, samples: list[dict], recs_t: list[tuple[float, float]], downs: list[tuple[float, float]],
         rss_start: float | None, rss_end: float | None, duration: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5))
    ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
    ts = [s["t"] for s in samples]
    ax1.plot(ts, [s["rss"] / 2**20 for s in samples], lw=1, color="C0")
    for v, lab in ((rss_start, "start"), (rss_end, "end")):
        if v is not None:
            ax1.axhline(v / 2**20, ls="--", lw=0.8, color="C1" if lab == "start" else "C3", label=f"RSS {lab} {v / 2**20:.0f} MiB")
    if rss_start is not None:  # the +-5 % band around the start; the warm-up ramp below it is cut off
        ax1.axhspan(0.95 * rss_start / 2**20, 1.05 * rss_start / 2**20, color="C1", alpha=0.08, lw=0)
        ax1.set_ylim(0.93 * rss_start / 2**20, 1.07 * rss_start / 2**20)
    ax1.set_ylabel("resident memory (MiB)")
    ax1.legend(loc="lower right", fontsize=8)
    if recs_t:
        t, lat = np.array(recs_t).T
        ax2.scatter(t, lat, s=1, color="C2")
        ax2.set_yscale("log")
        bins = np.arange(0, duration + 5, 5.0)
        counts, _ = np.histogram(t, bins)
        ax3.step(bins[:-1], counts / 5.0, where="post", color="C4")
    ax2.set_ylabel("latency per frame (ms)")
    ax3.set_ylabel("frames out per s (5 s bins)")
    ax3.set_xlabel("seconds since dronetrack started")
    for ax in (ax1, ax2, ax3):
        for a, b in downs:
            ax.axvspan(a, b, color="grey", alpha=0.2, lw=0)
        ax.grid(alpha=0.3)
    ax1.set_title("dronetrack live soak (grey: stream server down)")
    fig.savefig(path, dpi=100, bbox_inches="tight")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/soak")
    p.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    p.add_argument("--up", type=float, nargs=2, default=(10.0, 40.0), metavar=("MIN", "MAX"),
                   help="seconds the server runs between cuts (uniform)")
    p.add_argument("--down", type=float, nargs=2, default=(0.3, 8.0), metavar=("MIN", "MAX"),
                   help="seconds the server stays down (uniform)")
    p.add_argument("--warmup", type=float, default=30.0, help="seconds before the start RSS window")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # a killed soak still stops its server and dronetrack
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    duration = 60.0 * a.minutes
    clip = make_clip(out, a.seed)
    server = Server(clip)
    live_out = out / "live"
    events: list[dict] = []
    samples: list[dict] = []
    recs: list[dict] = []
    recs_t: list[tuple[float, float]] = []
    server.start()
    t0 = time.monotonic()
    events.append({"t": 0.0, "event": "start", "readrate": 1.0, "burst": 1.0})
    with open(out / "live.jsonl", "w") as jl, open(out / "live.stderr", "w") as err:
        proc = subprocess.Popen(dronetrack_cmd(server.url, live_out, a.config), stdout=subprocess.PIPE,
                                stderr=err, text=True, cwd=ROOT)
        done = threading.Event()

        def read_lines() -> None:
            for line in proc.stdout:
                jl.write(line)
                rec = json.loads(line)
                recs.append(rec)
                s = rec["streams"].get("thermal", {})
                if "latency_ms" in s:
                    recs_t.append((time.monotonic() - t0, s["latency_ms"]))

        def sample() -> None:
            while not done.is_set():
                s = proc_sample(proc.pid)
                if s is not None:
                    samples.append({"t": round(time.monotonic() - t0, 2), **s})
                done.wait(1.0)

        reader = threading.Thread(target=read_lines, daemon=True)
        sampler = threading.Thread(target=sample, daemon=True)
        reader.start()
        sampler.start()
        try:
            while True:
                left = duration - (time.monotonic() - t0)
                up, down = float(rng.uniform(*a.up)), float(rng.uniform(*a.down))
                if up + down + 10.0 >= left:  # no cut near the end: every restart has time to reconnect
                    time.sleep(max(left, 0.0))
                    break
                time.sleep(up)
                server.stop()
                events.append({"t": round(time.monotonic() - t0, 2), "event": "kill"})
                time.sleep(down)
                readrate = float(rng.choice([0.5, 1.0, 1.0, 1.0, 2.0, 4.0]))
                burst = float(rng.choice([1.0, 1.0, 3.0, 10.0]))
                server.start(readrate, burst)
                events.append({"t": round(time.monotonic() - t0, 2), "event": "start", "readrate": readrate,
                               "burst": burst})
            t_term = time.monotonic() - t0
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            reader.join(timeout=10)
        finally:
            done.set()
            server.stop()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr_lines = (out / "live.stderr").read_text().strip().splitlines()
    try:
        summary = json.loads(stderr_lines[-1])["summary"]
    except (IndexError, json.JSONDecodeError, KeyError):
        summary = {}
    summary_file = live_out / "summary.json"
    on_disk = json.loads(summary_file.read_text()) if summary_file.is_file() else {}

    lat = np.array([l for _, l in recs_t], np.float64)
    end_t = samples[-1]["t"] if samples else t_term
    rss_start = median_in(samples, "rss", a.warmup, a.warmup + 30.0)
    rss_end = median_in(samples, "rss", t_term - 30.0, t_term)
    downs, t_kill = [], None
    for e in events:
        if e["event"] == "kill":
            t_kill = e["t"]
        elif e["event"] == "start" and t_kill is not None:
            downs.append((t_kill, e["t"]))
            t_kill = None
    if t_kill is not None:
        downs.append((t_kill, end_t))
    restarts = sum(1 for e in events if e["event"] == "start") - 1
    live = summary.get("live", {}).get("thermal", {})
    change = None if not (rss_start and rss_end) else 100.0 * (rss_end - rss_start) / rss_start
    checks = {
        "exit_status_143": rc == 143,
        "summary_on_disk_matches": summary.get("frames") is not None and on_disk.get("frames") == summary["frames"],
        "stopped_by_sigterm": summary.get("stopped_by") == "SIGTERM",
        "reconnected_after_every_restart": live.get("reconnects", -1) >= restarts,
        **check_outputs(recs, summary, live_out / "tracks" / "thermal.txt", "thermal"),
        "rss_flat_within_5_percent": change is not None and abs(change) <= 5.0,
    }
    report = {
        "command": " ".join(dronetrack_cmd(server.url, live_out, a.config)),
        "minutes": a.minutes, "seed": a.seed, "exit_status": rc,
        "frames": summary.get("frames"), "json_lines": len(recs),
        "grabbed_frames": live.get("frames"), "dropped_frames": summary.get("dropped_frames"),
        "reconnects": live.get("reconnects"), "failed_opens": live.get("failed_opens"), "server_restarts": restarts,
        "frames_per_second": summary.get("frames_per_second"),
        "latency_ms": {"p50": float(np.percentile(lat, 50)) if len(lat) else None,
                       "p99": float(np.percentile(lat, 99)) if len(lat) else None,
                       "max": float(lat.max()) if len(lat) else None},
        "rss_mib": {"start": rss_start and round(rss_start / 2**20, 1), "end": rss_end and round(rss_end / 2**20, 1),
                    "change_percent": None if change is None else round(change, 2),
                    "min": round(min(s["rss"] for s in samples) / 2**20, 1) if samples else None,
                    "max": round(max(s["rss"] for s in samples) / 2**20, 1) if samples else None},
        "threads": {"start": median_in(samples, "threads", a.warmup, a.warmup + 30.0),
                    "end": median_in(samples, "threads", t_term - 30.0, t_term),
                    "max": max((s["threads"] for s in samples), default=None)},
        "fds": {"start": median_in(samples, "fds", a.warmup, a.warmup + 30.0),
                "end": median_in(samples, "fds", t_term - 30.0, t_term),
                "max": max((s["fds"] for s in samples), default=None)},
        "checks": checks, "passed": all(checks.values()),
        "events": events, "samples": samples,
    }
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    plot(out / "soak.png", samples, recs_t, downs, rss_start, rss_end, end_t)
    brief = {k: v for k, v in report.items() if k not in ("events", "samples", "command")}
    print(json.dumps(brief, indent=1))
    print(f"written: {out / 'soak.json'}, {out / 'soak.png'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
