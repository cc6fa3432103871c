"""Training data and loop of the fusion detector: paired samples of a flight (thermal grid, boxes, ROCK
targets, the in-process memo, flow), crops with flips, collation with a missing modality, the loss with
ROCK, the AP50 validation, and `dronetrack train` -> `process` -> `evaluate` with `model: fusion`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from fusion.detector import FusionDetector, FusionDetectorConfig, centre_targets
from pipeline.training import fusion_data
from pipeline.cli import main
from pipeline.training.fusion_data import (FusionCropDataset, PairedSample, collate_fusion, full_frames, fusion_ap,
                                  fusion_loss, paired_samples)
from pipeline.geometry.camera import geodetic_to_enu
from pipeline.models import load_model, resolve_path

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


# ---------------------------------------------------------------------------------------------- helpers


def _csv(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


def _thermal_frames(flight: Path) -> np.ndarray:
    """(frame, t) rows of the thermal stream."""
    return _csv(flight / "timestamps" / "thermal.csv")


def _gt_drones(flight: Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Thermal ground-truth drone rows (class 1, flag 1) of a frame: (xyxy, ids), in file order."""
    rows = np.loadtxt(flight / "gt" / "thermal.txt", delimiter=",", ndmin=2)
    r = rows[(rows[:, 0] == frame) & (rows[:, 6] != 0) & (rows[:, 7] == 1)]
    return np.c_[r[:, 2:4], r[:, 2:4] + r[:, 4:6]].astype(np.float32), r[:, 1].astype(int)


def _telemetry_bracket(flight: Path, t: float, tid: int) -> tuple[np.ndarray, np.ndarray]:
    """min and max of (range m, pan, tilt) from the logs over [t - 1/60 s, t]: a bundle's clock is its
    leading frame, at most half an RGB period before the thermal frame."""
    cam, gps = _csv(flight / "telemetry" / "camera.csv"), _csv(flight / "telemetry" / "gps_rtk.csv")
    g = gps[gps[:, 1] == tid]
    vals = []
    for tt in np.linspace(t - 1 / 60, t, 9):
        c = [np.interp(tt, cam[:, 0], cam[:, k]) for k in range(1, 7)]  # lat lon alt pan tilt roll
        p = [np.interp(tt, g[:, 0], g[:, k]) for k in (2, 3, 4)]
        rng = float(np.linalg.norm(geodetic_to_enu(p[0], p[1], p[2], (c[0], c[1], c[2]))))
        vals.append((rng, c[3], c[4]))
    v = np.array(vals)
    return v.min(0), v.max(0)


def _signatures(flight: Path) -> dict[int, float]:
    meta = yaml.safe_load((flight / "flight.yaml").read_text())["meta"]
    return {o["id"]: ((o["body_temp"] + o["motor_temp"]) / 2 - 40) / 10 for o in meta["objects"]
            if o["kind"] == "drone"}


@pytest.fixture(scope="module")
def pairs(small_flight) -> list[PairedSample]:
    return paired_samples(small_flight, ["rgb", "thermal"], "thermal", flow=0, every=5)


# ---------------------------------------------------------------------------------------------- 1. paired samples


def test_one_sample_per_fifth_thermal_frame_on_the_thermal_grid(pairs, small_flight):
    frames = _thermal_frames(small_flight)[:, 0].astype(int)
    assert [s.frame for s in pairs] == [f for f in frames if (f - 1) % 5 == 0]
    assert len(pairs) == 15
    for s in pairs:
        assert s.flight == "synth-7" and s.flow is None
        assert list(s.images) == ["rgb", "thermal"]
        th = s.images["thermal"]
        assert th.shape == (256, 320, 1) and th.dtype == np.uint8
        rgb = s.images["rgb"]
        if rgb is not None:
            assert rgb.shape == (256, 320, 3) and rgb.dtype == np.uint8
    assert sum(s.images["rgb"] is not None for s in pairs) >= 10
    # the reference image is the thermal frame itself (grey), the RGB one is in RGB order: a clear blue sky
    cap = cv2.VideoCapture(str(small_flight / "thermal.mp4"))
    for _ in range(pairs[1].frame):
        ok, frame = cap.read()
        assert ok
    cap.release()
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(pairs[1].images["thermal"][..., 0], grey)
    top = pairs[1].images["rgb"][:40].reshape(-1, 3).astype(float).mean(0)
    assert top[2] > top[0] + 40  # blue above red


