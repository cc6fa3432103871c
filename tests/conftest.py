"""Shared fixtures: small synthetic flights made once per session, paths to the shared data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DRONETRACK_SHARED", ROOT.parent / "shared")) / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def small_flight(tmp_path_factory) -> Path:
    """A 3 s synthetic flight (seed 7), made once for the whole session; tests must not modify it."""
    from pipeline.synth import generate_flight

    return generate_flight(tmp_path_factory.mktemp("flight") / "f", seed=7, seconds=3.0, drones=2, birds=1)


def make_video(path: Path, frames: int, size=(64, 48), fps: float = 25.0) -> Path:
    """A tiny mp4v video whose frame i has a bright square at x = 2*i and mean level i."""
    import cv2
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(frames):
        img = np.full((size[1], size[0], 3), 40 + i % 100, np.uint8)
        img[10:16, 2 * i % size[0]:2 * i % size[0] + 6] = 255
        w.write(img)
    w.release()
    return path


def make_flight(root: Path, streams: dict[str, tuple[int, float]], extra_yaml: str = "") -> Path:
    """A hand-made flight folder: streams maps name -> (frames, fps); modality = name."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["name: handmade", "streams:"]
    for name, (n, fps) in streams.items():
        make_video(root / f"{name}.mp4", n, fps=fps)
        lines += [f"  {name}:", f"    modality: {name}", f"    video: {name}.mp4", f"    fps: {fps}"]
    (root / "flight.yaml").write_text("\n".join(lines) + "\n" + extra_yaml)
    return root
