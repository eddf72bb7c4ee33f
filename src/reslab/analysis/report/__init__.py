"""One self-contained HTML report of a run or an experiment folder.

Modules: ``facts`` (what a run folder records), ``evaluate`` (the run's model on its test
data), ``environment`` (software and machine), ``charts`` (figures drawn fresh),
``embed`` (images as ``data:`` URIs), ``html`` (the escaping template), ``tables``
(Markdown/JSON/CSV result tables), ``experiment`` (the ``experiment.json`` contract),
``run_page`` / ``model_page`` (a run's / a model's sections) and ``build`` (:func:`write_report`).
"""

from reslab.analysis.report.build import (
    REPORT_NAME,
    build_model_report,
    build_report,
    write_report,
)
from reslab.analysis.report.experiment import (
    MANIFEST,
    ExperimentManifest,
    find_experiment,
    read_manifest,
)
from reslab.analysis.report.html import Markup, escape

__all__ = [
    "MANIFEST",
    "REPORT_NAME",
    "ExperimentManifest",
    "Markup",
    "build_model_report",
    "build_report",
    "escape",
    "find_experiment",
    "read_manifest",
    "write_report",
]
