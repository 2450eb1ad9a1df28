"""The viewer (``/ui/``) in a real headless Chromium, its routes, and CORS.

The browser tests share one Chromium (module fixture) and wait on DOM
conditions (``tests/browser.py``), never on sleeps. They are marked
``browser``: skipped with the reason where Chromium is missing, failed in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rstream.client import Client
from rstream.core.stream import RateConfig
from rstream.core.timestamps import format_rfc3339, from_micros
from rstream.demo import RobotSimulator, SimulatedDevice
from rstream.errors import ConfigError
from rstream.server import Limits, ServerThread, create_app
from rstream.server.cors import normalize_origin
from rstream.server.storage import MemoryStorage
from rstream.server.ui import CSP
from tests.browser import chromium, leaves, require_browser, wait_js, wait_until
from tests.serverutil import ServerProcess, SSEReader, running_server

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0
# '' until the page has drawn a tree: a wait must not throw while the page loads.
TREE_SHOWN = "(document.getElementById('tree')?.dataset.shown ?? '')"

browser = pytest.mark.browser


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    require_browser()
    with chromium() as d:
        yield d


@pytest.fixture
def page(driver: Any) -> Iterator[Any]:
    """The module's browser; left on a blank page after the test, so no live
    connection of the viewer outlives its server."""
    yield driver
    driver.get("about:blank")


# -- helpers --------------------------------------------------------------------------


def post_state(http: requests.Session, url: str, stream_id: str, state: Any, at: float) -> int:
    resp = http.post(f"{url}/v1/streams/{stream_id}/state", json={"state": state, "timestamp": at})
    assert resp.status_code in (200, 201), resp.text
    revision: int = resp.json()["revision"]
    return revision


def robot_states(n: int, seed: int = 0, dt: float = 0.1) -> list[dict[str, Any]]:
    robot = RobotSimulator(seed=seed)
    return [robot.step(dt) for _ in range(n)]


def flatten(value: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    """The leaves of a JSON value, as the viewer's tree shows them (empty containers too)."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, (*path, key)).items()}
    if isinstance(value, list) and value:
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, (*path, i)).items()}
    return {path: value}


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: numbers by value (JavaScript shows 1.0 as 1), the rest by type too."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def assert_tree_shows(d: Any, state: dict[str, Any]) -> None:
    shown = {path: json.loads(text) for path, text in leaves(d).items()}
    expected = flatten(state)
    assert set(shown) == set(expected)
    wrong = {p: (shown[p], expected[p]) for p in expected if not same_json(shown[p], expected[p])}
    assert not wrong


def entry_revs(url: str, stream_id: str) -> list[tuple[int, str]]:
    resp = requests.get(f"{url}/v1/streams/{stream_id}/entries", timeout=10)
    assert resp.status_code == 200
    return [(e["rev"], e["timestamp"]) for e in map(json.loads, resp.text.splitlines())]


def applied_revs(d: Any) -> list[int]:
    """The revisions the page applied, an amend replacing the entry it amends."""
    by_time: dict[str, int] = {}
    for item in d.execute_script("return window.rstreamViewer.revisions;"):
        by_time[item["timestamp"]] = item["rev"]
    return sorted(by_time.values())


