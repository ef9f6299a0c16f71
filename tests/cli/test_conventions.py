"""CLI conventions, run as a subprocess: global options anywhere, --version, -h, completion,
`python -m keyshift`, plain help, JSON parser errors, `data put` from stdin or a file, busy port."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from subproc import clean_env, ks


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> str:
    h = str(tmp_path_factory.mktemp("conv") / "home")
    assert ks("init", "--home", h).code == 0
    r = ks("tenant", "create", "contoso", "--home", h)
    assert r.code == 0, r.err
    assert ks("env", "create", "contoso", "prod", "--home", h).code == 0
    return h


def test_global_options_after_the_subcommand(home: str) -> None:
    before = ks("--json", "--home", home, "vault", "list")
    after = ks("vault", "list", "--home", home, "--json")
    mixed = ks("vault", "--json", "list", f"--home={home}")
    assert before.code == after.code == mixed.code == 0
    assert before.json() == after.json() == mixed.json()
    assert [v["name"] for v in after.json()] == ["platform"]


def test_database_url_after_the_subcommand_is_used(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    h = str(tmp_path / "h")
    r = ks("init", "--home", h, "--database-url", f"sqlite:///{db}", "--json")
    assert r.code == 0, r.err
    assert db.exists() and not (Path(h) / "state.db").exists()


def test_version_and_short_help() -> None:
    v = ks("--version")
    assert v.code == 0 and v.out.startswith("keyshift ")
    for args in (["-h"], ["--help"], ["env", "create", "-h"], ["data", "put", "-h"]):
        r = ks(*args)
        assert r.code == 0, (args, r.err)
        assert r.out.startswith("Usage: keyshift")


def test_help_reads_like_a_normal_cli() -> None:
    r = ks("env", "create", "-h")
    assert "Usage: keyshift env create [OPTIONS] TENANT NAME" in r.out
    assert "--region REGION" in r.out
    top = ks("--help").out
    for text in (r.out, top, ks("data", "put", "-h").out):
        assert "{" not in text and "<str>" not in text and "<bool>" not in text and "╭" not in text
    assert "--json " in top and "completion" in top


def test_python_dash_m_keyshift(home: str) -> None:
    r = ks("vault", "list", "--json", "--home", home, module=True)
    assert r.code == 0 and r.json()[0]["name"] == "platform"
    assert ks("--help", module=True).out.startswith("Usage: keyshift")


def test_shell_completion() -> None:
    env = clean_env(_KEYSHIFT_COMPLETE="complete_bash", COMP_WORDS="keyshift vau", COMP_CWORD="1")
    r = ks(env=env)
    assert r.code == 0 and r.out.split() == ["vault"]
    env = clean_env(_KEYSHIFT_COMPLETE="complete_bash", COMP_WORDS="keyshift vault cr", COMP_CWORD="2")
    assert ks(env=env).out.split() == ["create"]
    script = ks("completion", "bash")
    assert script.code == 0 and "_KEYSHIFT_COMPLETE" in script.out
    bad = ks("completion", "tcsh", "--json")
    assert bad.code == 2 and bad.error()["code"] == "invalid_argument"


@pytest.mark.parametrize(
    "args",
    [
        ["--home", "H", "vault", "create", "--json"],  # missing argument, --json last
        ["vault", "--json", "nope"],  # unknown subcommand
        ["key", "create", "v", "k", "--type", "AES", "--size", "abc", "--json"],  # bad value
        ["--json"],  # no command at all
        ["data", "put", "--json", "--bogus"],  # unknown option
    ],
)
def test_parser_errors_are_json_wherever_json_is(args: list[str], tmp_path: Path) -> None:
    r = ks(*[str(tmp_path / "h") if a == "H" else a for a in args])
    assert r.code == 2
    assert r.out == ""
    err = json.loads(r.err)["error"]
    assert err["code"] == "invalid_argument" and err["message"]


def test_parser_error_without_json_is_plain_text() -> None:
    r = ks("vault", "create")
    assert r.code == 2 and "Missing argument 'NAME'" in r.err and "╭" not in r.err


def test_data_put_reads_stdin_and_file(home: str, tmp_path: Path) -> None:
    value = {"blob": "x" * (300 * 1024)}  # larger than a command line comfortably takes
    text = json.dumps(value)
    r = ks("data", "put", "prod", "t", "a", "-", "--home", home, "--json", stdin=text)
    assert r.code == 0, r.err
    f = tmp_path / "v.json"
    f.write_text(text)
    r = ks("data", "put", "prod", "t", "b", "--file", str(f), "--home", home, "--json")
    assert r.code == 0, r.err
    for rid in ("a", "b"):
        got = ks("data", "get", "prod", "t", rid, "--home", home, "--json")
        assert got.json() == value


@pytest.mark.parametrize(
    "extra",
    [[], ["{}", "--file", "F"], ["-", "--file", "F"], ["--file", "MISSING"], ["-"]],
)
def test_data_put_value_source_errors_write_nothing(home: str, tmp_path: Path, extra: list[str]) -> None:
    f = tmp_path / "v.json"
    f.write_text("{}")
    args = [str(f) if a == "F" else str(tmp_path / "missing") if a == "MISSING" else a for a in extra]
    r = ks("data", "put", "prod", "t", "zz", *args, "--home", home, "--json", stdin="not json")
    assert r.code == 2, r.err
    assert json.loads(r.err)["error"]["code"] in ("invalid_argument", "invalid_file", "invalid_json")
    got = ks("data", "get", "prod", "t", "zz", "--home", home, "--json")
    assert got.code == 3


def test_serve_on_a_busy_port_is_a_clear_error(home: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = ks("serve", "--port", str(port), "--home", home, timeout=60)
        assert r.code == 4
        assert "serving on" not in r.err and "already in use" in r.err
        j = ks("serve", "--port", str(port), "--home", home, "--json", timeout=60)
        assert j.code == 4 and j.error()["code"] == "address_in_use"
