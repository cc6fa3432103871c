"""The bad-input catalogue (README, "Bad input"): every case makes its bad input in a temporary folder
and runs the real command line (`pipeline.cli.main`, stderr captured at the file-descriptor level so
FFmpeg's and torch's own output would show). An error case must exit 2 with exactly one line on
stderr that names the file (and line or key), no traceback, and leave no half-written JSON: every
.json under the output folder parses and no temporary file is left. A few cases are reported, not
errors (exit 0): the table says so, and their check says how they are reported.

`python tests/test_bad_inputs.py` prints the README table (case | what dronetrack says | exit code).
"""
from __future__ import annotations

import json
import logging
import random
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import make_flight, make_video  # noqa: E402
from pipeline.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)  # not shown by default
SECRET = "hunter2pw"  # a password that must never be printed or written


@dataclass
class Case:
    name: str
    what: str  # the README's description of the case
    build: Callable[[Path], tuple[list, list[str]]]  # tmp -> (argv, words the stderr line must hold)
    code: int = 2
    check: Callable[[Path, str], None] | None = None  # extra assertions on (tmp, everything said)


CASES: list[Case] = []


def case(what: str, code: int = 2, check: Callable[[Path, str], None] | None = None):
    def register(fn: Callable[[Path], tuple[list, list[str]]]):
        CASES.append(Case(fn.__name__.replace("_", "-"), what, fn, code, check))
        return fn
    return register


# helpers ---------------------------------------------------------------------------------------
def flight(tmp: Path, frames: int = 5, extra: str = "") -> Path:
    return make_flight(tmp / "f", {"thermal": (frames, 25.0)}, extra)


def process(root: Path, tmp: Path, *more) -> list:
    return ["process", root, "--out", tmp / "out", "--no-progress", *more]


def edit_yaml(root: Path, old: str, new: str) -> None:
    p = root / "flight.yaml"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))


CAMERA = "t,lat,lon,alt,pan,tilt,roll\n" + "".join(f"{0.1 * i:.1f},48.0,2.0,100,{10 + i},5,0\n" for i in range(6))
GPS = "t,target_id,lat,lon,alt,fix\n" + "".join(f"{0.1 * i:.1f},1,48.001,2.0000{i},150,4\n" for i in range(6))


def telemetry_flight(tmp: Path, camera: str = CAMERA, gps: str = GPS, gps_name: str = "gps.csv") -> Path:
    root = flight(tmp, extra=f"telemetry:\n  camera: camera.csv\n  gps_rtk: {gps_name}\n")
    (root / "camera.csv").write_text(camera)
    (root / gps_name).write_text(gps)
    return root


def checkpoint_run(tmp: Path, ckpt: Path | str) -> list:
    return process(flight(tmp), tmp, "detector.kind=dpfcn", f"detector.checkpoint={ckpt}", "detector.device=cpu")


def no_outputs(tmp: Path, said: str) -> None:
    """Failed before the run: no output folder at all (nothing half-made)."""
    assert not (tmp / "out").exists()


# video ------------------------------------------------------------------------------------------
def summary_error(words: str):
    def check(tmp: Path, said: str) -> None:
        summary = json.loads((tmp / "out" / "summary.json").read_text())  # written, with the error
        assert words in (summary["error"] or ""), summary["error"]
        assert json.loads((tmp / "out" / "detections" / "thermal.json").read_text()) is not None
    return check


