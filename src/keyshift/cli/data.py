"""`keyshift data|audit|files ...`: environment data through the data-plane service layer.

Groups owned here: `data_app` (records), `audit_app` (audit events), `files_app` (files). Values and
events are JSON (a record value inline, on stdin with `-`, or from `--file`); anything else is a
usage error (exit 2). `files get` streams to stdout unless `-o FILE` is given (then the file
appears only once complete).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, runtime, state
from keyshift.clock import parse_time
from keyshift.errors import UsageError
from keyshift.stores.service import EnvironmentData

data_app = typer.Typer(help="Environment table records.", no_args_is_help=True)
audit_app = typer.Typer(help="Environment audit events.", no_args_is_help=True)
files_app = typer.Typer(help="Environment files.", no_args_is_help=True)

CHUNK = 1 << 20


def parse_json(text: str, what: str = "value") -> Any:
    def reject(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    try:
        return json.loads(text, parse_constant=reject)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"the {what} is not valid JSON: {exc}", code="invalid_json") from None


def _value_view(value: Any) -> Any:
    return {"$bytes": value.hex()} if isinstance(value, bytes) else value


def _print_json(value: Any) -> None:
    # Plain JSON text (rich's highlighter costs start-up time on the hottest command).
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


# -- records ----------------------------------------------------------------------------------


@data_app.command("put")
def data_put(
    ctx: typer.Context,
    env: str,
    table: str,
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    value: Annotated[
        str | None,
        typer.Argument(metavar="[JSON|-]", help="The value as JSON, or - to read it from stdin."),
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", metavar="FILE", help="Read the JSON value from FILE.")
    ] = None,
    expected_version: Annotated[
        int | None, typer.Option("--expected-version", help="Write only if the record is at this version.")
    ] = None,
) -> None:
    """Write a record (a JSON value given inline, on stdin with -, or with --file FILE)."""
    with runtime(ctx) as rt:
        doc = parse_json(_value_text(value, file))
        version = EnvironmentData(rt, env).records.put(
            table, record_id, doc, expected_version=expected_version
        )
        emit(ctx, {"table": table, "id": record_id, "version": version}, f"{table}/{record_id} v{version}")


def _value_text(value: str | None, file: Path | None) -> str:
    """The JSON text from exactly one source: the argument, stdin (`-`) or --file."""
    if (value is None) == (file is None):
        raise UsageError("give the value as JSON, - for stdin, or --file FILE (exactly one)")
    try:
        if file is not None:
            return file.expanduser().read_text(encoding="utf-8")
        if value == "-":
            return sys.stdin.buffer.read().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {str(file)!r}: {exc.strerror}", code="invalid_file") from None
    except UnicodeDecodeError:
        raise UsageError("the value is not UTF-8 text", code="invalid_json") from None
    assert value is not None
    return value


@data_app.command("get")
def data_get(
    ctx: typer.Context, env: str, table: str, record_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Read a record's value."""
    with runtime(ctx) as rt:
        rec = EnvironmentData(rt, env).records.get_record(table, record_id)
        emit(ctx, _value_view(rec.value), _print_json)


@data_app.command("list")
def data_list(
    ctx: typer.Context,
    env: str,
    table: str,
    after: Annotated[str | None, typer.Option("--after", help="Start after this id.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records.")] = 100,
) -> None:
    """List a table's records in id order."""
    with runtime(ctx) as rt:
        recs = EnvironmentData(rt, env).records.scan(table, after=after, limit=limit)
        rows = [r.to_dict() for r in recs]
        if len(recs) == limit:  # never stop silently: say how to read on
            typer.echo(f"(page full: more may follow; next page: --after {recs[-1].id})", err=True)
        emit(
            ctx,
            rows,
            lambda rs: print_table(
                [{**r, "value": json.dumps(r["value"], ensure_ascii=False)} for r in rs],
                ["id", "version", "value"],
            ),
        )


@data_app.command("delete")
def data_delete(
    ctx: typer.Context,
    env: str,
    table: str,
    record_id: Annotated[str, typer.Argument(metavar="ID")],
    expected_version: Annotated[int | None, typer.Option("--expected-version")] = None,
) -> None:
    """Delete a record."""
    with runtime(ctx) as rt:
        EnvironmentData(rt, env).records.delete(table, record_id, expected_version=expected_version)
        emit(ctx, {"table": table, "id": record_id, "deleted": True}, f"deleted {table}/{record_id}")


