"""`data search|search-fields|search-indexes|search-rekey` (on the data group), `lake export|read|list`
(its own group), `env backup|backups|copy` and `env restore ENV --from ID` (on the env group, through
the restore command's hook in cli/policy_jobs.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import cell, emit, print_table, ref_text, runtime, stdout
from keyshift.errors import UsageError

lake_app = typer.Typer(help="Data lake: encrypted Parquet exports of tables.", no_args_is_help=True)


def search_cmd(
    ctx: typer.Context,
    env: str,
    table: str,
    words: str,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records (1-1000).")] = 10,
) -> None:
    """Records of TABLE whose searchable fields hold every word (blind index; decrypted results)."""
    from keyshift.features.search import search

    with runtime(ctx) as rt:
        out = search(rt, env, table, words, limit=limit)
        emit(ctx, out, lambda v: print_table(_rows(v["results"]), ["id", "version", "value"]))


def _rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import json

    return [{**r, "value": json.dumps(r["value"], ensure_ascii=False)} for r in results]


def search_fields_cmd(
    ctx: typer.Context,
    env: str,
    table: str,
    fields: str,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return at once; a worker builds the index.")
    ] = False,
) -> None:
    """Declare TABLE's searchable JSON fields (comma-separated, nested with '.'); (re)builds the index."""
    from keyshift.cli.job import finish
    from keyshift.features.search_jobs import set_fields

    with runtime(ctx) as rt:
        view = set_fields(rt, env, table, fields.split(","))
        finish(ctx, rt, {"id": view["job"], "kind": "search_rebuild", **view}, not no_wait)


def search_indexes_cmd(ctx: typer.Context, env: str) -> None:
    """The environment's search index generations (fields, state, job)."""
    from keyshift.features.search_jobs import describe

    with runtime(ctx) as rt:
        out = describe(rt, env)
        emit(ctx, out, lambda v: print_table(v, ["table", "generation", "fields", "state", "job"]))


def search_rekey_cmd(ctx: typer.Context, env: str) -> None:
    """Replace the search key and rebuild every index as jobs (the old index answers meanwhile)."""
    from keyshift.features.search_jobs import rekey

    with runtime(ctx) as rt:
        out = rekey(rt, env)
        emit(ctx, out, lambda v: print_table(v, ["table", "generation", "state", "job"]))


@lake_app.command("export")
def lake_export(ctx: typer.Context, env: str, table: str) -> None:
    """Export TABLE to an encrypted Parquet file in the environment's lake."""
    with runtime(ctx) as rt:
        from keyshift.features.lake import export_table  # needs the 'lake' extra

        out = export_table(rt, env, table)
        emit(ctx, out, f"exported {out['rows']} rows to {out['path']} ({out['size']} bytes)")


@lake_app.command("read")
def lake_read(
    ctx: typer.Context,
    env: str,
    path: str,
    limit: Annotated[int, typer.Option("--limit", help="At most this many rows.")] = 1000,
) -> None:
    """Read an export back (decrypted through the environment's key)."""
    with runtime(ctx) as rt:
        from keyshift.features.lake import read_export  # needs the 'lake' extra

        out = read_export(rt, env, path, limit=limit)
        emit(ctx, out, lambda v: print_table(_rows(v["records"]), ["id", "version", "updated_at", "value"]))


@lake_app.command("list")
def lake_list(ctx: typer.Context, env: str) -> None:
    """The environment's lake exports."""
    with runtime(ctx) as rt:
        from keyshift.features.lake import list_exports  # needs the 'lake' extra

        out = list_exports(rt, env)
        emit(ctx, out, lambda v: print_table(v, ["path", "table", "rows", "size", "created_at"]))


def backup_cmd(
    ctx: typer.Context,
    env: str,
    retention_days: Annotated[
        int | None, typer.Option("--retention-days", help="Keep it this many days (default: settings).")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="A note kept with the backup.")] = None,
) -> None:
    """Take an encrypted backup of the environment (feature long-term-retention)."""
    from keyshift.features.backups import create_backup

    with runtime(ctx) as rt:
        out = create_backup(rt, env, retention_days=retention_days, note=note)
        counts = out.get("counts")
        what = ", ".join(f"{n} {k}" for k, n in counts.items()) if isinstance(counts, dict) else counts
        emit(ctx, out, f"backup {out['id']} taken ({what}); expires {cell(out['expires_at'])}")


def backups_cmd(
    ctx: typer.Context,
    env: str,
    include_purged: Annotated[bool, typer.Option("--all", help="Include purged backups.")] = False,
) -> None:
    """The environment's backups."""
    from keyshift.features.backups import list_backups

    with runtime(ctx) as rt:
        out = list_backups(rt, env, include_purged=include_purged)
        emit(
            ctx, out, lambda v: print_table(v, ["id", "state", "created_at", "expires_at", "size", "counts"])
        )


def copy_cmd(ctx: typer.Context, src: str, dst: str) -> None:
    """Copy SRC's data into DST (replacing it) — only between environments under the same key."""
    from keyshift.features.restore import copy_environment

    with runtime(ctx) as rt:
        out = copy_environment(rt, src, dst)
        emit(
            ctx,
            out,
            f"copied {ref_text(out['source'])} into {ref_text(out['environment'])} ({out['restored']})",
        )


def restore_from(ctx: typer.Context, env: str, backup_id: str) -> None:
    """`env restore ENV --from ID`: restore one of the environment's backups (replacing its data)."""
    from keyshift.features.restore import restore_backup

    with runtime(ctx) as rt:
        if not backup_id:
            raise UsageError("--from needs a backup id", code="invalid_id")
        out = restore_backup(rt, env, backup_id)
        emit(
            ctx,
            out,
            lambda v: stdout.print(f"restored backup {v['backup']} into {v['environment']['name']}"),
        )


def register(app: typer.Typer) -> None:
    import keyshift.features  # noqa: F401  (registers the feature-enabled hook)
    from keyshift.cli import policy_jobs
    from keyshift.cli.data import data_app
    from keyshift.cli.env import env_app

    data_app.command("search")(search_cmd)
    data_app.command("search-fields")(search_fields_cmd)
    data_app.command("search-indexes")(search_indexes_cmd)
    data_app.command("search-rekey")(search_rekey_cmd)
    app.add_typer(lake_app, name="lake")
    env_app.command("backup")(backup_cmd)
    env_app.command("backups")(backups_cmd)
    env_app.command("copy")(copy_cmd)
    policy_jobs.RESTORE_FROM_HOOK = restore_from
