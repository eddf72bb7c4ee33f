"""How long a training step waits for its batch: JPEGs decoded every epoch vs decoded once.

The fastbook recipe on Imagenette train (160 px presize, random-resized square crops of 50-100 %
of the area to 128 px, flips, batch 128), trained by reslab's Learner (AdamW, one-cycle, bf16
autocast where the CPU has native bf16, channels-last) two ways:

* ``files``:   the images decoded from JPEG every epoch in DataLoader worker processes
               (``--no-cache-images``: ``FolderLoader`` + ``Presized(160, crop)``), as image
               folders trained before the cache;
* ``decoded``: decoded once to uint8 at 160 px, cached on disk, crops and flips on whole
               batches (``DecodedLoader``); the time to build or read the cache is reported
               apart.

A callback stamps the clock at every ``before_batch`` and ``after_batch``: a batch's data wait
is the time from the previous batch's end to its start (fetching, decoding, augmenting,
moving it), its step time the time from its start to its end (forward, backward, optimiser).
The first ``--skip`` batches (worker start-up, warm-up) are left out. Both paths train the same
model from the same initial weights on the same batches; they run one after the other, so run
the script alone (under the heavy-job lock).

    flock /tmp/reslab-heavy.lock python3 benchmarks/folder_cache.py --data-dir ../shared/data \\
        --out benchmarks/results/folder-cache-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time

import torch

from reslab import create_model
from reslab.data import load_dataset, make_loader
from reslab.data.imagenette import find_imagenette
from reslab.files import atomic_write_json
from reslab.training import (
    Callback,
    CancelFitException,
    ChannelsLast,
    Learner,
    MixedPrecision,
    bf16_is_fast,
)

PRESIZE, SIZE, BS = 160, 128, 128  # fastbook ch. 14: Resize(160), 128 px crops, batch 128
MIN_SCALE = 0.5  # aug_transforms(min_scale=0.5): crops of 50-100 % of the area


class StepClock(Callback):
    """Stamps ``before_batch`` / ``after_batch``; stops the fit after ``batches`` batches."""

    order = -100  # before any other callback, so their work counts as step time

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.waits: list[float] = []
        self.steps: list[float] = []
        self.last_end: float | None = None

    def before_fit(self) -> None:
        self.last_end = time.perf_counter()

    def before_batch(self) -> None:
        self.start = time.perf_counter()
        self.waits.append(self.start - self.last_end)

    def after_batch(self) -> None:
        self.last_end = time.perf_counter()
        self.steps.append(self.last_end - self.start)
        if len(self.steps) >= self.batches:
            raise CancelFitException


def measure(model_name: str, mode: str, data: str, args) -> dict:
    t0 = time.perf_counter()
    presize = PRESIZE if mode == "decoded" else None
    train = load_dataset(data, "train", data_dir=args.data_dir, presize=presize, progress=False)
    prepare = time.perf_counter() - t0
    dl = make_loader(
        train, BS, train=True, seed=0, workers=args.workers, image_size=SIZE,
        presize=PRESIZE, min_scale=MIN_SCALE, square_crops=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=len(train.class_names))
    clock = StepClock(args.skip + args.batches)
    cbs = [clock, ChannelsLast()]
    if bf16_is_fast(torch.device("cpu")):
        cbs.append(MixedPrecision("bf16"))
    learn = Learner(model, dl, None, opt="adamw", lr=3e-3, wd=0.01, cbs=cbs, progress=False)
    learn.fit_one_cycle(1, 3e-3)
    waits, steps = clock.waits[args.skip :], clock.steps[args.skip :]
    wait, step = sum(waits), sum(steps)
    return {
        "model": model_name, "mode": mode, "loader": type(dl).__name__,
        "prepare_seconds": round(prepare, 2), "batches": len(steps),
        "data_wait_seconds": round(wait, 3), "step_seconds": round(step, 3),
        "data_wait_share": round(wait / (wait + step), 4),
        "median_wait_ms": round(1000 * statistics.median(waits), 1),
        "median_step_ms": round(1000 * statistics.median(steps), 1),
        "images_per_s": round(BS * len(steps) / (wait + step), 1),
    }  # fmt: skip


def machine() -> dict:
    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))  # fmt: skip
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                         if f in out.split())  # fmt: skip
    except (OSError, StopIteration):
        model = platform.processor()
    return {
        "cpu": model, "flags": flags, "cores": os.cpu_count(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "load_1min_at_start": os.getloadavg()[0],
        "bf16_native": bf16_is_fast(torch.device("cpu")),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="where Imagenette (or its archives) is")
    p.add_argument("--models", default="xresnet18,fastbook_plain_cnn")
    p.add_argument("--modes", default="files,decoded")
    p.add_argument("--batches", type=int, default=20, help="timed batches per run")
    p.add_argument("--skip", type=int, default=3, help="first batches left out")
    p.add_argument("--workers", type=int, default=2, help="decoding processes (files)")
    p.add_argument("--out", default=None, help="write the results here (JSON)")
    args = p.parse_args()
    data = str(find_imagenette(args.data_dir))
    info = machine()
    rows = []
    for model_name in args.models.split(","):
        for mode in args.modes.split(","):
            row = measure(model_name, mode, data, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"data": data, "machine": info, "recipe": {"presize": PRESIZE, "size": SIZE,
              "bs": BS, "min_scale": MIN_SCALE, "workers": args.workers}, "runs": rows}  # fmt: skip
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
