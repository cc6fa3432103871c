"""The run configuration (`configs/*.yaml`) as dataclasses, and the stages it builds."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from detectors.camera_motion import CameraMotionConfig
from detectors.motion import MotionConfig, MotionDetector
from detectors.tiling import TilingConfig
from pipeline.config import apply_overrides, from_dict, load_yaml, require
from pipeline.errors import ConfigError
from pipeline.geometry.search_region import SearchConfig
from pipeline.stages import CameraMotionStage, DetectorStage, ScoreSmoothingStage, TrackerStage
from trackers.tracker import TrackerConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


@dataclass
class DetectorSettings:
    kind: Literal["motion", "pyramid", "dpfcn", "wildcat", "fusion"] = "motion"
    min_score: float = 0.0
    motion: MotionConfig = field(default_factory=MotionConfig)
    checkpoint: str | None = None  # learned kinds: the checkpoint file (relative: cwd, else the project root)
    checkpoint_by_modality: dict[str, str] = field(default_factory=dict)  # e.g. {thermal: ...}: overrides it
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda
    # gps: run only on crops around each cooperative drone's search box (from its GPS-RTK log and the
    # turret's pose), whole frames where those are unknown; full: whole frames. gps needs a wildcat detector.
    search: Literal["full", "gps"] = "full"
    search_region: SearchConfig = field(default_factory=SearchConfig)
    search_crop: int = 96  # px: smallest side of the crop around a search box (context for the network)
    # fusion: the camera whose pixel grid the model sees (the other is registered onto it through the
    # calibrations), and modalities to treat as offline (e.g. [thermal]: the model runs on RGB alone)
    reference: Literal["rgb", "thermal"] = "thermal"
    drop: list[Literal["rgb", "thermal"]] = field(default_factory=list)
    # pyramid and dpfcn: frames whose longer side exceeds tiling.above run as overlapping full-resolution
    # tiles plus the shrunk whole frame, merged by NMS (detectors/tiling.py)
    tiling: TilingConfig = field(default_factory=TilingConfig)

    def validate(self, prefix: str) -> None:
        require(0.0 <= self.min_score <= 1.0, prefix + "min_score", "must be in [0, 1]")
        require(self.search == "full" or self.kind == "wildcat", prefix + "search",
                f"narrowed search (gps) needs a wildcat detector, not {self.kind!r}")
        require(self.search_crop >= 16, prefix + "search_crop", "must be at least 16 px")
        require(self.kind == "motion" or self.checkpoint is not None or bool(self.checkpoint_by_modality),
                prefix + "checkpoint", f"a {self.kind!r} detector needs a checkpoint file")
        require(not self.drop or self.kind == "fusion", prefix + "drop", "only a fusion detector drops modalities")
        require(self.kind != "fusion" or not self.checkpoint_by_modality, prefix + "checkpoint_by_modality",
                "a fusion detector is one model for both cameras: give checkpoint")
        for m in self.checkpoint_by_modality:
            require(m in ("rgb", "thermal"), prefix + "checkpoint_by_modality", f"{m!r} is not rgb or thermal")
        require(self.device in ("auto", "cpu") or self.device.startswith("cuda"), prefix + "device",
                f"{self.device!r} is not auto, cpu or cuda[:N]")


@dataclass
class SmoothingSettings:
    """Temporal smoothing of detections over time: `score` filters each track's score recurrently
    (pipeline.stages.ScoreSmoothingStage); `none` reports the tracker's tracks as they are."""

    kind: Literal["none", "score"] = "none"
    alpha: float = 0.5  # weight of the newest score in the exponential average
    min_score: float = 0.3  # tracks whose averaged score is below are not reported

    def validate(self, prefix: str) -> None:
        require(0.0 < self.alpha <= 1.0, prefix + "alpha", "must be in (0, 1]")
        require(0.0 <= self.min_score <= 1.0, prefix + "min_score", "must be in [0, 1]")


@dataclass
class RunConfig:
    detector: DetectorSettings = field(default_factory=DetectorSettings)
    camera_motion: CameraMotionConfig = field(default_factory=CameraMotionConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
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
    data = apply_overrides(read_with_base(path), overrides or [])
    try:
        return from_dict(RunConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def read_with_base(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config mapping; `base: OTHER.yaml` (relative to this file) is read first and this file's keys
    are merged over it, mapping by mapping."""
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: base: {base} includes itself")
    return _merge(read_with_base(base_path, seen + (base_path,)), data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def detector_device(cfg: DetectorSettings):
    """The torch device `detector.device` names (a ConfigError when CUDA is asked for and absent)."""
    from detectors.inference import pick_device

    try:
        return pick_device(cfg.device)
    except ValueError as e:
        raise ConfigError(f"detector.device: {e}") from None


def build_detector_factory(cfg: DetectorSettings):
    """(stream, modality) -> detector. Learned detectors are loaded once per checkpoint file and shared
    by the streams that use it, so the stage batches them."""
    if cfg.kind == "motion":
        return lambda stream, modality: MotionDetector(cfg.motion, modality)
    from detectors.inference import TorchDetector
    from pipeline.models import WildcatDetector, load_model

    device = detector_device(cfg)
    if cfg.kind == "wildcat":
        adapter = WildcatDetector
    else:
        adapter = lambda model, device: TorchDetector(model, device, tiling=cfg.tiling)  # noqa: E731
    loaded: dict[str, object] = {}

    def factory(stream: str, modality: str) -> object:
        path = cfg.checkpoint_by_modality.get(modality, cfg.checkpoint)
        if path is None:
            raise ConfigError(f"detector.checkpoint: none given for the {modality} stream {stream!r}")
        if path not in loaded:
            loaded[path] = adapter(load_model(path, cfg.kind)[0], device)
        return loaded[path]

    return factory


def build_fusion_stage(cfg: DetectorSettings):
    from pipeline.fusion_stage import FusionStage
    from pipeline.models import load_model

    device = detector_device(cfg)
    model, _ = load_model(cfg.checkpoint, "fusion")
    missing = set(cfg.drop) - set(model.cfg.modalities)
    if missing:
        raise ConfigError(f"detector.drop: {', '.join(sorted(missing))} is not an input of {cfg.checkpoint}")
    if set(cfg.drop) >= set(model.cfg.modalities):
        raise ConfigError("detector.drop: drops every input of the model")
    return FusionStage(model, device, cfg.min_score, cfg.reference, cfg.drop)


def build_stages(cfg: RunConfig, source=None) -> list:
    """The configured stages; `source` (a recorded flight) is bound to those that read its telemetry."""
    d = cfg.detector
    if d.kind == "fusion":
        detector = build_fusion_stage(d)
    else:
        detector = DetectorStage(build_detector_factory(d), d.min_score,
                                 d.search_region if d.search == "gps" else None, d.search_crop)
    camera = CameraMotionStage(cfg.camera_motion)
    if source is not None:
        detector.bind(source)
        camera.bind(source)
    stages = [camera, detector, TrackerStage(cfg.tracker)]
    if cfg.smoothing.kind == "score":
        stages.append(ScoreSmoothingStage(cfg.smoothing.alpha, cfg.smoothing.min_score))
    return stages
