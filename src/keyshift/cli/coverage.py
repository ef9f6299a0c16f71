"""`key coverage`, `key retire` (on the key group) and `env coverage` (on the env group): what is
still encrypted under a key version, and moving a version out of use."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, runtime, stdout

COUNT_LABELS = (
    ("rows", "row_bytes", "rows"),
    ("events", "event_bytes", "events"),
    ("files", "file_bytes", "files"),
    ("search_indexes", None, "search indexes"),
    ("search_postings", None, "search postings"),
    ("lake_exports", "lake_bytes", "lake exports"),
    ("backups", "backup_bytes", "backups"),
)


def _counts(t: dict[str, Any]) -> str:
    out = []
    for n, b, label in COUNT_LABELS:
        out.append(f"{t[n]} {label}" + (f" ({t[b]} B)" if b else ""))
    return ", ".join(out)


def _version_lines(title: str, v: dict[str, Any]) -> list[str]:
    d = v["data_keys"]
    if not v["covered"]:
        return [f"[bold]{title}[/]: covers nothing"]
    lines = [
        f"[bold]{title}[/]: {d['total']} data keys ({d['current']} current, {d['pending']} pending, "
        f"{d['retained']} retained) of {len(v['tenants'])} tenant(s): "
        + ", ".join(t["name"] for t in v["tenants"]),
        f"  {_counts(v['totals'])}",
    ]
    for e in v["environments"]:
        lines.append(
            f"  env {e['name']} ({e['tenant']['name']}; {', '.join(e['stores'])}): "
            f"{sum(e['data_keys'].values())} data keys; {_counts(e)}"
        )
    for w in v["retained_windows"]:
        lines.append(
            f"  retained for {w['environment']['name']} until {w['until'] or 'no end date'}: "
            f"{w['data_keys']} data keys"
        )
    return lines


def _human_key(view: dict[str, Any]) -> None:
    lines: list[str] = []
    for v in view["versions"]:
        lines += _version_lines(f"{view['vault']['name']}/{view['key']} version {v['version']}", v)
    if not view["versions"]:
        lines.append(f"{view['vault']['name']}/{view['key']}: covers nothing")
    stdout.print("\n".join(lines), highlight=False)


def _human_env(view: dict[str, Any]) -> None:
    b = view["binding"]
    vault = b["vault"]["name"] if b["vault"] else None
    lines = [
        f"[bold]{view['environment']['name']}[/] ({view['tenant']['name']}): {b['mode']} on "
        f"{vault}/{b['key']} version {b['version']}"
    ]
    for k in view["keys"]:
        lines += _version_lines(f"{k['vault']['name']}/{k['key']} version {k['version']}", k)
    stdout.print("\n".join(lines), highlight=False)


def _human_retire(r: dict[str, Any]) -> None:
    lines = [f"[bold]{r['vault']['name']}/{r['key']} version {r['version']}[/]: {r['summary']}"]
    for j in r["jobs_started"]:
        lines.append(f"  rewrap job {j['job']['id']} started for {j['environment']['name']}")
    for w in r["waiting_on_jobs"]:
        job = w["job"]["id"] if w["job"] else "(in progress)"
        lines.append(f"  {w['environment']['name']}: waiting on running job {job}")
    for b in r["needs_action"]:
        lines.append(f"  {b['environment']['name']}: {b['reason']}")
    for w in r["retained_windows"]:
        lines.append(f"  retained for {w['environment']['name']} until {w['until'] or 'no end date'}")
    if r["safe_now"]:
        lines.append("  safe to disable now")
    elif r["safe_after"]:
        lines.append(f"  safe after {r['safe_after']} (when the retained windows end)")
    else:
        lines.append("  not safe yet: run `key retire` again when the jobs have finished")
    stdout.print("\n".join(lines), highlight=False)


def key_coverage(
    ctx: typer.Context,
    vault: str,
    key: str,
    version: Annotated[str | None, typer.Option("--version", help="One key version.")] = None,
) -> None:
    """What depends on each version of a key: tenants, environments, data keys, rows, events, files..."""
    from keyshift.control import coverage
    from keyshift.errors import KeyshiftError
    from keyshift.vaults.base import KeyRef

    with runtime(ctx) as rt:
        known: list[str] = []
        if version is None:
            try:  # list versions without data too, when the vault answers
                adapter = rt.vault(vault)
                known = [v.version for v in adapter.describe(KeyRef(adapter.name, key)).versions]
            except KeyshiftError:
                known = []
        emit(ctx, coverage.key_coverage(rt, vault, key, version=version, vault_versions=known), _human_key)


def env_coverage(ctx: typer.Context, env: str) -> None:
    """Every key version an environment's data depends on, with counts and bytes."""
    from keyshift.control import coverage

    with runtime(ctx) as rt:
        emit(ctx, coverage.env_coverage(rt, env), _human_env)


def key_retire(
    ctx: typer.Context,
    vault: str,
    key: str,
    version: Annotated[str, typer.Option("--version", help="The version to retire.")],
) -> None:
    """Start the rewrap jobs that move environments off a version; report what remains and when it is safe."""
    from keyshift.control import retire

    with runtime(ctx) as rt:
        emit(ctx, retire.retire(rt, vault, key, version), _human_retire)


def policy_rotation(
    ctx: typer.Context,
    policy: str,
    days: Annotated[int | None, typer.Option("--days", help="Rotate the key every N days.")] = None,
    off: Annotated[bool, typer.Option("--off", help="Turn automatic rotation off.")] = False,
) -> None:
    """Automatic rotation of a policy's key: the worker rotates it in its vault every N days and
    rewraps the environments (rotate jobs, no downtime)."""
    from keyshift.control import lifecycle
    from keyshift.errors import UsageError

    with runtime(ctx) as rt:
        if off == (days is not None):
            raise UsageError("give either --days N or --off", code="invalid_argument")
        view = lifecycle.set_rotation(rt, policy, None if off else days)
        emit(
            ctx,
            view,
            f"policy {view['policy']['name']}: automatic rotation "
            + (f"every {view['rotation_days']} days" if view["rotation_days"] else "off"),
        )


def register(app: typer.Typer) -> None:
    from keyshift.cli.env import env_app
    from keyshift.cli.key import key_app
    from keyshift.cli.policy import policy_app

    key_app.command("coverage")(key_coverage)
    key_app.command("retire")(key_retire)
    env_app.command("coverage")(env_coverage)
    policy_app.command("rotation")(policy_rotation)
