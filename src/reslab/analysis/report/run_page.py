"""The sections of a run's report: command and config, data, curves, metrics, per-class
accuracy, confusion matrix, top losses, environment."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from reslab.analysis.report.charts import confusion_png, curves_figure, top_loss_tile
from reslab.analysis.report.embed import figure_html, image_html
from reslab.analysis.report.evaluate import EvalAnalysis
from reslab.analysis.report.explanations_page import explanations_section
from reslab.analysis.report.facts import RunFacts
from reslab.analysis.report.html import (
    Markup,
    element,
    format_value,
    join,
    key_value_grid,
    key_value_table,
    table,
)

__all__ = [
    "RUN_SECTIONS",
    "Section",
    "cards",
    "confusion_section",
    "per_class_section",
    "run_sections",
    "top_losses_section",
]

RUN_SECTIONS = (
    "summary", "command", "data", "curves", "metrics", "per-class", "confusion", "top-losses",
    "environment",
)  # fmt: skip
Section = tuple[str, str, Markup]

HEADLINE = (
    ("test_accuracy", "test accuracy"),
    ("valid_accuracy", "valid accuracy"),
    ("test_top5", "test top-5"),
    ("test_loss", "test loss"),
    ("epochs", "epochs"),
    ("wall_seconds", "seconds"),
    ("samples_per_s", "samples/s"),
)


def note(text: str) -> Markup:
    """A highlighted remark: what is missing and why."""
    return element("p", text, class_="note")


def cards(values: list[tuple[str, Any]]) -> Markup:
    """Headline numbers as boxes: the value large, its name under it."""
    boxes = [
        element("div", join([element("b", format_value(v)), element("span", k)]), class_="card")
        for k, v in values
    ]
    return element("div", join(boxes), class_="cards")


def summary_section(facts: RunFacts, analysis: EvalAnalysis | None) -> Section:
    shown = [(label, facts.metrics[k]) for k, label in HEADLINE if facts.metrics.get(k) is not None]
    if analysis is not None:
        shown.append((f"accuracy on {analysis.count} test images (this report)", analysis.accuracy))
    body = [cards(shown) if shown else note("no metrics: the run did not finish")]
    body.extend(note(f"not shown: {problem}") for problem in facts.problems)
    body.append(
        element(
            "p", f"Run folder: {facts.folder.resolve().name} · weights: {facts.model_path.name}"
        )
    )
    return "summary", "Summary", join(body)


def command_section(facts: RunFacts) -> Section:
    body: list[Markup] = []
    commands = facts.commands()
    if commands:
        label = "command" if len(commands) == 1 else "commands (the run was resumed)"
        body.append(element("h3", label))
        body.extend(element("div", c, class_="cmd") for c in commands)
    else:
        body.append(note("no command log: the command line was not recorded"))
    body.append(element("h3", f"config ({facts.recipe})"))
    body.append(key_value_grid(facts.config) if facts.config else note("no config recorded"))
    return "command", "Command and config", join(body)


def data_section(facts: RunFacts, analysis: EvalAnalysis | None, error: str | None) -> Section:
    m, c = facts.metrics, facts.config
    rows: dict[str, Any] = {"data set": c.get("data") or m.get("data")}
    if c.get("classes"):
        rows["classes chosen"] = c["classes"]
    for key, label in (("train_images", "train images"), ("valid_images", "validation images")):
        if m.get(key) is not None:
            rows[label] = m[key]
    if c.get("train_limit"):
        rows["train limit"] = c["train_limit"]
    if analysis is not None:
        rows["test images"] = analysis.total
        rows["analysed in this report"] = (
            f"{analysis.count} (a fixed random subset)"
            if analysis.count < analysis.total
            else analysis.count
        )
        rows["classes"] = f"{len(analysis.class_names)}: {', '.join(analysis.class_names)}"
    elif m.get("classes"):
        rows["classes"] = f"{len(m['classes'])}: {', '.join(map(str, m['classes']))}"
    body = [key_value_table(rows)]
    if error:
        body.append(note(f"the test set could not be analysed: {error}"))
    return "data", "Data", join(body)


def curves_section(facts: RunFacts) -> Section:
    if not facts.history and not facts.batch_loss:
        return "curves", "Training curves", note("no history.json: no epoch was recorded")
    fig = curves_figure(facts)
    caption = "Light line: the loss of every batch; dark: its moving average. Points: per epoch."
    return "curves", "Training curves", figure_html(fig, "training curves", caption)


def metrics_section(facts: RunFacts) -> Section:
    body = [key_value_table(facts.metrics) if facts.metrics else note("no metrics recorded")]
    if facts.history:
        columns = list(dict.fromkeys(k for row in facts.history for k in row))
        body.append(element("h3", "per epoch"))
        body.append(table(columns, [[row.get(k) for k in columns] for row in facts.history]))
    return "metrics", "Final metrics", join(body)


def per_class_section(analysis: EvalAnalysis) -> Section:
    rows = []
    for name, correct, total, acc in analysis.per_class():
        width = 0 if math.isnan(acc) else round(150 * acc)
        bar = Markup(f'<span class="bar" style="width:{width}px"></span>')
        rows.append([name, correct, total, acc, bar])
    body = table(["class", "correct", "images", "accuracy", ""], rows)
    return "per-class", "Per-class accuracy", body


def confusion_section(analysis: EvalAnalysis) -> Section:
    title = f"accuracy {analysis.accuracy:.4f} on {analysis.count} test images"
    png = confusion_png(analysis.confusion, analysis.class_names, title)
    caption = "Rows: the true class; columns: the predicted class."
    return (
        "confusion",
        "Confusion matrix",
        element(
            "figure", join([image_html(png, "confusion matrix"), element("figcaption", caption)])
        ),
    )


def top_losses_section(analysis: EvalAnalysis) -> Section:
    if not analysis.top:
        return (
            "top-losses",
            "Top losses",
            note(f"no wrong predictions among {analysis.count} test images"),
        )
    names = analysis.class_names
    tiles = []
    for rank, item in enumerate(analysis.top, 1):
        caption = (
            f"#{rank} · true: {names[item.true]} · predicted: {names[item.pred]} "
            f"({100 * item.prob:.1f}%) · loss {item.loss:.2f} · {analysis.split} image {item.index}"
        )
        if rank <= len(analysis.top_files):
            caption += f" · {Path(analysis.top_files[rank - 1]).name}"
        alt = f"top loss {rank}: {names[item.true]} predicted as {names[item.pred]}"
        tiles.append(
            element(
                "figure",
                join([image_html(top_loss_tile(item), alt), element("figcaption", caption)]),
            )
        )
    source = f"{analysis.method} at {analysis.layer}" if analysis.layer else analysis.method
    intro = element(
        "p",
        f"The {len(analysis.top)} test images the model gets most confidently wrong (highest "
        f"cross-entropy), each beside its class activation map ({source}) for the predicted "
        "class: where the evidence for the wrong answer was found. Red: strong, blue: none.",
    )
    return "top-losses", "Top losses", join([intro, element("div", join(tiles), class_="grid")])


def environment_section(facts: RunFacts, here: dict[str, str]) -> Section:
    body: list[Markup] = []
    if facts.invocations:
        last = facts.invocations[-1]
        run = {
            k: last.get(k)
            for k in ("time", "reslab", "git_commit", "torch", "device", "world_size")
        }
        for key in ("threads", "amp", "channels_last", "compile", "train_path"):
            if key in facts.metrics:
                run[key] = facts.metrics[key]
        body += [element("h3", "the run"), key_value_table(run)]
    body += [element("h3", "this report"), key_value_table(here)]
    return "environment", "Environment", join(body)


def run_sections(
    facts: RunFacts, analysis: EvalAnalysis | None, error: str | None, here: dict[str, str]
) -> list[Section]:
    """Every section of a run's report, in order; those needing the test set are replaced
    by a note when it could not be analysed."""
    sections = [
        summary_section(facts, analysis),
        command_section(facts),
        data_section(facts, analysis, error),
        curves_section(facts),
        metrics_section(facts),
    ]
    if analysis is not None:
        sections += [
            per_class_section(analysis),
            confusion_section(analysis),
            top_losses_section(analysis),
        ]
    else:
        missing = note(f"not available: {error}")
        sections += [
            ("per-class", "Per-class accuracy", missing),
            ("confusion", "Confusion matrix", missing),
            ("top-losses", "Top losses", missing),
        ]
    measured = explanations_section(facts.folder)  # `reslab analyze explanations`, if run
    sections += [measured] if measured is not None else []
    sections.append(environment_section(facts, here))
    return sections
