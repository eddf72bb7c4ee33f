"""reslab's batch norm for the compiled path against torch's nn.BatchNorm2d (the reference) and
against finite differences."""

from __future__ import annotations

import copy
import pickle
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from reslab.layers.compiled_batch_norm import (
    BatchNorm2dForCompile,
    batch_norm_for_compile,
    restore_batch_norm,
    train_batch_norm2d,
    use_compiled_batch_norm,
)
from reslab.training import Callback, Compile, Learner
from test_bench_train import fake_compile
from test_learner import batches, toy_data, toy_net

OURS = "_TrainBatchNorm2dBackward"  # the grad_fn our autograd.Function gives its output


def net(dtype=torch.float64, momentum=0.3) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6, momentum=momentum), nn.ReLU(),
        nn.Conv2d(6, 5, 3), nn.BatchNorm2d(5, momentum=momentum),
    )  # fmt: skip
    with torch.no_grad():  # weights away from 1 and 0, so a dropped term shows
        for bn in (model[1], model[4]):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    return model.to(dtype)


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradient_matches_finite_differences():
    """The hand-written backward (x, weight and bias) against torch's numerical gradient."""
    torch.manual_seed(0)
    x = (torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 0.7).requires_grad_()
    weight = torch.rand(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: train_batch_norm2d(*a, 1e-5)[0], (x, weight, bias))


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_steps_match_torch_batch_norm(channels_last):
    """Three training steps: outputs, every parameter's gradient, the running statistics
    (unbiased variance, momentum) and the batch counter equal nn.BatchNorm2d's."""
    ref, ours = net(), net()
    assert len(use_compiled_batch_norm(ours)) == 2
    taken = []  # the grad_fn each BatchNorm's output has: ours when our path was taken
    for bn in (ours[1], ours[4]):
        bn.register_forward_hook(lambda m, i, o: taken.append(type(o.grad_fn).__name__))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for step in range(3):
        x = (torch.randn(8, 3, 7, 7, dtype=torch.float64) * 3 + step).to(memory_format=fmt)
        out_ref, out = ref(x), ours(x)
        assert taken == [OURS] * 2
        taken.clear()
        torch.testing.assert_close(out, out_ref, rtol=1e-10, atol=1e-10)
        g = torch.randn_like(out_ref)
        out_ref.backward(g)
        out.backward(g)
        for name, grad in grads(ref).items():
            torch.testing.assert_close(grads(ours)[name], grad, rtol=1e-9, atol=1e-10, msg=name)
        ref.zero_grad(), ours.zero_grad()
    torch.testing.assert_close(ours.state_dict(), ref.state_dict(), rtol=1e-12, atol=1e-12)
    assert int(ours[1].num_batches_tracked) == 3


def test_bf16_autocast_output_matches_torch_within_bf16():
    """Under CPU autocast the input is bfloat16 (a conv's output): the output stays bfloat16
    and agrees with torch's batch norm to bfloat16's precision."""
    ref, ours = net(torch.float32), net(torch.float32)
    use_compiled_batch_norm(ours)
    x = torch.randn(8, 3, 7, 7) * 2 + 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ref, out = ref[:3](x), ours[:3](x)
    assert out.dtype == out_ref.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), out_ref.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "setup",
    ["eval", "no_grad", "inference_mode", "momentum_none", "no_affine", "no_running_stats",
     "one_value", "bf16_model"],
)  # fmt: skip
def test_other_settings_run_torch_batch_norm_unchanged(setup):
    """Evaluation, no_grad and the settings the fast path does not implement give exactly
    nn.BatchNorm2d's result (and its error for one value per channel)."""
    kwargs = {
        "momentum_none": {"momentum": None},
        "no_affine": {"affine": False},
        "no_running_stats": {"track_running_stats": False},
    }.get(setup, {})
    torch.manual_seed(1)
    dtype = torch.bfloat16 if setup == "bf16_model" else torch.float64
    ref = nn.BatchNorm2d(4, **kwargs).to(dtype)
    if setup == "eval":
        ref.running_mean.uniform_(-1, 1)
        ref.eval()
    ours = copy.deepcopy(ref)
    use_compiled_batch_norm(ours)
    x = torch.randn(1 if setup == "one_value" else 5, 4, 1 if setup == "one_value" else 3, 3)
    x = x.to(dtype).requires_grad_()
    if setup == "one_value":
        x = x[:, :, :1, :1]
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            ours(x)
        return
    if setup == "inference_mode":
        with torch.inference_mode():
            out_ref, out = ref(x.detach()), ours(x.detach())
    else:
        with torch.set_grad_enabled(setup != "no_grad"):
            out_ref, out = ref(x), ours(x)
    assert torch.equal(out, out_ref)
    assert out.grad_fn is None or OURS not in type(out.grad_fn).__name__
    for key, value in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_swap_skips_subclasses_and_restores():
    class Custom(nn.BatchNorm2d):
        pass

    model = nn.Sequential(nn.BatchNorm2d(3), Custom(3), nn.Sequential(nn.BatchNorm2d(3)))
    keys = list(model.state_dict())
    with batch_norm_for_compile(model) as changed:
        assert changed == [model[0], model[2][0]]
        assert type(model[0]) is BatchNorm2dForCompile and type(model[1]) is Custom
        assert use_compiled_batch_norm(model) == []  # already swapped: not twice
        assert list(model.state_dict()) == keys
    assert not any(type(m) is BatchNorm2dForCompile for m in model.modules())
    restore_batch_norm(changed)  # twice is harmless


