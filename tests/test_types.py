import numpy as np
import pytest

from pipeline.types import Detections, FrameBundle


def test_detections_construction_and_views():
    d = Detections.from_xywh([[10, 20, 4, 6], [0, 0, 2, 2]], scores=[0.9, 0.1])
    assert d.xyxy.dtype == np.float32 and d.xyxy.tolist() == [[10, 20, 14, 26], [0, 0, 2, 2]]
    assert d.labels.tolist() == [0, 0] and d.track_ids is None
    np.testing.assert_allclose(d.centers, [[12, 23], [1, 1]])
    np.testing.assert_allclose(d.areas, [24, 4])
    kept = d[d.scores > 0.5]
    assert len(kept) == 1 and kept.scores.tolist() == pytest.approx([0.9])
    m = Detections.merge([d, kept])
    assert len(m) == 3


def test_empty_is_legal():
    e = Detections.empty()
    assert len(e) == 0 and e.xyxy.shape == (0, 4) and e.scores.shape == (0,)
    assert len(Detections.merge([e, e])) == 0
    assert len(Detections(np.zeros((0, 4)))) == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 4)), scores=np.zeros(3))
    with pytest.raises(ValueError):
        Detections(np.zeros((2, 3)))


def test_bundle_modalities():
    img = np.zeros((4, 4, 3), np.uint8)
    b = FrameBundle(0, 0.0, {"cam": img, "ir": None}, {"cam": 1}, {"cam": "rgb", "ir": "thermal"})
    assert b.present() == ["cam"] and b.rgb is img and b.thermal is None
