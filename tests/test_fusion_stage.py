"""The fusion detector in the pipeline (pipeline/fusion_stage.py): model inputs on the reference grid
(registration, missing and dropped modalities, live sources, the flow stack), their tensors, the stage end
to end with a tiny random model, its configuration (detector.reference / drop, build_fusion_stage), and the
score smoothing stage (pipeline/stages.py ScoreSmoothingStage, smoothing settings)."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from detectors.checkpoint import save_checkpoint
from detectors.flow import FlowConfig, FlowStack
from fusion.detector import FusionDetector, FusionDetectorConfig, decode
from pipeline.config import to_dict
from pipeline.errors import ConfigError
from pipeline.io.flight import Calibration, StreamSpec
from pipeline.fusion_stage import FusionInputs, FusionStage, GridInputs, image_channels, to_model_inputs
from pipeline.geometry.registration import Registration
from pipeline.settings import SmoothingSettings, build_fusion_stage, build_stages, load_config
from pipeline.stages import ScoreSmoothingStage, TrackerStage
from pipeline.types import Detections, FrameBundle

torch.set_num_threads(1)

TW, TH = 48, 32   # thermal (the reference grid)
RW, RH = 96, 64   # rgb: twice the focal length on twice the pixels, same optical axis
CPU = torch.device("cpu")


def _cal(f: float, w: int, h: int) -> Calibration:
    return Calibration(fx=f, fy=f, cx=(w - 1) / 2, cy=(h - 1) / 2)


def _specs(calibrated: bool = True) -> dict[str, StreamSpec]:
    return {"rgb": StreamSpec("rgb", "rgb.mp4", fps=30.0, width=RW, height=RH,
                              calibration=_cal(80.0, RW, RH) if calibrated else None),
            "thermal": StreamSpec("thermal", "thermal.mp4", fps=25.0, width=TW, height=TH,
                                  calibration=_cal(40.0, TW, TH) if calibrated else None)}


def _images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (RH, RW, 3), dtype=np.uint8), rng.integers(0, 256, (TH, TW), dtype=np.uint8))


def _bundle(rgb: np.ndarray | None, thermal: np.ndarray | None, index: int = 0) -> FrameBundle:
    return FrameBundle(index, 0.04 * index, {"rgb": rgb, "thermal": thermal},
                       frame_ids={s: index + 1 for s, im in (("rgb", rgb), ("thermal", thermal)) if im is not None},
                       modalities={"rgb": "rgb", "thermal": "thermal"})


def _blocks(rgb: np.ndarray) -> np.ndarray:
    """The rgb image area-downscaled by 2 (what registration onto the thermal grid gives here)."""
    return rgb.astype(float).reshape(RH // 2, 2, RW // 2, 2, 3).mean((1, 3))


def _bound(modalities=("rgb", "thermal"), **kw) -> FusionInputs:
    fi = FusionInputs(list(modalities), **kw)
    fi.bind(_specs())
    return fi


# ---------------------------------------------------------------------------------------------- FusionInputs


def test_both_present_grid_is_thermal_and_rgb_is_registered():
    rgb, th = _images()
    fi = _bound()
    assert fi.reference_stream == "thermal" and set(fi.registrations) == {"rgb"}
    gi = fi(_bundle(rgb, th))
    assert isinstance(gi, GridInputs)
    assert gi.grid == "thermal" and gi.size == (TW, TH)
    assert gi.present() == [True, True]
    assert gi.images["thermal"] is th
    assert gi.images["rgb"].shape == (TH, TW, 3) and gi.images["rgb"].dtype == np.uint8
    assert np.abs(gi.images["rgb"] - _blocks(rgb)).max() <= 1.0
    assert gi.flow is None


def test_thermal_missing_grid_still_thermal_from_the_spec():
    rgb, _ = _images()
    gi = _bound()(_bundle(rgb, None))
    assert gi.grid == "thermal" and gi.size == (TW, TH)
    assert gi.present() == [True, False] and gi.images["thermal"] is None
    assert np.abs(gi.images["rgb"] - _blocks(rgb)).max() <= 1.0


def test_dropped_modality_is_absent_even_when_present():
    rgb, th = _images()
    gi = _bound(drop=["thermal"])(_bundle(rgb, th))
    assert gi.grid == "thermal" and gi.size == (TW, TH)
    assert gi.images["thermal"] is None and gi.present() == [True, False]
    assert np.abs(gi.images["rgb"] - _blocks(rgb)).max() <= 1.0
    gi = _bound(drop=["rgb"])(_bundle(rgb, th))
    assert gi.present() == [False, True] and gi.images["thermal"] is th


def test_rgb_reference_upsamples_thermal():
    rgb, th = _images()
    gi = _bound(reference="rgb")(_bundle(rgb, th))
    assert gi.grid == "rgb" and gi.size == (RW, RH) and gi.images["rgb"] is rgb
    assert gi.images["thermal"].shape == (RH, RW)
    # rgb pixel u sees thermal pixel u / 2 - 0.25: the 2x2 rgb block (2j, 2j+1) straddles thermal pixel j
    up, t = gi.images["thermal"].astype(float), th.astype(float)
    # odd rgb pixels (2j + 1) sit at thermal j + 0.25: bilinear weights 0.75 / 0.25 on each axis
    expect = 0.5625 * t[:-1, :-1] + 0.1875 * (t[1:, :-1] + t[:-1, 1:]) + 0.0625 * t[1:, 1:]
    np.testing.assert_allclose(up[1:-1:2, 1:-1:2], expect, atol=1.0)


@pytest.mark.parametrize("bind_uncalibrated", [False, True])
def test_no_registration_grid_is_the_present_streams_own_frame(bind_uncalibrated):
    """A live source (no specs bound) or a flight without calibrations: nothing is registered."""
    rgb, th = _images()
    fi = FusionInputs(["rgb", "thermal"])
    if bind_uncalibrated:
        fi.bind(_specs(calibrated=False))
        assert fi.registrations == {}
    gi = fi(_bundle(rgb, th))
    assert gi.grid == "thermal" and gi.size == (TW, TH)
    assert gi.images["thermal"] is th and gi.images["rgb"] is None
    gi = fi(_bundle(rgb, None))
    assert gi.grid == "rgb" and gi.size == (RW, RH)
    assert gi.images["rgb"] is rgb and gi.images["thermal"] is None


def test_single_stream_source_without_the_reference_modality():
    rgb, _ = _images()
    bundle = FrameBundle(0, 0.0, {"cam": rgb}, {"cam": 1}, {"cam": "rgb"})
    gi = FusionInputs(["rgb", "thermal"])(bundle)
    assert gi.grid == "cam" and gi.size == (RW, RH) and gi.present() == [True, False]


def test_thermal_only_model_on_an_rgb_only_instant_is_none():
    rgb, th = _images()
    assert _bound(["thermal"])(_bundle(rgb, None)) is None
    assert FusionInputs(["thermal"])(_bundle(rgb, None)) is None  # unbound too
    gi = _bound(["thermal"])(_bundle(rgb, th))
    assert list(gi.images) == ["thermal"] and gi.images["thermal"] is th
    assert _bound(drop=["rgb"])(_bundle(rgb, None)) is None  # the only image there is dropped


def _blob_frame(x: int) -> np.ndarray:
    im = np.full((TH, TW), 60, np.uint8)
    cv2.circle(im, (x, TH // 2), 5, 220, -1)
    return cv2.GaussianBlur(im, (0, 0), 1.5)


def test_flow_stack_on_the_reference_stream():
    fi = _bound(flow=2)
    assert fi.flow_cfg.length == 2
    rng = np.random.default_rng(3)
    rgbs = [rng.integers(0, 256, (RH, RW, 3), dtype=np.uint8) for _ in range(3)]  # rgb noise: no effect
    thermals = [_blob_frame(x) for x in (14, 20, 26)]
    ref = FlowStack(FlowConfig(length=2))
    outs = []
    for i, (r, t) in enumerate(zip(rgbs, thermals)):
        gi = fi(_bundle(r, t, i))
        assert gi.flow.shape == (4, TH, TW) and gi.flow.dtype == np.float32
        np.testing.assert_allclose(gi.flow, ref(t), atol=1e-6)  # the thermal frames' flow, nothing else
        outs.append(gi.flow)
    assert not outs[0].any()  # first frame: zeros
    assert not outs[1][:2].any() and outs[1][2].max() > 0.05  # newest pair last, oldest slot zeros
    np.testing.assert_allclose(outs[2][:2], outs[1][2:], atol=1e-6)  # and it moves down the stack
    # no reference frame at an instant: no flow (the model takes zeros)
    gi = fi(_bundle(rgbs[0], None, 3))
    assert gi.flow is None and gi.grid == "thermal"
    fi.reset()
    assert not fi(_bundle(rgbs[0], thermals[0], 4)).flow.any()


# ---------------------------------------------------------------------------------------------- tensors


def test_to_model_inputs_shapes_scaling_and_channel_order():
    h, w = 4, 6
    rng = np.random.default_rng(1)
    bgr = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)]
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    flow = rng.uniform(-1, 1, (2, h, w)).astype(np.float32)
    batch = [GridInputs("t", (w, h), {"rgb": bgr[0], "thermal": grey}, flow),
             GridInputs("t", (w, h), {"rgb": bgr[1], "thermal": None}, None)]
    images, present, fl = to_model_inputs(batch, ["rgb", "thermal"], 1, CPU)
    assert present.dtype == torch.bool and present.tolist() == [[True, True], [True, False]]
    assert images[0].shape == (2, 3, h, w) and images[1].shape == (2, 1, h, w)
    assert images[0].dtype == torch.float32
    for i in range(2):  # channel 0 is red: the BGR image's last channel
        for c in range(3):
            np.testing.assert_allclose(images[0][i, c].numpy(), bgr[i][..., 2 - c] / 255.0, atol=1e-7)
    np.testing.assert_allclose(images[1][0, 0].numpy(), grey / 255.0, atol=1e-7)
    assert not images[1][1].any()  # absent sample: zeros
    assert fl.shape == (2, 2, h, w)
    np.testing.assert_allclose(fl[0].numpy(), flow)
    assert not fl[1].any()
    # a modality absent from the whole batch is None; no flow asked, none given
    images, present, fl = to_model_inputs(batch[1:], ["rgb", "thermal"], 0, CPU)
    assert images[1] is None and images[0].shape == (1, 3, h, w) and fl is None
    assert present.tolist() == [[True, False]]


def test_image_channels():
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (3, 5), dtype=np.uint8)
    np.testing.assert_array_equal(image_channels(bgr, 3), bgr[..., ::-1])
    np.testing.assert_array_equal(image_channels(grey, 3), np.stack([grey] * 3, 2))
    np.testing.assert_array_equal(image_channels(grey, 1), grey[..., None])
    np.testing.assert_array_equal(image_channels(bgr, 1), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)[..., None])


# ---------------------------------------------------------------------------------------------- the stage


def _model(modalities=("rgb", "thermal"), seed: int = 0, **kw) -> FusionDetector:
    torch.manual_seed(seed)
    op = "mutan" if len(modalities) == 2 else "none"
    return FusionDetector(FusionDetectorConfig(modalities=list(modalities), operator=op, width=4, rank=2,
                                               mutan_dim=6, dropout_p=0.0, **kw)).eval()


def _source(specs) -> SimpleNamespace:
    return SimpleNamespace(flight=SimpleNamespace(streams=specs), telemetry=None, readers=[])


def _expected_grid_boxes(model, gi: GridInputs):
    images, present, flow = to_model_inputs([gi], model.cfg.modalities, model.cfg.flow, CPU)
    with torch.inference_mode():
        boxes, scores = decode(model(images, present, flow), 0.0, model.cfg.max_detections, model.cfg.nms_iou)[0]
    return boxes.numpy(), scores.numpy()


def test_fusion_stage_end_to_end():
    model = _model()
    stage = FusionStage(model, CPU, min_score=0.0)
    stage.bind(_source(_specs()))
    assert set(stage.inputs.registrations) == {"rgb"}
    rgb, th = _images(4)
    gi = stage.inputs(_bundle(rgb, th))
    xyxy, scores = _expected_grid_boxes(model, gi)
    assert len(xyxy) > 0
    out = stage(_bundle(rgb, th))
    assert set(out.detections) == {"rgb", "thermal"}
    d_th, d_rgb = out.detections["thermal"], out.detections["rgb"]
    exp_th = Detections(xyxy, scores).clipped(TW, TH)
    exp_th = exp_th[exp_th.areas > 0]
    np.testing.assert_allclose(d_th.xyxy, exp_th.xyxy, atol=1e-5)
    np.testing.assert_allclose(d_th.scores, exp_th.scores, atol=1e-6)
    reg = Registration(_cal(40.0, TW, TH), (TW, TH), _cal(80.0, RW, RH), (RW, RH))
    mapped, ok = reg.boxes_to_other(xyxy)
    keep = ok & ((mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1]) > 0)
    assert keep.sum() > 0
    np.testing.assert_allclose(d_rgb.xyxy, mapped[keep], atol=1e-4)
    np.testing.assert_allclose(d_rgb.scores, scores[keep], atol=1e-6)
    assert (d_rgb.xyxy[:, [0, 2]] <= RW).all() and (d_rgb.xyxy[:, [1, 3]] <= RH).all()
    # an rgb-only instant: the model runs on rgb alone on the thermal grid; the rgb stream gets mapped boxes
    out = stage(_bundle(rgb, None, 1))
    assert set(out.detections) == {"rgb"}
    gi = stage.inputs(_bundle(rgb, None, 1))
    xyxy1, scores1 = _expected_grid_boxes(model, gi)
    mapped1, ok1 = reg.boxes_to_other(xyxy1)
    keep1 = ok1 & ((mapped1[:, 2] - mapped1[:, 0]) * (mapped1[:, 3] - mapped1[:, 1]) > 0)
    np.testing.assert_allclose(out.detections["rgb"].xyxy, mapped1[keep1], atol=1e-4)
    assert stage.report() == {"fusion": {"instants": 2, "fused": 1, "single": 1}}


def test_fusion_stage_dropped_modality_and_unusable_instants():
    model = _model(["thermal"])
    stage = FusionStage(model, CPU, min_score=0.0)
    stage.bind(_source(_specs()))
    rgb, th = _images(5)
    out = stage(_bundle(rgb, None))  # a thermal-only model without a thermal frame: nothing to run
    assert set(out.detections) == {"rgb"} and len(out.detections["rgb"]) == 0
    assert stage.report()["fusion"]["instants"] == 0
    out = stage(_bundle(rgb, th))  # rgb is no input, but its frames get the thermal detections mapped
    assert len(out.detections["thermal"]) > 0 and len(out.detections["rgb"]) > 0
    assert stage.report() == {"fusion": {"instants": 1, "fused": 1, "single": 0}}
    # drop: the model sees thermal alone although rgb is there
    fused = _model()
    stage = FusionStage(fused, CPU, min_score=0.0, drop=["rgb"])
    stage.bind(_source(_specs()))
    out = stage(_bundle(rgb, th))
    gi = FusionInputs(["rgb", "thermal"])(_bundle(None, th))
    assert gi.present() == [False, True]
    xyxy, scores = _expected_grid_boxes(fused, gi)
    exp = Detections(xyxy, scores).clipped(TW, TH)
    np.testing.assert_allclose(out.detections["thermal"].xyxy, exp[exp.areas > 0].xyxy, atol=1e-5)
    assert stage.report() == {"fusion": {"instants": 1, "fused": 0, "single": 1}}


def test_fusion_stage_unbound_live_source_reports_on_the_grid_stream_only():
    stage = FusionStage(_model(), CPU, min_score=0.0)
    rgb, th = _images(6)
    out = stage(_bundle(rgb, th))  # no specs: grid thermal, rgb cannot be mapped -> empty
    assert len(out.detections["thermal"]) > 0 and len(out.detections["rgb"]) == 0
    out = stage(_bundle(rgb, None, 1))  # then the rgb frame is the grid
    assert len(out.detections["rgb"]) > 0
    assert (out.detections["rgb"].xyxy[:, [0, 2]] <= RW).all()


# ---------------------------------------------------------------------------------------------- settings


def test_drop_needs_a_fusion_detector():
    with pytest.raises(ConfigError, match=r"detector\.drop"):
        load_config(None, ["detector.drop=[thermal]"])
    with pytest.raises(ConfigError, match=r"detector\.drop"):
        load_config(None, ["detector.kind=fusion", "detector.checkpoint=x.pt", "detector.drop=[lidar]"])
    with pytest.raises(ConfigError, match=r"detector\.reference"):
        load_config(None, ["detector.kind=fusion", "detector.checkpoint=x.pt", "detector.reference=ir"])
    cfg = load_config(None, ["detector.kind=fusion", "detector.checkpoint=x.pt", "detector.drop=[thermal]"])
    assert cfg.detector.drop == ["thermal"] and cfg.detector.reference == "thermal"


def _checkpoint(tmp_path, modalities) -> str:
    model = _model(modalities)
    path = tmp_path / f"fusion_{'_'.join(modalities)}.pt"
    save_checkpoint(path, kind="fusion", config=to_dict(model.cfg), classes=["drone"], model=model)
    return str(path)


def _fusion_cfg(ckpt: str, *extra: str):
    return load_config(None, ["detector.kind=fusion", f"detector.checkpoint={ckpt}", "detector.device=cpu",
                              *extra]).detector


def test_build_fusion_stage_checks_drop_against_the_checkpoint(tmp_path):
    thermal_only = _checkpoint(tmp_path, ["thermal"])
    with pytest.raises(ConfigError, match=r"detector\.drop: rgb is not an input"):
        build_fusion_stage(_fusion_cfg(thermal_only, "detector.drop=[rgb]"))
    with pytest.raises(ConfigError, match=r"detector\.drop.*every input"):
        build_fusion_stage(_fusion_cfg(thermal_only, "detector.drop=[thermal]"))
    both = _checkpoint(tmp_path, ["rgb", "thermal"])
    with pytest.raises(ConfigError, match=r"detector\.drop.*every input"):
        build_fusion_stage(_fusion_cfg(both, "detector.drop=[rgb, thermal]"))
    stage = build_fusion_stage(_fusion_cfg(both, "detector.drop=[rgb]", "detector.min_score=0.25",
                                           "detector.reference=rgb"))
    assert isinstance(stage, FusionStage)
    assert stage.inputs.drop == {"rgb"} and stage.inputs.reference == "rgb" and stage.min_score == 0.25
    assert stage.inputs.modalities == ["rgb", "thermal"]
    stages = build_stages(load_config(None, ["detector.kind=fusion", f"detector.checkpoint={both}",
                                             "detector.device=cpu"]))
    assert isinstance(stages[1], FusionStage) and isinstance(stages[-1], TrackerStage)


# ---------------------------------------------------------------------------------------------- smoothing


def _tracks(ids, scores) -> Detections:
    n = len(ids)
    xyxy = np.array([[10 * i, 0, 10 * i + 5, 5] for i in range(n)], np.float32).reshape(-1, 4)
    return Detections(xyxy, np.array(scores, np.float32), track_ids=np.array(ids, np.int64))


def _track_bundle(i: int, tracks: dict[str, Detections], late=None) -> FrameBundle:
    b = FrameBundle(i, 0.04 * i, {s: np.zeros((4, 4), np.uint8) for s in tracks}, {s: i + 1 for s in tracks},
                    {s: "rgb" for s in tracks})
    b.tracks = dict(tracks)
    b.late_tracks = dict(late or {})
    return b


def test_score_smoothing_exact_values():
    stage = ScoreSmoothingStage(alpha=0.5, min_score=0.0)
    out = stage(_track_bundle(0, {"rgb": _tracks([1], [0.2])}))
    np.testing.assert_allclose(out.tracks["rgb"].scores, [0.2], atol=1e-7)
    out = stage(_track_bundle(1, {"rgb": _tracks([1], [0.6])}))
    np.testing.assert_allclose(out.tracks["rgb"].scores, [0.4], atol=1e-7)
    assert out.tracks["rgb"].scores.dtype == np.float32 and out.tracks["rgb"].track_ids.tolist() == [1]
    # streams are smoothed separately
    out = stage(_track_bundle(2, {"thermal": _tracks([1], [1.0])}))
    np.testing.assert_allclose(out.tracks["thermal"].scores, [1.0], atol=1e-7)
    assert stage.report() == {"smoothing": {"track_rows_held_back": 0}}


def test_score_smoothing_holds_back_weak_tracks_and_their_late_rows():
    stage = ScoreSmoothingStage(alpha=0.5, min_score=0.3)
    # frame 1: track 1 at 0.2 (held), track 2 at 0.9 (kept), track 3 at 0.25 (held)
    out = stage(_track_bundle(0, {"rgb": _tracks([1, 2, 3], [0.2, 0.9, 0.25])}))
    t = out.tracks["rgb"]
    assert t.track_ids.tolist() == [2]
    np.testing.assert_allclose(t.scores, [0.9], atol=1e-7)
    np.testing.assert_allclose(t.xyxy, [[10, 0, 15, 5]])  # its own box stays with it
    # frame 2: 1 -> 0.4 (passes), 2 -> 0.5, 3 -> 0.25 (held); late rows of 1 kept, of 3 dropped
    late = {"rgb": [(1, _tracks([1, 3], [0.2, 0.25])), (0, _tracks([3], [0.1]))]}
    out = stage(_track_bundle(1, {"rgb": _tracks([1, 2, 3], [0.6, 0.1, 0.25])}, late))
    t = out.tracks["rgb"]
    assert t.track_ids.tolist() == [1, 2]
    np.testing.assert_allclose(t.scores, [0.4, 0.5], atol=1e-7)
    rows = out.late_tracks["rgb"]
    assert [fr for fr, _ in rows] == [1]  # the frame with only track 3's row is gone
    assert rows[0][1].track_ids.tolist() == [1]
    np.testing.assert_allclose(rows[0][1].xyxy, [[0, 0, 5, 5]])
    assert stage.report() == {"smoothing": {"track_rows_held_back": 3}}
    # empty and id-less track sets pass through
    out = stage(_track_bundle(2, {"rgb": Detections.empty(with_track_ids=True)}))
    assert len(out.tracks["rgb"]) == 0
    stage.reset()
    out = stage(_track_bundle(3, {"rgb": _tracks([1], [0.6])}))  # after reset: starts afresh at 0.6
    np.testing.assert_allclose(out.tracks["rgb"].scores, [0.6], atol=1e-7)


def test_smoothing_settings_and_build_stages():
    stages = build_stages(load_config(None, ["smoothing.kind=score", "smoothing.alpha=0.25",
                                             "smoothing.min_score=0.4"]))
    assert isinstance(stages[-1], ScoreSmoothingStage) and isinstance(stages[-2], TrackerStage)
    assert stages[-1].min_score == 0.4 and stages[-1].models.get("x", "rgb").alpha == 0.25
    assert not any(isinstance(s, ScoreSmoothingStage) for s in build_stages(load_config()))
    assert SmoothingSettings().kind == "none"
    for bad in ("smoothing.alpha=0", "smoothing.alpha=1.5"):
        with pytest.raises(ConfigError, match=r"smoothing\.alpha"):
            load_config(None, [bad])
    with pytest.raises(ConfigError, match=r"smoothing\.min_score"):
        load_config(None, ["smoothing.min_score=1.5"])
    with pytest.raises(ConfigError, match=r"smoothing\.kind"):
        load_config(None, ["smoothing.kind=gru"])
