"""The command line end to end: bad input gives one line and exit 2; outputs and scores on a small
synthetic flight."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import make_flight
from pipeline.cli import main


def run_cli(*args, timeout=300):
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_path(tmp_path):
    code, _, err = run_cli("process", tmp_path / "nope", "--out", tmp_path / "o")
    assert_one_line_error(code, err, "nope", "no such")


def test_truncated_video(tmp_path):
    root = make_flight(tmp_path / "f", {"thermal": (60, 25.0)})
    data = (root / "thermal.mp4").read_bytes()
    (root / "thermal.mp4").write_bytes(data[: len(data) * 2 // 3])
    code, _, err = run_cli("process", root, "--out", tmp_path / "o", "--no-progress")
    assert_one_line_error(code, err, "thermal.mp4")


def test_unknown_key_in_flight_yaml(tmp_path):
    root = make_flight(tmp_path / "f", {"thermal": (5, 25.0)}, extra_yaml="wind_speed: 3\n")
    code, _, err = run_cli("process", root, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "flight.yaml", "wind_speed")


@pytest.mark.parametrize("bad, line, words", [
    ("0,48,2,100,0,5,0\n1,48,nan,100,0,5,0\n", 3, "NaN"),
    ("0,48,2,100,0,5,0\n2,48,2,100,0,5,0\n1,48,2,100,0,5,0\n", 4, "backwards"),
])
def test_bad_telemetry(tmp_path, bad, line, words):
    root = make_flight(tmp_path / "f", {"thermal": (5, 25.0)}, extra_yaml="telemetry:\n  camera: camera.csv\n")
    (root / "camera.csv").write_text("t,lat,lon,alt,pan,tilt,roll\n" + bad)
    code, _, err = run_cli("process", root, "--out", tmp_path / "o")
    assert_one_line_error(code, err, f"camera.csv:{line}:", words)


def test_malformed_detection_line(tmp_path):
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,10,5,5,0.9,-1,-1,-1\n2,-1,10,abc,5,5,0.9,-1,-1,-1\n")
    code, _, err = run_cli("track", "--detections", det, "--out", tmp_path / "t.txt")
    assert_one_line_error(code, err, f"{det}:2:")


def test_empty_detection_file_is_fine(tmp_path):
    det = tmp_path / "det.txt"
    det.write_text("")
    assert main(["track", "--detections", str(det), "--out", str(tmp_path / "t.txt")]) == 0
    assert (tmp_path / "t.txt").read_text() == ""


def test_bad_config_override(tmp_path, small_flight):
    code, _, err = run_cli("process", small_flight, "--out", tmp_path / "o", "tracker.nonsense=1")
    assert_one_line_error(code, err, "tracker.nonsense")


def test_ground_truth_round_trip(tmp_path, small_flight):
    """Ground-truth boxes fed as detections: MOTA >= 0.99 and no id switch, in both streams."""
    for stream in ("rgb", "thermal"):
        tracks = tmp_path / f"{stream}.txt"
        assert main(["track", "--detections", str(small_flight / "gt" / f"{stream}.txt"), "--out", str(tracks)]) == 0
        out = tmp_path / f"{stream}.json"
        assert main(["evaluate", "--gt", str(small_flight / "gt" / f"{stream}.txt"), "--tracks", str(tracks),
                     "--json", str(out)]) == 0
        scores = next(iter(json.loads(out.read_text())["streams"].values()))
        assert scores["mota"] >= 0.99 and scores["num_switches"] == 0, (stream, scores)


def test_process_and_evaluate_flight(tmp_path, small_flight):
    out = tmp_path / "out"
    assert main(["process", str(small_flight), "--out", str(out), "--annotate", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["frames_per_stream"]) == {"rgb", "thermal"}
    assert summary["frames_per_stream"]["rgb"] == 90 and summary["frames_per_stream"]["thermal"] == 75
    assert summary["frames_per_second"] > 0 and {"detector", "tracker"} <= set(summary["stage_seconds"])
    for s in ("rgb", "thermal"):
        assert (out / "tracks" / f"{s}.txt").exists()
        assert isinstance(json.loads((out / "detections" / f"{s}.json").read_text()), list)
        assert (out / "annotated" / f"{s}.mp4").stat().st_size > 1000
    res = tmp_path / "scores.json"
    assert main(["evaluate", str(small_flight), str(out), "--json", str(res)]) == 0
    scores = json.loads(res.read_text())["streams"]
    assert set(scores) == {"rgb", "thermal"}
    for s in scores.values():
        assert {"mota", "idf1", "ap50_11pt", "ap50_all", "coco_ap"} <= set(s)
        assert s["recall"] > 0.2  # the motion baseline finds a good share of drones even in 3 s


def test_device_option(tmp_path, small_flight):
    import torch
    import yaml

    out = tmp_path / "o"
    assert main(["process", str(small_flight), "--out", str(out), "--config", "configs/wildcat_full.yaml",
                 "--device", "cpu", "--max-frames", "2", "--no-progress"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["detector"]["device"] == "cpu"
    code, _, err = run_cli("process", small_flight, "--out", tmp_path / "p", "--device", "gpu")
    assert code == 2 and "'gpu' is not auto, cpu, cuda or cuda:N" in err
    if not torch.cuda.is_available():
        code, _, err = run_cli("process", small_flight, "--out", tmp_path / "q", "--config",
                               "configs/wildcat_full.yaml", "--device", "cuda")
        assert_one_line_error(code, err, "detector.device", "no CUDA")
