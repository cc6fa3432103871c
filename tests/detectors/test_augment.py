"""Sensor appearance augmentations: each operation's property in numbers, determinism, configuration."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from detectors.augment import (THERMAL_OPS, VISIBLE_OPS, AppearanceConfig, apply_op, augment, block_quantise,
                               colour_matrix, disc_kernel, line_kernel)
from pipeline.config import from_dict
from pipeline.errors import ConfigError


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def scene(shape=(128, 160), seed: int = 0) -> np.ndarray:
    """A smooth gradient with some texture and a bright square, inside 40..200 (no clipping)."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 70 + 60 * xx / w + 30 * yy / h + 8 * np.random.default_rng(seed).standard_normal((h, w))
    img[h // 3:h // 3 + 12, w // 2:w // 2 + 12] += 50
    img = np.clip(img, 40, 200).astype(np.uint8)
    if len(shape) == 3:
        img = np.stack([img, (img * 0.9).astype(np.uint8), (img * 0.8 + 20).astype(np.uint8)], -1)
    return img


def cfg_with(modality: str, op: str, **kw) -> AppearanceConfig:
    cfg = AppearanceConfig()
    section = cfg.thermal if modality == "thermal" else cfg.visible
    setattr(section, op, dataclasses.replace(getattr(section, op), **kw))
    return cfg


def hf_energy(img: np.ndarray) -> float:
    return float(np.abs(cv2.Laplacian(img.astype(np.float32), cv2.CV_32F)).mean())


def block_edge_ratio(img: np.ndarray, b: int = 8) -> float:
    """Mean |horizontal + vertical step| across b-pixel block boundaries over that inside blocks."""
    g = img.astype(np.float32) if img.ndim == 2 else img.astype(np.float32).mean(2)
    dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    at_x, at_y = (np.arange(dx.shape[1]) % b) == b - 1, (np.arange(dy.shape[0]) % b) == b - 1
    edge = np.r_[dx[:, at_x].ravel(), dy[at_y].ravel()].mean()
    inner = np.r_[dx[:, ~at_x].ravel(), dy[~at_y].ravel()].mean()
    return float(edge / inner)


def test_polarity_maps_v_to_255_minus_v():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert (apply_op(img, "polarity", "thermal", rng()) == 255 - img).all()


def test_agc_gain_and_offset_move_the_mean_and_contrast_as_configured():
    img = scene()
    kw = dict(p_stretch=0.0, p_equalize=0.0, gamma=(1.0, 1.0))
    up = apply_op(img, "agc", "thermal", rng(), cfg_with("thermal", "agc", gain=(1.0, 1.0), offset=(20.0, 20.0), **kw))
    assert up.mean() == pytest.approx(img.mean() + 20, abs=0.5)
    assert up.std() == pytest.approx(img.std(), abs=0.3)
    wide = apply_op(img, "agc", "thermal", rng(), cfg_with("thermal", "agc", gain=(1.3, 1.3), offset=(0.0, 0.0), **kw))
    assert wide.mean() == pytest.approx(img.mean(), abs=0.5)
    assert wide.std() == pytest.approx(1.3 * img.std(), rel=0.02)
    dark = apply_op(img, "agc", "thermal", rng(), cfg_with("thermal", "agc", gain=(1.0, 1.0), offset=(0.0, 0.0),
                                                               p_stretch=0.0, p_equalize=0.0, gamma=(2.0, 2.0)))
    v = 120
    assert dark[img == v].mean() == pytest.approx(255 * (v / 255) ** 2, abs=1.0)  # gamma as configured


def test_agc_restretch_maps_the_percentile_range_onto_the_output_range():
    img = np.random.default_rng(0).integers(100, 141, (64, 64)).astype(np.uint8)  # a dull scene: 100..140
    kw = dict(p_stretch=1.0, p_equalize=0.0, gamma=(1.0, 1.0), low_pct=(0.0, 0.0), high_pct=(100.0, 100.0),
              out_low=(10.0, 10.0), out_high=(250.0, 250.0))
    out = apply_op(img, "agc", "thermal", rng(), cfg_with("thermal", "agc", max_gain=10.0, **kw))
    assert (out.min(), out.max()) == (10, 250)
    assert np.corrcoef(out.ravel(), img.ravel())[0, 1] > 0.999  # linear
    capped = apply_op(img, "agc", "thermal", rng(), cfg_with("thermal", "agc", max_gain=2.0, **kw))
    assert int(capped.max()) - int(capped.min()) == pytest.approx(80, abs=1)  # the gain stops at max_gain
    assert capped.mean() == pytest.approx(130, abs=2)                         # about the output's middle


def test_plateau_equalisation_spreads_the_histogram_and_keeps_the_order():
    img = np.clip(np.random.default_rng(0).normal(120, 6, (64, 64)), 0, 255).astype(np.uint8)
    out = apply_op(img, "agc", "thermal", rng(), cfg_with(
        "thermal", "agc", p_stretch=0.0, gain=(1.0, 1.0), offset=(0.0, 0.0), gamma=(1.0, 1.0), p_equalize=1.0))
    assert out.std() > 5 * img.std() and out.min() == 0 and out.max() >= 250
    order = np.argsort(img.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()  # monotonic grey mapping


def test_fixed_pattern_stripes_are_constant_along_columns():
    img = np.full((64, 80), 100, np.uint8)
    out = apply_op(img, "fixed_pattern", "thermal", rng(), cfg_with(
        "thermal", "fixed_pattern", column_std=(3.0, 3.0), row_std=(0.0, 0.0), pixel_gain_std=(0.0, 0.0)))
    assert (out == out[0:1]).all()                         # every column constant
    assert out[0].astype(float).std() == pytest.approx(3.0, rel=0.35)
    rows = apply_op(img, "fixed_pattern", "thermal", rng(), cfg_with(
        "thermal", "fixed_pattern", column_std=(0.0, 0.0), row_std=(2.0, 2.0), pixel_gain_std=(0.0, 0.0)))
    assert (rows == rows[:, 0:1]).all() and rows[:, 0].std() > 1.0  # row stripes constant along rows
    pix = apply_op(np.full((64, 80), 200, np.uint8), "fixed_pattern", "thermal", rng(), cfg_with(
        "thermal", "fixed_pattern", column_std=(0.0, 0.0), row_std=(0.0, 0.0), pixel_gain_std=(0.02, 0.02)))
    assert pix.astype(float).std() == pytest.approx(4.0, rel=0.15)    # 2 % of 200


@pytest.mark.parametrize("modality,shape", [("thermal", (96, 96)), ("rgb", (96, 96, 3))])
def test_temporal_noise_has_the_configured_std_and_zero_mean(modality, shape):
    img = np.full(shape, 128, np.uint8)
    out = apply_op(img, "noise", modality, rng(), cfg_with(modality, "noise", std=(5.0, 5.0))).astype(float)
    assert out.mean() == pytest.approx(128, abs=0.3)
    luma = out if out.ndim == 2 else out.mean(2)
    assert luma.std() == pytest.approx(5.0, rel=0.1)
    if out.ndim == 3:  # some colour noise too, weaker than the luma noise
        assert 0.5 < (out - out.mean(2, keepdims=True)).std() < 4


@pytest.mark.parametrize("op", ["blur", "defocus", "motion_blur", "resolution"])
def test_blurs_remove_fine_detail_and_keep_the_mean(op):
    img = scene()
    out = apply_op(img, op, "thermal", rng())
    assert hf_energy(out) < 0.7 * hf_energy(img)
    assert out.mean() == pytest.approx(img.mean(), abs=1.0)


def test_blur_kernels():
    d = disc_kernel(2.5)
    assert d.sum() == pytest.approx(1.0) and d.shape == (7, 7) and d[3, 3] == d.max() and d[0, 0] == 0
    line = line_kernel(6.0, 0.0)  # horizontal: blurs along x, within a pixel-wide (anti-aliased) line
    c = line.shape[0] // 2
    assert line.sum() == pytest.approx(1.0) and line[c].sum() > 0.6
    assert line[c - 1:c + 2].sum() == pytest.approx(1.0) and np.count_nonzero(line[c] > 0.05) >= 6
    assert line_kernel(6.0, np.pi / 2) == pytest.approx(line.T, abs=1e-6)  # vertical: the same, turned


def test_vignetting_darkens_corners_more_than_the_centre():
    img = np.full((100, 120), 200, np.uint8)
    out = apply_op(img, "vignette", "thermal", rng(), cfg_with("thermal", "vignette", strength=(0.4, 0.4),
                                                                 p_bright=0.0)).astype(float)
    corners = np.mean([out[:5, :5].mean(), out[:5, -5:].mean(), out[-5:, :5].mean(), out[-5:, -5:].mean()])
    centre = out[45:55, 55:65].mean()
    assert centre > 195 and corners < 0.8 * centre
    rgb = apply_op(np.full((100, 120, 3), 200, np.uint8), "vignette", "rgb", rng(),
                   cfg_with("rgb", "vignette", strength=(0.4, 0.4))).astype(float)
    assert rgb[:5, :5].mean() < 0.8 * rgb[45:55, 55:65].mean()
    warm = apply_op(np.full((100, 120), 100, np.uint8), "vignette", "thermal", rng(),
                    cfg_with("thermal", "vignette", strength=(0.4, 0.4), p_bright=1.0)).astype(float)
    assert warm[:5, :5].mean() > warm[45:55, 55:65].mean() + 30  # a warm housing brightens the edges


@pytest.mark.parametrize("modality,shape", [("thermal", (128, 160)), ("rgb", (128, 160, 3))])
def test_jpeg_changes_the_image_and_leaves_8x8_block_edges(modality, shape):
    img = scene(shape)
    assert block_edge_ratio(img) == pytest.approx(1.0, abs=0.1)
    out = apply_op(img, "jpeg", modality, rng(), cfg_with(modality, "jpeg", quality=(10, 10)))
    assert np.abs(out.astype(int) - img).mean() > 1.0
    assert block_edge_ratio(out) > 1.3
    fine = apply_op(img, "jpeg", modality, rng(), cfg_with(modality, "jpeg", quality=(95, 95)))
    assert np.abs(fine.astype(int) - img).mean() < np.abs(out.astype(int) - img).mean() / 2


@pytest.mark.parametrize("b", [8, 16])
def test_codec_blocks_are_measurable_and_deblocking_softens_them(b):
    img = scene()
    blocky = apply_op(img, "codec", "thermal", rng(), cfg_with("thermal", "codec", blocks=(b,), step=(16.0, 16.0),
                                                                p_deblock=0.0))
    smooth = apply_op(img, "codec", "thermal", rng(), cfg_with("thermal", "codec", blocks=(b,), step=(16.0, 16.0),
                                                                p_deblock=1.0))
    assert block_edge_ratio(blocky, b) > 1.4
    assert block_edge_ratio(smooth, b) < block_edge_ratio(blocky, b) - 0.2
    assert hf_energy(blocky) < hf_energy(img)  # fine texture is lost
    rgb = apply_op(scene(img.shape + (3,)), "codec", "rgb", rng(), cfg_with("rgb", "codec", blocks=(b,),
                                                                             step=(16.0, 16.0), p_deblock=0.0))
    assert block_edge_ratio(rgb, b) > 1.3


def test_codec_erases_a_faint_small_target_but_not_a_strong_one():
    flat = np.full((32, 32), 100.0, np.float32)
    faint, strong = flat.copy(), flat.copy()
    faint[13:15, 13:15] += 8
    strong[13:15, 13:15] += 80
    assert np.allclose(block_quantise(flat, 8, 20.0), 100.0, atol=1.0)
    assert np.abs(block_quantise(faint, 8, 20.0) - 100.0).max() < 2.0
    assert block_quantise(strong, 8, 20.0)[13:15, 13:15].mean() > 130


def test_haze_lowers_contrast_and_moves_toward_the_airlight():
    img = scene((96, 128, 3))
    out = apply_op(img, "haze", "rgb", rng(), cfg_with("rgb", "haze", strength=(0.5, 0.5), gradient=(0.0, 0.0),
                                                       airlight=(230.0, 230.0))).astype(float)
    assert out.std() == pytest.approx(0.5 * img.std(), rel=0.1)
    assert out.mean() == pytest.approx(0.5 * img.mean() + 0.5 * 230 * 0.983, abs=2.0)
    graded = apply_op(img, "haze", "rgb", rng(), cfg_with("rgb", "haze", strength=(0.6, 0.6), gradient=(1.0, 1.0)))
    top, bottom = graded[:10].astype(float), graded[-10:].astype(float)
    assert bottom.std() < top.std() and bottom.mean() > top.mean()  # thicker toward the horizon


def test_exposure_colour_and_greyscale():
    img = (scene((64, 64, 3)) // 2).astype(np.uint8)  # dark: room to double
    brighter = apply_op(img, "exposure", "rgb", rng(), cfg_with("rgb", "exposure", ev=(1.0, 1.0),
                                                                contrast=(1.0, 1.0), gamma=(1.0, 1.0)))
    assert brighter.mean() == pytest.approx(2 * img.mean(), rel=0.01)
    grey = apply_op(img, "colour", "rgb", rng(), cfg_with("rgb", "colour", hue=(0.0, 0.0), saturation=(0.0, 0.0),
                                                          white_balance=(1.0, 1.0)))
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1
    warm = apply_op(img, "colour", "rgb", rng(), cfg_with("rgb", "colour", hue=(0.0, 0.0), saturation=(1.0, 1.0),
                                                          white_balance=(1.2, 1.2)))
    ratio = warm.reshape(-1, 3).mean(0) / img.reshape(-1, 3).mean(0)
    assert ratio == pytest.approx([1.2, 1.0, 1.2], abs=0.01)
    m = colour_matrix(40.0, 1.0, 1.0, 1.0)
    assert m.sum(1) == pytest.approx([1, 1, 1], abs=1e-5)  # a hue rotation keeps greys grey
    mono = apply_op(img, "greyscale", "rgb", rng())
    assert mono.shape == img.shape and (mono == mono[..., :1]).all()


@pytest.mark.parametrize("modality,shape,ops", [("thermal", (70, 90), THERMAL_OPS), ("rgb", (70, 90, 3), VISIBLE_OPS)])
def test_every_op_keeps_dtype_and_shape(modality, shape, ops):
    tiny = np.random.default_rng(1).integers(0, 256, (5, 7) + shape[2:]).astype(np.uint8)  # odd, under a block
    for img in (scene(shape), tiny):
        for op in ops:
            out = apply_op(img, op, modality, rng())
            assert out.dtype == np.uint8 and out.shape == img.shape, op


@pytest.mark.parametrize("modality,shape", [("thermal", (64, 80)), ("rgb", (64, 80, 3))])
def test_same_seed_same_output_and_probability_zero_is_a_copy(modality, shape):
    img = scene(shape)
    on = AppearanceConfig()
    for section in (on.thermal, on.visible):
        for f in dataclasses.fields(section):
            getattr(section, f.name).p = 1.0
    a, b = augment(img, modality, rng(3), on), augment(img, modality, rng(3), on)
    assert (a == b).all() and a.dtype == np.uint8 and a.shape == img.shape
    assert not (augment(img, modality, rng(4), on) == a).all()
    outs = [augment(img, modality, rng(s)) for s in range(8)]  # the defaults change most samples
    assert sum(not (o == img).all() for o in outs) >= 6
    for cfg in (AppearanceConfig.off(), AppearanceConfig(p=0.0)):
        out = augment(img, modality, rng(), cfg)
        assert (out == img).all() and out is not img


def test_bad_input_and_bad_config_are_one_line_errors_naming_the_key():
    with pytest.raises(ValueError, match="modality"):
        augment(np.zeros((8, 8), np.uint8), "ir", rng())
    with pytest.raises(ValueError, match="H x W x 3"):
        augment(np.zeros((8, 8), np.uint8), "rgb", rng())
    with pytest.raises(ValueError, match="uint8"):
        augment(np.zeros((8, 8), np.float32), "thermal", rng())
    with pytest.raises(ValueError, match="no operation 'haze' for thermal"):
        apply_op(np.zeros((8, 8), np.uint8), "haze", "thermal", rng())
    cfg = from_dict(AppearanceConfig, {"thermal": {"noise": {"p": 0.9, "std": [2, 3]}}}, "augment")
    assert cfg.thermal.noise.p == 0.9 and cfg.thermal.noise.std == (2.0, 3.0) and cfg.thermal.polarity.p == 0.3
    for data, key in [({"thermal": {"noise": {"std": [5, 2]}}}, "augment.thermal.noise.std"),
                      ({"visible": {"haze": {"p": 1.5}}}, "augment.visible.haze.p"),
                      ({"thermal": {"codec": {"blocks": [7]}}}, "augment.thermal.codec.blocks"),
                      ({"thermal": {"agc": {"low_pct": [0, 99], "high_pct": [98, 100]}}}, "augment.thermal.agc.low_pct"),
                      ({"visible": {"polarity": {"p": 1.0}}}, "augment.visible.polarity"),
                      ({"p": -0.1}, "augment.p")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
            from_dict(AppearanceConfig, data, "augment")
        assert "\n" not in str(e.value)
    bad = AppearanceConfig()
    bad.visible.jpeg.quality = (50, 10)
    with pytest.raises(ValueError, match=r"visible\.jpeg\.quality"):
        bad.validate()