@case("video truncated, MP4 (its index, written last, is lost)", check=no_outputs)
def video_truncated(tmp):
    root = flight(tmp, 60)
    data = (root / "thermal.mp4").read_bytes()
    (root / "thermal.mp4").write_bytes(data[: len(data) * 2 // 3])
    return process(root, tmp), ["thermal.mp4", "cannot open video"]


@case("video truncated, AVI (the frames before the cut are processed and written, then the error)",
      check=summary_error("thermal.avi"))
def video_truncated_avi(tmp):
    root = flight(tmp, 60)
    data = make_video(root / "thermal.avi", 60).read_bytes()
    (root / "thermal.avi").write_bytes(data[: len(data) * 2 // 3])
    edit_yaml(root, "video: thermal.mp4", "video: thermal.avi")
    return process(root, tmp), ["thermal.avi", "video is truncated or corrupt: decoded"]


@case("video corrupt (bytes garbled after the first frames)", check=summary_error("decoded"))
def video_corrupt(tmp):
    root = flight(tmp, 60)
    data = bytearray((root / "thermal.mp4").read_bytes())
    for i in range(300, len(data) - 1500, 7):
        data[i] ^= 0x5A
    (root / "thermal.mp4").write_bytes(bytes(data))
    return process(root, tmp), ["thermal.mp4", "decoded"]


@case("video file of zero bytes", check=no_outputs)
def video_zero_length(tmp):
    root = flight(tmp)
    (root / "thermal.mp4").write_bytes(b"")
    return process(root, tmp), ["thermal.mp4", "empty file"]


@case("not a video: a text file named .mp4", check=no_outputs)
def video_text(tmp):
    root = flight(tmp)
    (root / "thermal.mp4").write_text("this is not a video\n" * 50)
    return process(root, tmp), ["thermal.mp4", "cannot open video"]


@case("not a video: a PNG image named .mp4", check=no_outputs)
def video_png(tmp):
    import cv2
    import numpy as np

    root = flight(tmp)
    ok, png = cv2.imencode(".png", np.zeros((48, 64), np.uint8))
    (root / "thermal.mp4").write_bytes(png.tobytes())
    return process(root, tmp), ["thermal.mp4", "PNG image, not a video"]


@case("single video file that is not a video", check=no_outputs)
def video_single_file(tmp):
    (tmp / "clip.mp4").write_bytes(random.Random(0).randbytes(4096))
    return ["process", tmp / "clip.mp4", "--out", tmp / "out", "--no-progress"], ["clip.mp4", "cannot open video"]


@case("video frames of another size than flight.yaml's width/height", check=no_outputs)
def video_size_mismatch(tmp):
    root = flight(tmp, extra="")
    edit_yaml(root, "    fps: 25.0\n", "    fps: 25.0\n    width: 640\n    height: 512\n")
    return process(root, tmp), ["thermal.mp4", "frames are 64x48", "640x512", "streams.thermal.width"]


@case("timestamps file lists fewer frames than the video holds", check=summary_error("timestamps"))
def timestamps_too_few(tmp):
    root = flight(tmp, 5)
    (root / "ts.csv").write_text("frame,t\n1,0.0\n2,0.04\n3,0.08\n")
    edit_yaml(root, "    fps: 25.0\n", "    timestamps: ts.csv\n")
    return process(root, tmp), ["thermal.mp4", "more frames than its timestamps file lists (3)"]


@case("timestamps file skips a frame number", check=no_outputs)
def timestamps_skip(tmp):
    root = flight(tmp, 5)
    (root / "ts.csv").write_text("frame,t\n1,0.0\n3,0.04\n")
    edit_yaml(root, "    fps: 25.0\n", "    timestamps: ts.csv\n")
    return process(root, tmp), ["ts.csv:3:", "expected frame 2"]


# flight.yaml ------------------------------------------------------------------------------------
@case("flight folder without flight.yaml (and no images)", check=no_outputs)
def flight_no_manifest(tmp):
    (tmp / "f").mkdir()
    (tmp / "f" / "notes.txt").write_text("x")
    return process(tmp / "f", tmp), [str(tmp / "f"), "flight.yaml"]


@case("flight.yaml without `streams`", check=no_outputs)
def flight_no_streams(tmp):
    root = flight(tmp)
    (root / "flight.yaml").write_text("name: x\n")
    return process(root, tmp), ["flight.yaml", "streams: missing required key"]


@case("flight.yaml: a stream naming a missing video", check=no_outputs)
def flight_missing_video(tmp):
    root = flight(tmp)
    edit_yaml(root, "video: thermal.mp4", "video: lost.mp4")
    return process(root, tmp), ["flight.yaml", "streams.thermal.video", "lost.mp4 does not exist"]


@case("flight.yaml: wrong type (`fps: fast`)", check=no_outputs)
def flight_wrong_type(tmp):
    root = flight(tmp)
    edit_yaml(root, "fps: 25.0", "fps: fast")
    return process(root, tmp), ["flight.yaml", "streams.thermal.fps", "expected a number"]


@case("flight.yaml: unknown key", check=no_outputs)
def flight_unknown_key(tmp):
    root = flight(tmp, extra="wind_speed: 3\n")
    return process(root, tmp), ["flight.yaml", "wind_speed: unknown key"]


@case("flight.yaml: a path escaping the folder (`video: ../../etc/passwd`)", check=no_outputs)
def flight_path_escapes(tmp):
    root = flight(tmp)
    edit_yaml(root, "video: thermal.mp4", "video: ../../../../../etc/passwd")
    return process(root, tmp), ["flight.yaml", "streams.thermal.video", "outside the flight folder"]


@case("flight.yaml: an absolute path outside the folder (`gt: /etc/passwd`)")
def flight_absolute_path(tmp):
    root = flight(tmp, extra="")
    edit_yaml(root, "    fps: 25.0\n", "    fps: 25.0\n    gt: /etc/passwd\n")
    return ["evaluate", root, tmp / "out"], ["flight.yaml", "streams.thermal.gt", "outside the flight folder"]


@case("flight.yaml: not YAML", check=no_outputs)
def flight_not_yaml(tmp):
    root = flight(tmp)
    (root / "flight.yaml").write_text("streams: [\n  : :\n")
    return process(root, tmp), ["flight.yaml:2:", "invalid YAML"]


BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}' if p else '0'] * 9)}]\n"
               for a, p in zip("abcdefghi", [None, *"abcdefgh"])) + "name: *i\n"


@case("flight.yaml: YAML alias bomb (9^9 items; must neither hang nor print it)", check=no_outputs)
def flight_yaml_bomb(tmp):
    root = flight(tmp)
    (root / "flight.yaml").write_text("streams: {}\n" + BOMB)
    return process(root, tmp), ["flight.yaml", "unknown key"]


@case("flight.yaml: YAML alias bomb under a typed key", check=no_outputs)
def flight_yaml_bomb_typed(tmp):
    root = flight(tmp)
    text = (root / "flight.yaml").read_text()
    (root / "flight.yaml").write_text("meta:\n" + "".join("  " + ln + "\n" for ln in BOMB.splitlines()[:-1])
                                      + text.replace("name: handmade", "name: *i"))
    return process(root, tmp), ["flight.yaml", "name: expected a string"]


@case("flight.yaml: a list, not a mapping", check=no_outputs)
def flight_not_mapping(tmp):
    root = flight(tmp)
    (root / "flight.yaml").write_text("- rgb\n- thermal\n")
    return process(root, tmp), ["flight.yaml", "expected a mapping (streams, telemetry, ...) at the top level"]


@case("flight.yaml: binary, not text", check=no_outputs)
def flight_binary(tmp):
    root = flight(tmp)
    (root / "flight.yaml").write_bytes(b"\xff\xfe\x00\x81garbage")
    return process(root, tmp), ["flight.yaml", "not a UTF-8 text file"]


@case("flight.yaml: presence window of an unknown stream", check=no_outputs)
def flight_presence(tmp):
    root = flight(tmp, extra="presence:\n  - {stream: ir, target_id: 1, start: 0, end: 1}\n")
    return process(root, tmp), ["flight.yaml", "presence[0].stream", "no stream named 'ir'"]


# telemetry --------------------------------------------------------------------------------------
@case("telemetry: NaN", check=no_outputs)
def telemetry_nan(tmp):
    return process(telemetry_flight(tmp, camera=CAMERA.replace("0.2,48.0", "0.2,nan")), tmp), \
        ["camera.csv:4:", "NaN or infinite value in lat"]


def gap_reported(tmp: Path, said: str) -> None:
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    assert summary["telemetry_gaps"] == {"camera": 1}, summary["telemetry_gaps"]
    assert re.search(r"camera\.csv:4: 1 gap\(s\) longer than telemetry.max_gap \(1 s\), the longest 5", said), said


@case("telemetry: a gap longer than max_gap (instants inside are unknown: reported, not an error)",
      code=0, check=gap_reported)
def telemetry_gap(tmp):
    cam = CAMERA.replace("0.2,48.0", "5.2,48.0").replace("0.3,", "5.3,").replace("0.4,", "5.4,").replace("0.5,", "5.5,")
    return process(telemetry_flight(tmp, camera=cam), tmp), []


@case("telemetry: time going backwards", check=no_outputs)
def telemetry_backwards(tmp):
    cam = CAMERA.replace("0.3,48.0", "0.05,48.0")
    return process(telemetry_flight(tmp, camera=cam), tmp), ["camera.csv:5:", "time goes backwards"]


@case("telemetry: duplicated row (same t)", check=no_outputs)
def telemetry_duplicate(tmp):
    lines = GPS.splitlines(keepends=True)
    return process(telemetry_flight(tmp, gps="".join(lines[:3] + [lines[2]] + lines[3:])), tmp), \
        ["gps.csv:4:", "time repeats for target 1"]


@case("telemetry: outlier (an RTK fix jumping kilometres in 0.1 s)", check=no_outputs)
def telemetry_outlier(tmp):
    return process(telemetry_flight(tmp, gps=GPS.replace("0.3,1,48.001", "0.3,1,48.051")), tmp), \
        ["gps.csv:5:", "target 1 jumps 5.6 km in 0.1 s", "max_speed"]


@case("telemetry: wrong units, target lat/lon in radians", check=no_outputs)
def telemetry_radians(tmp):
    gps = "t,target_id,lat,lon,alt,fix\n" + "".join(f"{0.1 * i:.1f},1,0.837776,0.034907,150,4\n" for i in range(6))
    return process(telemetry_flight(tmp, gps=gps), tmp), ["gps.csv:2:", "km from the turret", "radians"]


@case("telemetry: wrong units, altitude in millimetres", check=no_outputs)
def telemetry_alt_mm(tmp):
    return process(telemetry_flight(tmp, camera=CAMERA.replace(",100,", ",100000,")), tmp), \
        ["camera.csv:2:", "alt 100000 is outside [-20000, 20000]"]


@case("telemetry: wrong units, lat as 1e-7 degrees", check=no_outputs)
def telemetry_lat_e7(tmp):
    return process(telemetry_flight(tmp, gps=GPS.replace("48.001", "480010000")), tmp), \
        ["gps.csv:2:", "lat 4.8001e+08 is outside [-90, 90]"]


@case("telemetry: wrong units, pan in centidegrees", check=no_outputs)
def telemetry_pan(tmp):
    return process(telemetry_flight(tmp, camera=CAMERA.replace(",11,5,0", ",1100,5,0")), tmp), \
        ["camera.csv:3:", "pan 1100 is outside [-360, 360]"]


@case("telemetry: missing column", check=no_outputs)
def telemetry_missing_column(tmp):
    cam = "t,lat,lon,alt,pan,tilt\n0,48,2,100,0,5\n"
    return process(telemetry_flight(tmp, camera=cam), tmp), ["camera.csv:1:", "missing column(s) roll"]


@case("telemetry: not a number", check=no_outputs)
def telemetry_not_number(tmp):
    return process(telemetry_flight(tmp, camera=CAMERA.replace("0.1,48.0", "0.1,north")), tmp), \
        ["camera.csv:3:", "not a number"]


@case("telemetry: NMEA sentence with a wrong checksum", check=no_outputs)
def telemetry_nmea_checksum(tmp):
    nmea = "$GNGGA,120000.00,4800.0600,N,00200.0000,E,4,14,0.7,100.0,M,47.0,M,1.0,0001*00\n"
    return process(telemetry_flight(tmp, gps=nmea, gps_name="gps.nmea"), tmp), ["gps.nmea:1:", "checksum mismatch"]


# detection and ground-truth files -----------------------------------------------------------
def track(tmp: Path, det: str) -> list:
    (tmp / "det.txt").write_text(det)
    return ["track", "--detections", tmp / "det.txt", "--out", tmp / "out" / "tracks.txt"]


GOOD_ROW = "1,-1,10,10,5,5,0.9,-1,-1,-1\n"


@case("MOT detections: wrong field count")
def mot_field_count(tmp):
    return track(tmp, GOOD_ROW + "2,-1,10,10\n"), ["det.txt:2:", "expected 6 to 10 comma-separated values, got 4"]


@case("MOT detections: non-numeric value")
def mot_not_number(tmp):
    return track(tmp, GOOD_ROW + "2,-1,10,abc,5,5,0.9\n"), ["det.txt:2:", "not a number"]


@case("MOT detections: negative width")
def mot_negative(tmp):
    return track(tmp, "1,-1,10,10,-5,5,0.9\n"), ["det.txt:1:", "negative box width"]


@case("MOT detections: NaN")
def mot_nan(tmp):
    return track(tmp, GOOD_ROW + GOOD_ROW.replace("0.9", "nan")), ["det.txt:2:", "NaN"]


@case("MOT detections: fractional frame number")
def mot_fraction(tmp):
    return track(tmp, "1.5,-1,10,10,5,5,0.9\n"), ["det.txt:1:", "frame must be a non-negative integer"]


def cut_kept(tmp: Path, said: str) -> None:
    assert "det.txt:3: expected 6 to 10 comma-separated values, got 3 (last line cut: dropped)" in said, said
    assert (tmp / "out" / "tracks.txt").is_file()


@case("MOT file whose last line was cut by a killed run (finished lines read: reported, not an error)",
      code=0, check=cut_kept)
def mot_cut_last_line(tmp):
    return track(tmp, GOOD_ROW + GOOD_ROW.replace("1,", "2,", 1) + "3,-1,1"), []


@case("ground truth: malformed line")
def gt_bad_line(tmp):
    (tmp / "gt.txt").write_text("1,1,10,10,5,5,1,1,1\n2,1,10,10,5,5,1,1,1\n3;1;x;10;5;5;1;1;1\n")
    (tmp / "t.txt").write_text(GOOD_ROW)
    return ["evaluate", "--gt", tmp / "gt.txt", "--tracks", tmp / "t.txt", "--json", tmp / "out" / "s.json"], \
        ["gt.txt:3:", "not a number"]


def coco(tmp: Path, text: str) -> list:
    (tmp / "gt.txt").write_text("1,1,10,10,5,5,1,1,1\n2,1,12,10,5,5,1,1,1\n")
    (tmp / "d.json").write_text(text)
    return ["evaluate", "--gt", tmp / "gt.txt", "--detections", tmp / "d.json", "--json", tmp / "out" / "s.json"]


DET = '{"image_id": %d, "category_id": 1, "bbox": [10, 10, 5, 5], "score": 0.9}'


@case("COCO detections JSON: malformed")
def coco_malformed(tmp):
    return coco(tmp, '[\n' + DET % 1 + ',\n{"image_id": 2 "category_id": 1}\n]\n'), ["d.json:3:", "invalid JSON"]


@case("COCO detections JSON: a result without bbox")
def coco_missing_key(tmp):
    return coco(tmp, json.dumps([json.loads(DET % 1), {"image_id": 2, "category_id": 1, "score": 1}])), \
        ["d.json", "detection [1]: needs keys"]


@case("COCO detections JSON: not a list")
def coco_not_list(tmp):
    return coco(tmp, '{"annotations": []}'), ["d.json", "JSON list of detections"]


def interrupted_read(tmp: Path, said: str) -> None:
    scores = json.loads((tmp / "out" / "s.json").read_text())["streams"]["gt"]
    assert scores["ap50_all"] == pytest.approx(0.5)  # 1 of the 2 boxes, from the finished line
    assert "d.json: no closing ']' (run interrupted?): the 1 finished results are read" in said, said


@case("COCO detections of a killed run (no closing bracket, last line cut: finished lines read, reported)",
      code=0, check=interrupted_read)
def coco_interrupted(tmp):
    return coco(tmp, "[\n" + DET % 1 + ",\n" + (DET % 2)[:30]), []


# configs ----------------------------------------------------------------------------------------
def cfg(tmp: Path, text: str, *over) -> list:
    (tmp / "c.yaml").write_text(text)
    return ["track", "--detections", tmp / "det.txt", "--out", tmp / "out" / "t.txt", "--config", tmp / "c.yaml", *over]


@case("run config: unknown key")
def config_unknown_key(tmp):
    return cfg(tmp, "tracker:\n  max_agee: 3\n"), ["c.yaml", "tracker.max_agee: unknown key"]


@case("run config: bad value")
def config_bad_value(tmp):
    return cfg(tmp, "tracker:\n  max_age: -1\n"), ["c.yaml", "tracker.max_age: must be >= 0"]


@case("run config: wrong type, from an override (`tracker.max_age=abc`)")
def config_wrong_type(tmp):
    return cfg(tmp, "{}\n", "tracker.max_age=abc"), ["c.yaml", "tracker.max_age: expected an integer"]


@case("run config: override into a value (`tracker.max_age.x=1`)")
def config_not_section(tmp):
    return cfg(tmp, "{}\n", "tracker.max_age.x=1"), ["c.yaml", "tracker.max_age: expected an integer"]


@case("run config: `base` including itself")
def config_base_self(tmp):
    return cfg(tmp, "base: c.yaml\n"), ["c.yaml", "includes itself"]


@case("run config: missing file")
def config_missing(tmp):
    return ["track", "--detections", tmp / "d.txt", "--out", tmp / "t.txt", "--config", tmp / "nope.yaml"], \
        ["nope.yaml", "no such file"]


@case("run config: huge number")
def config_huge(tmp):
    return cfg(tmp, f"tracker:\n  max_age: {10 ** 30}\n"), ["c.yaml", "tracker.max_age", "out of range"]


@case("training config: unknown key")
def train_unknown_key(tmp):
    (tmp / "t.yaml").write_text(f"out: {tmp / 'out'}\noptim:\n  stepz: 3\n")
    return ["train", tmp / "t.yaml"], ["t.yaml", "optim.stepz: unknown key"]


@case("training config: wrong type")
def train_wrong_type(tmp):
    (tmp / "t.yaml").write_text(f"out: {tmp / 'out'}\noptim:\n  steps: many\n")
    return ["train", tmp / "t.yaml"], ["t.yaml", "optim.steps: expected an integer"]


# checkpoints ------------------------------------------------------------------------------------
@case("checkpoint: not a torch file", check=no_outputs)
def checkpoint_text(tmp):
    (tmp / "c.pt").write_text("not a checkpoint")
    return checkpoint_run(tmp, tmp / "c.pt"), ["c.pt", "unreadable checkpoint"]


class Hostile:
    """Unpickling this calls open(marker, 'w'): weights_only must refuse it before it runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload_did_not_run(tmp: Path, said: str) -> None:
    assert not (tmp / "pwned").exists()
    no_outputs(tmp, said)


@case("checkpoint: a pickle with a hostile __reduce__ (refused, the payload never runs)", check=payload_did_not_run)
def checkpoint_hostile(tmp):
    import torch

    torch.save({"format": "dronetrack-checkpoint/1", "payload": Hostile(tmp / "pwned")}, tmp / "evil.pt")
    return checkpoint_run(tmp, tmp / "evil.pt"), ["evil.pt", "refused: it would run code (io.open)"]


@case("checkpoint: a hostile pickle of protocol 4 (refused; torch's own warning not shown)", check=payload_did_not_run)
def checkpoint_hostile_protocol4(tmp):
    import torch

    torch.save({"format": "dronetrack-checkpoint/1", "payload": Hostile(tmp / "pwned")}, tmp / "evil.pt",
               pickle_protocol=4)
    return checkpoint_run(tmp, tmp / "evil.pt"), ["evil.pt", "unreadable checkpoint"]


@case("checkpoint: of another model kind", check=no_outputs)
def checkpoint_other_kind(tmp):
    return checkpoint_run(tmp, ROOT / "detectors/weights/wildcat_gps.pt"), \
        ["wildcat_gps.pt", "a 'wildcat' checkpoint, expected 'dpfcn'"]


@case("checkpoint: weights of the wrong shapes", check=no_outputs)
def checkpoint_shapes(tmp):
    import torch

    ckpt = torch.load(ROOT / "detectors/weights/dpfcn.pt", weights_only=True)
    key = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][key] = torch.zeros(3)
    torch.save(ckpt, tmp / "c.pt")
    return checkpoint_run(tmp, tmp / "c.pt"), ["c.pt", "weights do not fit the model", "shape"]


@case("checkpoint: truncated file", check=no_outputs)
def checkpoint_truncated(tmp):
    data = (ROOT / "detectors/weights/dpfcn.pt").read_bytes()
    (tmp / "c.pt").write_bytes(data[: len(data) // 2])
    return checkpoint_run(tmp, tmp / "c.pt"), ["c.pt", "unreadable checkpoint"]


@case("checkpoint: a dict of the right shape holding no tensors", check=no_outputs)
def checkpoint_malformed(tmp):
    import torch

    torch.save({"format": "dronetrack-checkpoint/1", "kind": "dpfcn", "config": {}, "classes": ["drone"],
                "state_dict": {"w": 5}}, tmp / "c.pt")
    return checkpoint_run(tmp, tmp / "c.pt"), ["c.pt", "malformed checkpoint"]


# live -------------------------------------------------------------------------------------------
def secret_absent(tmp: Path, said: str) -> None:
    assert SECRET not in said
    for p in tmp.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), p


@case("live: unsupported URL scheme", check=secret_absent)
def live_scheme(tmp):
    return ["live", f"foo://admin:{SECRET}@cam/x", "--seconds", "1"], \
        ["foo://***@cam/x", "unsupported URL scheme 'foo'"]


@case("live: port out of range", check=secret_absent)
def live_port(tmp):
    return ["live", f"rtsp://admin:{SECRET}@cam:99999/x"], ["rtsp://***@cam:99999/x", "bad port"]


@case("live: missing video file")
def live_missing_file(tmp):
    return ["live", tmp / "missing.mp4"], ["missing.mp4", "no such file"]


def unreachable_bounded(tmp: Path, said: str) -> None:
    secret_absent(tmp, said)
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    assert summary["frames"] == 0 and summary["live"]["rgb"]["failed_opens"] >= 1, summary
    assert "rgb (rtsp://***@127.0.0.1:1/s): cannot open; retrying" in said, said


@case("live: unreachable host (retried with backoff until --seconds or Ctrl-C: reported, not an error; "
      "the password never printed)", code=0, check=unreachable_bounded)
def live_unreachable(tmp):
    return ["live", f"rtsp://admin:{SECRET}@127.0.0.1:1/s", "--seconds", "1", "--out", tmp / "out"], []


# other ------------------------------------------------------------------------------------------
@case("evaluate: a flight not processed yet")
def evaluate_no_outputs(tmp):
    root = flight(tmp, extra="")
    (root / "gt.txt").write_text("1,1,10,10,5,5,1,1,1\n")
    edit_yaml(root, "    fps: 25.0\n", "    fps: 25.0\n    gt: gt.txt\n")
    return ["evaluate", root, tmp / "out"], [str(tmp / "out" / "tracks" / "thermal.txt"), "dronetrack process"]


@case("import-svanstrom: bad row in index.csv")
def svanstrom_index(tmp):
    (tmp / "src").mkdir()
    (tmp / "src" / "index.csv").write_text("video,sensor,label,frames,labelled_frames,width,height,fps\n"
                                          "ir/A.mp4,ir,drone,ten,1,320,256,30\n")
    return ["import-svanstrom", tmp / "src", tmp / "out"], ["index.csv:2:", "bad value"]


@case("output folder is a file")
def output_is_file(tmp):
    (tmp / "taken").write_text("x")
    return process(flight(tmp), tmp)[:3] + [tmp / "taken"], ["taken", "exists"]


# the runner -------------------------------------------------------------------------------------
def run_case(c: Case, tmp: Path, capfd, caplog) -> tuple[int, str, list[str], str]:
    argv, words = c.build(tmp)
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    # Python warnings that a user would see on stderr (pytest would otherwise swallow them)
    err += "".join(f"{w.category.__name__}: {w.message}\n" for w in caught if not issubclass(w.category, HIDDEN))
    said = err + out + "".join(r.getMessage() + "\n" for r in caplog.records)
    return code, err, words, said


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_bad_input(c: Case, tmp_path: Path, capfd, caplog):
    code, err, words, said = run_case(c, tmp_path, capfd, caplog)
    assert code == c.code, said
    assert "Traceback" not in said
    if c.code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1, err
        assert lines[0].startswith("dronetrack "), lines[0]
        for w in words:
            assert w in lines[0], (w, lines[0])
    for p in (tmp_path / "out").rglob("*.json") if (tmp_path / "out").is_dir() else []:
        json.loads(p.read_text())  # never half-written
    assert not [p for p in tmp_path.rglob("*.tmp")], "a temporary file was left"
    if c.check is not None:
        c.check(tmp_path, said)


def test_catalogue_is_complete():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


def run_cli(*args: object, timeout: float = 120) -> tuple[int, str, str]:
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT)
    return p.returncode, p.stdout, p.stderr


def test_end_to_end_credentials(tmp_path):
    """Through `python -m pipeline.cli` (a real process: logging and FFmpeg's own output as a user sees
    them): an unreachable URL with a password is retried until --seconds, without a traceback, and the
    password appears nowhere."""
    code, out, err = run_cli("live", f"rtsp://admin:{SECRET}@127.0.0.1:1/s", "--seconds", "1", "--out", tmp_path / "l")
    assert code == 0 and "Traceback" not in err, err
    assert SECRET not in out + err and SECRET not in (tmp_path / "l" / "summary.json").read_text()
    assert "cannot open; retrying" in err and json.loads(err.strip().splitlines()[-1])["summary"]["frames"] == 0


# README table -------------------------------------------------------------------------------------
def table() -> str:
    """Run every case and give the README's markdown rows: case | what dronetrack says | exit code."""
    import contextlib
    import io
    import shutil
    import tempfile

    rows = ["| case | what dronetrack says | exit code |", "| --- | --- | --- |"]
    for c in CASES:
        tmp = Path(tempfile.mkdtemp(prefix="badinput-"))
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                argv, _ = c.build(tmp)
                code = main([str(a) for a in argv])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip() and not ln.startswith('{"summary"')]
        said = " / ".join(dict.fromkeys(lines))  # repeated retry warnings once
        said = said.replace(str(tmp) + "/", "").replace(str(tmp), ".").replace(str(ROOT) + "/", "")
        said = said.replace("|", "\\|")
        said = f"`` {said} ``" if "`" in said else f"`{said}`"  # a code span that may hold backticks
        rows.append(f"| {c.what} | {said} | {code} |")
    return "\n".join(rows)


if __name__ == "__main__":  # warnings reach the captured stderr through logging's last-resort handler
    print(table())
