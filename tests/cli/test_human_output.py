"""Human output, as a person sees it piped or at 80 columns: ids never cut, no Python dict reprs,
a started job says who runs it, `audit-trail --limit N` is the newest N, newest first."""

from __future__ import annotations

import re

import pytest
from subproc import clean_env, ks

ID = re.compile(r"\b(job|ten|env|vlt)_[0-9a-f]{20}\b")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    e = clean_env(KEYSHIFT_HOME=str(tmp_path_factory.mktemp("human") / "home"))
    for args in (
        ["init"],
        ["tenant", "create", "contoso-with-a-rather-long-tenant-name"],
        ["env", "create", "contoso-with-a-rather-long-tenant-name", "prod-environment-with-long-name"],
        ["env", "feature", "enable", "prod-environment-with-long-name", "search"],
        ["data", "put", "prod-environment-with-long-name", "t", "r1", '{"name": "Fabrikam"}'],
    ):
        r = ks(*args, env=e)
        assert r.code == 0, (args, r.err)
    return e


def test_a_job_started_without_wait_says_a_worker_runs_it(env: dict[str, str]) -> None:
    r = ks("data", "search-fields", "prod-environment-with-long-name", "t", "name", "--no-wait", env=env)
    assert r.code == 0, r.err
    assert "keyshift worker" in r.out and "--wait" in r.out and "job wait" in r.out
    job_id = ID.search(r.out)
    assert job_id and job_id.group(0).startswith("job_")
    listed = ks("job", "list", env=env)  # piped, COLUMNS=80
    assert job_id.group(0) in listed.out  # the whole id, copyable


def test_tables_never_cut_ids(env: dict[str, str]) -> None:
    for args in (["env", "list"], ["tenant", "list"], ["vault", "list"], ["audit-trail", "--limit", "5"]):
        r = ks(*args, env=env)
        assert r.code == 0, (args, r.err)
        assert "…" not in r.out, (args, r.out)
    full = ks("env", "show", "prod-environment-with-long-name", "--json", env=env).json()
    trail = ks("audit-trail", "--limit", "50", env=env).out
    assert f"environment:{full['id']}" in trail.replace("\n", "") or full["id"] in trail


def test_results_are_lines_not_python_dicts(env: dict[str, str]) -> None:
    for args in (["maintenance", "run"], ["worker", "--once"], ["policy", "monitor"]):
        r = ks(*args, env=env)
        assert r.code == 0, (args, r.err)
        assert r.out.strip()
        assert not re.search(r"\{'|': |\['", r.out), (args, r.out)


def test_audit_trail_limit_is_the_newest_first(env: dict[str, str]) -> None:
    everything = ks("audit-trail", "--json", env=env).json()
    newest = ks("audit-trail", "--limit", "3", "--json", env=env).json()
    assert [e["id"] for e in newest] == [e["id"] for e in everything[:3]]
    stamps = [e["at"] for e in everything]
    assert stamps == sorted(stamps, reverse=True)
    assert everything[-1]["principal"] == "system:init"  # the oldest event is last
