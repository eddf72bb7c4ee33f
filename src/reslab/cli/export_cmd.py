"""``reslab export SPEC --format onnx|torchscript [--fold-bn] [--quantize int8 --calib DATA]``:
write a file that runs without reslab, and say how far its outputs are from the PyTorch
model's (for an int8 file: how often its top-1 agrees, on real images held out from
calibration)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from reslab.cli import CliError
from reslab.cli.argtypes import positive_int
from reslab.cli.engine_args import (
    add_calibration_options,
    calibration_set,
    ensure_available,
    require_calibration,
)
from reslab.cli.options import add_shared
from reslab.files import check_output_file
from reslab.inference import (
    CALIBRATION_METHODS,
    INT8_TARGETS,
    calibration_batches,
    calibration_images,
    export_onnx_int8,
    int8_choice,
    onnx_top1_agreement,
)
from reslab.inference.export import (
    EXPORT_FORMATS,
    export_onnx,
    export_torchscript,
    fold_batchnorm,
    max_abs_difference,
    to_torch_layers,
)
from reslab.recipes.shared_options import OUT_FILE
from reslab.runs import run_inputs
from reslab.weights import resolve_model

__all__ = ["register"]

_SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript"}
# float32 graphs reorder sums; anything beyond this relative gap is a broken export.
_REL_TOLERANCE = 1e-3
# An int8 file is an approximation: below this top-1 agreement with fp32 on real held-out
# images it is broken (calibration on the wrong data, a quantised layer that should not be).
_INT8_MIN_AGREEMENT = 0.9


def _default_out(spec: str, fmt: str) -> Path:
    path = Path(spec)
    if path.is_dir():
        return path / f"model{_SUFFIX[fmt]}"
    if path.is_file():
        return path.with_suffix(_SUFFIX[fmt])
    return Path(spec.partition("@")[0] + _SUFFIX[fmt])  # MODEL@TAG: in the current folder


def _calibration_batches(calib, batch: int | None) -> list:
    """Calibration batches the exported graph accepts: a fixed-batch graph takes only batches
    of its own size (a last, smaller one is left out)."""
    if batch is None:
        return calibration_batches(calib)
    full = [b for b in calibration_batches(calib, batch_size=batch) if len(b) == batch]
    if not full:
        raise CliError(
            f"--batch {batch} needs at least {batch} calibration images (--calib-images)"
        )
    return full


def _export_int8(args: argparse.Namespace, model, shipped, out: Path, example) -> int:
    """Write ``shipped`` as int8 ONNX; check its top-1 against ``model`` in fp32 on real
    images held out from calibration."""
    ensure_available("onnx-int8")
    choice = int8_choice(args.target_cpu or "this")
    data = calibration_set(args, model)
    calib = calibration_images(data, args.calib_images, model_cfg=model.default_cfg)
    export_onnx_int8(
        shipped,
        out,
        example,
        _calibration_batches(calib, args.batch),
        method=args.calib_method,
        dynamic_batch=args.batch is None,
        opset=args.opset,
        choice=choice,
    )
    batch = "any batch size" if args.batch is None else f"batch {args.batch}"
    print(
        f"wrote {out} (onnx, static int8 QDQ with per-channel weights, {args.calib_method} "
        f"ranges from {len(calib)} images of {args.calib}, {batch})"
    )
    cpu = choice.cpu
    print(
        f"int8 for --target-cpu {choice.target}: weights {choice.weights}, uint8 "
        f"activations; this CPU: {cpu.cpu_class} ({' '.join(cpu.flags) or 'no SIMD flags'}, "
        f"from {cpu.source}); {choice.reason}"
    )
    check = calibration_images(
        data, args.check_images, model_cfg=model.default_cfg, skip=args.calib_images
    )
    # An 8-bit file made for VNNI CPUs is checked as they compute it, also on one without.
    exact = cpu.saturates and choice.weight_bits == 8
    agreement, worst = onnx_top1_agreement(out, model, check, batch=args.batch, exact_int8=exact)
    how = " (computed as a VNNI CPU does: this one has none)" if exact else ""
    print(
        f"top-1 agreement with the PyTorch fp32 model: {agreement:.1%} on {len(check)} "
        f"images of {args.calib} not used for calibration (max |dlogit| {worst:.3g}){how}"
    )
    if agreement < _INT8_MIN_AGREEMENT:
        raise CliError(
            f"{out} agrees with the fp32 model on only {agreement:.1%} of top-1 "
            f"(expected >= {_INT8_MIN_AGREEMENT:.0%})",
            code=1,
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    fmt = args.format.lower()
    if fmt not in EXPORT_FORMATS:
        raise CliError(f"unknown format {args.format!r}; expected onnx or torchscript")
    if args.quantize and fmt != "onnx":
        raise CliError("--quantize int8 writes ONNX: use --format onnx")
    if args.target_cpu and not args.quantize:
        raise CliError("--target-cpu chooses the int8 arithmetic: it goes with --quantize int8")
    what = "--quantize int8" if args.quantize else f"a --format {fmt} export without --quantize"
    require_calibration(args, bool(args.quantize), what, used_by="--quantize int8")
    out = Path(args.out) if args.out else _default_out(args.spec, fmt)
    check_output_file(out, inputs=run_inputs(args.spec))
    model = to_torch_layers(resolve_model(args.spec)).eval()
    shipped = fold_batchnorm(model) if args.fold_bn else model
    size = tuple(model.config.data.input_size)
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(args.batch or 2, *size, generator=gen)
    if args.quantize:
        return _export_int8(args, model, shipped, out, example)
    try:
        if fmt == "onnx":
            export_onnx(shipped, out, example, dynamic_batch=args.batch is None, opset=args.opset)
        else:
            export_torchscript(shipped, out, example)
    except ModuleNotFoundError as err:
        raise CliError(str(err), code=1) from None
    batch = (
        "any batch size" if fmt == "torchscript" or args.batch is None else f"batch {args.batch}"
    )
    folded = f", {shipped.folded_batchnorms} BatchNorms folded" if args.fold_bn else ""
    scaled = "0-1" if model.config.normalize is not None else "normalised"
    print(f"wrote {out} ({fmt}, {scaled} input (N, {', '.join(map(str, size))}), {batch}{folded})")

    # A fresh input, and a batch size other than the traced one where the batch is free.
    check = torch.rand(args.batch or 3, *size, generator=gen)
    try:
        diff = max_abs_difference(out, model, check)
    except ModuleNotFoundError as err:
        print(f"not compared: {err}")
        return 0
    with torch.no_grad():
        scale = float(model(check).abs().max())
    print(f"max |exported - pytorch| = {diff:.3g} on a random {tuple(check.shape)} input")
    if diff > _REL_TOLERANCE * max(1.0, scale):
        raise CliError(f"{out} disagrees with the PyTorch model by {diff:.3g}", code=1)
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the model as ONNX or TorchScript (runs without reslab)",
        description="Export a model for inference. The file takes 0-1 RGB images (the "
        "normalisation is inside) and carries its class names, input size and preprocessing "
        "as JSON (ONNX metadata 'reslab', TorchScript extra file 'reslab.json').",
    )
    p.add_argument("spec", metavar="MODEL@TAG|CKPT|RUN_DIR")
    p.add_argument("--format", required=True, metavar="onnx|torchscript")
    p.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold each BatchNorm into the conv before it (same outputs, fewer ops)",
    )
    add_shared(p, OUT_FILE, default_text="next to CKPT, or ./MODEL.onnx|.torchscript")
    p.add_argument(
        "--batch",
        type=positive_int,
        help="fix the ONNX batch size (default: any); also the traced batch",
    )
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (18 or newer)")
    p.add_argument(
        "--quantize",
        choices=["int8"],
        help="write a static int8 ONNX file (QDQ, per-channel weights), calibrated on --calib",
    )
    add_calibration_options(p)
    p.add_argument(
        "--calib-method",
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="activation ranges from the calibration images (default minmax)",
    )
    p.add_argument(
        "--target-cpu",
        choices=INT8_TARGETS,
        help="--quantize: the CPUs the int8 file is for: 'this' machine's kind (default), "
        "'vnni' (8-bit weights: CPUs with VNNI or AMX; x86 CPUs without VNNI saturate), or "
        "'any' x86 CPU (7-bit weights, exact everywhere); recorded in the file",
    )
    p.add_argument(
        "--check-images",
        type=positive_int,
        default=128,
        metavar="N",
        help="--quantize: held-out images of --calib DATA to compare top-1 on (default 128)",
    )
    p.set_defaults(func=cmd_export)