class Recorder:
    """ASGI middleware that keeps every request's path and query, and whether it
    carried an Authorization header: the server's access log, for the tests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, bool]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = scope["path"] + (
                "?" + scope["query_string"].decode() if scope["query_string"] else ""
            )
            headers = dict(scope["headers"])
            with self.lock:
                self.requests.append((target, b"authorization" in headers))
        await self.app(scope, receive, send)


# -- routes and headers (no browser) ------------------------------------------------------


def test_root_redirects_to_the_viewer_and_every_page_carries_the_csp() -> None:
    with running_server() as url:
        resp = requests.get(url + "/", allow_redirects=False, timeout=5)
        assert resp.status_code == 307
        assert resp.headers["Location"] == "/ui/"
        for path in ("/ui/", "/ui/streams/robot-1", "/ui/streams/x?at=2024-01-01T00:00:00Z"):
            resp = requests.get(url + path, timeout=5)
            assert resp.status_code == 200
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert resp.headers["Content-Security-Policy"] == CSP
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
            assert '<script src="/ui/app.js" defer></script>' in resp.text
        assert (
            requests.get(url + "/ui/app.js", timeout=5)
            .headers["Content-Type"]
            .startswith("text/javascript")
        )
        assert (
            requests.get(url + "/ui/style.css", timeout=5)
            .headers["Content-Type"]
            .startswith("text/css")
        )
        assert requests.get(url + "/ui/missing.js", timeout=5).status_code == 404


def test_the_csp_allows_nothing_inline_and_nothing_from_elsewhere() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'"
    assert "unsafe" not in CSP
    html = (ROOT / "rstream/server/ui/index.html").read_text()
    assert re.search(r"<script>|<style|\son\w+=|style=", html) is None


def test_the_pages_are_package_data() -> None:
    from importlib import resources

    ui = resources.files("rstream.server").joinpath("ui")
    assert {p.name for p in ui.iterdir()} >= {"index.html", "app.js", "style.css"}
    setup = (ROOT / "setup.cfg").read_text()
    assert re.search(r"^rstream\.server = ui/\*$", setup, re.M)


def test_cors_is_off_by_default() -> None:
    origin = {"Origin": "http://app.example"}
    with running_server() as url:
        requests.put(f"{url}/v1/streams/s", timeout=5)
        resp = requests.get(f"{url}/v1/streams/s", headers=origin, timeout=5)
        assert "Access-Control-Allow-Origin" not in resp.headers
        preflight = requests.options(
            f"{url}/v1/streams/s/live",
            headers={**origin, "Access-Control-Request-Method": "GET"},
            timeout=5,
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_for_the_read_and_live_endpoints_of_allowed_origins() -> None:
    app_origin = "http://app.example:8000"
    with running_server(cors_origins=[app_origin]) as url:
        requests.post(f"{url}/v1/streams/s/state", json={"state": {"a": 1}}, timeout=5)
        for path in (
            "/v1/streams",
            "/v1/streams/s",
            "/v1/streams/s/window",
            "/v1/streams/s/entries",
        ):
            resp = requests.get(url + path, headers={"Origin": app_origin}, timeout=5)
            assert resp.headers["Access-Control-Allow-Origin"] == app_origin
            assert "Origin" in resp.headers["Vary"]
            assert "RStream-Next-Start" in resp.headers["Access-Control-Expose-Headers"]
        with SSEReader(f"{url}/v1/streams/s/live", headers={"Origin": app_origin}) as reader:
            assert reader.headers["Access-Control-Allow-Origin"] == app_origin
        preflight = requests.options(
            f"{url}/v1/streams/s/live",
            headers={
                "Origin": app_origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "last-event-id, authorization",
            },
            timeout=5,
        )
        assert preflight.status_code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == app_origin
        allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
        assert "last-event-id" in allowed
        assert "authorization" in allowed
        # Another origin, and writes, get nothing: the browser refuses them.
        other = requests.get(
            f"{url}/v1/streams", headers={"Origin": "http://evil.example"}, timeout=5
        )
        assert "Access-Control-Allow-Origin" not in other.headers
        write = requests.options(
            f"{url}/v1/streams/s/state",
            headers={"Origin": app_origin, "Access-Control-Request-Method": "POST"},
            timeout=5,
        )
        assert "Access-Control-Allow-Origin" not in write.headers


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://App.Example:8000", "http://app.example:8000"),
        ("https://a.b/", "https://a.b"),
        ("*", "*"),
    ],
)
def test_cors_origins_are_normalized(given: str, expected: str) -> None:
    assert normalize_origin(given) == expected


@pytest.mark.parametrize("bad", ["app.example", "http://a.b/path", "ftp://a.b", "http://u@a.b", ""])
def test_a_cors_origin_that_is_not_an_origin_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="not an origin"):
        normalize_origin(bad)
    with pytest.raises(ConfigError, match="not an origin"):
        create_app(MemoryStorage(), cors_origins=[bad])


def test_serve_refuses_a_bad_cors_origin() -> None:
    from click.testing import CliRunner

    from rstream.cli.serve import serve

    result = CliRunner().invoke(serve, ["--db", "memory://", "--cors-origin", "app.example"])
    assert result.exit_code == 2
    assert "--cors-origin" in result.output
    assert "not an origin" in result.output


# -- in the browser ----------------------------------------------------------------------


_FEED_JS = """
const [bodies] = arguments;
return bodies.map((chunkings) => chunkings.map((chunks) => {
  const events = [];
  let retry = null;
  const parser = new window.rstreamViewer.SSEParser(
    (e) => events.push([e.event, e.data, e.id]), (ms) => { retry = ms; });
  const decoder = new TextDecoder();
  for (const chunk of chunks) parser.feed(decoder.decode(new Uint8Array(chunk), { stream: true }));
  return [events, parser.lastId, retry];
}));
"""


def _chunkings(body: bytes) -> list[list[list[int]]]:
    """The body whole, byte by byte, and (when short) split in two at every point."""
    data = list(body)
    out = [[data], [[b] for b in data]]
    if len(body) < 200:
        out += [[data[:i], data[i:]] for i in range(1, len(data))]
    return out


@browser
def test_the_page_frames_events_as_the_python_client_does(page: Any) -> None:
    """The page's SSE parser against the conformance cases of tests/test_sse.py and
    line endings CR, LF and CRLF, however the bytes are split into chunks."""
    from rstream.client.sse import EventStream
    from tests.test_sse import CASES

    bodies = [case[0] for case in CASES.values()]
    bodies.append(
        b"event: entry\rid: 2\rdata: b\r\rdata: c\r\ndata: d\r\n\r\n"
        b"data: e\n\r\ndata: f\r\r\ndata: g\r\n\n: ping\rretry: 250\r\r"
    )
    with running_server() as url:
        page.get(url + "/ui/")
        got = page.execute_script(_FEED_JS, [_chunkings(body) for body in bodies])
    for body, results in zip(bodies, got, strict=True):
        stream = EventStream([body])
        events = [[e.event, e.data, stream.last_event_id] for e in stream]
        expected = [events, stream.last_event_id, stream.retry_ms]
        for result in results:
            assert result == expected, body


@browser
def test_the_list_shows_the_streams_and_opens_one_live(page: Any) -> None:
    with running_server() as url, Client(url) as client:
        http = requests.Session()
        post_state(http, url, "notes", {"text": "hello"}, T0)
        with SimulatedDevice(client.stream("robot-1").write_state, rate=20) as device:
            device.start()
            page.get(url + "/")
            assert page.current_url == url + "/ui/"
            wait_js(page, "document.querySelectorAll('#streams tbody tr').length === 2")
            rows = page.execute_script(
                "return Array.from(document.querySelectorAll('#streams tbody tr'), "
                "(r) => Array.from(r.cells, (c) => c.textContent));"
            )
            assert sorted(r[0] for r in rows) == ["notes", "robot-1"]
            notes = next(r for r in rows if r[0] == "notes")
            assert notes[1:] == [format_rfc3339(int(T0 * 1e6)), "1"]
            page.execute_script(
                "const f = document.getElementById('filter'); f.value = 'ROB';"
                "f.dispatchEvent(new Event('input'));"
            )
            wait_js(page, "document.querySelectorAll('#streams tbody tr').length === 1")
            page.find_element("css selector", "#streams tbody a").click()
            wait_until(page, lambda d: d.current_url == url + "/ui/streams/robot-1")
            wait_js(page, f"{TREE_SHOWN}.startsWith('live ')")
            shown = leaves(page)
            assert ("battery",) in shown
            assert ("position", "x") in shown
            assert page.find_element("id", "status").get_attribute("data-state") == "live"
        # A state posted through the API is pushed, not polled for: it appears
        # well within the two seconds allowed here (margin for a busy machine).
        page.get(f"{url}/ui/streams/notes")
        wait_js(page, f"{TREE_SHOWN} === 'live 1'")
        started = time.monotonic()
        post_state(http, url, "notes", {"text": "posted", "n": 2}, T0 + 1)
        wait_js(page, f"{TREE_SHOWN} === 'live 2'", timeout=5)
        elapsed = time.monotonic() - started
        assert_tree_shows(page, {"text": "posted", "n": 2})
        assert elapsed < 2.0
        changed = page.execute_script(
            "return Array.from(document.querySelectorAll('#tree .changed'), (e) => e.textContent);"
        )
        assert sorted(changed) == ["n2", 'text"posted"']  # the fields that changed flash
        # The page runs under its own CSP without a violation.
        logs = [e["message"] for e in page.get_log("browser")]
        assert not [m for m in logs if "Content Security Policy" in m]


def varied_states(n: int, seed: int) -> list[dict[str, Any]]:
    """States whose mutations use every operator: fields added, removed and
    retyped, arrays pushed, truncated, pulled and patched, empty containers,
    and names such as ``__proto__`` and ``$x``."""
    rng = random.Random(seed)
    state: dict[str, Any] = {"list": [1, 2, 3], "obj": {"a": 1}, "__proto__": {"p": 1}}
    out = []
    for i in range(n):
        state = json.loads(json.dumps(state))
        move = rng.randrange(9)
        if move == 0:
            state["list"].append(rng.choice([i, f"s{i}", {"k": i}, [i], None, True]))
        elif move == 1 and state["list"]:
            del state["list"][rng.randrange(len(state["list"])) :]
        elif move == 2 and state["list"]:
            state["list"].pop(rng.randrange(len(state["list"])))
        elif move == 3 and state["list"]:
            state["list"][rng.randrange(len(state["list"]))] = {"at": i, "deep": {"x": [i]}}
        elif move == 4:
            state["obj"][f"f{rng.randrange(5)}"] = rng.choice([i, 0.5 + i, "text", {}, [], False])
        elif move == 5 and state["obj"]:
            del state["obj"][rng.choice(sorted(state["obj"]))]
        elif move == 6:
            state["retyped"] = rng.choice([1, "one", [1, {"two": 2}], {"three": {"four": 4}}, None])
        elif move == 7:
            state["__proto__"]["p"] = i
            state["$x"] = i
        else:
            state.pop("retyped", None)
            state["n"] = i
        out.append(state)
    return out


@browser
def test_live_and_history_agree_with_the_python_client_over_every_operator(page: Any) -> None:
    states = varied_states(60, seed=11)
    with running_server() as url, Client(url) as client:
        http = requests.Session()
        http.put(
            f"{url}/v1/streams/v",
            json={"record_rate": {"keyframe_frequency": 1000, "change_frequency": 0}},
        )
        post_state(http, url, "v", states[0], T0)
        page.get(f"{url}/ui/streams/v")
        for i, state in enumerate(states[1:], 1):
            revision = post_state(http, url, "v", state, T0 + i * 0.05)
            wait_js(page, f"{TREE_SHOWN} === 'live {revision}'")
            assert_tree_shows(page, state)
        stream = client.stream("v")
        for i in (7, 23, 41, 59):
            at = int((T0 + i * 0.05) * 1e6)
            page.get(f"{url}/ui/streams/v?at={format_rfc3339(at)}")
            wait_js(page, f"{TREE_SHOWN} === '{format_rfc3339(at)}'")
            assert stream.state_at(from_micros(at)) == states[i]
            assert_tree_shows(page, states[i])


@browser
def test_the_slider_shows_exactly_state_at(page: Any) -> None:
    states = robot_states(60)
    with running_server() as url, Client(url) as client:
        http = requests.Session()
        # A new snapshot every second: several windows, committed and live.
        http.put(
            f"{url}/v1/streams/r",
            json={"record_rate": {"keyframe_frequency": 1000, "change_frequency": 0}},
        )
        for i, state in enumerate(states):
            post_state(http, url, "r", state, T0 + i * 0.1)
        stream = client.stream("r")
        # Between two entries of a committed window; exactly at an entry; in the live window.
        times_us = [int((T0 + 1.234567) * 1e6), int((T0 + 3.4) * 1e6), int((T0 + 5.85) * 1e6)]

        page.get(f"{url}/ui/streams/r?at={format_rfc3339(times_us[0])}")
        wait_js(page, f"{TREE_SHOWN} === '{format_rfc3339(times_us[0])}'")
        assert_tree_shows(page, stream.state_at(from_micros(times_us[0])))
        assert (
            page.find_element("id", "share")
            .get_attribute("href")
            .endswith(f"/ui/streams/r?at={format_rfc3339(times_us[0])}".replace(":", "%3A"))
        )

        field = page.find_element("id", "at-input")
        field.clear()
        field.send_keys(format_rfc3339(times_us[1]) + "\n")
        wait_js(page, f"{TREE_SHOWN} === '{format_rfc3339(times_us[1])}'")
        assert_tree_shows(page, stream.state_at(from_micros(times_us[1])))

        # The slider (milliseconds) at the third time.
        page.execute_script(
            "const s = document.getElementById('slider'); s.value = String(arguments[0]);"
            "s.dispatchEvent(new Event('input'));",
            times_us[2] // 1000,
        )
        wait_js(page, f"{TREE_SHOWN} === '{format_rfc3339(times_us[2] // 1000 * 1000)}'")
        assert_tree_shows(page, stream.state_at(from_micros(times_us[2] // 1000 * 1000)))

        # A number clicked in history is charted over the window shown.
        page.find_element("css selector", "#tree .t-number[data-path='[\"battery\"]']").click()
        window = requests.get(
            f"{url}/v1/streams/r/window",
            params={"at": format_rfc3339(times_us[2] // 1000 * 1000)},
            timeout=5,
        ).json()
        wait_js(page, "document.querySelector('#chart polyline') !== null")
        assert page.find_element("id", "chart-range").text.startswith(window["start"] + " to ")

        page.find_element("id", "live-button").click()
        wait_js(page, f"{TREE_SHOWN} === 'live 60'")
        assert_tree_shows(page, states[-1])
        assert page.current_url == f"{url}/ui/streams/r"


@browser
def test_the_page_resumes_after_the_server_is_killed_and_restarted(
    page: Any, tmp_path: Path
) -> None:
    states = robot_states(40, seed=4)
    with ServerProcess(f"sqlite:///{tmp_path / 'kill.db'}") as server:
        url = server.url
        http = requests.Session()
        http.put(f"{url}/v1/streams/robot", json={"record_rate": {"keyframe_frequency": 1500}})
        for i, state in enumerate(states[:20]):
            post_state(http, url, "robot", state, T0 + i * 0.2)
        page.get(f"{url}/ui/streams/robot")
        wait_js(page, f"{TREE_SHOWN} === 'live 20'")
        first = applied_revs(page)[0]

        server.kill()
        wait_js(page, "window.rstreamViewer.status === 'reconnecting'")
        assert "offline" in page.find_element("id", "status").text
        server.start()
        http = requests.Session()
        for i, state in enumerate(states[20:], 20):
            revision = post_state(http, url, "robot", state, T0 + i * 0.2)
        wait_js(page, f"{TREE_SHOWN} === 'live {revision}'", timeout=20)
        assert page.execute_script("return window.rstreamViewer.status;") == "live"
        assert_tree_shows(page, states[-1])
        log = [rev for rev, _ in entry_revs(url, "robot") if rev >= first]
        assert applied_revs(page) == log  # no gap, no duplicate


@browser
def test_a_stream_opened_before_it_exists_shows_once_written(page: Any) -> None:
    with running_server(retry_ms=100) as url:
        page.get(f"{url}/ui/streams/later")
        wait_js(page, "document.getElementById('status').textContent.includes('no stream')")
        post_state(requests.Session(), url, "later", {"here": True}, T0)
        wait_js(page, f"{TREE_SHOWN} === 'live 1'")
        assert_tree_shows(page, {"here": True})
        assert page.find_element("id", "error").text == ""


@browser
def test_the_page_starts_over_when_the_server_comes_back_with_another_log(
    page: Any, tmp_path: Path
) -> None:
    """Resuming at a revision the server does not have is answered with a
    reset: the page drops its state and shows the new live window."""
    with ServerProcess(f"sqlite:///{tmp_path / 'first.db'}") as server:
        http = requests.Session()
        for i in range(5):
            post_state(http, server.url, "s", {"first": i}, T0 + i * 2)
        page.get(f"{server.url}/ui/streams/s")
        wait_js(page, f"{TREE_SHOWN} === 'live 5'")
        server.kill()
        server.db = f"sqlite:///{tmp_path / 'second.db'}"  # a restore from an older backup
        server.start()
        http = requests.Session()
        post_state(http, server.url, "s", {"second": 0}, T0)
        post_state(http, server.url, "s", {"second": 1}, T0 + 2)
        wait_js(page, f"{TREE_SHOWN} === 'live 2'", timeout=15)
        assert_tree_shows(page, {"second": 1})
        assert page.execute_script("return window.rstreamViewer.status;") == "live"


@browser
def test_a_read_token_is_asked_once_and_never_put_in_a_url(page: Any) -> None:
    token = "read-tok-3f9a1c"
    recorder = Recorder(create_app(MemoryStorage(), read_token=token, write_token="w-tok"))
    server = ServerThread(recorder).start()
    try:
        url = server.url
        http = requests.Session()
        http.headers["Authorization"] = "Bearer w-tok"
        post_state(http, url, "secret", {"level": 1}, T0)
        page.get(url + "/ui/")
        wait_js(page, "!document.getElementById('token-view').hidden")
        assert page.find_element("id", "status").get_attribute("data-state") == "error"
        field = page.find_element("id", "token-input")
        field.send_keys(token + "\n")
        wait_js(page, "document.querySelectorAll('#streams tbody tr').length === 1")
        assert page.execute_script("return sessionStorage.getItem('rstream.readToken');") == token
        page.find_element("css selector", "#streams tbody a").click()
        wait_js(page, f"{TREE_SHOWN} === 'live 1'")
        post_state(http, url, "secret", {"level": 2}, T0 + 1)
        wait_js(page, f"{TREE_SHOWN} === 'live 2'")
        assert_tree_shows(page, {"level": 2})
        # A wrong token is dropped and asked again.
        page.execute_script("sessionStorage.setItem('rstream.readToken', 'wrong');")
        page.refresh()
        wait_js(page, "!document.getElementById('token-view').hidden")
        assert "refused" in page.find_element("id", "token-reason").text
        page.execute_script("sessionStorage.clear();")
        with recorder.lock:
            seen = list(recorder.requests)
        api = [(target, auth) for target, auth in seen if target.startswith("/v1/")]
        assert any(t.startswith("/v1/streams/secret/live") and auth for t, auth in api)
        assert all(token not in target and "token" not in target.lower() for target, _ in seen)
    finally:
        server.stop()


@browser
def test_the_viewer_recovers_from_a_non_200_answer(page: Any) -> None:
    with running_server(retry_ms=100, limits=Limits(max_subscribers=1)) as url:
        http = requests.Session()
        post_state(http, url, "busy", {"n": 1}, T0)
        with SSEReader(f"{url}/v1/streams/busy/live"):
            page.get(f"{url}/ui/streams/busy")
            wait_js(page, "document.getElementById('status').textContent.includes('answered 429')")
            assert page.execute_script("return window.rstreamViewer.status;") == "reconnecting"
        wait_js(page, f"{TREE_SHOWN} === 'live 1'", timeout=10)
        assert page.execute_script("return window.rstreamViewer.status;") == "live"


@browser
def test_stream_data_is_shown_as_text_never_as_html(page: Any) -> None:
    evil = {
        "html": "<script>window.pwned = 1</script>",
        "img": '<img src=x onerror="window.pwned = 2">',
        "<img src=x onerror=window.pwned=3>": "<b>bold</b>",
        "list": ["<svg onload=window.pwned=4>"],
    }
    with running_server() as url:
        post_state(requests.Session(), url, "evil", evil, T0)
        page.get(f"{url}/ui/")
        wait_js(page, "document.querySelectorAll('#streams tbody tr').length === 1")
        page.get(f"{url}/ui/streams/evil")
        wait_js(page, f"{TREE_SHOWN} === 'live 1'")
        assert_tree_shows(page, evil)
        assert page.execute_script("return window.pwned === undefined;")
        markup = page.execute_script(
            "return document.querySelectorAll("
            "'#tree img, #tree script, #tree svg, #tree b').length;"
        )
        assert markup == 0
        keys = page.execute_script(
            "return Array.from(document.querySelectorAll('#tree .key'), (e) => e.textContent);"
        )
        assert "<img src=x onerror=window.pwned=3>" in keys


class CutAfterReset:
    """A loopback TCP proxy that ends the first event stream whose answer holds a
    ``reset`` right after that event (before the live window that follows), as
    a network would at the worst moment. It keeps the request heads it saw."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.cuts = 0
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._socks += [client, upstream]
            live: list[bool] = [False]  # the connection's latest request is for /live
            self._start(self._up, client, upstream, live)
            self._start(self._down, upstream, client, live)

    def _up(self, client: socket.socket, upstream: socket.socket, live: list[bool]) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                head = chunk.partition(b"\r\n\r\n")[0]
                with self._lock:
                    self.heads.append(head)
                    live[0] = b"/live" in head.partition(b"\r\n")[0]
                upstream.sendall(chunk)

    def _down(self, upstream: socket.socket, client: socket.socket, live: list[bool]) -> None:
        held = b""  # a live answer's start, held until its reset event is complete
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                with self._lock:
                    armed = self.cuts == 0 and live[0]
                if not armed:
                    client.sendall(held + chunk)
                    held = b""
                    continue
                held += chunk
                _, reset, after = held.partition(b"event: reset")
                end = after.find(b"\n\n")
                if reset and end >= 0:
                    client.sendall(held[: len(held) - len(after) + end + 2])
                    with self._lock:
                        self.cuts += 1
                    break
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(5)
            assert not thread.is_alive()
        for sock in socks:
            sock.close()


