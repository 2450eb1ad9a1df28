"""Requests whose socket another thread can shut down before the response arrives."""

from __future__ import annotations

import socket

import requests

from rstream.client.interrupt import ObservableAdapter, observe_sockets
from tests.serverutil import running_server


def session() -> requests.Session:
    http = requests.Session()
    http.mount("http://", ObservableAdapter(max_retries=0))
    return http


def test_requests_announce_their_socket_only_to_the_thread_that_asked() -> None:
    seen: list[socket.socket] = []
    with running_server() as url, session() as http:
        assert http.get(f"{url}/v1/health", timeout=5).ok  # no callback: nothing announced
        with observe_sockets(seen.append):
            assert http.get(f"{url}/v1/health", timeout=5).ok
            assert http.get(f"{url}/v1/health", timeout=5).ok  # a pooled connection too
        assert http.get(f"{url}/v1/health", timeout=5).ok
    assert len(seen) == 2
    assert all(isinstance(sock, socket.socket) for sock in seen)


def test_observers_nest() -> None:
    outer: list[socket.socket] = []
    inner: list[socket.socket] = []
    with running_server() as url, session() as http, observe_sockets(outer.append):
        with observe_sockets(inner.append):
            http.get(f"{url}/v1/health", timeout=5)
        http.get(f"{url}/v1/health", timeout=5)
    assert (len(outer), len(inner)) == (1, 1)
