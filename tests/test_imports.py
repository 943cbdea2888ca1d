"""The shape of the package: no import cycle among zoo_core modules (imports inside functions count too),
and every module docs/ARCHITECTURE.md names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import zoo_core

ZOO_CORE = Path(zoo_core.__file__).parent
ARCHITECTURE = ZOO_CORE.parent / "docs" / "ARCHITECTURE.md"


def module_files(root: Path = ZOO_CORE) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the package at ``root``."""
    return {".".join((root.name, *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
            for p in root.rglob("*.py")}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (never run, so never part of a cycle)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that module ``name`` (file ``path``) imports anywhere in its code: at module
    level or inside a function, absolute or relative; ``from p import x`` imports the module ``p.x`` when
    there is one, else ``p``; importing a module imports its parent packages too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            out |= {f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names}
    with_parents = {".".join(m.split(".")[:i]) for m in out for i in range(1, m.count(".") + 2)}
    return with_parents & modules


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module → the modules it imports, leaving out its own parent packages (they load before it anyway)."""
    return {m: {d for d in imported_modules(p, m, set(files)) if d != m and not m.startswith(d + ".")}
            for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for d in sorted(graph[m]):
            if d not in index:
                visit(d)
                low[m] = min(low[m], low[d])
            elif d in stack:
                low[m] = min(low[m], index[d])
        if low[m] == index[m]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == m:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return sorted(found)


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest import path from ``start`` back to itself (``[]`` when there is none)."""
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for d in sorted(graph[path[-1]]):
            if d == start:
                return path + [start]
            if d not in seen:
                seen.add(d)
                paths.append(path + [d])
    return []


def test_cycles_finds_each_circle_once_and_nothing_in_a_tree() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}, "g": {"a", "e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert shortest_cycle(graph, "c") == ["c", "a", "b", "c"] and shortest_cycle(graph, "g") == []
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_imports_inside_functions_and_relative_ones_are_read(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import inner\n")
    (pkg / "sub" / "inner.py").write_text("def f():\n    from ..top import g\n    return g\n")
    (pkg / "top.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import other\n"
        "def g():\n    import pkg.sub\n    from .sub import inner, nothing_here\n")
    (pkg / "other.py").write_text("")
    files = module_files(pkg)
    graph = import_graph(files)
    assert graph["pkg.sub"] == {"pkg.sub.inner"}
    assert graph["pkg.sub.inner"] == {"pkg.top"}
    assert graph["pkg.top"] == {"pkg.sub", "pkg.sub.inner"}  # not pkg.other: TYPE_CHECKING only
    assert cycles(graph) == [["pkg.sub", "pkg.sub.inner", "pkg.top"]]


def test_zoo_core_module_imports_form_no_cycle() -> None:
    graph = import_graph(module_files())
    assert "zoo_core.training.setup" in graph["zoo_core.training.lrfind"]  # the graph is read at all
    found = cycles(graph)
    assert not found, "import cycles among zoo_core modules (function-level imports count): " + "; ".join(
        " → ".join(shortest_cycle(graph, c[0])) + f" ({len(c)} modules tied together)" for c in found)


def named_in_architecture(text: str) -> set[str]:
    """The zoo_core paths a document names in backticks: ``name.py`` files and ``pkg/`` packages, without a
    leading ``zoo_core/`` (paths into tests/, benchmarks/, plugins/ or docs/ are not zoo_core's)."""
    names = set(re.findall(r"`([A-Za-z_][\w/]*(?:\.py|/))`", text))
    return {n.removeprefix("zoo_core/") for n in names if not n.startswith(("tests/", "benchmarks/", "plugins/",
                                                                              "docs/"))}


def exists_in_zoo_core(name: str) -> bool:
    """Whether ``name`` (``x.py``, ``pkg/x.py``, ``pkg/``) is a module or package of zoo_core or of one of its
    subpackages, at any depth."""
    parts = name.rstrip("/").split("/")
    for init in [ZOO_CORE / "__init__.py", *ZOO_CORE.rglob("__init__.py")]:
        target = init.parent.joinpath(*parts)
        if target.is_file() if name.endswith(".py") else (target / "__init__.py").is_file():
            return True
    return False


def test_named_in_architecture_reads_files_and_packages() -> None:
    text = "`cli.py`, `training/report.py`, `zoo_core/cache/`, `tests/test_x.py`, `/`, `config.json`, `data_config`"
    assert named_in_architecture(text) == {"cli.py", "training/report.py", "cache/"}
    assert exists_in_zoo_core("runtime.py") and exists_in_zoo_core("cli/") and exists_in_zoo_core("training/") and exists_in_zoo_core("fit.py")
    assert not exists_in_zoo_core("no_such_module.py") and not exists_in_zoo_core("fit/")


def test_every_module_named_in_architecture_exists() -> None:
    names = named_in_architecture(ARCHITECTURE.read_text())
    assert len(names) > 20  # the document is read at all
    missing = sorted(n for n in names if not exists_in_zoo_core(n))
    assert not missing, f"{ARCHITECTURE.name} names modules zoo_core does not have: {', '.join(missing)}"
