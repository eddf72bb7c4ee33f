"""``reslab bench train``: the Learner's training speed against a bare PyTorch loop.

Both train the same model (the same initial weights) on the same batches, made once and kept
on the device, with the same optimiser (SGD, Nesterov momentum, no weight decay on 1-d
parameters), loss (cross-entropy with label smoothing) and one-cycle schedule, one epoch of
``steps`` batches per timed run. They run alternately in one process (bare, Learner, Learner,
bare, …), so drift of the machine hits both alike. A path is a way to run the step: eager
fp32, channels-last memory format, mixed precision (bf16 where the device has it natively,
else fp16 on CUDA) and ``torch.compile`` of the forward and backward pass, alone or combined.

The first epoch of each side is a warm-up (compilation, oneDNN's kernel choice) and is not
timed; its batch losses are compared between the two sides, an independent check that the bare
loop trains exactly what the Learner trains.
"""

from __future__ import annotations

import copy
import itertools
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from reslab.data import load_dataset, make_loader
from reslab.layers.compiled_batch_norm import use_compiled_batch_norm
from reslab.models.profile import cpu_flags, cpu_name
from reslab.recipes.train import build_model_for_data
from reslab.recipes.train_config import TrainConfig, train_path_name
from reslab.training import (
    Callback,
    ChannelsLast,
    Compile,
    Learner,
    MixedPrecision,
    bf16_is_fast,
    keep_freed_host_memory,
)

__all__ = [
    "BareLoop",
    "TrainBench",
    "TrainBenchRow",
    "TrainPath",
    "bench_train",
    "default_paths",
    "learner_for_path",
    "parse_paths",
]

# One-cycle as `reslab train` runs it (reslab.training.OneCycleSchedule's defaults).
PCT_START, DIV, DIV_FINAL, MOMS = 0.25, 25.0, 1e4, (0.95, 0.85)
TOKENS = {"compile": "compile", "channels-last": "channels-last", "cl": "channels-last"}
AMP_TOKENS = ("bf16", "fp16")


@dataclass(frozen=True)
class TrainPath:
    """How the training step runs: ``torch.compile``, channels-last, autocast dtype."""

    compile: bool = False
    channels_last: bool = False
    amp: str | None = None  # "bf16" or "fp16"

    @property
    def name(self) -> str:
        return train_path_name(self.compile, self.amp, self.channels_last)


def parse_paths(text: str) -> list[TrainPath]:
    """``"eager,channels-last,bf16+channels-last,compile+bf16+cl"`` → paths."""
    paths = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        opts: dict = {}
        for token in item.split("+"):
            if token == "eager":
                continue
            if token in AMP_TOKENS:
                opts["amp"] = token
            elif token in TOKENS:
                opts[TOKENS[token].replace("-", "_")] = True
            else:
                raise ValueError(
                    f"unknown path part {token!r} in {item!r}: expected eager or parts "
                    "joined by '+' from compile, channels-last (cl), bf16, fp16"
                )
        paths.append(TrainPath(**opts))
    if not paths:
        raise ValueError("no training path given")
    return paths


def native_amp(device: torch.device) -> str | None:
    """The autocast dtype worth using here: bf16 where native, fp16 on older GPUs, else none."""
    if bf16_is_fast(device):
        return "bf16"
    return "fp16" if device.type == "cuda" else None


def default_paths(device: torch.device) -> list[TrainPath]:
    """Eager, channels-last, mixed precision + channels-last (where native), and compiled
    channels-last with and without mixed precision."""
    amp = native_amp(device)
    paths = [TrainPath(), TrainPath(channels_last=True)]
    if amp:
        paths.append(TrainPath(channels_last=True, amp=amp))
    paths.append(TrainPath(compile=True, channels_last=True))
    if amp:
        paths.append(TrainPath(compile=True, channels_last=True, amp=amp))
    return paths


@dataclass(frozen=True)
class Hyper:
    """The optimiser, loss and schedule both sides use (`reslab train`'s defaults)."""

    lr: float = 0.4  # peak one-cycle LR at batch 256 (TrainConfig's DEFAULT_LR for sgd)
    wd: float = 5e-4  # weight decay, not on 1-d parameters
    momentum: float = 0.9  # SGD momentum (Nesterov); one-cycle cycles it within MOMS
    label_smoothing: float = 0.1


