"""`dronetrack batch`: many flights, one job each, on local processes or a Ray cluster.

Each flight is processed by the same `pipeline.process.process` call as `dronetrack process FLIGHT --out
DIR/<name>`, so its outputs are the same files (tracks/ and detections/ byte for byte; summary.json the
same apart from its timings). With `evaluate`, each flight that has ground truth is scored by
`pipeline.evaluation.evaluate.evaluate_flight` (what `dronetrack evaluate FLIGHT OUT` runs) into
DIR/<name>/scores.json, and every stream name gets a pooled row: all flights' frames scored as one
sequence (AP50 over the pooled detections, MOTA / IDF1 from the summed counts).

Where jobs run:
- local (default): `workers` spawned processes (`concurrent.futures.ProcessPoolExecutor`), or the calling
  process itself when `workers` is 1; each runs torch and OpenCV on `threads` threads;
- Ray (`ray="local"`: a Ray instance started here; `"auto"`: the running cluster; else a head's address):
  one task per flight asking for `threads` CPUs, and a GPU when the cluster has one and the config runs
  a learned detector that may use it. Ray is imported only then (`pip install -e '.[cluster]'`). A Ray
  already initialized by the caller (a notebook, a test) is used as it is and left running.

A flight that fails (bad flight.yaml, corrupt video) is reported with its one-line error in the table
and in DIR/index.json, and the others go on. DIR/index.json is rewritten (temp file, rename) each time
a flight finishes.

FLIGHT arguments: a flight folder, its flight.yaml, a video file or a folder of images (as `process`
takes them; `modality` and `fps` apply to the last two); a folder without flight.yaml that holds flight
folders, at any depth, stands for them (sorted by path), so `dronetrack batch flights/` and
`dronetrack batch flights/*` do the same, and an import's `OUT/<split>/<sequence>/` is found from OUT. The same flight given twice
is run once. Outputs go to DIR/<folder name> (a video file: its stem); equal names get `_2`, `_3`, ...
in argument order.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import DronetrackError, InputError
from pipeline.io.atomic import write_json

RAY_HINT = "pip install -e '.[cluster]'"


# the job, as it runs on a worker -------------------------------------------------------------------
def run_flight(job: dict[str, Any]) -> dict[str, Any]:
    """Process (and score) one flight; never raises for a bad flight: the result says what happened.
    `job` holds paths both as the user gave them (used from the driver's working directory when this
    machine has it, so summary.json reads as `process` run there would) and absolute."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if job.get("threads"):
        set_threads(job["threads"])
    here = os.getcwd()
    same_fs = os.path.isdir(job["cwd"])
    rel = "" if same_fs else "_abs"
    flight, out, config = job["flight" + rel], job["out" + rel], job["config" + rel]
    result: dict[str, Any] = {"name": job["name"], "status": "ok", "error": None, "host": os.uname().nodename}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a Ray task: which node of the cluster ran it
        result["ray_node"] = ray.get_runtime_context().get_node_id()
    start = time.perf_counter()
    try:
        if same_fs:
            os.chdir(job["cwd"])
        _process_and_score(job, flight, out, config, result)
    except KeyboardInterrupt:
        result.update(status="interrupted", error="interrupted")
    except DronetrackError as e:
        result.update(status="failed", error=str(e))
    except OSError as e:
        result.update(status="failed", error=f"{e.strerror or e}: {e.filename or ''}".rstrip(": "))
    except Exception as e:  # a bug, not bad input: still one line here, the traceback in index.json
        result.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                      traceback=traceback.format_exc())
    finally:
        result["seconds"] = round(time.perf_counter() - start, 3)
        out_dir = Path(job["out_abs"])
        result["outputs"] = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file()) \
            if out_dir.is_dir() else []
        os.chdir(here)
    return result


def _process_and_score(job: dict[str, Any], flight: str, out: str, config: str | None,
                       result: dict[str, Any]) -> None:
    from pipeline.process import process

    summary = process(flight, out, config=config, overrides=job["overrides"], annotate=job["annotate"],
                      modality=job["modality"], max_frames=job["max_frames"], progress=False, fps=job["fps"])
    result.update(frames=summary["frames"], frames_per_stream=summary["frames_per_stream"],
                  frames_per_second=summary["frames_per_second"])
    if summary.get("interrupted"):
        result.update(status="interrupted", error="interrupted")
        return
    if job["evaluate"]:
        try:
            result.update(_score(flight, out, job["iou"]))
        except DronetrackError as e:  # the outputs are there; the flight's scoring failed
            raise DronetrackError(f"processed, but scoring failed: {e}") from None


