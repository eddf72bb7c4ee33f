"""PyTorch's program tools on reslab's models, in timm's style: parametrised over the registry.

torch.fx (and torchvision's feature extraction, checked against forward hooks), TorchScript,
torch.export with a dynamic batch and torch.compile(fullgraph=True) must each give the eager
model's outputs; torch.hub must load from the local checkout. Inputs are small and odd-sized
(36x44: ceil-mode pooling and option-A subsampling meet odd sides), and the ImageNet nets with
50 or more bottleneck layers are built at a quarter width: the tools see the same graph, and
building them is 10x faster.

Default run: FX and feature extraction on every model (ResNet-1202: FX only); TorchScript and
torch.export on one model of each code path (REPRESENTATIVE); torch.compile with the
``aot_eager`` backend (Dynamo's full-graph capture and AOTAutograd, exact). ``-m slow`` adds
TorchScript and torch.export on every other model, ResNet-1202's feature extraction and
torch.compile with inductor.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

import reslab
from conftest import REPO
from reslab.models import BasicBlock, Bottleneck, get_model_spec
from reslab.weights import WeightsError

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # torch.jit is deprecated in 2.14
]

MODELS = reslab.list_models()
# One model per code path: basic / bottleneck / grouped blocks; conv, avg-pool, option-A and no
# shortcuts; the 7x7, deep and small-input stems.
REPRESENTATIVE = ("resnet18", "resnext50_32x4d", "resnet26d", "resnet20", "plain20")
SHAPE = (2, 3, 36, 44)


def is_big(name: str) -> bool:
    """The ImageNet bottleneck nets of 50 layers or more (25-127 M parameters)."""
    arch = get_model_spec(name).arch
    return arch.get("block") == "bottleneck" and sum(arch["layers"]) >= 16


def build(name: str, layers: str = "torch", **overrides) -> torch.nn.Module:
    """A registered model in eval mode, residual branches scaled so that even ResNet-1202's
    logits stay finite at random init (its 600 blocks would overflow to inf otherwise)."""
    if "width" not in overrides and is_big(name):
        overrides["width"] = 0.25
    model = reslab.create_model(name, layers=layers, **overrides).eval()
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck)) and m.residual]
    with torch.no_grad():
        for block in blocks:
            block.last_bn().weight.fill_(1 / math.sqrt(len(blocks)))
    return model


def assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def every_model(default: tuple[str, ...] | None = None, slow: tuple[str, ...] = ()) -> list:
    """All registered models; those outside ``default`` (or in ``slow``) only with -m slow."""
    marks = pytest.mark.slow
    return [
        pytest.param(n, marks=marks) if (default and n not in default) or n in slow else n
        for n in MODELS
    ]


def eager(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def hooked_outputs(model: torch.nn.Module, names: list[str], x: torch.Tensor) -> dict:
    """Outputs of the named submodules, recorded with forward hooks (the reference)."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: seen.__setitem__(n, out)
        )
        for n in names
    ]
    try:
        eager(model, x)
    finally:
        for h in handles:
            h.remove()
    return seen