class BareLoop:
    """The training step written out in plain PyTorch: the reference the Learner is timed
    against. ``epoch(batches)`` trains one one-cycle epoch and returns the batch losses (kept
    on the device until the end, as the Learner keeps them)."""

    def __init__(self, model: nn.Module, path: TrainPath, hyper: Hyper = Hyper()) -> None:
        if path.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.path, self.hyper = model, path, hyper
        self.device = next(model.parameters()).device
        if path.compile and self.device.type == "cpu":  # as the Compile callback does
            use_compiled_batch_norm(model)
        self.step_model = torch.compile(model) if path.compile else model
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
        groups: list[dict[str, Any]] = [
            {"params": decay, "weight_decay": hyper.wd},
            {"params": no_decay},
        ]
        self.opt = torch.optim.SGD(
            groups, lr=hyper.lr, momentum=hyper.momentum, nesterov=True, weight_decay=0.0
        )
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=hyper.label_smoothing)
        dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
        self.amp_dtype = dtypes.get(path.amp) if path.amp else None
        self.scaler = torch.amp.GradScaler(self.device.type) if path.amp == "fp16" else None

    def epoch(self, batches: list[tuple[Tensor, Tensor]]) -> Tensor:
        if PCT_START * len(batches) == 1:  # torch's warm-up phase would end at step 0
            raise ValueError(f"torch's OneCycleLR cannot schedule {len(batches)} steps; use 5+")
        sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=self.hyper.lr, total_steps=len(batches), pct_start=PCT_START,
            div_factor=DIV, final_div_factor=DIV_FINAL, base_momentum=MOMS[1],
            max_momentum=MOMS[0],
        )  # fmt: skip
        self.model.train()
        losses = []
        for x, y in batches:
            if self.path.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
            ):
                loss = self.loss_fn(self.step_model(x), y)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            sched.step()
            losses.append(loss.detach())
        return torch.stack(losses).float()


def learner_for_path(
    model: nn.Module, batches: list, path: TrainPath, hyper: Hyper = Hyper()
) -> Learner:
    """The Learner as `reslab train` builds it for ``path`` (no progress bar, no files)."""
    cbs: list[Callback] = [MixedPrecision(path.amp)] if path.amp else []
    if path.channels_last:
        cbs.append(ChannelsLast())
    if path.compile:
        cbs.append(Compile())
    return Learner(
        model, batches, None, metrics=(), opt="sgd", lr=hyper.lr, wd=hyper.wd,
        momentum=hyper.momentum, progress=False, cbs=cbs,
        loss_func=nn.CrossEntropyLoss(label_smoothing=hyper.label_smoothing),
    )  # fmt: skip


def learner_epoch(learn: Learner) -> Tensor:
    """One one-cycle epoch of the Learner; its batch losses."""
    learn.fit_one_cycle(1, learn.lr, pct_start=PCT_START, div=DIV, div_final=DIV_FINAL, moms=MOMS)
    return torch.tensor(learn.recorder.losses[-learn.n_iter :])


@dataclass
class TrainBenchRow:
    path: str
    bare_samples_per_s: list[float] = field(default_factory=list)
    learner_samples_per_s: list[float] = field(default_factory=list)
    warmup_s: dict[str, float] = field(default_factory=dict)
    max_loss_diff: float = float("nan")  # warm-up epoch, bare vs Learner
    learner_faults_per_step: list[float] = field(default_factory=list)  # host page faults

    @property
    def faults_per_step(self) -> float | None:
        """The Learner's minor page faults per step (median of the timed epochs), or None
        where the platform does not count them."""
        counted = self.learner_faults_per_step
        return statistics.median(counted) if counted else None

    @property
    def bare(self) -> float:
        return statistics.median(self.bare_samples_per_s)

    @property
    def learner(self) -> float:
        return statistics.median(self.learner_samples_per_s)