def test_boxes_are_the_thermal_ground_truth_drones(pairs, small_flight):
    with_drones = 0
    for s in pairs:
        xyxy, _ = _gt_drones(small_flight, s.frame)
        assert s.boxes.dtype == np.float32 and s.boxes.shape == (len(xyxy), 4)
        np.testing.assert_array_equal(s.boxes, xyxy)
        with_drones += len(xyxy) > 0
    assert with_drones >= 5


def test_aux_rows_range_pan_tilt_signature_per_drone(pairs, small_flight):
    times = dict(map(tuple, _thermal_frames(small_flight)))
    sig = _signatures(small_flight)
    checked = 0
    for s in pairs:
        _, ids = _gt_drones(small_flight, s.frame)
        assert s.aux.shape == (len(ids), 4) and s.aux.dtype == np.float32
        for row, tid in zip(s.aux, ids):
            lo, hi = _telemetry_bracket(small_flight, times[s.frame], int(tid))
            assert 10 < row[0] < 2000
            assert lo[0] - 0.05 <= row[0] <= hi[0] + 0.05  # metres to that drone's GPS-RTK position
            assert lo[1] - 1e-3 <= row[1] <= hi[1] + 1e-3  # pan (deg), camera log
            assert lo[2] - 1e-3 <= row[2] <= hi[2] + 1e-3  # tilt
            assert row[3] == pytest.approx(sig[int(tid)], abs=1e-6)
            checked += 1
    assert checked >= 5
    assert sig[1] == pytest.approx(-0.1635)  # ((36.42 + 40.31) / 2 - 40) / 10, from the flight's metadata


def test_memo_shares_arrays_and_reads_once(pairs, small_flight, monkeypatch):
    def no_read(*a, **k):
        raise AssertionError("the flight was read again")

    monkeypatch.setattr(fusion_data, "_read_pairs", no_read)
    other_spelling = f"{small_flight}/../{small_flight.name}"  # the memo keys on the resolved path
    only = paired_samples(other_spelling, ["thermal"], "thermal", flow=0, every=5)
    assert len(only) == len(pairs)
    for a, b in zip(only, pairs):
        assert list(a.images) == ["thermal"]
        assert a.images["thermal"] is b.images["thermal"]
        assert a.frame == b.frame and a.boxes is b.boxes
    rgb_only = paired_samples(small_flight, ["rgb"], "thermal", flow=0, every=5)
    assert rgb_only[1].images["rgb"] is pairs[1].images["rgb"] and "thermal" not in rgb_only[1].images


def test_flow_stack_is_int8_on_the_grid(small_flight):
    with_flow = paired_samples(small_flight, ["thermal"], "thermal", flow=2, every=5)
    assert len(with_flow) == 15
    for s in with_flow:
        assert s.flow.dtype == np.int8 and s.flow.shape == (4, 256, 320)
    assert max(int(np.abs(s.flow).max()) for s in with_flow) > 0


# ---------------------------------------------------------------------------------------------- 2. crops


def _items_equal(a: dict, b: dict) -> bool:
    same = torch.equal(a["boxes"], b["boxes"]) and np.array_equal(a["aux"], b["aux"], equal_nan=True)
    return same and all(torch.equal(a["images"][m], b["images"][m]) for m in a["images"])