# -- audit ------------------------------------------------------------------------------------


@audit_app.command("append")
def audit_append(ctx: typer.Context, env: str, event: Annotated[str, typer.Argument(metavar="JSON")]) -> None:
    """Append an audit event (a JSON object)."""
    with runtime(ctx) as rt:
        doc = parse_json(event, "event")
        if not isinstance(doc, dict):
            raise UsageError("an audit event is a JSON object", code="invalid_value")
        eid = EnvironmentData(rt, env).audit.append(doc)
        emit(ctx, {"id": eid}, eid)


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    env: str,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601; events at or after.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601; events before.")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 100,
) -> None:
    """List audit events in time order."""
    with runtime(ctx) as rt:
        s = parse_time(since) if since else None
        u = parse_time(until) if until else None
        events = EnvironmentData(rt, env).audit.query(since=s, until=u, limit=limit)
        emit(
            ctx,
            events,
            lambda es: print_table(
                [{**e, "event": json.dumps(e["event"], ensure_ascii=False)} for e in es],
                ["at", "id", "event"],
            ),
        )


@audit_app.command("purge")
def audit_purge(
    ctx: typer.Context,
    env: str,
    older_than: Annotated[int, typer.Option("--older-than", help="Days.")],
) -> None:
    """Delete events older than N days (needs the environment's audit-retention feature)."""
    with runtime(ctx) as rt:
        n = EnvironmentData(rt, env).audit.purge_older_than(older_than)
        emit(ctx, {"purged": n}, f"purged {n} event(s)")


# -- files ------------------------------------------------------------------------------------


@files_app.command("put")
def files_put(
    ctx: typer.Context,
    env: str,
    path: str,
    source: Annotated[str, typer.Argument(metavar="[FILE|-]", help="Local file, or - for stdin.")] = "-",
) -> None:
    """Store a file (streamed, encrypted) from a local file or stdin."""
    with runtime(ctx) as rt:
        data = EnvironmentData(rt, env)
        if source == "-":
            view = data.files.put(path, sys.stdin.buffer)
        else:
            local = Path(source)
            if not local.is_file():
                raise UsageError(f"{source!r} is not a readable file", code="invalid_file")
            with local.open("rb") as f:
                view = data.files.put(path, f)
        emit(ctx, view, f"stored {view['path']} ({view['size']} bytes, {view['store']})")


@files_app.command("get")
def files_get(
    ctx: typer.Context,
    env: str,
    path: str,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write here instead of stdout.")] = None,
) -> None:
    """Read a file: to FILE with -o (appears only when complete), else streamed to stdout."""
    as_json = state(ctx).json
    with runtime(ctx) as rt:
        if out is None and as_json:
            raise UsageError(
                "with --json, give -o FILE (stdout carries the JSON result)", code="invalid_argument"
            )
        files = EnvironmentData(rt, env).files
        if out is None:
            size = files.copy_to(path, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return
        target = out.expanduser()
        if target.is_dir():
            raise UsageError(f"{str(target)!r} is a directory", code="invalid_file")
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
        try:
            with tmp.open("xb") as f:
                size = files.copy_to(path, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except FileNotFoundError:
            raise UsageError(
                f"cannot write {str(target)!r}: no such directory", code="invalid_file"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)
        emit(ctx, {"path": path, "size": size, "out": str(target)}, f"wrote {size} bytes to {target}")


@files_app.command("list")
def files_list(
    ctx: typer.Context,
    env: str,
    prefix: Annotated[str, typer.Option("--prefix", help="Only paths starting with this.")] = "",
) -> None:
    """List files (path and size)."""
    with runtime(ctx) as rt:
        rows = EnvironmentData(rt, env).files.list(prefix)
        emit(ctx, rows, lambda rs: print_table(rs, ["path", "size"]))


@files_app.command("delete")
def files_delete(ctx: typer.Context, env: str, path: str) -> None:
    """Delete a file."""
    with runtime(ctx) as rt:
        EnvironmentData(rt, env).files.delete(path)
        emit(ctx, {"path": path, "deleted": True}, f"deleted {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
    app.add_typer(audit_app, name="audit")
    app.add_typer(files_app, name="files")


__all__ = ["audit_app", "data_app", "files_app", "register"]
