"""Shared test helpers."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


# Debian's dataset-fashion-mnist package (.ci/run installs it): the original idx files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def read_idx_gz(path: Path) -> np.ndarray:
    """A gzipped uint8 idx file read by hand (magic 0 0 0x08 ndim, big-endian dims, data)."""
    raw = gzip.decompress(path.read_bytes())
    assert raw[:3] == b"\x00\x00\x08", f"{path}: not a uint8 idx file"
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def shared_data_dir() -> Path | None:
    """The project's shared data folder (``../shared/data`` or ``$RESLAB_SHARED_DATA``)."""
    env = os.environ.get("RESLAB_SHARED_DATA")
    for candidate in (Path(env) if env else None, REPO.parent / "shared" / "data"):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One reslab cache folder for the whole run. A test points ``$RESLAB_CACHE`` here (with
    its own monkeypatch) so expensive entries, such as CIFAR-10's 10,000 test JPEGs extracted
    and decoded, are made once per run and shared, never taken from the user's cache."""
    return tmp_path_factory.mktemp("reslab-cache")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Run the test on one torch thread: with small tensors extra threads cost more than they
    give, and on a busy machine OpenMP's waiting threads made such tests up to 30x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def is_batchnorm(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "BatchNorm2d"


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters.

    Freshly initialised BNs (mean 0, var 1, gamma 1, beta 0) would let a wrong
    key mapping between two BNs go unnoticed.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            # torch's BNs and the from-scratch BatchNorm2d (not a subclass of torch's)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) or is_batchnorm(m):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model
