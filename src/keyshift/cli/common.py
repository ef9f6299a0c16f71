"""What every command shares: the global options, opening the runtime, output and exit codes.

With `--json` a command prints exactly one JSON value on stdout; a failure prints
`{"error": {"code", "message"}}` on stderr. Exit codes come from KeyshiftError.exit_code (docs/CONCEPTS.md).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from keyshift.errors import InternalError, KeyshiftError
from keyshift.timefmt import iso_z, normalize_times

if TYPE_CHECKING:
    from rich.console import Console

    from keyshift.runtime import Runtime


class _LazyConsole:
    """A rich Console made on first use (importing rich costs start-up time)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr)
        return getattr(self._console, name)


stderr: Any = _LazyConsole(stderr=True)
stdout: Any = _LazyConsole(stderr=False)


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
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> str:
    """JSON text of a result; timestamps in one format (ISO 8601 UTC with Z, docs/API.md)."""
    return json.dumps(normalize_times(value), default=_default, indent=2, sort_keys=False)


def fail(err: KeyshiftError, as_json: bool) -> NoReturn:
    if as_json:
        sys.stderr.write(json.dumps(err.to_dict()) + "\n")
    else:
        typer.secho("error", fg="red", bold=True, err=True, nl=False)
        typer.echo(f" ({err.code}): {err.message}", err=True)
    raise typer.Exit(err.exit_code)


@contextmanager
def runtime(ctx: typer.Context) -> Iterator[Runtime]:
    """Open the runtime for one command; errors (including at open) become the documented exit codes."""
    from keyshift.control.key_events import wire
    from keyshift.runtime import Runtime

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


# An id as Keyshift makes them (`job_e404acd…`), alone or inside a cell such as `tenant:ten_…`.
_ID_RE = re.compile(r"\b[a-z]{2,6}_[0-9a-f]{12,}\b")


def is_ref(value: Any) -> bool:
    """A reference to another object: {"id", "name"} (docs/API.md)."""
    return isinstance(value, dict) and set(value) == {"id", "name"}


def ref_text(value: Any) -> str:
    """A reference as people read it: its name, or its id when it has none; '-' for no reference."""
    if not is_ref(value):
        return "-" if value is None else str(value)
    return str(value["name"] or value["id"])


def cell(value: Any) -> str:
    """A table cell: empty for None, ISO 8601 UTC with Z for times, a reference's name, text
    otherwise (a list joined with commas)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_z(value)
    if is_ref(value):
        return ref_text(value)
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    text = str(value)
    return normalize_times(text, time_key=True) if text.endswith("+00:00") else text


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    """A table that never cuts an id: columns holding ids keep their full width; other columns
    wrap on a terminal. Piped (not a terminal), the table is as wide as its content."""
    from rich.console import Console
    from rich.table import Table

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    table = Table(title=title)
    for i, c in enumerate(columns):
        idlike = c == "id" or c.endswith("_id") or any(_ID_RE.search(row[i]) for row in cells)
        if idlike:
            table.add_column(c, no_wrap=True, min_width=widths[i], overflow="ignore")
        else:
            table.add_column(c, overflow="fold")
    for row in cells:
        table.add_row(*row)
    if sys.stdout.isatty():
        stdout.print(table)
    else:
        natural = sum(widths) + 3 * len(columns) + 1
        Console(file=sys.stdout, width=max(80, natural), highlight=False).print(table)


def describe(value: Any, indent: int = 0) -> list[str]:
    """Plain indented lines for a nested result (never a Python dict or list repr)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return [f"{pad}(none)"]
        lines: list[str] = []
        for k, v in value.items():
            if isinstance(v, dict | list) and v and not _flat_list(v) and not is_ref(v):
                lines.append(f"{pad}{k}:")
                lines += describe(v, indent + 1)
            else:
                lines.append(f"{pad}{k}: {_scalar(v)}")
        return lines
    if isinstance(value, list):
        if _flat_list(value):
            return [f"{pad}{_scalar(value)}"]
        out: list[str] = []
        for item in value:
            sub = describe(item, indent + 1)
            out.append(f"{pad}- {sub[0].strip()}")
            out += sub[1:]
        return out
    return [f"{pad}{_scalar(value)}"]


def _flat_list(v: Any) -> bool:
    return isinstance(v, list) and all(is_ref(x) or not isinstance(x, dict | list) for x in v)


def _scalar(v: Any) -> str:
    if is_ref(v):
        return ref_text(v)
    if isinstance(v, list):
        return ", ".join(_scalar(x) for x in v) if v else "none"
    if isinstance(v, dict):
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return cell(v) if v is not None else "-"


def print_lines(value: Any, indent: int = 0) -> None:
    sys.stdout.write("\n".join(describe(value, indent)) + "\n")


def vaults_ready(ctx: typer.Context, rt: Runtime, role: str, strict: bool) -> None:
    """At `serve`/`worker` start: warn loudly on stderr about vaults this process cannot open;
    with `strict`, exit 6 instead of starting (control.vault_readiness)."""
    from keyshift.control.vault_readiness import warn
    from keyshift.vaults.base import VaultLocalError

    with errors_handled(ctx):
        ok = warn(rt, sys.stderr, role=role)
    if not ok and strict:
        fail(
            VaultLocalError(f"{role} not started: a vault in use cannot be opened (--strict-vaults)"),
            state(ctx).json,
        )
