"""Training and validation data of the fusion detector: paired, registered frames of recorded flights.

Each sample is one frame of the reference stream (thermal by default) with what the pipeline would feed
the model at that instant (`pipeline.fusion_stage.FusionInputs`, the same code as at run time): the
reference image, the other camera's image registered onto it (None when its stream has no frame close
enough, as happens between a 25 fps and a 30 fps camera), the optical-flow stack of the reference stream
(after the turret's motion, taken from the pose log, is removed), the reference stream's ground-truth drone
boxes, and per-drone auxiliary targets for ROCK, used in training only:
- range: metres from the turret to the drone's GPS-RTK position at that instant (telemetry);
- pan, tilt: the turret's angles (pose log);
- signature: the drone's thermal signature from the synthetic metadata, (body + motor temperature) / 2,
  as (celsius - 40) / 10.
Drones are matched to their telemetry and metadata by id (the synthetic flights give drones the same id in
the ground truth, the GPS log and the metadata); a target that is missing gives NaN, which the auxiliary
loss skips.

`FusionCropDataset` draws crops (on a drone with probability p_object, else anywhere) with a horizontal
flip (flow x channels negated) and photometric jitter per modality.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detectors.camera_motion import CameraMotionConfig
from detectors.inference import image_channels
from fusion.detector import MODALITY_CHANNELS
from pipeline.config import require
from pipeline.training.datasets import photometric
from pipeline.evaluation.evaluate import drone_rows
from pipeline.io.flight import Flight, load_flight
from pipeline.fusion_stage import FusionInputs, collate_fusion, frame_item
from pipeline.geometry.camera import camera_matrix, geodetic_to_enu
from pipeline.io.motio import read_mot
from pipeline.io.sources import FlightSource
from pipeline.stages import CameraMotionStage


@dataclass
class FusionDataConfig:
    reference: str = "thermal"  # the grid the model sees (the other camera is registered onto it)
    every: int = 2              # keep every n-th reference frame of the training flights
    val_every: int = 10         # and of the validation flights
    crop: int = 96
    p_object: float = 0.7

    def validate(self, prefix: str = "") -> None:
        require(self.reference in MODALITY_CHANNELS, prefix + "reference", "must be rgb or thermal")
        for key in ("every", "val_every", "crop"):
            require(getattr(self, key) >= 1, prefix + key, "must be >= 1")
        require(self.crop % 8 == 0, prefix + "crop", "must be a multiple of 8")
        require(0.0 <= self.p_object <= 1.0, prefix + "p_object", "must be in [0, 1]")


@dataclass
class PairedSample:
    flight: str
    frame: int  # reference stream's frame number
    images: dict[str, np.ndarray | None]  # modality -> uint8 (H, W, C) on the grid (RGB order or grey), or None
    flow: np.ndarray | None  # (2L, H, W) int8, value * 127
    boxes: np.ndarray  # (N, 4) xyxy drones on the grid
    aux: np.ndarray  # (N, 4): range m, pan deg, tilt deg, signature (scaled), per box; NaN when unknown
    rotation: np.ndarray | None = None  # reference camera's ENU -> camera rotation at the frame (pose log)
    camera_matrix: np.ndarray | None = None  # reference camera's K

    def homography_from(self, prev: "PairedSample") -> np.ndarray | None:
        """Pixel homography previous sample -> this one from the turret's pose (K R R_prev^T K^-1), None
        where a rotation is unknown."""
        if self.rotation is None or prev.rotation is None or self.camera_matrix is None:
            return None
        k = self.camera_matrix
        return k @ self.rotation @ prev.rotation.T @ np.linalg.inv(k)


def _gt_by_frame(flight: Flight, stream: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{frame: (xyxy, ids)} of a stream's drone rows (class 1, or no class; flag-0 rows ignored)."""
    path = flight.gt_path(stream)
    if path is None:
        return {}
    rows = drone_rows(read_mot(path))
    rows = rows[rows[:, 6] != 0]
    out = {}
    for f in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == f]
        out[int(f)] = (np.c_[r[:, 2:4], r[:, 2:4] + r[:, 4:6]].astype(np.float32), r[:, 1].astype(int))
    return out


def _signatures(flight: Flight) -> dict[int, float]:
    out = {}
    for o in flight.spec.meta.get("objects", []):
        if "body_temp" in o and "motor_temp" in o:
            out[int(o["id"])] = ((o["body_temp"] + o["motor_temp"]) / 2 - 40.0) / 10.0
    return out


