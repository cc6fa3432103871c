import dataclasses
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.io.flight import load_flight
from pipeline.geometry.camera import CameraPose, geodetic_to_enu, project_enu
from pipeline.evaluation.mot_metrics import mot_metrics
from pipeline.io.motio import read_mot
from pipeline.synth import generate_flight
from pipeline.synth.background import build_panoramas
from pipeline.synth.render import StreamRenderer
from pipeline.synth.scenario import make_scenario

SECONDS = 3.0


@pytest.fixture(scope="module")
def flight_dir(tmp_path_factory) -> Path:
    return generate_flight(tmp_path_factory.mktemp("synth") / "f0", seed=0, seconds=SECONDS)


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    return lines[0].split(","), np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])


def test_flight_loads_with_its_streams_and_metadata(flight_dir):
    flight = load_flight(flight_dir)
    assert set(flight.streams) == {"rgb", "thermal"}
    rgb, th = flight.streams["rgb"], flight.streams["thermal"]
    assert (rgb.width, rgb.height, rgb.fps, rgb.modality) == (640, 512, 30.0, "rgb")
    assert (th.width, th.height, th.fps, th.modality) == (320, 256, 25.0, "thermal")
    assert th.calibration.fx < rgb.calibration.fx * 320 / 640 * 1.5  # its own field of view
    assert any(abs(v) > 0 for v in th.calibration.mount_offset)
    kinds = [o["kind"] for o in flight.spec.meta["objects"]]
    assert kinds.count("drone") == 3 and kinds.count("bird") == 2
    assert all("body_temp" in o and o["span_m"] > 0 for o in flight.spec.meta["objects"] if o["kind"] != "airplane")


def test_same_seed_same_bytes_other_seed_differs(flight_dir, tmp_path):
    first = hashes(flight_dir)
    assert len(first) == 9
    again = hashes(generate_flight(flight_dir, seed=0, seconds=SECONDS))  # over an existing flight folder
    assert again == first
    other = hashes(generate_flight(tmp_path / "f1", seed=1, seconds=SECONDS))
    assert other.keys() == first.keys()
    assert all(other[k] != first[k] for k in first)


