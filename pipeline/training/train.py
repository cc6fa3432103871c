"""`dronetrack train CONFIG`: join training data (synthetic flights, Svanstrom clips) to a detector's
training loop, validate on held-out clips, write checkpoints, resume.

`model: dpfcn` trains on boxes (pipeline.training.datasets); `model: wildcat` on frame-level labels only
(pipeline.training.weak_data: presence from GPS-RTK and geometry, or from the ground truth, and Svanstrom clip
labels), validated by pointing accuracy and AP50 of its localized boxes (`wildcat_scores`); `model: fusion`
on paired, registered RGB + thermal frames of synthetic flights (pipeline.training.fusion_data), validated by drone
AP50 on the reference grid.

OUT (the config's `out`) receives `last.pt` (every validation, with the optimizer state: `--resume`
continues from it), `best.pt` (the best validation score so far), `log.txt`, `config.yaml` and, when
`export` is set, the shipped half-precision copy of the best checkpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import yaml

from detectors.checkpoint import load_checkpoint, load_state, save_checkpoint
from detectors.dpfcn import DPFCNConfig
from detectors.inference import pick_device
from detectors.training import OptimConfig, TrainingDiverged, make_optimizer, train_loop
from detectors.wildcat import localize_batch
from pipeline.config import apply_overrides, from_dict, load_yaml, require, to_dict
from pipeline.training.datasets import DetectionDataset, FrameStore, collate, split_by_clip
from pipeline.evaluation.detmetrics import average_precision, pointing_accuracy, pr_curve
from pipeline.errors import ConfigError, DronetrackError, InputError
from fusion.detector import FusionDetectorConfig
from pipeline.training.fusion_data import FusionDataConfig
from pipeline.models import WildcatModelConfig, build_model, resolve_path
from pipeline.io.flight import load_flight
from pipeline.io.svanstrom import SVANSTROM_CLASSES, clip_info, import_svanstrom
from pipeline.training.weak_data import WeakConfig, WeakCropDataset, WeakFrames


@dataclass
class SynthData:
    seeds: list[int] = field(default_factory=lambda: list(range(100, 110)))
    seconds: float = 20.0
    drones: int = 3
    birds: int = 2


@dataclass
class SvanstromData:
    root: str = "../shared/data/svanstrom"  # relative: from the working directory, else the project root
    sensors: list[Literal["ir", "v"]] = field(default_factory=lambda: ["ir", "v"])
    max_clips: int | None = None  # per (sensor, label), for quick runs


@dataclass
class DataConfig:
    cache: str = "runs/cache"  # generated synthetic flights and converted clips live here
    synthetic: SynthData | None = field(default_factory=SynthData)
    svanstrom: SvanstromData | None = field(default_factory=SvanstromData)
    every: int = 5  # keep every n-th frame of the training clips
    val_every: int = 15  # and of the validation clips
    crop: int = 256
    p_object: float = 0.7  # share of crops placed on an object (wildcat: of present frames' crops, positive)
    val_fraction: float = 0.2
    jpeg: int | None = 95  # frames kept JPEG-encoded in memory at this quality (None: raw, ~30x more memory)

    def validate(self, prefix: str) -> None:
        require(self.synthetic is not None or self.svanstrom is not None, prefix + "synthetic",
                "give synthetic or svanstrom data (or both)")
        for key in ("every", "val_every", "crop"):
            require(getattr(self, key) >= 1, prefix + key, "must be >= 1")
        require(0.0 < self.val_fraction < 1.0, prefix + "val_fraction", "must be in (0, 1)")


@dataclass
class TrainConfig:
    out: str
    model: Literal["dpfcn", "wildcat", "fusion"] = "dpfcn"
    dpfcn: DPFCNConfig = field(default_factory=DPFCNConfig)
    wildcat: WildcatModelConfig = field(default_factory=WildcatModelConfig)
    fusion: FusionDetectorConfig = field(default_factory=FusionDetectorConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)  # wildcat only: frame labels, crops, validation
    paired: FusionDataConfig = field(default_factory=FusionDataConfig)  # fusion only: reference grid, crops
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0: torch's default)
    export: str | None = None  # write the best checkpoint here in float16 when training ends

    def model_config(self) -> Any:
        return getattr(self, self.model)

    def validate(self, prefix: str) -> None:
        require(self.model != "wildcat" or self.wildcat.classes == ["drone"], prefix + "wildcat.classes",
                "WILDCAT learns drone presence only: classes must be [drone]")
        require(self.model != "fusion" or self.data.svanstrom is None, prefix + "data.svanstrom",
                "the fusion detector trains on paired RGB + thermal flights: set it to null")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    data = apply_overrides(load_yaml(path) or {}, overrides or [])
    try:
        return from_dict(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def prepare_flights(cfg: DataConfig, classes: list[str]) -> list[Path]:
    """Make (once) the synthetic flights and converted clips the config names; their folders."""
    cache = Path(cfg.cache)
    flights: list[Path] = []
    if cfg.synthetic is not None:
        from pipeline.synth import generate_flight

        s = cfg.synthetic
        for seed in s.seeds:
            folder = cache / "synth" / f"seed{seed}_{s.seconds:g}s_{s.drones}d_{s.birds}b"
            if not (folder / "flight.yaml").is_file():
                generate_flight(folder, seed=seed, seconds=s.seconds, drones=s.drones, birds=s.birds)
            flights.append(folder)
    if cfg.svanstrom is not None:
        if list(classes) != list(SVANSTROM_CLASSES[:len(classes)]):
            raise ConfigError(f"classes: Svanstrom labels need the classes {list(SVANSTROM_CLASSES)} in order")
        root = resolve_path(cfg.svanstrom.root)
        flights += select_clips(import_svanstrom(root, cache / "svanstrom"), cfg.svanstrom)
    return flights


def select_clips(flights: list[Path], cfg: SvanstromData) -> list[Path]:
    kept, count = [], {}
    for f in sorted(flights):
        info = clip_info(load_flight(f))
        sensor, label = info["sensor"], info["label"]
        if sensor not in cfg.sensors:
            continue
        count[sensor, label] = count.get((sensor, label), 0) + 1
        if cfg.max_clips is None or count[sensor, label] <= cfg.max_clips:
            kept.append(f)
    return kept


def infinite_batches(dataset: DetectionDataset | WeakCropDataset, batch_size: int, workers: int, seed: int,
                     start_epoch: int = 0, collate_fn: Any = None) -> Iterator[Any]:
    epoch = start_epoch
    while True:
        dataset.set_epoch(epoch)
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        yield from torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=g,
                                               num_workers=workers, collate_fn=collate_fn, drop_last=True,
                                               persistent_workers=False)
        epoch += 1


def detection_loss(device: torch.device):
    def loss_fn(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = torch.stack(images).to(device) if isinstance(images, list) else images.to(device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        return model(images, targets)
    return loss_fn


def presence_loss(device: torch.device):
    def loss_fn(model: torch.nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        images, labels = batch
        return {"presence": model.loss(model(images.to(device))["scores"], labels.to(device))}
    return loss_fn


def frame_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """A FrameStore image (RGB or grey uint8) -> (1, 3, H, W) float in [0, 1]."""
    x = torch.from_numpy(image if image.ndim == 3 else np.repeat(image[..., None], 3, 2))
    return x.permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)


class _Matches:
    """Per-frame ground-truth and detected drone boxes (xyxy) of one modality, with the detections'
    points where the detector gives them, for VOC AP."""

    def __init__(self) -> None:
        self.gt_frames, self.gt, self.det_frames, self.det, self.scores, self.points = [], [], [], [], [], []

    def add(self, frame: int, gt: np.ndarray, det: np.ndarray, scores: np.ndarray,
            points: np.ndarray | None = None) -> None:
        self.gt_frames += [frame] * len(gt)
        self.gt += gt.tolist()
        self.det_frames += [frame] * len(det)
        self.det += det.tolist()
        self.scores += scores.tolist()
        self.points += [] if points is None else points.tolist()

    def point_ap(self, tolerance: float) -> float:
        """VOC all-point AP where a detection (by descending score) is right when its point lies inside a
        ground-truth box of its frame grown by `tolerance` px that no better detection took (the
        localization-aware AP of Oquab et al., CVPR 2015)."""
        gt = np.asarray(self.gt, np.float64).reshape(-1, 4) + np.array([-1, -1, 1, 1]) * tolerance
        frames, taken, outcome = np.asarray(self.gt_frames), np.zeros(len(gt), bool), []
        for d in np.argsort(-np.asarray(self.scores, np.float64), kind="stable"):
            x, y = self.points[d]
            hit = np.flatnonzero((frames == self.det_frames[d]) & ~taken & (gt[:, 0] <= x) & (x <= gt[:, 2])
                                 & (gt[:, 1] <= y) & (y <= gt[:, 3]))
            taken[hit[:1]] = True
            outcome.append(len(hit) > 0)
        tp = np.cumsum(outcome, dtype=np.float64)
        return average_precision(tp / max(len(gt), 1), tp / np.arange(1, len(tp) + 1), "all") if len(gt) else 0.0

    def ap50(self) -> float:
        def xywh(b: list) -> np.ndarray:
            b = np.asarray(b, np.float64).reshape(-1, 4)
            return np.c_[b[:, :2], b[:, 2:] - b[:, :2]]

        rec, prec, n_pos = pr_curve(self.gt_frames, xywh(self.gt), self.det_frames, xywh(self.det),
                                    np.asarray(self.scores), 0.5)
        return average_precision(rec, prec, "all") if n_pos else 0.0


def drone_ap(model: torch.nn.Module, store: FrameStore, device: torch.device, batch: int = 4) -> dict[str, float]:
    """Drone AP50 (VOC all-point) per modality on whole validation frames, and their mean as 'score'."""
    per_mod: dict[str, _Matches] = {}
    for i in range(len(store)):
        image, boxes, labels, modality = store.frame(i)
        res = model(frame_tensor(image, device))[0]
        keep = res["labels"] == 1
        per_mod.setdefault(modality, _Matches()).add(i, boxes[labels == 1], res["boxes"][keep].float().cpu().numpy(),
                                                     res["scores"][keep].float().cpu().numpy())
    out = {f"ap50_{m}": g.ap50() for m, g in per_mod.items()}
    out["score"] = float(np.mean(list(out.values()))) if out else 0.0
    return out


def wildcat_scores(model: torch.nn.Module, store: FrameStore, device: torch.device, tolerance: float = 8.0,
                   best: str = "pointing") -> dict[str, float]:
    """WILDCAT on whole validation frames, per modality m:
    pointing_m: share of the frames showing a drone whose class-map peak falls inside a ground-truth drone
      box grown by `tolerance` px (Oquab et al., CVPR 2015, used 18 px at their image scale);
    ap50_m: VOC all-point AP50 of the localized boxes (one per frame, scored by the frame's drone
      probability) against every drone box;
    point_ap_m: the same AP with a detection right when its peak is within `tolerance` of a drone box
      (drones of a few pixels: a box grown from stride-8 map cells rarely reaches IoU 0.5 with them);
    accuracy_m: frame presence right at probability 0.5.
    pointing, ap50, point_ap, accuracy: their means over modalities; score: the `best` one."""
    per_mod: dict[str, tuple[_Matches, dict, list, list]] = {}
    for i in range(len(store)):
        image, boxes, labels, modality = store.frame(i)
        out = model(frame_tensor(image, device))
        (xyxy, scores, _, points), = localize_batch(out["scores"], out["maps"], model.stride, image.shape[:2],
                                                    model.cfg.box_threshold, model.offset, 0.0, model.cfg.box)
        gt = boxes[labels == 1]
        matches, peaks, gt_rows, right = per_mod.setdefault(modality, (_Matches(), {}, [], []))
        matches.add(i, gt, xyxy, scores, points)
        right.append(bool(scores[0] >= 0.5) == bool(len(gt)))
        if len(gt):
            peaks[i] = tuple(points[0])
            gt_rows += [[i, -1, x0, y0, x1 - x0, y1 - y0, 1, 1, -1, -1] for x0, y0, x1, y1 in gt.tolist()]
    result: dict[str, float] = {}
    for m, (matches, peaks, gt_rows, right) in per_mod.items():
        result[f"pointing_{m}"] = pointing_accuracy(peaks, np.asarray(gt_rows, np.float64).reshape(-1, 10),
                                                    tolerance, list(peaks))
        result[f"ap50_{m}"] = matches.ap50()
        result[f"point_ap_{m}"] = matches.point_ap(tolerance)
        result[f"accuracy_{m}"] = float(np.mean(right))
    for key in ("pointing", "ap50", "point_ap", "accuracy"):
        vals = [v for k, v in result.items() if k.startswith(key + "_")]
        result[key] = float(np.mean(vals)) if vals else 0.0
    result["score"] = result[best]
    return result


def fusion_training(cfg: TrainConfig, train_f: list[Path], val_f: list[Path], device: torch.device, log):
    """(dataset, loss_fn, collate_fn, validate) of the fusion detector: paired samples of the flights."""
    from pipeline.training.fusion_data import FusionCropDataset, collate_fusion, full_frames, fusion_ap, fusion_loss, \
        paired_samples

    m, p = cfg.fusion, cfg.paired
    train_s = [s for f in train_f for s in paired_samples(f, m.modalities, p.reference, m.flow, p.every)]
    val_s = [s for f in val_f for s in paired_samples(f, m.modalities, p.reference, m.flow, p.val_every)]
    log(f"{len(train_s)} training frames, {len(val_s)} validation frames (paired on the {p.reference} grid)")
    items = full_frames(val_s, m.modalities)
    dataset = FusionCropDataset(train_s, m.modalities, p.crop, p.p_object, cfg.seed)
    return dataset, fusion_loss(device), collate_fusion, lambda model: fusion_ap(model, items, device)


def train(config: str | Path, overrides: list[str] | None = None, resume: bool = False,
          log_to_stdout: bool = True) -> Path:
    """Train as configured; returns the best checkpoint's path."""
    cfg = load_train_config(config, overrides)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    log_file = open(out / "log.txt", "a", encoding="utf-8")

    def log(msg: str) -> None:
        log_file.write(msg + "\n")
        log_file.flush()
        if log_to_stdout:
            print(msg, flush=True)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    try:
        device = pick_device(cfg.device)
    except ValueError as e:
        raise ConfigError(f"device: {e}") from None
    mcfg = cfg.model_config()
    flights = prepare_flights(cfg.data, mcfg.classes)
    train_f, val_f = split_by_clip(flights, cfg.data.val_fraction, cfg.seed)
    log(f"{len(train_f)} training clips, {len(val_f)} validation clips: {', '.join(p.name for p in val_f)}")
    if cfg.model == "fusion":
        dataset, loss_fn, collate_fn, validate = fusion_training(cfg, train_f, val_f, device, log)
    else:
        val_store = FrameStore(val_f, every=cfg.data.val_every, jpeg=cfg.data.jpeg)
    if cfg.model == "wildcat":
        frames = WeakFrames(train_f, cfg.weak, every=cfg.data.every, jpeg=cfg.data.jpeg)
        pos, neg = frames.counts()
        log(f"{len(frames)} training frames ({pos} with a drone, {neg} without; labels: {cfg.weak.labels}, "
            f"Svanstrom clips: the clip's), {len(val_store)} validation frames")
        dataset = WeakCropDataset(frames, cfg.data.crop, cfg.data.p_object, cfg.seed, cfg.weak.scale)
        loss_fn, collate_fn = presence_loss(device), None
        validate = lambda m: wildcat_scores(m, val_store, device, cfg.weak.point_tolerance, cfg.weak.best)
    elif cfg.model == "dpfcn":
        train_store = FrameStore(train_f, every=cfg.data.every, jpeg=cfg.data.jpeg)
        log(f"{len(train_store)} training frames, {len(val_store)} validation frames")
        dataset = DetectionDataset(train_store, crop=cfg.data.crop, p_object=cfg.data.p_object, seed=cfg.seed)
        loss_fn, collate_fn = detection_loss(device), collate
        validate = lambda m: drone_ap(m, val_store, device)

    model = build_model(cfg.model, mcfg).to(device)
    optimizer, scheduler = make_optimizer(model, cfg.optim)
    start, best = 0, -math.inf
    if resume and (out / "last.pt").is_file():
        try:
            ckpt = load_checkpoint(out / "last.pt")
            load_state(model, ckpt["state_dict"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        except (ValueError, KeyError) as e:
            raise InputError(f"cannot resume: {e}", out / "last.pt") from None
        start, best = ckpt["step"], float(ckpt["val"].get("best", -math.inf))
        log(f"resumed at step {start}")

    classes = list(mcfg.classes)
    saved_config = to_dict(mcfg)  # the checkpoint's weights replace any initial weight file: drop its path
    if "backbone" in saved_config:
        saved_config["backbone"]["weights"] = None

    def save(step: int, val: dict[str, float], is_best: bool) -> None:
        nonlocal best
        if is_best:
            best = val.get(cfg.optim.best_metric, best)
        record = {**val, "best": best}
        kwargs = dict(kind=cfg.model, config=saved_config, classes=classes, model=model, step=step, val=record)
        save_checkpoint(out / "last.pt", optimizer=optimizer, scheduler=scheduler, **kwargs)
        if is_best:
            save_checkpoint(out / "best.pt", **kwargs)

    if len(dataset) < cfg.optim.batch_size:
        raise ConfigError(f"optim.batch_size: {cfg.optim.batch_size} is more than the {len(dataset)} training frames")
    batches = infinite_batches(dataset, cfg.optim.batch_size, cfg.optim.workers, cfg.seed,
                               start_epoch=start * cfg.optim.batch_size // max(len(dataset), 1), collate_fn=collate_fn)
    try:
        train_loop(model, batches, cfg.optim, device, loss_fn, optimizer, scheduler, start,
                   validate=validate, save=save, log=log, best=best)
    except TrainingDiverged as e:
        raise DronetrackError(f"{e} (lower optim.lr; {out / 'last.pt'} holds the last good state)") from None
    best_path = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    if cfg.export:
        ckpt = load_checkpoint(best_path)
        load_state(model, ckpt["state_dict"])
        export = Path(cfg.export)
        save_checkpoint(export, kind=cfg.model, config=saved_config, classes=classes, model=model.cpu(),
                        step=ckpt["step"], val=ckpt["val"], half=True)
        log(f"exported {export} ({export.stat().st_size / 1e6:.1f} MB)")
    log_file.close()
    return best_path