def test_crops_are_deterministic_and_sized(pairs):
    ds = FusionCropDataset(pairs, ["rgb", "thermal"], crop=64, p_object=1.0, seed=3)
    again = FusionCropDataset(pairs, ["rgb", "thermal"], crop=64, p_object=1.0, seed=3)
    other = FusionCropDataset(pairs, ["rgb", "thermal"], crop=64, p_object=1.0, seed=4)
    assert len(ds) == len(pairs)
    for i in range(len(ds)):
        it = ds[i]
        assert _items_equal(it, again[i]) and _items_equal(it, ds[i])
        assert it["images"]["rgb"].shape == (3, 64, 64) and it["images"]["thermal"].shape == (1, 64, 64)
        assert it["images"]["thermal"].dtype == torch.float32
        assert 0 <= float(it["images"]["rgb"].min()) and float(it["images"]["rgb"].max()) <= 1
        assert it["flow"] is None and it["size"] == (64, 64)
        b = it["boxes"]
        assert bool(((b >= 0) & (b <= 64)).all())
        if len(pairs[i].boxes):  # p_object = 1: the crop is placed on a drone
            assert len(b) >= 1
    assert any(not _items_equal(ds[i], other[i]) for i in range(len(ds)))
    first = [ds[i] for i in range(len(ds))]
    ds.set_epoch(1)
    assert any(not _items_equal(first[i], ds[i]) for i in range(len(ds)))


def test_unaugmented_crop_matches_its_boxes_and_both_images(pairs):
    ds = FusionCropDataset(pairs, ["rgb", "thermal"], crop=64, p_object=1.0, seed=0, augment=False)
    for i, s in enumerate(pairs):
        if not len(s.boxes) or s.images["rgb"] is None:
            continue
        it = ds[i]
        crop = (it["images"]["thermal"][0].numpy() * 255).round().astype(np.uint8)
        hit = cv2.matchTemplate(s.images["thermal"][..., 0], crop, cv2.TM_SQDIFF)
        y0, x0 = np.unravel_index(np.argmin(hit), hit.shape)
        np.testing.assert_array_equal(s.images["thermal"][y0:y0 + 64, x0:x0 + 64, 0], crop)
        np.testing.assert_allclose(it["images"]["rgb"].numpy().transpose(1, 2, 0),
                                   s.images["rgb"][y0:y0 + 64, x0:x0 + 64] / 255, atol=1e-6)
        np.testing.assert_allclose(it["boxes"].numpy(), (s.boxes - [x0, y0, x0, y0]).clip(0, 64))
        np.testing.assert_array_equal(it["aux"], s.aux[np.nanargmin(s.aux[:, 0])])


def _flow_ramp(h: int, w: int) -> np.ndarray:
    x = np.arange(w, dtype=np.int16)[None].repeat(h, 0)
    return np.stack([x, x + 10, -x, x + 20]).astype(np.int8)  # x, y, x, y channels of 2 fields


def test_horizontal_flip_mirrors_boxes_and_negates_flow_x():
    grey = np.zeros((32, 32, 1), np.uint8)
    grey[:, 3] = 200  # a bright column: where it lands tells the flip apart from the photometric jitter
    s = PairedSample("hand", 1, {"rgb": None, "thermal": grey}, _flow_ramp(32, 32),
                     np.array([[4, 10, 10, 14]], np.float32), np.array([[100, 5, 2, 0.5]], np.float32))
    ds = FusionCropDataset([s] * 16, ["rgb", "thermal"], crop=32, p_object=1.0, seed=0)
    x = np.arange(32, dtype=np.float32)
    flips = 0
    for i in range(len(ds)):
        it = ds[i]
        assert it["images"]["rgb"] is None
        f = it["flow"].numpy()
        col = int(it["images"]["thermal"][0].mean(0).argmax())
        if f[0, 0, 0] == 0:  # not flipped
            np.testing.assert_allclose(f[0], np.broadcast_to(x / 127, (32, 32)), atol=1e-6)
            np.testing.assert_allclose(f[1], np.broadcast_to((x + 10) / 127, (32, 32)), atol=1e-6)
            assert it["boxes"].tolist() == [[4, 10, 10, 14]] and col == 3
        else:
            flips += 1
            np.testing.assert_allclose(f[0], np.broadcast_to(-(31 - x) / 127, (32, 32)), atol=1e-6)
            np.testing.assert_allclose(f[2], np.broadcast_to((31 - x) / 127, (32, 32)), atol=1e-6)
            np.testing.assert_allclose(f[1], np.broadcast_to((41 - x) / 127, (32, 32)), atol=1e-6)  # y kept
            np.testing.assert_allclose(f[3], np.broadcast_to((51 - x) / 127, (32, 32)), atol=1e-6)
            assert it["boxes"].tolist() == [[22, 10, 28, 14]] and col == 28
        np.testing.assert_array_equal(it["aux"], s.aux[0])
    assert 3 <= flips <= 13
    off = FusionCropDataset([s] * 16, ["thermal"], crop=32, p_object=1.0, seed=0, augment=False)
    assert all(off[i]["boxes"].tolist() == [[4, 10, 10, 14]] for i in range(16))
    np.testing.assert_allclose(off[0]["images"]["thermal"][0].numpy(), grey[..., 0] / 255)


