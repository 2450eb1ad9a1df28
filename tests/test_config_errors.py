"""Bad configuration raises rstream.ConfigError (an RStreamError and a ValueError)."""

from collections.abc import Callable

import pytest

import rstream
from rstream.server import Limits, create_app
from rstream.server.storage import MemoryStorage


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
