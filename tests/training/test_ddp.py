"""Training on several processes (DistributedDataParallel on gloo, 2 CPU processes).

A toy model through the real sampler (`infinite_batches`), process group (`setup`), wrapper and loop
(`train_loop`), spawned as 2 processes and compared with 1 process of twice the batch: disjoint shards whose
union is the single-process batch, identical weights on both ranks after every step, the same updates as
1 process x batch 2B, validation / saving / logging on rank 0 only, a non-finite loss on one rank stopping
both. Then `dronetrack train --nproc 2` end to end: resume under DDP from a one-process checkpoint, outputs
written once, the checkpoint loads in `dronetrack process`; and a failing process is one line, exit 2.
"""
from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from torch import nn

from detectors.checkpoint import load_checkpoint

BATCH, STEPS, N = 8, 6, 37  # 37 samples: 4 batches of 8 per epoch (18 per rank, 4 batches of 4), 2 epochs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ToyData(torch.utils.data.Dataset):
    """Sample i of epoch e depends on (e, i) only, like the real datasets' augmentation."""

    def __init__(self) -> None:
        self.epoch, self.epochs = 0, []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs.append(epoch)

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int):
        x = torch.randn(6, generator=torch.Generator().manual_seed(1000 * self.epoch + i))
        return x, (x[:3].sum() - x[3:].prod()).reshape(1), torch.tensor(i)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
        self.scale = 2.0  # read by the loss through the DDP wrapper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale


def _toy_run(ctx, batch: int, nan_on_rank: int | None = None) -> dict:
    """Train the toy STEPS steps under `ctx` (a pipeline.training.distributed.Dist); what each rank saw."""
    from detectors.training import OptimConfig, TrainingDiverged, make_optimizer, train_loop, unwrap
    from pipeline.training.distributed import infinite_batches

    torch.manual_seed(0)
    model = Toy()
    ctx.reseed(0)
    if ctx.rank == 1:  # another initial model on rank 1: DDP must broadcast rank 0's
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    cfg = OptimConfig(steps=STEPS, batch_size=batch, lr=0.05, warmup_steps=1, grad_clip=1.0, eval_every=2)
    optimizer, scheduler = make_optimizer(model, cfg)
    net = ctx.wrap(model)
    data = ToyData()
    r: dict = {"seen": [], "weights": [], "records": [], "validate": [], "save": [], "logs": []}

    def loss_fn(m, b):
        x, y, idx = b
        r["seen"].append(idx.tolist())
        r["weights"].append(torch.cat([p.detach().flatten().clone() for p in unwrap(m).parameters()]))
        loss = nn.functional.mse_loss(m(x) / m.scale, y)
        if nan_on_rank == ctx.rank and len(r["seen"]) == 2:
            loss = loss * math.nan
        return {"mse": loss}

    batches = infinite_batches(data, batch, 0, seed=3)
    try:
        train_loop(net, batches, cfg, ctx.device, loss_fn, optimizer, scheduler,
                   validate=lambda m: r["validate"].append(type(m).__name__) or {"score": 1.0},
                   save=lambda step, val, best: r["save"].append(step), log=r["logs"].append,
                   record=lambda step, losses, lr: r["records"].append((step, losses["mse"], lr)))
    except TrainingDiverged as e:
        r["diverged"] = str(e)
    r["final"] = torch.cat([p.detach().flatten() for p in model.parameters()])
    r["epochs"] = data.epochs
    return r


