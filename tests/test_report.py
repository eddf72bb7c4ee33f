"""``reslab report``: a real (tiny) run's page, opened in headless Chromium; its numbers
against an evaluation written here; escaping; experiment folders; ``eval --top-losses``."""

from __future__ import annotations

import base64
import gzip
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from browser import Browser, require_browser
from reslab import load_checkpoint
from reslab.analysis.report.evaluate import EvalAnalysis, analyze_test_set
from reslab.analysis.report.facts import RunFacts
from reslab.analysis.report.html import format_value, page
from reslab.analysis.report.model_page import MODEL_SECTIONS
from reslab.analysis.report.run_page import RUN_SECTIONS, run_sections
from reslab.analysis.top_losses import TopLoss
from reslab.cli import main
from test_data_synthetic import write_fake_fashion_mnist

pytestmark = pytest.mark.usefixtures("one_thread")

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=160, n_test=60)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A real run: `reslab train` writes the report at the end by default."""
    out = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESLAB_OFFLINE", "1")
        mp.delenv("RESLAB_DATA", raising=False)
        args = ["train", "--data", "fashion-mnist", "--data-dir", str(data), "--model",
                "resnet20", "--width", "0.5", "--epochs", "1", "--bs", "16", "--lr", "0.1",
                "--no-progress", "--threads", "1", "--out", str(out)]  # fmt: skip
        assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def report_html(run):
    assert (run / "report.html").is_file()  # written by `reslab train`
    (run / "report.html").unlink()
    assert main(["report", str(run), "--limit", "40", "--top-losses", "5"]) == 0
    return run / "report.html"


@pytest.fixture(scope="module")
def browser():
    with Browser(binary=require_browser(), width=1100, height=800) as b:
        yield b


def read_idx(path: Path) -> torch.Tensor:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    raw = path.with_suffix(".raw")
    raw.write_bytes(gzip.decompress(path.read_bytes()))
    return read_sn3_pascalvincent_tensor(str(raw))


def plain_logits(data: Path, model) -> tuple[torch.Tensor, torch.Tensor]:
    """The model on the test idx files, read by torchvision, one fp32 forward pass."""
    x = read_idx(data / "t10k-images-idx3-ubyte.gz").float().div(255).unsqueeze(1)
    y = read_idx(data / "t10k-labels-idx1-ubyte.gz").long()
    with torch.no_grad():
        return model.eval()(x), y


# ----------------------------------------------------------------------------- a run's page
def test_report_is_one_self_contained_file(report_html):
    text = report_html.read_text()
    assert "<script" not in text.lower()
    assert "http://" not in text and "https://" not in text
    assert "url(" not in text and "@import" not in text
    sources = re.findall(r"""\bsrc\s*=\s*["']?([^"' >]+)""", text)
    assert len(sources) == 2 + 5  # curves, confusion matrix, 5 top losses
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    links = re.findall(r"""\b(?:href|src)\s*=\s*["']?([^"' >]*)""", text)
    assert links and all(link.startswith(("#", "data:image/")) for link in links)
    assert 'http-equiv="Content-Security-Policy"' in text and "default-src &#x27;none&#x27;" in text
    for ident in RUN_SECTIONS:
        assert f'<section id="{ident}">' in text
    words = ("Training curves", "Per-class accuracy", "Confusion matrix", "Top losses",
             "Environment", "data_dir", "resnet20 on fashion-mnist", "Ankle boot")  # fmt: skip
    assert [w for w in words if w not in text] == []
    assert torch.__version__ in text


def test_report_says_which_path_the_training_step_took(report_html):
    """The run trained eagerly (no --compile), channels-last (the default), with bf16 autocast
    exactly where the CPU has native bf16; the environment section says so."""
    from reslab.training import bf16_is_fast

    expected = "bf16+channels-last" if bf16_is_fast(torch.device("cpu")) else "channels-last"
    env = report_html.read_text().split('<section id="environment">')[1].split("</section>")[0]
    assert "train_path" in env and f">{expected}<" in env


def test_report_opens_in_a_browser_offline(report_html, browser):
    shown = browser.open(report_html)
    assert shown.problems() == []  # images loaded, no console errors or requests, not blank
    assert len(shown.images) == 7 and all(img["naturalWidth"] > 0 for img in shown.images)
    with Image.open(__import__("io").BytesIO(shown.screenshot)) as shot:
        assert shot.size[0] == 1100 and shot.size[1] > 2000  # the whole, long page


def test_report_numbers_match_an_independent_evaluation(run, data):
    model = load_checkpoint(run / "model.safetensors")
    config = json.loads((run / "config.json").read_text())
    got = analyze_test_set(model, config, limit=None, top=4)
    logits, labels = plain_logits(data, model)
    pred = logits.argmax(1)
    expected = torch.zeros(10, 10, dtype=torch.int64)
    for t, p in zip(labels.tolist(), pred.tolist()):
        expected[t, p] += 1
    assert got.count == got.total == 60
    assert torch.equal(got.confusion, expected)
    assert got.accuracy == pytest.approx(float((pred == labels).float().mean()))
    for i, (_, correct, total, _) in enumerate(got.per_class()):
        assert (correct, total) == (int(expected[i, i]), int(expected[i].sum()))
    losses = F.cross_entropy(logits, labels, reduction="none")
    wrong = [i for i in losses.argsort(descending=True).tolist() if pred[i] != labels[i]]
    assert [item.index for item in got.top] == wrong[:4]
    # A limit takes the same fixed subset every time, and numbers images as the split does.
    part = analyze_test_set(model, config, limit=25, top=3)
    assert part.count == 25 and part.total == 60 and int(part.confusion.sum()) == 25
    assert torch.equal(part.confusion, analyze_test_set(model, config, limit=25, top=0).confusion)
    for item in part.top:
        assert item.index in wrong and item.true == int(labels[item.index])
        assert item.loss == pytest.approx(float(losses[item.index]), abs=1e-4)


def test_report_without_its_test_data_still_renders(run, tmp_path):
    for name in ("model.safetensors", "metrics.json", "history.json", "command.json"):
        (tmp_path / name).write_bytes((run / name).read_bytes())
    config = json.loads((run / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "data": str(tmp_path / "gone")}))
    assert main(["report", str(tmp_path)]) == 0
    text = (tmp_path / "report.html").read_text()
    assert "the test set could not be analysed" in text and "gone" in text
    assert "Training curves" in text and text.count("<img") == 1


