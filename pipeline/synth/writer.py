"""`generate_flight`: render a scenario into a flight folder (see pipeline/io/flight.py for the layout)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from pipeline.config import to_dict
from pipeline.errors import InputError
from pipeline.geometry.camera import enu_to_geodetic
from pipeline.synth.background import T_HIGH, T_LOW, build_panoramas
from pipeline.synth.render import Box, StreamRenderer
from pipeline.synth.scenario import GT_CLASSES, Scenario, StreamSetup, make_scenario

GPS_HZ, CAMERA_HZ = 10.0, 50.0
FIX_NOISE = {4: (0.015, 0.025), 5: (0.15, 0.3), 1: (1.2, 2.5)}  # RTK fixed, float, single: sigma h, v (m)


def generate_flight(out_dir: str | Path, seed: int = 0, seconds: float = 20.0, drones: int = 3, birds: int = 2,
                    randomize: bool = False) -> Path:
    """Write a synthetic flight (RGB + thermal video, timestamps, GPS-RTK and turret logs, ground truth,
    presence windows) to `out_dir` and return its path. The same arguments give byte-identical files.

    `randomize`: the domain-randomized profile (pipeline/synth/scenario.py): random sensor sizes and fields
    of view, drone shapes and sizes of about 3-200 px, cluttered backgrounds, and distractors (`birds` lone
    birds plus now and then a flock, airplanes, helicopters) that are in the ground truth with their
    classes (1 drone, 2 bird, 3 airplane, 4 helicopter); presence windows and GPS logs stay the drones'."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "flight.yaml").is_file())):
        raise InputError("exists and is not an empty folder or a flight folder", out)
    if seconds < 0.1 or drones < 0 or birds < 0:
        raise InputError(f"need seconds >= 0.1 and non-negative counts (got {seconds}, {drones}, {birds})", out)
    for sub in ("timestamps", "telemetry", "gt"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    scn = make_scenario(seed, seconds, drones, birds, randomize=randomize)
    seeds = np.random.SeedSequence([seed, 12 if randomize else 2]).spawn(4)
    panos = build_panoramas(scn, np.random.default_rng(seeds[0]))
    presence = []
    for k, (name, setup) in enumerate(scn.streams.items()):
        renderer = StreamRenderer(scn, setup, panos[name], np.random.default_rng(seeds[1 + k]))
        boxes = _write_video(out / f"{name}.mp4", setup, renderer)
        _write_csv(out / "timestamps" / f"{name}.csv", "frame,t",
                   [f"{i + 1},{t:.6f}" for i, t in enumerate(setup.timestamps)])
        _write_csv(out / "gt" / f"{name}.txt", None,
                   [f"{f},{b.oid},{b.ltwh[0]},{b.ltwh[1]},{b.ltwh[2]},{b.ltwh[3]},1,{GT_CLASSES[b.kind]},"
                    f"{b.visibility:.3f}" for f, frame_boxes in enumerate(boxes, 1) for b in frame_boxes])
        presence += _presence(name, setup, [[b for b in fb if b.kind == "drone"] for fb in boxes])
    _write_csv(out / "telemetry" / "gps_rtk.csv", "t,target_id,lat,lon,alt,fix",
               _gps_rows(scn, np.random.default_rng(seeds[3])))
    _write_csv(out / "telemetry" / "camera.csv", "t,lat,lon,alt,pan,tilt,roll", _camera_rows(scn))
    (out / "flight.yaml").write_text(yaml.safe_dump(_manifest(scn, presence), sort_keys=False), encoding="utf-8")
    return out


def _write_video(path: Path, setup: StreamSetup, renderer: StreamRenderer) -> list[list[Box]]:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), setup.fps, (setup.width, setup.height))
    if not writer.isOpened():
        raise InputError("cannot open an mp4v video writer", path)
    boxes = []
    try:
        for t in setup.timestamps:
            frame, frame_boxes = renderer.render(float(t))
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame)
            boxes.append(sorted(frame_boxes, key=lambda b: b.oid))
    finally:
        writer.release()
    return boxes


def _write_csv(path: Path, header: str | None, rows: list[str]) -> None:
    lines = ([header] if header else []) + rows
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _presence(name: str, setup: StreamSetup, boxes: list[list[Box]]) -> list[dict]:
    """One window per run of consecutive frames in which a target has a ground-truth box."""
    frames: dict[int, list[int]] = {}
    for f, frame_boxes in enumerate(boxes):
        for b in frame_boxes:
            frames.setdefault(b.oid, []).append(f)
    out = []
    for oid in sorted(frames):
        fs = np.array(frames[oid])
        for run in np.split(fs, np.flatnonzero(np.diff(fs) > 1) + 1):
            out.append({"stream": name, "target_id": oid, "start": float(setup.timestamps[run[0]]),
                        "end": float(setup.timestamps[run[-1]])})
    return out