@browser
def test_a_reset_lands_a_browser_on_the_snapshot(page: Any) -> None:
    """A connection dropped right after a ``reset`` resumes onto the new window's
    snapshot: the reset's empty ``id:`` cleared the browser's last event ID."""
    with running_server(retry_ms=50) as url:
        http = requests.Session()
        for i in range(3):
            post_state(http, url, "r", {"n": i}, T0 + i * 2)
        proxy = CutAfterReset(int(url.rsplit(":", 1)[1]))
        try:
            page.get(proxy.url + "/v1/health")  # any page of that origin
            page.execute_script(
                "window.got = []; const es = new EventSource(arguments[0]); window.es = es;"
                "for (const name of ['reset', 'entry']) es.addEventListener(name, "
                "(e) => got.push([name, e.lastEventId, JSON.parse(e.data)]));",
                "/v1/streams/r/live?since=99",
            )
            wait_js(page, "window.got.some((e) => e[0] === 'entry')")
            got = page.execute_script("window.es.close(); return window.got;")
            page.get("about:blank")
        finally:
            proxy.close()
    assert proxy.cuts == 1
    live = [h for h in proxy.heads if h.startswith(b"GET /v1/streams/r/live")]
    assert len(live) == 2
    assert b"last-event-id" not in live[1].lower()  # the reset cleared it
    reset = {"reason": "resume point 99 is ahead of the stream (revision 3)", "revision": 3}
    # Cut after the first reset; the browser came back, was reset again, onto the snapshot.
    assert got[:3] == [
        ["reset", "", reset],
        ["reset", "", reset],
        [
            "entry",
            "1",
            {"timestamp": format_rfc3339(int(T0 * 1e6)), "type": 0, "data": {"n": 0}, "rev": 1},
        ],
    ]


