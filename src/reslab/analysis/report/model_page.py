"""The sections of a model's report (a model on a data set, without a run folder): the
model, the command, the data, and the same evaluation sections as a run's."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from torch import nn

from reslab.analysis.report.evaluate import EvalAnalysis
from reslab.analysis.report.html import Markup, element, join, key_value_grid, key_value_table
from reslab.analysis.report.run_page import (
    Section,
    cards,
    confusion_section,
    per_class_section,
    top_losses_section,
)

__all__ = ["MODEL_SECTIONS", "model_sections"]

MODEL_SECTIONS = (
    "summary", "model", "data", "per-class", "confusion", "top-losses", "environment",
)  # fmt: skip


def model_facts(model: nn.Module, spec: str) -> dict[str, Any]:
    """What the model is: spec, registered name, weights, architecture, input."""
    cfg = getattr(model, "config", None)
    facts: dict[str, Any] = {"spec": spec}
    if cfg is not None:
        data = cfg.data.to_dict()
        facts.update(name=cfg.name, pretrained=cfg.pretrained, **cfg.arch.to_dict())
        facts.update({k: v for k, v in data.items() if k != "class_names"})
    facts["parameters"] = f"{sum(p.numel() for p in model.parameters()):,}"
    return facts


def model_sections(
    model: nn.Module,
    spec: str,
    analysis: EvalAnalysis,
    argv: Sequence[str] | None,
    here: dict[str, str],
) -> list[Section]:
    """Every section of a model's report, in order."""
    summary = [
        ("accuracy", analysis.accuracy),
        ("cross-entropy", analysis.loss),
        ("images", analysis.count),
        ("classes", len(analysis.class_names)),
    ]
    about: list[Markup] = [key_value_grid(model_facts(model, spec))]
    if argv:
        about = [element("h3", "command"), element("div", shlex.join(argv), class_="cmd"),
                 element("h3", "the model"), *about]  # fmt: skip
    data = {
        "data set": analysis.data,
        "split": analysis.split,
        "images": analysis.total,
        "analysed": analysis.count,
        "classes": ", ".join(analysis.class_names),
    }
    return [
        ("summary", "Summary", cards(summary)),
        ("model", "Model and command", join(about)),
        ("data", "Data", key_value_table(data)),
        per_class_section(analysis),
        confusion_section(analysis),
        top_losses_section(analysis),
        ("environment", "Environment", key_value_table(here)),
    ]