def _fix_schedule(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """RTK fixed (4) most of the time, with occasional drops to float (5) and single (1) fixes."""
    fix = np.full(len(t), 4)
    for _ in range(rng.poisson(0.04 * (t[-1] - t[0]) + 0.3)):
        start, length = rng.uniform(t[0], t[-1]), rng.uniform(0.8, 4.0)
        fix[(t >= start) & (t < start + length)] = 5
        if rng.random() < 0.5:
            mid = start + length * rng.uniform(0.2, 0.5)
            fix[(t >= mid) & (t < mid + length * 0.3)] = 1
    return fix


def _drift(rng: np.random.Generator, fix: np.ndarray) -> np.ndarray:
    """A random walk (in units of the fix's sigma) that starts afresh each time RTK fix is lost."""
    steps = rng.normal(0, 0.3, (len(fix), 3))
    out, acc = np.zeros((len(fix), 3)), np.zeros(3)
    for i, f in enumerate(fix):
        acc = acc + steps[i] if f != 4 else np.zeros(3)
        out[i] = acc
    return out


def _gps_rows(scn: Scenario, rng: np.random.Generator) -> list[str]:
    rows = []
    for obj in scn.drones:
        t = np.round(np.arange(0.0, scn.seconds + 0.4, 1.0 / GPS_HZ) + rng.uniform(0, 1.0 / GPS_HZ), 3)
        t = t[rng.random(len(t)) > 0.01]  # a few lost messages
        fix = _fix_schedule(rng, t)
        sigma = np.array([FIX_NOISE[int(f)] for f in fix])
        noise = (rng.normal(0, 1, (len(t), 3)) + _drift(rng, fix)) * sigma[:, [0, 0, 1]]
        lat, lon, alt = enu_to_geodetic(obj.path.at(t) + noise, scn.ref)
        rows += [(ti, f"{ti:.3f},{obj.id},{la:.9f},{lo:.9f},{al:.4f},{f}")
                 for ti, la, lo, al, f in zip(t, lat, lon, alt, fix)]
    return [r for _, r in sorted(rows, key=lambda r: r[0])]


def _camera_rows(scn: Scenario) -> list[str]:
    t = np.round(np.arange(0.0, scn.seconds + 0.4, 1.0 / CAMERA_HZ), 3)
    ang = scn.turret.angles_at(t)
    lat, lon, alt = scn.ref
    return [f"{ti:.3f},{lat:.9f},{lon:.9f},{alt:.4f},{p % 360:.5f},{tl:.5f},{r:.5f}" for ti, (p, tl, r) in zip(t, ang)]


def _manifest(scn: Scenario, presence: list[dict]) -> dict:
    streams = {}
    for name, s in scn.streams.items():
        streams[name] = {"modality": s.modality, "video": f"{name}.mp4", "fps": s.fps,
                         "timestamps": f"timestamps/{name}.csv", "width": s.width, "height": s.height,
                         "calibration": to_dict(s.calibration), "gt": f"gt/{name}.txt"}
    objects = []
    for o in scn.objects:
        lk = o.look
        temps = {k: round(lk[k], 2) for k in ("body_temp", "motor_temp", "skin_temp", "engine_temp") if k in lk}
        shape = {"shape": lk["shape"]} if "shape" in lk else {}
        objects.append({"id": o.id, "kind": o.kind, **shape, "span_m": round(o.span, 3), **temps,
                        "in_gt": o.kind in scn.profile.get("gt_kinds", ("drone",))})
    meta = {"generator": "dronetrack synth", "seed": scn.seed, "seconds": scn.seconds,
            "reference": {"lat": scn.ref[0], "lon": scn.ref[1], "alt": scn.ref[2]},
            "sky": {"kind": scn.sky["kind"], "clouds": round(scn.sky["clouds"], 3)},
            "sun": {"azimuth": round(scn.sun[0] % 360, 3), "elevation": round(scn.sun[1], 3)},
            "thermal_grey": {"celsius_at_0": T_LOW, "celsius_at_255": T_HIGH},
            "objects": objects}
    if scn.profile.get("randomized"):
        meta["profile"] = {"name": "randomized", "world": dict(scn.profile["world"]),
                           "classes": {k: v for k, v in GT_CLASSES.items()}}
    return {"name": f"synth-{scn.seed}", "streams": streams,
            "telemetry": {"gps_rtk": "telemetry/gps_rtk.csv", "camera": "telemetry/camera.csv",
                          "clock_offset": 0.0, "max_gap": 1.0},
            "presence": presence, "meta": meta}
