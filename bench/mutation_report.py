"""Print the mutation score of each core file from mutmut's results.

``make mutation`` runs mutmut on ``rstream/core`` and then this script, which
reads what mutmut recorded (``mutants/<file>.meta``) and prints one row per
file: mutants, killed, survived, excluded, score. The score counts only
mutants that change behaviour: a mutant listed in ``tests/mutation_exclusions.txt``
(text of an error message, each with the reason) is left out of it. A mutant
that timed out counts as killed (the tests noticed it never finished); one that
had no test counts as survived; one not run yet (an interrupted run) is shown
apart and left out of the score.

    python bench/mutation_report.py [--fail-under 95] [--survivors]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

MUTANTS = Path("mutants")
CORE = Path("rstream/core")
EXCLUSIONS = Path("tests/mutation_exclusions.txt")

# mutmut's exit codes (mutmut/stats.py): which ones mean the tests noticed.
KILLED_CODES = {1, 3, 36, 24, -24, 152, 255}


@dataclass
class FileScore:
    """The mutants of one source file, by outcome."""

    path: str
    killed: list[str] = field(default_factory=list)
    survived: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.killed) + len(self.survived) + len(self.excluded) + len(self.not_run)

    @property
    def score(self) -> float:
        """Killed among the mutants that count, in percent (100 if none count)."""
        counted = len(self.killed) + len(self.survived)
        return 100.0 * len(self.killed) / counted if counted else 100.0


def load_exclusions(path: Path) -> dict[str, str]:
    """Mutant name -> reason, from lines ``NAME  reason``; ``#`` starts a comment.

    Raises ``ValueError`` for a line without a reason.
    """
    exclusions: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        if not reason.strip():
            raise ValueError(f"{path}:{number}: {name} has no reason; write why it is excluded")
        exclusions[name] = reason.strip()
    return exclusions


def score_file(source: Path, exclusions: dict[str, str]) -> FileScore | None:
    """The outcome of each mutant of ``source``, or None if mutmut has no results."""
    meta = MUTANTS / (str(source) + ".meta")
    if not meta.exists():
        return None
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    result = FileScore(str(source))
    for name, code in sorted(codes.items()):
        if name in exclusions:
            result.excluded.append(name)
        elif code is None:
            result.not_run.append(name)
        elif code in KILLED_CODES:
            result.killed.append(name)
        else:
            result.survived.append(name)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail-under", type=float, help="exit 1 if a file scores less")
    parser.add_argument("--survivors", action="store_true", help="list the surviving mutants")
    args = parser.parse_args(argv)

    exclusions = load_exclusions(EXCLUSIONS) if EXCLUSIONS.exists() else {}
    found = [s for p in sorted(CORE.glob("*.py")) if (s := score_file(p, exclusions))]
    stale = set(exclusions) - {name for s in found for name in s.excluded}
    scores = [s for s in found if s.killed or s.survived]
    if not scores:
        print("no mutmut results under mutants/: run `make mutation` first")
        return 1

    for name in sorted(stale):
        print(f"warning: {EXCLUSIONS} lists {name}, which mutmut did not generate")

    header = (
        f"{'file':<28} {'mutants':>8} {'killed':>7} {'survived':>9} {'excluded':>9}"
        f" {'not run':>8} {'score':>7}"
    )
    print(header)
    print("-" * len(header))
    for s in scores:
        print(
            f"{s.path:<28} {s.total:>8} {len(s.killed):>7} {len(s.survived):>9}"
            f" {len(s.excluded):>9} {len(s.not_run):>8} {s.score:>6.1f}%"
        )
    if args.survivors:
        for s in scores:
            for name in s.survived:
                print(f"survived: {name}")
    below = [s.path for s in scores if args.fail_under is not None and s.score < args.fail_under]
    if below:
        print(f"below {args.fail_under}%: {', '.join(below)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
