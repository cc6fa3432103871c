"""Training on 2 processes (DistributedDataParallel, gloo, CPU) against 1 process of twice the batch:
the loss curves side by side and steps/s (issue 11, item 3).

Every run is `dronetrack train CONFIG` with the same overrides and the same global batch
(`optim.batch_size`); `--nproc 2` splits each batch over 2 processes of 1 CPU thread each. Runs:

    one       1 process  x batch B, 1 thread    (the reference)
    ddp       2 processes x batch B/2, 1 thread each
    two_threads  1 process x batch B, 2 threads (the same 2 cores used by one process)
    control   1 process  x batch B, 1 thread, another seed (data order, crops, initial weights): how far
              two equally good runs drift apart, the yardstick for "within noise"

(`--parts` picks them; default one,ddp,control) and ddp_nofind: 2 processes without
`ddp.find_unused_parameters` (its cost for fusion). Curves come from each run's OUT/losses.csv (the summed loss at every step, the mean over the processes);
steps/s from its `seconds` column between the 10th and the last step (start-up and the first, slower
steps left out). "Within noise": the mean absolute difference of the EMA-smoothed curves (alpha 0.05) of
ddp vs one, against control vs one and against the step-to-step noise (the mean absolute deviation of
the raw loss from its own EMA).

steps/s is wall-clock: on a machine shared with other work it measures the share of the cores a run got
(`--repeat` takes the best of several interleaved runs). `--cpu` also measures CPU seconds per step (all
processes together, start-up removed by a 1-step run of each part), which other load does not change,
and from it the steps/s an otherwise idle machine would give (each process a core).

    .venv/bin/python tools/bench_ddp.py --cpu               # fusion, 300 steps, batch 16 (about 15 min on 2 cores)
    .venv/bin/python tools/bench_ddp.py --steps 100 --parts one,ddp,ddp_nofind,two_threads --repeat 3

Writes runs/bench_ddp/curves.json and runs/bench_ddp/curves.png.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUNS = {
    "one": (1, 1, 0, []),           # (processes, threads per process, seed offset, extra overrides)
    "ddp": (2, 1, 0, []),
    "two_threads": (1, 2, 0, []),
    "control": (1, 1, 1, []),
    "ddp_nofind": (2, 1, 0, ["ddp.find_unused_parameters=false"]),
}


def cpu_seconds() -> float:
    """User + system CPU seconds of every finished child process (and theirs: the training processes)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(name: str, args: argparse.Namespace, out: Path, rep: int = 0, steps: int | None = None) -> dict:
    nproc, threads, seed_offset, extra = RUNS[name]
    steps_n = steps or args.steps
    folder = out / (name if rep == 0 else f"{name}_{rep}") if steps is None else out / f"{name}_{steps}steps"
    overrides = [f"out={folder}", "export=null", f"threads={threads}", f"seed={args.seed + seed_offset}",
                 f"optim.steps={steps_n}", f"optim.eval_every={steps_n}", f"optim.batch_size={args.batch}",
                 f"data.cache={out / 'cache'}", f"data.synthetic.seeds=[{','.join(map(str, args.flights))}]",
                 "device=cpu", *extra, *args.overrides]
    cmd = [sys.executable, "-m", "pipeline.cli", "train", args.config, *overrides]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"[{folder.name}] {' '.join(cmd[3:])}", flush=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    with open(folder / "losses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    secs = np.array([float(r["seconds"]) for r in rows])
    k = max(0, min(10, len(rows) - 2))
    rate = (steps[-1] - steps[k]) / max(secs[-1] - secs[k], 1e-9)
    val = torch_val(folder / "last.pt")
    print(f"[{folder.name}] {rate:.2f} steps/s, {wall:.0f} s, {cpu:.0f} CPU s in all, load {os.getloadavg()[0]:.1f}, "
          f"final validation {val}", flush=True)
    return {"processes": nproc, "threads": threads, "seed": args.seed + seed_offset, "steps_per_s": rate,
            "wall_s": wall, "cpu_s": cpu, "steps": steps.tolist(), "loss": loss.tolist(), "seconds": secs.tolist(),
            "ema": ema(loss, args.alpha).tolist(), "validation": val}


def torch_val(path: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from detectors.checkpoint import load_checkpoint

    return {k: round(float(v), 4) for k, v in load_checkpoint(path)["val"].items()}


def ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average, bias-corrected (as Adam's moments) so its first steps are not the first loss."""
    out, m = np.empty_like(x), 0.0
    for i, v in enumerate(x):
        m = (1 - alpha) * m + alpha * v
        out[i] = m / (1 - (1 - alpha) ** (i + 1))
    return out


def compare(a: dict, b: dict, skip: int) -> float:
    """Mean absolute difference of two EMA curves after the first `skip` steps."""
    n = min(len(a["ema"]), len(b["ema"]))
    return float(np.mean(np.abs(np.array(a["ema"][skip:n]) - np.array(b["ema"][skip:n]))))


def noise(r: dict, skip: int) -> float:
    """Step-to-step noise: mean absolute deviation of the raw loss from its EMA."""
    return float(np.mean(np.abs(np.array(r["loss"][skip:]) - np.array(r["ema"][skip:]))))


def plot(results: dict, path: Path, batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = {"one": "tab:blue", "ddp": "tab:red", "two_threads": "tab:green", "control": "tab:gray",
              "ddp_nofind": "tab:orange"}
    for name, r in results.items():
        label = (f"{name}: {r['processes']} proc x batch {batch // r['processes']}, {r['threads']} thread"
                 f"{'s' if r['threads'] > 1 else ''}, {r['steps_per_s']:.2f} steps/s"
                 + (f", {r['cpu_s_per_step']:.3f} CPU s/step" if "cpu_s_per_step" in r else ""))
        for ax, x in ((axes[0], r["steps"]), (axes[1], r["seconds"])):
            ax.plot(x, r["loss"], color=colors.get(name), alpha=0.15, lw=0.7)
            ax.plot(x, r["ema"], color=colors.get(name), lw=1.8, label=label)
    axes[0].set_xlabel("step")
    axes[1].set_xlabel("seconds of training")
    for ax in axes:
        ax.set_ylabel("training loss (faint: per step; bold: EMA)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"DDP: 2 processes x batch {batch // 2} vs 1 process x batch {batch} (gloo, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/train_fusion.yaml")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16, help="the global batch (each of 2 processes: half)")
    p.add_argument("--flights", type=int, nargs="+", default=[100, 101, 102, 103, 104],
                   help="synthetic flight seeds (made once under OUT/cache; one held out for validation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.05, help="EMA smoothing of the curves")
    p.add_argument("--parts", default="one,ddp,control", help=f"runs among {', '.join(RUNS)}")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the parts this many times, interleaved, for steps/s on a busy machine (best and median "
                        "reported; curves from the first)")
    p.add_argument("--cpu", action="store_true",
                   help="also run each part for 1 step: CPU seconds per training step (all processes) = the "
                        "difference / (steps - 1), which other load on a shared machine does not change")
    p.add_argument("--out", default="runs/bench_ddp")
    p.add_argument("overrides", nargs="*", help="more config overrides for every run")
    args = p.parse_args()
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results, rates = {}, {}
    for rep in range(args.repeat):
        for name in args.parts.split(","):
            r = run(name, args, out, rep)
            results.setdefault(name, r)
            rates.setdefault(name, []).append(round(r["steps_per_s"], 3))
    for name, r in results.items():
        r["steps_per_s"] = max(rates[name])  # the best of the repeats (the least disturbed by other load)
    cpu_step = {}
    if args.cpu:
        for name, r in results.items():
            r["cpu_s_per_step"] = (r["cpu_s"] - run(name, args, out, steps=1)["cpu_s"]) / (args.steps - 1)
            cpu_step[name] = round(r["cpu_s_per_step"], 4)
    skip = min(20, args.steps // 4)  # the EMA's own start-up
    summary = {"config": args.config, "steps": args.steps, "batch": args.batch, "flights": args.flights,
               "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "ema_alpha": args.alpha,
               "compare_from_step": skip + 1,
               "steps_per_s": {k: round(r["steps_per_s"], 3) for k, r in results.items()},
               "steps_per_s_all": rates, "steps_per_s_best": {k: max(v) for k, v in rates.items()},
               "steps_per_s_median": {k: float(np.median(v)) for k, v in rates.items()},
               "noise": {k: round(noise(r, skip), 4) for k, r in results.items()}}
    if cpu_step:
        # on an otherwise idle machine: each process a core of its own, all busy (waits are short)
        summary["cpu_s_per_step"] = cpu_step
        summary["idle_steps_per_s_estimate"] = {
            k: round(min(results[k]["processes"] * results[k]["threads"], os.cpu_count() or 1) / v, 2)
            for k, v in cpu_step.items() if results[k]["threads"] == 1}
    if "one" in results:
        summary["ema_mad_vs_one"] = {k: round(compare(r, results["one"], skip), 4) for k, r in results.items()
                                     if k != "one"}
        if "ddp" in results:
            summary["ddp_speedup_vs_one"] = round(max(rates["ddp"]) / max(rates["one"]), 3)  # best of each
    (out / "curves.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=1))
    plot(results, out / "curves.png", args.batch)
    print(json.dumps(summary, indent=1))
    print(f"wrote {out / 'curves.json'} and {out / 'curves.png'}")


if __name__ == "__main__":
    main()
