"""The RGB + thermal fusion detector in the pipeline: its inputs on one pixel grid, and the stage.

`FusionInputs` turns a `FrameBundle` into the model's inputs, the same way in training
(pipeline/training/fusion_data.py) and at run time (`FusionStage`):
- the grid is the `reference` camera's (thermal by default: its field of view is the narrower one, so
  every grid pixel is seen by both cameras on the synthetic turret); the other camera's image is
  registered onto it through the two calibrations (pipeline/geometry/registration.py);
- an image is absent (present = False) when its stream has no frame close enough to this instant (the
  partner of a 25 fps thermal frame in a 30 fps RGB stream is None on some instants), when the modality
  is in `drop` (a sensor declared offline), or when it cannot be registered (no calibration);
- when the reference stream has no frame at this instant, the other camera's image is still registered
  onto the reference grid; when there is no reference stream at all (a single video, a live camera
  without calibration) the grid is the present stream's own frame;
- the optical-flow stack (two-stream models) is computed on the reference stream's frames, after the
  turret's motion is removed with `bundle.homographies` (detectors/flow.py); zeros where it has no frame.

`FusionStage` runs the model once per instant and gives every present stream the grid maps to the
detections, mapped from the grid to that stream's pixels. That includes a camera that is not an input of
the model or is dropped: its frames get the boxes the other camera found, in its own pixels (what an
operator needs to point it, and what lets every model be scored on the same ground truth).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from detectors.flow import FlowConfig, FlowStack
from detectors.inference import image_channels
from fusion.detector import MODALITY_CHANNELS, FusionDetector, decode
from fusion.multitask import encode_targets
from pipeline.errors import InputError
from pipeline.geometry.registration import Registration
from pipeline.stages import FlightBound, to_gray
from pipeline.types import Detections, FrameBundle


@dataclass
class GridInputs:
    """One instant's model inputs on the grid of stream `grid` (size (w, h))."""

    grid: str
    size: tuple[int, int]
    images: dict[str, np.ndarray | None]  # modality -> uint8 image on the grid (H, W, 3) or (H, W), or None
    flow: np.ndarray | None = None  # (2L, H, W) float32 in [-1, 1]

    def present(self) -> list[bool]:
        return [self.images[m] is not None for m in self.images]


class FusionInputs:
    def __init__(self, modalities: list[str], reference: str = "thermal", flow: int = 0,
                 drop: list[str] | tuple[str, ...] = (), flow_cfg: FlowConfig | None = None) -> None:
        self.modalities, self.reference, self.drop = list(modalities), reference, set(drop)
        self.flow_cfg = None if flow <= 0 else replace(flow_cfg or FlowConfig(), length=flow)
        self.specs: dict[str, Any] = {}
        self.registrations: dict[str, Registration] = {}  # other stream -> its registration onto the grid
        self.flows: dict[str, FlowStack] = {}
        self.reference_stream: str | None = None
        self.where: Any = None

    def bind(self, specs: dict[str, Any], where: Any = None) -> None:
        """A recorded flight's stream specs: the reference stream and the registrations of the others.
        `where` (the flight.yaml path) is named when a frame's size disagrees with its spec."""
        self.specs, self.where = dict(specs), where
        self.registrations = {}
        ref = self._stream_of(self.reference, {s: sp.modality for s, sp in self.specs.items()})
        self.reference_stream = ref
        if ref is None or self.specs[ref].calibration is None or self.specs[ref].width is None:
            return
        rs = self.specs[ref]
        for s, sp in self.specs.items():
            if s != ref and sp.calibration is not None and sp.width is not None and sp.height is not None:
                self.registrations[s] = Registration(rs.calibration, (rs.width, rs.height), sp.calibration,
                                                     (sp.width, sp.height))

    @staticmethod
    def _stream_of(modality: str, modalities: dict[str, str]) -> str | None:
        return next((s for s, m in modalities.items() if m == modality), None)

    def reset(self) -> None:
        for f in self.flows.values():
            f.reset()

    def __call__(self, bundle: FrameBundle) -> GridInputs | None:
        """None when no stream the model takes has a usable image at this instant."""
        mods = bundle.modalities
        if self.registrations:
            self._check_sizes(bundle)
        ref = self._stream_of(self.reference, mods)
        ref_spec = self.specs.get(ref) if ref is not None else None
        images: dict[str, np.ndarray | None] = dict.fromkeys(self.modalities)
        if ref is not None and bundle.images.get(ref) is not None:
            grid, (h, w) = ref, bundle.images[ref].shape[:2]
        elif ref_spec is not None and ref_spec.width is not None and self.registrations:
            grid, w, h = ref, ref_spec.width, ref_spec.height
        else:  # no reference grid: the first present stream of a modality the model takes
            grid = next((s for s in bundle.present() if mods.get(s) in self.modalities
                         and mods.get(s) not in self.drop), None)
            if grid is None:
                return None
            h, w = bundle.images[grid].shape[:2]
        for m in self.modalities:
            s = self._stream_of(m, mods)
            if s is None or m in self.drop or bundle.images.get(s) is None:
                continue
            if s == grid:
                images[m] = bundle.images[s]
            elif s in self.registrations and grid == ref:
                images[m] = self.registrations[s].warp(bundle.images[s])
        if not any(im is not None for im in images.values()):
            return None
        flow = None
        if self.flow_cfg is not None:
            if grid == ref or ref is None:
                stack = self.flows.setdefault(grid, FlowStack(self.flow_cfg))
                if bundle.images.get(grid) is not None:
                    flow = stack(to_gray(bundle.images[grid]), bundle.homographies.get(grid))
        return GridInputs(grid, (w, h), images, flow)


    def _check_sizes(self, bundle: FrameBundle) -> None:
        """Registration maps are built from flight.yaml's width and height: frames must have that size."""
        for s in bundle.present():
            sp = self.specs.get(s)
            h, w = bundle.images[s].shape[:2]
            if sp is not None and sp.width is not None and (sp.width, sp.height) != (w, h):
                raise InputError(f"stream {s!r}: frames are {w}x{h}, but its width and height say "
                                 f"{sp.width}x{sp.height}", self.where)


