"""The shipped alert rules and Grafana dashboard only name series and labels Keyshift exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from keyshift.api.state_metrics import StateCollector
from keyshift.observability import metrics
from keyshift.observability.collectors import CacheCollector
from keyshift.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]
SERIES = re.compile(r"\b(keyshift_[a-z_]+)(\{([^}]*)\})?")
LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
BY = re.compile(r"by \(([^)]*)\)")


def _exported(rt: Runtime) -> dict[str, set[str]]:
    """Sample name -> label names, from the metric objects and the collectors' real output."""
    out: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, metrics.Counter):
            out[f"{obj._name}_total"] = set(obj._labelnames)
        elif isinstance(obj, metrics.Histogram):
            for suffix in ("_bucket", "_count", "_sum"):
                out[f"{obj._name}{suffix}"] = set(obj._labelnames) | (
                    {"le"} if suffix == "_bucket" else set()
                )
        elif isinstance(obj, metrics.Gauge):
            out[obj._name] = set(obj._labelnames)
    for collector in (CacheCollector(), StateCollector(rt)):
        for family in collector.collect():
            names = {s.name for s in family.samples} or {family.name}
            labels = {k for s in family.samples for k in s.labels} | set(getattr(family, "_labelnames", ()))
            for n in names:
                out.setdefault(n, set()).update(labels)
    return out


def _exprs() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    dash = json.loads((ROOT / "deploy/grafana/keyshift.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    return exprs


def test_every_series_and_label_in_alerts_and_dashboard_is_exported(sqlite_rt: Runtime) -> None:
    from revocation.helpers import cmk_world

    cmk_world(sqlite_rt, rows=1)  # so the state collector has a policy and a job to report
    exported = _exported(sqlite_rt)
    exprs = _exprs()
    assert len(exprs) >= 30
    for expr in exprs:
        names = [m.group(1) for m in SERIES.finditer(expr)]
        assert names, expr
        for m in SERIES.finditer(expr):
            name = m.group(1)
            assert name in exported, f"{name} in {expr!r} is not exported"
            for key in LABEL.findall(m.group(3) or ""):
                assert key in exported[name], f"label {key} of {name} in {expr!r}"
        grouped = {k.strip() for b in BY.findall(expr) for k in b.split(",")}
        available = set().union(*(exported[n] for n in names))
        assert grouped <= available, f"{expr!r} groups by {grouped - available}"
