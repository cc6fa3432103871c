"""Training on several processes: GPUs of one machine, several machines, or CPU processes.

`torchrun --nproc_per_node N -m pipeline.training.train CONFIG [KEY=VALUE ...]` starts N copies of the
training; `dronetrack train CONFIG --nproc N` does the same through torchrun's own launcher
(torch.distributed.run, a standalone rendezvous on this machine) and reports a failure in one line.
Several machines: torchrun's `--nnodes` and `--rdzv-*` options on each (README).

Each process (rank) finds RANK, WORLD_SIZE, LOCAL_RANK in its environment (torchrun sets them), joins the
process group (NCCL on CUDA, gloo on the CPU), takes cuda:LOCAL_RANK, and trains the same model
(identical initial weights; DistributedDataParallel broadcasts rank 0's anyway) on its own shard of every
batch (`infinite_batches` below: a DistributedSampler), DDP averaging the gradients. `optim.batch_size`
is the GLOBAL batch: each of the W processes loads batch_size / W samples, and the k-th global batch holds
the same samples, augmented the same way, whatever W is. Rank 0 alone reads `--resume`'s checkpoint (and
sends it to the others), writes checkpoints, `log.txt`, `losses.csv` and the export, and validates; the
others wait at a barrier. Without torchrun's variables, training runs in this one process as always.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Literal

import torch
import torch.distributed as dist

from detectors.training import barrier, rank_and_world
from pipeline.config import require
from pipeline.errors import ConfigError, DronetrackError

QUIET = "DRONETRACK_LAUNCHED"  # set by `launch`: workers leave the one-line report to the launcher
PEER_LOST = "stopped: lost the other processes"  # what a process says when another one failed first


@dataclass
class DDPConfig:
    """Used only under torchrun (several processes)."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: NCCL on CUDA, gloo on the CPU
    sync_bn: bool = False  # SyncBatchNorm: batch-norm statistics over the global batch (CUDA only)
    find_unused_parameters: bool | None = None  # None: on for `model: fusion` (an absent modality skips an encoder)
    timeout: float = 30.0  # minutes a process waits for the others (rank 0's validation included)

    def validate(self, prefix: str) -> None:
        require(self.timeout > 0, prefix + "timeout", "must be > 0 (minutes)")


