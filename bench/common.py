"""Bench helpers: best-of-N timing and a Report that prints Rich tables and writes JSON.

A bench module (bench/bench_*.py) exposes `run(report: Report) -> None` and adds sections:

    section = report.section("records", "what is measured, on what")
    section.add("1 KiB encrypt", "pyca AESGCM", ops_per_second(fn), baseline=True)
    section.add("1 KiB encrypt", "Keyshift", ops_per_second(other))
    section.unavailable("1 KiB encrypt", "Tink", "ImportError: no module named tink")

Rows are grouped; each group's ratio column is value / the group's baseline value (same unit).
Numbers are for side-by-side comparison in one run on one machine, never a CI gate.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def ops_per_second(
    fn: Callable[[], object],
    *,
    repeat: int = 5,
    min_time: float = 0.1,
    warmup: int = 3,
    max_calls: int = 1_000_000,
) -> float:
    """Best-of-`repeat` calls per second. Each timed run makes enough calls to last >= min_time."""
    for _ in range(warmup):
        fn()
    calls = 1
    while True:  # calibrate
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or calls >= max_calls:
            break
        calls = min(max_calls, max(calls * 2, int(calls * min_time / max(elapsed, 1e-9) * 1.2)))
    best = calls / elapsed
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = max(best, calls / (time.perf_counter() - start))
    return best


def interleaved_ops_per_second(
    fns: dict[str, Callable[[], object]],
    *,
    repeat: int = 5,
    min_time: float = 0.1,
    warmup: int = 3,
    max_calls: int = 1_000_000,
) -> dict[str, float]:
    """Best-of-`repeat` calls/s for several functions, timed round-robin.

    On a shared machine the load drifts; timing the candidates in turn within each round makes
    every one see the same drift, so their ratios are steadier than back-to-back measurements.
    """
    calls: dict[str, int] = {}
    best: dict[str, float] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        n = 1
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time or n >= max_calls:
                break
            n = min(max_calls, max(n * 2, int(n * min_time / max(elapsed, 1e-9) * 1.2)))
        calls[name] = n
        best[name] = n / elapsed
    for _ in range(repeat - 1):
        for name, fn in fns.items():
            n = calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = max(best[name], n / (time.perf_counter() - start))
    return best


def ab_rounds(
    fns: dict[str, Callable[[], object]],
    *,
    rounds: int = 5,
    min_time: float = 0.2,
    warmup: int = 3,
    max_calls: int = 1_000_000,
    cpu: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Calls/s of each function in each of `rounds` rounds, A/B interleaved.

    Every round times each candidate once, back to back, with the order rotated per round, so
    load drift on a shared machine hits all of them alike. Ratios are taken per round
    (`ratio_stats`), which cancels the drift between rounds too. With `cpu`, it also receives
    each candidate's calls per CPU second of this process in each round (`time.process_time`:
    what the calls cost, not how long they waited for a core).
    """
    names = list(fns)
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        n = 1
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_time / 2 or n >= max_calls:
                break
            n = min(max_calls, max(n * 2, int(n * min_time / max(elapsed, 1e-9) * 0.6)))
        calls[name] = max(1, int(n * min_time / max(elapsed, 1e-9)))
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn, n = fns[name], calls[name]
            cpu_start, start = time.process_time(), time.perf_counter()
            for _ in range(n):
                fn()
            out[name].append(n / (time.perf_counter() - start))
            if cpu is not None:
                cpu.setdefault(name, []).append(n / max(time.process_time() - cpu_start, 1e-9))
    return out


