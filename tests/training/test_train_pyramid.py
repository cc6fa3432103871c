"""`dronetrack train` with the pyramid detector on synthetic flights and Svanstrom-like clips: held-out test
clips never reach training or validation, whatever the clip selection; the checkpoint runs in `process`."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from detectors.checkpoint import load_checkpoint
from pipeline.cli import main
from pipeline.io.svanstrom import import_svanstrom
from pipeline.training.train import SvanstromData, select_clips, svanstrom_split

HEADER = "video,sensor,label,frames,labelled_frames,width,height,fps\n"


def make_clip(src: Path, name: str, frames: int = 8) -> str:
    """A Svanstrom-like clip: a bright 8 x 6 square moving on a dark background, labelled in every frame."""
    sensor, label = name.split("_")[0].lower(), name.split("_")[1].lower()
    folder = src / ("ir" if sensor == "ir" else "visible")
    folder.mkdir(parents=True, exist_ok=True)
    w, h = (96, 80) if sensor == "ir" else (128, 96)
    out = cv2.VideoWriter(str(folder / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    rows = []
    for i in range(1, frames + 1):
        img = np.full((h, w, 3), 50, np.uint8)
        x, y = 10 + 3 * i, 20 + i
        img[y:y + 6, x:x + 8] = 235
        out.write(img)
        rows.append(f"{i},{x},{y},8,6,{label}\n")
    out.release()
    (folder / f"{name}.csv").write_text("frame,x,y,w,h,label\n" + "".join(rows))
    return f"{folder.name}/{name}.mp4,{sensor},{label},{frames},{frames},{w},{h},30\n"


@pytest.fixture(scope="module")
def svanstrom_like(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("svanstrom")
    names = [f"IR_DRONE_{i:03d}" for i in range(1, 6)] + [f"IR_BIRD_{i:03d}" for i in range(1, 4)] \
        + [f"V_DRONE_{i:03d}" for i in range(1, 5)]
    (src / "index.csv").write_text(HEADER + "".join(make_clip(src, n) for n in names))
    return src


@pytest.fixture(scope="module")
def pyramid_run(tmp_path_factory, small_flight, svanstrom_like):
    root = tmp_path_factory.mktemp("train_pyramid")
    cache = root / "cache"
    (cache / "synth").mkdir(parents=True)
    (cache / "synth" / "seed7_3s_2d_1b").symlink_to(small_flight, target_is_directory=True)
    cfg = {"out": str(root / "run"), "export": str(root / "shipped.pt"), "threads": 1, "model": "pyramid",
           "pyramid": {"widths": [4, 8, 8, 16, 16], "blocks": [0, 1, 1, 1, 0], "fpn": 8, "head": 8},
           "scale": {"size_range": [3, 60]},
           "data": {"cache": str(cache), "every": 2, "val_every": 4, "crop": 64,
                    "synthetic": {"seeds": [7], "seconds": 3.0, "drones": 2, "birds": 1},
                    "svanstrom": {"root": str(svanstrom_like), "sensors": ["ir", "v"], "test_fraction": 0.25}},
           "optim": {"steps": 4, "batch_size": 2, "eval_every": 2, "warmup_steps": 1}}
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    return root, cache, svanstrom_like


def test_held_out_clips_are_never_trained_or_validated_on(pyramid_run):
    root, cache, src = pyramid_run
    converted = import_svanstrom(src, cache / "svanstrom")
    _, test = svanstrom_split(converted, SvanstromData(root=str(src), test_fraction=0.25))
    test_names = {p.name for p in test}
    assert sorted(n.rsplit("_", 1)[0] for n in test_names) == ["IR_BIRD", "IR_DRONE", "V_DRONE"]  # one a stratum
    log = (root / "run" / "log.txt").read_text()
    first = log.splitlines()[0]
    n_train, n_val = int(first.split()[0]), int(first.split(", ")[1].split()[0])
    assert n_train + n_val == 12 - 3 + 1  # the 12 clips but the 3 held out, and the synthetic flight
    val = set(first.split(": ", 1)[1].split(", "))
    assert not val & test_names
    # a narrower selection (one sensor, a few clips) holds out the same test clips
    narrow = SvanstromData(root=str(src), sensors=["ir"], labels=["drone"], max_clips=2, test_fraction=0.25)
    kept, held = svanstrom_split(converted, narrow)
    assert {p.name for p in held} == test_names
    assert not {p.name for p in select_clips(kept, narrow)} & test_names


def test_pyramid_checkpoint_exports_and_runs_in_process(pyramid_run, small_flight, tmp_path, capsys):
    root, _, _ = pyramid_run
    last = load_checkpoint(root / "run" / "last.pt")
    assert last["kind"] == "pyramid" and last["step"] == 4
    assert last["config"]["weights"] is None and last["classes"] == ["drone", "bird", "airplane", "helicopter"]
    assert {"ap50_thermal", "ap50_rgb", "score"} <= set(last["val"])
    shipped = load_checkpoint(root / "shipped.pt")
    assert all(v.dtype == torch.float16 for v in shipped["state_dict"].values() if v.is_floating_point())
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"detector": {"kind": "pyramid", "checkpoint": str(root / "shipped.pt"),
                                                "device": "cpu"}}))
    out = tmp_path / "out"
    assert main(["process", str(small_flight), "--out", str(out), "--config", str(cfg), "--no-progress",
                 "--max-frames", "8"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] > 8 and summary["stage_ms_per_frame"]["detector"] > 0


def test_bad_svanstrom_selection_names_the_key(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"out": str(tmp_path / "o"), "model": "pyramid",
                                    "data": {"synthetic": None, "svanstrom": {"test_fraction": 1.5}}}))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.svanstrom.test_fraction" in err[0]
