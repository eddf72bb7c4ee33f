"""Run folders and experiment folders: one owner for their file names, their records and
their rules.

A run folder (``reslab train`` / ``finetune``) holds typed records — :class:`RunConfig`,
:class:`TrainMetrics` / :class:`FinetuneMetrics`, :class:`History`, :class:`CommandLog` — each
read and written by one function here; its ledger (``run.json``) lists every file reslab wrote,
which is what ``--overwrite`` may remove. An experiment folder holds one recipe and its runs.
Every other room reads and writes these folders through this one; a damaged or foreign file is
one :class:`RunFileError` that names it.
"""

from reslab.runs import names
from reslab.runs.experiment import (
    ExperimentFolder,
    read_recipe,
    read_results,
    recipe_changes,
    write_results_json,
)
from reslab.runs.folder import EXISTING, RunFolder, RunFolderError, run_inputs
from reslab.runs.ledger import Ledger, claim, read_ledger
from reslab.runs.manifest import (
    FIGURE_SUFFIXES,
    ExperimentManifest,
    ManifestSection,
    find_experiment,
    read_manifest,
    write_manifest,
)
from reslab.runs.members import (
    RunFileError,
    existing_member,
    member_path,
    read_json_file,
    read_json_member,
)
from reslab.runs.records import (
    CommandLog,
    FinetuneMetrics,
    History,
    Invocation,
    LrFind,
    RunConfig,
    RunMetrics,
    TrainMetrics,
    append_invocation,
    read_command_log,
    read_config,
    read_history,
    read_lr_find,
    read_metrics,
    write_config,
    write_history,
    write_lr_find,
    write_metrics,
)

__all__ = [
    "EXISTING",
    "FIGURE_SUFFIXES",
    "CommandLog",
    "ExperimentFolder",
    "ExperimentManifest",
    "FinetuneMetrics",
    "History",
    "Invocation",
    "Ledger",
    "LrFind",
    "ManifestSection",
    "RunConfig",
    "RunFileError",
    "RunFolder",
    "RunFolderError",
    "RunMetrics",
    "TrainMetrics",
    "append_invocation",
    "claim",
    "existing_member",
    "find_experiment",
    "member_path",
    "names",
    "read_command_log",
    "read_config",
    "read_history",
    "read_json_file",
    "read_json_member",
    "read_ledger",
    "read_lr_find",
    "read_manifest",
    "read_metrics",
    "read_recipe",
    "read_results",
    "recipe_changes",
    "run_inputs",
    "write_config",
    "write_history",
    "write_lr_find",
    "write_manifest",
    "write_metrics",
    "write_results_json",
]
