import math

import numpy as np
import pytest

from pipeline.io.flight import Calibration
from pipeline.geometry.camera import (CameraPose, camera_rotation, direction_to_pan_tilt, enu_to_geodetic,
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


# WGS84 radii of curvature at the turret's latitude, for placing a drone a given number of metres away by hand
A_WGS84, E2_WGS84 = 6378137.0, 6.69437999014e-3
SIN_PHI = math.sin(math.radians(REF[0]))
MERIDIAN = A_WGS84 * (1 - E2_WGS84) / (1 - E2_WGS84 * SIN_PHI ** 2) ** 1.5 + REF[2]  # m per radian of latitude
PARALLEL = (A_WGS84 / math.sqrt(1 - E2_WGS84 * SIN_PHI ** 2) + REF[2]) * math.cos(math.radians(REF[0]))  # of lon


def drone_at(north: float, east: float, up: float) -> tuple[float, float, float]:
    """WGS84 of a point `north`, `east`, `up` metres from the turret (the Earth's curvature over 100 m
    lowers it by d^2 / 2R < 1 mm, which moves it < 0.01 px here)."""
    return REF[0] + math.degrees(north / MERIDIAN), REF[1] + math.degrees(east / PARALLEL), REF[2] + up


def test_projection_from_lat_lon_computed_by_hand():
    # turret at REF looking north (pan 0, tilt 0, roll 0); drone 100 m north, 10 m up.
    # camera frame: x = east = 0, y = -up = -10, z = north = 100
    # u = cx + fx * 0 / 100 = 320;  v = cy + fy * (-10 / 100) = 256 - 82 = 174
    enu = geodetic_to_enu(*drone_at(100.0, 0.0, 10.0), REF)
    assert np.allclose(enu, [0, 100, 10], atol=2e-3)
    assert np.allclose(uv([enu]), [[320.0, 174.0]], atol=0.02)
    # pan 30: the drone now 100 m north, 50 m east, 10 m up.
    # x = E cos30 - N sin30 = 43.3013 - 50 = -6.6987;  z = E sin30 + N cos30 = 25 + 86.6025 = 111.6025
    # u = 320 + 800 * (-6.6987 / 111.6025) = 320 - 48.019 = 271.981
    # v = 256 + 820 * (-10 / 111.6025) = 256 - 73.475 = 182.525
    enu = geodetic_to_enu(*drone_at(100.0, 50.0, 10.0), REF)
    assert np.allclose(uv([enu], CameraPose(pan=30.0)), [[271.981, 182.525]], atol=0.02)


def test_full_distortion_model_computed_by_hand():
    k1, k2, p1, p2, k3 = -0.2, 0.05, 0.001, -0.002, 0.01
    cal = Calibration(fx=800.0, fy=820.0, cx=320.0, cy=256.0, dist=[k1, k2, p1, p2, k3])
    # ENU (30, 100, 20) looking north -> normalised x = 30/100 = 0.3, y = -20/100 = -0.2, r^2 = 0.13
    x, y, r2 = 0.3, -0.2, 0.13
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3                 # 0.974866970
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)           # 0.29246009 - 0.00012 - 0.00062 = 0.29172009
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y           # -0.19497339 + 0.00021 + 0.00024 = -0.19452339
    expected = [320 + 800 * xd, 256 + 820 * yd]                        # (553.376, 96.491)
    assert np.allclose(expected, [553.376072, 96.490820], atol=1e-5)
    assert np.allclose(uv([[30, 100, 20]], CameraPose(), cal), [expected], atol=1e-6)