def _score(flight: str, out: str, iou: float) -> dict[str, Any]:
    """evaluate_flight's scores (written to OUT/scores.json as `dronetrack evaluate --json` writes them)
    and the rows they came from, for pooling; nothing when no stream has ground truth."""
    from pipeline.evaluation import evaluate as ev
    from pipeline.io.flight import load_flight
    from pipeline.io.motio import read_mot

    root = Path(flight).parent if Path(flight).name in ("flight.yaml", "flight.yml") else Path(flight)
    if not (root / "flight.yaml").is_file():  # a video file or a folder of images: no ground truth
        return {"scores": None, "note": "not a flight folder: no ground truth"}
    fl = load_flight(flight)
    if not any(fl.gt_path(s) is not None for s in fl.streams):
        return {"scores": None, "note": "no ground truth"}
    result = ev.evaluate_flight(flight, out, iou=iou)
    scores = {k: {m: v for m, v in r.items() if m != "pr"} for k, r in result["streams"].items()}
    write_json(Path(out) / "scores.json", {"streams": scores})
    pool = {}
    for s in scores:  # the same rows evaluate_flight scored
        dets = ev.read_coco_results(Path(out) / "detections" / f"{s}.json")
        pool[s] = {"gt": ev.drone_rows(read_mot(fl.gt_path(s))), "tracks": read_mot(Path(out) / "tracks" / f"{s}.txt"),
                   "dets": dets[dets[:, 7] == ev.DRONE_CLASS], "frames": sorted(ev.annotated_frames(fl, s))}
    return {"scores": scores, "pool": pool}


def set_threads(n: int) -> None:
    """torch and OpenCV on n threads, so that N workers on a machine do not oversubscribe its cores."""
    import cv2
    import torch

    torch.set_num_threads(n)
    cv2.setNumThreads(n)


