"""`keyshift` — the operator's command line. One module per command group registers itself here."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from keyshift.cli.common import CliState

app = typer.Typer(
    name="keyshift",
    help="Customer-managed encryption keys and online key-mode migration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module exposes `register(app: typer.Typer) -> None`; listed here so the tree stays visible.
COMMAND_MODULES = (
    "keyshift.cli.init",  # init
    "keyshift.cli.vault",  # vault create|list|show (group owner)
    "keyshift.cli.vault_external",  # vault add (external providers)
    "keyshift.cli.key",  # key ...
    "keyshift.cli.tenant",  # tenant ...
    "keyshift.cli.byok",  # byok ... (key, apply, revert, lock, unlock)
    "keyshift.cli.env",  # env create|list|show|managed|feature (group owner)
    "keyshift.cli.policy",  # policy create|list|show|health|update|delete (group owner)
    "keyshift.cli.policy_jobs",  # policy add-env|remove-env|swap-env, env restore --before-migration
    "keyshift.cli.job",  # job ...
    "keyshift.cli.worker",  # worker, maintenance run
    "keyshift.cli.demo",  # demo
    "keyshift.cli.data",  # data, audit, files
    "keyshift.cli.revocation",  # env re-enable, deletion schedule commands
    "keyshift.cli.audit_trail",  # audit-trail
    "keyshift.cli.token",  # token ...
    "keyshift.cli.serve",  # serve
    "keyshift.cli.features",  # data search|search-fields, lake export|read|list, env backup|backups|copy
    "keyshift.cli.export",  # env export
    "keyshift.cli.coverage",  # key coverage|retire, env coverage
)


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option("--home", envvar="KEYSHIFT_HOME", help="State home (default ~/.keyshift)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url", envvar="KEYSHIFT_DATABASE_URL", help="SQLAlchemy URL of the state DB."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON value.")] = False,
) -> None:
    ctx.obj = CliState(home=home, database_url=database_url, json=as_json)


def _load() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # group not built yet
                continue
            raise
        module.register(app)


_load()


def _wants_json(argv: list[str]) -> bool:
    # Global options come before the command; `--json` there asks for JSON errors too.
    for arg in argv:
        if arg == "--json":
            return True
        if not arg.startswith("-"):
            return False
    return False


def main(argv: list[str] | None = None) -> None:
    """Entry point. With `--json`, usage errors found by the parser are JSON on stderr too (exit 2)."""
    args = sys.argv[1:] if argv is None else argv
    if not _wants_json(args):
        app(args=args)
        return
    try:
        # Without standalone mode the parser returns a command's exit code instead of exiting.
        rc = app(args=args, standalone_mode=False)
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write(json.dumps({"error": {"code": "aborted", "message": "aborted"}}) + "\n")
        sys.exit(1)
    except Exception as exc:
        # The parser's own errors (missing/unknown option, bad value) carry exit_code + format_message.
        fmt = getattr(exc, "format_message", None)
        code = getattr(exc, "exit_code", None)
        if not callable(fmt) or not isinstance(code, int):
            raise
        body = {"error": {"code": "invalid_argument", "message": str(fmt())}}
        sys.stderr.write(json.dumps(body) + "\n")
        sys.exit(code)
