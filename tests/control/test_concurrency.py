"""Concurrent processes on one home never corrupt state: no duplicate, no lost update, one winner
per race, and a lost optimistic race is a clear ConflictError (SQLite serialises writers with
BEGIN IMMEDIATE; PostgreSQL relies on row versions, unique constraints and row locks)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from control_support import audit_rows, snapshot
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from sqlalchemy import create_engine, text

from keyshift.control import byok, environments, tenants
from keyshift.control.common import get_environment, operation
from keyshift.errors import ConflictError, KeyshiftError
from keyshift.runtime import Runtime

WORKERS = 4
SHARED = [f"shared-{i}" for i in range(6)]


def _open(home: str, url: str | None) -> Runtime:
    return Runtime.open(home=home, database_url=url, principal="operator:proc")


def _create_envs(home: str, url: str | None, idx: int, barrier: Any, out: Any) -> None:
    results: list[tuple[str, str]] = []
    with _open(home, url) as rt:
        barrier.wait()
        for name in [*SHARED, f"own-{idx}-a", f"own-{idx}-b"]:
            try:
                environments.create_environment(rt, "t", name)
                results.append((name, "ok"))
            except KeyshiftError as err:
                results.append((name, f"{type(err).__name__}:{err.code}"))
    out.put(results)


def _enable_feature(home: str, url: str | None, feature: str, barrier: Any, out: Any) -> None:
    conflicts = 0
    with _open(home, url) as rt:
        barrier.wait()
        for _ in range(50):
            try:
                environments.enable_feature(rt, "e1", feature)
                break
            except ConflictError as err:
                assert err.code == "concurrent_update", err.code
                conflicts += 1
    out.put((feature, conflicts))


def _activate(home: str, url: str | None, key: str, barrier: Any, out: Any) -> None:
    with _open(home, url) as rt:
        barrier.wait()
        try:
            byok.activate(rt, "fab", key)
            out.put((key, "ok"))
        except KeyshiftError as err:
            out.put((key, f"{type(err).__name__}:{err.code}"))


def _run(target: Any, args_list: list[tuple[Any, ...]]) -> list[Any]:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(len(args_list)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, out)) for a in args_list]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_concurrent_env_creates_no_duplicates_no_losses(ctl: Runtime, home: Path, db_url: str | None) -> None:
    tenants.create_tenant(ctl, "t")
    ctl.engine.dispose()  # no pooled connection crosses the fork
    results = _run(_create_envs, [(str(home), db_url, i) for i in range(WORKERS)])
    flat = [r for rs in results for r in rs]
    for name in SHARED:
        outcomes = [o for n, o in flat if n == name]
        assert outcomes.count("ok") == 1, (name, outcomes)
        assert all(o.startswith("AlreadyExistsError:") for o in outcomes if o != "ok"), outcomes
    assert all(o == "ok" for n, o in flat if n.startswith("own-"))
    names = sorted(e["name"] for e in environments.list_environments(ctl))
    assert names == sorted([*SHARED, *(f"own-{i}-{s}" for i in range(WORKERS) for s in "ab")])
    creates = [e for e in audit_rows(ctl, "environment.create")]
    assert sum(e.outcome == "ok" for e in creates) == len(names)
    assert sum(e.outcome == "error" for e in creates) == len(SHARED) * (WORKERS - 1)


def test_concurrent_updates_of_one_row_lose_nothing(ctl: Runtime, home: Path, db_url: str | None) -> None:
    tenants.create_tenant(ctl, "t")
    environments.create_environment(ctl, "t", "e1")
    features = ["search", "elastic-tables", "data-lake", "audit-retention"]
    ctl.engine.dispose()
    results = _run(_enable_feature, [(str(home), db_url, f) for f in features])
    assert sorted(f for f, _ in results) == sorted(features)
    assert sorted(environments.show_environment(ctl, "e1")["features"]) == sorted(features)
    conflicts = sum(c for _, c in results)
    refused = [e for e in audit_rows(ctl, "environment.feature.enable") if e.outcome == "error"]
    assert len(refused) == conflicts  # every lost race was a clear, audited refusal, then retried


def test_concurrent_activations_have_exactly_one_winner(
    ctl: Runtime, home: Path, db_url: str | None, tmp_path: Path
) -> None:
    tenants.create_tenant(ctl, "fab", byok=True)
    for i in range(WORKERS):
        key = rsa.generate_private_key(65537, 2048)
        data = pkcs12.serialize_key_and_certificates(
            b"k", key, None, None, serialization.BestAvailableEncryption(b"password1")
        )
        (tmp_path / f"k{i}.pfx").write_bytes(data)
        byok.import_key(ctl, "fab", f"k{i}", file=tmp_path / f"k{i}.pfx", password="password1")
    ctl.engine.dispose()
    results = _run(_activate, [(str(home), db_url, f"k{i}") for i in range(WORKERS)])
    winners = [k for k, o in results if o == "ok"]
    assert len(winners) == 1, results
    losers = {o for _, o in results if o != "ok"}
    assert losers <= {
        "ConflictError:activation_too_soon",
        "ConflictError:activation_in_progress",
        "ConflictError:concurrent_update",
    }, losers
    states = {k["name"]: k["state"] for k in byok.list_keys(ctl, "fab")}
    assert sorted(states.values()) == ["active"] + ["available"] * (WORKERS - 1)
    assert states[winners[0]] == "active"


def test_lost_optimistic_race_is_a_conflict_and_changes_nothing(ctl: Runtime, db_url: str | None) -> None:
    if db_url is None:
        pytest.skip(
            "SQLite serialises writers with BEGIN IMMEDIATE: a concurrent write waits, it cannot race"
        )
    tenants.create_tenant(ctl, "t")
    environments.create_environment(ctl, "t", "e1")
    other = create_engine(db_url)
    bump = "UPDATE environments SET state_reason = 'other', version = version + 1 WHERE name = 'e1'"
    with (
        pytest.raises(ConflictError) as info,
        operation(ctl, "environment.managed.enable", target_type="environment") as op,
    ):
        env = get_environment(op.session, "e1")
        op.target_id, op.tenant_id = env.id, env.tenant_id
        with other.begin() as conn:  # another process commits a change to the same row now
            conn.execute(text(bump))
        before = snapshot(ctl)
        env.managed = True
    other.dispose()
    assert info.value.code == "concurrent_update" and info.value.exit_code == 4
    assert snapshot(ctl) == before
    shown = environments.show_environment(ctl, "e1")
    assert shown["managed"] is False and shown["state_reason"] == "other"
    assert audit_rows(ctl, "environment.managed.enable")[-1].outcome == "error"


def test_concurrent_cli_processes(ctl: Runtime, home: Path, db_url: str | None) -> None:
    if db_url is not None:  # each process costs a cold interpreter start; one backend is enough here
        pytest.skip(
            "CLI processes race on the default SQLite home; PostgreSQL races run in forked processes above"
        )
    tenants.create_tenant(ctl, "t")
    exe = str(Path(sys.executable).with_name("keyshift"))
    env = {**os.environ, "KEYSHIFT_HOME": str(home)}
    if db_url:
        env["KEYSHIFT_DATABASE_URL"] = db_url
    procs = [
        subprocess.Popen(
            [exe, "--json", "env", "create", "t", "race"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    outs = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    assert sorted(code for code, _, _ in outs) == [0] + [4] * (WORKERS - 1), outs
    for code, out, err in outs:
        if code == 0:
            assert json.loads(out)["name"] == "race"
        else:
            assert out == "" and json.loads(err)["error"]["code"] in ("environment_exists", "already_exists")
    assert [e["name"] for e in environments.list_environments(ctl)] == ["race"]
