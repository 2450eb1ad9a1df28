"""HTTP transport: one pooled session, auth, retries, failover across replicas.

Everything the client sends goes through :meth:`Transport.request`:

* one shared :class:`requests.Session` with a connection pool per server, so
  the worker threads of a :class:`~rstream.Client` reuse connections;
* ``Authorization: Bearer`` from a token string or a callable asked again for
  every request (a 401 asks it once more, then raises :class:`~rstream.AuthError`);
* an *attempt* is one pass over the server URLs starting at the last one that
  answered, so a dead replica costs one connection error, not a backoff;
* between attempts a tenacity policy (:mod:`rstream.client.retry`) waits, with
  ``Retry-After`` as a floor, and stops after a bounded number of attempts;
* error responses become the exceptions of :mod:`rstream.errors`
  (:func:`~rstream.client.failures.raise_for_response`).

``close()`` wakes every call of the transport at once, whatever
the server does: it shuts down the socket of every connection the session
made (:class:`~rstream.client.interrupt.Interrupter`), which wakes a request
being sent, waiting for its response or reading its body, and it cuts a
backoff wait short. The woken calls, and every later one, raise
:class:`~rstream.ClientClosed`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import requests
import tenacity

from rstream._version import __version__
from rstream.client.failures import (
    describe_failure,
    is_connect_error,
    is_name_error,
    is_transient,
    json_body,
    raise_for_response,
)
from rstream.client.interrupt import Interrupter, ObservableAdapter
from rstream.client.options import (
    Timeout,
    Token,
    clean_token,
    normalise_timeout,
    normalise_urls,
    quote_stream_id,
)
from rstream.client.retry import (
    RETRYABLE_STATUSES,
    RetryableError,
    blocking_policy,
    default_template,
    parse_retry_after,
    single_attempt,
)
from rstream.core.wire import STORE_ID_HEADER
from rstream.errors import (
    AuthError,
    ClientClosed,
    RStreamError,
    ServerError,
    TransportError,
)

__all__ = [
    "Timeout",
    "Token",
    "Transport",
    "describe_failure",
    "json_body",
    "quote_stream_id",
    "raise_for_response",
]

logger = logging.getLogger("rstream.client")

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# 429 and 503 say the server did nothing, so even a POST may be repeated.
_NOTHING_DONE_STATUSES = frozenset({429, 503})


# -- the transport --------------------------------------------------------------


class Transport:
    """The HTTP side of a client: a pooled session to one store served by ``urls``.

    ``urls`` are replicas of one store; a request goes to the last one that
    answered and fails over to the next on a connection error, a 5xx or a 429.
    ``timeout`` is ``(connect, read)`` seconds (one number sets both). ``verify``
    and ``cert`` go to requests (TLS verification is on by default). ``retry`` is
    a template :class:`tenacity.Retrying` (copied, never changed); ``sleep`` is
    what waits between attempts (inject one in tests). Thread-safe.
    """

    urls: tuple[str, ...]
    session: requests.Session
    timeout: tuple[float, float]
    retry: tenacity.Retrying

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: Token = None,
        timeout: Timeout = (3.05, 30.0),
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        retry: tenacity.Retrying | None = None,
        pool_maxsize: int = 10,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if token is not None and not (isinstance(token, str) or callable(token)):
            raise TypeError("token must be a str, a callable returning one, or None")
        if isinstance(token, str):
            token = clean_token(token)
        self.urls = normalise_urls(urls)
        self.timeout = normalise_timeout(timeout)
        self.retry = retry if retry is not None else default_template()
        self._token = token
        self._user_sleep = sleep
        self._closed = threading.Event()
        self._interrupter = Interrupter()
        self._lock = threading.Lock()
        self._good = 0  # index of the URL that answered last
        self.on_store_id: Callable[[str], None] | None = None
        """Called (on the requesting thread) with the ``RStream-Store-Id`` of every
        successful response that has one (the disk cache checks it)."""

        session = requests.Session()
        # max_retries=0: retrying is ours (tenacity), urllib3 must not add its own.
        # Observable: close() shuts down the socket of every connection, and the
        # live tail's close() the one of its request (see rstream.client.interrupt).
        adapter = ObservableAdapter(
            on_socket=self._interrupter.add,
            pool_connections=max(len(self.urls), 1),
            pool_maxsize=pool_maxsize,
            max_retries=0,
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = verify
        session.cert = cert
        session.headers["User-Agent"] = (
            f"rstream/{__version__} python-requests/{requests.__version__}"
        )
        self.session = session

        self.blocking_retry = blocking_policy(retry, sleep=self.sleep)
        """The policy of blocking calls (bounded); derived from ``retry``."""
        self.probe_retry = single_attempt(sleep=self.sleep)
        """One attempt, never repeated (for :meth:`rstream.Client.ping`)."""

    # -- small API ---------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait between attempts; returns early when the transport is closed.

        With the default ``time.sleep`` this waits on the close event, so
        ``close()`` ends the wait at once; an injected ``sleep`` is called as is.
        """
        if self._closed.is_set():
            return
        if self._user_sleep is time.sleep:
            self._closed.wait(seconds)
        else:
            self._user_sleep(seconds)

    def auth_headers(self, *, refresh: bool = False) -> dict[str, str]:
        """``Authorization`` for the token; a callable token is asked on every call.

        ``refresh`` says the last token was refused (a callable is asked again
        either way; a fixed string cannot be refreshed).
        """
        token = self._token
        if callable(token):
            try:
                token = token()
            except Exception as exc:
                raise AuthError(
                    f"the token callable raised {exc!r}; fix it or pass a token string"
                ) from exc
            if token is not None and not isinstance(token, str):
                raise AuthError(
                    f"the token callable returned {type(token).__name__}, not str; "
                    "it must return the bearer token (or None for none)"
                )
            if token is not None:
                token = clean_token(token)
        if not token:
            return {}
        return {"Authorization": f"Bearer {token}"}

    def url_for(self, index: int, path: str) -> str:
        """Base URL ``index`` (modulo the number of URLs) joined with ``path``."""
        if not path.startswith("/"):
            path = "/" + path
        return self.urls[index % len(self.urls)] + path

    @property
    def current_index(self) -> int:
        """The index of the URL that answered last (where the next request goes first)."""
        return self._good

    # -- requests ----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        stream_id: str | None = None,
        timeout: Timeout | None = None,
        retry: tenacity.Retrying | None = None,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send a request with retries and failover; return a successful response.

        Raises the :mod:`rstream.errors` exception of an error response (see
        :func:`raise_for_response`), :class:`~rstream.TransportError` when no
        server could be reached within the retry policy, and
        :class:`~rstream.ClientClosed` after :meth:`close`. ``stream_id`` names
        the stream in errors. ``retry`` replaces the blocking policy for this call
        (for example ``tenacity.Retrying(stop=stop_after_attempt(1))``
        passed through :func:`rstream.client.retry.blocking_policy`). A POST is
        repeated only when it certainly had no effect (connection refused, 429, 503)
        unless ``idempotent=True``.
        """
        self._check_open()
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        policy = (retry if retry is not None else self.blocking_retry).copy()
        call = _Call(
            method=method,
            path=path,
            params=params,
            json=json,
            data=data,
            headers=headers,
            stream=stream,
            stream_id=stream_id,
            timeout=self.timeout if timeout is None else normalise_timeout(timeout),
            idempotent=idempotent,
        )
        try:
            return policy(self._attempt, call)
        except RetryableError as exc:
            self._check_open()
            attempts = policy.statistics.get("attempt_number", 1)
            self._give_up(exc, call, attempts)

    def get_json(
        self,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        stream_id: str | None = None,
    ) -> Any:
        """``GET path`` and return its parsed JSON body."""
        response = self.request("GET", path, params=params, stream_id=stream_id)
        try:
            return json_body(response)
        finally:
            response.close()

    def close(self) -> None:
        """Stop: wake every call in flight and a backoff wait, close the connections.

        Returns at once, whatever the server does; idempotent, from any thread.
        """
        if self._closed.is_set():
            return
        self._closed.set()  # first: a woken call sees it and raises ClientClosed
        self._interrupter.interrupt()
        self.session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Transport {', '.join(self.urls)} ({state})>"

    # -- internals ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ClientClosed("the client is closed; create a new rstream.Client")

    def _attempt(self, call: _Call) -> requests.Response:
        """One attempt: each URL once, starting with the one that answered last."""
        self._check_open()
        start = self._good
        count = len(self.urls)
        last: RetryableError | None = None
        names: list[str] = []  # the URLs whose host name did not resolve
        for k in range(count):
            index = (start + k) % count
            url = self.url_for(index, call.path)
            try:
                response = self._send(call, url)
            except (requests.RequestException, OSError, ValueError, AttributeError) as exc:
                self._check_open()  # the dying read of a closed session is not news
                if not isinstance(exc, requests.RequestException):
                    raise
                if is_name_error(exc):
                    names.append(f"{url}: {describe_failure(exc, call.timeout)}")
                else:
                    last = _failed(call, url, exc)
                continue
            refusal = _refused(call, url, response)
            if refusal is not None:
                last = refusal
                continue
            return self._answered(call, index, response)
        # Next time, begin with the URL after the one that failed first; with
        # one URL this is a no-op.
        with self._lock:
            self._good = (start + 1) % count
        if last is None:  # no host name resolved: retrying would not change that
            raise TransportError(
                f"{call.method} {call.path} failed: {'; '.join(names)}. Check the URL."
            )
        raise last

    def _answered(self, call: _Call, index: int, response: requests.Response) -> requests.Response:
        """``response`` of URL ``index``, which answered: go there first from now on."""
        if self._good != index:
            logger.info("failing over to %s", self.urls[index])
            with self._lock:
                self._good = index
        if response.status_code >= 400:
            try:
                raise_for_response(response, stream_id=call.stream_id)
            finally:
                response.close()
        store_id = response.headers.get(STORE_ID_HEADER)
        if store_id and self.on_store_id is not None:
            self.on_store_id(store_id)
        return response

    def _send(self, call: _Call, url: str) -> requests.Response:
        headers = dict(call.headers or {})
        headers.update(self.auth_headers())
        response = self._send_once(call, url, headers)
        if response.status_code == 401 and callable(self._token):
            # A callable token may have expired: ask for a fresh one, once.
            response.close()
            headers.update(self.auth_headers(refresh=True))
            response = self._send_once(call, url, headers)
        return response

    def _send_once(self, call: _Call, url: str, headers: dict[str, str]) -> requests.Response:
        return self.session.request(
            call.method,
            url,
            params=call.params,
            json=call.json,
            data=call.data,
            headers=headers,
            stream=call.stream,
            timeout=call.timeout,
        )

    def _give_up(self, exc: RetryableError, call: _Call, attempts: int) -> NoReturn:
        if exc.response is not None:
            try:
                raise_for_response(exc.response, stream_id=call.stream_id)
            except RStreamError as err:
                if isinstance(err, ServerError):
                    err.args = (f"{err.args[0]} (after {attempts} attempt(s))",)
                raise err from None
        servers = ", ".join(self.urls)
        cause = exc.cause
        reason = str(exc) if cause is None else describe_failure(cause, call.timeout)
        raise TransportError(
            f"{call.method} {call.path} failed: no server answered after {attempts} "
            f"attempt(s) ({servers}); last error: {reason}. "
            "Check that the server is running and reachable."
        ) from exc.cause


def _failed(call: _Call, url: str, exc: requests.RequestException) -> RetryableError:
    """What the failure ``exc`` of ``call`` to ``url`` means for the next attempt.

    Raises :class:`~rstream.TransportError` when repeating cannot help (a TLS
    or URL problem) or might do the work twice (a request that was sent and
    is not idempotent).
    """
    reason = describe_failure(exc, call.timeout)
    if not is_transient(exc):
        raise TransportError(
            f"{call.method} {url} failed: {reason}; "
            "check the URL and the TLS settings (verify=, cert=)"
        ) from exc
    connect_error = is_connect_error(exc)
    # Refused (or unreachable) at once, not a connect timeout: see
    # retry.stop_refused_after.
    refused = connect_error and not isinstance(exc, requests.ConnectTimeout)
    if not (call.idempotent or connect_error):
        raise TransportError(
            f"{call.method} {url} failed after it was sent ({reason}); "
            "it may or may not have taken effect"
        ) from exc
    logger.info("%s %s failed: %s", call.method, url, reason)
    return RetryableError(f"{call.method} {url}: {reason}", url=url, cause=exc, refused=refused)


def _refused(call: _Call, url: str, response: requests.Response) -> RetryableError | None:
    """A :class:`RetryableError` if ``response`` says to try again (closing it), else None."""
    status = response.status_code
    if status not in RETRYABLE_STATUSES or not (
        call.idempotent or status in _NOTHING_DONE_STATUSES
    ):
        return None
    response.content  # noqa: B018  (read the small error body, free the connection)
    response.close()
    logger.info("%s %s answered %s", call.method, url, status)
    return RetryableError(
        f"{call.method} {url}: {status}",
        url=url,
        response=response,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Call:
    """The arguments of one request, shared by its attempts."""

    method: str
    path: str
    params: Mapping[str, Any] | None
    json: Any
    data: bytes | str | None
    headers: Mapping[str, str] | None
    stream: bool
    stream_id: str | None
    timeout: tuple[float, float]
    idempotent: bool
