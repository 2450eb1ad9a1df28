"""Run the benchmarks: every ``bench/bench_*.py`` module's ``main()``, in name order.

``python -m bench`` runs them all; ``python -m bench mutation state_at`` runs the
named ones. Options after one name go to that benchmark's ``main(argv)``
(``python -m bench retention --duration 300``). Benchmarks measure and print
ratios measured in one run; they never assert timings.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(
        info.name.removeprefix("bench_")
        for info in pkgutil.iter_modules([str(here)])
        if info.name.startswith("bench_")
    )
    first = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    wanted, options = argv[:first], argv[first:]
    if options and len(wanted) != 1:
        print(f"options ({' '.join(options)}) go to one benchmark: name it first")
        return 2
    wanted = wanted or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(names)}")
        return 2
    for name in wanted:
        module = importlib.import_module(f"bench.bench_{name}")
        print(f"== {name} ==", flush=True)
        started = time.perf_counter()
        if options:
            module.main(options)
        else:
            module.main()
        print(f"   ({time.perf_counter() - started:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
