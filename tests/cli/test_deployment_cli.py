"""Deployment: the home remembers its database URL (never its password), bad or unreachable URLs
are clear typed errors, regions are the deployment's configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from subproc import ks


def test_home_created_with_a_database_url_remembers_it_without_password(tmp_path: Path, pg_url: str) -> None:
    url = pg_url.replace("postgres@", "postgres:secretpw@", 1)
    assert "secretpw" in url
    home = str(tmp_path / "h")
    r = ks("init", "--home", home, "--database-url", url, "--json")
    assert r.code == 0, r.err
    assert "secretpw" not in r.out and r.json()["database_recorded"] is True
    recorded = (Path(home) / "home.json").read_text()
    assert "secretpw" not in recorded
    assert json.loads(recorded)["database_url"] == url.replace("postgres:secretpw@", "postgres@")
    # Later commands without the URL use the recorded one (PostgreSQL here, not a new SQLite file).
    assert ks("tenant", "create", "contoso", "--home", home).code == 0
    listed = ks("tenant", "list", "--home", home, "--json")
    assert [t["name"] for t in listed.json()] == ["contoso"]
    assert not (Path(home) / "state.db").exists()


@pytest.mark.parametrize(
    ("url", "code", "exit_code"),
    [
        ("nope://x/y", "invalid_database_url", 2),
        ("not a url", "invalid_database_url", 2),
        ("mysql://u@h/db", "invalid_database_url", 2),
        ("postgresql+psycopg://postgres:pw@127.0.0.1:1/test", "database_unavailable", 4),
    ],
)
def test_bad_or_unreachable_database_url(tmp_path: Path, url: str, code: str, exit_code: int) -> None:
    home = tmp_path / "h"
    r = ks("init", "--home", str(home), "--database-url", url, "--json")
    assert r.code == exit_code, r.err
    assert r.error()["code"] == code and "pw@" not in r.err
    assert not (home / "home.json").exists()  # nothing recorded
    # On an existing home, the same URL given to a command is the same clear error.
    good = tmp_path / "good"
    assert ks("init", "--home", str(good)).code == 0
    r = ks("vault", "list", "--home", str(good), "--database-url", url, "--json")
    assert r.code == exit_code and r.error()["code"] == code


def test_regions_are_configured_at_init(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    r = ks("init", "--home", home, "--regions", "europe,unitedstates", "--json")
    assert r.code == 0, r.err
    assert r.json()["regions"] == ["europe", "unitedstates"] and r.json()["default_region"] == "europe"
    assert ks("tenant", "create", "c", "--home", home).code == 0
    made = ks("env", "create", "c", "e1", "--home", home, "--json")
    assert made.code == 0 and made.json()["region"] == "europe"
    other = ks("env", "create", "c", "e2", "--region", "unitedstates", "--home", home, "--json")
    assert other.code == 0 and other.json()["region"] == "unitedstates"
    bad = ks("env", "create", "c", "e3", "--region", "eu", "--home", home, "--json")
    assert bad.code == 2 and bad.error()["code"] == "invalid_region"
    assert ks("env", "show", "e3", "--home", home, "--json").code == 3


def test_default_regions_accept_geography_names(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    assert ks("init", "--home", home).code == 0
    assert ks("tenant", "create", "c", "--home", home).code == 0
    r = ks("env", "create", "c", "e", "--region", "europe", "--home", home, "--json")
    assert r.code == 0 and r.json()["region"] == "europe"
    bad = ks("init", "--home", str(tmp_path / "x"), "--regions", "Bad Name", "--json")
    assert bad.code == 2 and bad.error()["code"] == "invalid_region"
