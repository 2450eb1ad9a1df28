"""The layout of docs/architecture.rst, checked on the source: imports run one
way (client and server import core; cli imports both; nothing imports upward;
every import statement, those inside functions and under TYPE_CHECKING too),
no module is over 500 lines, and the module table names every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rstream

ROOT = Path(rstream.__file__).parent
ARCHITECTURE = ROOT.parent / "docs" / "architecture.rst"
MAX_LINES = 500
"""The most lines a module may have: a longer one holds more than one concept."""
SHARED = ("rstream.errors", "rstream._version")
"""Leaf modules every layer may import."""

ALLOWED: dict[str, tuple[str, ...]] = {
    "core": ("rstream.core",),
    "client": ("rstream.core", "rstream.client"),
    "server": ("rstream.core", "rstream.server"),
    "demo": ("rstream.demo",),
    "cli": ("rstream",),  # the top: everything, the public facade included
}
"""What each layer (a subpackage of rstream) may import besides :data:`SHARED`."""


def _imported(path: Path) -> list[tuple[int, str]]:
    """The rstream modules ``path`` imports, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] == "rstream"]


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _layer_modules() -> list[tuple[str, Path]]:
    return [(layer, path) for layer in ALLOWED for path in sorted((ROOT / layer).rglob("*.py"))]


def test_every_subpackage_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize(
    ("layer", "path"), _layer_modules(), ids=lambda v: v if isinstance(v, str) else v.name
)
def test_imports_run_one_way(layer: str, path: Path) -> None:
    allowed = ALLOWED[layer] + SHARED
    for line, name in _imported(path):
        assert _within(name, allowed), (
            f"{path.relative_to(ROOT.parent)}:{line} imports {name}: the {layer} layer may "
            f"import only {', '.join(allowed)} (see docs/architecture.rst)"
        )


def test_the_core_loads_without_the_client() -> None:
    code = "import rstream.core.mutation, sys; print('requests' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_server_loads_without_the_client() -> None:
    code = (
        "import rstream.server.app, sys; "
        "print(any(m.startswith('rstream.client') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "False"


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_500_lines(path: Path) -> None:
    lines = path.read_bytes().count(b"\n")  # as wc -l counts
    assert lines <= MAX_LINES, (
        f"{path.relative_to(ROOT.parent)} has {lines} lines, more than {MAX_LINES}: split it "
        "along its concepts and add the new modules to docs/architecture.rst"
    )


def test_the_module_table_names_every_module() -> None:
    rows = re.findall(r"^   \* - ``(rstream/\S+\.py)``$", ARCHITECTURE.read_text(), re.MULTILINE)
    modules = [str(p.relative_to(ROOT.parent)) for p in _modules()]
    assert sorted(set(modules) - set(rows)) == [], "add these to docs/architecture.rst"
    assert sorted(set(rows) - set(modules)) == [], "these are gone: drop their rows"
    assert len(rows) == len(set(rows)), "a module has two rows"
