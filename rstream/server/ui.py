"""The viewer: a single page shipped in the package (``rstream/server/ui/``).

``GET /`` redirects to ``/ui/``; ``/ui/`` (the stream list) and
``/ui/streams/{id}`` (one stream; ``?at=`` for a moment of its history) serve
the same page, whose script reads the API of the same origin. Every answer
carries a strict Content-Security-Policy: scripts, styles and connections from
this origin only, no inline script, nothing from third parties.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["CSP", "ui_routes"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated on every load: a server upgrade must not leave an old page running.
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return resources.files("rstream.server").joinpath("ui", name).read_bytes()


def _file(name: str) -> Response:
    return Response(_read(name), media_type=_FILES[name], headers=_HEADERS)


async def _root(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=307)


async def _page(request: Request) -> Response:
    return _file("index.html")


async def _script(request: Request) -> Response:
    return _file("app.js")


async def _style(request: Request) -> Response:
    return _file("style.css")


def ui_routes() -> list[BaseRoute]:
    """The viewer's routes, to add to the app's."""
    return [
        Route("/", _root, methods=["GET", "HEAD"]),
        Route("/ui", _root, methods=["GET", "HEAD"]),
        Route("/ui/", _page, methods=["GET", "HEAD"]),
        Route("/ui/streams/{stream_id}", _page, methods=["GET", "HEAD"]),
        Route("/ui/app.js", _script, methods=["GET", "HEAD"]),
        Route("/ui/style.css", _style, methods=["GET", "HEAD"]),
    ]
