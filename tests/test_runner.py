import json

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.runner import Runner
from pipeline.io.sinks import CocoDetectionsSink, MotTracksSink
from pipeline.types import Detections, FrameBundle


def source(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise InputError("video is truncated", "v.mp4")
        yield FrameBundle(i, i / 25, {"thermal": np.zeros((8, 8), np.uint8)}, {"thermal": i + 1}, {"thermal": "thermal"})


class BoxStage:
    name = "boxes"

    def __init__(self, interrupt_at=None):
        self.interrupt_at = interrupt_at

    def __call__(self, b):
        if b.index == self.interrupt_at:
            raise KeyboardInterrupt
        d = Detections([[b.index, 0, b.index + 4, 4]], [0.5])
        b.detections["thermal"] = d
        b.tracks["thermal"] = d.with_track_ids([1])
        return b

    def reset(self):
        pass


def sinks(tmp_path):
    return [MotTracksSink(tmp_path / "tracks", ["thermal"]), CocoDetectionsSink(tmp_path / "det", ["thermal"])]


def rows(tmp_path):
    return (tmp_path / "tracks" / "thermal.txt").read_text().splitlines()


def test_every_bundle_in_order(tmp_path):
    stats = Runner(source(50), [BoxStage()], sinks(tmp_path), queue_size=2).run()
    assert stats.bundles == 50 and stats.frames == {"thermal": 50} and "boxes" in stats.stage_seconds
    assert [int(r.split(",")[0]) for r in rows(tmp_path)] == list(range(1, 51))
    assert len(json.loads((tmp_path / "det" / "thermal.json").read_text())) == 50


def test_ctrl_c_keeps_finished_frames(tmp_path):
    stats = Runner(source(50), [BoxStage(interrupt_at=20)], sinks(tmp_path), queue_size=2).run()
    assert stats.interrupted and stats.bundles == 20
    assert [int(r.split(",")[0]) for r in rows(tmp_path)] == list(range(1, 21))
    assert len(json.loads((tmp_path / "det" / "thermal.json").read_text())) == 20


def test_source_error_raised_after_writing_what_came_before(tmp_path):
    r = Runner(source(50, fail_at=30), [BoxStage()], sinks(tmp_path), queue_size=2)
    with pytest.raises(InputError, match="truncated"):
        r.run()
    assert len(rows(tmp_path)) == 30 and r.stats.error is not None


def test_max_frames(tmp_path):
    stats = Runner(source(50), [BoxStage()], sinks(tmp_path), max_frames=7).run()
    assert stats.bundles == 7 and len(rows(tmp_path)) == 7


def test_without_prefetch_the_source_is_read_when_the_stages_are_ready(tmp_path):
    """prefetch=False (live): no reader thread reads ahead, so a bundle is taken from the source only
    once the previous one went through the stages; same outputs, same Ctrl-C and source-error handling."""
    pulled, staged = [], []

    def counting(n):
        for b in source(n):
            pulled.append(b.index)
            yield b

    class Recording(BoxStage):
        def __call__(self, b):
            staged.append((b.index, len(pulled)))
            return super().__call__(b)

    stats = Runner(counting(30), [Recording()], sinks(tmp_path), prefetch=False).run()
    assert stats.bundles == 30 and [int(r.split(",")[0]) for r in rows(tmp_path)] == list(range(1, 31))
    assert staged == [(i, i + 1) for i in range(30)]  # bundle i staged when exactly i + 1 were read
    stats = Runner(source(50), [BoxStage(interrupt_at=20)], sinks(tmp_path), prefetch=False).run()
    assert stats.interrupted and stats.bundles == 20 and len(rows(tmp_path)) == 20
    r = Runner(source(50, fail_at=30), [BoxStage()], sinks(tmp_path), prefetch=False)
    with pytest.raises(InputError, match="truncated"):
        r.run()
    assert len(rows(tmp_path)) == 30 and r.stats.error is not None
