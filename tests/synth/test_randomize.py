"""The domain-randomized synthetic profile (`generate_flight(..., randomize=True)`, `dronetrack synth
--randomize`), and the default profile left exactly as it was."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.io.flight import load_flight
from pipeline.io.motio import read_mot
from pipeline.synth import generate_flight
from pipeline.synth.scenario import (DRONE_PX, GT_CLASSES, RANDOM_RGB_SIZES, RANDOM_THERMAL_SIZES, THERMAL_HFOV,
                                     make_scenario)

SEEDS = range(24)
ALL_CLASSES_SEED = 11  # a short randomized flight whose ground truth holds all four classes


def hashes(folder: Path, names) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


@pytest.fixture(scope="module")
def scenarios():
    return [make_scenario(s, 2.0, 3, 2, randomize=True) for s in SEEDS]


def hfov(setup) -> float:
    return float(np.degrees(2 * np.arctan(setup.width / 2 / setup.calibration.fx)))


def test_randomized_sensors_take_the_asked_sizes_and_fields_of_view(scenarios):
    th = [(s.streams["thermal"].width, s.streams["thermal"].height) for s in scenarios]
    rgb = [(s.streams["rgb"].width, s.streams["rgb"].height) for s in scenarios]
    assert set(th) == set(RANDOM_THERMAL_SIZES) and set(rgb) == set(RANDOM_RGB_SIZES)
    th_fov = np.array([hfov(s.streams["thermal"]) for s in scenarios])
    rgb_fov = np.array([hfov(s.streams["rgb"]) for s in scenarios])
    assert (th_fov >= THERMAL_HFOV[0] - 0.1).all() and (th_fov <= THERMAL_HFOV[1] + 0.1).all()
    assert th_fov.max() - th_fov.min() > 15 and (rgb_fov >= th_fov).all()  # thermal: the narrower camera
    default = make_scenario(0, 2.0, 3, 2)
    assert default.profile == {} and (default.streams["thermal"].width, default.streams["rgb"].width) == (320, 640)


def test_randomized_drones_span_the_pixel_range_and_distractors_are_drawn(scenarios):
    sizes, shapes, kinds = [], set(), {k: 0 for k in GT_CLASSES}
    for scn in scenarios:
        fx = max(s.calibration.fx for s in scn.streams.values())
        fx_min = min(s.calibration.fx for s in scn.streams.values())
        t = np.linspace(0.0, scn.seconds, 9)
        for o in scn.objects:
            kinds[o.kind] += 1
            if o.kind != "drone":
                continue
            shapes.add(o.look["shape"])
            dist = np.linalg.norm(o.path.at(t), axis=1)
            sizes += [fx_min * o.span / dist.max(), fx * o.span / dist.min()]  # smallest and largest, either camera
    sizes = np.array(sizes)
    assert shapes == {"quad", "hexa", "fixed_wing"}
    assert np.percentile(sizes, 5) < 6 and np.percentile(sizes, 95) > 100  # about 3 px to 200 px
    assert sizes.min() > 0.5 and sizes.max() < 1.6 * DRONE_PX[1]
    assert kinds["drone"] == 3 * len(SEEDS) and kinds["bird"] >= 2 * len(SEEDS)
    assert kinds["airplane"] >= len(SEEDS) // 3 and kinds["helicopter"] >= len(SEEDS) // 4
    # deterministic per seed, and seeds differ
    a, b = make_scenario(5, 2.0, 3, 2, randomize=True), make_scenario(5, 2.0, 3, 2, randomize=True)
    assert a.streams["rgb"].calibration == b.streams["rgb"].calibration and a.sky == b.sky
    assert all(np.array_equal(o.path.pos, p.path.pos) for o, p in zip(a.objects, b.objects))
    assert make_scenario(6, 2.0, 3, 2, randomize=True).sky != a.sky


def test_randomized_flight_has_all_classes_in_ground_truth_and_is_deterministic(tmp_path):
    out = tmp_path / "r"
    assert main(["synth", str(out), "--randomize", "--seed", str(ALL_CLASSES_SEED), "--seconds", "0.6"]) == 0
    flight = load_flight(out)
    scn = make_scenario(ALL_CLASSES_SEED, 0.6, 3, 2, randomize=True)
    kinds = {o["id"]: o["kind"] for o in flight.spec.meta["objects"]}
    assert flight.spec.meta["profile"]["name"] == "randomized" and all(o["in_gt"] for o in flight.spec.meta["objects"])
    seen = set()
    for name, s in flight.streams.items():
        assert (s.width, s.height) == (scn.streams[name].width, scn.streams[name].height)
        gt = read_mot(out / s.gt)
        l, t, w, h = gt[:, 2], gt[:, 3], gt[:, 4], gt[:, 5]
        assert (l >= 0).all() and (t >= 0).all() and (l + w <= s.width).all() and (t + h <= s.height).all()
        assert (np.maximum(w, h) >= 2).all()
        assert (gt[np.maximum(w, h) > 1.6 * DRONE_PX[1], 7] != 1).all()  # only distractors may be larger
        for row in gt:  # the class column is the object's kind
            assert GT_CLASSES[kinds[int(row[1])]] == int(row[7])
        seen |= set(gt[:, 7].astype(int).tolist())
        drones_seen = set(gt[gt[:, 7] == 1, 1].astype(int).tolist())
        assert drones_seen <= {i for i, k in kinds.items() if k == "drone"}
        assert {w.target_id for w in flight.spec.presence if w.stream == name} == drones_seen  # drones only
    assert seen == {1, 2, 3, 4}
    names = ["flight.yaml", "gt/rgb.txt", "gt/thermal.txt", "telemetry/gps_rtk.csv", "rgb.mp4", "thermal.mp4"]
    again = generate_flight(tmp_path / "again", seed=ALL_CLASSES_SEED, seconds=0.6, randomize=True)
    assert hashes(again, names) == hashes(out, names)


def test_the_default_profile_is_unchanged(tmp_path):
    """Shipped models were trained on default flights: their files (text ones; videos depend on the
    encoder build) must stay byte for byte what they were before the randomized profile existed."""
    out = generate_flight(tmp_path / "d", seed=110, seconds=1.5)
    assert hashes(out, ["flight.yaml", "gt/rgb.txt", "gt/thermal.txt", "telemetry/camera.csv",
                        "telemetry/gps_rtk.csv", "timestamps/rgb.csv", "timestamps/thermal.csv"]) == {
        "flight.yaml": "506d29a182e76d5cba7506d4d3cb659eba074b52faa9562635f55545626357b5",
        "gt/rgb.txt": "3112b13034add8011c83cd5dcab8b16106c7ac6be63a5dfc3549b4eb743ecf7a",
        "gt/thermal.txt": "f8b350889d875275e050fa2993635e953fb778f63d89abfdeb8f8f4633775038",
        "telemetry/camera.csv": "3a04de7f8eaa34a0e57a7a2fb8c9e193d224484fd5de3ab6d20a8204418abb74",
        "telemetry/gps_rtk.csv": "1e2b880f937131e672ca47a0d8a4b486d9a222eca99c713d690d2190f08cda6d",
        "timestamps/rgb.csv": "50b57bebfa4ba328e46ca4009e284f71991530aa80370687203e082515a3117e",
        "timestamps/thermal.csv": "76f4745e8605adf348d51182a2fb1701d62cf18dea9e8beceb38ea16fb918829"}
    assert "profile" not in load_flight(out).spec.meta
