"""Issue 13 item 2: no import cycle in src/mindvis, and the layers import downward only.

Every module is parsed with `ast` (nothing is imported), and every `import` / `from ... import`
is an edge, at module level AND inside functions: an import moved into a function still
ties the two modules together, so it may not close a cycle or climb a layer either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layer of each top-level package of mindvis, lowest first. A module may import its own
# package and any package of a LOWER layer; never one of its own layer or higher. Read from the
# code as it stands after issue 13 item 2:
#   utils        errors, atomic writes, seeding, device/threads, image grids: import nothing above them
#   io, config, metrics   file readers, the config loader, metrics shared by training and evaluation
#   tracking     MLflow runs (reads config)
#   data         datasets, MinD-Vis conventions, (fMRI, image) pairs (reads io)
#   preprocess   raw releases -> the npz files data reads; simulate writes raw-release look-alikes
#   models       SC-MBM and the DC-LDM (use data's conventions)
#   checkpoints  our and MinD-Vis's checkpoint files (build models)
#   training -> generation -> evaluation (incl. the HTML report) -> cli, the order
LAYERS: dict[str, int] = {
    "": 0,  # mindvis/__init__.py (the version)
    "utils": 0,
    "io": 1,
    "config": 1,
    "metrics": 1,
    "tracking": 2,
    "data": 3,
    "preprocess": 4,
    "simulate": 5,
    "models": 6,
    "checkpoints": 7,
    "training": 8,
    "generation": 9,
    "evaluation": 10,
    "cli": 11,
    "__main__": 12,
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted((SRC / "mindvis").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _targets(module: str, is_package: bool, node: ast.AST, modules: dict) -> list[str]:
    """The mindvis modules one import statement names (a from-import of a submodule names the submodule)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, one level up per extra dot
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[:len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = []
    for name in names:
        if name.split(".")[0] != "mindvis":
            continue
        while name not in modules and "." in name:  # `import mindvis.x.y.attr` -> the module mindvis.x.y
            name = name.rsplit(".", 1)[0]
        out.append(name)
    return out


def import_graph() -> dict[str, list[tuple[str, int]]]:
    """module -> [(imported module, line)], every import statement anywhere in the file."""
    modules = _modules()
    graph = {}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = []
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges += [(t, node.lineno) for t in _targets(name, is_package, node, modules) if t != name]
        graph[name] = edges
    return graph


def layer_of(module: str) -> tuple[str, int]:
    parts = module.split(".")
    package = parts[1] if len(parts) > 1 else ""
    if package not in LAYERS:
        raise KeyError(f"{module}: package '{package}' has no layer in LAYERS; add it there")
    return package, LAYERS[package]


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for target, _ in edges:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph.get(target, []))))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


GRAPH = import_graph()


def test_the_graph_sees_function_level_imports():
    # generation/__init__ imports the pairs loader at module level; the report's CLI imports lazily
    assert any(t == "mindvis.data.pairs" for t, _ in GRAPH["mindvis.generation"])
    assert GRAPH["mindvis.cli.registry"] == [] and len(GRAPH) > 100


def test_no_import_cycle():
    found = cycles(GRAPH)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_package_has_a_layer():
    for module in GRAPH:
        layer_of(module)


def test_layers_import_downward_only():
    upward = []
    for module, edges in GRAPH.items():
        package, rank = layer_of(module)
        for target, line in edges:
            target_package, target_rank = layer_of(target)
            if target_package != package and target_rank >= rank:
                upward.append(f"{module}:{line} imports {target} ({package}={rank} -> {target_package}={target_rank})")
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("from .b import c\n", ["mindvis.b"]),  # relative, resolved from the package; c is not a module
    ("from . import b\n", ["mindvis.b"]),  # a submodule by from-import
    ("import mindvis.b.c\n", ["mindvis.b"]),  # an attribute path ends at the module
    ("import numpy\n", []),  # outside mindvis: no edge
])
def test_targets_resolve_relative_and_dotted_imports(source, expected):
    modules = {"mindvis": None, "mindvis.a": None, "mindvis.b": None}
    assert _targets("mindvis.a", False, ast.parse(source).body[0], modules) == expected


def test_cycle_finder_on_a_small_graph():
    graph = {"a": [("b", 1)], "b": [("c", 1)], "c": [("a", 1)], "d": [("a", 1)]}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": [("b", 1)], "b": []}) == []