def test_report_of_a_model_on_a_data_set(run, data, tmp_path, capsys):
    out = tmp_path / "m.html"
    args = ["report", str(run / "model.safetensors"), "--data", "fashion-mnist", "--data-dir",
            str(data), "--limit", "30", "--top-losses", "3", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    text = out.read_text()
    for ident in MODEL_SECTIONS:
        assert f'<section id="{ident}">' in text
    assert text.count("<img") == 1 + 3 and "<script" not in text  # confusion, top losses
    assert "--limit 30 --top-losses 3" in text and "parameters" in text
    model = load_checkpoint(run / "model.safetensors")
    # The report's numbers are analyze()'s on the same 30 images.
    config = {"data": "fashion-mnist", "data_dir": str(data)}
    expected = analyze_test_set(model, config, limit=30, top=0)
    assert f"<b>{format_value(expected.accuracy)}</b>" in text  # the summary card
    assert main([*args[:2], "--data", "cifar10", "--data-dir", str(tmp_path)]) == 2
    assert main(["report", str(run), "--restrict-classes"]) == 2
    bad_layer = ["report", str(run), "--layer", "layer9", "--limit", "10", "--out", str(out)]
    assert main(bad_layer) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("reslab report: error:") for e in err)
    assert "layer9" in err[2] and "layer3" in err[2]  # the model's stages are suggested


def test_command_json_records_the_process(run):
    (entry,) = json.loads((run / "command.json").read_text())["invocations"]
    tail = sys.argv[1:]  # this process's command line: pytest's own
    assert entry["argv"][len(entry["argv"]) - len(tail) :] == tail
    assert entry["device"] == "cpu" and entry["world_size"] == 1
    assert entry["torch"] == torch.__version__ and re.match(r"\d{4}-\d\d-\d\dT", entry["time"])


def test_user_text_is_escaped_everywhere(tmp_path, browser):
    facts = RunFacts(
        tmp_path, tmp_path / "model.safetensors",
        config={"data": EVIL, "classes": [EVIL, "ok"]}, metrics={"model": EVIL, "data": "d"},
        history=[{"epoch": 1, "train_loss": 1.0, "valid_loss": 1.2, "accuracy": 0.5, "lr": 0.1}],
        invocations=[{"argv": ["reslab", "train", "--data", EVIL], "device": EVIL}],
    )  # fmt: skip
    top = TopLoss(0, torch.rand(3, 8, 8), 0, 1, 0.9, 2.0, torch.rand(8, 8))
    analysis = EvalAnalysis(EVIL, "test", 4, 4, 0.5, 1.0, torch.tensor([[1, 1], [1, 1]]),
                            [EVIL, "ok"], [top], "gradcam", "layer3")  # fmt: skip
    html = page(facts.title, EVIL, run_sections(facts, analysis, None, {EVIL: EVIL}), EVIL)
    assert EVIL not in html and "<script" not in html
    assert html.count(ESCAPED) >= 8  # title, config, command, classes, captions, environment
    path = tmp_path / "evil.html"
    path.write_text(html)
    # A script that slipped through would run (or be refused by the page's policy): both
    # show as console errors.
    assert browser.open(path).problems() == []


# ----------------------------------------------------------------------------- experiments
def write_png(path: Path, size=(60, 40)) -> bytes:
    Image.new("RGB", size, (30, 120, 200)).save(path)
    return path.read_bytes()


