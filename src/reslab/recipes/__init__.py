"""Recipes: the runs behind ``reslab train`` and ``reslab finetune``, on one skeleton
(:func:`open_run`: threads, processes, device, seed, one writer per run folder, atomic files)
with their options declared once (:mod:`reslab.recipes.options`)."""

from reslab.recipes.finetune import finetune_resume_config, prepare_model, run_finetune
from reslab.recipes.finetune_config import FinetuneConfig
from reslab.recipes.options import KINDS, OptionSpec, check_options, option, option_specs
from reslab.recipes.run import Run, open_run, seed_everything
from reslab.recipes.train import (
    RUNTIME_OPTIONS,
    build_model_for_data,
    load_splits,
    resume_config,
    run_training,
    subset,
)
from reslab.recipes.train_config import TrainConfig

__all__ = [
    "KINDS",
    "RUNTIME_OPTIONS",
    "FinetuneConfig",
    "OptionSpec",
    "Run",
    "TrainConfig",
    "build_model_for_data",
    "check_options",
    "load_splits",
    "open_run",
    "option",
    "option_specs",
    "prepare_model",
    "resume_config",
    "run_finetune",
    "finetune_resume_config",
    "run_training",
    "seed_everything",
    "subset",
]
