"""Camera-motion estimation and the motion/contrast baseline detector on small generated scenes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from detectors.camera_motion import CameraMotionConfig, CameraMotionEstimator
from detectors.motion import MotionConfig, MotionDetector

PAD = 60


def _world(seed: int, h: int, w: int) -> np.ndarray:
    """A sky gradient over textured ground with sharp-edged buildings, larger than the view."""
    rng = np.random.default_rng(seed)
    hh, ww = h + 2 * PAD, w + 2 * PAD
    horizon = int(hh * 0.6)
    img = np.repeat(np.linspace(190, 120, hh, dtype=np.float32)[:, None], ww, axis=1)
    tex = cv2.GaussianBlur(rng.normal(0, 1, (hh, ww)).astype(np.float32), (0, 0), 2.5)
    img[horizon:] = 90 + tex[horizon:] / tex.std() * 25
    for _ in range(ww // 25):
        x, bw, bh = rng.integers(0, ww - 30), rng.integers(6, 30), rng.integers(8, 50)
        img[horizon - bh:horizon, x:x + bw] = rng.uniform(40, 120)
    return img


def _view(world: np.ndarray, h: int, w: int, dx: float, dy: float, angle: float = 0.0) -> np.ndarray:
    """The camera's view (float32): `world` shifted by (dx, dy) px, then rotated by `angle` degrees about
    the view's centre."""
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    m[:, 2] += m[:, :2] @ np.array([-PAD - dx, -PAD - dy])
    return cv2.warpAffine(world, m, (w, h), flags=cv2.INTER_LINEAR)


def _scene(n: int, h: int, w: int, shift=(1.3, -0.7), target=(6, 6), contrast=-70.0, target_speed=(2.0, 1.0),
           noise=2.0, seed=0):
    """n uint8 frames of a panning camera (the world moves by -shift per frame, so the image content
    moves by +shift) with a target of `contrast` grey levels drawn in image coordinates, and its boxes."""
    rng = np.random.default_rng(seed)
    world = _world(seed, h, w)
    frames, boxes = [], []
    for t in range(n):
        im = _view(world, h, w, -shift[0] * t, -shift[1] * t)
        x, y = int(w * 0.3 + target_speed[0] * t), int(h * 0.2 + target_speed[1] * t)
        if contrast:
            im[y:y + target[1], x:x + target[0]] += contrast
        im += rng.normal(0, noise, im.shape).astype(np.float32)
        frames.append(np.clip(im, 0, 255).astype(np.uint8))
        boxes.append((x, y, x + target[0], y + target[1]))
    return frames, boxes


def _grid(h: int, w: int) -> np.ndarray:
    return np.stack(np.meshgrid(np.linspace(0, w - 1, 7), np.linspace(0, h - 1, 7)), -1).reshape(-1, 1, 2)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# camera motion ----------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,shift", [(256, 320, (1.3, -0.7)), (512, 640, (-2.6, 1.8)), (512, 640, (7.4, 0.3))])
def test_homography_recovers_global_shift(h, w, shift):
    frames, _ = _scene(8, h, w, shift=shift)
    est = CameraMotionEstimator()
    assert est(frames[0]) is None
    g = _grid(h, w)
    for f in frames[1:]:
        hom = est(f)
        assert hom.shape == (3, 3)
        err = np.abs(cv2.perspectiveTransform(g, hom) - g - np.array(shift)).max()
        assert err < 0.5, (est.last_method, err)
        assert est.last_method in ("rotation", "translation")


def test_homography_recovers_roll():
    h, w = 256, 320
    world = _world(3, h, w)
    est = CameraMotionEstimator()
    est(_view(world, h, w, 0, 0).astype(np.uint8))
    hom = est(_view(world, h, w, 0, 0, angle=0.6).astype(np.uint8))
    truth = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 0.6, 1.0), [0, 0, 1]])
    g = _grid(h, w)
    assert np.abs(cv2.perspectiveTransform(g, hom) - cv2.perspectiveTransform(g, truth)).max() < 0.5
    assert est.last_method == "rotation"


def _turn(pan: float, tilt: float) -> np.ndarray:
    a, b = np.radians(pan), np.radians(tilt)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ ry


