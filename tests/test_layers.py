"""Import layering: the store imports nothing above it, and no module imports itself back.

Every import statement counts, wherever it stands (inside a function, under
``TYPE_CHECKING``): a dependency is a dependency. The policy that used to sit in the store
(merge and supersede, node keys and resolution, the query language) lives above it, and these
tests keep it there.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import memori_cli

PACKAGE = Path(memori_cli.__file__).resolve().parent
NAME = "memori_cli"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [NAME, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def imports(module: str, source: str | None = None) -> set[str]:
    """The memori_cli modules ``module`` imports (``from pkg import name`` counts as the
    submodule ``pkg.name`` when there is one, else as ``pkg``); ``source`` stands in for the
    module's file."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{alias.name}" for alias in node.names]
            targets = [s for s in subs if s in MODULES]
            if len(targets) < len(subs):
                targets.append(target)
        for target in targets:
            # `import a.b.c` depends on the deepest module of the name that exists.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.add(target)
    return out


GRAPH = {module: imports(module) for module in MODULES}


def _in_store(module: str) -> bool:
    return module == f"{NAME}.store" or module.startswith(f"{NAME}.store.")


#: What the store may import besides itself: pure values, errors, paths. Each of these
#: imports nothing but the others (checked below), so none of them reaches above the store.
BELOW_STORE = {f"{NAME}.{m}" for m in ("_version", "errors", "paths", "parts", "dates")}


def test_the_walk_sees_imports_of_every_kind() -> None:
    # The checks below are only as good as this walk: relative, absolute, `from package
    # import module`, function-level and TYPE_CHECKING imports all count.
    source = """
from typing import TYPE_CHECKING
from .core import Store
from .. import recall
import memori_cli.augment.pipeline
if TYPE_CHECKING:
    from ..memori import Memori
def later():
    from ..graph import Graph
"""
    assert imports(f"{NAME}.store.memories", source) == {
        f"{NAME}.store.core", f"{NAME}.recall", f"{NAME}.augment.pipeline", f"{NAME}.memori",
        f"{NAME}.graph",
    }  # fmt: skip
    assert f"{NAME}.store.core" in GRAPH[f"{NAME}.store.memories"]
    assert f"{NAME}.graph.keys" in GRAPH[f"{NAME}.recall.query"]


def test_the_store_imports_nothing_above_it() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if _in_store(module)
        for target in targets
        if not _in_store(target) and target not in BELOW_STORE
    )
    assert upward == []


def test_what_the_store_imports_is_below_it() -> None:
    present = BELOW_STORE & set(MODULES)
    assert {f"{NAME}.parts", f"{NAME}.errors"} <= present
    assert {m: sorted(GRAPH[m] - BELOW_STORE) for m in present if GRAPH[m] - BELOW_STORE} == {}


#: Policy, by the module above the store that owns it.
POLICY = {
    "augment.resolve": ["MERGE_SIMILARITY", "save", "save_memory", "save_triple", "add_memory"],
    "graph.keys": ["node_key", "alias_key"],
    "graph.resolve": ["SIMILAR", "resolve", "unknown_names", "find_node"],
    "recall.query": ["STOPWORDS", "MAX_TERMS", "match_expression", "node_keys_in", "nodes_in"],
}


@pytest.mark.parametrize("layer", sorted(POLICY))
def test_policy_lives_above_the_store_and_not_in_it(layer: str) -> None:
    module = importlib.import_module(f"{NAME}.{layer}")
    assert [name for name in POLICY[layer] if not hasattr(module, name)] == []
    in_store = {
        name
        for path in (PACKAGE / "store").rglob("*.py")
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        for name in _defined(node)
    }
    # The store keeps primitives (find_same, insert_memory, lexical_messages, ...) under
    # other names; a policy name showing up there means the policy came back.
    assert sorted(set(POLICY[layer]) & in_store - {"save"}) == []


def _defined(node: ast.stmt) -> list[str]:
    """The names a top-level statement defines."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    assert cycles == []


def test_every_package_is_in_the_wheel() -> None:
    # pyproject.toml lists packages by name (the daemon installs under another name), so a
    # new package folder (graph/, store/sqlite/) is left out of the wheel unless listed.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib  # type: ignore[import-not-found]
    pyproject = PACKAGE.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("memori_cli is installed, not run from its source tree")
    listed = set(
        tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    )
    packages = {m for m, path in MODULES.items() if path.name == "__init__.py"}
    assert sorted(packages - listed) == []
