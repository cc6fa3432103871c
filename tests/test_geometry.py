import math

import numpy as np
import pytest

from pipeline.flight import Calibration
from pipeline.geometry import (CameraPose, camera_rotation, direction_to_pan_tilt, enu_to_geodetic,
                               geodetic_to_enu, max_valid_radius, pixel_rays, project_enu)

REF = (48.7128, 2.2087, 150.0)
CAL = Calibration(fx=800.0, fy=820.0, cx=320.0, cy=256.0)


def test_enu_round_trip_is_exact_to_a_tenth_of_a_millimetre():
    rng = np.random.default_rng(0)
    enu = rng.uniform(-20000, 20000, (200, 3))
    lat, lon, alt = enu_to_geodetic(enu, REF)
    assert np.abs(geodetic_to_enu(lat, lon, alt, REF) - enu).max() < 1e-4


def test_enu_matches_hand_formulas():
    assert np.allclose(geodetic_to_enu(*REF, REF), 0, atol=1e-9)
    assert np.allclose(geodetic_to_enu(REF[0], REF[1], REF[2] + 100, REF), [0, 0, 100], atol=1e-6)
    # same latitude and height, 0.01 degree further east: the chord in the reference's ENU frame
    a, e2 = 6378137.0, 6.69437999014e-3
    phi, dl = math.radians(REF[0]), math.radians(0.01)
    rad = (a / math.sqrt(1 - e2 * math.sin(phi) ** 2) + REF[2]) * math.cos(phi)
    expected = [rad * math.sin(dl), rad * math.sin(phi) * (1 - math.cos(dl)), -rad * math.cos(phi) * (1 - math.cos(dl))]
    got = geodetic_to_enu(REF[0], REF[1] + 0.01, REF[2], REF)
    assert np.abs(got - expected).max() < 1e-3
    assert 730 < got[0] < 740  # 0.01 deg of longitude at 48.7 N is about 735 m


def uv(points, pose=CameraPose(), cal=CAL):
    out, ok = project_enu(np.asarray(points, float), pose, cal)
    assert ok.all()
    return out


def test_projection_hand_cases():
    assert np.allclose(uv([[0, 100, 0]]), [[320, 256]])
    assert np.allclose(uv([[10, 100, 0]]), [[320 + 800 * 0.1, 256]])
    assert np.allclose(uv([[0, 100, 10]]), [[320, 256 - 820 * 0.1]])
    # pan 90 looks east; north is then to the left
    assert np.allclose(uv([[100, 0, 0], [100, 10, 0]], CameraPose(pan=90)), [[320, 256], [320 - 80, 256]])
    # tilt 30: a target at 30 deg elevation is centred, the horizon point straight ahead is lower
    t30 = CameraPose(pan=0, tilt=30)
    assert np.allclose(uv([[0, 100, 100 * math.tan(math.radians(30))]], t30), [[320, 256]])
    assert np.allclose(uv([[0, 100, 0]], t30), [[320, 256 + 820 * math.tan(math.radians(30))]])
    # roll 90 turns the camera's x axis down: a target to the east appears above the centre
    assert np.allclose(uv([[10, 100, 0]], CameraPose(roll=90)), [[320, 256 - 820 * 0.1]])
    # turret position is honoured
    assert np.allclose(uv([[5, 105, 3]], CameraPose(enu=(5.0, 5.0, 3.0))), [[320, 256]])


def test_mount_offsets_add_to_the_turret():
    cal = Calibration(fx=800.0, fy=800.0, cx=320.0, cy=256.0, mount_pan=90.0, mount_tilt=0.0,
                      mount_offset=[0.0, 0.0, 10.0])
    assert np.allclose(uv([[100, 0, 10]], CameraPose(), cal), [[320, 256]])
    cal2 = Calibration(fx=800.0, fy=800.0, cx=320.0, cy=256.0, mount_pan=1.0, mount_tilt=-2.0, mount_roll=3.0)
    plain = Calibration(fx=800.0, fy=800.0, cx=320.0, cy=256.0)
    assert np.allclose(uv([[1, 50, 2]], CameraPose(pan=9.0, tilt=12.0, roll=-3.0), cal2),
                       uv([[1, 50, 2]], CameraPose(pan=10.0, tilt=10.0, roll=0.0), plain))


def test_distortion_matches_hand_formula_and_folding_is_masked():
    cal = Calibration(fx=800.0, fy=800.0, cx=320.0, cy=256.0, dist=[-0.1, 0.0, 0.0, 0.0, 0.0])
    # normalised (0.2, 0.1): r^2 = 0.05, radial factor 1 - 0.1 * 0.05 = 0.995
    assert np.allclose(uv([[20, 100, -10]], CameraPose(), cal), [[320 + 800 * 0.2 * 0.995, 256 + 800 * 0.1 * 0.995]])
    assert max_valid_radius((-0.1, 0.0, 0.0, 0.0, 0.0)) == pytest.approx(math.sqrt(1 / 0.3), abs=2e-3)
    out, ok = project_enu([[300, 100, 0], [0, -100, 0], [0, 100, 0]], CameraPose(), cal)
    assert ok.tolist() == [False, False, True]  # beyond the model's valid field, behind, fine
    assert np.isnan(out[:2]).all()


def test_pixel_rays_invert_projection():
    cal = Calibration(fx=700.0, fy=705.0, cx=318.0, cy=250.0, dist=[-0.05, 0.01, 0.001, -0.001, 0.0],
                      mount_pan=0.4, mount_tilt=-0.3, mount_roll=0.2, mount_offset=[0.1, 0.0, -0.1])
    pose = CameraPose((3.0, -2.0, 1.0), pan=123.0, tilt=15.0, roll=2.0)
    pix = np.array([[0, 0], [639, 511], [320, 256], [100, 400.0]])
    rays = pixel_rays(pix, pose, cal)
    points = np.asarray(pose.enu) + np.asarray(cal.mount_offset) + 250 * rays
    assert np.abs(uv(points, pose, cal) - pix).max() < 1e-4


def test_rotation_and_pointing_agree():
    rng = np.random.default_rng(1)
    for pan, tilt, roll in rng.uniform([0, -80, -180], [360, 80, 180], (20, 3)):
        rot = camera_rotation(pan, tilt, roll)
        assert np.allclose(rot @ rot.T, np.eye(3)) and np.linalg.det(rot) == pytest.approx(1.0)
        p, t = direction_to_pan_tilt(rot[2])
        assert (p - pan + 180) % 360 - 180 == pytest.approx(0, abs=1e-9) and t == pytest.approx(tilt)
