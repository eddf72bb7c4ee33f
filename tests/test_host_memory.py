"""Freed host memory is kept for the next training step: counted as page faults by the kernel.

The probe trains a small conv net (six conv-BN-ReLU layers, batch 64 of 16 x 28 x 28) for 12
SGD steps in a fresh process and counts the kernel's minor page faults per step. By default
glibc gives freed memory back (unmaps large blocks, trims its heap), so steps keep faulting
fresh pages in (seen here: 28,000 to 88,000 faults over the last six steps); kept, the last
six steps reuse memory the process already has (0 to 1,600).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from reslab.training import HOST_MEMORY_ENV, host_memory

glibc_only = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)
# What else sets malloc's policy: the probes run without it.
MALLOC_ENV = (HOST_MEMORY_ENV, "GLIBC_TUNABLES", "LD_PRELOAD")

PROBE = """
import json, resource, sys
import torch
from torch import nn
how = sys.argv[1]
kept = None
if how == "function":
    from reslab.training import keep_freed_host_memory
    kept = keep_freed_host_memory()
elif how == "open_run":
    from reslab.recipes.run import open_run
    with open_run(None, device="cpu"):
        pass
torch.manual_seed(0)
torch.set_num_threads(1)
layers = [(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()) for _ in range(6)]
model = nn.Sequential(*[m for layer in layers for m in layer])
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(64, 16, 28, 28)
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""
SETTLED = slice(6, None)  # the last six steps
FRESH = 10_000  # faults over the settled steps at least, when memory is given back
REUSED = 5_000  # faults over the settled steps at most, when it is kept


def probe(how: str, policy: str | None = None) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in MALLOC_ENV and not k.startswith("MALLOC_")
    }
    if policy is not None:
        env[HOST_MEMORY_ENV] = policy
    cmd = [sys.executable, "-c", PROBE, how]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_default_malloc_faults_fresh_pages_in_every_step():
    # the premise: without the policy, training steps keep touching new memory
    faults = probe("none")["faults"]
    assert sum(faults[SETTLED]) > FRESH, faults


@glibc_only
@pytest.mark.parametrize("how", ["function", "open_run"])
def test_kept_memory_is_reused_without_page_faults(how):
    result = probe(how)
    assert result["kept"] is (True if how == "function" else None)  # (open_run says nothing)
    assert sum(result["faults"][SETTLED]) < REUSED, result["faults"]


@glibc_only
def test_system_policy_leaves_malloc_alone():
    result = probe("function", policy="system")
    assert result["kept"] is False
    assert sum(result["faults"][SETTLED]) > FRESH, result["faults"]


def test_policy_values(monkeypatch):
    monkeypatch.delenv(HOST_MEMORY_ENV, raising=False)
    assert host_memory.host_memory_policy() == "keep"
    monkeypatch.setenv(HOST_MEMORY_ENV, " System ")
    assert host_memory.host_memory_policy() == "system"
    monkeypatch.setenv(HOST_MEMORY_ENV, "lots")
    with pytest.raises(ValueError, match="RESLAB_HOST_MEMORY='lots': expected one of keep, system"):
        host_memory.host_memory_policy()


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(host_memory, "_kept", False)
    monkeypatch.setattr(host_memory.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.delenv(HOST_MEMORY_ENV, raising=False)
    assert host_memory.keep_freed_host_memory() is False


@pytest.mark.parametrize(
    "verb, args",
    [
        ("train", ["--data", "synthetic", "--device", "cpu", "--out"]),
        ("experiment", ["degradation", "--budget", "short", "--out"]),
    ],
)
def test_bad_policy_is_a_one_line_cli_error_before_anything_is_written(verb, args, tmp_path):
    env = {**os.environ, HOST_MEMORY_ENV: "lots"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "reslab", verb, *args, str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        f"reslab {verb}: error: RESLAB_HOST_MEMORY='lots': expected one of keep, system"
    ]
    assert not out.exists()
