"""Camera motion from the turret's pose log (CameraMotionStage, source: pose) against the geometry."""
from __future__ import annotations

import numpy as np

from detectors.camera_motion import CameraMotionConfig
from pipeline.io.flight import load_flight
from pipeline.geometry.camera import pixel_rays, project_enu
from pipeline.geometry.search_region import turret_pose
from pipeline.io.sources import FlightSource
from pipeline.stages import CameraMotionStage


def run_stage(flight_dir, source: str, telemetry: bool = True, frames: int = 1000):
    flight = load_flight(flight_dir)
    src = FlightSource(flight, telemetry=telemetry)
    stage = CameraMotionStage(CameraMotionConfig(source=source))
    stage.bind(src)
    out = []
    for i, b in enumerate(src):
        if i == frames:
            break
        out.append((dict(b.frame_ids), dict(stage(b).homographies)))
    return flight, src, stage, out


def test_pose_homography_moves_pixels_as_the_geometry_does(small_flight):
    flight, src, stage, out = run_stage(small_flight, "pose")
    clocks = {r.name: r.time_of for r in src.readers}
    moved, checked = 0.0, 0
    for stream, spec in flight.streams.items():
        cal = spec.calibration
        grid = np.array([[cal.cx + dx, cal.cy + dy] for dx in (-40, 0, 40) for dy in (-30, 0, 30)], float)
        previous = None
        for ids, homs in out:
            if stream not in ids:
                continue
            frame = ids[stream]
            pose = turret_pose(src.telemetry.camera_at(clocks[stream](frame)))[0]
            h = homs[stream]
            if previous is None:
                assert h is None  # the first frame has no previous one
            else:
                far = pixel_rays(grid, previous, cal) * 5000.0  # scene points far along the rays
                expected, ok = project_enu(far, pose, cal)
                mapped = np.c_[grid, np.ones(len(grid))] @ h.T
                mapped = mapped[:, :2] / mapped[:, 2:]
                assert ok.all()
                assert np.abs(mapped - expected).max() < 0.3  # distortion near the centre neglected
                moved = max(moved, float(np.abs(expected - grid).max()))
                checked += 1
            previous = pose
    assert checked >= 40
    assert moved > 1.0  # the turret does move in this flight: the check is not on identities
    assert stage.report()["camera_motion"]["thermal"]["pose"] == sum("thermal" in i for i, _ in out) - 1
    assert stage.report()["camera_motion"]["thermal"]["image"] == 0


def test_without_a_pose_log_the_images_give_the_motion(small_flight):
    _, _, stage, out = run_stage(small_flight, "pose", telemetry=False, frames=10)
    counts = stage.report()["camera_motion"]
    assert all(c["pose"] == 0 and c["image"] > 0 for c in counts.values())
    assert any(h is not None for _, homs in out for h in homs.values())


def test_image_source_reports_nothing(small_flight):
    _, _, stage, _ = run_stage(small_flight, "image", frames=3)
    assert stage.report() == {}
