"""Every file name of a run folder and of an experiment folder, in one place.

A *run folder* is what ``reslab train`` and ``reslab finetune`` write; an *experiment folder*
holds one recipe and its runs under ``runs/``. Other rooms never spell these names: they
import them from here (``reslab.runs``).
"""

from __future__ import annotations

import fnmatch

__all__ = [
    "BLOCKS_JSON",
    "BLOCKS_PNG",
    "CHECKPOINT",
    "CHECKPOINT_STATE_PATTERN",
    "COMMAND",
    "CONFIG",
    "CONFUSION",
    "CURVES",
    "DERIVED_FILES",
    "EXPERIMENT_MANIFEST",
    "EXPLANATIONS_CASCADE_PNG",
    "EXPLANATIONS_JSON",
    "EXPLANATIONS_PNG",
    "GRADIENTS_JSON",
    "GRADIENTS_PNG",
    "HISTORY_CSV",
    "LANDSCAPE_JSON",
    "LANDSCAPE_PNG",
    "HISTORY_JSON",
    "LEDGER",
    "LOCK",
    "LR_FIND_JSON",
    "LR_FIND_PNG",
    "LR_SCHEDULE_PNG",
    "METRICS",
    "MODEL",
    "MODEL_FILES",
    "RECIPE",
    "RECORD_FILES",
    "REPORT",
    "RESULTS_CSV",
    "RESULTS_JSON",
    "RESULTS_MD",
    "RESULT_TABLES",
    "RUNS_DIR",
    "TENSORBOARD",
    "TOP_LOSSES_JSON",
    "TOP_LOSSES_PNG",
    "checkpoint_state_name",
    "is_record",
]

# --- a run folder: what the run itself records (its identity; commands read these) ---
CONFIG = "config.json"  # the recipe's options
METRICS = "metrics.json"  # final numbers of a finished run
HISTORY_JSON = "history.json"  # per-epoch rows, per-batch LR and loss
HISTORY_CSV = "history.csv"  # the same rows as CSV
MODEL = "model.safetensors"  # final weights (a reslab checkpoint: rebuilt from the file alone)
CHECKPOINT = "checkpoint.safetensors"  # resume point: weights + position
CHECKPOINT_STATE_PATTERN = "checkpoint.train_state-*.pt"  # optimiser, RNG, callback states
LR_FIND_JSON = "lr_find.json"  # the LR finder's sweep
COMMAND = "command.json"  # every start of the run: argv, time, versions, device
LEDGER = "run.json"  # what reslab wrote here (see reslab.runs.ledger)
LOCK = ".lock"  # the single writer's lock

# --- a run folder: figures and pages made from the records (remade at will) ---
CURVES = "curves.png"
LR_FIND_PNG = "lr_find.png"
LR_SCHEDULE_PNG = "lr_schedule.png"
CONFUSION = "confusion.png"
TOP_LOSSES_PNG = "top_losses.png"
TOP_LOSSES_JSON = "top_losses.json"
REPORT = "report.html"
BLOCKS_JSON = "blocks.json"
BLOCKS_PNG = "blocks.png"
EXPLANATIONS_JSON = "explanations.json"  # reslab analyze explanations
EXPLANATIONS_PNG = "explanations.png"
EXPLANATIONS_CASCADE_PNG = "explanations-cascade.png"
LANDSCAPE_JSON = "landscape.json"  # reslab analyze landscape (a run, or an experiment folder)
LANDSCAPE_PNG = "landscape.png"
GRADIENTS_JSON = "gradients.json"  # reslab analyze gradients
GRADIENTS_PNG = "gradients.png"
TENSORBOARD = "tensorboard"  # a folder of TensorBoard event files

# The files a run folder's model is read from, in order of preference.
MODEL_FILES = (MODEL, CHECKPOINT)
RECORD_FILES = (
    CONFIG, METRICS, HISTORY_JSON, HISTORY_CSV, MODEL, CHECKPOINT, CHECKPOINT_STATE_PATTERN,
    LR_FIND_JSON, COMMAND, LEDGER,
)  # fmt: skip
DERIVED_FILES = (
    CURVES, LR_FIND_PNG, LR_SCHEDULE_PNG, CONFUSION, TOP_LOSSES_PNG, TOP_LOSSES_JSON, REPORT,
    BLOCKS_JSON, BLOCKS_PNG, EXPLANATIONS_JSON, EXPLANATIONS_PNG, EXPLANATIONS_CASCADE_PNG,
    LANDSCAPE_JSON, LANDSCAPE_PNG, GRADIENTS_JSON, GRADIENTS_PNG,
)  # fmt: skip

# --- an experiment folder ---
RECIPE = "recipe.json"  # the one recipe every run of the folder shares
EXPERIMENT_MANIFEST = "experiment.json"  # what `reslab report` shows (title, figures, tables)
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
RESULT_TABLES = (RESULTS_MD, RESULTS_JSON, RESULTS_CSV)
RUNS_DIR = "runs"  # one run folder per run: runs/<name>/


def checkpoint_state_name(epoch: int, batch: int) -> str:
    """The state file that goes with the checkpoint written at ``(epoch, batch)``."""
    return f"checkpoint.train_state-e{epoch:04d}-b{batch:06d}.pt"


def is_record(name: str) -> bool:
    """Whether ``name`` (a file name in a run folder) is one of the run's own records."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in RECORD_FILES)