def _pool_worker_init(threads: int) -> None:
    """A local worker process ignores Ctrl-C while idle (no traceback per worker); run_flight turns it
    back on while a flight runs, so the flight stops cleanly and keeps its finished frames."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)


def _pool_run_flight(job: dict[str, Any]) -> dict[str, Any]:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_flight(job)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# the flights --------------------------------------------------------------------------------------
def expand_flights(args: list[str]) -> list[str]:
    """FLIGHT arguments -> flights: a folder without flight.yaml that holds flight folders at any depth
    (an import's `OUT/<split>/<sequence>/`) stands for them, sorted by path; anything else is kept as
    given (a bad one fails as a flight). Duplicates (the same real path) are dropped."""
    out, seen = [], set()
    for a in args:
        p = Path(a)
        items = [a]
        if p.is_dir() and not (p / "flight.yaml").is_file():
            found = find_flights(p)
            if found:
                items = [str(p / k) for k in found]
        for item in items:
            key = os.path.realpath(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
    return out


def find_flights(folder: Path) -> list[str]:
    """Flight folders under `folder` (relative paths, sorted), not looking inside a flight folder and
    not following links to folders."""
    found = []
    for here, dirs, files in os.walk(folder):
        if "flight.yaml" in files and Path(here) != folder:
            found.append(os.path.relpath(here, folder))
            dirs.clear()
        dirs.sort()
    return sorted(found, key=lambda r: Path(r).parts)


def flight_names(flights: list[str]) -> list[str]:
    """Output folder names: the folder's name (flight.yaml given: its folder; a video: its stem), with
    `_2`, `_3`, ... for repeats, in order."""
    from pipeline.process import VIDEO_SUFFIXES

    names, used = [], set()
    for f in flights:
        p = Path(f)
        if p.name in ("flight.yaml", "flight.yml"):
            p = p.parent
        base = p.stem if p.suffix.lower() in VIDEO_SUFFIXES else p.name
        base = base or Path(os.path.abspath(f)).name or "flight"
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        names.append(name)
    return names


def default_workers(n_flights: int, cpus: int | None = None) -> int:
    """One worker per core: a flight's stages run on one thread (reading, decoding and writing overlap
    with them), so N single-threaded workers keep N cores busy. Never more workers than flights."""
    cpus = cpus or available_cpus()
    return max(1, min(n_flights, cpus))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# the driver ---------------------------------------------------------------------------------------
def batch(flights: list[str], out: str | Path, config: str | Path | None = None,
          overrides: list[str] | None = None, ray: str | None = None, workers: int | None = None,
          threads: int | None = None, evaluate: bool = False, iou: float = 0.5, annotate: bool = False,
          max_frames: int | None = None, modality: str = "rgb", fps: float | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Process every flight into OUT/<name>/; returns the index written to OUT/index.json."""
    from pipeline.settings import load_config

    if not flights:
        raise InputError("no flights given")
    if workers is not None and workers < 1:
        raise InputError("--workers must be at least 1")
    if threads is not None and threads < 1:
        raise InputError("--threads must be at least 1")
    if ray not in (None, "local") and workers is not None:
        raise InputError("--workers is for local runs; on a cluster, --threads sets the CPUs of each flight")
    cfg = load_config(config, overrides)  # a bad config or override stops here, before any flight
    flights = expand_flights([str(f) for f in flights])
    names = flight_names(flights)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", out)
    n_workers = workers or default_workers(len(flights))
    n_threads = threads or (max(1, available_cpus() // n_workers) if ray is None else 1)
    cwd = os.getcwd()
    jobs = [{"name": name, "flight": f, "flight_abs": os.path.abspath(f), "out": str(out / name),
             "out_abs": os.path.abspath(out / name), "cwd": cwd,
             "config": None if config is None else str(config),
             "config_abs": None if config is None else os.path.abspath(config),
             "overrides": list(overrides or []), "annotate": annotate, "max_frames": max_frames,
             "modality": modality, "fps": fps,
             "evaluate": evaluate, "iou": iou, "threads": n_threads} for f, name in zip(flights, names)]
    index: dict[str, Any] = {
        "flights": [{"name": j["name"], "path": j["flight"], "out": j["out"], "status": "pending", "error": None,
                     "outputs": [], "frames": None, "seconds": None, "scores": None} for j in jobs],
        "run": {"mode": "ray" if ray else "local", "ray": ray, "workers": None if ray not in (None, "local") else n_workers,
                "threads": n_threads, "config": None if config is None else str(config),
                "overrides": list(overrides or []), "evaluate": evaluate, "iou": iou},
    }
    rt, started = _ray_connect(ray, n_workers * n_threads) if ray else (None, False)  # before any output
    try:
        return _execute(jobs, index, out, rt, cfg, n_workers, n_threads, progress)
    finally:
        if started:
            rt.shutdown()


def _execute(jobs: list[dict], index: dict[str, Any], out: Path, rt, cfg, n_workers: int, n_threads: int,
             progress: bool) -> dict[str, Any]:
    """Run the jobs (on Ray when `rt` is the ray module, else locally), updating OUT/index.json."""
    iou = index["run"]["iou"]
    out.mkdir(parents=True, exist_ok=True)
    pools: dict[int, dict] = {}
    start = time.perf_counter()

    def done(i: int, res: dict[str, Any]) -> None:
        if "pool" in res:
            pools[i] = res.pop("pool")
        index["flights"][i].update(res)
        _finish_index(index, pools, time.perf_counter() - start, iou)
        write_index(out, index)

    write_index(out, index)
    if rt is not None:
        interrupted = _run_ray(jobs, done, rt=rt, threads=n_threads, cfg=cfg, progress=progress)
    else:
        interrupted = _run_local(jobs, done, workers=n_workers, threads=n_threads, progress=progress)
    for f in index["flights"]:
        if f["status"] == "pending":
            f.update(status="not run", error="interrupted before it started" if interrupted else "not run")
    _finish_index(index, pools, time.perf_counter() - start, iou)
    index["totals"]["interrupted"] = interrupted
    write_index(out, index)
    return index


def _run_local(jobs, done, *, workers: int, threads: int, progress: bool) -> bool:
    """Jobs on local processes (in this process when workers is 1). Returns True if interrupted."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="flight", disable=not progress, dynamic_ncols=True)
    try:
        if workers == 1:
            return _run_sequential(jobs, done, bar)
        return _run_pool(jobs, done, workers, threads, bar)
    finally:
        bar.close()


def _run_sequential(jobs, done, bar) -> bool:
    for i, job in enumerate(jobs):
        try:
            res = run_flight(job)
        except KeyboardInterrupt:
            return True
        _advance(bar, res)
        done(i, res)
        if res["status"] == "interrupted":
            return True
    return False


def _run_pool(jobs, done, workers: int, threads: int, bar) -> bool:
    """At most `workers` flights are handed to the pool at a time, so that after Ctrl-C (which the
    running flights get too, from the terminal) no queued flight starts; the running ones come back
    `interrupted` with their finished frames written."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ex = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_pool_worker_init, initargs=(threads,))
    todo = list(range(len(jobs)))[::-1]
    running: dict = {}
    interrupted = False
    try:
        while True:
            while todo and len(running) < workers and not interrupted:
                i = todo.pop()
                running[ex.submit(_pool_run_flight, jobs[i])] = i
            if not running:
                break
            try:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                interrupted = True
                continue
            for fut in finished:
                i = running.pop(fut)
                res = _future_result(fut, jobs[i]["name"], BrokenProcessPool)
                _advance(bar, res)
                done(i, res)
                interrupted |= res["status"] == "interrupted"
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    return interrupted


def _future_result(fut, name: str, broken: type) -> dict[str, Any]:
    try:
        return fut.result()
    except broken:
        return {"name": name, "status": "failed", "error": "its worker process died (crashed or was killed)"}
    except KeyboardInterrupt:
        return {"name": name, "status": "interrupted", "error": "interrupted"}


def _ray_connect(ray: str, num_cpus: int):
    """Import Ray (only here) and start or join it: `local` starts an instance with `num_cpus` CPUs,
    `auto` joins the running cluster, anything else is a head's address. A Ray the caller initialized
    is used as it is. Returns (the ray module, whether this call started it)."""
    try:
        import ray as rt
    except ImportError:
        raise DronetrackError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    if rt.is_initialized():
        return rt, False
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
    if ray == "local":
        kw.update(address="local", num_cpus=num_cpus)
    else:
        _check_reachable(ray)
        kw.update(address=ray)
    try:
        rt.init(**kw)
    except Exception as e:  # ConnectionError, ValueError, RuntimeError: Ray's own words, one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        chain, c = [], e
        while c is not None:
            chain.append(f"{type(c).__name__} {c}")
            c = c.__cause__ or c.__context__
        if any("auth" in t.lower() for t in chain):
            msg += (" (the cluster asks for its token: set RAY_AUTH_MODE=token and give the head's token,"
                    " ~/.ray/auth_token or RAY_AUTH_TOKEN)")
        raise DronetrackError(f"cannot start or reach Ray at {ray!r}: {msg}") from None
    return rt, True


def _check_reachable(address: str) -> None:
    """A HOST:PORT head that nothing answers on fails in seconds here, not after Ray's minutes of retries."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # `auto`, ray://...: Ray finds or judges it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise DronetrackError(f"cannot reach the Ray head at {address}: {e.strerror or e} "
                              "(is `ray start --head` running there?)") from None


def _run_ray(jobs, done, *, rt, threads: int, cfg, progress: bool) -> bool:
    """One Ray task per flight, gathered with ray.wait as they finish. Returns True if interrupted."""
    from tqdm import tqdm

    gpus = 1 if (cfg.detector.kind != "motion" and cfg.detector.device != "cpu"
                 and rt.cluster_resources().get("GPU", 0) > 0) else 0
    task = rt.remote(num_cpus=threads, num_gpus=gpus, max_retries=1)(run_flight)
    refs = {task.remote(job): i for i, job in enumerate(jobs)}
    pending = list(refs)
    bar = tqdm(total=len(jobs), unit="flight", disable=not progress, dynamic_ncols=True)
    interrupted = False
    try:
        while pending:
            ready, pending = rt.wait(pending, num_returns=1)
            for ref in ready:
                i = refs[ref]
                try:
                    res = rt.get(ref)
                except rt.exceptions.RayError as e:  # the worker or its node died
                    line = str(e).strip().splitlines()
                    res = {"name": jobs[i]["name"], "status": "failed", "error": f"Ray: {line[0] if line else type(e).__name__}"}
                _advance(bar, res)
                done(i, res)
    except KeyboardInterrupt:  # running tasks get KeyboardInterrupt from cancel: collect what they wrote
        interrupted = True
        for ref in pending:
            rt.cancel(ref)
        ready, _ = rt.wait(pending, num_returns=len(pending), timeout=30)
        for ref in ready:
            try:
                res = rt.get(ref)
            except rt.exceptions.RayError:  # cancelled before it started
                continue
            done(refs[ref], res)
    finally:
        bar.close()
    return interrupted


def _advance(bar, res: dict[str, Any]) -> None:
    bar.set_postfix_str(f"{res['name']}: {res['status']}", refresh=False)
    bar.update(1)


# the index and the report ------------------------------------------------------------------------
def write_index(out: Path, index: dict[str, Any]) -> Path:
    path = out / "index.json"
    write_json(path, index)
    return path


def _finish_index(index: dict[str, Any], pools: dict[int, dict], wall: float, iou: float) -> None:
    fl = index["flights"]
    index["totals"] = {
        "flights": len(fl),
        "ok": sum(f["status"] == "ok" for f in fl),
        "failed": sum(f["status"] == "failed" for f in fl),
        "frames": sum(f["frames"] or 0 for f in fl),
        "flight_seconds": round(sum(f["seconds"] or 0 for f in fl), 3),
        "wall_seconds": round(wall, 3),
    }
    if index["run"]["evaluate"]:
        index["pooled"] = pooled_scores([pools[i] for i in sorted(pools)], iou)


def pooled_scores(pools: list[dict[str, dict]], iou: float = 0.5) -> dict[str, dict[str, Any]]:
    """Per stream name, every flight's rows scored as one sequence: frames and ids shifted so that no
    two flights share any, then the same metrics as evaluate_flight (AP over the pooled detections;
    MOTA, IDF1, precision and recall thus from the summed counts, since no match or identity can cross
    flights)."""
    from pipeline.evaluation.evaluate import detection_metrics, track_metrics

    out = {}
    for stream in sorted({s for p in pools for s in p}):
        parts = [p[stream] for p in pools if stream in p]
        gts, tracks, dets, frames = [], [], [], []
        f_off = id_off = 0
        for part in parts:
            g, t, d = (np.array(part[k], np.float64).reshape(-1, 10) for k in ("gt", "tracks", "dets"))
            for rows, ids in ((g, True), (t, True), (d, False)):
                rows[:, 0] += f_off
                if ids:
                    rows[:, 1] += id_off
            gts.append(g), tracks.append(t), dets.append(d)
            shifted = [f + f_off for f in part["frames"]]
            frames += shifted
            f_off = max([f_off] + shifted + [int(r[:, 0].max()) for r in (g, t, d) if len(r)]) + 1
            id_off = max([id_off] + [int(r[:, 1].max()) for r in (g, t) if len(r)]) + 1
        gt, tr, de = (np.concatenate(x) if x else np.zeros((0, 10)) for x in (gts, tracks, dets))
        m = {**track_metrics(gt, tr, set(frames)), **detection_metrics(gt, de, iou, frames)}
        m.pop("pr", None)
        m["flights"] = len(parts)
        out[stream] = m
    return out


def format_report(index: dict[str, Any]) -> str:
    """The run table (one row per flight), the scores table with pooled rows when evaluated, totals."""
    rows = [["flight", "status", "frames", "seconds", "frames/s", "outputs / error"]]
    for f in index["flights"]:
        ok = f["status"] == "ok"
        rows.append([f["name"], f["status"], "-" if f["frames"] is None else str(f["frames"]),
                     "-" if f["seconds"] is None else f"{f['seconds']:.1f}",
                     f"{f['frames_per_second']:.1f}" if f.get("frames_per_second") else "-",
                     f["out"] if ok else (f["error"] or "")])
    lines = [_table(rows, left=(0, 1, 5))]
    if index["run"]["evaluate"]:
        from pipeline.evaluation.evaluate import format_table

        streams = {f"{f['name']}/{s}": m for f in index["flights"] if f.get("scores") for s, m in f["scores"].items()}
        streams.update({f"pooled/{s}": m for s, m in index.get("pooled", {}).items()})
        if streams:
            lines += ["", _rename_first_header(format_table({"streams": streams}), "flight/stream")]
        else:
            lines += ["", "no flight has ground truth: nothing scored"]
    t = index["totals"]
    lines += ["", f"{t['ok']} of {t['flights']} flights done, {t['failed']} failed; {t['frames']} frames "
                  f"in {t['wall_seconds']:.1f} s"]
    return "\n".join(lines)


def _rename_first_header(table: str, header: str) -> str:
    """format_table's first column is headed 'stream': head it `header`, widening the column if needed."""
    lines = table.split("\n")
    width = len(lines[0]) - len(lines[0][len("stream"):].lstrip(" "))  # first column plus its gap
    pad = max(0, len(header) + 2 - width)
    lines = [ln[:width] + " " * pad + ln[width:] for ln in lines]
    lines[0] = header + lines[0][len(header):]
    return "\n".join(lines)


def _table(rows: list[list[str]], left: tuple[int, ...]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def exit_status(index: dict[str, Any]) -> int:
    """130 when interrupted, 2 when a flight failed, else 0."""
    if index["totals"].get("interrupted") or any(f["status"] == "interrupted" for f in index["flights"]):
        return 130
    return 2 if index["totals"]["failed"] else 0

