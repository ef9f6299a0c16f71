"""Run every bench/bench_*.py module: `python -m bench [NAME ...]` (e.g. `python -m bench crypto`).

Each module exposes `run(report: Report) -> None`. A module that fails to import or to run is
reported with the reason and the others still run. Last, the issue's targets measured in this run
are listed in one table (bench/targets.py). Results: bench/results/latest.json.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.common import Report
from bench.targets import summary

HERE = Path(__file__).resolve().parent


def discover(selected: list[str]) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if selected:
        wanted = {s.removeprefix("bench_") for s in selected}
        names = [n for n in names if n.removeprefix("bench_") in wanted]
    return names


def main(argv: list[str]) -> int:
    report = Report()
    names = discover(argv)
    if not names:
        print(f"no bench modules matched {argv!r}", file=sys.stderr)
        return 2
    for name in names:
        try:
            module = importlib.import_module(f"bench.{name}")
        except Exception as exc:
            reason = f"import failed: {type(exc).__name__}: {exc}"
            print(f"[{name}] {reason}", file=sys.stderr)
            report.fail(name, reason)
            continue
        run = getattr(module, "run", None)
        if not callable(run):
            report.fail(name, "no run(report) function")
            print(f"[{name}] no run(report) function", file=sys.stderr)
            continue
        first = len(report.sections)
        start = time.perf_counter()
        try:
            run(report)
        except Exception as exc:
            reason = f"run failed: {type(exc).__name__}: {exc}"
            traceback.print_exc()
            report.fail(name, reason)
        for section in report.sections[first:]:
            report.print_section(section)
        print(f"[{name}] {time.perf_counter() - start:.1f} s")
    targets = summary(report)
    if targets is not None:
        report.sections.append(targets)
        report.print_section(targets)
    path = report.write()
    print(f"results: {path}")
    for name, reason in report.failures.items():
        print(f"FAILED {name}: {reason}", file=sys.stderr)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
