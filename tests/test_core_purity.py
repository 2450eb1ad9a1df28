"""The core engine does no I/O: its modules import no networking, no
subprocesses and no thread machinery beyond locks (checked on the source, so
nothing that merely happens to be imported elsewhere can hide it)."""

import ast
from pathlib import Path

import pytest

import rstream.core

CORE = Path(rstream.core.__file__).parent
ALLOWED = {
    "__future__",
    "bisect",
    "collections",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "functools",
    "itertools",
    "json",
    "math",
    "operator",
    "re",
    "threading",
    "time",
    "typing",
}
ALLOWED_RSTREAM = ("rstream.core", "rstream.errors")
THREADING_ALLOWED = {"Lock", "RLock"}


def _modules() -> list[Path]:
    return sorted(CORE.glob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_module_imports_nothing_that_does_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            if name.startswith("rstream"):
                assert name.startswith(ALLOWED_RSTREAM), f"{path.name} imports {name}"
            else:
                assert name.split(".")[0] in ALLOWED, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_core_uses_threading_only_for_locks(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "threading"
        ):
            assert node.attr in THREADING_ALLOWED, f"{path.name} uses threading.{node.attr}"
