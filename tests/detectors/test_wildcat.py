"""WILDCAT: spatial pooling against a numpy reference, presets, gradients, class-wise pooling, config,
localization in input pixels, multi-scale resampling, and a tiny model trained from presence labels."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectors.wildcat import (IMAGENET_MEAN, POOLING_PRESETS, ClassWisePool, Wildcat, WildcatConfig, localize,
                               localize_batch, region_count, wildcat_pool)
from pipeline.config import from_dict
from pipeline.errors import ConfigError
from pipeline.types import Detections


class TinyBackbone(nn.Module):
    """Three 'same'-padded stride-2 convs: stride 8, cell centres at input index 8 * j (offset 0)."""
    out_channels, stride = 32, 8

    def __init__(self) -> None:
        super().__init__()
        layers, c = [], 3
        for co in (16, 32, 32):
            layers += [nn.Conv2d(c, co, 3, 2, 1), nn.BatchNorm2d(co), nn.ReLU()]
            c = co
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def reference_pool(maps: np.ndarray, kmax, kmin, alpha: float) -> np.ndarray:
    """Sort-based: mean of the kmax largest + alpha * mean of the kmin smallest (no / 2)."""
    flat = np.sort(maps.reshape(*maps.shape[:2], -1), axis=2)
    n = flat.shape[2]
    hi, lo = (min(k, n) if isinstance(k, int) else max(1, round(k * n)) * (k > 0) for k in (kmax, kmin))
    out = flat[:, :, n - hi:].mean(2)
    return out + alpha * flat[:, :, :lo].mean(2) if lo and alpha else out


@pytest.mark.parametrize("kmax,kmin,alpha", [(3, 2, 0.7), (0.25, 0.1, 0.5), (1.0, 0, 0.0), (0.3, 0.3, 1.0),
                                             (50, 1, 1.0)])
def test_pool_matches_numpy_reference(kmax, kmin, alpha):
    maps = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(wildcat_pool(maps, kmax, kmin, alpha).numpy(),
                               reference_pool(maps.numpy(), kmax, kmin, alpha), rtol=1e-12)


def test_region_count():
    assert [region_count(k, 35) for k in (0, 1, 3, 99, 0.0, 0.1, 0.2, 1.0, 0.001)] == [0, 1, 3, 35, 0, 4, 7, 35, 1]
    assert region_count(np.int64(2), 10) == 2
    for bad in (-1, 1.5, -0.1):
        with pytest.raises(ValueError):
            region_count(bad, 10)
    with pytest.raises(TypeError):
        region_count(True, 10)
    with pytest.raises(ValueError, match="kmax"):
        wildcat_pool(torch.zeros(1, 1, 2, 2), 0, 1, 1.0)


def test_presets_are_the_special_cases():
    maps = torch.randn(3, 2, 6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = maps.flatten(2)
    pool = {name: wildcat_pool(maps, *params) for name, params in POOLING_PRESETS.items()}
    torch.testing.assert_close(pool["max"], flat.amax(2))
    torch.testing.assert_close(pool["gap"], flat.mean(2))
    torch.testing.assert_close(pool["maxmin"], flat.amax(2) + flat.amin(2))  # no division by 2
    s = flat.sort(2, descending=True).values
    top6, low6 = s[..., :6].mean(2), s[..., -6:].mean(2)  # 0.2 * 30 positions
    torch.testing.assert_close(pool["weldon"], top6 + low6)
    torch.testing.assert_close(pool["wildcat"], top6 + 0.7 * low6)


def test_gradients_only_at_selected_positions():
    maps = torch.randn(2, 2, 4, 5, generator=torch.Generator().manual_seed(2), requires_grad=True)
    wildcat_pool(maps, 3, 2, 0.7).sum().backward()
    flat, grad = maps.detach().flatten(2), maps.grad.flatten(2)
    order = flat.argsort(2, descending=True)
    expected = torch.zeros_like(flat)
    expected.scatter_(2, order[..., :3], 1 / 3)
    expected.scatter_(2, order[..., -2:], 0.7 / 2)
    torch.testing.assert_close(grad, expected)
    assert int((grad != 0).sum()) == 2 * 2 * 5


def test_class_wise_pool():
    x = torch.arange(2 * 12 * 2 * 3, dtype=torch.float32).view(2, 12, 2, 3)
    out = ClassWisePool(4)(x)
    assert out.shape == (2, 3, 2, 3)
    torch.testing.assert_close(out[1, 2], x[1, 8:12].mean(0))
    with pytest.raises(ValueError, match="multiple"):
        ClassWisePool(5)(x)


def test_config_validation_and_yaml_types():
    assert WildcatConfig().pool_params() == (0.2, 0.2, 0.7)
    assert WildcatConfig(pooling="max", kmax=3, alpha=0.5).pool_params() == (3, 0, 0.5)
    assert from_dict(WildcatConfig, {"pooling": "gap", "kmax": 1}).pool_params()[0] == 1        # one position
    assert isinstance(from_dict(WildcatConfig, {"kmax": 1.0}).kmax, float)                     # all positions
    for bad, key in [({"pooling": "lse"}, "pooling"), ({"kmax": 0}, "kmax"), ({"kmax": 1.5}, "kmax"),
                     ({"kmin": -1}, "kmin"), ({"alpha": 1.2}, "alpha"), ({"multiscale": [0.5, 1.0]}, "multiscale"),
                     ({"box_threshold": 1.0}, "box_threshold"), ({"maps_per_class": 0}, "maps_per_class"),
                     ({"classes": []}, "classes")]:
        with pytest.raises(ConfigError, match=f"wildcat.{key}:"):
            from_dict(WildcatConfig, bad, "wildcat")


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = Wildcat(TinyBackbone(), WildcatConfig(classes=["drone", "bird"], maps_per_class=3)).eval()
    out = model(torch.rand(2, 3, 64, 48))
    assert out["scores"].shape == (2, 2) and out["maps"].shape == (2, 2, 8, 6)
    labels = torch.tensor([[1, 0], [0, 1]])
    p = torch.sigmoid(out["scores"])
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    torch.testing.assert_close(model.loss(out["scores"], labels), expected)
    with pytest.raises(ValueError, match="labels"):
        model.loss(out["scores"], labels[:, :1])


class AvgStub(nn.Module):
    """Non-overlapping 8x8 average: cell j covers pixels [8j, 8j + 8), centre index 8j + 3.5."""
    out_channels, stride, offset = 3, 8, 3.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 8)


class SameStub(nn.Module):
    """Three 'same'-padded 3x3 stride-2 box filters: cell j centred on pixel index 8j; no offset attribute."""
    out_channels, stride = 3, 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            x = F.avg_pool2d(x, 3, 2, 1, count_include_pad=True)
        return x


@pytest.mark.parametrize("stub,pixel,expected", [(AvgStub, (44, 20), (44.0, 20.0)),
                                                 (SameStub, (40, 16), (40.5, 16.5))])
def test_peak_cell_maps_to_input_pixel(stub, pixel, expected):
    model = Wildcat(stub(), WildcatConfig(maps_per_class=1)).eval()
    with torch.no_grad():
        model.transfer.weight.fill_(1.0)
        image = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).repeat(1, 1, 64, 72)  # normalizes to 0
        image[0, :, pixel[1], pixel[0]] = 1.0
        out = model(image)
    loc = localize(out["maps"][0, 0], model.stride, (64, 72), 0.5, model.offset)
    assert loc.point == pytest.approx(expected)
    cell = out["maps"][0, 0].argmax().item()
    assert divmod(cell, 9) == (2, 5)


def test_localize_box_point_and_clipping():
    m = torch.zeros(8, 8)
    m[2, 5], m[2, 6], m[3, 5] = 10.0, 6.0, 6.0
    m[6, 1], m[7, 7] = 7.0, -50.0  # a separate bright cell (not joined) and strong negative evidence
    loc = localize(m, 8, (64, 64), threshold=0.5, box="cells")
    assert loc.peak == 10.0
    assert loc.box == pytest.approx((36.5, 12.5, 52.5, 28.5))  # cells 5..6 x 2..3, one stride each
    assert loc.point == pytest.approx((8 * (5 + 3 / 14) + 0.5, 8 * (2 + 3 / 14) + 0.5))  # parabola vertex
    corner = torch.zeros(4, 4)
    corner[0, 0] = 1.0
    c = localize(corner, 8, (30, 30), threshold=0.5, offset=3.5, box="cells")
    assert c.point == (4.0, 4.0) and c.box == (0.0, 0.0, 8.0, 8.0)
    edge = localize(corner.T.flip(0), 8, (30, 30), threshold=0.5, offset=3.5, box="cells")  # peak in the last row
    assert edge.box == (0.0, 24.0, 8.0, 30.0)  # 28 + 4 > 30: clipped


def test_localize_interpolated_box():
    # An isolated peak cell: the interpolated map reaches half the peak within half a cell of its centre,
    # so the box is one stride wide, centred on it (cell (2, 5) centred at pixel 40.5, 16.5; offset 0).
    m = torch.zeros(8, 8)
    m[2, 5] = 10.0
    loc = localize(m, 8, (64, 64), threshold=0.5)
    assert loc.box == (36.0, 12.0, 45.0, 21.0)  # pixels 36..44: centres 36.5..44.5 within 4 px of 40.5
    # A neighbour at 6 to the right: the map stays >= 5 up to (6 - 5) / 6 * 8 px past that cell's centre
    # (it falls from 6 to 0 over 8 px): the box widens by a fraction of a cell, not by whole cells.
    m[2, 6] = 6.0
    loc = localize(m, 8, (64, 64), threshold=0.5)
    x_end = 48.5 + 8 * (6 - 5) / 6  # cell 6's centre at 48.5, value falls from 6 to 0 over 8 px
    assert loc.box[0] == 36.0 and loc.box[2] == pytest.approx(np.floor(x_end - 0.5) + 1)
    assert loc.box[1] == 12.0 and loc.box[3] == 21.0
    # lower threshold, wider box; a separate bright spot is never joined
    m[2, 1] = 9.0
    wide = localize(m, 8, (64, 64), threshold=0.2)
    assert wide.box[0] > 16 and wide.box[2] > loc.box[2]
    # at the map's corner the box reaches the image border (the map is held constant past the outer centres)
    corner = torch.zeros(4, 4)
    corner[0, 0] = 1.0
    c = localize(corner, 8, (30, 30), threshold=0.5, offset=3.5)
    assert c.box[:2] == (0.0, 0.0) and c.box[2:] == (8.0, 8.0)  # centre 4.0, half-max 4 px further
    with pytest.raises(ValueError, match="box"):
        localize(corner, 8, (30, 30), box="blob")


def test_localize_batch_feeds_detections():
    maps = torch.zeros(2, 2, 4, 4)
    maps[0, 0, 1, 2] = maps[1, 1, 3, 0] = 5.0
    scores = torch.tensor([[2.0, -3.0], [-1.0, 0.5]])
    res = localize_batch(scores, maps, 8, (32, 32), min_score=0.5)
    (b0, s0, l0, p0), (b1, s1, l1, p1) = res
    assert l0.tolist() == [0] and l1.tolist() == [1] and s0[0] == pytest.approx(1 / (1 + math.exp(-2)))
    assert p0.tolist() == [[16.5, 8.5]] and p1.tolist() == [[0.5, 24.5]]
    det = Detections(b0, s0, l0, extras={"point": p0})
    assert det.xyxy.dtype == np.float32 and len(det) == 1
    assert [len(r[0]) for r in localize_batch(scores, maps, 8, (32, 32), min_score=0.99)] == [0, 0]


def test_multiscale_resampling_is_exact_and_eval_only():
    torch.manual_seed(0)
    model = Wildcat(TinyBackbone(), WildcatConfig(multiscale=(1.0, 0.5)))
    # a map made on the half-size image whose cells hold their own centre's x in full-size pixels
    src = ((8 * torch.arange(4.0) + 0.5) / 0.5).expand(1, 1, 3, 4)
    out = model._to_grid(src, (6, 8), (0.5, 0.5))[0, 0]
    torch.testing.assert_close(out[:, 1:7], (8 * torch.arange(1.0, 7.0) + 0.5).expand(6, 6))
    images = torch.rand(2, 3, 48, 64)
    train_out = model.train()(images)
    single = Wildcat(model.backbone, WildcatConfig()).eval()
    single.transfer = model.transfer
    multi_out, single_out = model.eval()(images), single(images)
    assert multi_out["maps"].shape == single_out["maps"].shape == train_out["maps"].shape == (2, 1, 6, 8)
    assert not torch.allclose(multi_out["scores"], single_out["scores"])
    model.cfg.multiscale = (1.0, 1.0)
    torch.testing.assert_close(model(images)["maps"], single_out["maps"])


def blob_images(n: int, g: np.random.Generator, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noisy grey images; the first half hold a small bright Gaussian blob (sigma 1.5 px), a quarter a
    dark one (a distractor). Returns images, presence labels (n, 1) and blob centres (x, y)."""
    yy, xx = np.mgrid[:size, :size] + 0.5
    images = 0.3 + 0.3 * g.random((n, 1, 1, 1)) + 0.08 * g.standard_normal((n, 3, size, size))
    labels = (np.arange(n) < n // 2).astype(np.float32)
    centres = g.uniform(6, size - 6, (n, 2))
    for k in range(n):
        blob = np.exp(-((xx - centres[k, 0]) ** 2 + (yy - centres[k, 1]) ** 2) / (2 * 1.5 ** 2))
        images[k] += (0.5 if labels[k] else -0.3 * (k % 2)) * blob
    return torch.tensor(np.clip(images, 0, 1), dtype=torch.float32), torch.tensor(labels)[:, None], centres


def test_tiny_model_learns_presence_and_points_at_the_blob():
    torch.manual_seed(0)
    g = np.random.default_rng(0)
    model = Wildcat(TinyBackbone(), WildcatConfig())  # the default 'wildcat' preset: k = 0.2, alpha = 0.7
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    t0 = time.perf_counter()
    for _ in range(300):
        images, labels, _ = blob_images(16, g)
        loss = model.loss(model(images)["scores"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    images, labels, centres = blob_images(200, np.random.default_rng(1))
    with torch.no_grad():
        out = model.eval()(images)
    accuracy = ((out["scores"] > 0).float() == labels).float().mean().item()
    points = np.array([localize(out["maps"][k, 0], model.stride, (64, 64)).point for k in range(100)])
    error = np.hypot(*(points - centres[:100]).T)
    print(f"accuracy {accuracy:.3f}, pointing within 4 px {np.mean(error <= 4):.2f}, median error "
          f"{np.median(error):.2f} px, {time.perf_counter() - t0:.1f} s")
    assert accuracy >= 0.9
    assert np.mean(error <= 4) >= 0.8  # half a cell of the stride-8 map
    found = [(b[0], c) for (b, *_), c in zip(model.localize(out, (64, 64))[:100], centres) if len(b)]
    inside = [x0 <= x <= x1 and y0 <= y <= y1 for (x0, y0, x1, y1), (x, y) in found]
    assert len(found) >= 90 and np.mean(inside) >= 0.8