def test_aux_row_is_the_nearest_drone():
    grey = np.zeros((32, 32, 1), np.uint8)
    boxes = np.array([[2, 2, 6, 6], [12, 12, 16, 16], [22, 22, 26, 26]], np.float32)
    aux = np.array([[500, 1, 2, 0.1], [np.nan, 1, 2, 0.2], [100, 1, 2, 0.3]], np.float32)
    s = PairedSample("hand", 1, {"thermal": grey}, None, boxes, aux)
    it = FusionCropDataset([s], ["thermal"], crop=32, augment=False)[0]
    assert len(it["boxes"]) == 3
    np.testing.assert_array_equal(it["aux"], aux[2])
    unknown = aux.copy()
    unknown[:, 0] = np.nan
    s2 = PairedSample("hand", 1, {"thermal": grey}, None, boxes, unknown)
    np.testing.assert_array_equal(FusionCropDataset([s2], ["thermal"], crop=32, augment=False)[0]["aux"],
                                  unknown[0])


def test_crop_without_a_drone_keeps_the_frames_pan_tilt():
    grey = np.zeros((32, 128, 1), np.uint8)
    s = PairedSample("hand", 1, {"thermal": grey}, None, np.array([[120, 8, 124, 12]], np.float32),
                     np.array([[300, 12.5, -3.0, 0.7]], np.float32))
    ds = FusionCropDataset([s] * 12, ["thermal"], crop=32, p_object=0.0, augment=False)
    empty = 0
    for i in range(len(ds)):
        it = ds[i]
        if len(it["boxes"]):
            np.testing.assert_array_equal(it["aux"], s.aux[0])
            continue
        empty += 1
        assert math.isnan(it["aux"][0]) and math.isnan(it["aux"][3])
        assert it["aux"][1] == 12.5 and it["aux"][2] == -3.0
    assert empty >= 6
    none = PairedSample("hand", 1, {"thermal": grey}, None, np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert np.isnan(FusionCropDataset([none], ["thermal"], crop=32)[0]["aux"]).all()  # no drone: no telemetry row


# ---------------------------------------------------------------------------------------------- 3. collate


def _item(rgb: bool, flow: bool, aux, boxes=((1, 1, 5, 5),), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"images": {"rgb": torch.rand(3, 16, 16, generator=g) if rgb else None,
                       "thermal": torch.rand(1, 16, 16, generator=g)},
            "flow": torch.rand(4, 16, 16, generator=g) if flow else None,
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "aux": np.array(aux, np.float32), "size": (16, 16)}


def test_collate_masks_a_missing_modality_and_keeps_nan_targets():
    a = _item(True, True, [100, 30, 10, 0.5], seed=1)
    b = _item(False, False, [np.nan, -90, 45, np.nan], boxes=(), seed=2)
    batch = collate_fusion([a, b])
    assert batch["present"].tolist() == [[True, True], [False, True]]
    rgb, th = batch["images"]
    assert rgb.shape == (2, 3, 16, 16) and th.shape == (2, 1, 16, 16)
    assert torch.equal(rgb[0], a["images"]["rgb"]) and not bool(rgb[1].any())
    assert torch.equal(th[1], b["images"]["thermal"])
    assert batch["flow"].shape == (2, 4, 16, 16) and not bool(batch["flow"][1].any())
    assert [len(x) for x in batch["boxes"]] == [1, 0]
    t = batch["aux"]
    assert set(t) == {"log_range", "pan", "tilt", "signature"}
    assert t["log_range"][0, 0].item() == pytest.approx(math.log(100)) and math.isnan(t["log_range"][1, 0])
    torch.testing.assert_close(t["pan"], torch.tensor([[0.5, math.sqrt(3) / 2], [-1.0, 0.0]]), atol=1e-6, rtol=0)
    s2 = math.sqrt(0.5)
    torch.testing.assert_close(t["tilt"][1], torch.tensor([s2, s2]), atol=1e-6, rtol=0)
    assert t["signature"][0, 0].item() == pytest.approx(0.5) and math.isnan(t["signature"][1, 0])
    neither = collate_fusion([_item(False, False, [np.nan] * 4), _item(False, False, [np.nan] * 4, seed=3)])
    assert neither["images"][0] is None and neither["flow"] is None
    assert neither["present"].tolist() == [[False, True], [False, True]]


# ---------------------------------------------------------------------------------------------- 4. loss


def _detector(rock: bool, seed: int = 0) -> FusionDetector:
    torch.manual_seed(seed)
    return FusionDetector(FusionDetectorConfig(width=4, rank=2, mutan_dim=6, dropout_p=0.0, rock=rock))


def _crop_batch(pairs) -> dict:
    ds = FusionCropDataset(pairs, ["rgb", "thermal"], crop=32, p_object=1.0, seed=1)
    idx = [i for i, s in enumerate(pairs) if len(s.boxes)][:3] + [0]  # three crops on a drone, one without
    return collate_fusion([ds[i] for i in idx])


def test_fusion_loss_heat_box_and_rock(pairs):
    batch = _crop_batch(pairs)
    assert sum(len(b) for b in batch["boxes"]) >= 3
    plain = fusion_loss(CPU)(_detector(False), batch)
    assert set(plain) == {"heat", "box"} and all(bool(torch.isfinite(v)) for v in plain.values())
    assert plain["heat"].item() > 0 and plain["box"].item() > 0
    model = _detector(True)
    batch["aux"]["log_range"][0] = float("nan")  # missing (the drone-free frame's row is all NaN)
    assert bool(torch.isnan(batch["aux"]["log_range"]).any()) and bool(torch.isfinite(batch["aux"]["pan"][:3]).all())
    losses = fusion_loss(CPU)(model, batch)
    assert set(losses) == {"heat", "box", "aux"}
    assert all(bool(torch.isfinite(v)) for v in losses.values()) and losses["aux"].item() > 0
    losses["aux"].backward(retain_graph=True)
    for t in ("log_range", "pan", "tilt", "signature"):
        g = model.rock.heads[t].weight.grad
        assert g is not None and bool(torch.isfinite(g).all()) and g.abs().sum() > 0
    assert all(p.grad is None for p in model.heads.parameters())  # the aux loss stops at the ROCK block
    model.zero_grad(set_to_none=True)
    (losses["heat"] + losses["box"]).backward()
    merge = model.rock.merges["log_range"].weight.grad  # detection gradients flow through the residual merge
    assert merge is not None and merge.abs().sum() > 0
    for v in batch["aux"].values():
        v.fill_(float("nan"))
    nothing = fusion_loss(CPU)(model, batch)["aux"]
    assert nothing.item() == 0.0


# ---------------------------------------------------------------------------------------------- 5. AP50


class _Oracle(nn.Module):
    """Outputs the exact centre targets of the i-th call's item (optionally boxes at half size)."""

    def __init__(self, items: list[dict], shrink: bool = False) -> None:
        super().__init__()
        self.cfg = FusionDetectorConfig(width=4)
        self.stride = 4
        self.boxes, self.shrink = [it["boxes"] for it in items], shrink
        self.calls: list[tuple[list[bool], list[bool]]] = []

    def forward(self, images, present, flow=None) -> dict:
        k = len(self.calls)
        self.calls.append(([t is None for t in images], present[0].tolist()))
        h, w = next(t for t in images if t is not None).shape[-2:]
        heat, reg, _ = centre_targets([self.boxes[k]], (math.ceil(h / 4), math.ceil(w / 4)))
        if self.shrink:
            reg[:, 2:] -= math.log(2)
        return {"heat": heat, "reg": reg}


def test_full_frames_are_whole_grid_images(pairs):
    items = full_frames(pairs, ["rgb", "thermal"])
    assert len(items) == len(pairs)
    it, s = items[3], pairs[3]
    assert it["images"]["rgb"].shape == (3, 256, 320) and it["images"]["thermal"].shape == (1, 256, 320)
    torch.testing.assert_close(it["images"]["thermal"][0], torch.from_numpy(s.images["thermal"][..., 0] / 255).float())
    assert it["size"] == (256, 320) and np.isnan(it["aux"]).all()
    np.testing.assert_array_equal(it["boxes"].numpy(), s.boxes)


def test_fusion_ap_of_an_oracle_and_dropped_modalities(pairs):
    items = full_frames(pairs, ["rgb", "thermal"])
    assert sum(len(it["boxes"]) for it in items) >= 5
    oracle = _Oracle(items)
    assert fusion_ap(oracle, items, CPU) == {"ap50": 1.0, "score": 1.0}
    assert len(oracle.calls) == len(items)
    assert fusion_ap(_Oracle(items, shrink=True), items, CPU)["ap50"] == 0.0  # IoU 0.25 < 0.5
    rgb_alone = _Oracle(items)
    assert fusion_ap(rgb_alone, items, CPU, drop=("thermal",))["ap50"] == 1.0
    assert rgb_alone.calls and all(c == ([False, True], [True, False]) for c in rgb_alone.calls)
    blind = _Oracle(items)
    assert fusion_ap(blind, items, CPU, drop=("rgb", "thermal")) == {"ap50": 0.0, "score": 0.0}
    assert blind.calls == []  # every frame skipped


# ---------------------------------------------------------------------------------------------- 6. CLI


def _train_config(root: Path, small_flight: Path, **extra) -> dict:
    cache = root / "cache"
    (cache / "synth").mkdir(parents=True, exist_ok=True)
    for seed in (7, 8):  # prepare_flights looks for its own folder names: link the session's flight twice
        link = cache / "synth" / f"seed{seed}_3s_2d_1b"
        if not link.exists():
            link.symlink_to(small_flight, target_is_directory=True)
    cfg = {"out": str(root / "run"), "export": str(root / "fusion.pt"), "threads": 1, "model": "fusion",
           "fusion": {"width": 4, "rank": 2, "mutan_dim": 6},
           "paired": {"crop": 64, "every": 10, "val_every": 20},
           "data": {"cache": str(cache), "svanstrom": None,
                    "synthetic": {"seeds": [7, 8], "seconds": 3.0, "drones": 2, "birds": 1}},
           "optim": {"steps": 4, "batch_size": 2, "eval_every": 2, "warmup_steps": 1, "best_metric": "ap50"}}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def fusion_run(tmp_path_factory, small_flight):
    root = tmp_path_factory.mktemp("fusion_train")
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(_train_config(root, small_flight)))
    assert main(["train", str(path)]) == 0
    return root