def _toy_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from pipeline.training.distributed import DDPConfig, setup

    ctx = setup(DDPConfig(timeout=2.0), "cpu")
    try:
        assert ctx.distributed and ctx.world == world and ctx.rank == rank
        result = _toy_run(ctx, BATCH)
        result["nan"] = _toy_run(ctx, BATCH, nan_on_rank=1)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        ctx.close()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[list[dict], dict]:
    """(results of ranks 0 and 1 of a 2-process run at global batch 8, a 1-process run at batch 8)."""
    from pipeline.training.distributed import DDPConfig, setup

    out = tmp_path_factory.mktemp("toy")
    mp.spawn(_toy_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    single = setup(DDPConfig(), "cpu")  # outside torchrun: rank 0 of 1
    assert not single.distributed
    return ranks, _toy_run(single, BATCH)


def test_each_rank_sees_its_own_shard_of_the_single_process_batch(toy):
    (r0, r1), one = toy
    assert len(r0["seen"]) == len(r1["seen"]) == len(one["seen"]) == STEPS
    for a, b, whole in zip(r0["seen"], r1["seen"], one["seen"]):
        assert len(a) == len(b) == BATCH // 2 and len(whole) == BATCH
        assert not set(a) & set(b) and sorted(a + b) == sorted(whole)
    epoch0 = [i for s in r0["seen"][:4] + r1["seen"][:4] for i in s]  # 4 steps per epoch
    assert len(epoch0) == len(set(epoch0)) == 32
    assert r0["epochs"][:2] == r1["epochs"][:2] == one["epochs"][:2] == [0, 1]


def test_gradients_are_averaged_and_match_one_process_of_twice_the_batch(toy):
    (r0, r1), one = toy
    assert not torch.equal(r0["weights"][1], r0["weights"][0])  # it trains
    for w0, w1, w in zip(r0["weights"], r1["weights"], one["weights"]):
        assert torch.equal(w0, w1)  # rank 1's other initial weights replaced by rank 0's, then the same updates
        torch.testing.assert_close(w0, w, rtol=1e-5, atol=1e-6)
    assert torch.equal(r0["final"], r1["final"])
    torch.testing.assert_close(r0["final"], one["final"], rtol=1e-5, atol=1e-6)
    # the recorded loss is the mean over both ranks: the loss of the whole batch
    assert [s for s, _, _ in r0["records"]] == list(range(1, STEPS + 1))
    torch.testing.assert_close(torch.tensor([v for _, v, _ in r0["records"]]),
                               torch.tensor([v for _, v, _ in one["records"]]), rtol=1e-5, atol=1e-7)


def test_rank_0_alone_validates_saves_and_logs(toy):
    (r0, r1), one = toy
    assert r0["validate"] == ["Toy"] * 3 and r0["save"] == [2, 4, 6]  # the unwrapped model
    assert r1["validate"] == r1["save"] == r1["records"] == r1["logs"] == []
    assert r0["logs"] and one["save"] == [2, 4, 6]


def test_a_nan_on_one_rank_stops_both_at_the_same_step(toy):
    (r0, r1), _ = toy
    for r in (r0["nan"], r1["nan"]):
        assert r["diverged"].startswith("non-finite loss at step 2: mse=nan") and len(r["seen"]) == 2


# ---------------------------------------------------------------------------------------------- end to end


def _config(root: Path, small_flight: Path, **optim) -> Path:
    cache = root / "cache"
    (cache / "synth").mkdir(parents=True, exist_ok=True)
    for seed in (7, 8):  # prepare_flights looks for its own folder names: link the session's flight twice
        (cache / "synth" / f"seed{seed}_3s_2d_1b").symlink_to(small_flight, target_is_directory=True)
    cfg = {"out": str(root / "run"), "export": str(root / "fusion.pt"), "threads": 1, "model": "fusion",
           "fusion": {"width": 4, "rank": 2, "mutan_dim": 6}, "paired": {"crop": 64, "every": 10, "val_every": 20},
           "data": {"cache": str(cache), "svanstrom": None,
                    "synthetic": {"seeds": [7, 8], "seconds": 3.0, "drones": 2, "birds": 1}},
           "optim": {"steps": 2, "batch_size": 2, "eval_every": 2, "warmup_steps": 1, "best_metric": "ap50", **optim}}
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_processes_resume_a_checkpoint_write_once_and_it_loads(tmp_path, small_flight, capfd):
    from pipeline.cli import main
    from pipeline.models import load_model

    path = _config(tmp_path, small_flight)
    run = tmp_path / "run"
    assert main(["train", str(path)]) == 0  # one process, 2 steps
    before = (run / "log.txt").read_text()
    capfd.readouterr()
    assert main(["train", str(path), "--nproc", "2", "--resume", "optim.steps=4"]) == 0
    out = capfd.readouterr().out
    assert out.count("resumed at step 2") == 1 and out.count("best checkpoint:") == 1  # rank 0's stdout only
    log = (run / "log.txt").read_text()[len(before):]
    assert log.count("2 processes (gloo, cpu), 1 samples each per step of 2\n") == 1
    assert log.count("resumed at step 2") == 1 and log.count("validation at step 4") == 1
    last = load_checkpoint(run / "last.pt")
    assert last["step"] == 4 and "optimizer" in last
    assert not any(k.startswith("module.") for k in last["state_dict"])  # the unwrapped model
    rows = (run / "losses.csv").read_text().splitlines()
    assert rows[0] == "step,seconds,lr,loss,heat,box" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    model, ckpt = load_model(tmp_path / "fusion.pt", "fusion")  # the export
    assert ckpt["kind"] == "fusion" and not model.training
    flight_out = tmp_path / "processed"
    assert main(["process", str(small_flight), "--out", str(flight_out), "--config", "configs/fusion.yaml",
                 f"detector.checkpoint={run / 'last.pt'}", "detector.device=cpu", "--no-progress",
                 "--max-frames", "3"]) == 0
    assert (flight_out / "tracks" / "thermal.txt").is_file()


def test_a_failing_process_stops_the_job_in_one_line(tmp_path, small_flight, capfd):
    from pipeline.cli import main

    path = _config(tmp_path, small_flight)
    cfg = yaml.safe_load(path.read_text())
    cfg["model"] = "dpfcn"  # rank 0 fails making the cache (no Svanstrom index) while rank 1 waits for it
    cfg["data"] = {"cache": cfg["data"]["cache"], "synthetic": None, "svanstrom": {"root": str(tmp_path / "none")}}
    cfg.pop("export")
    path.write_text(yaml.safe_dump(cfg))
    capfd.readouterr()
    assert main(["train", str(path), "--nproc", "2"]) == 2
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("dronetrack train: error: rank 0: ") and "none/index.csv" in err[0]
    assert main(["train", str(path), "--nproc", "2", "optim.batch_size=3"]) == 2  # refused before starting
    assert "optim.batch_size: 3 (the global batch) is not divisible by --nproc 2" in capfd.readouterr().err
    assert main(["train", str(path), "--nproc", "0"]) == 2
    assert capfd.readouterr().err.strip() == "dronetrack train: error: --nproc must be at least 1, not 0"
