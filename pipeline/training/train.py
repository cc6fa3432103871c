"""`dronetrack train CONFIG`: join training data (synthetic flights, Svanstrom clips) to a detector's
training loop, validate on held-out clips, write checkpoints, resume.

`model: dpfcn` trains on boxes (pipeline.training.datasets); `model: wildcat` on frame-level labels only
(pipeline.training.weak_data: presence from GPS-RTK and geometry, or from the ground truth, and Svanstrom clip
labels), validated by pointing accuracy and AP50 of its localized boxes (`wildcat_scores`); `model: fusion`
on paired, registered RGB + thermal frames of synthetic flights (pipeline.training.fusion_data), validated by drone
AP50 on the reference grid.

OUT (the config's `out`) receives `last.pt` (every validation, with the optimizer state: `--resume`
continues from it), `best.pt` (the best validation score so far), `log.txt`, `losses.csv` (every step's
losses), `config.yaml` and, when `export` is set, the shipped half-precision copy of the best checkpoint.

Several processes (torchrun, or `dronetrack train --nproc N`): pipeline/training/distributed.py; `main` below is
what each process runs (`python -m pipeline.training.train CONFIG`).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
import yaml

from detectors.checkpoint import load_checkpoint, load_state, save_checkpoint
from detectors.dpfcn import DPFCNConfig
from detectors.pyramid import PyramidConfig
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
from pipeline.io.atomic import write_yaml
from pipeline.io.flight import load_flight
from pipeline.io.svanstrom import SVANSTROM_CLASSES, clip_info, import_svanstrom
from pipeline.training.scale_data import ScaleConfig, scale_dataset
from pipeline.training.weak_data import WeakConfig, WeakCropDataset, WeakFrames
from pipeline.training.distributed import DDPConfig, Dist, default_threads, run_worker, setup
from pipeline.training.distributed import infinite_batches  # noqa: F401  (the batches of train(), here as before)


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
    # clips held out for testing, never trained or validated on: round(test_fraction * n) of each
    # (sensor, label) stratum, chosen by test_seed (tools/real_eval.py scores them)
    test_fraction: float = 0.0
    test_seed: int = 0
    labels: list[str] | None = None  # keep only clips of these labels (default: all)
    confuser_every: int | None = None  # pyramid: keep every n-th training frame of the bird / airplane /
    # helicopter clips (default: data.every), so the confusers do not outnumber the drones

    def validate(self, prefix: str) -> None:
        require(0.0 <= self.test_fraction < 1.0, prefix + "test_fraction", "must be in [0, 1)")
        require(self.confuser_every is None or self.confuser_every >= 1, prefix + "confuser_every", "must be >= 1")
        require(self.labels is None or all(lb in SVANSTROM_CLASSES for lb in self.labels), prefix + "labels",
                f"give labels among {', '.join(SVANSTROM_CLASSES)}")


@dataclass
class DataConfig:
    cache: str = "runs/cache"  # generated synthetic flights and converted clips live here
    synthetic: SynthData | None = field(default_factory=SynthData)
    # domain-randomized synthetic flights (sensor sizes, 3-200 px drones, clutter, airplanes, helicopters:
    # pipeline.synth's randomize profile), in addition to `synthetic`
    synthetic_random: SynthData | None = None
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
    model: Literal["pyramid", "dpfcn", "wildcat", "fusion"] = "dpfcn"
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)  # pyramid only: scale jitter and sensor appearance
    dpfcn: DPFCNConfig = field(default_factory=DPFCNConfig)
    wildcat: WildcatModelConfig = field(default_factory=WildcatModelConfig)
    fusion: FusionDetectorConfig = field(default_factory=FusionDetectorConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)  # wildcat only: frame labels, crops, validation
    paired: FusionDataConfig = field(default_factory=FusionDataConfig)  # fusion only: reference grid, crops
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # torch CPU threads per process (0: torch's default; under torchrun the cores / processes)
    export: str | None = None  # write the best checkpoint here in float16 when training ends
    ddp: DDPConfig = field(default_factory=DDPConfig)  # several processes (torchrun): pipeline/training/distributed.py

    def model_config(self) -> Any:
        return getattr(self, self.model)

    def validate(self, prefix: str) -> None:
        require(self.model != "wildcat" or self.wildcat.classes == ["drone"], prefix + "wildcat.classes",
                "WILDCAT learns drone presence only: classes must be [drone]")
        require(self.model != "fusion" or self.data.svanstrom is None, prefix + "data.svanstrom",
                "the fusion detector trains on paired RGB + thermal flights: set it to null")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    try:
        data = apply_overrides(load_yaml(path) or {}, overrides or [])
        return from_dict(TrainConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def prepare_flights(cfg: DataConfig, classes: list[str]) -> list[Path]:
    """Make (once) the synthetic flights and converted clips the config names; their folders."""
    cache = Path(cfg.cache)
    flights: list[Path] = []
    for s, randomize in ((cfg.synthetic, False), (cfg.synthetic_random, True)):
        if s is None:
            continue
        from pipeline.synth import generate_flight

        for seed in s.seeds:
            folder = cache / "synth" / f"seed{seed}_{s.seconds:g}s_{s.drones}d_{s.birds}b{'_random' if randomize else ''}"
            if not (folder / "flight.yaml").is_file():
                extra = {"randomize": True} if randomize else {}
                generate_flight(folder, seed=seed, seconds=s.seconds, drones=s.drones, birds=s.birds, **extra)
            flights.append(folder)
    if cfg.svanstrom is not None:
        if list(classes) != list(SVANSTROM_CLASSES[:len(classes)]):
            raise ConfigError(f"classes: Svanstrom labels need the classes {list(SVANSTROM_CLASSES)} in order")
        root = resolve_path(cfg.svanstrom.root)
        flights += select_clips(svanstrom_split(import_svanstrom(root, cache / "svanstrom"), cfg.svanstrom)[0],
                                cfg.svanstrom)
    return flights


def svanstrom_split(clips: list[Path], cfg: SvanstromData) -> tuple[list[Path], list[Path]]:
    """(clips to train and validate on, held-out test clips) of every converted clip (before any selection by
    sensor, label or max_clips, so every training config holds out the same test clips): whole clips,
    stratified by sensor and label."""
    if cfg.test_fraction <= 0:
        return list(clips), []
    return split_by_clip(clips, cfg.test_fraction, cfg.test_seed)


def select_clips(flights: list[Path], cfg: SvanstromData) -> list[Path]:
    kept, count = [], {}
    for f in sorted(flights):
        info = clip_info(load_flight(f))
        sensor, label = info["sensor"], info["label"]
        if sensor not in cfg.sensors or (cfg.labels is not None and label not in cfg.labels):
            continue
        count[sensor, label] = count.get((sensor, label), 0) + 1
        if cfg.max_clips is None or count[sensor, label] <= cfg.max_clips:
            kept.append(f)
    return kept


def pyramid_store(flights: list[Path], cfg: DataConfig) -> FrameStore:
    """The training frames: every `data.every`-th frame, and every `svanstrom.confuser_every`-th one of the
    Svanstrom bird / airplane / helicopter clips."""
    step = cfg.svanstrom.confuser_every if cfg.svanstrom is not None else None
    if step is None:
        return FrameStore(flights, every=cfg.every, jpeg=cfg.jpeg)

    def confuser(f: Path) -> bool:
        info = clip_info(load_flight(f))
        return bool(info) and info["label"] != "drone"

    store = FrameStore([f for f in flights if not confuser(f)], every=cfg.every, jpeg=cfg.jpeg)
    store.records += FrameStore([f for f in flights if confuser(f)], every=step, jpeg=cfg.jpeg).records
    return store


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
    """Train as configured; returns the best checkpoint's path. Under torchrun every process runs this
    and trains its shard of each batch (pipeline/training/distributed.py); rank 0 writes OUT."""
    cfg = load_train_config(config, overrides)
    ctx = setup(cfg.ddp, cfg.device)
    try:
        return _train(cfg, ctx, resume, log_to_stdout)
    finally:
        ctx.close()


class LossLog:
    """OUT/losses.csv: one row per step (step, seconds since this run's first step, lr, the summed loss
    and each loss; means over the processes), flushed as it goes. On resume the rows after the resumed
    step (from a run that stopped before its next checkpoint) are dropped."""

    def __init__(self, path: Path, start: int) -> None:
        kept = []
        if start and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            kept = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) <= start]
        self.file = open(path, "w", encoding="utf-8")
        self.file.writelines(ln + "\n" for ln in kept)
        self.header = bool(kept)
        self.t0: float | None = None

    def __call__(self, step: int, losses: dict[str, float], lr: float) -> None:
        now = time.perf_counter()
        self.t0 = now if self.t0 is None else self.t0
        if not self.header:
            self.file.write(",".join(["step", "seconds", "lr", "loss", *losses]) + "\n")
            self.header = True
        vals = [sum(losses.values()) + 0.0, *(v + 0.0 for v in losses.values())]  # + 0.0: no "-0"
        self.file.write(f"{step},{now - self.t0:.3f},{lr:.6g}," + ",".join(f"{v:.6g}" for v in vals) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _train(cfg: TrainConfig, ctx: Dist, resume: bool, log_to_stdout: bool) -> Path:
    out = Path(cfg.out)
    log_file = None
    if ctx.main:  # rank 0 alone writes OUT
        out.mkdir(parents=True, exist_ok=True)
        write_yaml(out / "config.yaml", to_dict(cfg))
        log_file = open(out / "log.txt", "a", encoding="utf-8")

    def log(msg: str) -> None:
        if log_file is None:
            return
        log_file.write(msg + "\n")
        log_file.flush()
        if log_to_stdout:
            print(msg, flush=True)

    if cfg.threads or (ctx.distributed and ctx.device.type == "cpu"):
        torch.set_num_threads(cfg.threads or default_threads(ctx))
    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    device = ctx.device
    if ctx.distributed:
        log(f"{ctx.world} processes ({torch.distributed.get_backend()}, {device.type}), "
            f"{cfg.optim.batch_size // ctx.world} samples each per step of {cfg.optim.batch_size}")
    mcfg = cfg.model_config()
    with ctx.local_main_first():  # one process per machine makes the cache
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
    elif cfg.model == "pyramid":
        train_store = pyramid_store(train_f, cfg.data)
        log(f"{len(train_store)} training frames, {len(val_store)} validation frames")
        dataset = scale_dataset(train_store, cfg.scale, cfg.data.crop, cfg.data.p_object, cfg.seed)
        loss_fn, collate_fn = detection_loss(device), collate
        validate = lambda m: drone_ap(m, val_store, device)
    elif cfg.model == "dpfcn":
        train_store = FrameStore(train_f, every=cfg.data.every, jpeg=cfg.data.jpeg)
        log(f"{len(train_store)} training frames, {len(val_store)} validation frames")
        dataset = DetectionDataset(train_store, crop=cfg.data.crop, p_object=cfg.data.p_object, seed=cfg.seed)
        loss_fn, collate_fn = detection_loss(device), collate
        validate = lambda m: drone_ap(m, val_store, device)

    model = ctx.convert(build_model(cfg.model, mcfg), cfg.ddp).to(device)
    optimizer, scheduler = make_optimizer(model, cfg.optim)
    start, best = 0, -math.inf
    if ctx.broadcast(resume and (out / "last.pt").is_file()):  # rank 0 reads it and sends it to the others
        try:
            ckpt = ctx.broadcast(load_checkpoint(out / "last.pt") if ctx.main else None)
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
    if "weights" in saved_config:
        saved_config["weights"] = None

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
    ctx.reseed(cfg.seed)  # each process its own random stream from here on (rank 0: the single-process one)
    unused = cfg.ddp.find_unused_parameters if cfg.ddp.find_unused_parameters is not None else cfg.model == "fusion"
    net = ctx.wrap(model, find_unused_parameters=unused)  # DistributedDataParallel under torchrun
    batches = infinite_batches(dataset, cfg.optim.batch_size, cfg.optim.workers, cfg.seed,
                               start_epoch=start * cfg.optim.batch_size // max(len(dataset), 1), collate_fn=collate_fn)
    losses_csv = LossLog(out / "losses.csv", start) if ctx.main else None
    try:
        train_loop(net, batches, cfg.optim, device, loss_fn, optimizer, scheduler, start,
                   validate=validate, save=save, log=log, best=best, record=losses_csv)
    except TrainingDiverged as e:
        raise DronetrackError(f"{e} (lower optim.lr; {out / 'last.pt'} holds the last good state)") from None
    except RuntimeError as e:
        if "find_unused_parameters" not in str(e):
            raise
        raise DronetrackError("a parameter got no gradient in a step under DistributedDataParallel: "
                              "set ddp.find_unused_parameters=true") from None
    finally:
        if losses_csv is not None:
            losses_csv.close()
    best_path = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    if cfg.export and ctx.main:
        ckpt = load_checkpoint(best_path)
        load_state(model, ckpt["state_dict"])
        export = Path(cfg.export)
        save_checkpoint(export, kind=cfg.model, config=saved_config, classes=classes, model=model.cpu(),
                        step=ckpt["step"], val=ckpt["val"], half=True)
        log(f"exported {export} ({export.stat().st_size / 1e6:.1f} MB)")
    if log_file is not None:
        log_file.close()
    ctx.barrier()  # the others end when rank 0 has written everything
    return best_path


def train_processes(config: str | Path, overrides: list[str], resume: bool, nproc: int) -> None:
    """`dronetrack train CONFIG --nproc N`: N processes on this machine through torchrun's launcher
    (one per GPU, or CPU processes), each running `main` below; a failure is one line (DronetrackError)."""
    from pipeline.training.distributed import launch

    cfg = load_train_config(config, overrides)  # a bad config is one line here, not one per process
    if cfg.device not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"device: {cfg.device!r}: with --nproc each process takes cuda:LOCAL_RANK; give auto, cuda or cpu")
    if cfg.optim.batch_size % nproc:
        raise ConfigError(f"optim.batch_size: {cfg.optim.batch_size} (the global batch) is not divisible by --nproc {nproc}")
    gpus = torch.cuda.device_count() if cfg.device != "cpu" and torch.cuda.is_available() else 0
    if gpus and nproc > gpus:
        raise ConfigError(f"--nproc {nproc}: this machine has {gpus} CUDA devices (one process per GPU; device=cpu for CPU processes)")
    launch(nproc, [str(config), *(["--resume"] if resume else []), *overrides])


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.training.train CONFIG [--resume] [--device D] [KEY=VALUE ...]`, what
    `torchrun --nproc_per_node N -m pipeline.training.train CONFIG` starts on every process (without
    torchrun: one process, as `dronetrack train`). Bad input: one line on stderr naming the rank, exit 2."""
    import argparse

    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    p = argparse.ArgumentParser(prog="python -m pipeline.training.train",
                                description="Train a detector; under torchrun, one process of several.")
    p.add_argument("config", metavar="CONFIG", help="training config YAML, e.g. configs/train_fusion.yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default=None,
                   help="default: the config's (under torchrun each process takes cuda:LOCAL_RANK)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.steps=100")
    a, extra = p.parse_known_args(argv)
    if any("=" not in x or x.startswith("-") for x in extra):  # KEY=VALUE after an option comes back unparsed
        p.error("unrecognized arguments: " + " ".join(extra))
    overrides = list(a.overrides) + extra + ([f"device={a.device}"] if a.device else [])

    def run() -> None:
        best = train(a.config, overrides, resume=a.resume)
        if os.environ.get("RANK", "0") == "0":
            print(f"best checkpoint: {best}", flush=True)

    return run_worker(run)


if __name__ == "__main__":
    sys.exit(main())