def test_refuses_a_folder_that_is_not_a_flight(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an empty folder"):
        generate_flight(tmp_path, seconds=1.0)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    with pytest.raises(InputError):
        generate_flight(tmp_path / "notes.txt", seconds=1.0)


def test_timestamps_increase_and_match_the_videos(flight_dir):
    for name, size, fps in (("rgb", (640, 512), 30), ("thermal", (320, 256), 25)):
        header, ts = read_csv(flight_dir / "timestamps" / f"{name}.csv")
        assert header == ["frame", "t"]
        assert ts[:, 0].tolist() == list(range(1, len(ts) + 1)) and len(ts) == int(SECONDS * fps)
        dt = np.diff(ts[:, 1])
        assert (dt > 0).all() and abs(dt.mean() - 1 / fps) < 1e-3 and dt.std() > 1e-4  # jittered clock
        cap = cv2.VideoCapture(str(flight_dir / f"{name}.mp4"))
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape[1::-1] == size
            n += 1
        assert n == len(ts)


def test_ground_truth_boxes_lie_in_the_image_and_are_drones(flight_dir):
    flight = load_flight(flight_dir)
    drones = {o["id"] for o in flight.spec.meta["objects"] if o["kind"] == "drone"}
    for name, s in flight.streams.items():
        gt = read_mot(flight_dir / s.gt)
        assert len(gt) > 20
        l, t, w, h = gt[:, 2], gt[:, 3], gt[:, 4], gt[:, 5]
        assert (l >= 0).all() and (t >= 0).all() and (l + w <= s.width).all() and (t + h <= s.height).all()
        assert (np.maximum(w, h) >= 2).all() and (np.minimum(w, h) >= 1).all()
        assert (gt[:, 6] == 1).all() and (gt[:, 7] == 1).all() and ((gt[:, 8] > 0) & (gt[:, 8] <= 1)).all()
        assert set(gt[:, 1].astype(int)) <= drones
        frames_ids = gt[:, :2].astype(int)
        assert len(np.unique(frames_ids, axis=0)) == len(gt)  # one box per target per frame
        m = mot_metrics(gt, gt)
        assert m["mota"] == 1.0 and m["num_switches"] == 0


def test_presence_windows_match_ground_truth(flight_dir):
    flight = load_flight(flight_dir)
    assert flight.spec.presence
    for name, s in flight.streams.items():
        gt = read_mot(flight_dir / s.gt)
        ts = read_csv(flight_dir / s.timestamps)[1][:, 1]
        for tid in set(gt[:, 1].astype(int)) | {w.target_id for w in flight.spec.presence if w.stream == name}:
            wins = [(w.start, w.end) for w in flight.spec.presence if w.stream == name and w.target_id == tid]
            inside = {i + 1 for i, t in enumerate(ts) if any(a <= t <= b for a, b in wins)}
            assert inside == set(gt[gt[:, 1] == tid, 0].astype(int)), (name, tid)


def test_gps_and_turret_logs_put_each_drone_in_its_boxes_in_both_streams(flight_dir):
    """Ids agree between streams and with the GPS log: the drone's logged position, projected with the
    logged turret pose through each stream's calibration, falls in that stream's box of the same id."""
    flight = load_flight(flight_dir)
    gh, gps = read_csv(flight_dir / "telemetry" / "gps_rtk.csv")
    ch, cam = read_csv(flight_dir / "telemetry" / "camera.csv")
    assert gh == ["t", "target_id", "lat", "lon", "alt", "fix"]
    assert ch == ["t", "lat", "lon", "alt", "pan", "tilt", "roll"]
    assert (np.diff(gps[:, 0]) >= 0).all() and (np.diff(cam[:, 0]) > 0).all()
    assert set(gps[:, 5].astype(int)) <= {1, 4, 5} and np.mean(gps[:, 5] == 4) > 0.5
    ref = tuple(cam[0, 1:4])
    for name, s in flight.streams.items():  # the logs cover every frame
        ts = read_csv(flight_dir / s.timestamps)[1][:, 1]
        assert cam[0, 0] <= ts[0] and cam[-1, 0] >= ts[-1]
        for tid in set(gps[:, 1]):
            assert gps[gps[:, 1] == tid, 0].min() <= ts[0] and gps[gps[:, 1] == tid, 0].max() >= ts[-1]
    checked = {"rgb": set(), "thermal": set()}
    for name, s in flight.streams.items():
        ts = read_csv(flight_dir / s.timestamps)[1][:, 1]
        for row in read_mot(flight_dir / s.gt):
            f, tid, l, t, w, h = int(row[0]), int(row[1]), *row[2:6]
            time = ts[f - 1]
            g = gps[(gps[:, 1] == tid) & (gps[:, 5] == 4)]
            k = np.searchsorted(g[:, 0], time)
            if k == 0 or k == len(g) or g[k, 0] - g[k - 1, 0] > 0.15:
                continue
            lla = [np.interp(time, g[:, 0], g[:, c]) for c in (2, 3, 4)]
            pose = CameraPose((0.0, 0.0, 0.0), *(float(np.interp(time, cam[:, 0], cam[:, c])) for c in (4, 5, 6)))
            (u, v), = project_enu(geodetic_to_enu(*lla, ref)[None], pose, s.calibration)[0]
            if l == 0 or t == 0 or l + w == s.width or t + h == s.height:
                continue  # clipped at the border: the drone's centre may be outside the image
            assert l - 3 <= u <= l + w + 3 and t - 3 <= v <= t + h + 3, (name, f, tid, u, v, row[2:6])
            checked[name].add(tid)
    assert checked["rgb"] and checked["thermal"] and checked["rgb"] & checked["thermal"]


def test_boxes_are_tight_around_the_rendered_drones():
    scn = make_scenario(0, SECONDS, drones=3, birds=0)
    scn = dataclasses.replace(scn, objects=scn.drones)
    setup = scn.streams["rgb"]
    pano = build_panoramas(scn, np.random.default_rng(5))["rgb"]
    full = StreamRenderer(scn, setup, pano, np.random.default_rng(7))
    empty = StreamRenderer(dataclasses.replace(scn, objects=[]), setup, pano, np.random.default_rng(7))
    n_boxes = 0
    for t in setup.timestamps[::6]:
        frame, boxes = full.render(float(t))
        diff = np.abs(frame.astype(int) - empty.render(float(t))[0]).max(axis=2)
        near, around = np.zeros(diff.shape, bool), np.zeros(diff.shape, bool)
        for b in boxes:
            l, tp, w, h = b.ltwh
            near[max(tp - 1, 0):tp + h + 1, max(l - 1, 0):l + w + 1] = True
            around[max(tp - 3, 0):tp + h + 3, max(l - 3, 0):l + w + 3] = True
            ys, xs = np.nonzero(diff[tp:tp + h, l:l + w] > 8)
            assert len(xs) > 0
            if w >= 6 and h >= 6:  # the drawn drone reaches (almost) every side of its box
                assert xs.min() <= 1 and ys.min() <= 1 and xs.max() >= w - 2 and ys.max() >= h - 2
            n_boxes += 1
        assert not ((diff > 40) & ~near).any()   # solid drone pixels are inside the boxes
        assert not ((diff > 8) & ~around).any()  # so are the faint anti-aliased and blurred edges
    assert n_boxes > 5
