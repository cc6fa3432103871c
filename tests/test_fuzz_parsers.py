"""Fuzzing every parser of user files with hypothesis: for any input, a parser returns its structure or
raises the project's DronetrackError (InputError / ConfigError) with a one-line message; never another
exception (a crash the CLI would show as a traceback). Inputs are built near the real formats (real
keys and columns, numbers that overflow, NaN, NUL bytes, cut lines, YAML aliases) and also as raw bytes.

Examples per parser: 60, derandomized (the same inputs every run, so the suite stays deterministic); set
DRONETRACK_FUZZ_EXAMPLES=5000 for a long random run. The crashes found are the regression cases at
the end of this file.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import DronetrackError

EXAMPLES = int(os.environ.get("DRONETRACK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="DRONETRACK_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def says_why(fn, *args, **kwargs):
    """Run a parser: its result, or None after a DronetrackError whose message is one line."""
    try:
        return fn(*args, **kwargs)
    except DronetrackError as e:
        assert "\n" not in str(e), repr(str(e))
        return None


def put(folder: Path, name: str, data: bytes | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return p


# strategies ---------------------------------------------------------------------------------------
ODD = ["nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1e-400", "-0", "1_0", "0x10", "", " ", "٣", "1e18",
       "9" * 40, "\x00", "\r", '"', "'", "#", ";", "1.5", "-3", "4", "0", "48.0", "2.0", "100"]
cell = st.one_of(st.sampled_from(ODD), st.integers(-10**20, 10**20).map(str),
                 st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6))


def csv_text(columns: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    header = st.one_of(st.just(",".join(columns)), st.permutations(columns).map(",".join),
                       st.lists(st.sampled_from(columns), max_size=len(columns) + 1).map(",".join), cell)
    rows = st.lists(st.lists(cell, max_size=len(columns) + 2).map(",".join), max_size=8)
    ending = st.sampled_from(["\n", "", "\r\n"])
    text = st.builds(lambda h, r, e: "\n".join([h, *r]) + e, header, rows, ending)
    return st.one_of(text.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=120))


FLIGHT_KEYS = ["streams", "name", "telemetry", "presence", "meta", "rgb", "thermal", "modality", "video", "fps",
               "timestamps", "t0", "width", "height", "calibration", "fx", "fy", "cx", "cy", "dist", "gt",
               "annotated", "frames", "gps_rtk", "camera", "clock_offset", "max_gap", "max_speed", "gps_format",
               "nmea_target_id", "stream", "target_id", "start", "end", "mount_offset"]
RUN_KEYS = ["detector", "tracker", "camera_motion", "smoothing", "streams", "pair_tolerance", "queue_size", "kind",
            "min_score", "checkpoint", "device", "search", "max_age", "min_hits", "motion", "alpha", "base", "out",
            "model", "optim", "steps", "lr", "data", "synthetic", "seeds", "seed", "threads", "export"]
scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                   st.sampled_from(["rgb", "thermal", "rgb.mp4", "../../etc/passwd", "/etc/passwd", "motion",
                                    "dpfcn", "auto", "cpu", "csv", "nmea", "x"]), st.text(max_size=8))


def yaml_doc(keys: list[str]) -> st.SearchStrategy[bytes]:
    key = st.one_of(st.sampled_from(keys), st.text(max_size=5), st.integers(0, 3))
    tree = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(key, inner, max_size=5)), max_leaves=25)
    doc = st.dictionaries(st.sampled_from(keys), tree, max_size=6)
    dumped = doc.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode())
    aliases = st.just(b"a: &a [1, 2]\nb: &b [*a, *a, *a]\nstreams: {rgb: {modality: *b, video: *a}}\nname: *b\n")
    cut = st.tuples(dumped, st.integers(0, 400)).map(lambda t: t[0][: t[1]])
    return st.one_of(dumped, cut, aliases, st.binary(max_size=120), st.text(max_size=80).map(str.encode))


overrides = st.lists(st.builds(lambda k, v: f"{k}={v}",
                               st.lists(st.sampled_from(RUN_KEYS + ["", "x"]), min_size=1, max_size=3).map(".".join),
                               st.one_of(cell, st.sampled_from(["[1, 2]", "{a: 1}", "!!python/object:os.system",
                                                                "&a [*a]", "null", "true"]))),
                     max_size=3)
json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                                    st.floats(allow_nan=True), st.text(max_size=5)),
                          lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                  st.dictionaries(st.text(max_size=5), inner, max_size=5)),
                          max_leaves=20)


def json_doc(record: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    dumped = st.lists(record, max_size=5).map(lambda v: json.dumps(v, indent=0).encode())
    cut = st.tuples(dumped, st.integers(0, 300)).map(lambda t: t[0][: t[1]])
    return st.one_of(dumped, cut, json_value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=100),
                     st.just(b"[" * 5000 + b"]" * 5000))


coco_record = st.fixed_dictionaries({}, optional={"image_id": json_value, "category_id": json_value,
                                                  "bbox": st.lists(st.one_of(st.integers(-10**30, 10**30),
                                                                             st.floats()), max_size=5),
                                                  "score": json_value})


# flight.yaml, run and training configs -------------------------------------------------------------
@FUZZ
@given(doc=yaml_doc(FLIGHT_KEYS))
def test_flight_yaml(scratch, doc):
    from pipeline.io.flight import load_flight

    root = scratch / "flight"
    put(root, "flight.yaml", doc)
    put(root, "rgb.mp4", b"")
    flight = says_why(load_flight, root)
    assert flight is None or len(flight.streams) >= 1


@FUZZ
@given(doc=yaml_doc(RUN_KEYS), over=overrides)
def test_run_config_and_overrides(scratch, doc, over):
    from pipeline.settings import RunConfig, load_config

    cfg = says_why(load_config, put(scratch / "cfg", "run.yaml", doc), over)
    assert cfg is None or isinstance(cfg, RunConfig)


@FUZZ
@given(doc=yaml_doc(RUN_KEYS), over=overrides)
def test_training_config(scratch, doc, over):
    from pipeline.training.train import TrainConfig, load_train_config

    cfg = says_why(load_train_config, put(scratch / "cfg", "train.yaml", doc), over)
    assert cfg is None or isinstance(cfg, TrainConfig)


# telemetry and timestamps -------------------------------------------------------------------------
@FUZZ
@given(gps=csv_text(("t", "target_id", "lat", "lon", "alt", "fix")),
       cam=csv_text(("t", "lat", "lon", "alt", "pan", "tilt", "roll")))
def test_telemetry_csv(scratch, gps, cam):
    from pipeline.io.telemetry import Telemetry

    tel = says_why(Telemetry.load, put(scratch / "tel", "gps.csv", gps), put(scratch / "tel", "camera.csv", cam),
                   gps_format="csv")
    if tel is not None:
        tel.sample(0.5)


def gga_line(fields: list[str], good_sum: bool) -> str:
    body = "GNGGA," + ",".join(fields)
    check = 0
    for ch in body.encode("ascii", "replace"):
        check ^= ch
    return f"${body}*{check if good_sum else (check ^ 1):02X}"


nmea_field = st.one_of(cell, st.sampled_from(["120000.00", "235959.99", "4807.038", "01131.000", "N", "S", "E",
                                              "W", "4", "1", "0", "545.4", "M", "46.9"]))
nmea_text = st.lists(st.one_of(st.builds(gga_line, st.lists(nmea_field, min_size=10, max_size=14), st.booleans()),
                               st.sampled_from(["$GPRMC,1*00", "", "not nmea", "$GNGGA"]), cell),
                     max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=st.one_of(nmea_text, st.binary(max_size=100)))
def test_nmea(scratch, text):
    from pipeline.io.telemetry import Telemetry, read_nmea_gga

    path = put(scratch / "tel", "gps.nmea", text)
    rows = says_why(read_nmea_gga, path)
    assert rows is None or rows[0].shape[1] == 5
    says_why(Telemetry.load, path, None, gps_format="nmea")


@FUZZ
@given(text=csv_text(("frame", "t")))
def test_timestamps(scratch, text):
    from pipeline.io.telemetry import read_timestamps

    times = says_why(read_timestamps, put(scratch / "ts", "ts.csv", text))
    assert times is None or (np.all(np.diff(times) > 0) and np.all(np.isfinite(times)))


# detections and ground truth -----------------------------------------------------------------------
mot_text = st.one_of(st.lists(st.lists(cell, min_size=1, max_size=11).map(",".join), max_size=6)
                     .map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")), st.binary(max_size=100))


@FUZZ
@given(text=mot_text)
def test_mot(scratch, text):
    from pipeline.io.motio import read_detections, read_mot

    path = put(scratch / "mot", "det.txt", text)
    rows = says_why(read_mot, path)
    assert rows is None or (rows.shape[1] == 10 and np.isfinite(rows).all())
    says_why(read_detections, path)


@FUZZ
@given(text=json_doc(coco_record))
def test_coco_results(scratch, text):
    from pipeline.evaluation.evaluate import read_coco_results

    rows = says_why(read_coco_results, put(scratch / "coco", "d.json", text))
    assert rows is None or (rows.shape[1] == 10 and np.isfinite(rows).all())


coco_gt_doc = st.fixed_dictionaries({}, optional={
    "images": st.lists(st.fixed_dictionaries({"id": json_value}, optional={"width": json_value}), max_size=3),
    "categories": st.lists(st.fixed_dictionaries({"id": json_value}, optional={"name": json_value}), max_size=3),
    "annotations": st.lists(coco_record, max_size=3)}).map(lambda d: json.dumps(d).encode())


@FUZZ
@given(text=st.one_of(coco_gt_doc, json_doc(json_value)))
def test_coco_ground_truth(scratch, text):
    coco = pytest.importorskip("pipeline.evaluation.coco")
    says_why(coco.load_coco_gt, put(scratch / "coco", "gt.json", text))


# dataset importers --------------------------------------------------------------------------------
@FUZZ
@given(index=csv_text(("video", "sensor", "label", "frames", "labelled_frames", "width", "height", "fps")),
       labels=csv_text(("frame", "x", "y", "w", "h", "label")))
def test_svanstrom(scratch, index, labels):
    from pipeline.io.svanstrom import Clip, read_index, read_labels

    src = scratch / "svan"
    put(src, "index.csv", index)
    says_why(read_index, src)
    put(src, "clip.csv", labels)
    clip = Clip("clip", src / "clip.mp4", "ir", "drone", 10, 320, 256, 30.0)
    got = says_why(read_labels, clip)
    assert got is None or all(1 <= r[0] <= 10 and r[3] > 0 and r[4] > 0 for r in got[0])


@pytest.fixture(scope="module")
def png_bytes() -> bytes:
    import cv2

    return cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))[1].tobytes()


yolo_label = st.one_of(st.lists(st.lists(st.one_of(cell, st.sampled_from(["0", "0.5", "0.1", "1.2"])),
                                         min_size=1, max_size=6).map(" ".join), max_size=4)
                       .map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")), st.binary(max_size=60))


@FUZZ
@given(label=yolo_label, names=st.one_of(st.none(), yaml_doc(["names", "nc", "path", "train"])))
def test_yolo(scratch, png_bytes, label, names):
    importers = pytest.importorskip("pipeline.io.importers")
    src, out = scratch / "yolo", scratch / "yolo_out"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    put(src / "images", "a.png", png_bytes)
    put(src / "labels", "a.txt", label)
    if names is not None:
        put(src, "data.yaml", names)
    says_why(importers.import_yolo, src, out)


@FUZZ
@given(doc=st.one_of(st.fixed_dictionaries({}, optional={"exist": st.one_of(json_value, st.lists(json_value)),
                                                         "gt_rect": st.lists(json_value, max_size=4)})
                     .map(lambda d: json.dumps(d).encode()), json_doc(json_value)))
def test_antiuav(scratch, png_bytes, doc):
    importers = pytest.importorskip("pipeline.io.importers")
    src, out = scratch / "antiuav", scratch / "antiuav_out"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    seq = src / "seq1"
    for i in (1, 2, 3):
        put(seq, f"{i:06d}.png", png_bytes)
    put(seq, "IR_label.json", doc)
    says_why(importers.import_antiuav, src, out)


# live sources -------------------------------------------------------------------------------------
@FUZZ
@given(spec=st.one_of(st.text(max_size=30), st.builds(lambda s, u, h, p: f"{s}://{u}@{h}:{p}/x",
                                                      st.sampled_from(["rtsp", "http", "foo", "udp", "RTSP", ""]),
                                                      st.text(max_size=8), st.text(max_size=8), cell)))
def test_live_source(spec):
    from pipeline.io.live import parse_source

    got = says_why(parse_source, spec)
    assert got is None or got.kind in ("camera", "file", "url", "gstreamer")


# regression cases: what the fuzzing found ----------------------------------------------------------
@pytest.mark.parametrize("name, data, parser", [
    ("flight.yaml", b"a: &a [1,2,3,4,5,6,7,8,9]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                    b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                    b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                    b"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nstreams: {}\nname: *g\n", "flight"),  # repr never ended
    ("run.yaml", b"tracker: {max_age: 1000000000000000000000000000000}\n", "config"),  # int out of range
    ("run.yaml", b"pair_tolerance: 1" + b"0" * 400 + b"\n", "config"),  # OverflowError in isfinite
    ("camera.csv", b"t,lat,lon,alt,pan,tilt,roll\n0,48,2,100,0,5," + b"9" * 200_000 + b"\n", "camera"),  # csv.Error
    ("gps.csv", b"t,target_id,lat,lon,alt,fix\n0,1.5,48,2,100,4\n", "gps"),  # fractional id silently lost
    ("d.json", b"[" * 100000 + b"]" * 100000, "coco"),  # RecursionError
    ("d.json", b'[{"image_id": 1' + b"0" * 400 + b', "category_id": 1, "bbox": [1, 1, 1, 1], "score": 1}]', "coco"),
    ("d.json", b'[{"image_id": 1, "category_id": 1, "bbox": [1' + b"0" * 400 + b', 1, 1, 1], "score": 1}]', "coco"),
    ("det.txt", b"1e300,1,1,1,1,1\n", "mot"),  # frame beyond int64
    ("train.yaml", b"$\n", "train"),  # overrides applied to a top level that is not a mapping
    ("IR_label.json", b"[" * 100000 + b"]" * 100000, "antiuav"),  # RecursionError
    ("IR_label.json", b'{"gt_rect": [[1' + b"0" * 400 + b', 1, 1, 1]]}', "antiuav"),  # OverflowError
    ("gt.json", b'{"images": [{"id": 1}], "categories": [{"id": 1}], "annotations": [{"image_id": 1, '
                b'"category_id": 1, "bbox": [1' + b"0" * 400 + b', 1, 1, 1]}]}', "coco_gt"),  # OverflowError
])
def test_found_by_fuzzing(tmp_path, name, data, parser):
    from pipeline.evaluation.evaluate import read_coco_results
    from pipeline.io.flight import load_flight
    from pipeline.io.motio import read_mot
    from pipeline.io.telemetry import Telemetry
    from pipeline.settings import load_config

    from pipeline.training.train import load_train_config

    path = put(tmp_path, name, data)
    run = {"flight": lambda: load_flight(tmp_path), "config": lambda: load_config(path),
           "camera": lambda: Telemetry.load(None, path), "gps": lambda: Telemetry.load(path, None),
           "coco": lambda: read_coco_results(path), "mot": lambda: read_mot(path),
           "train": lambda: load_train_config(path, ["optim.steps=3"]),
           "antiuav": lambda: pytest.importorskip("pipeline.io.importers")._read_antiuav_json(path),
           "coco_gt": lambda: pytest.importorskip("pipeline.evaluation.coco").load_coco_gt(path)}[parser]
    with pytest.raises(DronetrackError) as e:
        run()
    assert "\n" not in str(e.value) and str(path.name) in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize("spec", ["¹", "0\n0", "rtsp://h:٣/x"])  # int('¹') crashed; a line break split the message
def test_live_source_found_by_fuzzing(spec):
    from pipeline.io.live import parse_source

    with pytest.raises(DronetrackError) as e:
        parse_source(spec)
    assert "\n" not in str(e.value)
