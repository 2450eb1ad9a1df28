"""Requests whose socket another thread can shut down, whatever they wait for."""

from __future__ import annotations

import socket
import threading
import time

import requests

from rstream.client.interrupt import Interrupter, ObservableAdapter, observe_sockets
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


def test_every_connection_announces_its_socket_to_on_socket_from_any_thread() -> None:
    seen: list[socket.socket] = []
    with running_server() as url, requests.Session() as http:
        http.mount("http://", ObservableAdapter(on_socket=seen.append, max_retries=0))
        assert http.get(f"{url}/v1/health", timeout=5).ok
        assert http.get(f"{url}/v1/health", timeout=5).ok  # the pooled connection: not again
        thread = threading.Thread(target=lambda: http.get(f"{url}/v1/health", timeout=5))
        with http.get(f"{url}/v1/health", timeout=5, stream=True):  # holds the connection
            thread.start()  # so this request needs a second one
            thread.join(10)
    assert not thread.is_alive()
    assert len(seen) == 2
    assert all(isinstance(sock, socket.socket) for sock in seen)


def test_interrupt_wakes_a_request_waiting_for_its_response() -> None:
    interrupter = Interrupter()
    connected = threading.Event()

    def on_socket(sock: socket.socket) -> None:
        interrupter.add(sock)
        connected.set()

    errors: list[BaseException] = []
    with socket.socket() as listener, requests.Session() as http:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # connections complete in the backlog; nothing ever answers
        http.mount("http://", ObservableAdapter(on_socket=on_socket, max_retries=0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"

        def get() -> None:
            try:
                http.get(url, timeout=30)
            except requests.RequestException as exc:
                errors.append(exc)

        thread = threading.Thread(target=get)
        thread.start()
        assert connected.wait(10)
        began = time.monotonic()
        interrupter.interrupt()
        thread.join(10)
        assert not thread.is_alive()
    assert time.monotonic() - began < 5  # not the 30 s read timeout
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)


def test_a_socket_added_after_interrupt_is_shut_down_at_once() -> None:
    interrupter = Interrupter()
    interrupter.interrupt()
    interrupter.interrupt()  # idempotent
    assert interrupter.interrupted
    a, b = socket.socketpair()
    with a, b:
        interrupter.add(a)
        assert b.recv(1) == b""  # a was shut down: b sees the end of the stream
