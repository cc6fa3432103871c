import math
from dataclasses import replace

import numpy as np
import pytest

from pipeline.config import from_dict
from pipeline.errors import ConfigError
from pipeline.io.flight import Calibration, load_flight
from pipeline.geometry.camera import CameraPose
from pipeline.io.motio import read_mot
from pipeline.geometry.search_region import SearchConfig, search_box, search_boxes_for_frame, turn_rate
from pipeline.io.telemetry import Telemetry, load_flight_telemetry
from pipeline.training.weak_labels import frame_times

CAL = Calibration(fx=800.0, fy=800.0, cx=320.0, cy=256.0)
SIZE = (640, 512)
PLAIN = SearchConfig(pose_error_deg=0.0, timing_error_s=0.0, drone_size_m=1.0, min_box_px=0.0, margin=2.0,
                     vertical_factor=2.0)
NORTH = [0.0, 100.0, 0.0]
STILL = [0.0, 0.0, 0.0]


def box(target=NORTH, vel=STILL, rtk=0.5, cfg=PLAIN, rate=0.0, pose=CameraPose()):
    return search_box(np.array(target), np.array(vel), rtk, pose, CAL, SIZE, cfg, rate)


def test_box_computed_by_hand():
    # 100 m ahead: 800 / 100 = 8 px per metre. Half the 1 m drone: 4 px.
    # x (horizontal): RTK 0.5 m -> 4 px, times margin 2 -> 8; half width 12 -> 308..332
    # y (vertical): RTK 0.5 m * vertical factor 2 = 1 m -> 8 px, times 2 -> 16; half height 20 -> 236..276
    assert box() == pytest.approx((308, 236, 332, 276))
    # pose error 0.5 deg -> 800 tan(0.5 deg) = 6.98143 px, in quadrature with the RTK term:
    # half width 4 + 2 hypot(4, 6.98143) = 20.0921, half height 4 + 2 hypot(8, 6.98143) = 25.2357
    cfg = replace(PLAIN, pose_error_deg=0.5)
    assert box(cfg=cfg) == pytest.approx((320 - 20.0921, 256 - 25.2357, 320 + 20.0921, 256 + 25.2357), abs=1e-3)
    # timing error 0.1 s of a drone flying east at 10 m/s: +-1 m = +-8 px along x only
    cfg = replace(PLAIN, timing_error_s=0.1)
    assert box(vel=[10.0, 0, 0], cfg=cfg) == pytest.approx((300, 236, 340, 276))
    # ... and the turret turning at 20 deg/s over those 0.1 s: 800 tan(2 deg) = 27.9365 px more on every side
    assert box(cfg=cfg, rate=20.0) == pytest.approx((308 - 27.9365, 236 - 27.9365, 332 + 27.9365, 276 + 27.9365),
                                                    abs=1e-3)
    # at 200 m every metric term halves: half width 6, half height 10
    assert box(target=[0, 200, 0]) == pytest.approx((314, 246, 326, 266))
    # the smallest side
    cfg = replace(PLAIN, min_box_px=64.0)
    assert box(cfg=cfg) == pytest.approx((288, 224, 352, 288))  # 24 x 40 grown to 64 x 64 about its centre


def test_worse_fix_bigger_box_clipping_and_none():
    cfg = SearchConfig()
    widths = [box(rtk=cfg.rtk_error(f), cfg=cfg) for f in (4, 5, 1, 7)]
    w = [b[2] - b[0] for b in widths]
    assert w[0] < w[1] < w[2] < w[3] and cfg.rtk_error(7) == cfg.unknown_fix_error_m
    # centre at u = 320 + 800 * 38.75 / 100 = 630: the box 618..642 is clipped at the right edge
    assert box(target=[38.75, 100, 0]) == pytest.approx((618, 236, 640, 276))
    assert box(target=[0, -100, 0]) is None                 # behind the camera
    assert box(target=[100, 100, 0]) is None                # 45 deg right: u = 1120, the box misses the image
    assert box(target=[0, 0.5, 0]) is None                  # nearer than min_depth_m
    assert box(target=[100, 0, 0], pose=CameraPose(pan=90)) == pytest.approx((308, 236, 332, 276))


