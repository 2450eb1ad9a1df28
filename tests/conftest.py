"""Fixtures the server tests share: a SQLite store in a temporary directory and a
real server on it (a module that needs another store defines its own)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from rstream.server.storage import Storage, open_storage
from tests.serverutil import running_server

# The reference-model properties run this many examples when CI is set
# (tests/refmodel.py: reference_settings); other properties keep their own.
settings.register_profile("ci", max_examples=1000)


@pytest.fixture(autouse=True)
def _private_cli_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's disk cache of every test in a temporary directory, never the user's."""
    monkeypatch.setenv("RSTREAM_CACHE_DIR", str(tmp_path_factory.mktemp("cli-cache")))


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    store = open_storage(f"sqlite:///{tmp_path / 'streams.db'}")
    yield store
    store.close()


@pytest.fixture
def url(storage: Storage) -> Iterator[str]:
    with running_server(storage) as base:
        yield base
