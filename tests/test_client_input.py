"""Bad input gets a clear error before anything is sent; the record rate from Python."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests

from rstream.client import Client, RemoteStream
from rstream.errors import ConfigError, InvalidJSON, InvalidJSONType, StreamNotFound
from tests.serverutil import running_server

T0 = 1_700_000_000


class Counter:
    """Counts the HTTP requests a session sends (a response hook)."""

    def __init__(self, session: requests.Session) -> None:
        self.urls: list[str] = []
        session.hooks["response"].append(lambda r, *args, **kwargs: self.urls.append(r.url))


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running_server() as url, Client(url) as client:
        robot = client.stream("robot")
        for i in range(10):
            robot.write_state({"i": i}, timestamp=T0 + i)
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url) as client:
        yield client


@pytest.fixture
def robot(client: Client) -> RemoteStream:
    return client.stream("robot")


# -- history ----------------------------------------------------------------------------


def test_history_with_end_before_start_is_refused_before_any_request(
    client: Client, robot: RemoteStream
) -> None:
    counter = Counter(client.transport.session)
    with pytest.raises(ConfigError, match="before start") as info:  # also a ValueError
        robot.history(T0 + 5, T0 + 2)
    assert isinstance(info.value, ValueError)
    assert counter.urls == []
    assert list(robot.history(T0 + 5, T0 + 5)) == []  # an empty range is fine


def test_step_is_a_timedelta_or_seconds(robot: RemoteStream) -> None:
    by_delta = list(robot.history(T0, T0 + 9, step=timedelta(seconds=2)))
    assert list(robot.history(T0, T0 + 9, step=2)) == by_delta
    assert list(robot.history(T0, T0 + 9, step=2.0)) == by_delta
    assert [state["i"] for _, state in by_delta] == [0, 2, 4, 6, 8]
    half = list(robot.history(T0, T0 + 2, step=0.5))
    assert [state["i"] for _, state in half] == [0, 0, 1, 1]


@pytest.mark.parametrize("step", [0, -1, timedelta(0), math.nan, math.inf, 1e-9])
def test_a_step_that_is_not_positive_is_a_config_error(robot: RemoteStream, step: Any) -> None:
    with pytest.raises(ConfigError, match="step"):
        robot.history(T0, T0 + 9, step=step)


@pytest.mark.parametrize("step", ["1", True, None.__class__])
def test_a_step_of_another_type_is_a_type_error(robot: RemoteStream, step: Any) -> None:
    with pytest.raises(TypeError, match="step"):
        robot.history(T0, T0 + 9, step=step)


# -- write_state ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "error", "path"),
    [
        ([1, 2], InvalidJSONType, "$"),
        ("text", InvalidJSONType, "$"),
        ({"a": [1, math.nan]}, InvalidJSON, "$.a[1]"),
        ({"a": {"b": math.inf}}, InvalidJSON, "$.a.b"),
        ({"a": {"b": -math.inf}}, InvalidJSON, "$.a.b"),
        ({"when": object()}, InvalidJSONType, "$.when"),
        ({"a": {1: "x"}}, InvalidJSONType, "$.a"),
    ],
)
def test_write_state_checks_the_state_before_sending(
    client: Client, robot: RemoteStream, state: Any, error: type[Exception], path: str
) -> None:
    revision = robot.info().revision
    counter = Counter(client.transport.session)
    with pytest.raises(error) as info:
        robot.write_state(state)
    assert f"(at {path})" in str(info.value)
    assert isinstance(info.value, TypeError if error is InvalidJSONType else ValueError)
    assert counter.urls == []  # nothing was sent
    assert robot.info().revision == revision


# -- the record rate --------------------------------------------------------------------


def test_info_shows_the_record_rate(robot: RemoteStream) -> None:
    info = robot.info()
    assert (info.keyframe_frequency, info.change_frequency) == (
        timedelta(seconds=60),
        timedelta(seconds=1),
    )


def test_configure_records_every_write_of_a_fast_writer(client: Client) -> None:
    fast = client.stream("fast")
    with pytest.raises(StreamNotFound):
        fast.info()
    info = fast.configure(change_frequency=timedelta(0))  # creates the stream
    assert (info.keyframe_frequency, info.change_frequency) == (timedelta(seconds=60), timedelta(0))
    for i in range(50):  # one second of a 50 Hz writer
        fast.write_state({"i": i}, timestamp=T0 + i / 50)
    assert len(list(fast.entries())) == 50
    assert fast.info().change_frequency == timedelta(0)


def test_the_default_rate_amends_fast_writes(client: Client) -> None:
    slow = client.stream("default-rate")
    for i in range(50):
        slow.write_state({"i": i}, timestamp=T0 + i / 50)
    assert len(list(slow.entries())) == 2  # a snapshot, then one mutation amended 48 times
    assert list(slow.history())[-1][1] == {"i": 49}


def test_configure_keeps_the_rate_not_given(client: Client) -> None:
    stream = client.stream("rates")
    stream.configure(keyframe_frequency=timedelta(seconds=5), change_frequency=timedelta(0))
    info = stream.configure(keyframe_frequency=timedelta(minutes=2))
    assert (info.keyframe_frequency, info.change_frequency) == (timedelta(minutes=2), timedelta(0))
    info = stream.configure(change_frequency=timedelta(microseconds=500))  # 0.5 ms
    assert info.change_frequency == timedelta(microseconds=500)
    assert stream.info() == info


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, ConfigError),
        ({"change_frequency": timedelta(seconds=-1)}, ConfigError),
        ({"keyframe_frequency": 60}, TypeError),
    ],
)
def test_configure_checks_its_arguments_before_sending(
    client: Client, options: dict[str, Any], error: type[Exception]
) -> None:
    counter = Counter(client.transport.session)
    with pytest.raises(error):
        client.stream("unconfigured").configure(**options)
    assert counter.urls == []
