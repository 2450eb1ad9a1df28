"""What a web page must not be able to do: the Host, Origin and Content-Type rules.

A page the user visits can send a ``POST`` with ``Content-Type: text/plain``
to any address, the user's loopback included, without a CORS preflight; with
DNS rebinding, it can also read (its own name then points at 127.0.0.1).
:class:`BrowserGuard` refuses, before anything else looks at the request:

- a ``Host`` that is not one of the server's names: 400 ``invalid_host``. The
  names are loopback names (``localhost`` and ``*.localhost``), any IP
  address (a page cannot rebind an address), the machine's host name, and
  what ``allowed_hosts`` adds (``"*"`` turns the check off, e.g. behind a
  proxy that checks it);
- a write (any method but GET, HEAD and OPTIONS) that carries an ``Origin``
  other than the server's own (scheme, Host) or one of ``allowed_origins``:
  403 ``forbidden_origin``;
- a write with a body whose ``Content-Type`` is not JSON
  (``application/json``) or NDJSON (``application/x-ndjson``): 415
  ``unsupported_media_type``. A write without a body (``PUT`` of a stream
  with the default rate) needs no Content-Type.

Programs (the SDK, the CLI, curl) send a loopback or IP Host, no Origin, and a
JSON Content-Type, so none of this concerns them.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from rstream.server.errors import error_response

__all__ = ["BrowserGuard", "host_name"]

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
WRITE_TYPES = frozenset({"application/json", "application/x-ndjson"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(host: str) -> str:
    """The name in a ``Host`` value: lower case, without port, brackets or final dot."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class BrowserGuard:
    """ASGI middleware applying the rules of this module to every HTTP request.

    ``allowed_hosts``: names accepted in ``Host`` besides the defaults
    (``"*"``: any). ``allowed_origins``: origins (``https://app.example``)
    whose pages may write, besides the server's own. ``host_allowed(host)``
    says whether a request may name ``host`` (a ``Host`` header value).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        hosts = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts | LOOPBACK_NAMES | {socket.gethostname().lower()})
        self.origins = frozenset(o.strip().lower().rstrip("/") for o in allowed_origins)
        # Clients send the same few Host values over and over; parsing one as
        # an IP address costs 10-30 us a request. Bounded: a client picks them.
        self.host_allowed: Callable[[str], bool] = functools.lru_cache(maxsize=256)(
            self._host_allowed
        )

    def _host_allowed(self, host: str) -> bool:
        name = host_name(host)
        return self.any_host or name in self.hosts or name.endswith(".localhost") or _is_ip(name)

    def origin_allowed(self, origin: str, host: str | None, scheme: str) -> bool:
        """Whether a page from ``origin`` may write to this server, reached as ``host``."""
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return True
        return host is not None and origin == f"{scheme}://{host.strip().lower()}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            # latin-1: header bytes are never invalid, and odd ones are refused below.
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        await error_response(status, code, message)(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host")
        if host is not None and not self.host_allowed(host):
            shown = host_name(host)[:100]
            return (
                400,
                "invalid_host",
                f"Host {shown!r} is not a name of this server; if it is, start the server "
                f"with --allowed-host {shown} (create_app(allowed_hosts=[...]))",
            )
        if scope["method"] in _READS:
            return None
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(
            origin, host, str(scope.get("scheme", "http"))
        ):
            shown = origin[:100]
            return (
                403,
                "forbidden_origin",
                f"writes from web pages of {shown!r} are refused; to allow them, start the "
                f"server with --allowed-origin {shown} (create_app(allowed_origins=[...]))",
            )
        has_body = headers.get("content-length", "0").strip() != "0" or (
            "transfer-encoding" in headers
        )
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if (has_body or media_type) and media_type not in WRITE_TYPES:
            shown = media_type[:100] or "none"
            return (
                415,
                "unsupported_media_type",
                f"a write must be sent as Content-Type: application/json (or "
                f"application/x-ndjson for entries), not {shown}",
            )
        return None
