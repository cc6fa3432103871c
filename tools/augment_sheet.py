"""A contact sheet of the sensor appearance augmentations (detectors/augment.py): one Svanstrom IR frame
and one visible frame, as 256 x 256 crops around the labelled drone (native pixels, as training sees
them), unchanged, under each operation alone (drawn from the configured ranges), and under the whole
default chain with a few seeds. For looking at: do the results look like other sensors, not garbage?

    .venv/bin/python tools/augment_sheet.py [--data ../shared/data/svanstrom] [--out runs/augment/sheet.png]
        [--ir IR_DRONE_001 --visible V_DRONE_001 --frame 100 --seed 0]
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np

from detectors.augment import THERMAL_OPS, VISIBLE_OPS, AppearanceConfig, apply_op, augment

ROOT = Path(__file__).resolve().parent.parent
TILE = 256
PER_ROW = 8


def crop_around_drone(video: Path, frame: int, rgb: bool) -> np.ndarray:
    """The frame's 256 x 256 crop centred (as far as the image allows) on its labelled box."""
    rows = {int(r["frame"]): r for r in csv.DictReader(open(video.with_suffix(".csv"), encoding="utf-8"))}
    f = min(rows, key=lambda k: abs(k - frame))
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, f - 1)
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"{video}: cannot read frame {f}")
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB if rgb else cv2.COLOR_BGR2GRAY)
    r = rows[f]
    cx, cy = float(r["x"]) + float(r["w"]) / 2, float(r["y"]) + float(r["h"]) / 2
    h, w = img.shape[:2]
    x0 = int(np.clip(round(cx - TILE / 2), 0, max(w - TILE, 0)))
    y0 = int(np.clip(round(cy - TILE / 2), 0, max(h - TILE, 0)))
    return np.ascontiguousarray(img[y0:y0 + TILE, x0:x0 + TILE])


def label(img: np.ndarray, text: str) -> np.ndarray:
    tile = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img.copy()
    tile = cv2.copyMakeBorder(tile, 0, TILE - tile.shape[0], 0, TILE - tile.shape[1], cv2.BORDER_CONSTANT)
    cv2.rectangle(tile, (0, 0), (8 * len(text) + 8, 18), (0, 0, 0), -1)
    cv2.putText(tile, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 0), 1, cv2.LINE_AA)
    return tile


def tiles(img: np.ndarray, modality: str, ops: tuple[str, ...], seed: int, cfg: AppearanceConfig) -> list:
    out = [label(img, f"{modality}: original")]
    for k, op in enumerate(ops):
        out.append(label(apply_op(img, op, modality, np.random.default_rng([seed, k]), cfg), op))
    for s in range(3):
        out.append(label(augment(img, modality, np.random.default_rng([seed, 100 + s]), cfg), f"default chain {s}"))
    while len(out) % PER_ROW:
        out.append(label(np.zeros_like(img), ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "svanstrom"))
    ap.add_argument("--out", default=str(ROOT / "runs" / "augment" / "sheet.png"))
    ap.add_argument("--ir", default="IR_DRONE_001")
    ap.add_argument("--visible", default="V_DRONE_001")
    ap.add_argument("--frame", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    data, cfg = Path(a.data), AppearanceConfig()
    ir = crop_around_drone(data / "ir" / f"{a.ir}.mp4", a.frame, rgb=False)
    vis = crop_around_drone(data / "visible" / f"{a.visible}.mp4", a.frame, rgb=True)
    all_tiles = tiles(ir, "thermal", THERMAL_OPS, a.seed, cfg) + tiles(vis, "rgb", VISIBLE_OPS, a.seed, cfg)
    rows = [np.hstack(all_tiles[i:i + PER_ROW]) for i in range(0, len(all_tiles), PER_ROW)]
    sheet = np.vstack(rows)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"{out}: {sheet.shape[1]} x {sheet.shape[0]}, {len(all_tiles)} tiles")


if __name__ == "__main__":
    main()