def test_train_writes_checkpoints_and_export(fusion_run, small_flight):
    from detectors.checkpoint import load_checkpoint

    last = load_checkpoint(fusion_run / "run" / "last.pt")
    assert last["kind"] == "fusion" and last["step"] == 4 and last["classes"] == ["drone"]
    assert {"ap50", "score"} <= set(last["val"]) and last["config"]["width"] == 4
    assert (fusion_run / "run" / "best.pt").is_file()
    model, ckpt = load_model(fusion_run / "fusion.pt", "fusion")
    assert isinstance(model, FusionDetector) and model.cfg.modalities == ["rgb", "thermal"]
    assert "optimizer" not in ckpt
    n = len(_thermal_frames(small_flight))
    log = (fusion_run / "run" / "log.txt").read_text()
    assert f"{len(range(0, n, 10))} training frames, {len(range(0, n, 20))} validation frames" in log


def _process(small_flight: Path, out: Path, *overrides: str) -> int:
    return main(["process", str(small_flight), "--out", str(out), "--config", str(ROOT / "configs" / "fusion.yaml"),
                 *overrides, "detector.device=cpu", "--no-progress"])


def test_process_and_evaluate_with_the_fusion_checkpoint(fusion_run, small_flight, tmp_path):
    export = fusion_run / "fusion.pt"
    out = tmp_path / "both"
    assert _process(small_flight, out, f"detector.checkpoint={export}") == 0
    for s in ("rgb", "thermal"):
        assert (out / "tracks" / f"{s}.txt").is_file()
        assert isinstance(json.loads((out / "detections" / f"{s}.json").read_text()), list)
    summary = json.loads((out / "summary.json").read_text())
    fus, per = summary["fusion"], summary["frames_per_stream"]
    assert fus["instants"] == summary["bundles"] and fus["fused"] + fus["single"] == fus["instants"]
    assert fus["fused"] == per["rgb"] + per["thermal"] - summary["bundles"] > 0  # a paired bundle holds 2 frames
    res = tmp_path / "scores.json"
    assert main(["evaluate", str(small_flight), str(out), "--json", str(res)]) == 0
    assert {"rgb", "thermal"} <= set(json.loads(res.read_text())["streams"])

    alone = tmp_path / "rgb_alone"
    assert _process(small_flight, alone, f"detector.checkpoint={export}", "detector.drop=[thermal]") == 0
    fus = json.loads((alone / "summary.json").read_text())["fusion"]
    assert fus["fused"] == 0 and fus["single"] == fus["instants"] == per["rgb"]  # instants without RGB: no input
    assert (alone / "detections" / "thermal.json").is_file()


