"""`dronetrack` command line. Every subcommand shares one parser shape (detectron2-style): a
`--config` YAML plus trailing `key.sub=value` overrides. Bad input gives one line on stderr and exit
status 2; Ctrl-C exits 130 after writing what was done, SIGTERM likewise with 143."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from pipeline.errors import DronetrackError, InputError

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # OpenCV's own warnings are not our one-line errors
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages too: we report the file ourselves


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


def _positive(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (v > 0 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number")
    return v


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=_device, default=None,
                   help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; default: the config's")


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="run config YAML (default: configs/default.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. tracker.max_age=30")
    _add_device(p)


def _overrides(a: argparse.Namespace, key: str = "detector.device") -> list[str]:
    """The trailing KEY=VALUE overrides, with `--device` last (it wins)."""
    return list(a.overrides) + ([f"{key}={a.device}"] if a.device else [])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dronetrack", description="Drone detection and tracking in RGB and thermal video.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="make a synthetic flight folder")
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--drones", type=int, default=3)
    p.add_argument("--birds", type=int, default=2)
    p.add_argument("--randomize", action="store_true",
                   help="domain-randomized profile: random sensor sizes and fields of view, drone shapes and sizes "
                        "(3-200 px), cluttered backgrounds, birds, airplanes and helicopters in the ground truth")

    p = sub.add_parser("process", help="process a recorded flight folder (or one video file or folder of images)")
    p.add_argument("flight", help="flight folder (with flight.yaml), a video file or a folder of images")
    p.add_argument("--fps", type=_positive, default=None,
                   help="frame rate of a single video file or folder of images (default: the video's; 30 for images)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--annotate", action="store_true", help="also write OUT/annotated/<stream>.mp4")
    p.add_argument("--modality", choices=["rgb", "thermal"], default="rgb",
                   help="modality of a single video file or folder of images (ignored for flight folders)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many bundles")
    p.add_argument("--no-progress", action="store_true")
    _add_config(p)

    p = sub.add_parser("batch", help="process many flights (local processes or a Ray cluster), optionally score them")
    p.add_argument("flights", nargs="*", metavar="FLIGHT",
                   help="flight folders (or video files, image folders); a folder of flight folders stands for them")
    p.add_argument("--out", required=True, help="output folder: OUT/<flight>/, OUT/index.json")
    p.add_argument("--ray", default=None, metavar="ADDRESS|auto|local",
                   help="run on Ray: local (a Ray instance started here), auto (the running cluster) or a head's address")
    p.add_argument("--workers", type=int, default=None,
                   help="local processes (default: one per core, at most one per flight; 1: in this process)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/OpenCV threads per flight, and CPUs of each Ray task (default: cores / workers; Ray: 1)")
    p.add_argument("--evaluate", action="store_true",
                   help="score each flight with ground truth (OUT/<flight>/scores.json) and pool them per stream")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of AP with --evaluate")
    p.add_argument("--annotate", action="store_true", help="also write OUT/<flight>/annotated/<stream>.mp4")
    p.add_argument("--modality", choices=["rgb", "thermal"], default="rgb",
                   help="modality of video files or folders of images (ignored for flight folders)")
    p.add_argument("--fps", type=_positive, default=None, help="frame rate of folders of images (default 30)")
    p.add_argument("--max-frames", type=int, default=None, help="stop each flight after this many bundles")
    p.add_argument("--no-progress", action="store_true")
    _add_config(p)

    p = sub.add_parser("live", help="run on a camera index, file, RTSP/FFmpeg URL or GStreamer pipeline")
    p.add_argument("source", help="RGB (or single) source")
    p.add_argument("--thermal", default=None, help="thermal source")
    p.add_argument("--modality", choices=["rgb", "thermal"], default="rgb", help="modality of SOURCE")
    p.add_argument("--fps", type=_positive, default=None, help="rate a folder of images is played at (default 30)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--out", default=None, help="also write tracks and summary.json here")
    _add_config(p)

    p = sub.add_parser("track", help="run the tracker on a MOTChallenge detection file")
    p.add_argument("--detections", required=True)
    p.add_argument("--out", required=True)
    _add_config(p)

    p = sub.add_parser("evaluate", help="MOT metrics and mAP; files or a flight and its outputs")
    p.add_argument("flight", nargs="?", help="flight folder (flight mode)")
    p.add_argument("outdir", nargs="?", help="output folder of `dronetrack process` (flight mode)")
    p.add_argument("--gt")
    p.add_argument("--tracks")
    p.add_argument("--detections")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--json", default=None, help="write the scores here")
    p.add_argument("--plots", default=None, help="write precision-recall plots to this folder")
    p.add_argument("--gt-coco", default=None, metavar="GT.json",
                   help="COCO ground truth (images, annotations, categories): score --detections with pycocotools")
    p.add_argument("--only-gt-images", action="store_true",
                   help="with --gt-coco: drop detections on images the ground truth does not list (else an error)")

    p = sub.add_parser("export-coco", help="write a flight stream's ground truth as COCO ground truth")
    p.add_argument("flight", help="flight folder (with flight.yaml and gt/<stream>.txt)")
    p.add_argument("out", help="COCO ground-truth JSON to write")
    p.add_argument("--stream", default=None, help="the stream (default: the only one with ground truth)")

    p = sub.add_parser("train", help="train a detector (checkpoints in the config's `out`)")
    p.add_argument("train_config", metavar="CONFIG", help="training config YAML, e.g. configs/train_dpfcn.yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="N processes on this machine (DistributedDataParallel through torchrun's launcher: one "
                        "per GPU, or CPU processes); optim.batch_size stays the global batch")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.steps=100")
    _add_device(p)

    p = sub.add_parser("import-svanstrom", help="convert Svanstrom-style clips into flight folders")
    p.add_argument("src", help="folder with index.csv, ir/ and visible/")
    p.add_argument("out", help="one flight folder per clip is written here")
    p.add_argument("--clips", nargs="+", default=None, help="only these clips (e.g. IR_DRONE_001)")
    p.add_argument("--copy", action="store_true", help="copy the videos instead of linking them")

    p = sub.add_parser("import-yolo", help="convert a YOLO dataset (images/ + labels/) into flight folders")
    p.add_argument("src", help="folder with images/ and labels/ (optionally split into train/, val/, ...)")
    p.add_argument("out", help="one flight folder per split is written here")
    p.add_argument("--modality", choices=["rgb", "thermal"], default="rgb", help="modality of the images")
    p.add_argument("--drone-class", nargs="+", default=None, metavar="NAME|ID",
                   help="the classes that are drones (default: those named like drone, UAV, quadcopter)")
    p.add_argument("--copy", action="store_true", help="copy the images instead of linking them")

    p = sub.add_parser("import-antiuav", help="convert Anti-UAV sequences (frames or videos + JSON) into flight folders")
    p.add_argument("src", help="an Anti-UAV release (Anti-UAV410: <split>/<seq>/; Anti-UAV300: <seq>/) or one sequence")
    p.add_argument("out", help="one flight folder per sequence is written here")
    p.add_argument("--modality", choices=["both", "thermal", "rgb"], default="both",
                   help="streams to import: IR as thermal, visible as rgb (default both, where present)")
    p.add_argument("--fps", type=_positive, default=30.0, help="frame rate of sequences given as images (default 30)")
    p.add_argument("--trim", action="store_true",
                   help="when a label list and its frames differ in length, score the frames both have")
    p.add_argument("--copy", action="store_true", help="copy the frames and videos instead of linking them")
    return parser


# subcommands ----------------------------------------------------------------------------------
def cmd_synth(a: argparse.Namespace) -> int:
    from pipeline.synth import generate_flight

    for name, v, lo in [("--seconds", a.seconds, 0.1), ("--drones", a.drones, 0), ("--birds", a.birds, 0)]:
        if v < lo:
            raise InputError(f"{name} must be at least {lo}")
    out = generate_flight(a.out, seed=a.seed, seconds=a.seconds, drones=a.drones, birds=a.birds,
                          randomize=a.randomize)
    print(f"synthetic flight written to {out}")
    return 0


def cmd_process(a: argparse.Namespace) -> int:
    from pipeline.process import process

    summary = process(a.flight, a.out, config=a.config, overrides=_overrides(a), annotate=a.annotate,
                      modality=a.modality, max_frames=a.max_frames, progress=not a.no_progress, fps=a.fps)
    print(_process_report(summary, Path(a.out)))
    return 130 if summary.get("interrupted") else 0


def cmd_batch(a: argparse.Namespace) -> int:
    from pipeline.batch import batch, exit_status, format_report

    # argparse gives FLIGHT... every positional word: KEY=VALUE words that are not paths are overrides
    is_override = [re.fullmatch(r"[A-Za-z_][\w.\-]*=.*", w) is not None and not os.path.exists(w) for w in a.flights]
    flights = [w for w, o in zip(a.flights, is_override) if not o]
    a.overrides = [w for w, o in zip(a.flights, is_override) if o] + list(a.overrides)
    if not flights:
        raise InputError("no FLIGHT given")
    index = batch(flights, a.out, config=a.config, overrides=_overrides(a), ray=a.ray, workers=a.workers,
                  threads=a.threads, evaluate=a.evaluate, iou=a.iou, annotate=a.annotate, max_frames=a.max_frames,
                  modality=a.modality, fps=a.fps, progress=not a.no_progress)
    print(format_report(index))
    print(f"index: {Path(a.out) / 'index.json'}")
    return exit_status(index)


def _process_report(summary: dict, out: Path) -> str:
    st = summary["stage_ms_per_frame"]
    lines = [f"processed {summary['frames']} frames ({', '.join(f'{k}: {v}' for k, v in summary['frames_per_stream'].items())}) "
             f"at {summary['frames_per_second']:.1f} frames/s",
             "ms per frame: " + ", ".join(f"{k} {v:.2f}" for k, v in st.items()),
             f"tracks: {out / 'tracks'}  detections: {out / 'detections'}  summary: {out / 'summary.json'}"]
    if summary.get("annotated"):
        lines.append("annotated video: " + ", ".join(summary["annotated"]))
    return "\n".join(lines)


def cmd_live(a: argparse.Namespace) -> int:
    from pipeline.process import live

    summary = live(a.source, a.thermal, modality=a.modality, config=a.config, overrides=_overrides(a),
                   max_frames=a.max_frames, seconds=a.seconds, out=a.out, fps=a.fps)
    print(json.dumps({"summary": summary}), file=sys.stderr)
    if summary.get("stopped_by") == "SIGTERM":
        return 143
    return 130 if summary.get("interrupted") else 0


def cmd_track(a: argparse.Namespace) -> int:
    from pipeline.process import track_file

    n = track_file(a.detections, a.out, config=a.config, overrides=_overrides(a))
    print(f"{n} track rows written to {a.out}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from pipeline.evaluation import evaluate as ev

    if a.gt_coco is not None:
        return _evaluate_coco(a)
    if a.only_gt_images:
        raise InputError("--only-gt-images goes with --gt-coco")
    if a.flight is not None:
        if a.outdir is None:
            raise InputError("flight mode needs FLIGHT and OUT (the folder `dronetrack process` wrote)")
        if a.gt or a.tracks or a.detections:
            raise InputError("give either FLIGHT OUT, or --gt with --tracks/--detections, not both")
        result = ev.evaluate_flight(a.flight, a.outdir, iou=a.iou)
    else:
        if not a.gt or not (a.tracks or a.detections):
            raise InputError("give FLIGHT OUT, or --gt GT.txt with --tracks TRACKS.txt and/or --detections DET.json")
        result = {"streams": {Path(a.gt).stem: ev.evaluate_files(a.gt, a.tracks, a.detections, iou=a.iou)}}
    print(ev.format_table(result))
    if a.json:
        from pipeline.io.atomic import write_json

        scores = {"streams": {k: {m: v for m, v in r.items() if m != "pr"} for k, r in result["streams"].items()}}
        write_json(a.json, scores)
    if a.plots:
        ev.write_plots(result, a.plots)
    return 0


def _evaluate_coco(a: argparse.Namespace) -> int:
    from pipeline.evaluation.coco import evaluate_coco, format_coco_table

    if a.flight is not None or a.gt or a.tracks or a.plots:
        raise InputError("--gt-coco scores --detections only: give no FLIGHT OUT, --gt, --tracks or --plots with it")
    if not a.detections:
        raise InputError("--gt-coco needs --detections D.json (COCO results)")
    result = evaluate_coco(a.gt_coco, a.detections, iou=a.iou, only_gt_images=a.only_gt_images)
    print(format_coco_table(result, a.iou))
    if result["dropped_detections"]:
        print(f"{result['dropped_detections']} detections on images not in {a.gt_coco} were dropped")
    if a.json:
        from pipeline.io.atomic import write_json

        write_json(a.json, {"gt_coco": str(a.gt_coco), "detections_file": str(a.detections), "iou": a.iou, **result})
    return 0


def cmd_export_coco(a: argparse.Namespace) -> int:
    from pipeline.evaluation.coco import export_coco

    data = export_coco(a.flight, a.out, a.stream)
    print(f"COCO ground truth of stream {data['info']['stream']} ({len(data['images'])} images, "
          f"{len(data['annotations'])} annotations) written to {a.out}")
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from pipeline.training.train import train, train_processes

    if a.nproc < 1:
        raise InputError(f"--nproc must be at least 1, not {a.nproc}")
    if a.nproc > 1:  # rank 0 prints the log and the best checkpoint
        train_processes(a.train_config, _overrides(a, "device"), a.resume, a.nproc)
        return 0
    best = train(a.train_config, _overrides(a, "device"), resume=a.resume)
    print(f"best checkpoint: {best}")
    return 0


def cmd_import_svanstrom(a: argparse.Namespace) -> int:
    from pipeline.io.svanstrom import import_svanstrom

    flights = import_svanstrom(Path(a.src), Path(a.out), clips=a.clips, copy=a.copy)
    print(f"{len(flights)} flight folders written to {a.out}")
    return 0


def cmd_import_yolo(a: argparse.Namespace) -> int:
    from pipeline.io.importers import import_yolo

    flights = import_yolo(Path(a.src), Path(a.out), modality=a.modality, drone_classes=a.drone_class, copy=a.copy)
    print(_import_report(flights, a.out))
    return 0


def cmd_import_antiuav(a: argparse.Namespace) -> int:
    from pipeline.io.importers import import_antiuav

    flights = import_antiuav(Path(a.src), Path(a.out), modality=a.modality, copy=a.copy, fps=a.fps, trim=a.trim)
    print(_import_report(flights, a.out))
    return 0


def _import_report(flights: list[Path], out: str) -> str:
    from pipeline.io.flight import load_flight
    from pipeline.io.motio import read_mot

    lines = []
    for f in flights[:20]:
        flight = load_flight(f)
        parts = [f"{s}: {len(read_mot(flight.gt_path(s)))} boxes" for s in flight.streams if flight.gt_path(s)]
        lines.append(f"  {f}  ({', '.join(parts)})")
    if len(flights) > 20:
        lines.append(f"  ... and {len(flights) - 20} more")
    return "\n".join([f"{len(flights)} flight folder{'s' if len(flights) != 1 else ''} written to {out}", *lines])


COMMANDS = {"synth": cmd_synth, "process": cmd_process, "live": cmd_live, "track": cmd_track,
            "evaluate": cmd_evaluate, "train": cmd_train, "import-svanstrom": cmd_import_svanstrom,
            "import-yolo": cmd_import_yolo, "import-antiuav": cmd_import_antiuav,
            "export-coco": cmd_export_coco, "batch": cmd_batch}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse binds `overrides` together with the first positional (FLIGHT), so KEY=VALUE words
    # placed after an option come back unparsed: they are overrides too.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    terminated, restore = _on_sigterm()
    try:
        code = COMMANDS[args.command](args)
        return 143 if terminated else code  # stopped by SIGTERM inside the runner (summary says interrupted)
    except DronetrackError as e:
        print(f"dronetrack {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied on an output folder, ...
        print(f"dronetrack {args.command}: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dronetrack {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        restore()


def _on_sigterm() -> tuple[list[str], Callable[[], None]]:
    """SIGTERM (`kill`, systemd, docker stop) stops a command like Ctrl-C: KeyboardInterrupt is raised
    once in the main thread, every finished frame is kept, and the exit status is 143 (128 + 15; Ctrl-C
    gives 130). `dronetrack live` replaces this handler while it runs to stop at a frame boundary
    (pipeline.process._graceful_stop). Returns the list the handler marks and a function restoring
    the previous handler (main thread only: elsewhere nothing is installed)."""
    terminated: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        return terminated, lambda: None

    def handler(signum, _frame):
        if not terminated:  # once: a second SIGTERM must not break the cleanup of the first
            terminated.append("SIGTERM")
            raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    return terminated, lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
