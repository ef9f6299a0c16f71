"""The CLI contract at the entry point: JSON errors and exit codes, parser errors included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyshift.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_parser_usage_error_with_json_is_one_json_error_and_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["--json", "key", "create"], capsys)
    assert code == 2
    assert out == ""
    body = json.loads(err)
    assert body["error"]["code"] == "invalid_argument"
    assert "vault" in body["error"]["message"].lower()


def test_bad_option_value_with_json_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["--json", "key", "create", "v", "k", "--type", "AES", "--size", "abc"], capsys)
    assert code == 2
    assert "--size" in json.loads(err)["error"]["message"]


def test_service_error_keeps_its_exit_code_in_json_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(["--json", "--home", str(tmp_path / "absent"), "vault", "list"], capsys)
    assert code == 4
    assert out == ""
    assert json.loads(err)["error"]["code"] == "not_initialised"


def test_success_in_json_mode_exits_0_with_one_json_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    code, out, _ = _run(["--json", "--home", home, "init"], capsys)
    assert code == 0
    code, out, _ = _run(["--json", "--home", home, "vault", "list"], capsys)
    assert code == 0
    assert [v["name"] for v in json.loads(out)] == ["platform"]
