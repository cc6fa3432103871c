"""`dronetrack` command line. Every subcommand shares one parser shape (detectron2-style): a
`--config` YAML plus trailing `key.sub=value` overrides. Bad input gives one line on stderr and exit
status 2; Ctrl-C exits 130 after writing what was done."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from pipeline.errors import DronetrackError, InputError

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # OpenCV's own warnings are not our one-line errors
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own messages too: we report the file ourselves


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


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

    p = sub.add_parser("process", help="process a recorded flight folder (or one video file)")
    p.add_argument("flight", help="flight folder (with flight.yaml) or a video file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--annotate", action="store_true", help="also write OUT/annotated/<stream>.mp4")
    p.add_argument("--modality", choices=["rgb", "thermal"], default="rgb",
                   help="modality of a single video file (ignored for flight folders)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many bundles")
    p.add_argument("--no-progress", action="store_true")
    _add_config(p)

    p = sub.add_parser("live", help="run on a camera index, file, RTSP/FFmpeg URL or GStreamer pipeline")
    p.add_argument("source", help="RGB (or single) source")
    p.add_argument("--thermal", default=None, help="thermal source")
    p.add_argument("--modality", choices=["rgb", "thermal"], default="rgb", help="modality of SOURCE")
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

    p = sub.add_parser("train", help="train a detector (checkpoints in the config's `out`)")
    p.add_argument("train_config", metavar="CONFIG", help="training config YAML, e.g. configs/train_dpfcn.yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.steps=100")
    _add_device(p)

    p = sub.add_parser("import-svanstrom", help="convert Svanstrom-style clips into flight folders")
    p.add_argument("src", help="folder with index.csv, ir/ and visible/")
    p.add_argument("out", help="one flight folder per clip is written here")
    p.add_argument("--clips", nargs="+", default=None, help="only these clips (e.g. IR_DRONE_001)")
    p.add_argument("--copy", action="store_true", help="copy the videos instead of linking them")
    return parser


# subcommands ----------------------------------------------------------------------------------
def cmd_synth(a: argparse.Namespace) -> int:
    from pipeline.synth import generate_flight

    for name, v, lo in [("--seconds", a.seconds, 0.1), ("--drones", a.drones, 0), ("--birds", a.birds, 0)]:
        if v < lo:
            raise InputError(f"{name} must be at least {lo}")
    out = generate_flight(a.out, seed=a.seed, seconds=a.seconds, drones=a.drones, birds=a.birds)
    print(f"synthetic flight written to {out}")
    return 0


def cmd_process(a: argparse.Namespace) -> int:
    from pipeline.process import process

    summary = process(a.flight, a.out, config=a.config, overrides=_overrides(a), annotate=a.annotate,
                      modality=a.modality, max_frames=a.max_frames, progress=not a.no_progress)
    print(_process_report(summary, Path(a.out)))
    return 130 if summary.get("interrupted") else 0


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
                   max_frames=a.max_frames, seconds=a.seconds, out=a.out)
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return 130 if summary.get("interrupted") else 0


def cmd_track(a: argparse.Namespace) -> int:
    from pipeline.process import track_file

    n = track_file(a.detections, a.out, config=a.config, overrides=_overrides(a))
    print(f"{n} track rows written to {a.out}")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from pipeline.evaluation import evaluate as ev

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
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        scores = {"streams": {k: {m: v for m, v in r.items() if m != "pr"} for k, r in result["streams"].items()}}
        Path(a.json).write_text(json.dumps(scores, indent=2))
    if a.plots:
        ev.write_plots(result, a.plots)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from pipeline.training.train import train

    best = train(a.train_config, _overrides(a, "device"), resume=a.resume)
    print(f"best checkpoint: {best}")
    return 0


def cmd_import_svanstrom(a: argparse.Namespace) -> int:
    from pipeline.io.svanstrom import import_svanstrom

    flights = import_svanstrom(Path(a.src), Path(a.out), clips=a.clips, copy=a.copy)
    print(f"{len(flights)} flight folders written to {a.out}")
    return 0


COMMANDS = {"synth": cmd_synth, "process": cmd_process, "live": cmd_live, "track": cmd_track,
            "evaluate": cmd_evaluate, "train": cmd_train, "import-svanstrom": cmd_import_svanstrom}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse binds `overrides` together with the first positional (FLIGHT), so KEY=VALUE words
    # placed after an option come back unparsed: they are overrides too.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    try:
        return COMMANDS[args.command](args)
    except DronetrackError as e:
        print(f"dronetrack {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied on an output folder, ...
        print(f"dronetrack {args.command}: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dronetrack {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
