"""Retry policies: which failures are worth another attempt, and how long to wait.

The policies are :class:`tenacity.Retrying` objects. The transport decides *what*
an attempt is (one pass over the server URLs) and raises :class:`RetryableError` for a
failure that may go away (a connection error, a timeout, a 5xx, a 429); tenacity
decides *whether* and *when* to try again. A user's policy (``Client(retry=...)``)
is a template: it is copied with :meth:`tenacity.Retrying.copy`, never mutated.

Blocking calls (:func:`blocking_policy`): exponential backoff with jitter from
0.5 s, capped at 30 s, at most 5 attempts and 60 s. The live tail
(:func:`reconnect_policy`): full-jitter exponential backoff from 0.5 s, capped
at 30 s, never giving up. For both, what the server asks (``Retry-After``, the
SSE ``retry:`` field) is a floor under the backoff, capped at
:data:`MAX_RETRY_AFTER` (:func:`retry_floor`, the one rule). A blocking call
whose connection is refused (no server listens: stopped, restarting, wrong
port) gives up before :data:`REFUSED_DEADLINE` seconds have passed in all, so
a caller learns of it in seconds, not a minute.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import cast

import requests
import tenacity
from tenacity import RetryCallState
from tenacity.retry import RetryBaseT

__all__ = [
    "DEFAULT_INITIAL_WAIT",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MAX_WAIT",
    "MAX_RETRY_AFTER",
    "REFUSED_DEADLINE",
    "RetryableError",
    "blocking_policy",
    "default_template",
    "is_retryable",
    "parse_retry_after",
    "reconnect_policy",
    "reconnect_wait",
    "retry_floor",
    "single_attempt",
    "stop_refused_after",
    "wait_retry_after",
]

DEFAULT_INITIAL_WAIT = 0.5
DEFAULT_MAX_WAIT = 30.0
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_DELAY = 60.0
# A Retry-After beyond this is treated as this: a misconfigured server must not
# park a client for hours.
MAX_RETRY_AFTER = 300.0
REFUSED_DEADLINE = 2.0

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryableError(Exception):
    """One attempt failed in a way that may succeed later.

    Internal to the retry loop: the transport turns the last one into a public
    error (:class:`~rstream.TransportError` or :class:`~rstream.ServerError`)
    once the policy gives up. ``response`` is the failed response (closed), if
    any; ``cause`` the connection error, if any; ``retry_after`` the server's
    ``Retry-After`` in seconds; ``refused`` whether no connection could be made
    at all (see :class:`stop_refused_after`).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        response: requests.Response | None = None,
        cause: BaseException | None = None,
        retry_after: float | None = None,
        refused: bool = False,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.response = response
        self.cause = cause
        self.retry_after = retry_after
        self.refused = refused


def is_retryable(exc: BaseException) -> bool:
    """Whether tenacity should try again after ``exc``."""
    return isinstance(exc, RetryableError)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.fromtimestamp(now(), UTC)).total_seconds()
    return retry_floor(seconds)


def retry_floor(*asked: float | None) -> float:
    """The least wait before the next attempt that the server asked for: the longest
    of ``asked`` (``Retry-After``, ``retry:``; None: not asked), at least 0 and at
    most :data:`MAX_RETRY_AFTER` seconds."""
    return min(max([0.0, *(seconds or 0.0 for seconds in asked)]), MAX_RETRY_AFTER)


class wait_retry_after(tenacity.wait.wait_base):  # noqa: N801  (tenacity's naming)
    """``max(backoff, Retry-After)``: never retry sooner than the server asked."""

    def __init__(self, backoff: tenacity.wait.WaitBaseT) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self.backoff(retry_state))
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            if isinstance(exc, RetryableError) and exc.retry_after is not None:
                wait = max(wait, exc.retry_after)
        return wait


