import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.io.flight import Calibration, PresenceWindow, TelemetrySpec, load_flight
from pipeline.geometry.camera import enu_to_geodetic
from pipeline.io.motio import read_mot
from pipeline.io.telemetry import Telemetry
from pipeline.types import TargetState, TelemetrySample
from pipeline.training.weak_labels import (ABSENT, PRESENT, UNKNOWN, LabelConfig, agreement, frame_label, frame_times,
                                  presence_labels, window_labels)

REF = (45.0, 5.0, 200.0)
CAL = Calibration(fx=800.0, fy=800.0, cx=320.0, cy=256.0)
CAMERA = {"lat": REF[0], "lon": REF[1], "alt": REF[2], "pan": 0.0, "tilt": 0.0, "roll": 0.0}


class TwoTargets:
    """Stands for a Telemetry whose log holds targets 1 and 2 (frame_label only counts them)."""

    targets = {1: None, 2: None}


def target(tid: int, east: float, north: float, up: float = 0.0) -> TargetState:
    lat, lon, alt = enu_to_geodetic([east, north, up], REF)
    return TargetState(tid, float(lat), float(lon), float(alt), 4)


def label(*targets: TargetState, camera=CAMERA, cfg=LabelConfig()) -> int:
    return frame_label(TelemetrySample(0.0, camera, list(targets)), TwoTargets(), CAL, (640, 512), cfg)


def test_frame_label_by_hand():
    assert label(target(1, 0, 100), target(2, 0, -100)) == PRESENT      # straight ahead
    assert label(target(1, 0, -100), target(2, 100, 0)) == ABSENT       # behind, 90 deg right
    # u = 320 + 800 * 25 / 100 = 520 inside; 45 / 100 -> 680, outside by 40 px; the 0.6 m drone's half is 2.4 px
    assert label(target(1, 25, 100), target(2, 0, -100)) == PRESENT
    assert label(target(1, 45, 100), target(2, 0, -100)) == ABSENT
    assert label(target(1, 45, 100), target(2, 0, -100), cfg=LabelConfig(margin_px=41.0)) == PRESENT
    assert label(target(1, 45, 100), target(2, 0, -100), cfg=LabelConfig(drone_size_m=10.2)) == PRESENT  # 40.8 px
    # target 2 unknown (a gap): unknown unless target 1 is seen anyway
    assert label(target(1, 0, -100)) == UNKNOWN and label(target(1, 0, 100)) == PRESENT
    assert label(target(1, 0, 100), target(2, 0, 100), camera=None) == UNKNOWN  # no pose
    assert frame_label(TelemetrySample(0.0, CAMERA, [target(1, 0, 100)]), TwoTargets(), None, (640, 512),
                       LabelConfig()) == UNKNOWN  # no calibration


def gt_presence(flight, stream: str, n: int) -> np.ndarray:
    out = np.zeros(n, np.int8)
    out[read_mot(flight.gt_path(stream))[:, 0].astype(int) - 1] = 1
    return out


@pytest.mark.parametrize("stream", ["rgb", "thermal"])
def test_labels_agree_with_synthetic_ground_truth(small_flight, stream):
    flight = load_flight(small_flight)
    times = frame_times(flight, stream)
    labels = presence_labels(flight, stream)
    gt = gt_presence(flight, stream, len(times))
    assert len(labels) == len(times) and set(np.unique(labels)) <= {UNKNOWN, ABSENT, PRESENT}
    assert {0, 1} <= set(gt.tolist()) and {ABSENT, PRESENT} <= set(labels.tolist())  # both kinds of frame
    rate, n = agreement(labels, gt)
    windows = window_labels(flight, stream, times)
    print(f"{stream}: {n} of {len(labels)} frames known, agreement with ground truth {rate:.4f}, "
          f"with flight.yaml windows {agreement(labels, windows)[0]:.4f}")
    assert n == len(labels) and rate >= 0.97
    assert np.array_equal(windows, gt)  # the generator's windows are the ground truth's runs
    assert agreement(1 - labels, gt)[0] < 0.1  # inverted labels fail: the check can fail


def test_unknown_without_pose_log_in_gaps_and_outside_the_logs(small_flight):
    flight = load_flight(small_flight)
    times = frame_times(flight, "rgb")
    gps, cam = flight.path("telemetry/gps_rtk.csv"), flight.path("telemetry/camera.csv")
    no_pose = Telemetry.load(gps, None)
    assert (presence_labels(flight, "rgb", telemetry=no_pose, times=times) == UNKNOWN).all()
    bare = dataclasses.replace(flight, spec=dataclasses.replace(flight.spec, telemetry=TelemetrySpec()))
    assert (presence_labels(bare, "rgb", times=times) == UNKNOWN).all()
    late = Telemetry.load(gps, cam, clock_offset=10.0)  # telemetry starts 10 s after the video
    assert (presence_labels(flight, "rgb", telemetry=late, times=times) == UNKNOWN).all()
    # the turret log loses 1.0 .. 2.0 s (a gap longer than max_gap 0.5 s): unknown there only
    lines = cam.read_text().splitlines()
    holed = small_flight.parent / "holed.csv"
    holed.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if not 1.0 < float(ln.split(",")[0]) < 2.0]) + "\n")
    labels = presence_labels(flight, "rgb", telemetry=Telemetry.load(gps, holed, max_gap=0.5), times=times)
    inside = (times > 1.0) & (times < 2.0)
    assert (labels[inside] == UNKNOWN).all() and (labels[~inside] != UNKNOWN).all()
    assert np.array_equal(labels[~inside], presence_labels(flight, "rgb", times=times)[~inside])


def test_window_labels_and_agreement():
    flight = SimpleNamespace(spec=SimpleNamespace(presence=[PresenceWindow("rgb", 1, 1.0, 2.0),
                                                            PresenceWindow("rgb", 2, 3.0, 3.0)]))
    times = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert window_labels(flight, "rgb", times).tolist() == [0, 1, 1, 1, 0, 1]
    assert window_labels(flight, "thermal", times) is None
    assert agreement(np.array([1, -1, 0, 0]), np.array([1, 0, 1, 0])) == (pytest.approx(2 / 3), 3)
    assert np.isnan(agreement(np.array([-1]), np.array([1]))[0])
