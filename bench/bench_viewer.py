"""The viewer at 100 changes per second, measured in headless Chromium.

A real ``rstream serve`` subprocess on a SQLite file; a writer thread posts an
entry 100 times a second (a snapshot, then mutations made before the clock
starts, posted two at a time through ``POST .../entries``, so the writer keeps
up on a busy machine) while the page follows the stream live with a field charted. The page is
measured with the browser's performance API over ``SECONDS``:

- frames painted per second, and frames dropped (``requestAnimationFrame``
  gaps longer than 1.5 frames at 60 Hz, counted in missed frames);
- main-thread busy time in long tasks (``PerformanceObserver`` ``longtask``:
  tasks over 50 ms), total and as a share of the time;
- changes the page applied per second, and how far behind the log it was at
  the end (revisions).

Two states: the demo robot (about 20 fields), and a state of 3,000 numeric
fields of which 10 change per write. Headless Chromium renders without a GPU,
so frame figures are a floor for a desktop browser.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from rstream.core.mutation import build_mutation, copy_json
from rstream.core.timestamps import format_rfc3339
from rstream.demo import RobotSimulator
from tests.browser import chromium, wait_js
from tests.serverutil import ServerProcess

RATE = 100.0
SECONDS = 5.0
T0 = 1_700_000_000.0
BATCH = 2  # entries per request: 50 requests a second keep the writer in step on a busy machine

_MEASURE = """
const stats = { frames: 0, dropped: 0, longMs: 0, longCount: 0, start: performance.now(),
                applied: window.rstreamViewer.applied, busyMs: window.rstreamViewer.busyMs };
window.benchStats = stats;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) { stats.longMs += e.duration; stats.longCount += 1; }
}).observe({ type: "longtask" });
let last = performance.now();
const frame = 1000 / 60;
const tick = (now) => {
  const gap = now - last;
  last = now;
  stats.frames += 1;
  if (gap > 1.5 * frame) stats.dropped += Math.round(gap / frame) - 1;
  if (!stats.done) requestAnimationFrame(tick);
};
requestAnimationFrame(tick);
"""

_RESULT = """
const stats = window.benchStats;
stats.done = true;
stats.elapsed = performance.now() - stats.start;
stats.applied = window.rstreamViewer.applied - stats.applied;
stats.busyMs = window.rstreamViewer.busyMs - stats.busyMs;
const revs = window.rstreamViewer.revisions;
stats.rev = revs.length ? revs[revs.length - 1].rev : 0;
return stats;
"""


def _robot() -> Callable[[int], dict[str, Any]]:
    robot = RobotSimulator(seed=1)
    return lambda i: robot.step(1 / RATE)


def _large() -> Callable[[int], dict[str, Any]]:
    state = {f"group{g:02d}": {f"field{f:03d}": 0.0 for f in range(100)} for g in range(30)}

    def step(i: int) -> dict[str, Any]:
        for k in range(10):
            n = (i * 10 + k) % 3000
            state[f"group{n // 100:02d}"][f"field{n % 100:03d}"] = round(i * 0.01 + k, 3)
        return state

    return step


def _entries(make: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """The writes, made before the clock starts: a snapshot, then one mutation per change."""
    first = copy_json(make(0))
    out = [{"timestamp": format_rfc3339(int(T0 * 1e6)), "type": 0, "data": first}]
    state = first
    for i in range(1, int(RATE * SECONDS * 1.5)):
        new = copy_json(make(i))
        when = format_rfc3339(int(T0 * 1e6) + i * int(1e6 / RATE))
        out.append({"timestamp": when, "type": 1, "data": build_mutation(state, new)})
        state = new
    return out


def _write(url: str, stream_id: str, entries: list[dict[str, Any]], stop: threading.Event) -> None:
    with requests.Session() as http:
        started = time.monotonic()
        for i in range(0, len(entries), BATCH):
            if stop.is_set():
                return
            batch = entries[i : i + BATCH]
            http.post(
                f"{url}/v1/streams/{stream_id}/entries", json=batch, timeout=10
            ).raise_for_status()
            # Paced to RATE on the monotonic clock; a late write is not made up twice over.
            stop.wait(max(0.0, started + (i + BATCH) / RATE - time.monotonic()))


def _run(
    driver: Any, url: str, name: str, make: Callable[[int], dict[str, Any]], pick: str
) -> None:
    stream_id = f"bench-{name}"
    entries = _entries(make)
    requests.post(
        f"{url}/v1/streams/{stream_id}/entries", json=entries[0], timeout=10
    ).raise_for_status()
    driver.get(f"{url}/ui/streams/{stream_id}")
    wait_js(driver, "document.getElementById('tree').dataset.shown.startsWith('live ')")
    driver.find_element("css selector", f"#tree .t-number[data-path='{pick}']").click()
    stop = threading.Event()
    writer = threading.Thread(target=_write, args=(url, stream_id, entries[1:], stop))
    driver.execute_script(_MEASURE)
    writer.start()
    try:
        time.sleep(SECONDS)  # the measured interval itself
    finally:
        stop.set()
        writer.join()
    stats = driver.execute_script(_RESULT)
    revision = requests.get(f"{url}/v1/streams/{stream_id}", timeout=10).json()["revision"]
    seconds = stats["elapsed"] / 1000
    driver.get("about:blank")
    print(
        f"{name:>6}: {stats['frames'] / seconds:5.1f} frames/s, {stats['dropped']} dropped; "
        f"long tasks {stats['longCount']} ({stats['longMs']:.0f} ms, "
        f"{stats['longMs'] / stats['elapsed']:.1%} of the time); viewer code "
        f"{stats['busyMs'] / stats['elapsed']:.1%} of the time; "
        f"{stats['applied'] / seconds:5.1f} changes/s applied, "
        f"{revision - stats['rev']} revisions behind at the end"
    )


def main() -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        chromium() as driver,
        ServerProcess(f"sqlite:///{Path(tmp) / 'bench.db'}") as server,
    ):
        print(f"{RATE:g} changes/s for {SECONDS:g} s each, measured in the page:")
        _run(driver, server.url, "robot", _robot(), '["battery"]')
        _run(driver, server.url, "large", _large(), '["group00","field000"]')


if __name__ == "__main__":
    main()