def _origin_page(api: str) -> str:
    return f"""<!doctype html><title>elsewhere</title><script>
window.got = []; window.errors = 0;
const es = new EventSource({json.dumps(api)} + "/v1/streams/x/live");
es.addEventListener("entry", (e) => got.push([e.lastEventId, JSON.parse(e.data).rev]));
es.onerror = () => {{ window.errors += 1; }};
</script>"""


@browser
def test_a_page_elsewhere_follows_with_eventsource_only_with_cors(
    page: Any, tmp_path: Path
) -> None:
    html: dict[str, str] = {}

    async def origin_page(request: Request) -> HTMLResponse:
        return HTMLResponse(html["page"])

    # Another origin (another port): it serves the page that uses the API.
    other = ServerThread(Starlette(routes=[Route("/", origin_page)])).start()
    try:
        origin = other.url
        args = ("--cors-origin", origin, "--retry-ms", "200")
        with ServerProcess(f"sqlite:///{tmp_path / 'cors.db'}", args=args) as api:
            http = requests.Session()
            for i in range(3):
                post_state(http, api.url, "x", {"n": i}, T0 + i)
            with SSEReader(f"{api.url}/v1/streams/x/live") as reader:
                assert reader.next().retry == 200  # --retry-ms
            html["page"] = _origin_page(api.url)
            page.get(origin + "/")
            wait_js(page, "window.got.length === 3")
            api.kill()
            wait_js(page, "window.errors >= 1")
            api.start()
            http = requests.Session()
            for i in range(3, 6):
                post_state(http, api.url, "x", {"n": i}, T0 + i)
            wait_js(page, "window.got.length >= 6", timeout=15)
            got = page.execute_script("return window.got;")
            page.get("about:blank")
            # Resumed with Last-Event-ID: the window was not sent again.
            assert got == [[str(r), r] for r in range(1, 7)]

        # The same page against a server without --cors-origin: the browser refuses.
        with running_server() as plain:
            post_state(requests.Session(), plain, "x", {"n": 0}, T0)
            html["page"] = _origin_page(plain)
            page.get(origin + "/")
            wait_js(page, "window.errors >= 1")
            assert page.execute_script("return window.got;") == []
            logs = " ".join(e["message"] for e in page.get_log("browser"))
            assert "CORS" in logs
    finally:
        other.stop()


