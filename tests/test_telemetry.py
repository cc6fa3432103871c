import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.telemetry import Telemetry, read_timestamps

CAM = "t,lat,lon,alt,pan,tilt,roll\n0,48.0,2.0,100,350,5,0\n1,48.0,2.0,100,10,7,0\n5,48.0,2.0,100,20,7,0\n"
GPS = ("t,target_id,lat,lon,alt,fix\n0,1,48.001,2.0,150,4\n0.5,1,48.002,2.0,152,4\n1.0,1,48.003,2.0,154,5\n"
       "0,2,48.1,2.1,120,4\n")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_interpolation_wraps_angles_and_marks_gaps(tmp_path):
    tel = Telemetry.load(write(tmp_path, "g.csv", GPS), write(tmp_path, "c.csv", CAM), max_gap=2.0)
    s = tel.sample(0.5)
    assert s.camera["pan"] == pytest.approx(0.0, abs=1e-9)  # 350 -> 10 goes through north
    assert s.camera["tilt"] == pytest.approx(6.0)
    assert tel.sample(3.0).camera is None  # inside a 4 s gap longer than max_gap
    t1 = [x for x in tel.sample(0.25).targets if x.target_id == 1][0]
    assert t1.lat == pytest.approx(48.0015) and t1.alt == pytest.approx(151.0) and t1.fix == 4
    assert tel.sample(9.0).camera is None and tel.sample(9.0).targets == []  # outside the log: unknown


def test_clock_offset(tmp_path):
    tel = Telemetry.load(None, write(tmp_path, "c.csv", CAM), clock_offset=1.0, max_gap=2.0)
    assert tel.sample(1.0).camera["tilt"] == pytest.approx(5.0)


@pytest.mark.parametrize("text, line, words", [
    ("t,lat,lon,alt,pan,tilt,roll\n0,48,2,100,0,5,0\n1,48,nan,100,0,5,0\n", 3, "NaN"),
    ("t,lat,lon,alt,pan,tilt,roll\n0,48,2,100,0,5,0\n2,48,2,100,0,5,0\n1,48,2,100,0,5,0\n", 4, "backwards"),
    ("t,lat,lon,alt,pan,tilt\n0,48,2,100,0,5\n", 1, "roll"),
    ("t,lat,lon,alt,pan,tilt,roll\n0,48,2,100,0,5\n", 2, "expected 7"),
])
def test_bad_camera_logs_name_file_and_line(tmp_path, text, line, words):
    p = write(tmp_path, "c.csv", text)
    with pytest.raises(InputError) as e:
        Telemetry.load(None, p)
    assert f"{p}:{line}:" in str(e.value) and words in str(e.value)


def test_gps_time_backwards_per_target(tmp_path):
    p = write(tmp_path, "g.csv", GPS + "0.2,1,48.0,2.0,150,4\n")
    with pytest.raises(InputError, match=r"g.csv:6: time goes backwards for target 1"):
        Telemetry.load(p, None)


def test_timestamps(tmp_path):
    ts = read_timestamps(write(tmp_path, "t.csv", "frame,t\n1,0.0\n2,0.04\n3,0.081\n"))
    np.testing.assert_allclose(ts, [0, 0.04, 0.081])
    with pytest.raises(InputError, match="t.csv:3"):
        read_timestamps(write(tmp_path, "t.csv", "frame,t\n1,0.0\n3,0.04\n"))