def test_fast_slew_needs_the_rotation_model():
    """A turret slewing 1 degree a frame with a wide lens: the image motion is uneven across the view
    (about 2 px between centre and corners), so no translation fits; the rotation model, whose focal
    length is learnt on the way, does."""
    h, w = 256, 320
    world = _world(5, h, w)
    k = np.array([[1.2 * w, 0, (w - 1) / 2], [0, 1.2 * w, (h - 1) / 2], [0, 0, 1]])
    views = [k @ _turn(-1.0 * t, 0.3 * t) @ np.linalg.inv(k) for t in range(6)]
    pad = np.array([[1, 0, -PAD], [0, 1, -PAD], [0, 0, 1.0]])
    frames = [cv2.warpPerspective(world, v @ pad, (w, h)).astype(np.uint8) for v in views]
    g = _grid(h, w)
    errors = {}
    for model in ("rotation", "translation"):
        est = CameraMotionEstimator(CameraMotionConfig(max_model=model))
        est(frames[0])
        errors[model] = [np.abs(cv2.perspectiveTransform(g, est(f)) - cv2.perspectiveTransform(
            g, views[t + 1] @ np.linalg.inv(views[t]))).max() for t, f in enumerate(frames[1:])]
    assert max(errors["rotation"]) < 0.5
    assert min(errors["translation"]) > 0.5


def test_textureless_sky_gives_identity_and_reset_gives_none():
    rng = np.random.default_rng(0)
    sky = np.clip(150 + rng.normal(0, 2, (5, 256, 320)), 0, 255).astype(np.uint8)
    est = CameraMotionEstimator()
    est(sky[0])
    for f in sky[1:]:
        np.testing.assert_allclose(est(f), np.eye(3))
        assert est.last_method == "identity"
    est.reset()
    assert est(sky[0]) is None
    assert est(sky[0][:128]) is None  # a new size starts again


def test_colour_input_and_downscaled_estimate_are_in_full_resolution():
    frames, _ = _scene(3, 512, 640, shift=(3.0, -2.0))
    est = CameraMotionEstimator(CameraMotionConfig(max_side=160))  # a 4x downscale
    est(cv2.cvtColor(frames[0], cv2.COLOR_GRAY2BGR))
    hom = est(cv2.cvtColor(frames[1], cv2.COLOR_GRAY2BGR))
    np.testing.assert_allclose(hom[:2, 2], [3.0, -2.0], atol=0.5)


# detector ---------------------------------------------------------------------------------------
def _run(frames, boxes, det, est, use_homography=True, warmup=3):
    hits = fps = 0
    for i, (f, box) in enumerate(zip(frames, boxes)):
        hom = est(f)
        xyxy, scores = det.detect(f, hom if use_homography else None)
        assert xyxy.dtype == np.float32 and scores.dtype == np.float32
        assert xyxy.shape == (len(scores), 4)
        assert np.all((scores > 0) & (scores < 1))
        if i < warmup:
            continue
        matched = [_iou(b, box) >= 0.5 for b in xyxy]
        hits += any(matched)
        fps += len(matched) - sum(matched)
    n = len(frames) - warmup
    return hits / n, fps / n


def test_moving_target_found_on_panning_background_and_compensation_removes_false_positives():
    frames, boxes = _scene(40, 256, 320, shift=(1.3, -0.7))
    recall, fp = _run(frames, boxes, MotionDetector(MotionConfig(), "rgb"), CameraMotionEstimator())
    assert recall >= 0.9
    assert fp <= 0.3
    # without the homography the panning texture is motion everywhere: either many false positives (with
    # the clutter normalisation off, so only the compensation differs) ...
    raw = MotionConfig(motion_clutter=0.0)
    recall_c, fp_c = _run(frames, boxes, MotionDetector(raw, "rgb"), CameraMotionEstimator())
    recall_u, fp_u = _run(frames, boxes, MotionDetector(raw, "rgb"), CameraMotionEstimator(), use_homography=False)
    assert recall_c >= 0.9 and fp_c <= 0.5
    assert fp_u >= 10.0 and fp_u > 20 * fp_c
    # ... or, with it on (the default), blindness wherever the moving texture is
    recall_d, _ = _run(frames, boxes, MotionDetector(MotionConfig(), "rgb"), CameraMotionEstimator(),
                       use_homography=False)
    assert recall_d < 0.6


