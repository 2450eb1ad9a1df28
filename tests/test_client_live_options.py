"""RemoteStream hands the live options on to the tail (against a real server)."""

from datetime import UTC, datetime

from rstream.client.client import Client
from tests.serverutil import running_server


def test_subscribe_and_states_pass_their_queue_options_to_the_tail() -> None:
    errors: list[BaseException] = []
    with running_server() as url, Client(url) as client:
        robot = client.stream("options")
        robot.write_state({"n": 0})
        queue = robot.states(maxsize=7, overflow="drop_oldest", on_error=errors.append)
        sub = robot.subscribe(lambda ts, state: None, maxsize=3, overflow="latest")
        assert (queue.maxsize, queue.overflow) == (7, "drop_oldest")
        assert (sub.maxsize, sub.overflow) == (3, "latest")
        ts, state = queue.get(timeout=5)
        assert state == {"n": 0}
        assert isinstance(ts, datetime)
        assert ts.utcoffset() == UTC.utcoffset(None)
        _, latest = robot.latest(timeout=5)
        latest["n"] = 99  # the caller's own copy: the tail's state is untouched
        assert robot.latest(timeout=5)[1] == {"n": 0}
        sub.close()
        queue.close()
    assert errors == []
