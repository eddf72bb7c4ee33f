"""GPU correctness: run on a CUDA machine (CI has none, so every test here skips there).

What the CPU suite cannot show: torchvision parity with cuDNN kernels in channels-last, the
from-scratch ops on CUDA tensors, fp16 autocast with a live GradScaler, bit-exact resume with
CUDA RNG and deterministic kernels, and DDP moving CUDA gradients between processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import reslab
from conftest import randomize_bn
from reslab.recipes import TrainConfig, run_training
from reslab.training import Callback, MixedPrecision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def exact_fp32():
    # TF32 would round fp32 convolutions/matmuls to a 10-bit mantissa and hide real mismatches;
    # deterministic cuDNN picks the same kernel for the same layer shape in both models.
    cudnn = torch.backends.cudnn
    old = cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, cudnn.deterministic
    cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    cudnn.deterministic = True
    yield
    cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, cudnn.deterministic = old


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_torchvision_parity_on_cuda(name, fmt):
    # Same memory format on both sides: NCHW and NHWC run different cuDNN kernels whose fp32
    # rounding differs by ~1e-4 on ResNet-50 logits, for torchvision against itself too.
    import torchvision

    tv = getattr(torchvision.models, name)()
    randomize_bn(tv)
    ours = reslab.create_model(name, normalize=False)
    ours.load_state_dict(tv.state_dict())
    tv = tv.cuda().eval().to(memory_format=fmt)
    ours = ours.cuda().eval().to(memory_format=fmt)
    x = torch.randn(4, 3, 96, 96, device="cuda").contiguous(memory_format=fmt)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=1e-5, atol=1e-5)


def test_scratch_layers_on_cuda_match_torch_layers():
    torch.manual_seed(0)
    ref = reslab.create_model("resnet18", num_classes=10).cuda()
    scratch = reslab.create_model("resnet18", num_classes=10, layers="scratch").cuda()
    scratch.load_state_dict(ref.state_dict())
    x = torch.rand(4, 3, 64, 64, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(scratch.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)
    ref.train(), scratch.train()
    ref(x).logsumexp(1).mean().backward()
    scratch(x).logsumexp(1).mean().backward()
    grads = dict(ref.named_parameters())
    for key, p in scratch.named_parameters():
        torch.testing.assert_close(p.grad, grads[key].grad, rtol=1e-4, atol=1e-4, msg=key)
    for key, buf in scratch.named_buffers():
        torch.testing.assert_close(buf, ref.get_buffer(key), rtol=1e-5, atol=1e-6, msg=key)


def _toy_learner(cbs, device="cuda"):
    from test_learner import batches, learner, toy_data, toy_net

    x, y = toy_data(64)
    data = batches(x.to(device), y.to(device), 16)
    return learner(toy_net(bn=True).to(device), data, data, cbs=cbs, lr=0.1)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_autocast_trains_on_cuda(dtype):
    seen = []

    class Dtype(Callback):
        def after_loss(self):
            seen.append(self.learn.pred.dtype)

    mp = MixedPrecision(dtype)
    learn = _toy_learner([mp, Dtype()])
    learn.fit(4)
    want = torch.float16 if dtype == "fp16" else torch.bfloat16
    assert seen and all(d == want for d in seen)
    assert (mp.scaler is not None) == (dtype == "fp16")
    if mp.scaler is not None:
        assert mp.scaler.is_enabled() and mp.scaler.get_scale() > 1.0
    hist = learn.recorder.history
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def _fake_fmnist(tmp_path_factory):
    from test_data_synthetic import write_fake_fashion_mnist

    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fm"), n_train=256, n_test=64)


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    return _fake_fmnist(tmp_path_factory)


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(
        data="fashion-mnist",
        data_dir=str(data),
        out=str(out),
        model="resnet20",
        width=0.5,
        epochs=2,
        bs=32,
        lr=0.1,
        device="cuda",
        deterministic=True,
        progress=False,
        save_every=3,
        seed=0,
    )
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("amp", [False, True])
def test_resume_on_cuda_is_bit_exact(fmnist, tmp_path, amp):
    from safetensors.torch import load_file

    kw = {"amp": amp, "amp_dtype": "fp16"}
    run_training(_cfg(fmnist, tmp_path / "ref", **kw))

    class Crash(Callback):
        order = 100

        def after_batch(self):
            if self.learn.training and self.learn.train_iter == 10:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(fmnist, tmp_path / "run", **kw), extra_cbs=(Crash(),))
    run_training(_cfg(fmnist, tmp_path / "run", **kw), resume=True)
    ref = load_file(str(tmp_path / "ref" / "model.safetensors"))
    got = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from torch import nn
    from reslab.data import TensorImageDataset, TensorLoader
    from reslab.training import Learner, cleanup_distributed, init_distributed

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    ctx = init_distributed("cuda")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(96) % 4
    x[torch.arange(96), 0, y * 2, :] = 255
    ds = TensorImageDataset(x, y, list("abcd"))
    bs = 16 // ctx.world_size
    train = TensorLoader(ds, bs, shuffle=True, augment=True, pad=1, drop_last=True, seed=3,
                         device=ctx.device, rank=ctx.rank, world_size=ctx.world_size)
    valid = TensorLoader(ds, 10, device=ctx.device, rank=ctx.rank, world_size=ctx.world_size)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4))
    if sys.argv[2] == "syncbn" and ctx.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    learn = Learner(model, train, valid, lr=0.1, progress=False, device=ctx.device)
    learn.fit_one_cycle(2)
    if ctx.rank == 0:
        out = {"losses": learn.recorder.losses, "world": ctx.world_size,
               "weights": [p.tolist() for p in model.parameters()]}
        open(sys.argv[1], "w").write(json.dumps(out))
    cleanup_distributed()
    """
)


