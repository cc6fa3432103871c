import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.io.flight import load_flight
from pipeline.io.telemetry import Telemetry, load_flight_telemetry, read_nmea_gga, read_timestamps

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


def checksum(body: str) -> str:
    c = 0
    for ch in body.encode():
        c ^= ch
    return f"{c:02X}"


def gga(t: float, lat: float, lon: float, msl: float, sep: float, fix: int, talker: str = "GN",
        lat_text: str | None = None) -> str:
    """A GGA sentence as a receiver writes it (t seconds since midnight UTC)."""
    hh, rem = divmod(t, 3600.0)
    mm, ss = divmod(rem, 60.0)
    la = lat_text or f"{int(abs(lat)):02d}{abs(lat) % 1 * 60:011.8f}"
    lo = f"{int(abs(lon)):03d}{abs(lon) % 1 * 60:011.8f}"
    body = (f"{talker}GGA,{int(hh):02d}{int(mm):02d}{ss:05.2f},{la},{'N' if lat >= 0 else 'S'},{lo},"
            f"{'E' if lon >= 0 else 'W'},{fix},14,0.7,{msl:.4f},M,{sep:.4f},M,1.0,0001")
    return f"${body}*{checksum(body)}"


def test_nmea_reference_sentence(tmp_path):
    # the textbook example: 12:35:19 UTC, 48 deg 07.038' N, 11 deg 31.000' E, GPS fix, 545.4 m MSL + 46.9 m geoid
    p = write(tmp_path, "r.nmea", "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\n")
    rows, lines = read_nmea_gga(p)
    assert rows.tolist() == [[pytest.approx(45319.0), pytest.approx(48 + 7.038 / 60), pytest.approx(11 + 31 / 60),
                              pytest.approx(592.3), 1.0]]
    assert lines.tolist() == [1]


def test_nmea_matches_csv_and_maps_utc_to_video_time(tmp_path):
    start = 14 * 3600 + 30 * 60 + 5.2  # the video's frame time 0 is 14:30:05.20 UTC
    t = np.arange(0.0, 3.0, 0.1)
    lat, lon, h = 48.2 + 1e-5 * t, -1.5 - 2e-5 * t, 130.0 + t  # ellipsoidal height = MSL + 47.5 m geoid separation
    fix = np.where(t < 1.5, 4, 5)
    nmea = ["$GNRMC,143005.20,A,4812.0000,N,00130.0000,W,0.0,0.0,010124,,,A*7F"]  # other sentences are skipped
    nmea += [gga(start + ti, la, lo, hi - 47.5, 47.5, f) for ti, la, lo, hi, f in zip(t, lat, lon, h, fix)]
    p = write(tmp_path, "drone.nmea", "\n".join(nmea) + "\n")
    csv = write(tmp_path, "g.csv", "t,target_id,lat,lon,alt,fix\n" + "".join(
        f"{ti:.3f},3,{la:.10f},{lo:.10f},{hi:.4f},{f}\n" for ti, la, lo, hi, f in zip(t, lat, lon, h, fix)))
    a = Telemetry.load(p, None, clock_offset=-start, nmea_target_id=3)
    b = Telemetry.load(csv, None)
    for tv in (0.0, 0.55, 1.45, 1.55, 2.9):
        (x,), (y,) = a.sample(tv).targets, b.sample(tv).targets
        assert (x.target_id, x.fix) == (y.target_id, y.fix)
        assert np.allclose([x.lat, x.lon, x.alt], [y.lat, y.lon, y.alt], rtol=0, atol=1e-8)
    assert a.sample(1.45).targets[0].fix == 5  # between a fixed and a float sample: the worse one
    assert a.sample(1.4).targets[0].fix == 4 and a.sample(3.5).targets == []


def test_nmea_is_detected_by_content_and_crosses_midnight(tmp_path):
    lines = [gga(86399.9, 45.0, 5.0, 200.0, 50.0, 4), gga(86400.0 - 86400.0, 45.0, 5.0, 201.0, 50.0, 4),
             gga(0.1, 45.0, 5.0, 202.0, 50.0, 4)]
    tel = Telemetry.load(write(tmp_path, "gps.log", "\n".join(lines) + "\n"), None, clock_offset=-86399.9)
    assert [s.alt for s in tel.sample(0.1).targets] == [pytest.approx(251.0)]
    assert tel.sample(0.15).targets[0].alt == pytest.approx(251.5)


