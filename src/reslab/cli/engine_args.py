"""The ``--engine`` and ``--calib`` options that predict, eval, bench and export share.

The int8 engines are calibrated on real images of the data the model is for, named on the
command line (``--calib DATA [--calib-images N]``, the training split); an int8 engine
without them is a usage error, never a silent calibration on random noise.
"""

from __future__ import annotations

import argparse
import sys

from torch import Tensor, nn

from reslab.cli import CliError
from reslab.cli.argtypes import positive_int
from reslab.cli.options import add_shared
from reslab.data import load_dataset
from reslab.inference import (
    ENGINE_NAMES,
    EngineUnavailable,
    Runner,
    calibration_images,
    fixed_batch,
    get_engine,
)
from reslab.models import ResNet
from reslab.recipes.shared_options import DATA_DIR

__all__ = [
    "add_calibration_options",
    "add_engine_option",
    "calibration_set",
    "calibration_tensor",
    "engine_runner",
    "ensure_available",
    "require_calibration",
]


def add_engine_option(parser: argparse.ArgumentParser, default: str | None = "eager") -> None:
    parser.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        default=default,
        metavar="NAME",
        help=f"how to run the model: {', '.join(ENGINE_NAMES)} (default: {default or 'eager'}; "
        "see docs/inference.md)",
    )


def add_calibration_options(parser: argparse.ArgumentParser, data_dir: bool = True) -> None:
    """``--calib DATA``, ``--calib-images N`` and (unless the command has it) ``--data-dir``."""
    if data_dir:
        add_shared(parser, DATA_DIR)
    parser.add_argument(
        "--calib",
        metavar="DATA",
        help="real images to calibrate int8 on: fashion-mnist, cifar10 or a folder with "
        "train/ class folders (its training split is used)",
    )
    parser.add_argument(
        "--calib-images",
        type=positive_int,
        default=128,
        metavar="N",
        help="calibration images drawn from DATA (default 128)",
    )


def require_calibration(
    args: argparse.Namespace, needs: bool, what: str, used_by: str = "the int8 engines"
) -> None:
    """One-line usage errors: ``what`` (an int8 engine) without ``--calib``, or ``--calib``
    given to ``what`` that does not use it (only ``used_by`` does)."""
    if needs and not args.calib:
        raise CliError(
            f"{what} needs real calibration images: --calib DATA [--calib-images N] "
            "(int8 is never calibrated on random noise)"
        )
    if args.calib and not needs:
        raise CliError(f"--calib is only used by {used_by}, not by {what}")


def ensure_available(name: str) -> None:
    """Refuse (one line, exit code 2) an engine this machine cannot run, before any work."""
    ok, reason = get_engine(name).available()
    if not ok:
        raise EngineUnavailable(f"engine {name!r} is not available here: {reason}")


def calibration_set(args: argparse.Namespace, model: nn.Module):
    """The training split of ``--calib`` DATA, checked against the model's input channels."""
    data = load_dataset(args.calib, "train", data_dir=getattr(args, "data_dir", None))
    channels = getattr(model, "in_chans", data.num_channels)
    if data.num_channels != channels:
        raise CliError(
            f"--calib {args.calib} has {data.num_channels}-channel images; "
            f"the model takes {channels}"
        )
    return data


def calibration_tensor(args: argparse.Namespace, model: ResNet) -> Tensor:
    """``--calib-images`` images of ``--calib`` DATA as the model sees them (seeded)."""
    data = calibration_set(args, model)
    return calibration_images(data, args.calib_images, model_cfg=model.default_cfg)


def engine_runner(
    args: argparse.Namespace, model: ResNet, batch: int | None = None
) -> Runner | None:
    """The runner of ``--engine`` for ``model`` (``None`` for eager: the model itself).

    Args:
        args: parsed ``--engine``, ``--calib``, ``--calib-images``.
        model: the classifier.
        batch: the batch size it will mostly see; a compiled engine is then given every
            batch at this size (padded), so a short last batch costs no second compilation.
    """
    engine = get_engine(args.engine)
    require_calibration(args, engine.needs_calibration, f"engine {engine.name!r}")
    ensure_available(engine.name)
    if engine.name == "eager":
        return None
    calib = calibration_tensor(args, model) if engine.needs_calibration else None
    print(f"preparing engine {engine.name!r} ({engine.summary})", file=sys.stderr)
    run = engine.prepare(model, calib=calib)
    return fixed_batch(run, batch) if engine.compiles and batch else run