def test_fusion_training_refuses_svanstrom_data(tmp_path, small_flight, capsys):
    cfg = _train_config(tmp_path, small_flight)
    del cfg["data"]["svanstrom"]  # the default: Svanstrom clips
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.svanstrom" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_wildcat_checkpoint_is_not_a_fusion_detector(small_flight, tmp_path, capsys):
    capsys.readouterr()
    assert _process(small_flight, tmp_path / "out", "detector.checkpoint=detectors/weights/wildcat_gps.pt") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wildcat" in err[0] and "fusion" in err[0]


def test_homography_between_samples_comes_from_the_pose():
    from pipeline.geometry.camera import camera_rotation

    k = np.array([[500.0, 0, 160], [0, 500.0, 128], [0, 0, 1]])
    mk = lambda rot: PairedSample("f", 1, {"thermal": None}, None, np.zeros((0, 4), np.float32),
                                  np.zeros((0, 4), np.float32), rot, k)
    a, b = mk(camera_rotation(10.0, 5.0)), mk(camera_rotation(11.0, 5.0))
    h = b.homography_from(a)
    # A 1 degree pan to the right moves the scene left by about f * tan(1 deg) at the image centre.
    p = h @ np.array([160.0, 128.0, 1.0])
    assert p[0] / p[2] == pytest.approx(160 - 500 * np.tan(np.radians(1.0)), abs=0.3)
    assert np.allclose(a.homography_from(a), np.eye(3))
    assert mk(None).homography_from(a) is None and b.homography_from(mk(None)) is None


