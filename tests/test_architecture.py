"""Imports run one way (docs/architecture.rst): client and server import core;
cli imports both; nothing imports upward. Checked on the source, every import
statement included (those inside functions and under TYPE_CHECKING too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rstream

ROOT = Path(rstream.__file__).parent
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
