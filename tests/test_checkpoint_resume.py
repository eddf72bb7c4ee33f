"""Checkpoints that lose nothing: SIGKILL mid-epoch (and mid-write), resume, same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reslab.recipes import TrainConfig, run_training
from reslab.weights import WeightsError
from test_data_synthetic import write_fake_fashion_mnist

REPO = Path(__file__).resolve().parents[1]

# Subprocess body: the same run as the test's reference, killed with SIGKILL by itself,
# either after a given batch or half-way through writing a given checkpoint file.
SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from reslab.recipes import TrainConfig, run_training
    from reslab.training import Callback

    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    mode, at = sys.argv[2], int(sys.argv[3])

    class KillAt(Callback):
        order = 100  # after the checkpoint callback had its chance
        def after_batch(self):
            if self.learn.training and self.learn.train_iter == at:
                os.kill(os.getpid(), signal.SIGKILL)

    cbs = []
    if mode == "batch":
        cbs.append(KillAt())
    else:  # die half-way through the at-th write of a model file
        import reslab.weights.files as wf
        from reslab.files import atomic_write
        real, count = wf.atomic_write_bytes, [0]
        def dying_write(path, data):
            count[0] += 1
            if count[0] != at:
                return real(path, data)
            def half(tmp):
                with open(tmp, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return atomic_write(path, half)
        wf.atomic_write_bytes = dying_write
    run_training(cfg, extra_cbs=tuple(cbs))
    """
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=320, n_test=64)


def _cfg(data_dir: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data="fashion-mnist",
        data_dir=str(data_dir),
        out=str(out),
        model="resnet20",
        width=0.25,
        epochs=2,
        bs=32,
        lr=0.05,
        accum=2,
        ema=0.9,
        label_smoothing=0.1,
        amp=True,
        amp_dtype="bf16",
        save_every=3,
        progress=False,
        threads=1,
        device="cpu",
    )  # bit-exact is a CPU promise (GPU: tests/test_cuda.py)
    base.update(kw)
    return TrainConfig(**base)


def _env() -> dict[str, str]:
    env = dict(os.environ, RESLAB_OFFLINE="1", PYTHONPATH=str(REPO / "src"))
    env.pop("RESLAB_DATA", None)
    return env


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max diff {(a[k].float() - b[k].float()).abs().max()}"


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    metrics = run_training(_cfg(data_dir, out))
    return out, metrics


def _killed_then_resumed(data_dir: Path, out: Path, mode: str, at: int) -> None:
    cfg = json.dumps(_cfg(data_dir, out).__dict__)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, cfg, mode, str(at)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (out / "model.safetensors").exists()  # it really died before finishing
    if mode == "save":  # it died inside a write: the half-written temporary file is there
        assert [p for p in out.iterdir() if p.name.endswith(".tmp")]
    proc = subprocess.run(
        [sys.executable, "-m", "reslab", "train", "--resume", str(out), "--no-progress"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test accuracy" in proc.stdout


def test_sigkill_mid_epoch_then_resume_is_bit_exact(data_dir, reference, tmp_path):
    ref_dir, ref_metrics = reference
    # 10 batches per epoch; killed after batch 6 of epoch 2, the last save was after batch 4
    # (saves are due every 3 batches but wait for the accumulated step to finish).
    _killed_then_resumed(data_dir, tmp_path, "batch", 15)
    _assert_same(_weights(tmp_path), _weights(ref_dir))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["resumed"] and metrics["test_accuracy"] == ref_metrics.test_accuracy
    ref_hist = json.loads((ref_dir / "history.json").read_text())
    hist = json.loads((tmp_path / "history.json").read_text())
    assert hist["batch_loss"] == ref_hist["batch_loss"]  # the same 20 losses, none twice
    assert [r["train_loss"] for r in hist["history"]] == [
        r["train_loss"] for r in ref_hist["history"]
    ]


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(data_dir, reference, tmp_path):
    ref_dir, _ = reference
    # The 4th model-file write is torn half-way and the process dies: the previous
    # checkpoint must still be intact and resume must still reach the same weights.
    _killed_then_resumed(data_dir, tmp_path, "save", 4)
    _assert_same(_weights(tmp_path), _weights(ref_dir))
    assert len(list(tmp_path.glob("checkpoint.train_state-*.pt"))) == 1
    # The torn write's temporary file was swept when the resumed run opened the folder.
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_learner_interrupted_and_resumed_in_process(data_dir, reference, tmp_path):
    ref_dir, _ = reference
    from reslab.training import Callback

    class Crash(Callback):
        order = 100

        def after_batch(self):
            if self.learn.training and self.learn.train_iter == 7:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(data_dir, tmp_path), extra_cbs=(Crash(),))
    run_training(_cfg(data_dir, tmp_path), resume=True)
    _assert_same(_weights(tmp_path), _weights(ref_dir))


def test_a_resumed_lr_find_run_keeps_the_suggested_lr(data_dir, tmp_path):
    # Without --lr, the run trains at lr_find's suggestion; a resume must not fall back to the
    # default LR (the sweep is not rerun on resume).
    from reslab.training import Callback

    class Crash(Callback):
        order = 100

        def after_batch(self):
            sweeping = hasattr(self.learn, "lr_finder")
            if self.learn.training and self.learn.train_iter == 13 and not sweeping:
                raise KeyboardInterrupt

    def cfg(out):
        return _cfg(data_dir, out, lr=None, lr_find=True, accum=1, ema=None, amp=False)

    run_training(cfg(tmp_path / "ref"))
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg(tmp_path / "run"), extra_cbs=(Crash(),))
    run_training(cfg(tmp_path / "run"), resume=True)
    _assert_same(_weights(tmp_path / "run"), _weights(tmp_path / "ref"))


