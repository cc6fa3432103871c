"""Benchmark `dronetrack batch` on N synthetic flights: wall time of local serial (--workers 1), local
processes (--workers 2) and `--ray local`, each a fresh `dronetrack batch` command (start-up included, as
a user sees it), and a check that every flight's outputs are identical across the modes (tracks/,
detections/, config.yaml byte for byte; summary.json equal but for its timing fields).

    .venv/bin/python tools/bench_batch.py [--flights 20] [--seconds 5] [--modes serial,workers2,ray]
                                          [--rounds 1] [--work runs/bench_batch]

On a machine shared with other jobs, `--rounds 2` runs the modes in order, then in reverse order (so that a
drifting background load favours none), and reports each mode's median wall time; every run also
records the CPU seconds of the command and everything it started (getrusage of reaped children) and the
load average before it.

The flights are made once into WORK/flights (seeds 1000.., `dronetrack synth` defaults otherwise:
3 drones, 2 birds) and reused; results go to WORK/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = {"serial": ["--workers", "1"], "workers2": ["--workers", "2"], "ray": ["--ray", "local"]}
TIMING = {"wall_seconds", "frames_per_second", "stage_seconds", "stage_ms_per_frame", "read_seconds", "write_seconds"}


def make_flights(work: Path, n: int, seconds: float) -> list[Path]:
    from pipeline.synth import generate_flight

    out = []
    for i in range(n):
        f = work / "flights" / f"f{i:02d}"
        if not (f / "flight.yaml").is_file():
            generate_flight(f, seed=1000 + i, seconds=seconds)
        out.append(f)
    return out


def outputs(out: Path) -> dict[str, object]:
    """Every file of every flight folder: bytes, or summary.json without its timings."""
    got: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file() or p.parent == out:  # index.json: wall times, differs by design
            continue
        rel = str(p.relative_to(out))
        if p.name == "summary.json":
            got[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING}
        else:
            got[rel] = p.read_bytes()
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flights", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--modes", default="serial,workers2,ray")
    ap.add_argument("--config", default=str(ROOT / "configs" / "motion.yaml"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--work", default="runs/bench_batch")
    a = ap.parse_args()
    work = Path(a.work)
    t0 = time.perf_counter()
    flights = make_flights(work, a.flights, a.seconds)
    print(f"{len(flights)} flights of {a.seconds:g} s in {work / 'flights'} ({time.perf_counter() - t0:.0f} s)")
    modes = a.modes.split(",")
    order = [m for r in range(a.rounds) for m in (modes if r % 2 == 0 else modes[::-1])]
    results: dict = {m: {"runs": []} for m in modes}
    ref, ref_mode = None, None
    for mode in order:
        out = work / f"out_{mode}"
        cmd = [sys.executable, "-m", "pipeline.cli", "batch", str(work / "flights"), "--out", str(out),
               "--config", a.config, "--no-progress", *MODES[mode]]
        load = os.getloadavg()[0]
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if p.returncode != 0:
            sys.exit(f"{mode}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        index = json.loads((out / "index.json").read_text())
        got = outputs(out)
        same = None
        if ref is None:
            ref, ref_mode = got, mode
        else:
            same = got == ref
            if not same:
                diff = sorted(k for k in set(got) | set(ref) if got.get(k) != ref.get(k))
                print(f"  {mode}: {len(diff)} files differ from {ref_mode}, e.g. {diff[:5]}")
        t = index["totals"]
        res = results[mode]
        res["runs"].append({"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "load_before": round(load, 2),
                            "identical_to_" + ref_mode: same})
        res.update(frames=t["frames"], ok=t["ok"], workers=index["run"]["workers"], threads=index["run"]["threads"],
                   files=len(got))
        print(f"{mode:9s} wall {wall:7.1f} s  {t['frames'] / wall:6.1f} frames/s  cpu {cpu:7.1f} s  load {load:4.1f}  "
              f"flights ok {t['ok']}/{t['flights']}  workers {index['run']['workers']} threads {index['run']['threads']}  "
              f"identical to {ref_mode}: {'-' if same is None else same}", flush=True)
    for mode, res in results.items():
        res["median_wall_seconds"] = round(statistics.median(r["wall_seconds"] for r in res["runs"]), 1)
        res["median_frames_per_second"] = round(res["frames"] / res["median_wall_seconds"], 1)
        res["all_identical"] = all(v is not False for r in res["runs"] for k, v in r.items() if k.startswith("identical"))
        print(f"{mode:9s} median wall {res['median_wall_seconds']:7.1f} s  {res['median_frames_per_second']:6.1f} frames/s  "
              f"identical: {res['all_identical']}")
    (work / "results.json").write_text(json.dumps({"flights": len(flights), "seconds": a.seconds, "rounds": a.rounds,
                                                   "modes": results}, indent=2))
    print(f"results: {work / 'results.json'}")


if __name__ == "__main__":
    main()