def test_moving_target_in_colour_at_full_size():
    frames, boxes = _scene(25, 512, 640, shift=(-2.2, 0.9), seed=1)
    frames = [cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in frames]
    recall, fp = _run(frames, boxes, MotionDetector(MotionConfig(), "rgb"), CameraMotionEstimator())
    assert recall >= 0.9 and fp <= 0.5


def test_stationary_warm_blob_found_on_thermal_only():
    h, w = 256, 320
    frames, boxes = _scene(60, h, w, shift=(0.0, 0.0), target=(4, 4), contrast=40.0, target_speed=(0, 0))
    est, thermal, rgb = CameraMotionEstimator(), MotionDetector(MotionConfig(), "thermal"), MotionDetector(
        MotionConfig(), "rgb")
    for i, f in enumerate(frames):
        hom = est(f)
        xyxy, scores = thermal.detect(f, hom)
        assert any(_iou(b, boxes[i]) >= 0.5 for b in xyxy), i  # from the first frame to the last
        assert len(xyxy) <= 1
        rgb_boxes, _ = rgb.detect(f, hom)
    assert len(rgb_boxes) == 0  # the RGB stream has no contrast channel by default; motion has nothing


@pytest.mark.parametrize("image", [np.zeros((0, 0), np.uint8), np.full((64, 80), 128, np.uint8),
                                   np.full((64, 80, 3), 200, np.uint8)])
@pytest.mark.parametrize("modality", ["rgb", "thermal"])
def test_empty_and_uniform_images_give_empty_arrays(image, modality):
    det = MotionDetector(MotionConfig(), modality)
    for hom in (None, np.eye(3), np.array([[1, 0, 2.5], [0, 1, -1], [0, 0, 1.0]])):
        xyxy, scores = det.detect(image, hom)
        assert xyxy.shape == (0, 4) and xyxy.dtype == np.float32
        assert scores.shape == (0,) and scores.dtype == np.float32


def test_target_in_the_first_frame_leaves_no_ghost():
    frames, boxes = _scene(30, 256, 320, shift=(0.8, 0.4), target_speed=(3.0, 0.0))
    det, est = MotionDetector(MotionConfig(), "rgb"), CameraMotionEstimator()
    for i, f in enumerate(frames):
        xyxy, _ = det.detect(f, est(f))
        if i >= 5:  # the background was seeded with the target at its first place
            start = np.array(boxes[0], np.float32) + [0.8 * i, 0.4 * i, 0.8 * i, 0.4 * i]  # moved with the view
            assert not any(_iou(b, start) > 0 for b in xyxy), i
            assert any(_iou(b, boxes[i]) >= 0.5 for b in xyxy), i


def test_brightness_jump_does_not_flood_detections():
    frames, boxes = _scene(12, 256, 320, shift=(0.5, 0.5))
    det, est = MotionDetector(MotionConfig(), "rgb"), CameraMotionEstimator()
    for f in frames[:8]:
        det.detect(f, est(f))
    brighter = np.clip(frames[8].astype(np.int16) + 40, 0, 255).astype(np.uint8)
    xyxy, _ = det.detect(brighter, est(brighter))
    assert len(xyxy) <= 2


def test_reset_forgets_the_background():
    frames, boxes = _scene(6, 256, 320, shift=(0, 0))
    det = MotionDetector(MotionConfig(), "rgb")
    for f in frames:
        det.detect(f, None)
    det.reset()
    xyxy, _ = det.detect(frames[-1], None)  # first frame again: only seeds the model
    assert len(xyxy) == 0


@pytest.mark.parametrize("cls,key,value", [(MotionConfig, "threshold_rgb", 1.0), (MotionConfig, "box_fraction_thermal", 1.5),
                                           (MotionConfig, "learning_rate", 0.0),
                                           (MotionConfig, "max_area", 2.0), (CameraMotionConfig, "max_side", 8),
                                           (CameraMotionConfig, "max_model", "affine")])
def test_config_validation_names_the_key(cls, key, value):
    with pytest.raises(ValueError, match=rf"^detector\.{key}: "):
        cls(**{key: value}).validate("detector.")
    from pipeline.config import from_dict
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"motion\.{key}"):
        from_dict(cls, {key: value}, "motion")


def test_unknown_modality_is_rejected():
    with pytest.raises(ValueError, match="modality"):
        MotionDetector(MotionConfig(), "sonar")