@dataclass
class TrainBench:
    model: str
    data: str
    batch: int
    steps: int
    runs: int
    width: float | None
    environment: dict
    rows: list[TrainBenchRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        for row, d in zip(self.rows, out["rows"]):
            d.update(bare_median=row.bare, learner_median=row.learner,
                     ratio=row.learner / row.bare,
                     faults_per_step=row.faults_per_step)  # fmt: skip
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def minor_faults() -> int | None:
    """This process's minor page faults so far (a fresh page touched), where counted."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench_environment(device: torch.device) -> dict:
    env = {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(("avx512_bf16", "avx512_fp16", "amx", "avx2", "avx512f")),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "load_average": list(os.getloadavg()),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def bench_batches(cfg: TrainConfig, steps: int, device: torch.device):
    """The training set, and ``steps`` augmented batches of it made once, on ``device``."""
    train = load_dataset(cfg.data, "train", data_dir=cfg.data_dir)
    loader = make_loader(train, cfg.bs, train=True, device=device, seed=cfg.seed, workers=0)
    batches = list(itertools.islice(loader.batches(0), steps))
    if len(batches) < steps:
        raise ValueError(f"{cfg.data} has only {len(batches)} batches of {cfg.bs}")
    return train, batches


def bench_path(
    model: nn.Module, batches: list, path: TrainPath, runs: int, hyper: Hyper = Hyper()
) -> TrainBenchRow:
    """Time one path: warm-up epochs, then ``runs`` interleaved epochs of each side."""
    device = next(model.parameters()).device
    bare = BareLoop(copy.deepcopy(model), path, hyper)
    learn = learner_for_path(copy.deepcopy(model), batches, path, hyper)
    row = TrainBenchRow(path.name)
    samples = sum(len(y) for _, y in batches)
    out: dict[str, Tensor] = {}
    sides = {
        "bare": lambda: out.__setitem__("bare", bare.epoch(batches)),
        "learner": lambda: out.__setitem__("learner", learner_epoch(learn)),
    }
    for name, fn in sides.items():
        row.warmup_s[name] = round(_timed(fn, device), 3)
    row.max_loss_diff = float((out["bare"].cpu() - out["learner"].cpu()).abs().max())
    for r in range(runs):
        order = ("bare", "learner") if r % 2 == 0 else ("learner", "bare")
        for name in order:
            before = minor_faults()
            rate = samples / _timed(sides[name], device)
            getattr(row, f"{name}_samples_per_s").append(round(rate, 1))
            after = minor_faults()
            if name == "learner" and before is not None and after is not None:
                row.learner_faults_per_step.append(round((after - before) / len(batches), 1))
    return row


def bench_train(
    model_name: str,
    data: str,
    *,
    batch: int = 256,
    steps: int = 20,
    runs: int = 5,
    paths: list[TrainPath] | None = None,
    width: float | None = None,
    data_dir: str | None = None,
    device: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> TrainBench:
    """Time `steps`-batch epochs of the Learner and of :class:`BareLoop` on every path."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    kept = dev.type == "cpu" and keep_freed_host_memory()  # as `reslab train` runs
    cfg = TrainConfig(
        data=data, out="-", model=model_name, bs=batch, width=width, data_dir=data_dir, seed=seed
    )
    train, batches = bench_batches(cfg, steps, dev)
    result = TrainBench(model_name, data, batch, steps, runs, width, bench_environment(dev))
    result.environment["host_memory"] = "kept" if kept else "system"
    for path in paths or default_paths(dev):
        if path.amp == "bf16" and not bf16_is_fast(dev):
            log(f"{path.name}: bf16 is not native here (emulated, slow); timed anyway")
        torch.manual_seed(seed)
        model = build_model_for_data(cfg, train, dev)
        log(f"{path.name}: warm-up and {runs} runs of {steps} batches per side")
        result.rows.append(bench_path(model, batches, path, runs))
    result.environment["load_average_after"] = list(os.getloadavg())
    return result


def format_bench(result: TrainBench) -> str:
    """The table `reslab bench train` prints."""
    env = result.environment
    lines = [
        f"# reslab bench train {result.model} on {result.data}: batch {result.batch}, "
        f"{result.steps} batches per timed epoch, {result.runs} runs per side (median), "
        f"interleaved; {env['threads']} threads, torch {env['torch']}, {env['cpu']} "
        f"({' '.join(env['cpu_flags'])}), load {env['load_average'][0]:.2f} -> "
        f"{env['load_average_after'][0]:.2f}; freed host memory "
        f"{'kept' if env.get('host_memory') == 'kept' else 'given back (system malloc)'}",
        f"{'path':<28} {'bare /s':>9} {'Learner /s':>10} {'ratio':>6} {'vs eager':>8} "
        f"{'warm-up s':>10} {'loss diff':>9} {'faults/step':>11}",
    ]
    eager = next((r.learner for r in result.rows if r.path == "eager"), None)
    for r in result.rows:
        rel = f"{r.learner / eager:8.2f}" if eager else f"{'-':>8}"
        faults = "-" if r.faults_per_step is None else f"{r.faults_per_step:.0f}"
        lines.append(
            f"{r.path:<28} {r.bare:9.1f} {r.learner:10.1f} {r.learner / r.bare:6.3f} {rel} "
            f"{r.warmup_s['learner']:10.1f} {r.max_loss_diff:9.2e} {faults:>11}"
        )
    return "\n".join(lines)
