"""``reslab bench train``, the bare loop it times the Learner against, ``--compile`` and the
named training recipes."""

from __future__ import annotations

import copy
import json
import platform
import sys

import pytest
import torch
from torch import nn

from reslab.cli import main
from reslab.recipes.train_bench import (
    BareLoop,
    TrainPath,
    learner_epoch,
    learner_for_path,
    parse_paths,
)
from reslab.recipes.train_config import TRAIN_RECIPES, TrainConfig
from reslab.runs import TrainMetrics
from reslab.training import Callback, Compile, Learner, bf16_is_fast
from test_data_synthetic import write_fake_fashion_mnist
from test_learner import batches, toy_data, toy_net


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RESLAB_DATA", raising=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=64, n_test=32)


# ------------------------------------------------------------------ the bare loop
PATHS = [TrainPath(), TrainPath(channels_last=True)]
if bf16_is_fast(torch.device("cpu")):
    PATHS.append(TrainPath(channels_last=True, amp="bf16"))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_bare_loop_trains_what_the_learner_trains(path):
    """Same seed, same batches: the bare loop's batch losses and final weights are the
    Learner's (one-cycle, Nesterov SGD, weight decay off for 1-d parameters, label
    smoothing), so the benchmark compares two implementations of one training."""
    x, y = toy_data(64)
    train = batches(x, y, 8)
    model = toy_net(bn=True)
    bare = BareLoop(copy.deepcopy(model), path)
    learn = learner_for_path(copy.deepcopy(model), train, path)
    for _ in range(2):  # two epochs: the second starts from trained weights and momenta
        got, want = learner_epoch(learn), bare.epoch(train)
        torch.testing.assert_close(got.float(), want, rtol=1e-6, atol=1e-6)
    for p, q in zip(learn.model.parameters(), bare.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert learn.recorder.losses[0] > learn.recorder.losses[-1]  # it learned


def test_bare_loop_one_cycle_is_reslab_one_cycle():
    """The bare loop's torch OneCycleLR sets the LR and momentum reslab's schedule sets."""
    x, y = toy_data(32)
    train = batches(x, y, 4)
    model = toy_net()
    bare = BareLoop(copy.deepcopy(model), TrainPath())
    seen = []

    def spy(opt, args, kwargs):
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))

    bare.opt.register_step_pre_hook(spy)
    bare.epoch(train)
    learn = learner_for_path(copy.deepcopy(model), train, TrainPath())
    learn.fit_one_cycle(1, learn.lr)
    lrs = learn.recorder.lrs
    assert [lr for lr, _ in seen] == pytest.approx(lrs, rel=1e-12)
    assert seen[0][1] == pytest.approx(0.95) and min(m for _, m in seen) == pytest.approx(0.85)


def test_parse_paths():
    assert [p.name for p in parse_paths("eager, cl ,compile+bf16+channels-last")] == [
        "eager",
        "channels-last",
        "compile+bf16+channels-last",
    ]
    with pytest.raises(ValueError, match="unknown path part 'fp8'"):
        parse_paths("fp8")


# ------------------------------------------------------------------ the command
def test_bench_train_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "train", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "reslab bench train MODEL --data D" in out and "--paths" in out


