"""The run configuration (`configs/*.yaml`) as dataclasses, and the stages it builds."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from detectors.camera_motion import CameraMotionConfig
from detectors.motion import MotionConfig, MotionDetector
from pipeline.config import apply_overrides, from_dict, load_yaml, require
from pipeline.stages import CameraMotionStage, DetectorStage, TrackerStage
from trackers.tracker import TrackerConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


@dataclass
class DetectorSettings:
    kind: Literal["motion"] = "motion"
    min_score: float = 0.0
    motion: MotionConfig = field(default_factory=MotionConfig)

    def validate(self, prefix: str) -> None:
        require(0.0 <= self.min_score <= 1.0, prefix + "min_score", "must be in [0, 1]")


@dataclass
class RunConfig:
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    camera_motion: CameraMotionConfig = field(default_factory=CameraMotionConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    streams: list[str] | None = None  # which streams of a flight to process; default all
    pair_tolerance: float | None = None  # seconds; default half the shortest frame period
    queue_size: int = 8

    def validate(self, prefix: str) -> None:
        require(self.queue_size >= 1, prefix + "queue_size", "must be at least 1")
        require(self.pair_tolerance is None or self.pair_tolerance >= 0, prefix + "pair_tolerance",
                "must not be negative")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config (default `configs/default.yaml`), apply `key.sub=value` overrides, validate.
    A ConfigError names the file and the key."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    data = load_yaml(path) or {}
    data = apply_overrides(data, overrides or [])
    from pipeline.errors import ConfigError

    try:
        return from_dict(RunConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def build_detector_factory(cfg: DetectorSettings):
    if cfg.kind == "motion":
        return lambda stream, modality: MotionDetector(cfg.motion, modality)
    raise AssertionError(cfg.kind)  # unreachable: validated by Literal


def build_stages(cfg: RunConfig) -> list:
    return [
        CameraMotionStage(cfg.camera_motion),
        DetectorStage(build_detector_factory(cfg.detector), cfg.detector.min_score),
        TrackerStage(cfg.tracker),
    ]
