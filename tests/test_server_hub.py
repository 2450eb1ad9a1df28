"""The live hub on its own: notifications, the tail cache and the slow-subscriber rule."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextvars import Context
from typing import TypeVarTuple, Unpack

import pytest

from rstream.core.entry import Entry, EntryKind
from rstream.core.log import MemoryLog
from rstream.server.limits import Limits
from rstream.server.live import Hub


class CountingLog(MemoryLog):
    """A MemoryLog that counts storage reads of changes."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def changes_since(self, rev: int) -> list[Entry]:
        self.reads += 1
        return super().changes_since(rev)


def write(log: MemoryLog, seconds: int, kind: EntryKind = EntryKind.MUTATION) -> Entry:
    return log.append(Entry(seconds, kind, {"t": seconds}))


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_one_storage_read_serves_every_subscriber() -> None:
    async def main() -> None:
        hub = Hub(Limits())
        hub.bind(asyncio.get_running_loop())
        log = CountingLog()
        write(log, 1, EntryKind.SNAPSHOT)
        subs = [hub.subscribe("s") for _ in range(50)]
        for sub in subs:
            assert [c.rev for c in await hub.changes_after(sub, 0, log)] == [1]
            hub.mark_sent(sub, 1)
        reads = log.reads
        write(log, 2)
        write(log, 3)
        hub.notify("s", 2)
        hub.notify("s", 3)
        await asyncio.sleep(0)  # the dispatch is scheduled on the loop
        assert all(sub.wake.is_set() for sub in subs)
        for sub in subs:
            assert [c.rev for c in await hub.changes_after(sub, 1, log)] == [2, 3]
        assert log.reads == reads + 1

    run(main())


def test_a_subscriber_behind_the_cache_reads_for_itself() -> None:
    async def main() -> None:
        hub = Hub(Limits(tail_cache_events=2))
        hub.bind(asyncio.get_running_loop())
        log = CountingLog()
        write(log, 1, EntryKind.SNAPSHOT)
        sub = hub.subscribe("s")
        assert len(await hub.changes_after(sub, 0, log)) == 1
        for t in range(2, 7):
            write(log, t)
            hub.notify("s", t)
        await asyncio.sleep(0)
        assert [c.rev for c in await hub.changes_after(sub, 4, log)] == [5, 6]
        assert [c.rev for c in await hub.changes_after(sub, 1, log)] == [2, 3, 4, 5, 6]

    run(main())


def test_amends_reach_subscribers_in_revision_order() -> None:
    async def main() -> None:
        hub = Hub(Limits())
        hub.bind(asyncio.get_running_loop())
        log = CountingLog()
        write(log, 1, EntryKind.SNAPSHOT)
        write(log, 2)
        sub = hub.subscribe("s")
        assert [c.rev for c in await hub.changes_after(sub, 0, log)] == [1, 2]
        amended = log.amend(Entry(2, EntryKind.MUTATION, {"t": 2.5}))
        hub.notify("s", amended.rev or 0)
        await asyncio.sleep(0)
        changes = await hub.changes_after(sub, 2, log)
        assert [(c.rev, c.micros) for c in changes] == [(3, 2_000_000)]
        assert b'"t":2.5' in changes[0].payload

    run(main())


def test_lag_counts_only_while_blocked_in_send() -> None:
    async def main() -> None:
        hub = Hub(Limits(subscriber_events=3, subscriber_bytes=10_000))
        hub.bind(asyncio.get_running_loop())
        dropped: list[str] = []
        busy, fetching, bytes_heavy = (hub.subscribe("s") for _ in range(3))
        for name, sub in (("busy", busy), ("fetching", fetching), ("bytes", bytes_heavy)):
            hub.mark_sent(sub, 0)
            sub.on_overflow = lambda name=name: dropped.append(name)
        busy.sending = True
        for rev in range(1, 4):
            hub.notify("s", rev, 10)
        await asyncio.sleep(0)
        assert dropped == []  # 3 behind is the limit, not past it
        hub.notify("s", 4, 10)
        await asyncio.sleep(0)
        assert dropped == ["busy"]
        assert busy.overflowed
        assert hub.overflows == 1
        hub.mark_sent(fetching, 4)
        bytes_heavy.sending = True
        hub.mark_sent(bytes_heavy, 4)
        hub.notify("s", 5, 20_000)
        await asyncio.sleep(0)
        assert dropped == ["busy", "bytes"]  # "fetching" was not sending

    run(main())


def test_subscriber_limit_and_close() -> None:
    async def main() -> None:
        hub = Hub(Limits(max_subscribers=2))
        hub.bind(asyncio.get_running_loop())
        a, b = hub.subscribe("s"), hub.subscribe("s")
        with pytest.raises(Exception, match="subscribers") as info:
            hub.subscribe("s")
        assert getattr(info.value, "status", None) == 429
        hub.subscribe("other")
        hub.unsubscribe(a)
        hub.unsubscribe(a)  # idempotent
        c = hub.subscribe("s")
        hub.close()
        assert b.closing and c.closing and b.wake.is_set()  # noqa: PT018
        with pytest.raises(Exception, match="shutting down"):
            hub.subscribe("s")

    run(main())


def test_notify_from_other_threads_and_before_bind() -> None:
    hub = Hub()
    hub.notify("s", 1)  # unbound: nobody listens, nothing fails

    async def main() -> None:
        hub.bind(asyncio.get_running_loop())
        sub = hub.subscribe("s")
        hub.mark_sent(sub, 0)
        threads = [threading.Thread(target=hub.notify, args=("s", rev, 1)) for rev in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        await asyncio.wait_for(sub.wake.wait(), 5)

    run(main())


_Ts = TypeVarTuple("_Ts")


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that records what other threads ask it to run."""

    def __init__(self) -> None:
        super().__init__()
        self.woken: list[object] = []

    def call_soon_threadsafe(
        self,
        callback: Callable[[Unpack[_Ts]], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> asyncio.Handle:
        self.woken.append(callback)
        return super().call_soon_threadsafe(callback, *args, context=context)


def test_a_write_nobody_follows_does_not_wake_the_loop() -> None:
    loop = CountingLoop()
    try:
        hub = Hub(Limits())
        hub.bind(loop)
        hub.notify("s", 1)
        assert loop.woken == []
        subscriber = hub.subscribe("s")
        hub.notify("s", 2)
        assert len(loop.woken) == 1
        hub.unsubscribe(subscriber)
        hub.notify("s", 3)
        assert len(loop.woken) == 1
    finally:
        loop.close()