def test_invalid_fixes_become_gaps_and_long_gaps_are_unknown(tmp_path):
    good = [gga(t, 45.0, 5.0, 100.0 + t, 50.0, 4) for t in (0.0, 0.5, 1.0)]
    lost = [gga(t, 45.0, 5.0, 0.0, 0.0, 0).replace("4500.00000000,N", ",").replace("00500.00000000,E", ",")
            for t in (1.5, 2.0)]
    lost = ["$" + ln[1:ln.index("*")] + "*" + checksum(ln[1:ln.index("*")]) for ln in lost]
    back = [gga(t, 45.0, 5.0, 100.0 + t, 50.0, 5) for t in (11.0, 11.5)]  # a 10 s gap after the last fix
    tel = Telemetry.load(write(tmp_path, "g.nmea", "\n".join(good + lost + back) + "\n"), None, max_gap=1.0)
    assert tel.sample(0.75).targets[0].alt == pytest.approx(150.75)
    assert tel.sample(1.5).targets == [] and tel.sample(6.0).targets == []  # no fix, then a 10 s gap
    assert tel.sample(11.25).targets[0].fix == 5 and set(tel.targets) == {1}
    csv = write(tmp_path, "g.csv", "t,target_id,lat,lon,alt,fix\n0,1,45,5,100,4\n1,1,45,5,101,4\n"
                "11,1,45,5,111,4\n12,1,45,5,112,0\n")
    tel = Telemetry.load(csv, None, max_gap=1.0)
    assert tel.sample(0.5).targets[0].alt == pytest.approx(100.5)
    assert tel.sample(6.0).targets == [] and tel.sample(11.5).targets == []  # the 10 s gap; fix 0 dropped
    assert tel.sample(11.0).targets[0].alt == pytest.approx(111.0)


def nmea_case(kind: str) -> tuple[list[str], int, str]:
    ok = [gga(10.0, 45.0, 5.0, 100.0, 50.0, 4), gga(10.1, 45.0, 5.0, 100.0, 50.0, 4)]
    if kind == "checksum":
        return ok + [gga(10.2, 45.0, 5.0, 100.0, 50.0, 4).replace(",4,", ",5,")], 3, "checksum mismatch"
    if kind == "nan":
        return ok + [gga(10.2, 45.0, 5.0, float("nan"), 50.0, 4)], 3, "altitude: NaN"
    if kind == "backwards":
        return ok + [gga(10.05, 45.0, 5.0, 100.0, 50.0, 4)], 3, "time goes backwards"
    if kind == "fields":
        body = "GPGGA,001000.20,4500.0000,N,00500.0000,E,4,12,0.7"
        return ok + [f"${body}*{checksum(body)}"], 3, "at least 12 fields"
    if kind == "no checksum":
        return [ok[0].split("*")[0]], 1, "without a *hh checksum"
    if kind == "garbage":
        return ok[:1] + ["", "hello"], 3, "not an NMEA sentence"
    if kind == "time":
        body = "GPGGA,126019.00,4500.0000,N,00500.0000,E,4,12,0.7,100.0,M,50.0,M,,"
        return [f"${body}*{checksum(body)}"], 1, "bad time"
    if kind == "latitude":
        return [gga(10.0, 45.0, 5.0, 100.0, 50.0, 4, lat_text="4575.00000000")], 1, "bad latitude"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["checksum", "nan", "backwards", "fields", "no checksum", "garbage", "time",
                                  "latitude"])
def test_bad_nmea_names_file_and_line(tmp_path, kind):
    lines, line, words = nmea_case(kind)
    p = write(tmp_path, "g.nmea", "\n".join(lines) + "\n")
    with pytest.raises(InputError) as e:
        Telemetry.load(p, None)
    assert f"{p}:{line}:" in str(e.value) and words in str(e.value)


def test_csv_gps_nan_row_names_the_line(tmp_path):
    p = write(tmp_path, "g.csv", GPS + "1.5,1,NaN,2.0,150,4\n")
    with pytest.raises(InputError, match=r"g.csv:6: NaN or infinite value in lat"):
        Telemetry.load(p, None)


def test_gps_clock_offset_and_flight_loader(small_flight):
    flight = load_flight(small_flight)
    tel = load_flight_telemetry(flight)
    shifted = Telemetry.load(flight.path("telemetry/gps_rtk.csv"), flight.path("telemetry/camera.csv"),
                             clock_offset=0.5)
    a, b = tel.sample(1.0), shifted.sample(1.5)
    assert a.camera == b.camera and [(s.lat, s.alt) for s in a.targets] == [(s.lat, s.alt) for s in b.targets]
    assert {s.target_id for s in a.targets} == {1, 2} and all(s.fix in (1, 2, 4, 5) for s in a.targets)