def test_shipped_fusion_checkpoints_match_their_configs():
    from pipeline.settings import load_config

    expect = {"fusion.yaml": (["rgb", "thermal"], "concat"), "thermal_only.yaml": (["thermal"], "none"),
              "rgb_only.yaml": (["rgb"], "none")}
    for name, (mods, op) in expect.items():
        cfg = load_config(Path("configs") / name)
        model, ckpt = load_model(cfg.detector.checkpoint, "fusion")
        assert model.cfg.modalities == mods and model.cfg.operator == op, name
        assert ckpt["val"]["ap50"] > (0.1 if mods == ["rgb"] else 0.5), name  # validation AP50 at training time
        assert resolve_path(cfg.detector.checkpoint).stat().st_size < 1_000_000, name


def test_frame_size_unlike_flight_yaml_is_a_one_line_error(small_flight, tmp_path, capsys):
    """Registration maps come from flight.yaml's width/height: a video of another size is named, exit 2."""
    import shutil

    flight = tmp_path / "f"
    shutil.copytree(small_flight, flight)
    spec = yaml.safe_load((flight / "flight.yaml").read_text())
    spec["streams"]["rgb"]["width"] = 600
    (flight / "flight.yaml").write_text(yaml.safe_dump(spec))
    assert _process(flight, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stream 'rgb': frames are 640x512" in err[0] and "600x512" in err[0]