def test_bench_train_tiny_budget(data, capsys):
    args = ["bench", "train", "resnet20", "--data", "fashion-mnist", "--data-dir", str(data)]
    args += ["--width", "0.25", "--batch", "8", "--batches", "3", "--runs", "1", "--threads", "1"]
    assert main([*args, "--paths", "eager,cl", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in result["rows"]] == ["eager", "channels-last"]
    for row in result["rows"]:
        assert len(row["bare_samples_per_s"]) == len(row["learner_samples_per_s"]) == 1
        assert row["ratio"] > 0 and row["max_loss_diff"] < 1e-5
    assert result["batch"] == 8 and result["steps"] == 3
    assert main([*args, "--paths", "eager"]) == 0
    table = capsys.readouterr().out
    assert "bare /s" in table and "Learner /s" in table and "eager" in table
    assert "faults/step" in table


def test_bench_train_counts_the_learners_page_faults_per_step(data, capsys, monkeypatch):
    from reslab.recipes import train_bench

    reads = iter(range(0, 10_000, 300))  # the counter moves 300 between any two reads
    monkeypatch.setattr(train_bench, "minor_faults", lambda: next(reads))
    monkeypatch.delenv("RESLAB_HOST_MEMORY", raising=False)
    args = ["bench", "train", "resnet20", "--data", "fashion-mnist", "--data-dir", str(data)]
    args += ["--device", "cpu"]
    args += ["--width", "0.25", "--batch", "8", "--batches", "3", "--runs", "2", "--threads", "1"]
    assert main([*args, "--paths", "eager", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    row = result["rows"][0]
    assert row["learner_faults_per_step"] == [100.0, 100.0]  # 300 faults / 3 batches, each run
    assert row["faults_per_step"] == 100.0
    expected = "kept" if sys.platform == "linux" and platform.libc_ver()[0] == "glibc" else "system"
    assert result["environment"]["host_memory"] == expected


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "bench train needs a MODEL"),
        (["resnet20"], "bench train needs --data"),
        (["resnet20", "--data", "x", "--paths", "fp8"], "unknown path part 'fp8'"),
        (["resnet20", "--data", "x", "--ladder"], "--ladder does not go with `bench train`"),
        (["nosuchnet", "--data", "x"], "nosuchnet"),
    ],
)
def test_bench_train_bad_input_is_one_line(extra, message, capsys):
    assert main(["bench", "train", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_train_options_refused_elsewhere(capsys):
    assert main(["bench", "resnet18", "--batches", "3"]) == 2
    assert "only `reslab bench train MODEL --data D` takes it" in capsys.readouterr().err


# ------------------------------------------------------------------ --compile
def fake_compile(monkeypatch, on_forward) -> None:
    """``torch.compile`` made to wrap the module in one that calls ``on_forward(x)`` first."""

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            on_forward(x)
            return self.inner(x)

    monkeypatch.setattr(torch, "compile", lambda module, mode=None: Wrapped(module))


def test_compile_callback_trains_through_the_compiled_module(monkeypatch):
    """The training forward goes through torch.compile's module for the fit only; the
    Learner's model stays the plain module (checkpoint keys unchanged)."""
    calls = []
    fake_compile(monkeypatch, lambda x: calls.append(len(x)))
    x, y = toy_data(32)
    model = toy_net()
    learn = Learner(model, batches(x, y, 8), batches(x, y, 16), cbs=[Compile()], progress=False)
    learn.fit(1)
    assert calls == [8, 8, 8, 8]  # training batches only: validation runs the plain model
    assert learn.forward_model is model and learn.model is model
    assert not any("_orig_mod" in k or "inner" in k for k in learn.model.state_dict())


@pytest.mark.parametrize(
    "env, cache_during_fit",
    [
        ({}, True),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, False),
        ({"ATEN_CPU_CAPABILITY": "avx2", "TORCHINDUCTOR_CACHE_DIR": "/tmp/own"}, True),
    ],
)
def test_compile_keeps_inductor_graph_cache_off_for_another_cpus_kernels(
    env, cache_during_fit, monkeypatch
):
    """torch 2.14's FX-graph cache does not key on ATEN_CPU_CAPABILITY (it served AVX-512
    graphs to an AVX2 run: wrong logits): with the variable set and no cache folder of its
    own, a compiled fit runs with that cache off, and the setting comes back after the fit."""
    import torch._inductor.config as inductor_config

    for name in ("ATEN_CPU_CAPABILITY", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen = []
    fake_compile(monkeypatch, lambda x: seen.append(inductor_config.fx_graph_cache))
    x, y = toy_data(16)
    with inductor_config.patch(fx_graph_cache=True):
        Learner(toy_net(), batches(x, y, 8), None, cbs=[Compile()], progress=False).fit(1)
        assert seen == [cache_during_fit, cache_during_fit]
        assert inductor_config.fx_graph_cache is True


@pytest.mark.slow
def test_compiled_fit_checkpoints_plain_keys_and_resumes(tmp_path):
    """With torch.compile (inductor on the CPU): checkpoints hold the plain module's keys (no
    ``_orig_mod.``), and a compiled fit stopped after epoch 1 and resumed from its checkpoint
    ends with the weights of the uninterrupted compiled fit."""
    from safetensors.torch import load_file

    from reslab.training import CancelFitException, SaveCheckpoint

    x, y = toy_data(64)
    train = batches(x, y, 16)

    def make(folder, *cbs):
        return Learner(
            toy_net(bn=True), train, None, lr=0.05, progress=False,
            cbs=[Compile(), SaveCheckpoint(folder), *cbs],
        )  # fmt: skip

    full = make(tmp_path / "full")
    full.fit_one_cycle(3)
    saved = load_file(str(tmp_path / "full" / "checkpoint.safetensors"))
    assert sorted(saved) == sorted(toy_net(bn=True).state_dict())

    class StopAfterEpoch1(Callback):
        order = 99  # after SaveCheckpoint wrote epoch 1

        def after_epoch(self):
            raise CancelFitException

    make(tmp_path / "part", StopAfterEpoch1()).fit_one_cycle(3)
    again = make(tmp_path / "part")
    again.resume(tmp_path / "part")
    again.fit_one_cycle(3)
    assert again.recorder.losses == pytest.approx(full.recorder.losses, rel=1e-6)
    for p, q in zip(again.model.parameters(), full.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_train_compile_flag_reports_its_path(data, tmp_path):
    out = tmp_path / "run"
    args = [
        "train", "--data", "fashion-mnist", "--data-dir", str(data), "--model", "resnet20",
        "--width", "0.25", "--epochs", "1", "--bs", "16", "--no-progress", "--threads", "1",
        "--no-report", "--compile", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    amp = "bf16+" if bf16_is_fast(torch.device("cpu")) else ""
    assert metrics["compile"] is True
    assert metrics["train_path"] == f"compile+{amp}channels-last"
    from safetensors.torch import load_file

    from reslab import create_model

    keys = list(load_file(str(out / "model.safetensors")))
    plain = create_model("resnet20", num_classes=10, in_chans=1, width=0.25)
    assert sorted(keys) == sorted(plain.state_dict())


# ------------------------------------------------------------------ named recipes
def test_recipe_gives_defaults_and_flags_win():
    cfg = TrainConfig.from_options({"recipe": "fmnist-fast", "out": "x", "epochs": 3})
    want = TRAIN_RECIPES["fmnist-fast"].options
    assert cfg.data == want["data"] and cfg.compile == want["compile"] and cfg.bs == want["bs"]
    assert cfg.epochs == 3 and cfg.recipe == "fmnist-fast"
    plain = TrainConfig.from_options({"data": "fashion-mnist", "out": "x"})
    assert plain.compile is False and plain.recipe is None


def test_recipe_on_the_command_line(data, tmp_path, monkeypatch):
    """`reslab train --recipe NAME` runs with the recipe's options (data included); the
    config.json of the run records them and the recipe's name."""
    seen = {}

    def fake_run(cfg, resume=False):
        seen["cfg"] = cfg
        return TrainMetrics(test_accuracy=0.5, test_loss=1.0, wall_seconds=1, samples_per_s=1)

    monkeypatch.setattr("reslab.cli.train_cmd.run_training", fake_run)
    out = tmp_path / "r"
    assert main(["train", "--recipe", "fmnist-fast", "--epochs", "1", "--out", str(out),
                 "--no-report"]) == 0  # fmt: skip
    cfg = seen["cfg"]
    assert cfg.recipe == "fmnist-fast" and cfg.data == "fashion-mnist" and cfg.epochs == 1
    assert cfg.compile is TRAIN_RECIPES["fmnist-fast"].options["compile"]


def test_unknown_recipe_is_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--recipe", "nope", "--out", "x"])
    assert "invalid choice" in capsys.readouterr().err