@dataclass
class Dist:
    """This process's place in the job; rank 0 of 1 outside torchrun."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    initialized: bool = False  # this process group was made by `setup` (and is destroyed by `close`)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1 or self.initialized

    def barrier(self) -> None:
        if self.distributed:
            barrier(self.device)

    @contextlib.contextmanager
    def local_main_first(self) -> Iterator[None]:
        """Local rank 0 of each machine runs the block first (it makes the shared cache), the others after."""
        if self.distributed and self.local_rank != 0:
            self.barrier()
        yield
        if self.distributed and self.local_rank == 0:
            self.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every process."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def reseed(self, seed: int) -> None:
        """After the model is built: each rank its own torch random stream (dropout, modality dropout,
        DataLoader worker seeds); rank 0 keeps the single-process one."""
        if self.rank:
            torch.manual_seed(seed + 7919 * self.rank)

    def convert(self, model: torch.nn.Module, cfg: DDPConfig) -> torch.nn.Module:
        """SyncBatchNorm layers when asked (under torchrun): same parameters, same state_dict keys."""
        if self.distributed and cfg.sync_bn:
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def wrap(self, model: torch.nn.Module, find_unused_parameters: bool = False) -> torch.nn.Module:
        """The model DistributedDataParallel (under torchrun), else as it is."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return ModelDDP(model, device_ids=ids, output_device=ids[0] if ids else None,
                        find_unused_parameters=find_unused_parameters)

    def close(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized = False


class ModelDDP(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel through which a loss function still reads the model's own attributes
    (`model.stride`, `model.cfg`, `model.loss(...)`) as it does on the bare model."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name == "module" or "module" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["module"], name)


def env_world() -> tuple[int, int, int, int] | None:
    """(rank, world size, local rank, local world size) from torchrun's variables, or None outside torchrun."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE, LOCAL_RANK: torchrun's variables must be integers") from None
    return rank, world, local_rank, local_world


def setup(cfg: DDPConfig, device: str) -> Dist:
    """This process's device, joining the process group under torchrun. `device`: the training config's
    (under torchrun: auto, cuda or cpu; each process takes cuda:LOCAL_RANK)."""
    world = env_world()
    if world is None:
        from detectors.inference import pick_device

        try:
            return Dist(pick_device(device))
        except ValueError as e:
            raise ConfigError(f"device: {e}") from None
    rank, size, local_rank, local_world = world
    if device not in ("auto", "cuda", "cpu"):
        raise ConfigError(f"device: {device!r}: under torchrun each process takes cuda:LOCAL_RANK; give auto, cuda or cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' asked for, but no CUDA device is available")
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"device: local rank {local_rank} but {torch.cuda.device_count()} CUDA devices: "
                              "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise ConfigError("ddp.backend: nccl needs CUDA (use gloo or auto on the CPU)")
    if cfg.sync_bn and not cuda:
        raise ConfigError("ddp.sync_bn: SyncBatchNorm runs on CUDA only (set it to false on the CPU)")
    made = False
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=cfg.timeout), device_id=dev if cuda else None)
        made = True
    return Dist(dev, rank, size, local_rank, local_world, made)


def infinite_batches(dataset: torch.utils.data.Dataset, batch_size: int, workers: int, seed: int,
                     start_epoch: int = 0, collate_fn: Any = None) -> Iterator[Any]:
    """Batches of a map-style dataset with `set_epoch`, epoch after epoch, each epoch in a new order
    (a permutation seeded by seed * 100003 + epoch; the last partial batch dropped). `batch_size` is the
    global batch: under torch.distributed each of the W processes loads batch_size / W samples of its own
    shard (DistributedSampler), and the W shards of the k-th batch together are the k-th batch of one
    process (the same samples: a sample's augmentation depends on (seed, epoch, index) only)."""
    rank, world = rank_and_world()
    if batch_size % world:
        raise ConfigError(f"optim.batch_size: {batch_size} (the global batch) is not divisible by the {world} processes")
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=seed * 100003, drop_last=True)
    epoch = start_epoch
    while True:
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        yield from torch.utils.data.DataLoader(dataset, batch_size=batch_size // world, sampler=sampler,
                                               num_workers=workers, collate_fn=collate_fn, drop_last=True,
                                               persistent_workers=False)
        epoch += 1


def default_threads(d: Dist) -> int:
    """CPU threads per process when the config leaves them to torch: the cores shared by this machine's
    processes (torchrun sets OMP_NUM_THREADS=1 otherwise)."""
    return max(1, (os.cpu_count() or 1) // max(d.local_world, 1))


# running and launching ------------------------------------------------------------------------------
def _who() -> str:
    w = env_world()
    return f"rank {w[0]}: " if w is not None and w[1] > 1 else ""


def report(message: str) -> None:
    """Leave this process's one-line failure where torchrun's agent reads it (ProcessFailure.message)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with contextlib.suppress(OSError):
            with open(path, "w", encoding="utf-8") as f:
                json.dump({"message": message, "timestamp": int(time.time())}, f)


def run_worker(fn: Callable[[], Any], prog: str = "dronetrack train") -> int:
    """Run one process's training: a DronetrackError (or OSError) is one line on stderr naming the rank,
    exit status 2 (torchrun then stops the other processes); Ctrl-C is 130."""
    try:
        fn()
        return 0
    except DronetrackError as e:
        message, code = f"{_who()}{e}", 2
    except OSError as e:
        message, code = f"{_who()}{e.strerror or e}: {e.filename or ''}".rstrip(": "), 2
    except KeyboardInterrupt:
        message, code = f"{_who()}interrupted", 130
    except Exception as e:
        first = str(e).splitlines()[0][:200] if str(e) else ""
        if not _peer_lost(e):  # a bug: the traceback follows, the launcher names it in one line
            report(f"{_who()}{type(e).__name__}: {first}")
            raise
        # another process failed first (its own line says why) and closed the connections
        message, code = f"{_who()}{PEER_LOST} ({first})", 1
    report(message)
    if not os.environ.get(QUIET):
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return code


def _peer_lost(e: BaseException) -> bool:
    """A collective that failed because another process went away (or stopped answering)."""
    text = str(e)
    return isinstance(e, dist.DistError) or (isinstance(e, RuntimeError) and (
        "by peer" in text or "Connection refused" in text or "Broken pipe" in text))


def launch(nproc: int, args: list[str]) -> None:
    """`torchrun --standalone --nproc_per_node nproc -m pipeline.training.train ARGS`, run by
    torch.distributed.run in this process; DronetrackError with the first failing rank's line."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in ("torch.distributed.run", "torch.distributed.elastic", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the agent's own reports: ours is one line
    targs = parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                        "--module", "pipeline.training.train", *args])
    env = {k: os.environ.get(k) for k in (QUIET, "OMP_NUM_THREADS")}  # run() sets OMP_NUM_THREADS=1
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # the agent installs its own
    os.environ[QUIET] = "1"
    try:
        run(targs)
    except ChildFailedError as e:
        # the first failure that is not a process stopped by another's failure
        rank, failure = min(e.failures.items(), key=lambda rf: (PEER_LOST in str(rf[1].message), rf[1].timestamp, rf[0]))
        written = failure.error_file_data.get("message", "<NONE>") != "<NONE>" and isinstance(failure.message, str)
        how = failure.signal_name() if failure.exitcode < 0 else f"exit status {failure.exitcode}"
        raise DronetrackError(failure.message if written else f"rank {rank} failed ({how})") from None
    except SignalException:
        raise KeyboardInterrupt from None
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if threading.current_thread() is threading.main_thread():
            for sig, h in handlers.items():
                if h is not None:
                    signal.signal(sig, h)
