"""``reslab train``, ``reslab eval`` and ``reslab plot lr|history``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reslab.cli import CliError
from reslab.cli.argtypes import comma_list, epoch_list, fraction, positive_float, positive_int

__all__ = ["register"]

# Flags that may change when a run is resumed: they affect speed and display, not results.
RUNTIME_FLAGS = ("progress", "threads", "workers", "device")


# ---------------------------------------------------------------------------- train
def _config_from_args(args: argparse.Namespace):
    from reslab.training.runner import TrainConfig

    if args.data is None or args.out is None:
        raise CliError("--data and --out are required (or --resume RUN_DIR)")
    fields = {k: v for k, v in vars(args).items() if v is not None}
    fields.pop("func", None)
    return TrainConfig.from_dict(fields)


def _config_from_run(args: argparse.Namespace):
    from reslab.training.checkpoint import CHECKPOINT_NAME, read_checkpoint_meta
    from reslab.training.runner import TrainConfig

    run = Path(args.resume)
    ckpt = run / CHECKPOINT_NAME if run.is_dir() else run
    if not ckpt.is_file():
        raise CliError(f"{args.resume}: no {CHECKPOINT_NAME} to resume from")
    saved = read_checkpoint_meta(ckpt).get("train_config")
    if not saved:
        raise CliError(f"{ckpt}: not written by `reslab train` (no train_config)")
    changed = [
        k
        for k, v in vars(args).items()
        if v is not None
        and k not in (*RUNTIME_FLAGS, "resume", "func", "command", "out")
        and k in saved
        and saved[k] != v
    ]
    if changed:
        raise CliError(f"--resume continues the saved run; cannot change: {', '.join(changed)}")
    for k in RUNTIME_FLAGS:
        if getattr(args, k, None) is not None:
            saved[k] = getattr(args, k)
    saved["out"] = str(ckpt.parent)
    return TrainConfig.from_dict(saved)


def cmd_train(args: argparse.Namespace) -> int:
    from reslab.training.callback import TrainingDiverged
    from reslab.training.distributed import cleanup_distributed, dist_info
    from reslab.training.runner import run_training

    cfg = _config_from_run(args) if args.resume else _config_from_args(args)
    try:
        metrics = run_training(cfg, resume=bool(args.resume))
    except TrainingDiverged as err:
        raise CliError(str(err), code=1) from None
    finally:
        rank = dist_info()[0]
        cleanup_distributed()
    if rank == 0:
        print(
            f"test accuracy {metrics['test_accuracy']:.4f}  loss {metrics['test_loss']:.4f}  "
            f"({cfg.model} on {cfg.data}, {cfg.epochs} epochs, {metrics['wall_seconds']:.0f} s, "
            f"{metrics['samples_per_s']} samples/s) -> {cfg.out}"
        )
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on fashion-mnist, cifar10 or an image folder",
        description="Train; writes model.safetensors, checkpoint, history.csv/json, curves.png "
        "and metrics.json into --out, and prints the test accuracy. Under torchrun, --bs is "
        "per process.",
    )
    a = p.add_argument
    a("--data", help="fashion-mnist, cifar10, or a folder with train/ and val/ class folders")
    a("--out", help="run folder to write")
    a("--resume", metavar="RUN_DIR", help="continue the run saved in RUN_DIR exactly")
    a("--data-dir", help="where to look for data first (then $RESLAB_DATA, ~/.cache/reslab)")
    a("--model", help="registered model name (default resnet20; see `reslab list`)")
    a("--classes", type=comma_list, help="train on these classes only, e.g. airplane,bird")
    a(
        "--valid-pct",
        type=fraction,
        help="hold out this fraction of train for validation "
        "(default 0: validate on the test split)",
    )
    a("--epochs", type=positive_int)
    a("--bs", type=positive_int, help="batch size per process (default 256)")
    a("--lr", type=positive_float, help="(max) learning rate (default 0.4 sgd, 3e-3 adamw)")
    a("--opt", choices=["sgd", "adamw"])
    a("--wd", type=float, help="weight decay (not on norms and biases; default 5e-4)")
    a("--momentum", type=positive_float)
    a("--schedule", choices=["one-cycle", "constant", "step"])
    a(
        "--milestones",
        type=epoch_list,
        help="epochs where --schedule step divides the LR by 10 (the paper: 82,123 of 164)",
    )
    a("--pct-start", type=fraction, help="one-cycle warm-up fraction (default 0.25)")
    a("--label-smoothing", type=fraction, help="default 0.1")
    a("--ema", type=fraction, metavar="DECAY", help="keep an EMA of the weights, e.g. 0.999")
    a("--accum", type=positive_int, help="gradient accumulation: batches per optimizer step")
    a("--clip", type=positive_float, help="clip the gradient norm to this value")
    a(
        "--amp",
        action="store_const",
        const=True,
        help="mixed precision (default: on where bf16 is native: CUDA, AMX/avx512-bf16 CPUs)",
    )
    a("--no-amp", dest="amp", action="store_const", const=False)
    a("--amp-dtype", choices=["bf16", "fp16"], help="fp16 adds a GradScaler (CUDA)")
    a(
        "--channels-last",
        action="store_const",
        const=True,
        help="NHWC memory format (the default; faster convolutions on oneDNN and cuDNN)",
    )
    a("--no-channels-last", dest="channels_last", action="store_const", const=False)
    a("--no-augment", dest="augment", action="store_const", const=False)
    a("--width", type=positive_float, help="width multiplier of the model")
    a(
        "--small-input",
        choices=["auto", "on", "off"],
        help="3x3 stride-1 stem for small images (auto: on for in-memory data)",
    )
    a("--drop-path", type=fraction, help="stochastic depth rate")
    a("--workers", type=int, help="DataLoader workers for image folders (default 2)")
    a("--seed", type=int)
    a(
        "--save-every",
        type=positive_int,
        metavar="STEPS",
        help="also checkpoint every STEPS batches mid-epoch",
    )
    a(
        "--lr-find",
        action="store_const",
        const=True,
        help="run the LR finder first (lr_find.png); without --lr its suggestion is used",
    )
    a("--sync-bn", action="store_const", const=True, help="SyncBatchNorm under torchrun (CUDA)")
    a(
        "--scale-lr",
        action="store_const",
        const=True,
        help="multiply the LR by the number of processes (linear scaling rule)",
    )
    a("--loss", choices=["ce", "nce"], help="cross-entropy or negative sampling")
    a("--negatives", type=positive_int, metavar="K", help="negatives per example for --loss nce")
    a("--device", help="cpu or cuda (default: cuda when available)")
    a(
        "--deterministic",
        action="store_const",
        const=True,
        help="deterministic CUDA kernels (bit-exact resume on GPU; slower than autotuned cuDNN)",
    )
    a("--threads", type=positive_int, help="torch CPU threads")
    a("--no-progress", dest="progress", action="store_const", const=False)
    a("--tensorboard", action="store_const", const=True, help="also log to RUN_DIR/tensorboard")
    a(
        "--skip-bad-images",
        action="store_const",
        const=True,
        help="leave unreadable image files out (counted) instead of stopping",
    )
    p.set_defaults(func=cmd_train)


# ---------------------------------------------------------------------------- eval
def _resolve_spec(spec: str) -> str:
    path = Path(spec)
    if not path.exists() and (path.suffix in (".safetensors", ".pt", ".pth") or "/" in spec):
        raise CliError(f"{spec}: no such file or folder")
    if path.is_dir():
        for name in ("model.safetensors", "checkpoint.safetensors"):
            if (path / name).is_file():
                return str(path / name)
        raise CliError(f"{spec}: no model.safetensors or checkpoint.safetensors in this folder")
    return spec


def _class_index(args: argparse.Namespace, model, dataset) -> list[int] | None:
    """Which of the model's classes the data's labels are (None: the same classes).

    The place for ``--restrict-classes`` (a 1000-class model on Imagenette's 10 classes).
    """
    if getattr(args, "restrict_classes", None):
        from reslab.inference import class_names_of, restrict_class_index

        names = class_names_of(model)
        return restrict_class_index(names, dataset.class_names, args.restrict_classes)
    n_model, n_data = model.num_classes, len(dataset.class_names)
    if n_model != n_data:
        raise CliError(
            f"the model scores {n_model} classes but the data has {n_data}; "
            "evaluate on the data the model was trained for"
        )
    return None


def format_confusion(confusion, names: list[str]) -> str:
    """A plain-text confusion matrix: rows true class, columns predicted class."""
    k = confusion.shape[0]
    width = max(5, len(str(int(confusion.max()))) + 1)
    label_w = min(14, max(len(n) for n in names))
    head = " " * (label_w + 1) + "".join(f"{n[: width - 1]:>{width}}" for n in names)
    rows = [head]
    for i in range(k):
        cells = "".join(f"{int(v):>{width}}" for v in confusion[i])
        rows.append(f"{names[i][:label_w]:<{label_w}} {cells}")
    return "\n".join(rows)


def cmd_eval(args: argparse.Namespace) -> int:
    from reslab.api import resolve_model
    from reslab.data import load_dataset, make_loader
    from reslab.training.metrics import evaluate
    from reslab.training.plots import plot_confusion

    spec = _resolve_spec(args.spec)
    model = resolve_model(spec)
    ds = load_dataset(
        args.data,
        args.split,
        data_dir=args.data_dir,
        classes=args.classes,
        on_error="skip" if args.skip_bad_images else "raise",
    )
    if model.in_chans != ds.num_channels:
        raise CliError(
            f"the model takes {model.in_chans}-channel images; {args.data} has {ds.num_channels}"
        )
    class_index = _class_index(args, model, ds)
    loader = make_loader(
        ds, args.bs, train=False, model_cfg=model.default_cfg, workers=args.workers
    )
    result = evaluate(model, loader, class_index, class_names=ds.class_names, amp=args.amp)
    print(f"{spec} on {args.data} ({args.split}, {result.count} images)")
    print(f"accuracy {result.accuracy:.4f}  top-5 {result.top5:.4f}  loss {result.loss:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(format_confusion(result.confusion, ds.class_names))
    out = Path(args.out) if args.out else Path(spec).with_name("confusion.png")
    if not Path(spec).is_file() and not args.out:
        out = Path("confusion.png")
    plot_confusion(
        result.confusion,
        ds.class_names,
        out,
        title=f"accuracy {result.accuracy:.4f} ({result.count} images)",
    )
    print(f"wrote {out}")
    if args.json:
        print(
            json.dumps(
                {
                    "accuracy": result.accuracy,
                    "top5": result.top5,
                    "loss": result.loss,
                    "count": result.count,
                }
            )
        )
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="accuracy and confusion matrix of a model on a data set")
    p.add_argument("spec", metavar="CKPT|RUN_DIR|MODEL@WEIGHTS")
    p.add_argument("--data", required=True, help="fashion-mnist, cifar10 or a folder")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test", choices=["test", "valid", "train"])
    p.add_argument("--classes", type=comma_list, help="evaluate on these classes (relabelled)")
    p.add_argument(
        "--restrict-classes",
        nargs="?",
        const="auto",
        metavar="LIST",
        help="score only the data's classes among the model's (ImageNet wnids/names matched "
        "automatically, or one model class index/name per data class, comma-separated)",
    )
    p.add_argument("--bs", type=positive_int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--skip-bad-images", action="store_true")
    p.add_argument("--out", help="confusion-matrix PNG (default: beside the checkpoint)")
    p.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    p.set_defaults(func=cmd_eval)


# ---------------------------------------------------------------------------- plots
def _read_history(run: Path) -> dict:
    path = run / "history.json"
    if not path.is_file():
        raise CliError(f"{run}: no history.json (is this a `reslab train` run folder?)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CliError(f"{path}: not valid JSON ({err})") from None


def cmd_plot_history(args: argparse.Namespace) -> int:
    from reslab.training.plots import plot_history

    run = Path(args.run_dir)
    data = _read_history(run)
    out = plot_history(data["history"], args.out or run / "curves.png", title=run.name)
    print(f"wrote {out}")
    return 0


def cmd_plot_lr(args: argparse.Namespace) -> int:
    from reslab.training.plots import plot_lr_find, plot_lr_schedule

    run = Path(args.run_dir)
    finder = run / "lr_find.json"
    if finder.is_file():
        res = json.loads(finder.read_text())
        out = plot_lr_find(
            res["lrs"], res["losses"], res.get("suggestion"), args.out or run / "lr_find.png"
        )
    else:
        data = _read_history(run)
        if not data.get("batch_lr"):
            raise CliError(f"{run}: no lr_find.json and no recorded learning rates")
        out = plot_lr_schedule(
            data["batch_lr"], data.get("batches_per_epoch", 1), args.out or run / "lr_schedule.png"
        )
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_eval(sub)
    p = plots.add_parser("history", help="training curves of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG to write (default RUN_DIR/curves.png)")
    p.set_defaults(func=cmd_plot_history)
    p = plots.add_parser("lr", help="LR-finder curve (or the LR schedule) of a run folder")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG to write (default RUN_DIR/lr_find.png)")
    p.set_defaults(func=cmd_plot_lr)