def test_ddp_with_syncbn_on_cuda_matches_one_process(tmp_path):
    # Two processes share the one GPU (gloo: NCCL refuses two ranks on one device). With
    # SyncBatchNorm the BN statistics are over the global batch, so 2 x 8 under DDP must
    # reproduce one process with batch 16: the same loss curve and the same final weights.
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = dict(
        os.environ, PYTHONPATH=str(REPO / "src"), RESLAB_DIST_BACKEND="gloo", OMP_NUM_THREADS="1"
    )
    run = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path / "ddp.json"),
        "syncbn",
    ]
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "one.json"), "syncbn"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    ref = json.loads((tmp_path / "one.json").read_text())
    assert ddp["world"] == 2 and ref["world"] == 1
    assert ddp["losses"] == pytest.approx(ref["losses"], rel=1e-4, abs=1e-5)
    for a, b in zip(ddp["weights"], ref["weights"]):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-5)


def test_explain_and_the_report_analysis_on_cuda_match_the_cpu():
    from reslab.analysis import explain
    from reslab.analysis.report.evaluate import analyze
    from reslab.data import TensorImageDataset

    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model("resnet20", num_classes=10)).eval()
    names = [f"class {i}" for i in range(10)]
    image = torch.rand(3, 32, 32)
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    ds = TensorImageDataset(images, torch.randint(0, 10, (40,)), names)
    on_cpu = explain(model, image, names, topk=3), analyze(model, ds, top=4)
    model.cuda()
    on_gpu = explain(model, image.cuda(), names, topk=3), analyze(model, ds, top=4)
    assert [c[0] for c in on_gpu[0].classes] == [c[0] for c in on_cpu[0].classes]
    torch.testing.assert_close(on_gpu[0].maps, on_cpu[0].maps, atol=1e-3, rtol=0)
    assert torch.equal(on_gpu[1].confusion, on_cpu[1].confusion)
    assert [t.index for t in on_gpu[1].top] == [t.index for t in on_cpu[1].top]
    cams = [torch.stack([t.cam for t in result.top]) for result in (on_gpu[1], on_cpu[1])]
    torch.testing.assert_close(*cams, atol=1e-3, rtol=0)


def _benchmark_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cuda_graph_rung_keeps_its_weights_alive():
    # A CUDA graph replays raw addresses. If the runner let the captured module go, its weight
    # blocks return to the caching allocator; the NaN tensors of the same sizes allocated below
    # take them over (the replay reads NaN), and empty_cache unmaps the rest (it faults).
    import gc

    ladder = _benchmark_module("cuda_ladder")
    model = randomize_bn(reslab.create_model("resnet18", num_classes=10)).eval()
    x = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x)
    run = ladder.RUNGS["graph-fp32"](model, x.cuda())
    gc.collect()
    squatters = [torch.full_like(p, float("nan"), device="cuda") for p in model.parameters()]
    torch.cuda.empty_cache()
    outs = [run(torch.rand_like(x).cuda()), run(x.cuda())]
    del squatters  # held until both replays are done
    assert torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[1].cpu(), expected, rtol=1e-3, atol=1e-3)
