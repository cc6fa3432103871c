"""`dronetrack train` end to end on a tiny synthetic flight, checkpoints (resume, export, bad files),
and the DP-FCN detector inside `dronetrack process`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from detectors.checkpoint import load_checkpoint
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.models import load_model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, small_flight):
    """A 4-step training of a tiny DP-FCN on the 3 s test flight (split: the flight itself twice)."""
    root = tmp_path_factory.mktemp("train")
    cache = root / "cache"
    (cache / "synth").mkdir(parents=True)
    for seed in (7, 8):  # prepare_flights looks for its own folder names: link the session's flight twice
        (cache / "synth" / f"seed{seed}_3s_2d_1b").symlink_to(small_flight, target_is_directory=True)
    cfg = {"out": str(root / "run"), "export": str(root / "shipped.pt"), "threads": 1,
           "dpfcn": {"backbone": {"width": 0.125, "output_stride": 16}, "classes": ["drone"]},
           "data": {"cache": str(cache), "svanstrom": None, "every": 10, "val_every": 30, "crop": 96,
                    "synthetic": {"seeds": [7, 8], "seconds": 3.0, "drones": 2, "birds": 1}},
           "optim": {"steps": 4, "batch_size": 2, "eval_every": 2, "warmup_steps": 1}}
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    return root, path


def test_training_writes_checkpoints_that_resume_and_export(tiny_run):
    root, path = tiny_run
    last = load_checkpoint(root / "run" / "last.pt")
    assert last["kind"] == "dpfcn" and last["step"] == 4 and last["classes"] == ["drone"]
    assert "optimizer" in last and {"ap50_thermal", "ap50_rgb", "score"} <= set(last["val"])
    assert last["config"]["backbone"]["weights"] is None
    shipped = load_checkpoint(root / "shipped.pt")
    assert "optimizer" not in shipped
    assert all(v.dtype == torch.float16 for v in shipped["state_dict"].values() if v.is_floating_point())
    model, _ = load_model(root / "shipped.pt", "dpfcn")
    assert not model.training
    log = (root / "run" / "log.txt").read_text()
    assert main(["train", str(path), "--resume", "optim.steps=6"]) == 0
    assert load_checkpoint(root / "run" / "last.pt")["step"] == 6
    assert "resumed at step 4" in (root / "run" / "log.txt").read_text()[len(log):]


def test_bad_checkpoints_are_one_line_errors(tmp_path, tiny_run, capsys):
    root, _ = tiny_run
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable checkpoint"):
        load_model(garbage)
    with pytest.raises(InputError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="not a dronetrack checkpoint"):
        load_model(foreign)
    ckpt = load_checkpoint(root / "shipped.pt")
    ckpt["config"]["k"] = 5  # another architecture: the weights no longer fit
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(InputError, match="weights do not fit"):
        load_model(tmp_path / "other.pt")
    ckpt["config"]["nonsense"] = 1
    torch.save(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(InputError, match="dpfcn.nonsense: unknown key"):
        load_model(tmp_path / "unknown.pt")


def test_process_with_a_dpfcn_checkpoint(tmp_path, tiny_run, small_flight, capsys):
    root, _ = tiny_run
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"detector": {"kind": "dpfcn", "checkpoint": str(root / "shipped.pt"),
                                                "device": "cpu"}}))
    out = tmp_path / "out"
    assert main(["process", str(small_flight), "--out", str(out), "--config", str(cfg), "--no-progress",
                 "--max-frames", "10"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] > 10 and summary["stage_ms_per_frame"]["detector"] > 0
    assert (out / "detections" / "thermal.json").read_text().startswith("[")
    assert main(["process", str(small_flight), "--out", str(out), "--config", str(cfg), "--no-progress",
                 "detector.checkpoint=" + str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pt" in err[0]
