"""One JSON shape per object (docs/API.md, "Object shapes"): the CLI's `--json` output and the REST
API give every object type the same shape (a list entry is a subset of the object, each shared field
shaped alike), every reference to another object is exactly {"id", "name"}, no field carries a bare
id of another object (`*_id`, `*_ids`), and every timestamp is ISO 8601 UTC ending in Z."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cli_vault_support import VaultCli
from fastapi.testclient import TestClient

from keyshift.api.app import create_app
from keyshift.control import tokens
from keyshift.runtime import Runtime

Z_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
ANY_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")
# Fields holding a reference to another object (at any depth of any object).
REF_KEYS = {"tenant", "environment", "policy", "vault", "byok_key", "target", "source", "token"}
REF_LIST_KEYS = {"environments"}  # lists of references (tokens, whoami); policy entries add state
# Free-form content that is not an object shape: the caller's data, job parameters, audit details,
# evidence records.
OPAQUE = {"details", "params", "value", "event", "results", "state_evidence", "evidence", "previous"}
TIME_KEYS = re.compile(r"^(at|expires|not_before|.*_at|.*_after|.*_until|.*_since)$")


def walk(value: Any, path: str = "$") -> list[tuple[str, str, Any]]:
    """(path, key, value) of every field below `value`, not descending into opaque content."""
    out: list[tuple[str, str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((f"{path}.{k}", k, v))
            if k not in OPAQUE:
                out += walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += walk(v, f"{path}[{i}]")
    return out


def convention_problems(value: Any) -> list[str]:
    problems = []
    for path, key, v in walk(value):
        is_ref = isinstance(v, dict) and set(v) == {"id", "name"} and isinstance(v["id"], str)
        secret = key == "token" and isinstance(v, str)  # `token create` shows the secret once
        if key in REF_KEYS and v is not None and not secret and not is_ref:
            problems.append(f"{path}: reference is not {{id, name}}: {v!r}")
        if key in REF_LIST_KEYS and isinstance(v, list):
            problems += [f"{path}: not a reference: {e!r}" for e in v if not {"id", "name"} <= set(e)]
        if (key.endswith("_id") or key.endswith("_ids")) and key != "request_id":
            problems.append(f"{path}: a bare id field")
        if TIME_KEYS.match(key) and v is not None and not (isinstance(v, str) and Z_TIME.match(v)):
            problems.append(f"{path}: time field is not an ISO 8601 Z string: {v!r}")
        elif isinstance(v, str) and ANY_TIME.match(v) and not Z_TIME.match(v):
            problems.append(f"{path}: timestamp not in UTC with Z: {v!r}")
    return problems


def shape(value: Any) -> Any:
    """The structure of a value: dict keys with their shapes, a list's element shapes, a scalar's
    JSON type (None for null: compatible with any shape)."""
    if isinstance(value, dict):
        return {k: (None if k in OPAQUE else shape(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if value is None:
        return None
    return (
        "number" if isinstance(value, int | float) and not isinstance(value, bool) else type(value).__name__
    )


def compatible(a: Any, b: Any, path: str = "$") -> list[str]:
    """Differences between two shapes over the fields both have (a list entry may be a subset)."""
    if a is None or b is None:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in set(a) & set(b) for p in compatible(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        return [p for x in a for y in b for p in compatible(x, y, f"{path}[]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def same_shape(samples: dict[str, Any]) -> list[str]:
    """Every pair of samples of one object type must be compatible."""
    items = list(samples.items())
    out = []
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1 :]:
            out += [f"{name_a} vs {name_b}: {p}" for p in compatible(shape(a), shape(b))]
    return out


@pytest.fixture
def world(tmp_path: Path, db_url: str | None) -> tuple[VaultCli, dict[str, Any]]:
    """A tenant with an environment linked through a policy (job pending), a vault with a key,
    a backup and a service token, built through the CLI; the CLI's outputs by object type."""
    cli = VaultCli(tmp_path / "home", db_url)
    cli("init")
    out: dict[str, Any] = {}
    out["tenant create"] = cli("tenant", "create", "contoso")
    out["env create"] = cli("env", "create", "contoso", "contoso-prod", "--type", "production")
    cli("env", "create", "contoso", "contoso-dev")
    out["vault create"] = cli("vault", "create", "contoso-kv", "--tenant", "contoso", "--purge-protection")
    out["key create"] = cli("key", "create", "contoso-kv", "cmk", "--type", "RSA", "--size", "2048")
    out["policy create"] = cli(
        "policy", "create", "contoso", "pol", "--region", "eu", "--vault", "contoso-kv", "--key", "cmk"
    )
    grant = ("--identity", out["policy create"]["identity"], "--permissions", "get,wrapKey,unwrapKey")
    out["key grant"] = cli("key", "grant", "contoso-kv", "cmk", *grant)
    cli("env", "managed", "enable", "contoso-prod")
    out["policy health"] = cli("policy", "health", "pol")
    out["job start"] = cli("policy", "add-env", "pol", "contoso-prod")
    cli("env", "feature", "enable", "contoso-dev", "long-term-retention")
    out["env backup"] = cli("env", "backup", "contoso-dev", "--note", "shapes")
    out["token create"] = cli("token", "create", "--role", "service", "--env", "contoso-dev")
    for args in (
        ("tenant", "list"),
        ("tenant", "show", "contoso"),
        ("env", "list"),
        ("env", "show", "contoso-prod"),
        ("vault", "list"),
        ("vault", "show", "contoso-kv"),
        ("key", "list", "contoso-kv"),
        ("key", "show", "contoso-kv", "cmk"),
        ("policy", "list"),
        ("policy", "show", "pol"),
        ("job", "list"),
        ("job", "show", out["job start"]["id"]),
        ("token", "list"),
        ("audit-trail",),
        ("env", "backups", "contoso-dev"),
    ):
        out[" ".join(args[:2])] = cli(*args)
    return cli, out


