"""The streaming runner: source -> stages -> sinks.

A reader thread decodes into a bounded queue, the calling thread runs the stages (so stateful stages
need no locks), a writer thread hands finished bundles to the sinks. The runner owns threads, queues,
timing and the progress bar; stages and sinks own no threads. Ctrl-C stops reading, and every bundle
already processed is still written before the sinks close. An error in the source (a truncated video,
say) is raised after everything before it has been written.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

from tqdm import tqdm

from pipeline.types import FrameBundle

_END = object()


class Stage(Protocol):
    name: str

    def __call__(self, bundle: FrameBundle) -> FrameBundle: ...

    def reset(self) -> None: ...


class Sink(Protocol):
    def write(self, bundle: FrameBundle) -> None: ...

    def close(self) -> None: ...


@dataclass
class RunStats:
    bundles: int = 0
    frames: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    read_seconds: float = 0.0
    write_seconds: float = 0.0
    wall_seconds: float = 0.0
    interrupted: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    def as_dict(self) -> dict[str, Any]:
        n = max(self.total_frames, 1)
        wall = max(self.wall_seconds, 1e-9)
        return {
            "frames": self.total_frames,
            "frames_per_stream": dict(self.frames),
            "bundles": self.bundles,
            "wall_seconds": round(self.wall_seconds, 4),
            "frames_per_second": round(self.total_frames / wall, 3),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "stage_ms_per_frame": {k: round(1000 * v / n, 3) for k, v in self.stage_seconds.items()},
            "read_seconds": round(self.read_seconds, 4),
            "write_seconds": round(self.write_seconds, 4),
            "interrupted": self.interrupted,
            "error": self.error,
            **self.extra,
        }


class Runner:
    def __init__(self, source: Iterable[FrameBundle], stages: list[Stage], sinks: list[Sink],
                 queue_size: int = 8, progress: bool = False, total: int | None = None,
                 max_frames: int | None = None, on_bundle: Callable[[FrameBundle], None] | None = None,
                 prefetch: bool = True):
        self.source = source
        self.prefetch = prefetch  # False: no reader thread, the main thread takes each bundle when ready
        self.stages = stages
        self.sinks = sinks
        self.queue_size = queue_size
        self.progress = progress
        self.total = total
        self.max_frames = max_frames
        self.on_bundle = on_bundle
        self.stats = RunStats()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    # threads ----------------------------------------------------------------------------------
    def _read(self, q_in: queue.Queue) -> None:
        it = iter(self.source)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                bundle = next(it, _END)
                self.stats.read_seconds += time.perf_counter() - t0
                if bundle is _END:
                    break
                while not self._stop.is_set():
                    try:
                        q_in.put(bundle, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # handed to the main thread, raised after the writes
            self._reader_error = e
        finally:
            _close(it)
            self._put_end(q_in)

    def _pull(self) -> Iterator[Any]:
        """The source's bundles, then _END, for `prefetch=False`: no reader thread and no queue, so a
        live source hands over its newest frame when the stages are ready for it, not one that waited
        in the queue while the previous frame was processed. A source error is kept for after the writes."""
        it = iter(self.source)
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    bundle = next(it, _END)
                except Exception as e:
                    self._reader_error = e
                    break
                finally:
                    self.stats.read_seconds += time.perf_counter() - t0
                if bundle is _END:
                    break
                yield bundle
            yield _END
        finally:
            _close(it)

    def _put_end(self, q: queue.Queue) -> None:
        while True:
            try:
                q.put(_END, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass

    def _write(self, q_out: queue.Queue) -> None:
        try:
            while True:
                bundle = q_out.get()
                if bundle is _END:
                    return
                t0 = time.perf_counter()
                for sink in self.sinks:
                    sink.write(bundle)
                self.stats.write_seconds += time.perf_counter() - t0
        except BaseException as e:
            self._writer_error = e
            self._stop.set()
            while q_out.get() is not _END:  # drain so the main thread never blocks
                pass

    # main loop --------------------------------------------------------------------------------
    def run(self) -> RunStats:
        self._reader_error: BaseException | None = None
        self._writer_error: BaseException | None = None
        q_in: queue.Queue = queue.Queue(self.queue_size)
        q_out: queue.Queue = queue.Queue(self.queue_size)
        reader = threading.Thread(target=self._read, args=(q_in,), name="dronetrack-reader", daemon=True)
        writer = threading.Thread(target=self._write, args=(q_out,), name="dronetrack-writer", daemon=True)
        for s in self.stages:
            self.stats.stage_seconds.setdefault(s.name, 0.0)
        bar = tqdm(total=self.total, unit="frame", disable=not self.progress, dynamic_ncols=True, leave=False)
        start = time.perf_counter()
        pull = None if self.prefetch else self._pull()
        if pull is None:
            reader.start()
        writer.start()
        try:
            while not self._stop.is_set():
                bundle = q_in.get() if pull is None else next(pull)
                if bundle is _END:
                    break
                for stage in self.stages:
                    t0 = time.perf_counter()
                    bundle = stage(bundle)
                    dt = time.perf_counter() - t0
                    bundle.timings[stage.name] = dt
                    self.stats.stage_seconds[stage.name] += dt
                if self.on_bundle is not None:
                    self.on_bundle(bundle)
                q_out.put(bundle)
                self.stats.bundles += 1
                present = bundle.present()
                for s in present:
                    self.stats.frames[s] = self.stats.frames.get(s, 0) + 1
                bar.update(len(present))
                if self.max_frames is not None and self.stats.bundles >= self.max_frames:
                    break
        except KeyboardInterrupt:
            self.stats.interrupted = True
        finally:
            self._stop.set()
            stop_source = getattr(self.source, "stop", None)  # live sources: end a blocked read now
            if stop_source is not None:
                stop_source()
            q_out.put(_END)
            writer.join()
            if pull is None:
                reader.join(timeout=5.0)
            else:
                pull.close()
            bar.close()
            self.stats.wall_seconds = time.perf_counter() - start
            for sink in self.sinks:
                sink.close()
        for err in (self._writer_error, self._reader_error):
            if err is not None:
                self.stats.error = str(err)
                raise err
        return self.stats


def _close(it: Any) -> None:
    """Close a source's iterator (a generator's cleanup releases its captures); errors there are moot."""
    close = getattr(it, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            pass