@pytest.mark.parametrize("enabled", [True, False])
def test_compile_callback_swaps_batch_norm_for_the_fit_only(monkeypatch, enabled):
    """The Compile callback trains BatchNorm2d through the compiled-path batch norm during
    the fit (and not with batch_norm=False); after the fit the module is torch's again."""
    fake_compile(monkeypatch, lambda x: None)
    x, y = toy_data(32)
    model = toy_net(bn=True)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    seen = []

    class Look(Callback):
        def after_batch(self):
            seen.append(all(type(bn) is BatchNorm2dForCompile for bn in bns))

    learn = Learner(model, batches(x, y, 8), None, progress=False,
                    cbs=[Compile(batch_norm=enabled), Look()])  # fmt: skip
    learn.fit(1)
    assert seen == [enabled] * 4
    assert not any(type(bn) is BatchNorm2dForCompile for bn in bns)


@pytest.mark.slow
def test_compiled_training_matches_torch_batch_norm():
    """Through torch.compile (inductor's C++ kernels): two training steps of the swapped
    model give torch's eager nn.BatchNorm2d outputs, gradients and running statistics."""
    ref, ours = net(torch.float32), net(torch.float32)
    compiled = torch.compile(ours)
    with batch_norm_for_compile(ours):
        for step in range(2):
            x = torch.randn(16, 3, 9, 9) * 2 + step
            out_ref, out = ref(x), compiled(x)
            torch.testing.assert_close(out, out_ref, rtol=1e-4, atol=1e-4)
            g = torch.randn_like(out_ref)  # (a plain sum has no gradient through BatchNorm)
            out_ref.backward(g)
            out.backward(g)
            for name, grad in grads(ref).items():
                torch.testing.assert_close(grads(ours)[name], grad, rtol=1e-3, atol=1e-4)
            ref.zero_grad(), ours.zero_grad()
    torch.testing.assert_close(ours.state_dict(), ref.state_dict(), rtol=1e-5, atol=1e-6)


def test_compile_callback_keeps_torch_batch_norm_on_a_gpu(monkeypatch):
    """The code-generation problem is the CPU's: on another device (a stand-in Learner on
    "cuda", no GPU needed) the Compile callback leaves torch's batch norm in place."""
    fake_compile(monkeypatch, lambda x: None)
    model = toy_net(bn=True)
    callback = Compile()
    callback.learn = SimpleNamespace(device=torch.device("cuda"), model=model, forward_model=model)
    callback.before_fit()
    assert not any(type(m) is BatchNorm2dForCompile for m in model.modules())
    callback.cleanup_fit()
    callback.learn.device = torch.device("cpu")  # the same stand-in on the CPU: swapped
    callback.before_fit()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(type(m) is BatchNorm2dForCompile for m in bns)
    callback.cleanup_fit()
    assert all(type(m) is nn.BatchNorm2d for m in bns)