class stop_refused_after(tenacity.stop.stop_base):  # noqa: N801  (tenacity's naming)
    """Stop when the last attempt's connection was refused and the next one would
    begin ``deadline`` seconds or more after the first.

    Time is the larger of the clock and the sum of the waits, so that a test
    with an injected ``sleep`` sees the deadline as a real caller would.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        outcome = retry_state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        if not (isinstance(exc, RetryableError) and exc.refused):
            return False
        spent = max(retry_state.seconds_since_start or 0.0, retry_state.idle_for)
        return spent + retry_state.upcoming_sleep >= self.deadline


def default_template() -> tenacity.Retrying:
    """The default policy: jittered exponential backoff 0.5 s .. 30 s, 5 attempts, 60 s."""
    return tenacity.Retrying(
        wait=tenacity.wait_exponential_jitter(
            multiplier=DEFAULT_INITIAL_WAIT, max=DEFAULT_MAX_WAIT, jitter=DEFAULT_INITIAL_WAIT
        ),
        stop=tenacity.stop_after_attempt(DEFAULT_MAX_ATTEMPTS)
        | tenacity.stop_after_delay(DEFAULT_MAX_DELAY),
    )


def _derive(
    template: tenacity.Retrying,
    sleep: Callable[[float], None],
    stop: tenacity.stop.StopBaseT | None,
) -> tenacity.Retrying:
    # The user's own retry predicate still applies, but only on top of ours: a
    # 404 or a 401 is never worth repeating whatever the template says.
    retry: RetryBaseT = tenacity.retry_if_exception(is_retryable)
    user_retry = template.retry
    if not _is_tenacity_default_retry(user_retry):
        retry = tenacity.retry_all(retry, user_retry)
    return template.copy(
        sleep=sleep,
        retry=retry,
        wait=wait_retry_after(template.wait),
        stop=template.stop if stop is None else stop,
        reraise=True,
    )


def _is_tenacity_default_retry(retry: object) -> bool:
    # Retrying()'s default is retry_if_exception_type(Exception): "anything",
    # which would only be noise combined with ours.
    return (
        isinstance(retry, tenacity.retry_if_exception_type)
        and getattr(retry, "exception_types", None) is Exception
    )


def blocking_policy(
    template: tenacity.Retrying | None, *, sleep: Callable[[float], None]
) -> tenacity.Retrying:
    """The policy for blocking calls: bounded (the template's stop, or 5 attempts / 60 s),
    and at most :data:`REFUSED_DEADLINE` seconds while connections are refused."""
    template = template or default_template()
    refused = stop_refused_after(REFUSED_DEADLINE)
    # stop_any calls each stop; a plain callable (tenacity allows one) works too.
    stop = tenacity.stop_any(refused, cast(tenacity.stop.stop_base, template.stop))
    return _derive(template, sleep, stop)


def single_attempt(*, sleep: Callable[[float], None]) -> tenacity.Retrying:
    """One attempt (one pass over the server URLs), never repeated: for probes."""
    return _derive(tenacity.Retrying(stop=tenacity.stop_after_attempt(1)), sleep, None)


def reconnect_wait() -> tenacity.wait.wait_base:
    """The live tail's backoff: uniform in [0, 0.5 s * 2**n], capped at 30 s (full jitter)."""
    return tenacity.wait_random_exponential(multiplier=0.5, max=DEFAULT_MAX_WAIT)


def reconnect_policy(
    template: tenacity.Retrying,
    *,
    retry_on: type[BaseException],
    wait: Callable[[RetryCallState], float],
    sleep: Callable[[float], None],
) -> tenacity.Retrying:
    """The live tail's policy: ``template`` copied (never changed) to retry every
    ``retry_on`` error, forever, waiting ``wait`` (which applies :func:`retry_floor`)
    through ``sleep``."""
    return template.copy(
        stop=tenacity.stop_never,
        retry=tenacity.retry_if_exception_type(retry_on),
        wait=wait,
        sleep=sleep,
        reraise=True,
    )