def export_dynamic_batch(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    dims = ({0: torch.export.Dim("batch", min=1)},)
    return torch.export.export(model, (x,), dynamic_shapes=dims).module()


# ----------------------------------------------------------------------------- torch layers
@pytest.mark.parametrize("name", every_model(slow=("resnet1202",)))
def test_fx_trace_and_feature_extraction_match_eager(name):
    model = build(name)
    x = torch.rand(SHAPE)
    expected = eager(model, x)
    assert_same(eager(torch.fx.symbolic_trace(model), x), expected)

    first, last = model.stage_names[1], model.stage_names[-1]
    inner = "conv2" if hasattr(model.get_submodule(f"{last}.0"), "conv2") else "conv1"
    nodes = ["maxpool", first, last, f"{last}.0.{inner}", "flatten", "fc"]
    train_nodes, eval_nodes = get_graph_node_names(model)
    for node in nodes:
        assert any(n == node or n.startswith(node + ".") for n in eval_nodes), node
    assert train_nodes == eval_nodes  # no train-only branches (drop path is off)
    got = eager(create_feature_extractor(model, {n: n for n in nodes}), x)
    hooked = hooked_outputs(model, nodes, x)
    for node in nodes:
        assert_same(got[node], hooked[node])
    assert_same(got["fc"], expected)


def test_fx_trace_of_the_deepest_model_matches_eager():
    """ResNet-1202 (1,800 graph nodes); its feature extraction alone takes 30 s (-m slow)."""
    model = build("resnet1202")
    x = torch.rand(SHAPE)
    assert_same(eager(torch.fx.symbolic_trace(model), x), eager(model, x))


@pytest.mark.parametrize("name", ["resnet18", "resnet50d", "resnet20"])
def test_feature_extraction_of_a_residual_sum(name):
    """A functional node (``layer1.0.add``): the sum before the block's last ReLU."""
    model = build(name)
    block = model.get_submodule(f"{model.stage_names[0]}.0")
    assert f"{model.stage_names[0]}.0.add" in get_graph_node_names(model)[1]
    relu_inputs = []  # cloned: the ReLU works in place
    hook = block.relu.register_forward_pre_hook(lambda _m, a: relu_inputs.append(a[0].clone()))
    x = torch.rand(SHAPE)
    eager(model, x)
    hook.remove()
    node = f"{model.stage_names[0]}.0.add"
    assert_same(eager(create_feature_extractor(model, [node]), x)[node], relu_inputs[-1])


@pytest.mark.parametrize("name", every_model(REPRESENTATIVE))
def test_torchscript_matches_eager(name):
    model = build(name)
    x = torch.rand(SHAPE)
    assert_same(eager(torch.jit.script(model), x), eager(model, x))


@pytest.mark.parametrize("name", every_model(REPRESENTATIVE))
def test_export_with_dynamic_batch_matches_eager(name):
    model = build(name)
    exported = export_dynamic_batch(model, torch.rand(SHAPE))
    for batch in (3, 1):
        x = torch.rand(batch, *SHAPE[1:])
        assert_same(eager(exported, x), eager(model, x))


COMPILED = [(n, "torch") for n in ("resnet18", "resnext50_32x4d", "resnet20", "resnet26d")] + [
    ("resnet20", "scratch")
]


def check_compile(name: str, layers: str, backend: str) -> None:
    torch._dynamo.reset()  # each model recompiles the shared block code; stay under the limit
    model = build(name, layers)
    x = torch.rand(SHAPE)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    assert_same(eager(compiled, x), eager(model, x))


@pytest.mark.parametrize(("name", "layers"), COMPILED)
def test_compile_fullgraph_matches_eager(name, layers):
    check_compile(name, layers, "aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "layers"), COMPILED)
def test_compile_fullgraph_inductor_matches_eager(name, layers):
    check_compile(name, layers, "inductor")


def test_wrong_channel_count_keeps_its_message_under_every_tool():
    model = build("resnet20", in_chans=1)
    wrong = torch.rand(2, 3, 32, 32)
    message = r"expected images of shape \(N, 1, H, W\), got \(2, 3, 32, 32\)"
    with pytest.raises(ValueError, match=message):
        model(wrong)
    with pytest.raises(ValueError, match=message):
        torch.fx.symbolic_trace(model)(wrong)
    with pytest.raises(ValueError, match=message):
        create_feature_extractor(model, ["layer2"])(wrong)
    with pytest.raises(torch.jit.Error, match=r"ValueError: expected images of shape \(N, 1,"):
        torch.jit.script(model)(wrong)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match=message):
        torch.compile(model, backend="aot_eager")(wrong)


def test_backbone_traces_scripts_and_exports():
    model = build("resnet26d")
    backbone = model.backbone
    x = torch.rand(SHAPE)
    expected = eager(model, x)
    embedding = eager(backbone, x)
    assert_same(model.fc(embedding), expected)
    assert_same(eager(torch.fx.symbolic_trace(backbone), x), embedding)
    assert_same(eager(torch.jit.script(backbone), x), embedding)
    assert_same(eager(export_dynamic_batch(backbone, x), x), embedding)


def test_drop_path_and_batch_statistics_in_training_mode():
    """Training mode: the same random drops for the same seed, the same BN buffer updates."""
    x = torch.rand(8, 3, 32, 32)
    for convert in (torch.fx.symbolic_trace, torch.jit.script):
        model = build("resnet20", drop_path_rate=0.5).train()
        converted = convert(copy.deepcopy(model))  # both share the model's tensors otherwise
        torch.manual_seed(1)
        expected = model(x)
        torch.manual_seed(1)
        torch.testing.assert_close(converted(x), expected)
        converted_state = converted.state_dict()
        for key, value in model.state_dict().items():
            torch.testing.assert_close(converted_state[key], value)
        torch.manual_seed(2)
        assert not torch.allclose(model(x), expected)  # the drops are random


# ----------------------------------------------------------------------------- scratch layers
@pytest.mark.parametrize("name", ["resnet20", "resnet26d"])
def test_scratch_fx_trace_and_feature_extraction(name):
    model = build(name, "scratch")
    x = torch.rand(SHAPE)
    assert_same(eager(torch.fx.symbolic_trace(model), x), eager(model, x))
    first, last = model.stage_names[1], model.stage_names[-1]
    nodes = [first, last, f"{last}.0.conv2", "flatten"]
    got = eager(create_feature_extractor(model, nodes), x)
    expected = hooked_outputs(model, nodes, x)
    for node in nodes:
        assert_same(got[node], expected[node])


def test_scratch_torchscript_is_refused_with_the_reason():
    model = build("resnet20", "scratch")
    with pytest.raises(RuntimeError, match="from-scratch Conv2d cannot be scripted: its op"):
        torch.jit.script(model)


@pytest.mark.parametrize("name", ["resnet20", pytest.param("resnet26d", marks=pytest.mark.slow)])
def test_scratch_export_with_dynamic_batch_matches_eager(name):
    model = build(name, "scratch")
    exported = export_dynamic_batch(model, torch.rand(SHAPE))
    x = torch.rand(3, *SHAPE[1:])
    assert_same(eager(exported, x), eager(model, x))


# ----------------------------------------------------------------------------- torch.hub
def test_hub_loads_shipped_weights_from_the_local_checkout():
    hub = torch.hub.load(str(REPO), "resnet20", source="local", pretrained="reslab-fashion-mnist")
    direct = reslab.create_model("resnet20", pretrained="reslab-fashion-mnist")
    assert hub.config == direct.config
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(eager(hub.eval(), x), eager(direct.eval(), x), rtol=0, atol=0)


def test_hub_lists_every_registered_model(tmp_path, monkeypatch):
    # torch.hub.list reads GitHub repositories only; a cached copy is used as it is, offline.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "reslab_reslab_main").symlink_to(REPO)
    entries = torch.hub.list("reslab/reslab:main", trust_repo=True, skip_validation=True)
    assert sorted(entries) == sorted(MODELS)
    doc = torch.hub.help("reslab/reslab:main", "resnet20", trust_repo=True, skip_validation=True)
    assert "reslab-fashion-mnist" in doc


def test_the_calls_hubconf_documents_run_as_written():
    """The code block at the top of hubconf.py's docstring, run with this checkout's path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("reslab_hubconf", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    block = []
    for line in hubconf.__doc__.splitlines()[1:]:
        if block and not line.startswith("    "):
            break
        if line.startswith("    "):
            block.append(line[4:])
    assert block and block[0] == "import torch", block
    scope: dict = {}
    exec("\n".join(block).replace("path/to/reslab", str(REPO)), scope)
    direct = reslab.create_model("resnet20", pretrained="reslab-fashion-mnist").eval()
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(eager(scope["model"].eval(), x), eager(direct, x), rtol=0, atol=0)
    assert sorted(scope["names"]) == sorted(MODELS)
    assert all(callable(getattr(hubconf, name)) for name in scope["names"])


@pytest.mark.parametrize(
    ("name", "pretrained", "error", "message"),
    [
        ("resnet20", "nope", WeightsError, "not a weights file, URL or tag of resnet20 .its tags"),
        ("resnet20", True, ValueError, "several weights, pass one: pretrained=reslab-fashion"),
        ("resnet1202", True, ValueError, "resnet1202 has no pretrained weights"),
    ],
)
def test_hub_bad_pretrained_is_a_clear_error(name, pretrained, error, message):
    with pytest.raises(error, match=message):
        torch.hub.load(str(REPO), name, source="local", pretrained=pretrained)


def test_hub_from_a_plain_checkout_imports_its_src(tmp_path):
    """No PYTHONPATH: hubconf puts the checkout's src/ first (ahead of any installed reslab)."""
    code = (
        "import torch\n"
        f"m = torch.hub.load({str(REPO)!r}, 'resnet20', source='local', "
        "pretrained='reslab-fashion-mnist')\n"
        "import reslab\n"
        "print(reslab.__file__, m.config.pretrained)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    path, pretrained = done.stdout.split()
    assert path == str(REPO / "src" / "reslab" / "__init__.py")
    assert pretrained == "resnet20@reslab-fashion-mnist"
