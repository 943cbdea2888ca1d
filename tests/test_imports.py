"""The shape of the package: no import cycle among zoo_core modules (imports inside functions count too),
and every module and ``module.name`` docs/ARCHITECTURE.md names exists (README.md's and CONTRIBUTING.md's
``zoo_core``-prefixed ones too)."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import zoo_core

ZOO_CORE = Path(zoo_core.__file__).parent
ARCHITECTURE = ZOO_CORE.parent / "docs" / "ARCHITECTURE.md"
USER_DOCS = (ZOO_CORE.parent / "README.md", ZOO_CORE.parent / "CONTRIBUTING.md")


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


def test_docs_name_only_zoo_core_files_that_exist() -> None:
    for doc in USER_DOCS:
        names = {n for n in re.findall(r"`(zoo_core/[\w/]*(?:\.py|/))`", doc.read_text())}
        missing = sorted(n for n in names if not exists_in_zoo_core(n.removeprefix("zoo_core/")))
        assert not missing, f"{doc.name} names modules zoo_core does not have: {', '.join(missing)}"


FILE_SUFFIXES = {"json", "jsonl", "csv", "png", "pt", "pth", "md", "npy", "html", "txt", "py", "toml", "onnx",
                 "safetensors", "sh"}


def dotted_references(text: str, *, prefixed_only: bool = False) -> set[str]:
    """The ``a.b.c`` references a document puts in backticks (a call's arguments dropped: ``f.g(x)`` → ``f.g``),
    file names (``config.json``) left out; ``prefixed_only``: only those starting with ``zoo_core.``."""
    out = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        ref = span.split("(")[0].strip()
        if not re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+", ref) or ref.rsplit(".", 1)[1] in FILE_SUFFIXES:
            continue
        if not prefixed_only or ref.startswith("zoo_core."):
            out.add(ref)
    return out


@functools.cache
def _defined(path: Path) -> tuple[set[str], dict[str, set[str]]]:
    """The names module ``path`` defines at top level (functions, classes, assignments, imports; with a
    module ``__getattr__``, also every string in its top-level assignments: the names it serves lazily), and
    per class defined there, the names its body defines."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    lazy = any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            members[node.name] = {t.id for n in node.body for t in (
                n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, ast.AnnAssign) else [])
                if isinstance(t, ast.Name)} | {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
            if lazy and node.value is not None:
                names |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)
                          and isinstance(c.value, str)}
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names, members


def resolves(ref: str, files: dict[str, Path]) -> bool | None:
    """Whether ``ref`` (``[zoo_core.]module[.submodule].name[.member]``, or ``Class.member``) names something
    zoo_core has: the module is any zoo_core module whose dotted name ends with the first part; ``name`` is
    defined there (or is a submodule); a ``member`` of a class defined there is defined in its body (deeper
    parts are not read); a ``Class`` is any class zoo_core defines. None when the first part is neither
    (``torch.load``, ``state.log``: not checked)."""
    parts = ref.split(".")
    bases = ["zoo_core"] if parts[0] == "zoo_core" else [m for m in files if m.rsplit(".", 1)[-1] == parts[0]]
    if not bases:
        classes = [members[parts[0]] for members in (_defined(p)[1] for p in files.values()) if parts[0] in members]
        return any(parts[1] in body for body in classes) if classes else None
    for base in bases:
        module, rest = base, parts[1:]
        while rest and f"{module}.{rest[0]}" in files:
            module, rest = f"{module}.{rest[0]}", rest[1:]
        if not rest:
            return True
        names, members = _defined(files[module])
        if rest[0] in names and (len(rest) == 1 or rest[0] not in members or rest[1] in members[rest[0]]):
            return True
    return False


def test_dotted_references_are_read_and_resolved() -> None:
    text = "`report.write_outputs`, `zoo_core.cache.split_features(cfg)`, `config.json`, `torch.load`, `a b.c`"
    assert dotted_references(text) == {"report.write_outputs", "zoo_core.cache.split_features", "torch.load"}
    assert dotted_references(text, prefixed_only=True) == {"zoo_core.cache.split_features"}
    files = module_files()
    assert resolves("training.config.LOGGERS", files) and resolves("zoo_core.train", files)
    assert resolves("Plan.select", files) and not resolves("Plan.no_such_field", files)
    assert resolves("torch.load", files) is None and resolves("state.log", files) is None
    assert resolves("headfit.objective.Problem.to_raw", files) and resolves("data.augment", files)
    assert not resolves("runtime.check_pass", files) and not resolves("loggers.LOGGERS", files)
    assert not resolves("objective.Problem.no_such_method", files)


def test_every_dotted_name_in_the_docs_exists() -> None:
    files = module_files()
    refs = {ARCHITECTURE: dotted_references(ARCHITECTURE.read_text())}
    refs |= {doc: dotted_references(doc.read_text(), prefixed_only=True) for doc in USER_DOCS}
    assert len(refs[ARCHITECTURE]) > 30  # the document is read at all
    missing = [f"{doc.name}: {r}" for doc, rs in refs.items() for r in sorted(rs) if resolves(r, files) is False]
    assert not missing, "the docs name things zoo_core does not have: " + "; ".join(missing)