def _aux_rows(bundle, ids: np.ndarray, signatures: dict[int, float]) -> np.ndarray:
    aux = np.full((len(ids), 4), np.nan, np.float32)
    tel = bundle.telemetry
    cam = tel.camera if tel is not None else None
    if cam is not None:
        aux[:, 1], aux[:, 2] = cam["pan"], cam["tilt"]
        ref = (cam["lat"], cam["lon"], cam["alt"])
        where = {t.target_id: t for t in tel.targets}
        for i, tid in enumerate(ids):
            t = where.get(int(tid))
            if t is not None:
                aux[i, 0] = float(np.linalg.norm(geodetic_to_enu(t.lat, t.lon, t.alt, ref)))
    for i, tid in enumerate(ids):
        aux[i, 3] = signatures.get(int(tid), np.nan)
    return aux


_MEMO: dict[tuple, list[PairedSample]] = {}  # flights read once per process (benchmarks train many models)


def paired_samples(folder: str | Path, modalities: list[str], reference: str = "thermal", flow: int = 0,
                   every: int = 1) -> list[PairedSample]:
    """Every `every`-th reference frame of a flight as a PairedSample (see the module docstring), less the
    frames where none of `modalities` has an image. Both cameras are read and kept in memory for the
    process, so models of other modalities reuse them."""
    key = (str(Path(folder).resolve()), reference, flow, every)
    if key not in _MEMO:
        _MEMO[key] = _read_pairs(folder, reference, flow, every)
    out = [PairedSample(s.flight, s.frame, {m: s.images.get(m) for m in modalities}, s.flow, s.boxes, s.aux,
                        s.rotation, s.camera_matrix) for s in _MEMO[key]]
    return [s for s in out if any(im is not None for im in s.images.values())]  # none of these cameras: no input


def _read_pairs(folder: str | Path, reference: str, flow: int, every: int) -> list[PairedSample]:
    modalities = list(MODALITY_CHANNELS)
    flight = load_flight(folder)
    source = FlightSource(flight)
    camera = CameraMotionStage(CameraMotionConfig(source="pose"))
    camera.bind(source)
    inputs = FusionInputs(modalities, reference, flow)
    inputs.bind(flight.streams, flight.root / "flight.yaml")
    ref = next((s for s, sp in flight.streams.items() if sp.modality == reference), None)
    if ref is None:
        raise ValueError(f"{folder}: no {reference} stream to register onto")
    gt, sig = _gt_by_frame(flight, ref), _signatures(flight)
    out = []
    for bundle in source:
        if bundle.images.get(ref) is None:
            continue
        camera(bundle)
        gi = inputs(bundle)
        f = bundle.frame_ids[ref]
        if gi is None or (f - 1) % every:
            continue
        boxes, ids = gt.get(f, (np.zeros((0, 4), np.float32), np.zeros(0, int)))
        fl = None if gi.flow is None else np.round(gi.flow * 127).astype(np.int8)
        images = {m: None if im is None else np.ascontiguousarray(image_channels(im, MODALITY_CHANNELS[m]))
                  for m, im in gi.images.items()}  # model channels: RGB order, or grey (H, W, 1)
        cal = flight.streams[ref].calibration
        out.append(PairedSample(flight.name, f, images, fl, boxes, _aux_rows(bundle, ids, sig),
                                camera.rotation(ref, f), None if cal is None else camera_matrix(cal)))
    return out


class FusionCropDataset(torch.utils.data.Dataset):
    """Crops of paired samples -> dicts for `collate_fusion`."""

    def __init__(self, samples: list[PairedSample], modalities: list[str], crop: int = 96, p_object: float = 0.7,
                 seed: int = 0, augment: bool = True) -> None:
        self.samples, self.modalities = samples, list(modalities)
        self.crop, self.p_object, self.seed, self.augment = crop, p_object, seed, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        s = self.samples[i]
        h, w = next(im for im in s.images.values() if im is not None).shape[:2]
        cw, ch = min(self.crop, w), min(self.crop, h)  # a grid smaller than the crop is taken whole
        if len(s.boxes) and rng.random() < self.p_object:
            b = s.boxes[rng.integers(len(s.boxes))]
            cx = (b[0] + b[2]) / 2 + rng.uniform(-0.4, 0.4) * cw
            cy = (b[1] + b[3]) / 2 + rng.uniform(-0.4, 0.4) * ch
            x0, y0 = int(np.clip(round(cx - cw / 2), 0, w - cw)), int(np.clip(round(cy - ch / 2), 0, h - ch))
        else:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        flip = self.augment and rng.random() < 0.5
        return self.item_at(i, x0, y0, rng if self.augment else None, flip)

    def item_at(self, i: int, x0: int, y0: int, rng: np.random.Generator | None = None, flip: bool = False) -> dict:
        """Sample i cropped at (x0, y0) (photometric jitter when rng is given, mirrored when flip); the
        crop's origin is in "origin"."""
        s = self.samples[i]
        h, w = next(im for im in s.images.values() if im is not None).shape[:2]
        cw, ch = min(self.crop, w), min(self.crop, h)
        images = {}
        for m in self.modalities:
            im = s.images.get(m)
            if im is None:
                images[m] = None
                continue
            x = im[y0:y0 + ch, x0:x0 + cw]
            x = photometric(x, rng) if rng is not None else x.astype(np.float32) / 255
            x = x.reshape(*x.shape[:2], -1)
            if flip:
                x = x[:, ::-1]
            images[m] = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), np.float32))
        flow = None
        if s.flow is not None:
            f = s.flow[:, y0:y0 + ch, x0:x0 + cw].astype(np.float32) / 127
            if flip:
                f = f[:, :, ::-1].copy()
                f[0::2] *= -1
            flow = torch.from_numpy(np.ascontiguousarray(f))
        boxes = s.boxes - np.array([x0, y0, x0, y0], np.float32)
        ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = (ctr[:, 0] >= 0) & (ctr[:, 0] < cw) & (ctr[:, 1] >= 0) & (ctr[:, 1] < ch)
        boxes, aux = boxes[keep], s.aux[keep]
        boxes = np.c_[boxes[:, [0, 2]].clip(0, cw), boxes[:, [1, 3]].clip(0, ch)][:, [0, 2, 1, 3]]
        if flip:
            boxes = np.c_[cw - boxes[:, 2], boxes[:, 1], cw - boxes[:, 0], boxes[:, 3]]
        # Per-crop auxiliary targets: the nearest drone's range and signature, the turret's pan and tilt.
        row = np.full(4, np.nan, np.float32)
        if len(aux):
            row = aux[np.nanargmin(aux[:, 0])] if np.isfinite(aux[:, 0]).any() else aux[0]
        elif len(s.aux):
            row[1:3] = s.aux[0, 1:3]
        return {"images": images, "flow": flow, "boxes": torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
                "aux": row, "size": (ch, cw), "origin": (x0, y0)}


