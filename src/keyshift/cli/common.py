"""What every command shares: the global options, opening the runtime, output and exit codes.

With `--json` a command prints exactly one JSON value on stdout; a failure prints
`{"error": {"code", "message"}}` on stderr. Exit codes follow SPEC §6 via KeyshiftError.exit_code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from keyshift.control.key_events import wire
from keyshift.errors import InternalError, KeyshiftError
from keyshift.runtime import Runtime
from keyshift.vaults.base import VaultLocalError

stderr = Console(stderr=True)
stdout = Console()


@dataclass
class CliState:
    home: Path | None
    database_url: str | None
    json: bool


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):  # pragma: no cover - callback always sets it
        raise InternalError("CLI state missing")
    return obj


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, indent=2, sort_keys=False)


def fail(err: KeyshiftError, as_json: bool) -> NoReturn:
    if as_json:
        sys.stderr.write(json.dumps(err.to_dict()) + "\n")
    else:
        stderr.print(f"[bold red]error[/] ({err.code}): {err.message}", highlight=False, markup=True)
    raise typer.Exit(err.exit_code)


@contextmanager
def runtime(ctx: typer.Context) -> Iterator[Runtime]:
    """Open the runtime for one command; errors (including at open) become SPEC exit codes."""
    st = state(ctx)
    with errors_handled(ctx):
        rt = wire(Runtime.open(home=st.home, database_url=st.database_url))
        try:
            yield rt
        finally:
            rt.close()


@contextmanager
def errors_handled(ctx: typer.Context) -> Iterator[None]:
    st = state(ctx)
    try:
        yield
    except typer.Exit:
        raise
    except KeyshiftError as err:
        fail(err, st.json)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # never a traceback with internals on a user's terminal
        fail(InternalError(f"internal error: {type(exc).__name__}"), st.json)


def emit(ctx: typer.Context, value: Any, human: Callable[[Any], None] | str | None = None) -> None:
    """Print the command's result: JSON with --json, else the human rendering."""
    if state(ctx).json:
        sys.stdout.write(dumps(value) + "\n")
        return
    if human is None:
        sys.stdout.write(dumps(value) + "\n")
    elif isinstance(human, str):
        stdout.print(human, highlight=False)
    else:
        human(value)


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if r.get(c) is None else str(r.get(c)) for c in columns])
    stdout.print(table)


def vaults_ready(ctx: typer.Context, rt: Runtime, role: str, strict: bool) -> None:
    """At `serve`/`worker` start: warn loudly on stderr about vaults this process cannot open;
    with `strict`, exit 6 instead of starting (control.vault_readiness)."""
    from keyshift.control.vault_readiness import warn

    with errors_handled(ctx):
        ok = warn(rt, sys.stderr, role=role)
    if not ok and strict:
        fail(
            VaultLocalError(f"{role} not started: a vault in use cannot be opened (--strict-vaults)"),
            state(ctx).json,
        )
