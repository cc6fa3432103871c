"""Cost of the sensor appearance augmentations (detectors/augment.py) per 256 x 256 crop, in CPU time of one
thread (not disturbed by other work on the machine):
each operation alone, the default chain (each operation at its configured probability) and the whole
chain (every operation on), thermal (grey) and visible (RGB).

    .venv/bin/python tools/bench_augment.py [--repeats 300] [--size 256]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import cv2
import numpy as np

from detectors.augment import THERMAL_OPS, VISIBLE_OPS, AppearanceConfig, apply_op, augment


def crop(size: int, rgb: bool) -> np.ndarray:
    """A textured test crop: gradient, clutter, a few small blobs."""
    r = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = 60 + 100 * yy / size + 20 * cv2.GaussianBlur(r.standard_normal((size, size)).astype(np.float32), (0, 0), 3)
    for _ in range(5):
        cv2.circle(img, tuple(int(v) for v in r.integers(0, size, 2)), int(r.integers(2, 6)), 230.0, -1)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.stack([img, img // 2 + 60, 255 - img], -1) if rgb else img


def ms(fn, repeats: int) -> float:
    fn()
    t = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - t) / repeats * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    default, every = AppearanceConfig(), AppearanceConfig()
    for section in (every.thermal, every.visible):
        for f in dataclasses.fields(section):
            getattr(section, f.name).p = 1.0
    print(f"CPU ms per {a.size} x {a.size} crop, one thread, mean of {a.repeats}")
    for modality, ops in (("thermal", THERMAL_OPS), ("rgb", VISIBLE_OPS)):
        img = crop(a.size, modality == "rgb")
        rng = np.random.default_rng(0)
        row = {op: ms(lambda: apply_op(img, op, modality, rng, default), a.repeats) for op in ops}
        row["chain (default p)"] = ms(lambda: augment(img, modality, rng, default), a.repeats)
        row["chain (every op)"] = ms(lambda: augment(img, modality, rng, every), a.repeats)
        print(f"{modality}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))


if __name__ == "__main__":
    main()