def test_experiment_folder_shows_its_figures_and_tables(tmp_path, browser, capsys):
    png = write_png(tmp_path / "degradation.png")
    (tmp_path / "results.md").write_text(
        f"# Depth\n\n| depth | accuracy {EVIL} |\n|---|---:|\n| 20 | 0.91 |\n| 56 | 0.87 |\n"
    )
    rows = [{"model": "resnet20", "acc": 0.91}, {"model": EVIL, "acc": 0.5}]
    (tmp_path / "ladder.json").write_text(json.dumps(rows))
    manifest = {
        "title": f"Degradation {EVIL}",
        "description": "Deeper plain nets train worse.\n\nResidual ones do not.",
        "command": ["reslab", "experiment", "degradation"],
        "figures": [{"file": "degradation.png", "caption": "accuracy against depth"}],
        "tables": ["results.md", {"file": "ladder.json", "title": "the ladder"}],
        "facts": {"seeds": 3},
    }
    (tmp_path / "experiment.json").write_text(json.dumps(manifest))
    assert main(["report", str(tmp_path)]) == 0
    assert "report.html" in capsys.readouterr().out
    text = (tmp_path / "report.html").read_text()
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in text
    assert EVIL not in text and text.count(ESCAPED) == 4
    for words in ("accuracy against depth", "<td>0.87</td>", "the ladder", "resnet20",
                  "reslab experiment degradation", "Residual ones do not.", "seeds"):  # fmt: skip
        assert words in text
    shown = browser.open(tmp_path / "report.html")
    assert shown.problems() == []
    assert [(i["naturalWidth"], i["naturalHeight"]) for i in shown.images] == [(60, 40)]


def test_a_folder_with_results_but_no_manifest_is_an_experiment(tmp_path):
    write_png(tmp_path / "b.png")
    write_png(tmp_path / "a.png")
    (tmp_path / "results.md").write_text("| x | y |\n|---|---|\n| 1 | 2 |\n")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out.html")]) == 0
    text = (tmp_path / "out.html").read_text()
    assert f"<h1>{tmp_path.name}</h1>" in text
    assert text.count("<img") == 2 and text.index("a.png") < text.index("b.png")
    assert "<td>1</td>" in text and not (tmp_path / "report.html").exists()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"title": "x", "figures": ["../outside.png"]}, "outside the experiment folder"),
        ({"title": "x", "figures": ["missing.png"]}, "'missing.png' does not exist"),
        ({"figures": ["fig.png"]}, "'title' is required"),
        ({"title": "x", "figure": ["fig.png"]}, "unknown key 'figure'"),
        ({"title": "x"}, "lists no figures, tables or sections"),
        ({"title": "x", "figures": ["notes.md"]}, "not a PNG, JPEG"),
        ({"title": "x", "tables": ["fig.png"]}, "must be .md, .json or .csv"),
        ("not json", "not valid JSON"),
    ],
)
def test_bad_experiment_folders_get_one_line(tmp_path, capsys, manifest, message):
    folder = tmp_path / "exp"
    folder.mkdir()
    write_png(tmp_path / "outside.png")
    write_png(folder / "fig.png")
    (folder / "notes.md").write_text("notes")
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (folder / "experiment.json").write_text(text)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reslab report: error:") and message in err[0]
    assert not (folder / "report.html").exists()


def test_folders_that_are_nothing_get_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such folder" in err[0] and "neither a run folder" in err[1]


# ----------------------------------------------------------------------------- eval
def test_eval_top_losses_are_the_most_confidently_wrong(run, data, tmp_path, capsys):
    cm = tmp_path / "cm.png"
    args = ["eval", str(run), "--data", "fashion-mnist", "--data-dir", str(data), "--out",
            str(cm), "--top-losses", "4", "--workers", "0"]  # fmt: skip
    assert main(args) == 0
    records = json.loads((tmp_path / "top_losses.json").read_text())
    with Image.open(tmp_path / "top_losses.png") as img:
        assert img.format == "PNG"
    logits, labels = plain_logits(data, load_checkpoint(run / "model.safetensors"))
    losses = F.cross_entropy(logits, labels, reduction="none")
    pred = logits.argmax(1)
    wrong = [i for i in losses.argsort(descending=True).tolist() if pred[i] != labels[i]]
    assert [r["index"] for r in records] == wrong[:4]
    names = json.loads((run / "metrics.json").read_text())["classes"]
    for r in records:
        i = r["index"]
        assert (r["true"], r["pred"]) == (int(labels[i]), int(pred[i]))
        assert (r["true_name"], r["pred_name"]) == (names[r["true"]], names[r["pred"]])
        assert r["loss"] == pytest.approx(float(losses[i]), abs=1e-4)
        assert r["prob"] == pytest.approx(float(logits[i].softmax(0).max()), abs=1e-4)