def full_frames(samples: list[PairedSample], modalities: list[str]) -> list[dict]:
    """Validation items: whole frames, no augmentation."""
    return [frame_item({m: s.images.get(m) for m in modalities}, None if s.flow is None else s.flow.astype(np.float32) / 127,
                       s.boxes) for s in samples]


# ---------------------------------------------------------------------------------------------- training


def fusion_loss(device: torch.device):
    """Centre-point detection loss, plus the ROCK auxiliary loss (weighted) when the model has the block."""
    from fusion.detector import centre_loss, centre_targets

    def loss_fn(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        images = [None if t is None else t.to(device) for t in batch["images"]]
        flow = None if batch["flow"] is None else batch["flow"].to(device)
        out = model(images, batch["present"].to(device), flow)
        heat, reg, mask = centre_targets(batch["boxes"], tuple(out["heat"].shape[-2:]), model.stride)
        losses = centre_loss(out, heat.to(device), reg.to(device), mask.to(device))
        if model.rock is not None:
            targets = {k: v.to(device) for k, v in batch["aux"].items() if k in model.rock.cfg.tasks}
            losses["aux"] = model.cfg.aux_weight * model.rock.loss(out["aux"], targets)
        return losses
    return loss_fn


def fusion_ap(model: torch.nn.Module, items: list[dict], device: torch.device, min_score: float = 0.05,
              drop: tuple[str, ...] = ()) -> dict[str, float]:
    """Drone AP50 (VOC all-point) over whole frames; `drop`: modalities treated as absent."""
    from fusion.detector import decode
    from pipeline.evaluation.detmetrics import average_precision, pr_curve

    mods = model.cfg.modalities
    gt_img, gt_xywh, det_img, det_xywh, det_scores = [], [], [], [], []
    for k, it in enumerate(items):
        it = {**it, "images": {m: (None if m in drop else v) for m, v in it["images"].items()}}
        if all(v is None for v in it["images"].values()):
            continue
        b = collate_fusion([it])
        images = [None if t is None else t.to(device) for t in b["images"]]
        flow = None if b["flow"] is None else b["flow"].to(device)
        out = model(images, b["present"].to(device), flow)
        boxes, scores = decode(out, min_score, model.cfg.max_detections, model.cfg.nms_iou, model.stride)[0]
        g = it["boxes"].numpy().reshape(-1, 4)
        gt_img += [k] * len(g)
        gt_xywh.append(np.c_[g[:, :2], g[:, 2:] - g[:, :2]])
        d = boxes.float().cpu().numpy()
        det_img += [k] * len(d)
        det_xywh.append(np.c_[d[:, :2], d[:, 2:] - d[:, :2]])
        det_scores.append(scores.float().cpu().numpy())
    if not gt_xywh:
        return {"ap50": 0.0, "score": 0.0}
    rec, prec, _ = pr_curve(gt_img, np.concatenate(gt_xywh), det_img, np.concatenate(det_xywh),
                            np.concatenate(det_scores), 0.5, plus_one=False)
    ap = average_precision(rec, prec)
    return {"ap50": ap, "score": ap}
