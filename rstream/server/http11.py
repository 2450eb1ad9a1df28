"""uvicorn's HTTP/1.1 protocol, answering requests it cannot parse in the
protocol's JSON error form (``docs/protocol.rst``) instead of plain text."""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rstream.server.errors import error_json

__all__ = ["JSONErrorsH11Protocol"]

_MESSAGE = (
    "malformed HTTP request: its request line, a header or its framing "
    "(Content-Length, Transfer-Encoding) could not be read"
)


class JSONErrorsH11Protocol(H11Protocol):
    """:class:`uvicorn.protocols.http.h11_impl.H11Protocol` whose 400 for a
    request h11 refuses (a bad request line, header or Content-Length) is a
    JSON ``bad_request``; the connection is closed after it, as before."""

    def send_400_response(self, msg: str) -> None:
        body = error_json("bad_request", _MESSAGE)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