def test_fp16_scaler_ema_and_accumulation_state_resume_exactly(tmp_path):
    # The GradScaler's scale and growth tracker, the EMA shadow and the accumulation counter
    # all travel in the state file (fp16 autocast is slow on CPU, hence a toy net here).
    from reslab.training import (
        EMA,
        Callback,
        GradientAccumulation,
        Learner,
        MixedPrecision,
        SaveCheckpoint,
    )
    from test_learner import batches, toy_data, toy_net

    x, y = toy_data(48)

    def make(folder, extra=()):
        cbs = [
            MixedPrecision("fp16"),
            EMA(0.8),
            GradientAccumulation(2),
            SaveCheckpoint(folder, every_n_steps=1),
            *extra,
        ]
        return Learner(
            toy_net(), batches(x, y, 8), batches(x, y, 16), lr=0.05, cbs=cbs, progress=False
        )

    ref = make(tmp_path / "ref")
    ref.fit_one_cycle(2)

    class Crash(Callback):
        order = 100

        def after_batch(self):
            if self.learn.train_iter == 8:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "run", [Crash()]).fit_one_cycle(2)
    learn = make(tmp_path / "run").resume(tmp_path / "run")
    assert (learn.start_epoch, learn.start_iter) == (1, 2)
    learn.fit_one_cycle(2)
    _assert_same(learn.model.state_dict(), ref.model.state_dict())
    assert learn.mixed_precision.scaler.get_scale() == ref.mixed_precision.scaler.get_scale()
    assert learn.recorder.losses == ref.recorder.losses


def test_state_file_is_never_unpickled_unsafely(data_dir, tmp_path):
    run_training(_cfg(data_dir, tmp_path, epochs=1, save_every=None, amp=False))
    state = next(tmp_path.glob("checkpoint.train_state-*.pt"))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"opt": Evil()}, state)
    from reslab.training import Learner

    learn = Learner(torch.nn.Linear(2, 2), None, progress=False)
    with pytest.raises(WeightsError, match="unreadable training state"):
        learn.resume(tmp_path)
    assert not marker.exists()


def test_resume_refuses_changed_settings(data_dir, tmp_path):
    from reslab.cli import main

    run_training(_cfg(data_dir, tmp_path, epochs=1, save_every=None, amp=False))
    assert main(["train", "--resume", str(tmp_path), "--lr", "0.5"]) == 2
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    # The same policy holds for Python callers: a resume continues the saved run only.
    changed = _cfg(data_dir, tmp_path, epochs=1, save_every=None, amp=False, lr=0.5)
    with pytest.raises(ValueError, match="cannot change: lr"):
        run_training(changed, resume=True)
    # Runtime options may change (threads, progress): resume_config applies them.
    from reslab.recipes import resume_config

    again = resume_config(tmp_path, {"threads": 1, "lr": None})
    assert again.threads == 1 and again.lr == 0.05
