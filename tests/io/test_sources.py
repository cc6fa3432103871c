import numpy as np
import pytest

from conftest import make_flight, make_video
from pipeline.errors import InputError
from pipeline.io.flight import load_flight
from pipeline.io.sources import FlightSource, StreamReader, VideoFileSource, merge_streams


def test_merge_pairs_within_tolerance_and_keeps_every_frame(tmp_path):
    a = StreamReader("rgb", "rgb", make_video(tmp_path / "a.mp4", 30), np.arange(30) / 30.0)
    b = StreamReader("thermal", "thermal", make_video(tmp_path / "b.mp4", 25), np.arange(25) / 25.0 + 0.002)
    bundles = list(merge_streams([a, b]))
    seen = {"rgb": [], "thermal": []}
    for bd in bundles:
        for s, f in bd.frame_ids.items():
            seen[s].append(f)
            assert bd.images[s] is not None
        ts = [a.time_of(bd.frame_ids["rgb"])] if "rgb" in bd.frame_ids else []
        ts += [b.time_of(bd.frame_ids["thermal"])] if "thermal" in bd.frame_ids else []
        assert max(ts) - min(ts) <= 0.5 / 30 + 1e-9
        assert bd.timestamp == pytest.approx(min(ts))
    assert seen["rgb"] == list(range(1, 31)) and seen["thermal"] == list(range(1, 26))
    both = sum(len(bd.frame_ids) == 2 for bd in bundles)
    assert both == 25 and sum(bd.thermal is None for bd in bundles) == 5  # 1/25 s and 1/30 s grids are never > 1/60 s apart
    assert [bd.index for bd in bundles] == list(range(len(bundles)))
    assert all(t1.timestamp <= t2.timestamp for t1, t2 in zip(bundles, bundles[1:]))


def test_flight_source_and_single_file(tmp_path):
    root = make_flight(tmp_path / "f", {"rgb": (12, 30.0), "thermal": (10, 25.0)})
    src = FlightSource(load_flight(root))
    assert src.expected_frames == 22
    assert sum(len(b.present()) for b in src) == 22
    only = FlightSource(load_flight(root), streams=["thermal"])
    assert [b.frame_ids["thermal"] for b in only] == list(range(1, 11))
    with pytest.raises(InputError, match="no stream named 'ir'"):
        FlightSource(load_flight(root), streams=["ir"])
    v = VideoFileSource(root / "rgb.mp4", "thermal")
    assert [b.frame_ids["thermal"] for b in v] == list(range(1, 13))


def test_truncated_video_is_an_error(tmp_path):
    p = make_video(tmp_path / "v.mp4", 40)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="v.mp4"):
        list(VideoFileSource(p))


def test_timestamps_must_match_video(tmp_path):
    root = make_flight(tmp_path / "f", {"rgb": (5, 30.0)})
    (root / "ts.csv").write_text("frame,t\n1,0\n2,0.1\n3,0.2\n")
    (root / "flight.yaml").write_text((root / "flight.yaml").read_text().replace("fps: 30.0", "timestamps: ts.csv"))
    with pytest.raises(InputError, match="more frames than its timestamps"):
        list(FlightSource(load_flight(root)))
