"""Flow stacks for the temporal stream: target motion kept, turret motion removed, padding and order."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from detectors.flow import FlowConfig, FlowStack, flow_field, make_dis, stack_flows

H, W = 96, 128


def texture(h: int, w: int, seed: int, sigma: float = 2.0) -> np.ndarray:
    """Smooth random texture, full 0..255 range (DIS needs gradients at its coarse scales)."""
    t = cv2.GaussianBlur(np.random.default_rng(seed).random((h, w), dtype=np.float32), (0, 0), sigma)
    return ((t - t.min()) / (t.max() - t.min()) * 255).astype(np.uint8)


BACKGROUND, SQUARE = texture(H, W, 0), texture(32, 32, 1)


def square_frame(x: int) -> np.ndarray:
    """Static background, a 32 px textured square with its left edge at column x, rows 32..63."""
    f = BACKGROUND.copy()
    f[32:64, x:x + 32] = SQUARE
    return f


def camera_pair(homography: np.ndarray, margin: int = 20, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(previous, current) crops of one large scene, the current one such that previous-frame pixel p is
    seen at current-frame pixel `homography @ p`: cur(x) = prev(H^-1 x), sampled from the scene."""
    scene = texture(H + 2 * margin, W + 2 * margin, seed)
    prev = scene[margin:margin + H, margin:margin + W].copy()
    to_scene = np.array([[1.0, 0, margin], [0, 1, margin], [0, 0, 1]]) @ np.linalg.inv(homography)
    cur = cv2.warpPerspective(scene, to_scene, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return prev, cur


def magnitude(field: np.ndarray) -> np.ndarray:
    return np.hypot(field[..., 0], field[..., 1])


def test_moving_target_kept_static_background_zero():
    cfg = FlowConfig(length=3)
    stack = FlowStack(cfg)
    for k in range(4):
        out = stack(square_frame(30 + 3 * k), None)
    assert out.shape == (6, H, W) and out.dtype == np.float32
    px = out * cfg.clip  # back to pixels per frame
    cx, cy = 39 + 16, 48  # the square's centre in the last frame
    for field in range(3):
        assert px[2 * field, cy, cx] > 2.0, field  # the target moves +3 px/frame in x
        assert abs(px[2 * field + 1, cy, cx]) < 0.5
    background = px[-2:, :, :24]  # columns the square never reached
    assert np.median(np.abs(background)) < 0.5
    # mean removal: the square covers 1/12 of the frame, so the background carries about -3/12 px
    assert -0.5 < np.median(px[-2, :, :24]) < -0.1


def test_flow_is_sampled_on_the_current_frame():
    """The square moves 8 px (columns 30..61 -> 38..69): columns 62..69 show the square now and showed
    background before; the field lives on the current frame, where the appearance stream sees the target."""
    field = flow_field(make_dis(), square_frame(30), square_frame(38), None, remove_mean=False)
    assert field[40:56, 62:70, 0].mean() > 6.0  # a field on the previous frame's pixels gives ~4 here
    assert abs(field[40:56, 46:54, 0].mean() - 8.0) < 0.5  # the square's core


def test_homography_removes_camera_translation():
    shift = np.array([[1.0, 0, 5], [0, 1, 2], [0, 0, 1]])  # turret pan: content moves by (5, 2) px
    prev, cur = camera_pair(shift)
    np.testing.assert_array_equal(cur[10:, 10:], prev[8:-2, 5:-5])  # the pair is what it claims to be
    dis = make_dis()
    raw = flow_field(dis, prev, cur, None, remove_mean=False)
    assert abs(np.median(raw[..., 0]) - 5) < 0.5 and abs(np.median(raw[..., 1]) - 2) < 0.5
    compensated = flow_field(dis, prev, cur, shift, remove_mean=False)
    assert np.median(magnitude(compensated)) < 0.5
    assert np.all(compensated[:2] == 0) and np.all(compensated[:, :5] == 0)  # uncovered strip: no flow
    stack = FlowStack(FlowConfig(length=2))
    stack(prev, None)
    out = stack(cur, shift) * stack.cfg.clip
    assert np.median(magnitude(out[2:].transpose(1, 2, 0))) < 0.5
    assert np.all(out[:2] == 0)


def test_homography_removes_rotation_that_mean_removal_cannot():
    """A 3 degree roll about the image centre moves the corners by ~4 px but has zero mean motion: only
    the homography removes it."""
    a, c = np.deg2rad(3.0), np.array([(W - 1) / 2, (H - 1) / 2])
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    centre = np.array([[1.0, 0, c[0]], [0, 1, c[1]], [0, 0, 1]])
    roll = centre @ rot @ np.linalg.inv(centre)
    prev, cur = camera_pair(roll)
    dis = make_dis()
    mean_only = flow_field(dis, prev, cur, None)
    assert np.median(magnitude(mean_only)) > 1.5
    assert np.median(magnitude(flow_field(dis, prev, cur, roll))) < 0.5


def test_zero_padding_oldest_first_then_newest_last():
    stack = FlowStack(FlowConfig(length=3))
    first = stack(square_frame(30))
    assert first.shape == (6, H, W) and not first.any()  # no pair yet
    second = stack(square_frame(33))
    assert not second[:4].any() and second[4, 48, 49] * 20 > 2.0  # newest pair in the last two channels
    third = stack(square_frame(33))  # the square stops
    assert not third[:2].any()
    assert third[2, 48, 49] * 20 > 2.0  # the older pair (it moved) moved one slot towards the front
    assert abs(third[4, 48, 49] * 20) < 0.5  # the newest pair (it stood still)


def test_clip_then_scale_to_unit_range():
    prev, cur = camera_pair(np.array([[1.0, 0, 5], [0, 1, 2], [0, 0, 1]]))
    stack = FlowStack(FlowConfig(length=1, clip=2.0, remove_mean=False))
    stack(prev)
    out = stack(cur)  # no homography: the whole frame moves (5, 2) px
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert np.median(out[0]) == 1.0  # 5 px clipped to 2 px, divided by 2
    assert abs(np.median(out[1]) - 1.0) < 0.25  # 2 px, at the clip


def test_reset_and_size_change_restart_the_stack():
    stack = FlowStack(FlowConfig(length=2))
    stack(square_frame(30))
    assert stack(square_frame(33)).any()
    stack.reset()
    assert not stack(square_frame(36)).any()  # first frame again
    assert stack(square_frame(39)).any()
    small = cv2.resize(square_frame(42), (64, 48))
    out = stack(small)  # another size: a new stream, so no pair with the previous frame
    assert out.shape == (4, 48, 64) and not out.any()
    assert stack(cv2.resize(square_frame(45), (64, 48))).any()


def test_colour_input_is_converted_and_bad_input_rejected():
    stack = FlowStack(FlowConfig(length=1))
    assert stack(cv2.cvtColor(square_frame(30), cv2.COLOR_GRAY2BGR)).shape == (2, H, W)
    with pytest.raises(ValueError, match="gray"):
        stack(square_frame(33).astype(np.float32))


def test_stack_flows_hand_made_fields():
    a, b, c = (np.full((2, 3, 2), v, np.float32) * np.array([1, -1], np.float32) for v in (1.0, 2.0, 3.0))
    out = stack_flows([a, b], 3)
    assert out.shape == (6, 2, 3)
    np.testing.assert_array_equal(out[:, 0, 0], [0, 0, 1, -1, 2, -2])
    np.testing.assert_array_equal(stack_flows([a, b, c, a], 3)[:, 1, 2], [2, -2, 3, -3, 1, -1])  # newest 3
    with pytest.raises(ValueError, match="fields"):
        stack_flows([a, np.zeros((4, 3, 2), np.float32)], 3)
    with pytest.raises(ValueError, match="length"):
        stack_flows([a], 0)


@pytest.mark.parametrize("kw,key", [({"length": 0}, "length"), ({"scale": 0.0}, "scale"), ({"scale": 1.5}, "scale"),
                                    ({"preset": "slow"}, "preset"), ({"clip": 0.0}, "clip")])
def test_validate_names_the_key(kw, key):
    with pytest.raises(ValueError, match=f"^flow.{key}: "):
        FlowConfig(**kw).validate("flow.")