def timed_rounds(
    fns: dict[str, Callable[[], object]], *, rounds: int = 5, cpu: dict[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Seconds of one call of each function per round (for long operations), interleaved and
    rotated like `ab_rounds`. With `cpu`, it also receives the CPU seconds of this process per
    call and round."""
    names = list(fns)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            cpu_start, start = time.process_time(), time.perf_counter()
            fns[name]()
            out[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - cpu_start)
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ratio_stats(ours: list[float], base: list[float]) -> tuple[float, float, float]:
    """Per-round ratios ours/base: (median, min, max)."""
    ratios = [a / b for a, b in zip(ours, base, strict=True)]
    return median(ratios), min(ratios), max(ratios)


def best_seconds(fn: Callable[[], object], *, repeat: int = 3, warmup: int = 1) -> float:
    """Best wall time of one call (for operations that take long on their own)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def human(value: float, unit: str) -> str:
    if unit in {"B/s", "B"}:
        for scale, name in ((1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")):
            if value >= scale:
                return f"{value / scale:,.1f} {name}{unit}"
        return f"{value:,.0f} {unit}"
    if value >= 100:
        return f"{value:,.0f} {unit}"
    return f"{value:,.3g} {unit}"


@dataclass
class Row:
    group: str
    name: str
    value: float | None
    unit: str = "ops/s"
    baseline: bool = False
    note: str = ""
    unavailable: str | None = None
    ratio: float | None = None
    spread: tuple[float, float] | None = None  # min and max of the per-round ratios


@dataclass
class Section:
    title: str
    description: str = ""
    rows: list[Row] = field(default_factory=list)
    higher_is_better: bool = True

    def add(
        self,
        group: str,
        name: str,
        value: float,
        unit: str = "ops/s",
        *,
        baseline: bool = False,
        note: str = "",
    ) -> Row:
        row = Row(group, name, float(value), unit, baseline, note)
        self.rows.append(row)
        return row

    def add_rounds(
        self,
        group: str,
        name: str,
        rates: list[float],
        base: list[float] | None = None,
        unit: str = "ops/s",
        *,
        note: str = "",
    ) -> Row:
        """A row from per-round rates: value = median rate; with `base` (the baseline's rates of
        the same rounds), ratio = median of the per-round ratios and spread = their min-max.
        Without `base` the row is the group's baseline."""
        row = Row(group, name, median(rates), unit, base is None, note)
        if base is not None:
            mid, lo, hi = ratio_stats(rates, base)
            row.ratio, row.spread = mid, (lo, hi)
            row.note = f"ratio spread {lo:.2f}-{hi:.2f} over {len(rates)} rounds" + (
                f"; {note}" if note else ""
            )
        self.rows.append(row)
        return row

    def unavailable(self, group: str, name: str, reason: str) -> Row:
        row = Row(group, name, None, unavailable=reason)
        self.rows.append(row)
        return row

    def compute_ratios(self) -> None:
        baselines = {r.group: r for r in self.rows if r.baseline and r.value}
        for row in self.rows:
            if row.spread is not None:
                continue  # a median of per-round ratios, set by add_rounds
            base = baselines.get(row.group)
            if base and row.value is not None and base.value and row.unit == base.unit:
                row.ratio = row.value / base.value

    def ratio(self, group: str, name: str) -> float | None:
        self.compute_ratios()
        for row in self.rows:
            if row.group == group and row.name == name:
                return row.ratio
        return None

    def value(self, group: str, name: str) -> float | None:
        for row in self.rows:
            if row.group == group and row.name == name:
                return row.value
        return None


class Report:
    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.failures: dict[str, str] = {}
        self.started = datetime.now(UTC)

    def section(self, title: str, description: str = "") -> Section:
        section = Section(title, description)
        self.sections.append(section)
        return section

    def fail(self, module: str, reason: str) -> None:
        self.failures[module] = reason

    def print_section(self, section: Section) -> None:
        from rich.console import Console
        from rich.table import Table

        section.compute_ratios()
        table = Table(title=section.title, caption=section.description or None, title_justify="left")
        for column, justify in (("case", "left"), ("implementation", "left"), ("result", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        table.add_column("ratio", justify="right")
        table.add_column("note")
        previous = None
        for row in section.rows:
            group = row.group if row.group != previous else ""
            previous = row.group
            if row.unavailable is not None:
                table.add_row(group, row.name, "unavailable", "", row.unavailable)
                continue
            ratio = "1.00 (base)" if row.baseline else (f"{row.ratio:.2f}x" if row.ratio is not None else "")
            table.add_row(group, row.name, human(row.value or 0.0, row.unit), ratio, row.note)
        console = Console() if sys.stdout.isatty() else Console(width=150)
        console.print(table)

    def to_json(self) -> dict[str, Any]:
        for section in self.sections:
            section.compute_ratios()
        return {
            "started": self.started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "machine": {
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "sections": [
                {"title": s.title, "description": s.description, "rows": [asdict(r) for r in s.rows]}
                for s in self.sections
            ],
            "failures": self.failures,
        }

    def write(self, path: Path | None = None) -> Path:
        target = path or RESULTS_DIR / "latest.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return target
