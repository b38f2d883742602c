"""What a run measures, in which order, and within which time: the plan's groups, the cases they make, the time
budget.

A *group* is one pair length (``min_len``-``max_len`` words of prompt + response), a number of rounds and the
frameworks that run in them, alternating, their order rotated between rounds. A *case* is one vocabulary and one
length: the data of the groups that share it. Groups run in the order given, so the plan puts first what matters
most; under ``--time_budget`` a worker that would not finish in the time left is not started and is reported as
not run, and the run ends on time with everything measured so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Group:
    min_len: int
    max_len: int
    rounds: int
    frameworks: list[str]

    @property
    def length(self) -> str:
        return f"{self.min_len}-{self.max_len}"


def parse_plan(text: str | None, a, frameworks: list[str]) -> list[Group]:
    """``--plan "1024:2048 x2: amapo-amapo trl-cpo-simpo; 4096:8192 x1: amapo-amapo"``; without one, a single group
    of ``--min_len``:``--max_len``, ``--rounds`` and ``--frameworks``."""
    if not text:
        return [Group(a.min_len, a.max_len, a.rounds, list(frameworks))]
    groups = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            min_text, lengths, names = part.split(":", 2)
            max_text, rounds_text = lengths.split()[:2]
            min_len, max_len, rounds = int(min_text), int(max_text), int(rounds_text.lstrip("x"))
        except (ValueError, IndexError):
            raise SystemExit(f"--plan: {part!r} is not 'MIN:MAX xROUNDS: FRAMEWORK ...'") from None
        chosen = [name for name in names.split() if name in frameworks]  # unavailable ones were removed already
        if not 2 <= min_len <= max_len or rounds < 1:
            raise SystemExit(f"--plan: {part!r}: need 2 <= MIN <= MAX and ROUNDS >= 1")
        if chosen:
            groups.append(Group(min_len, max_len, rounds, chosen))
    if not groups:
        raise SystemExit("--plan: no group has a framework that can run here")
    return groups


def plan_frameworks(text: str | None) -> list[str]:
    """Every framework a ``--plan`` names, in order of first appearance."""
    names = []
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        names += part.split(":", 2)[2].split() if part.count(":") >= 2 else []
    return list(dict.fromkeys(names))


def rotated(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


@dataclass
class TimeBudget:
    """Seconds a run may take (0: no limit), and what each worker took so far, to foresee the next one."""

    seconds: float
    start: float = field(default_factory=time.perf_counter)
    walls: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def left(self) -> float:
        return float("inf") if not self.seconds else self.seconds - (time.perf_counter() - self.start)

    def expected(self, case: str, framework: str) -> float:
        """The longest wall of this framework in this case so far; else of any worker in this case; else 0."""
        same = self.walls.get((case, framework)) or [w for (c, _), ws in self.walls.items() if c == case for w in ws]
        return max(same, default=0.0)

    def allows(self, case: str, framework: str) -> bool:
        return self.expected(case, framework) <= self.left() and self.left() > 0

    def record(self, case: str, framework: str, seconds: float) -> None:
        self.walls.setdefault((case, framework), []).append(seconds)

    def not_run(self, case: str, framework: str) -> dict:
        return {
            "framework": framework,
            "ok": False,
            "skipped": True,
            "error": f"not run: {max(self.left(), 0):.0f} s of the time budget left, a worker here takes about "
            f"{self.expected(case, framework):.0f} s",
        }
