"""Bad configuration raises rstream.ConfigError (an RStreamError and a ValueError)."""

from collections.abc import Callable

import pytest

import rstream
from rstream.server import Limits, create_app
from rstream.server.storage import MemoryStorage, open_storage
from rstream.server.storage.pg_url import redact


@pytest.mark.parametrize(
    "make",
    [
        lambda: rstream.Client("http://127.0.0.1:9", max_workers=0),
        lambda: rstream.Client("http://127.0.0.1:9", page_size=0),
        lambda: rstream.Client("http://127.0.0.1:9", token="two\nlines"),
        lambda: Limits(page_size=0),
        lambda: create_app(MemoryStorage(), heartbeat=0),
        lambda: create_app(MemoryStorage(), retry_ms=-1),
        lambda: create_app(MemoryStorage(), write_token=" padded "),
        lambda: rstream.RateConfig.from_json({"keyframe_frequency": -1}),
        lambda: rstream.Entry(0, 7, {}),
    ],
    ids=[
        "max_workers",
        "page_size",
        "client_token",
        "limits",
        "heartbeat",
        "retry_ms",
        "token",
        "rate",
        "kind",
    ],
)
def test_bad_configuration_is_an_rstream_error(make: Callable[[], object]) -> None:
    with pytest.raises(rstream.RStreamError) as info:
        make()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/rs", "postgresql://app:***@db:5432/rs"),
        ("postgresql://app:p@ss@db/rs", "postgresql://app:***@db/rs"),
        ("postgresql://app@db/rs", "postgresql://app@db/rs"),
        ("postgresql:///rs?host=/run/pg", "postgresql:///rs?host=/run/pg"),
    ],
)
def test_storage_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_an_unknown_storage_url_is_refused_without_its_password() -> None:
    with pytest.raises(rstream.RStreamError) as caught:
        open_storage("mysql://app:s3cret@db/rs")
    assert "s3cret" not in str(caught.value)
    assert "mysql://app:***@db/rs" in str(caught.value)
