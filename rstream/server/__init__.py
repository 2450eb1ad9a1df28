"""The rstream reference server: the HTTP + Server-Sent Events protocol of
``docs/protocol.rst`` over a storage backend.

``create_app(open_storage("sqlite:///streams.db"))`` is an ASGI application;
``ServerThread(app).start()`` serves it on a loopback port in a thread, and
``rstream serve`` runs it from the command line.
"""

from __future__ import annotations

from rstream.server.app import create_app
from rstream.server.limits import Limits
from rstream.server.runner import ServerThread
from rstream.server.storage import open_storage

__all__ = ["Limits", "ServerThread", "create_app", "open_storage"]