def _api(rt: Runtime, cli_out: dict[str, Any]) -> dict[str, Any]:
    token = str(tokens.create_token(rt, "operator", label="shapes")["token"])
    job = cli_out["job start"]["id"]
    paths = {
        "tenants": "/tenants",
        "tenant": "/tenants/contoso",
        "environments": "/environments",
        "environment": "/environments/contoso-prod",
        "vaults": "/vaults",
        "vault": "/vaults/contoso-kv",
        "keys": "/vaults/contoso-kv/keys",
        "key": "/vaults/contoso-kv/keys/cmk",
        "policies": "/policies",
        "policy": "/policies/pol",
        "jobs": "/jobs",
        "job": f"/jobs/{job}",
        "audit": "/audit-trail",
        "backups": "/environments/contoso-dev/backups",
        "whoami": "/whoami",
    }
    with TestClient(create_app(rt)) as client:
        h = {"Authorization": f"Bearer {token}"}
        got = {}
        for name, path in paths.items():
            r = client.get(f"/api/v1{path}", headers=h)
            assert r.status_code == 200, (path, r.text)
            got[name] = r.json()
    return got


def test_cli_and_api_give_one_shape_per_object(
    world: tuple[VaultCli, dict[str, Any]], tmp_path: Path, db_url: str | None
) -> None:
    _cli, c = world
    rt = Runtime.open(home=tmp_path / "home", database_url=db_url, principal="operator:test")
    try:
        a = _api(rt, c)
    finally:
        rt.close()
    # The same object through the CLI and the API is the same JSON (one service view).
    assert c["tenant show"] == a["tenant"]
    assert c["env show"] == a["environment"]
    assert c["policy show"] == a["policy"]
    assert c["job show"] == a["job"]
    assert c["key show"] == a["key"]
    assert c["env list"] == a["environments"] and c["policy list"] == a["policies"]
    assert c["job list"] == a["jobs"] and c["env backups"] == a["backups"]
    assert [v for v in c["vault list"] if v["name"] == "contoso-kv"] == [
        v for v in a["vaults"] if v["name"] == "contoso-kv"
    ]
    by_type: dict[str, dict[str, Any]] = {
        "tenant": {"create": c["tenant create"], "list": c["tenant list"][0], "api": a["tenant"]},
        "environment": {
            "create": c["env create"],
            "list": c["env list"][0],
            "api list": a["environments"][0],
            "api": a["environment"],
        },
        "vault": {"create": c["vault create"], "list": c["vault list"][0], "api": a["vault"]},
        "key": {
            "create": c["key create"],
            "list": c["key list"][0],
            "in vault": a["vault"]["keys"][0],
            "api": a["key"],
        },
        "policy": {"create": c["policy create"], "list": c["policy list"][0], "api": a["policy"]},
        "job": {"start": c["job start"], "list": c["job list"][0], "api": a["job"]},
        "token": {"create": c["token create"], "list": c["token list"][-1]},
        "audit event": {"cli": c["audit-trail"][0], "api": a["audit"][-1]},
        "backup": {"create": c["env backup"], "list": c["env backups"][0], "api": a["backups"][0]},
    }
    problems = [f"{kind}: {p}" for kind, samples in by_type.items() for p in same_shape(samples)]
    for name, value in [*c.items(), *a.items()]:
        problems += [f"{name}: {p}" for p in convention_problems(value)]
    assert problems == []
    # The references are filled in (names included), not just well-formed.
    env, pol = a["environment"], a["policy"]
    assert env["tenant"] == {"id": c["tenant create"]["id"], "name": "contoso"}
    assert pol["vault"] == {"id": c["vault create"]["id"], "name": "contoso-kv"} == a["key"]["vault"]
    assert a["job"]["policy"] == {"id": pol["id"], "name": "pol"}
    assert c["token create"]["environments"] == [{"id": a["environments"][0]["id"], "name": "contoso-dev"}]
    assert a["backups"][0]["environment"]["name"] == "contoso-dev"
    assert a["whoami"]["tenant"] is None and a["whoami"]["role"] == "operator"
    events = {e["action"]: e for e in a["audit"]}
    assert events["policy.create"]["target"] == {"id": pol["id"], "name": "pol"}
    assert events["policy.create"]["tenant"] == env["tenant"]


def test_checks_catch_the_old_shapes() -> None:
    """The convention checks are not vacuous: the shapes of before are reported."""
    old_env = {"tenant": "contoso", "tenant_id": "ten_1", "created_at": "2026-01-01T00:00:00+00:00"}
    assert len(convention_problems(old_env)) == 3
    listed = {"environments": 2}
    shown = {"environments": [{"id": "env_1", "name": "e"}]}
    assert same_shape({"list": listed, "show": shown})
    assert convention_problems({"vault": {"id": "vlt_1", "name": "kv"}, "at": "2026-01-01T00:00:00Z"}) == []