def frame_item(images: dict[str, np.ndarray | None], flow: np.ndarray | None = None,
               boxes: np.ndarray | None = None) -> dict:
    """One whole frame as a model-input item (what `collate_fusion` batches): images per modality as uint8
    (H, W, C) in the model's channels (see `image_channels`) or None, flow (2L, H, W) float32 or None."""
    ref = next(im for im in images.values() if im is not None)
    return {"images": {m: None if im is None else
                       torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1), np.float32) / 255)
                       for m, im in images.items()},
            "flow": None if flow is None else torch.from_numpy(np.asarray(flow, np.float32)),
            "boxes": torch.as_tensor(np.zeros((0, 4), np.float32) if boxes is None else boxes),
            "aux": np.full(4, np.nan, np.float32), "size": ref.shape[:2]}


def collate_fusion(items: list[dict]) -> dict:
    """Items of one size -> {"images": [per modality (B, C, H, W) or None], "present": (B, M), "flow"
    (B, 2L, H, W) or None, "boxes": [(N_i, 4)], "aux": ROCK targets}; absent images and flows are zeros."""
    mods = list(items[0]["images"])
    present = torch.tensor([[it["images"][m] is not None for m in mods] for it in items], dtype=torch.bool)
    h, w = items[0]["size"]
    images = []
    for mi, m in enumerate(mods):
        if not bool(present[:, mi].any()):
            images.append(None)
            continue
        ch = MODALITY_CHANNELS[m]
        images.append(torch.stack([it["images"][m] if it["images"][m] is not None else torch.zeros(ch, h, w)
                                   for it in items]))
    flow = None
    if any(it["flow"] is not None for it in items):
        ref = next(it["flow"] for it in items if it["flow"] is not None)
        flow = torch.stack([it["flow"] if it["flow"] is not None else torch.zeros_like(ref) for it in items])
    aux = np.stack([it["aux"] for it in items])
    targets = encode_targets(range_m=aux[:, 0], pan_deg=aux[:, 1], tilt_deg=aux[:, 2], signature=aux[:, 3])
    return {"images": images, "present": present, "flow": flow, "boxes": [it["boxes"] for it in items],
            "aux": targets}


def to_model_inputs(batch: list[GridInputs], modalities: list[str], flow: int, device: torch.device
                    ) -> tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor | None]:
    """Same-size GridInputs -> (images per modality (B, C, H, W) in [0, 1] or None, present (B, M), flow
    or None when no input has one)."""
    b = collate_fusion([frame_item({m: None if g.images[m] is None else image_channels(g.images[m], MODALITY_CHANNELS[m])
                                    for m in modalities}, g.flow if flow > 0 else None) for g in batch])
    images = [None if t is None else t.to(device) for t in b["images"]]
    return images, b["present"].to(device), None if b["flow"] is None else b["flow"].to(device)


class FusionStage(FlightBound):
    """The fusion detector as the pipeline's detector stage (see the module docstring)."""

    name = "detector"

    def __init__(self, model: FusionDetector, device: torch.device, min_score: float = 0.1,
                 reference: str = "thermal", drop: list[str] | tuple[str, ...] = ()) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.min_score = min_score
        cfg = model.cfg
        self.inputs = FusionInputs(cfg.modalities, reference, cfg.flow, drop)
        self.counts: dict[str, int] = {"instants": 0, "fused": 0, "single": 0}

    def bind(self, source: Any) -> None:
        super().bind(source)
        root = getattr(getattr(source, "flight", None), "root", None)
        self.inputs.bind(self.specs, None if root is None else root / "flight.yaml")

    def __call__(self, bundle: FrameBundle) -> FrameBundle:
        gi = self.inputs(bundle)
        for s in bundle.present():
            bundle.detections[s] = Detections.empty()
        if gi is None:
            return bundle
        cfg = self.model.cfg
        self.counts["instants"] += 1
        self.counts["fused" if all(gi.present()) else "single"] += 1
        images, present, flow = to_model_inputs([gi], cfg.modalities, cfg.flow, self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            out = self.model(images, present, flow)
        boxes, scores = decode(out, self.min_score, cfg.max_detections, cfg.nms_iou, self.model.stride)[0]
        xyxy, scores = boxes.float().cpu().numpy(), scores.float().cpu().numpy()
        w, h = gi.size
        for s in bundle.present():
            if s == gi.grid:
                d = Detections(xyxy, scores).clipped(w, h)
            elif s in self.inputs.registrations and gi.grid == self.inputs.reference_stream:
                mapped, ok = self.inputs.registrations[s].boxes_to_other(xyxy)
                d = Detections(mapped[ok], scores[ok])
            else:
                continue
            bundle.detections[s] = d[d.areas > 0]
        return bundle

    def report(self) -> dict[str, Any]:
        """For the run summary: instants the model ran on, with every modality present or with fewer."""
        return {"fusion": dict(self.counts)}

    def reset(self) -> None:
        self.inputs.reset()
