"""The review app and the service meet only at HTTP and the shared value models.

``tui/`` may import scribe's models (the shapes on the wire) and nothing else of scribe: no store,
no server, no drafting engine. ``scribe/`` never imports ``tui`` when a module loads; the command
line verbs that launch the app import it inside the function that does so. Read from the source
(``ast``), so the test does not depend on what happens to be imported already.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TUI_MAY_IMPORT = {"scribe.models", "scribe.review.models"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, *, module_level_only: bool) -> list[tuple[int, str]]:
    """(line, absolute module) for each import in the file; with ``module_level_only``, those that
    run when the module loads (not inside a function)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join([*base, child.module] if child.module else base)
                else:
                    module = child.module or ""
                found.append((child.lineno, module))
            visit(child)

    visit(tree)
    return found


def test_scribe_never_imports_tui_at_module_level() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
                 for p in sorted((ROOT / "scribe").rglob("*.py"))
                 for line, mod in _imports(p, module_level_only=True)
                 if mod == "tui" or mod.startswith("tui.")]
    assert offenders == []


def test_tui_imports_only_scribes_value_models() -> None:
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
                 for p in sorted((ROOT / "tui").rglob("*.py"))
                 for line, mod in _imports(p, module_level_only=False)
                 if (mod == "scribe" or mod.startswith("scribe.")) and mod not in TUI_MAY_IMPORT]
    assert offenders == []


def test_loading_the_app_loads_no_other_part_of_scribe() -> None:
    """The same, as Python sees it: importing the app brings in only the models."""
    code = "import sys, tui.app; print(' '.join(sorted(m for m in sys.modules if m.startswith('scribe'))))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(out.stdout.split()) <= {"scribe", "scribe.review", *TUI_MAY_IMPORT}