def test_config_is_validated():
    with pytest.raises(ConfigError, match="search.margin"):
        from_dict(SearchConfig, {"margin": 0}, "search")
    with pytest.raises(ConfigError, match="search.rtk_error_m"):
        from_dict(SearchConfig, {"rtk_error_m": {4: -1.0}}, "search")
    assert from_dict(SearchConfig, {"rtk_error_m": {4: 0.05}}, "").rtk_error(4) == 0.05


def containment(flight, stream: str, tel: Telemetry, cfg: SearchConfig) -> tuple[float, float, int]:
    """Share of ground-truth boxes inside their target's search box, median box area / frame area, count."""
    spec = flight.streams[stream]
    times = frame_times(flight, stream)
    inside, areas = [], []
    for f, tid, x, y, w, h in read_mot(flight.gt_path(stream))[:, :6]:
        boxes = search_boxes_for_frame(tel.sample(times[int(f) - 1]), tel, spec, cfg)
        assert boxes is not None  # the synthetic logs cover every frame
        b = dict(boxes)[int(tid)]
        inside.append(b is not None and b[0] <= x and b[1] <= y and b[2] >= x + w and b[3] >= y + h)
        if b is not None:
            areas.append((b[2] - b[0]) * (b[3] - b[1]) / (spec.width * spec.height))
    return float(np.mean(inside)), float(np.median(areas)), len(inside)


@pytest.mark.parametrize("stream, max_area", [("rgb", 0.02), ("thermal", 0.03)])
def test_search_boxes_contain_synthetic_ground_truth(small_flight, stream, max_area):
    flight = load_flight(small_flight)
    tel = load_flight_telemetry(flight)
    rate, area, n = containment(flight, stream, tel, SearchConfig())
    print(f"{stream}: {n} boxes, containment {rate:.4f}, median area {area:.4f} of the frame")
    assert n > 40 and rate >= 0.99 and area < max_area
    # the check can fail: without the error terms the box is too small for the drone
    tight = SearchConfig(drone_size_m=0.05, margin=0.01, pose_error_deg=0.0, timing_error_s=0.0, min_box_px=0.0)
    assert containment(flight, stream, tel, tight)[0] < 0.5


def test_whole_frame_when_pose_or_a_target_is_unknown(small_flight):
    flight = load_flight(small_flight)
    spec = flight.streams["rgb"]
    gps, cam = flight.path("telemetry/gps_rtk.csv"), flight.path("telemetry/camera.csv")
    full = Telemetry.load(gps, cam)
    assert search_boxes_for_frame(full.sample(1.0), full, spec, SearchConfig()) is not None
    no_pose = Telemetry.load(gps, None)
    assert search_boxes_for_frame(no_pose.sample(1.0), no_pose, spec, SearchConfig()) is None
    no_target = Telemetry.load(None, cam)
    assert search_boxes_for_frame(no_target.sample(1.0), no_target, spec, SearchConfig()) == []
    # target 1's log without its samples from 0.4 to 1.6 s: a gap longer than max_gap (1 s), unknown inside
    lines = gps.read_text().splitlines()
    keep = [ln for ln in lines[1:] if ln.split(",")[1] != "1" or not 0.4 < float(ln.split(",")[0]) < 1.6]
    thin = small_flight.parent / "thin.csv"
    thin.write_text("\n".join([lines[0]] + keep) + "\n")
    gap = Telemetry.load(thin, cam)
    assert {s.target_id for s in gap.sample(1.0).targets} == {2}
    assert search_boxes_for_frame(gap.sample(1.0), gap, spec, SearchConfig()) is None


def test_turn_rate_matches_the_pan_log(tmp_path):
    cam = tmp_path / "c.csv"
    cam.write_text("t,lat,lon,alt,pan,tilt,roll\n0,45,5,100,350,0,0\n1,45,5,100,20,0,0\n")
    tel = Telemetry.load(None, cam)
    assert turn_rate(tel, 0.5, 0.1) == pytest.approx(30.0, rel=1e-6)  # 350 -> 20 through north: 30 deg/s
    assert turn_rate(tel, 0.05, 0.1) == 0.0  # t - dt outside the log: unknown, no extra margin
    assert math.isclose(turn_rate(tel, 0.5, 0.5), 30.0, rel_tol=1e-6)
