"""One self-contained HTML report of a run or an experiment folder.

Modules: ``facts`` (what a run folder records), ``evaluate`` (the run's model on its test
data), ``environment`` (software and machine), ``charts`` (figures drawn fresh),
``embed`` (images as ``data:`` URIs), ``html`` (the escaping template), ``tables``
(Markdown/JSON/CSV result tables), ``experiment`` (an experiment folder's sections),
``run_page`` / ``model_page`` (a run's / a model's sections) and ``build`` (:func:`write_report`).
"""

from reslab.analysis.report.build import (
    REPORT_NAME,
    build_model_report,
    build_report,
    write_report,
)
from reslab.analysis.report.html import Markup, escape

__all__ = [
    "REPORT_NAME",
    "Markup",
    "build_model_report",
    "build_report",
    "escape",
    "write_report",
]
