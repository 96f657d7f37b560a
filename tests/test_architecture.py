"""The layout holds: arrows point down, with no import cycles, and product code never reaches into
``tests/``. Read from the source (every ``import``, including those inside functions and under
``if TYPE_CHECKING:``, which are still dependencies of the design), so a cycle is caught before it
bites at import time.

    cli, bench  →  service  →  database  →  asr, diarize, notes, fhir, trust, review  →  store, db  →  values
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("asr", "diarize", "notes", "fhir", "trust", "review")
SHELL_ONLY = ("argparse", "rich", "aiohttp.web")
"""What a library package must not import: argument parsing, terminal output and the HTTP
server belong to the CLI and the service."""


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for pkg in ("scribe", "tui") for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, name: str) -> set[str]:
    """Every module name ``path`` imports (absolute; relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # ``from pkg import name`` depends on pkg (its ``__init__`` runs), and on pkg.name
            # when that is a module
            found.add(prefix)
            found.update(f"{prefix}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for target in _imports(path, name):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


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
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_libraries_never_import_the_shells() -> None:
    graph = _graph()
    offenders = []
    for name, path in _modules().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[0] != "scribe" or parts[1] not in LIBRARIES:
            continue
        upward = {d for d in graph[name] if d.startswith(("scribe.cli", "scribe.service", "scribe.bench", "tui"))}
        shells = {i for i in _imports(path, name) if i in SHELL_ONLY or i.startswith("rich.")}
        if upward or shells:
            offenders.append(f"{name}: {sorted(upward | shells)}")
    assert offenders == []


def test_product_code_never_imports_tests() -> None:
    """No module loads anything from ``tests/`` (a path built from a ``"tests"`` string, or an
    import of a test module); docstrings may mention it."""
    offenders = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and (node.value == "tests" or node.value.startswith("tests/"))):
                offenders.append(f"{name}:{node.lineno}")
        if any(i == "tests" or i.startswith(("tests.", "conftest", "fhir_server")) for i in _imports(path, name)):
            offenders.append(name)
    assert offenders == []


def test_features_never_import_the_database_module_and_it_is_the_one_way_to_open_the_store() -> None:
    """``scribe.database`` collects every feature's PHI columns, so a feature importing it would
    be an upward arrow; and every product path opens the store through its ``open_store`` (the
    key check at open then walks every PHI column), never ``trust.at_rest.open_keyed_store``."""
    graph = _graph()
    upward = sorted(n for n in graph if n.split(".")[:2] and len(n.split(".")) > 1
                    and n.split(".")[1] in LIBRARIES + ("store", "db") and "scribe.database" in graph[n])
    assert upward == []
    keyed = sorted(name for name, path in _modules().items()
                   if "scribe.trust.at_rest.open_keyed_store" in _imports(path, name) and name != "scribe.database")
    assert keyed == []
