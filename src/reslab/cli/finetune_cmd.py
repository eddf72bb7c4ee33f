"""``reslab finetune``: a new head on a pretrained model; every flag is a
:class:`~reslab.recipes.FinetuneConfig` field."""

from __future__ import annotations

import argparse

from reslab.cli.options import add_config_options, config_fields_from_args
from reslab.recipes import FinetuneConfig, finetune_resume_config, run_finetune
from reslab.recipes.shared_options import RESUME

__all__ = ["register"]


def cmd_finetune(args: argparse.Namespace) -> int:
    given = config_fields_from_args(FinetuneConfig, args)
    cfg = finetune_resume_config(args.resume, given) if args.resume else FinetuneConfig(**given)
    m = run_finetune(cfg, resume=bool(args.resume))
    epochs = ", ".join(f"{t:.1f}" for t in m.epoch_seconds or [] if t is not None)
    print(
        f"valid accuracy {m.valid_accuracy:.4f}  loss {m.valid_loss:.4f}  "
        f"({m.train_images} train / {m.valid_images} valid images at {m.size} px; "
        f"epochs {epochs} s; total {m.wall_seconds:.0f} s)" + (f" -> {cfg.out}" if cfg.out else "")
    )
    return 0


def register(sub: argparse._SubParsersAction, plots: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="transfer learning: new head on a pretrained model, frozen or not",
        description="Replace the classifier of a pretrained model and train on new data. "
        "Frozen parts keep their BatchNorm statistics too.",
    )
    add_config_options(p, FinetuneConfig, extra=[RESUME])
    p.set_defaults(func=cmd_finetune)