def test_float32_statistics_survive_a_large_mean():
    """The variance comes from one pass of sums; with values 300 +- 0.05 (mean / std = 6,000)
    plain float32 sums of x and x^2 would lose it to cancellation. Output and running
    variance against torch's batch norm in float64."""
    torch.manual_seed(0)
    x = 300 + 0.05 * torch.randn(16, 3, 6, 6, dtype=torch.float64)
    ref = nn.BatchNorm2d(3, momentum=1.0).double()
    ours = nn.BatchNorm2d(3, momentum=1.0)
    use_compiled_batch_norm(ours)
    out_ref, out = ref(x), ours(x.float().requires_grad_())
    torch.testing.assert_close(out.double(), out_ref, rtol=0, atol=2e-3)
    torch.testing.assert_close(ours.running_var.double(), ref.running_var, rtol=1e-3, atol=0)


def test_the_registered_op_passes_torch_opcheck():
    """The op's schema, fake (shape) implementation and registration, as torch checks them
    (what inductor relies on when it calls the op instead of fusing it)."""
    c = 5
    for dtype in (torch.float32, torch.float64):
        args = [torch.randn(c, dtype=dtype) for _ in range(2)] + [
            torch.rand(c, dtype=dtype) * 10, torch.rand(c, dtype=dtype), torch.randn(c, dtype=dtype)
        ]  # fmt: skip
        torch.library.opcheck(torch.ops.reslab.bn_stats_to_affine, (*args, 7, 1e-5))


def test_a_new_batch_size_does_not_add_graphs_beyond_torchs():
    """Dynamo's graphs for batches of 8, 6, 5, 4 and 3: no more than for torch's batch norm
    (a per-batch-size constant in the graph would recompile for each, up to dynamo's limit,
    after which the model silently runs eagerly)."""
    graphs = {}
    for side in ("torch", "reslab"):
        count = [0]

        def backend(gm, example_inputs, count=count):
            count[0] += 1
            return gm.forward

        torch._dynamo.reset()
        model = net(torch.float32)
        if side == "reslab":
            use_compiled_batch_norm(model)
        compiled = torch.compile(model, backend=backend)
        for batch in (8, 6, 5, 4, 3):
            compiled(torch.randn(batch, 3, 7, 7)).sum().backward()
        graphs[side] = count[0]
    torch._dynamo.reset()
    assert graphs["reslab"] <= graphs["torch"] <= 3, graphs


def test_double_backward_is_refused_not_wrong():
    """The backward treats the batch statistics as constants: a second derivative would be
    wrong, so it is an error (torch's own batch norm supports it: use that for gradient
    penalties)."""
    model = net()
    use_compiled_batch_norm(model)
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        grad.sum().backward()


def test_bf16_autocast_training_step_matches_torch():
    """Under CPU autocast: the gradients of the BatchNorm parameters and of the input, and the
    running statistics, agree with torch's batch norm to bfloat16's precision."""
    ref, ours = net(torch.float32), net(torch.float32)
    use_compiled_batch_norm(ours)
    x = torch.randn(8, 3, 7, 7) * 2 + 1
    xs = [x.clone().requires_grad_() for _ in range(2)]
    for model, xi in zip((ref, ours), xs, strict=True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(xi)
        out.float().mul(torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    torch.testing.assert_close(xs[1].grad, xs[0].grad, rtol=3e-2, atol=3e-2)
    for name, grad in grads(ref).items():
        torch.testing.assert_close(grads(ours)[name], grad, rtol=3e-2, atol=3e-2, msg=name)
    for key in ("1.running_mean", "1.running_var", "4.running_mean", "4.running_var"):
        torch.testing.assert_close(ours.state_dict()[key], ref.state_dict()[key], rtol=1e-5,
                                   atol=1e-6, msg=key)  # fmt: skip


def test_a_copy_or_pickle_made_during_the_swap_loads_and_computes_the_same():
    """A user's callback may deepcopy or pickle the model mid-fit: the copy keeps the class,
    which unpickles and computes what nn.BatchNorm2d does."""
    ref, ours = net(), net()
    with batch_norm_for_compile(ours):
        copied = pickle.loads(pickle.dumps(ours))  # (our own object: a trusted pickle)
        deep = copy.deepcopy(ours)
    x = torch.randn(6, 3, 7, 7, dtype=torch.float64)
    expected = ref(x)
    for model in (copied, deep):
        assert type(model[1]) is BatchNorm2dForCompile
        torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-10)