@browser
def test_a_screenshot_of_the_viewer_following_the_demo_robot(page: Any, tmp_path: Path) -> None:
    """The README's picture; ``RSTREAM_UPDATE_SCREENSHOT=1`` writes it to docs/viewer.png."""
    storage = MemoryStorage()
    # The demo's stream: a snapshot every 5 s, changes amended within 200 ms.
    storage.create_stream(
        "robot-1", RateConfig.from_json({"keyframe_frequency": 5000, "change_frequency": 200})
    )
    with (
        contextlib.closing(storage),
        running_server(storage) as url,
        Client(url) as client,
        SimulatedDevice(client.stream("robot-1").write_state, rate=20) as device,
    ):
        device.start()
        page.get(f"{url}/ui/streams/robot-1")
        wait_js(page, f"{TREE_SHOWN}.startsWith('live ')")
        page.find_element("css selector", "#tree .t-number[data-path='[\"battery\"]']").click()
        wait_js(page, "document.querySelector('#chart polyline') !== null")
        wait_js(
            page,
            "parseInt(document.getElementById('chart-range').textContent.split(': ')[1]) >= 40",
        )
        shot = tmp_path / "viewer.png"
        assert page.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RSTREAM_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "docs" / "viewer.png")
    assert (ROOT / "docs" / "viewer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ".. image:: docs/viewer.png" in (ROOT / "README.rst").read_text()
