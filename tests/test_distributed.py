"""torchrun with 2 CPU processes (gloo): the same global batch gives the single-process curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from test_data_synthetic import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]

# A Learner on a BatchNorm-free net: under DDP the averaged gradient of two half batches is
# exactly the gradient of the whole batch, so the loss curve must match to float rounding,
# through a freeze / unfreeze cycle too.
LEARNER_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from torch import nn
    from reslab.data import TensorImageDataset, TensorLoader
    from reslab.training import Learner, cleanup_distributed, init_distributed

    ctx = init_distributed("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(96) % 4
    x[torch.arange(96), 0, y * 2, :] = 255
    ds = TensorImageDataset(x, y, list("abcd"))
    bs = int(sys.argv[2]) // ctx.world_size
    train = TensorLoader(ds, bs, shuffle=True, augment=True, pad=1, drop_last=True, seed=3,
                         rank=ctx.rank, world_size=ctx.world_size)
    valid = TensorLoader(ds, 10, rank=ctx.rank, world_size=ctx.world_size)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, 4))
    learn = Learner(model, train, valid, lr=0.1, progress=False)
    learn.fit_one_cycle(2)
    # fine_tune's pattern: train the head alone, then everything. The second fit must
    # all-reduce the conv's gradients too (a DDP wrapper made while it was frozen does not).
    model[0].requires_grad_(False)
    learn.fit(1, 0.05)
    model[0].requires_grad_(True)
    learn.fit(1, 0.05)
    if ctx.rank == 0:
        out = {"losses": learn.recorder.losses, "history": learn.recorder.history,
               "world": ctx.world_size, "weights": [p.tolist() for p in model.parameters()]}
        open(sys.argv[1], "w").write(json.dumps(out))
    cleanup_distributed()  # as `reslab train` does: gloo's threads end before the process
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ, RESLAB_OFFLINE="1", PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    env.pop("RESLAB_DATA", None)
    return env


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *args,
    ]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_ddp_learner_matches_single_process_exactly(tmp_path):
    script = tmp_path / "ddp_learner.py"
    script.write_text(LEARNER_SCRIPT)
    _torchrun(str(script), str(tmp_path / "ddp.json"), "16")
    single = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one.json"), "16"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert ddp["world"] == 2 and one["world"] == 1
    assert len(ddp["losses"]) == len(one["losses"]) == 24
    assert ddp["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    for a, b in zip(ddp["weights"], one["weights"]):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-5)
    # validation pooled over both processes' shards = the single-process numbers
    for ra, rb in zip(ddp["history"], one["history"]):
        assert ra["valid_loss"] == pytest.approx(rb["valid_loss"], rel=1e-5)
        assert ra["accuracy"] == pytest.approx(rb["accuracy"])


def test_torchrun_reslab_train_cli(tmp_path):
    # BatchNorm makes 2 processes x 16 differ from one batch of 32 (each process normalises
    # its own half; SyncBN needs CUDA). What 2 x 16 under DDP *does* equal is one process with
    # two accumulated micro-batches of 16: the same shards (rank r's half is micro-batch r),
    # the same BN batch statistics, the same averaged gradient. With a constant LR (one-cycle
    # would advance per micro-batch) the loss curves and weights must agree to rounding.
    from safetensors.torch import load_file

    data = write_fake_fashion_mnist(tmp_path / "fm", n_train=320, n_test=64)
    common = [
        "--data",
        "fashion-mnist",
        "--data-dir",
        str(data),
        "--model",
        "resnet20",
        "--width",
        "0.25",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--schedule",
        "constant",
        "--bs",
        "16",
        "--no-progress",
        "--device",
        "cpu",
    ]
    proc = _torchrun("-m", "reslab", "train", *common, "--out", str(tmp_path / "ddp"))
    assert proc.stdout.count("test accuracy") == 1  # rank 0 prints, rank 1 does not
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "reslab",
            "train",
            *common,
            "--accum",
            "2",
            "--out",
            str(tmp_path / "one"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["world_size"] == 2
    ddp = json.loads((tmp_path / "ddp" / "history.json").read_text())["batch_loss"]
    acc = json.loads((tmp_path / "one" / "history.json").read_text())["batch_loss"]
    assert len(ddp) == 20 and len(acc) == 40
    pairs = [(a + b) / 2 for a, b in zip(acc[0::2], acc[1::2])]
    assert ddp == pytest.approx(pairs, rel=1e-4)
    w_ddp = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    w_one = load_file(str(tmp_path / "one" / "model.safetensors"))
    for k in w_ddp:  # BN running statistics differ (DDP keeps rank 0's); parameters must not
        if "running_" not in k and "num_batches" not in k:
            torch.testing.assert_close(w_ddp[k], w_one[k], rtol=1e-3, atol=1e-5)
    assert len(list((tmp_path / "ddp").glob("checkpoint.train_state-*.pt"))) == 1


# EMA under DDP: the averaged weights agree across processes by construction, the averaged
# BatchNorm statistics do not (each process's come from its own shard); validation and the
# weights applied at the end must use the same (rank 0's) statistics on every process.
EMA_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    import torch.distributed as dist
    from torch import nn
    from reslab.data import TensorImageDataset, TensorLoader
    from reslab.training import (EMA, Callback, Learner, cleanup_distributed,
                                 init_distributed)

    ctx = init_distributed("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(96) % 4
    ds = TensorImageDataset(x, y, list("abcd"))
    train = TensorLoader(ds, 8, shuffle=True, drop_last=True, seed=3, rank=ctx.rank,
                         world_size=ctx.world_size)
    valid = TensorLoader(ds, 10, rank=ctx.rank, world_size=ctx.world_size)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))

    def gap_to_rank0(t):
        other = t.clone()
        dist.broadcast(other, 0)
        return (t - other).abs().max().item()

    class Spy(Callback):
        order = 45  # after EMA swapped its weights in
        gaps = []
        def before_validate(self):
            self.gaps.append(gap_to_rank0(self.learn.model[1].running_mean))

    learn = Learner(model, train, valid, lr=0.1, progress=False, cbs=[EMA(0.9), Spy()])
    learn.fit(2)
    final = gap_to_rank0(model[1].running_mean)
    if ctx.rank == 1:
        json.dump({"validation": Spy.gaps, "final": final}, open(sys.argv[1], "w"))
    cleanup_distributed()
    """
)


def test_ema_under_ddp_validates_and_ends_with_one_set_of_statistics(tmp_path):
    script = tmp_path / "ddp_ema.py"
    script.write_text(EMA_SCRIPT)
    _torchrun(str(script), str(tmp_path / "gaps.json"))
    gaps = json.loads((tmp_path / "gaps.json").read_text())
    assert gaps == {"validation": [0.0, 0.0], "final": 0.0}
