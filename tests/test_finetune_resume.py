"""A killed fine-tuning run resumes to the weights of an uninterrupted one, in either of
fine_tune's two fits and at the boundary between them."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import reslab
from reslab.cli import main
from reslab.recipes import FinetuneConfig, finetune_resume_config, run_finetune
from reslab.training import Callback
from test_data_synthetic import write_fake_fashion_mnist


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    data = write_fake_fashion_mnist(root / "fm", n_train=64, n_test=32)
    model = reslab.create_model("resnet20", in_chans=1, num_classes=10, width=0.25)
    source = reslab.save_checkpoint(root / "source.safetensors", model)
    reference = _cfg(data, source, root / "reference")
    run_finetune(reference)
    return data, source, load_file(str(root / "reference" / "model.safetensors"))


def _cfg(data, source, out) -> FinetuneConfig:
    # 64 images at batch 16: 4 batches per epoch; 1 frozen epoch, then 2 unfrozen ones.
    return FinetuneConfig(
        source=str(source), data="fashion-mnist", data_dir=str(data), out=str(out),
        schedule="fine-tune", freeze_epochs=1, epochs=2, bs=16, lr=0.01, save_every=2,
        progress=False, threads=1, device="cpu",
    )  # fmt: skip


class Crash(Callback):
    """Interrupt after the n-th training batch of the run (counted across both fits)."""

    order = 100

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def after_batch(self) -> None:
        if self.learn.training:
            self.seen += 1
            if self.seen == self.n:
                raise KeyboardInterrupt


# 3: mid frozen epoch (saved after batch 2); 5: first unfrozen batch (the last save is the end
# of the frozen fit); 11: mid second unfrozen epoch (saved after batch 10).
@pytest.mark.parametrize("crash_at", [3, 5, 11])
def test_a_killed_fine_tune_resumes_to_the_same_weights(setup, tmp_path, crash_at):
    data, source, reference = setup
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_finetune(_cfg(data, source, out), extra_cbs=(Crash(crash_at),))
    assert not (out / "model.safetensors").exists()
    run_finetune(finetune_resume_config(out, {"threads": 1}), resume=True)
    weights = load_file(str(out / "model.safetensors"))
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(weights[key], value), key
    history = json.loads((out / "history.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_cli_resume_refuses_changed_settings(setup, tmp_path, capsys):
    data, source, _ = setup
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_finetune(_cfg(data, source, out), extra_cbs=(Crash(3),))
    assert main(["finetune", "--resume", str(out), "--lr", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot change: lr" in err[0]
    assert main(["finetune", "--resume", str(out), "--no-progress"]) == 0
