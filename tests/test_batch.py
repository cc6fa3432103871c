"""`dronetrack batch`: many flights on local processes or Ray (local mode), outputs identical to
`process` run alone, failed flights reported while the others finish, pooled scores, index.json."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from pipeline.batch import batch, expand_flights, flight_names, pooled_scores
from pipeline.cli import main
from pipeline.errors import DronetrackError
from pipeline.evaluation.evaluate import evaluate_flight
from pipeline.process import process

MOTION = str(Path(__file__).resolve().parent.parent / "configs" / "motion.yaml")
GOOD = ["flights/a", "flights/b"]
TIMING = {"wall_seconds", "frames_per_second", "stage_seconds", "stage_ms_per_frame", "read_seconds", "write_seconds"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """ROOT/flights/{a,b} (1 s synthetic flights), flights/badyaml (a flight.yaml that does not
    validate), flights/corrupt (flight a with its thermal video cut), and ROOT/alone/<name>: each good
    flight run by `process` alone, from ROOT with the relative paths the tests give batch."""
    from pipeline.synth import generate_flight

    root = tmp_path_factory.mktemp("batch")
    for name, seed in (("a", 1), ("b", 2)):
        generate_flight(root / "flights" / name, seed=seed, seconds=1.0, drones=2, birds=0)
    (root / "flights" / "badyaml").mkdir()
    (root / "flights" / "badyaml" / "flight.yaml").write_text("streams: {rgb: 3}\n")
    shutil.copytree(root / "flights" / "a", root / "flights" / "corrupt")
    video = root / "flights" / "corrupt" / "thermal.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size * 2 // 3])
    here = os.getcwd()
    os.chdir(root)
    try:
        for f in GOOD:
            process(f, f"alone/{Path(f).name}", config=MOTION, progress=False)
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def in_root(root, monkeypatch) -> Path:
    monkeypatch.chdir(root)
    return root


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """batch in this process sets torch's threads: give other tests back what they had."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for the module; batch(ray=...) uses an initialized Ray as it is."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield ray
    ray.shutdown()


def assert_same_as_alone(root: Path, out: Path, names=("a", "b")) -> None:
    """tracks/, detections/ and config.yaml byte for byte; summary.json equal but for its timings."""
    for name in names:
        alone, got = root / "alone" / name, out / name
        files = sorted(p.relative_to(alone) for p in alone.rglob("*") if p.is_file())
        assert [str(f) for f in files] == ["config.yaml", "detections/rgb.json", "detections/thermal.json",
                                           "summary.json", "tracks/rgb.txt", "tracks/thermal.txt"]
        for f in files:
            if f.name != "summary.json":
                assert (got / f).read_bytes() == (alone / f).read_bytes(), f"{name}/{f}"
        s_alone, s_got = (json.loads((d / "summary.json").read_text()) for d in (alone, got))
        assert s_got.keys() == s_alone.keys()
        assert {k: v for k, v in s_got.items() if k not in TIMING} == {k: v for k, v in s_alone.items() if k not in TIMING}
        assert s_got["stage_seconds"].keys() == s_alone["stage_seconds"].keys()
        assert s_got["frames"] > 40  # 1 s of 30 + 25 fps: the flight really ran


