"""Training to accuracy on real data (slow suite): the README's quick-start recipe.

``reslab train --data fashion-mnist --model resnet20 --epochs 2`` with every other option at
its default (batch 256, one-cycle to LR 0.4, label smoothing 0.1, seed 0), through
:func:`reslab.recipes.run_training`, then the saved model scored by hand on the 10,000 real
test images.
"""

from __future__ import annotations

import pytest
import torch

from conftest import FASHION_MNIST_DIR, read_idx_gz
from reslab import load_checkpoint
from reslab.recipes import TrainConfig, run_training

pytestmark = pytest.mark.slow

# This recipe reached 0.8966 here (seed 0, bf16 autocast on the CPU; 0.8282 after its first
# epoch). The test asks for 0.88: room for another CPU's rounding to take another path through
# training, far above what a broken loop scores (chance is 0.10).
REACHED = 0.8966
STATED = 0.88


def _real_test_set() -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx_gz(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_gz(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float() / 255
    return x, torch.from_numpy(labels.astype("int64"))


def test_readme_recipe_trains_resnet20_to_accuracy(tmp_path, session_cache, monkeypatch):
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"no Fashion-MNIST in {FASHION_MNIST_DIR}: apt-get install dataset-fashion-mnist"
        )
    monkeypatch.setenv("RESLAB_CACHE", str(session_cache))
    monkeypatch.delenv("RESLAB_DATA", raising=False)
    monkeypatch.setenv("RESLAB_OFFLINE", "1")
    cfg = TrainConfig(
        data="fashion-mnist",
        data_dir=str(FASHION_MNIST_DIR),
        model="resnet20",
        epochs=2,
        out=str(tmp_path / "run"),
        progress=False,
    )
    metrics = run_training(cfg)
    assert metrics.epochs == 2 and metrics.train_images == 60_000

    model = load_checkpoint(tmp_path / "run" / "model.safetensors").eval()
    x, y = _real_test_set()
    correct = 0
    # The same arithmetic as the run's final evaluation: bf16 autocast when it used --amp.
    bf16 = metrics.amp == "bf16"
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for xb, yb in zip(x.split(500), y.split(500)):
            correct += int((model(xb).argmax(1) == yb).sum())
    accuracy = correct / 10_000
    # Other batch sizes and memory formats may break a near tie the other way: a few images.
    assert metrics.test_accuracy == pytest.approx(accuracy, abs=5e-4)
    assert accuracy >= STATED, f"{accuracy:.4f} < {STATED} (this recipe reached {REACHED})"
