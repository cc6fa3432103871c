"""Scale-jitter crops for the pyramid detector: the chosen drone's size follows the configured range, a held-out
band is never produced, boxes stay on the object's pixels at every scale, and the config names bad keys."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import from_dict
from pipeline.errors import ConfigError
from pipeline.training.scale_data import ScaleConfig, ScaleJitterDataset, box_size, scale_dataset


class OneDrone:
    """A FrameStore stand-in: n copies of a grey frame with one bright 20 x 16 px drone."""

    def __init__(self, n: int = 200, modality: str = "thermal", size=(256, 320)):
        img = np.full(size, 90, np.uint8)
        img[100:116, 50:70] = 250
        self.img = img if modality == "thermal" else np.repeat(img[..., None], 3, 2)
        self.boxes = np.array([[50, 100, 70, 116]], np.float32)
        self.n, self.modality = n, modality

    def __len__(self):
        return self.n

    def frame(self, i):
        return self.img, self.boxes, np.array([1]), self.modality


def sizes(ds, n):
    out = []
    for i in range(n):
        _, t = ds[i]
        if len(t["boxes"]):
            out.append(float(box_size(t["boxes"].numpy())[0]))
    return np.array(out)


def test_sizes_span_the_range_log_uniformly():
    ds = ScaleJitterDataset(OneDrone(), crop=256, p_object=1.0, seed=0, size_range=(3, 200), p_range=1.0)
    s = sizes(ds, 200)
    assert len(s) >= 190
    assert s.min() >= 2.5 and s.max() <= 0.9 * 256 * 1.05
    assert np.mean(s < 8) > 0.12 and np.mean(s > 64) > 0.15  # log-uniform: ~23 % below 8, ~27 % above 64


def test_native_jitter_stays_near_the_native_size():
    ds = ScaleJitterDataset(OneDrone(), crop=256, p_object=1.0, seed=0, p_range=0.0, scale=(0.8, 1.25))
    native = float(box_size(OneDrone().boxes)[0])
    s = sizes(ds, 60)
    assert np.all(s >= 0.75 * native) and np.all(s <= 1.3 * native)


def test_excluded_band_is_never_produced():
    ds = ScaleJitterDataset(OneDrone(), crop=256, p_object=1.0, seed=3, p_range=0.5, exclude=(16, 32))
    s = sizes(ds, 200)
    assert not np.any((s >= 16.5) & (s < 31.5))
    assert np.any(s < 16) and np.any(s > 32)


@pytest.mark.parametrize("modality", ["thermal", "rgb"])
def test_boxes_sit_on_the_object_pixels(modality):
    ds = ScaleJitterDataset(OneDrone(modality=modality), crop=128, p_object=1.0, seed=1, appearance=None,
                            size_range=(6, 100), p_range=1.0)
    errs = []
    for i in range(40):
        x, t = ds[i]
        if not len(t["boxes"]):
            continue
        b = t["boxes"][0].numpy()
        ys, xs = np.nonzero(x[0].numpy() > 0.75)
        if len(xs) == 0:
            continue
        found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        errs.append(np.abs(found - b).max() / max(1.0, float(box_size(b[None])[0])))
    assert len(errs) >= 30 and np.median(errs) < 0.15


def test_crop_without_object_keeps_its_size_and_dtype():
    ds = ScaleJitterDataset(OneDrone(), crop=96, p_object=0.0, seed=2)
    x, t = ds[0]
    assert tuple(x.shape) == (3, 96, 96) and str(x.dtype) == "torch.float32"
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_appearance_chain_changes_the_image_and_is_seeded():
    cfg = from_dict(ScaleConfig, {"p_range": 0.0}, "scale")
    a = scale_dataset(OneDrone(), cfg, 96, 1.0, 5)
    plain = scale_dataset(OneDrone(), from_dict(ScaleConfig, {"p_range": 0.0, "appearance": None}, "scale"), 96, 1.0, 5)
    xa, _ = a[3]
    assert np.array_equal(xa.numpy(), a[3][0].numpy())
    diffs = [float((a[i][0] - plain[i][0]).abs().mean()) for i in range(10)]
    assert max(diffs) > 0.01


@pytest.mark.parametrize("data, key", [({"size_range": [0.5, 10]}, "scale.size_range"),
                                       ({"exclude": [1, 500]}, "scale.exclude"),
                                       ({"p_range": 2}, "scale.p_range"),
                                       ({"appearance": {"p": 3}}, "scale.appearance.p"),
                                       ({"colour": 1}, "scale.colour")])
def test_bad_scale_config_names_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(ScaleConfig, data, "scale")
