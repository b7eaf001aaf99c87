"""The package is a staircase: no import cycle, and no import from a lower layer to a higher one, imports
inside functions included. The layers are the list in docs/architecture.md, read here."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "polymodal"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def layers_from_docs(text: str) -> dict[str, int]:
    """Module or package name (relative to `polymodal`, "" for its `__init__`) → its layer (1 = lowest), from
    the numbered list between the `layers:start` and `layers:end` markers."""
    block = text.split("<!-- layers:start -->", 1)[1].split("<!-- layers:end -->", 1)[0]
    layers = {}
    for number, line in re.findall(r"^(\d+)\. (.*)$", block, flags=re.M):
        names = re.findall(r"`([\w.]+)`", line.split(":", 1)[0])
        for name in names:
            layers["" if name == "polymodal" else name] = int(number)
    return layers


def module_name(path: Path) -> str:
    """`polymodal.a.b` for src/polymodal/a/b.py and src/polymodal/a/b/__init__.py."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The `polymodal` modules `path` imports anywhere in it (functions included), with the packages
    Python runs on the way (importing `polymodal.a.b` from outside `polymodal.a` runs `polymodal.a`)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            if not target.startswith("polymodal"):
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way, unless `name` is inside them
                step = ".".join(parts[:i])
                if step in modules and step != name and not (name + ".").startswith(step + "."):
                    found.add(step)
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) for name, path in paths.items()}


def layer_of(module: str, layers: dict[str, int]) -> int | None:
    """The layer of the longest listed name that is `module` or a package holding it."""
    relative = module.removeprefix("polymodal").removeprefix(".")
    candidates = [n for n in layers if relative == n or (n and relative.startswith(n + "."))]
    return layers[max(candidates, key=len)] if candidates else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_in_a_circle():
    assert cycles(graph()) == []


def test_no_module_imports_from_a_higher_layer():
    layers = layers_from_docs(ARCHITECTURE.read_text())
    edges = graph()
    unlisted = sorted(m for m in edges if layer_of(m, layers) is None)
    assert not unlisted, f"modules in no layer of docs/architecture.md: {unlisted}"
    upward = [f"{a} (layer {layer_of(a, layers)}) imports {b} (layer {layer_of(b, layers)})"
              for a, targets in sorted(edges.items()) for b in sorted(targets)
              if layer_of(b, layers) > layer_of(a, layers)]
    assert upward == []


def test_the_scan_sees_imports_inside_functions_and_the_packages_on_the_way(tmp_path, monkeypatch):
    """The checker itself: a function-level import and a package's `__init__` count as edges."""
    package = tmp_path / "polymodal"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("from . import leaf\n")
    (package / "low" / "leaf.py").write_text("def f():\n    from ..high import g\n")
    (package / "high.py").write_text("from .low.leaf import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    edges = graph()
    assert edges["polymodal.low.leaf"] == {"polymodal.high"}
    assert edges["polymodal.high"] == {"polymodal.low", "polymodal.low.leaf"}
    assert cycles(edges) == [["polymodal.high", "polymodal.low", "polymodal.low.leaf"]]
    layers = layers_from_docs("<!-- layers:start -->\n1. `low`: below\n2. `high`, `polymodal`: above\n"
                              "<!-- layers:end -->")
    assert layers == {"low": 1, "high": 2, "": 2}
    assert layer_of("polymodal.low.leaf", layers) == 1 and layer_of("polymodal", layers) == 2


@pytest.mark.parametrize("name", ["errors", "runfolder", "metrics", "distributed"])
def test_the_leaf_helpers_import_nothing_above_the_config(name):
    edges = graph()
    assert edges[f"polymodal.{name}"] <= {"polymodal.errors", "polymodal.config"}


def test_loading_a_model_for_inference_never_imports_the_trainer():
    import subprocess

    code = ("import sys, polymodal, polymodal.api; "
            "print(sorted(m for m in sys.modules if m.startswith(('polymodal.training', 'polymodal.builders')))); "
            "print(type(polymodal.build).__name__, type(polymodal.train).__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    modules, functions = done.stdout.splitlines()
    loaded = eval(modules)
    assert loaded and not [m for m in loaded if m.startswith("polymodal.training")], loaded
    # the package's own functions stay functions: no submodule of that name takes their place once imported
    assert functions == "function function"
