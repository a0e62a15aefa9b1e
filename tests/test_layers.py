"""The package's shape: layers whose dependencies point one way, no import cycle, no hidden function-local import.

core <- data <- distill <- studies <- paper <- cli. ``tdlib/__init__.py`` is the core's front door and may import the
core alone, so ``import tdlib`` loads no data, distillation, study or paper module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tdlib"
LAYERS = ("core", "data", "distill", "studies", "paper", "cli")
# the few imports allowed inside a function: an optional dependency that only one command needs, by module
OPTIONAL: set[str] = set()  # none today; name one here with a one-line reason


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def layer(module: str) -> int:
    """The layer of ``tdlib.<layer>...``: ``tdlib`` itself is the core's front door; ``__main__`` runs the CLI."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    return LAYERS.index("cli" if parts[1] == "__main__" else parts[1])


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    local = {id(n) for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
             for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import; name the layer (from tdlib.core ...)"
            out.append((node.module, node.lineno, id(node) in local))
        elif isinstance(node, ast.Import):
            out.extend((a.name, node.lineno, id(node) in local) for a in node.names)
    return out


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {m: sorted({i for i, _, _ in imports_of(p) if i in MODULES and i != m}) for m, p in MODULES.items()}


def test_every_module_lives_in_a_layer():
    for m in MODULES:
        layer(m)  # raises ValueError for a folder that is not a layer


def test_no_import_points_up_a_layer():
    up = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if layer(t) > layer(m)]
    assert not up, f"imports that point up a layer (core <- data <- distill <- studies <- paper <- cli): {up}"


def test_no_import_cycle():
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in GRAPH[m]:
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(t):], t]))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in GRAPH:
        if m not in state:
            visit(m, [m])


def test_no_function_local_import_but_optional_dependencies():
    local = [f"{p.relative_to(PACKAGE.parent)}:{line} imports {name}" for p in MODULES.values()
             for name, line, inside in imports_of(p) if inside and name.split(".")[0] not in OPTIONAL]
    assert not local, f"function-local imports (move them to the module's top): {local}"


@pytest.mark.parametrize("layered", [False, True])
def test_the_layer_test_sees_an_upward_import(layered, tmp_path):
    """The checks above can fail: a core module importing a study is an upward arrow, a data module importing the
    core is not."""
    module, target = ("tdlib.core.x", "tdlib.studies.experiments") if layered else ("tdlib.data.x", "tdlib.core.io")
    assert (layer(target) > layer(module)) is layered


def test_import_tdlib_loads_the_core_alone():
    out = subprocess.run([sys.executable, "-c", "import sys, tdlib; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout.split()
    above = [m for m in out if m.startswith("tdlib.") and layer(m) > 0]
    assert not above, f"import tdlib loads modules above the core: {above}"


def test_the_cores_public_functions_are_documented_numpy_style():
    """tensorly's style: every function ``import tdlib`` exports says what it takes and what it returns."""
    import inspect

    import tdlib

    functions = [n for n in tdlib.__all__ if inspect.isfunction(getattr(tdlib, n))]
    assert len(functions) >= 15
    bare = [n for n in functions if not all(s in (inspect.getdoc(getattr(tdlib, n)) or "")
                                            for s in ("Parameters\n----------", "Returns\n-------"))]
    assert not bare, f"public functions without numpy-doc Parameters/Returns: {bare}"