def test_cli_sequential_evaluate_and_a_failed_flight(in_root, capsys):
    """workers 1 (this process), --evaluate: the good flights as alone, scores as `evaluate`, the broken
    flight reported, exit 2, a table, index.json."""
    code = main(["batch", "flights/a", "flights/badyaml", "flights/b", "--out", "seq", "--config", MOTION,
                 "--workers", "1", "--threads", "1", "--evaluate", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 2
    assert_same_as_alone(in_root, in_root / "seq")
    index = json.loads((in_root / "seq" / "index.json").read_text())
    assert not (in_root / "seq" / "index.json.tmp").exists()
    assert [(f["name"], f["status"]) for f in index["flights"]] == [("a", "ok"), ("badyaml", "failed"), ("b", "ok")]
    bad = index["flights"][1]
    assert "flight.yaml" in bad["error"] and "streams.rgb" in bad["error"] and "\n" not in bad["error"]
    assert index["totals"] == {**index["totals"], "flights": 3, "ok": 2, "failed": 1,
                               "frames": index["flights"][0]["frames"] + index["flights"][2]["frames"]}
    assert index["flights"][0]["outputs"] == ["config.yaml", "detections/rgb.json", "detections/thermal.json",
                                             "scores.json", "summary.json", "tracks/rgb.txt", "tracks/thermal.txt"]
    # the table: a row per flight (the error on its line), a row per flight and stream, pooled rows
    lines = out.splitlines()
    assert any(ln.startswith("badyaml") and "failed" in ln and "streams.rgb" in ln for ln in lines)
    for row in ("a/rgb", "a/thermal", "b/rgb", "b/thermal", "pooled/rgb", "pooled/thermal"):
        assert any(ln.startswith(row + " ") for ln in lines), row
    # scores: what `dronetrack evaluate FLIGHT OUT` gives, in scores.json and index.json
    for i, name in ((0, "a"), (2, "b")):
        ref = evaluate_flight(f"flights/{name}", f"seq/{name}")["streams"]
        ref = {s: {k: v for k, v in m.items() if k != "pr"} for s, m in ref.items()}
        assert json.loads((in_root / "seq" / name / "scores.json").read_text()) == {"streams": ref}
        assert index["flights"][i]["scores"] == ref
    # pooled: the counts add up over flights, so MOTA is 1 - (FN + FP + IDs) / GT of the sums
    for s in ("rgb", "thermal"):
        per = [index["flights"][i]["scores"][s] for i in (0, 2)]
        pooled = index["pooled"][s]
        for k in ("num_objects", "num_misses", "num_false_positives", "num_switches", "num_frames"):
            assert pooled[k] == sum(p[k] for p in per), (s, k)
        errors = sum(p["num_misses"] + p["num_false_positives"] + p["num_switches"] for p in per)
        assert pooled["mota"] == pytest.approx(1 - errors / sum(p["num_objects"] for p in per))
        found = sum(p["num_objects"] - p["num_misses"] for p in per)
        assert pooled["recall"] == pytest.approx(found / sum(p["num_objects"] for p in per))
        assert pooled["num_predictions"] == sum(p["num_predictions"] for p in per)
        assert pooled["flights"] == 2


def test_local_processes(in_root):
    """Two spawned worker processes: outputs identical to `process` alone; a corrupt video fails alone."""
    index = batch(["flights/a", "flights/corrupt", "flights/b"], "pool", config=MOTION, workers=2, progress=False)
    assert index["run"]["mode"] == "local" and index["run"]["workers"] == 2 and index["run"]["threads"] == 1
    assert [f["status"] for f in index["flights"]] == ["ok", "failed", "ok"]
    corrupt = index["flights"][1]
    assert "thermal.mp4" in corrupt["error"]
    assert "\n" not in corrupt["error"]
    assert_same_as_alone(in_root, in_root / "pool")


def test_ray_local(in_root, ray_local):
    """One Ray task per flight on the module's local Ray: outputs identical, a failed flight reported."""
    index = batch(["flights/a", "flights/badyaml", "flights/b"], "ray", config=MOTION, ray="local", progress=False)
    assert index["run"]["mode"] == "ray"
    assert [f["status"] for f in index["flights"]] == ["ok", "failed", "ok"]
    assert "streams.rgb" in index["flights"][1]["error"]
    assert ray_local.is_initialized()  # the caller's Ray is left running
    assert all(f["ray_node"] for f in index["flights"] if f["status"] == "ok")
    assert_same_as_alone(in_root, in_root / "ray")


def test_missing_ray_is_one_line(in_root, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(DronetrackError, match=r"pip install -e '\.\[cluster\]'"):
        batch(["flights/a"], "noray", config=MOTION, ray="local", progress=False)
    code = main(["batch", "flights/a", "--out", "noray", "--ray", "auto", "--config", MOTION, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "[cluster]" in err and "Traceback" not in err
    assert not (in_root / "noray").exists()  # nothing written


def test_unreachable_head_and_cluster_workers(in_root):
    """A head address nothing answers on fails at once (not after Ray's retries); --workers is local."""
    from pipeline.batch import _check_reachable  # what batch runs before ray.init on an address

    with pytest.raises(DronetrackError, match="cannot reach the Ray head at 127.0.0.1:9"):
        _check_reachable("127.0.0.1:9")
    _check_reachable("auto")  # left to Ray
    with pytest.raises(DronetrackError, match="--workers is for local runs"):
        batch(["flights/a"], "nohead", config=MOTION, ray="auto", workers=2, progress=False)
    assert not (in_root / "nohead").exists()


def test_overrides_and_bad_config_stop_before_any_flight(in_root, capsys):
    """KEY=VALUE words among the flights are overrides; a bad one is one line, exit 2, nothing run."""
    code = main(["batch", "flights/a", "tracker.no_such_key=1", "--out", "badcfg", "--config", MOTION, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no_such_key" in err and len(err.strip().splitlines()) == 1
    assert not (in_root / "badcfg" / "a").exists()
    assert main(["batch", "--out", "noflight"]) == 2 and "no FLIGHT given" in capsys.readouterr().err


def test_video_file_is_processed_not_scored(tmp_path, monkeypatch):
    """A single video file is a flight as for `process` (named by its stem); --evaluate has nothing to
    score there and says so, without failing it."""
    from conftest import make_video

    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "clip.mp4", 12)
    index = batch(["clip.mp4"], "vid", config=MOTION, workers=1, threads=1, evaluate=True, modality="thermal",
                  progress=False)
    f = index["flights"][0]
    assert (f["name"], f["status"], f["frames"], f["scores"]) == ("clip", "ok", 12, None)
    assert "no ground truth" in f["note"] and index["pooled"] == {}
    assert (tmp_path / "vid" / "clip" / "tracks" / "thermal.txt").is_file()


def test_expand_and_names(tmp_path):
    for p in ("set1/x", "set1/y", "set2/x", "deep/test/s1", "deep/test/s1/inner", "deep/val/s2"):
        (tmp_path / p).mkdir(parents=True)
        (tmp_path / p / "flight.yaml").write_text("streams: {}\n")
    (tmp_path / "set1" / "notes").mkdir()  # not a flight: left out of the expansion
    args = [str(tmp_path / "set1"), str(tmp_path / "set2" / "x"), str(tmp_path / "set1" / "x"), "clip.mp4",
            str(tmp_path / "missing")]
    flights = expand_flights(args)
    assert flights == [str(tmp_path / "set1" / "x"), str(tmp_path / "set1" / "y"), str(tmp_path / "set2" / "x"),
                       "clip.mp4", str(tmp_path / "missing")]  # set1/x given twice: once
    assert flight_names(flights) == ["x", "y", "x_2", "clip", "missing"]
    # flight folders at any depth, not inside a flight folder (an import's OUT/<split>/<sequence>/)
    assert expand_flights([str(tmp_path / "deep")]) == [str(tmp_path / "deep" / "test" / "s1"),
                                                         str(tmp_path / "deep" / "val" / "s2")]


def test_pooled_over_one_flight_is_that_flight(root):
    """pooled_scores of a single flight's rows = evaluate_flight on it (the rows and metrics agree)."""
    from pipeline.batch import _score

    out = root / "pool1"
    shutil.copytree(root / "alone" / "a", out)
    got = _score(str(root / "flights" / "a"), str(out), 0.5)
    pooled = pooled_scores([got["pool"]])
    for s, m in got["scores"].items():
        assert {k: v for k, v in pooled[s].items() if k != "flights"} == pytest.approx(m)
