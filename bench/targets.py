"""The issue's targets for the data plane, read back from a finished report and printed as one table.

Each target names a row of a bench section (title prefix, group, implementation) and a bound: a
ratio (Keyshift ÷ the bare driver or primitive, median of interleaved rounds, higher is better) or
a wall time in seconds (median of fresh processes, lower is better). The table repeats the median
and the spread the sections measured, so a reader sees every target in one place; rows whose
bench did not run (or could not, e.g. PostgreSQL unreachable) say so.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.common import Report, Row, Section


@dataclass(frozen=True)
class Target:
    label: str
    section: str  # title prefix
    group: str
    name: str
    bound: float
    seconds: bool = False  # a wall time (row value, lower is better) instead of a ratio


_STORES = "stores: records vs raw driver + AESGCM"
_CRYPTO = "crypto: record encrypt/decrypt"
_KS = "Keyshift records"
_AD = "Keyshift RecordCipher + per-record AD (AdPrefix)"

TARGETS: tuple[Target, ...] = (
    *(
        Target(f"{case} ({db})", f"{_STORES} ({db})", f"{case} {unit}", _KS, bound)
        for db in ("SQLite", "PostgreSQL")
        for case, unit, bound in (
            ("point get", "ops/s", 0.5),
            ("scan", "rows/s", 0.7),
            ("put_many", "rows/s", 0.75),
        )
    ),
    Target("1 KiB encrypt incl. per-record AD", _CRYPTO, "1 KiB encrypt", _AD, 0.8),
    Target("1 KiB decrypt incl. per-record AD", _CRYPTO, "1 KiB decrypt", _AD, 0.8),
    Target(
        "keyshift --help (idle machine)", "CLI start-up", "start-up", "keyshift --help", 0.3, seconds=True
    ),
    Target(
        "keyshift data get (idle machine)", "CLI start-up", "start-up", "keyshift data get", 0.6, seconds=True
    ),
)


def _find(report: Report, target: Target) -> Row | None:
    for section in report.sections:
        if not section.title.startswith(target.section):
            continue
        section.compute_ratios()
        for row in section.rows:
            if row.group == target.group and row.name == target.name:
                return row
    return None


def summary(report: Report) -> Section | None:
    """A section listing every target with what was measured; None if no target's bench ran."""
    section = Section(
        "targets (issue 14): Keyshift ÷ bare driver / primitive, and CLI wall time",
        "ratio rows: median of per-round ratios (spread min-max), >= bound is met; time rows: median "
        "wall seconds of fresh processes, <= bound is met (the bound is for an idle machine)",
    )
    found = False
    for target in TARGETS:
        row = _find(report, target)
        if row is None or row.value is None:
            section.unavailable(target.label, "-", "not measured in this run")
            continue
        found = True
        if target.seconds:
            met = row.value <= target.bound
            shown = Row(target.label, f"<= {target.bound} s", row.value, "s", note=row.note)
        else:
            ratio = row.ratio if row.ratio is not None else 0.0
            met = ratio >= target.bound
            spread = f"spread {row.spread[0]:.2f}-{row.spread[1]:.2f}" if row.spread else "no spread"
            shown = Row(target.label, f">= {target.bound}x", ratio, "x", note=spread)
        shown.note = f"{'met' if met else 'NOT met'}; {shown.note}"
        section.rows.append(shown)
    return section if found else None
