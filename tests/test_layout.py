"""The package's architecture rules, read from the source with ``ast``.

- imports between rooms flow one way (cli → recipes/analysis/inference → transfer →
  training → weights/data → models → layers → ops, with files at the bottom and the run
  folders' owner, runs, just above it);
- no import cycle between modules, counting imports inside functions;
- no private (``_name``) name imported from another module;
- no file over 400 lines and no function over 80 lines.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "reslab"

# A room may import rooms of a lower rank (and itself). Rooms of equal rank are independent.
RANK = {
    "version": 0,
    "files": 0,
    "ops": 1,
    "runs": 1,
    "layers": 2,
    "models": 3,
    "data": 4,
    "weights": 4,
    "training": 5,
    "transfer": 6,
    "recipes": 7,
    "analysis": 7,
    "inference": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in PACKAGE.rglob("*.py")}


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> list[tuple[str, list[str], int]]:
    """``(imported module, imported names, line)`` for every reslab import, at any depth."""
    found = []
    package = name if MODULES[name][0].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("reslab"):
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if not base.startswith("reslab"):
                continue
            names = [a.name for a in node.names]
            # ``from reslab.x import y`` may name a submodule y.
            subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            plain = [n for n in names if f"{base}.{n}" not in MODULES]
            if plain:
                found.append((base, plain, node.lineno))
            found.extend((s, [], node.lineno) for s in subs)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_room_has_a_rank():
    rooms = {_room(m) for m in MODULES}
    assert rooms <= set(RANK), f"rooms without a rank: {sorted(rooms - set(RANK))}"


def test_imports_between_rooms_flow_one_way():
    wrong = []
    for name, (path, tree) in MODULES.items():
        mine = _room(name)
        for target, _, line in _imports(name, tree):
            theirs = _room(target)
            if theirs != mine and RANK[theirs] >= RANK[mine]:
                wrong.append(f"{path.relative_to(SRC)}:{line} ({mine}) imports {target}")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_no_import_cycles_counting_function_level_imports():
    graph: dict[str, set[str]] = defaultdict(set)
    for name, (_, tree) in MODULES.items():
        for target, _, _ in _imports(name, tree):
            if target in MODULES and target != name:
                graph[name].add(target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_private_names_cross_modules():
    wrong = []
    for name, (path, tree) in MODULES.items():
        for target, names, line in _imports(name, tree):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in target.split(".") if p.startswith("_") and p != "__main__"]
            if private and target != name:
                wrong.append(f"{path.relative_to(SRC)}:{line} imports {private} from {target}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.name))
def test_files_and_functions_stay_small(path):
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_FILE_LINES, f"{path.relative_to(SRC)}: {lines} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(SRC)}: {long}"


def test_the_checks_can_fail(tmp_path):
    # The cycle finder and the flow rule, on a made-up graph and room pair.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert RANK[_room("reslab.models.resnet")] < RANK[_room("reslab.weights.load")]
