"""Cross-domain evaluation: train the pyramid detector on one domain, test it on another, one table.

    .venv/bin/python tools/cross_domain.py [--steps 3000] [--only NAME ...] [--every 3]

Every run is `configs/train_real.yaml` with overrides (so the recipe is the shipped one, at --steps), scored by
tools/real_eval.py on the same held-out Svanstrom test clips the shipped model never saw:

  synthetic_only   default + domain-randomized synthetic flights, no Svanstrom clip -> Svanstrom IR and visible
  ir_to_visible    Svanstrom IR clips only (no synthetic)                          -> visible
  visible_to_ir    Svanstrom visible clips only (no synthetic)                     -> IR
  band_16_32       everything, but no drone is ever scaled into 16-32 px (scale.exclude) -> AP50 of the 16-32 band
  all              everything (the shipped recipe at this budget), the reference row

A held-out band is only approximately held out: crops placed away from any object (1 - p_object of them)
keep native sizes, and a second object in a crop is scaled with the chosen one.
Writes runs/cross_domain/cross_domain.json and prints the table (markdown).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from real_eval import build_detector, evaluate_clips, test_clips  # noqa: E402

RUNS = {
    "synthetic_only": ["data.svanstrom=null"],
    "ir_to_visible": ["data.synthetic=null", "data.svanstrom.sensors=[ir]"],
    "visible_to_ir": ["data.synthetic=null", "data.svanstrom.sensors=[v]"],
    "band_16_32": ["scale.exclude=[16.0,32.0]"],
    "all": [],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "train_real.yaml"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--only", nargs="+", default=None, choices=list(RUNS))
    ap.add_argument("--every", type=int, default=3, help="score every n-th test frame")
    ap.add_argument("--out", default="runs/cross_domain")
    ap.add_argument("--svanstrom", default=str(ROOT.parent / "shared" / "data" / "svanstrom"))
    ap.add_argument("--cache", default="runs/cache")
    a = ap.parse_args(argv)
    import torch

    from pipeline.training.train import train

    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / "cross_domain.json"
    results = json.loads(result_path.read_text()) if result_path.is_file() else {}
    clips = test_clips(a.svanstrom, a.cache, ["ir", "v"])
    for name in a.only or list(RUNS):
        run = out / name
        overrides = RUNS[name] + [f"out={run}", "export=null", f"optim.steps={a.steps}",
                                  f"optim.eval_every={max(a.steps // 3, 1)}", f"data.cache={a.cache}"]
        t0 = time.perf_counter()
        best = train(a.config, overrides)
        minutes = (time.perf_counter() - t0) / 60
        scores = evaluate_clips(build_detector(str(best), None, []), clips, a.every, sheets=None, log=lambda *_: None)
        results[name] = {"overrides": RUNS[name], "steps": a.steps, "train_minutes": minutes, "scores": scores}
        result_path.write_text(json.dumps(results, indent=2))
        print(f"{name}: done in {minutes:.0f} min", flush=True)
    print(table(results))
    return 0


def table(results: dict) -> str:
    def ap(r: dict, sensor: str, key: str = "ap50") -> str:
        v = r["scores"].get(sensor, {}).get(key)
        return "-" if v is None else f"{v:.3f}"

    def band(r: dict, sensor: str, b: str) -> str:
        v = r["scores"].get(sensor, {}).get("bands", {}).get(b)
        return "-" if not v or not v["n"] else f"{v['ap50']:.3f}"

    lines = ["| trained on | IR AP50 | IR COCO AP | visible AP50 | visible COCO AP | 16-32 px AP50 IR / visible |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {ap(r, 'thermal')} | {ap(r, 'thermal', 'coco_ap')} | {ap(r, 'visible')} | "
                     f"{ap(r, 'visible', 'coco_ap')} | {band(r, 'thermal', '16-32')} / {band(r, 'visible', '16-32')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
