"""`keyshift job list|show|wait|resume|cancel` and the shared `--wait` helper for job commands."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_table, runtime, state
from keyshift.jobs import store
from keyshift.jobs.runner import Worker
from keyshift.runtime import Runtime

job_app = typer.Typer(
    help="Long operations: migrations, unlink, swap, rotation, restore.", no_args_is_help=True
)

COLUMNS = ["id", "kind", "state", "environment", "phase", "done", "total", "error"]


def _row(view: dict[str, Any]) -> dict[str, Any]:
    err = view.get("error")
    env = view.get("environment") or {}
    return {
        **view,
        "environment": env.get("name") or env.get("id"),
        "error": f"{err['code']}" if err else None,
    }


def rate_text(view: dict[str, Any]) -> str:
    """ "2,345 rows/s, ETA 0:01:23" while a batched phase runs; "" when there is no rate yet."""
    rate = view.get("rate")
    if not rate:
        return ""
    text = (
        f"{rate:,.0f} {view.get('rate_unit') or 'items'}/s"
        if rate >= 10
        else f"{rate:.2g} {view.get('rate_unit') or 'items'}/s"
    )
    eta = view.get("eta_seconds")
    if eta is not None:
        text += f", ETA {timedelta(seconds=round(eta))}"
    return text


def _show(view: dict[str, Any]) -> None:
    print_table([_row(view)], COLUMNS, title=f"job {view['id']}")
    if rate_text(view):
        sys.stdout.write(f"progress: {view['done']:,} of {view['total']:,}, {rate_text(view)}\n")
    if view.get("error"):
        sys.stdout.write(f"error: {view['error']['code']}: {view['error']['message']}\n")


def drive(ctx: typer.Context, rt: Runtime, job_id: str, timeout: float | None = None) -> dict[str, Any]:
    """Run the job in this process until it ends (cooperating with any other worker through
    leases); a Rich progress bar when stdout is a terminal and --json is off."""
    show_bar = sys.stdout.isatty() and not state(ctx).json
    if not show_bar:
        Worker(rt).run_job(job_id, timeout=timeout)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[phase]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
        ) as bar:
            task = bar.add_task(job_id, total=None, phase="", rate="")

            def progress(view: dict[str, Any]) -> None:
                bar.update(
                    task,
                    total=max(view["total"], 1),
                    completed=view["done"],
                    phase=view.get("phase") or view["state"],
                    rate=rate_text(view),
                )

            Worker(rt, on_progress=progress).run_job(job_id, timeout=timeout)
    with rt.transaction() as session:
        return store.to_view(store.find_job(session, job_id))


def finish(
    ctx: typer.Context, rt: Runtime, view: dict[str, Any], wait: bool, *, keep: tuple[str, ...] = ()
) -> None:
    """Emit a started job (or, with --wait, the ended one: exit code from its error); `keep` names
    fields of the start view (e.g. warnings) that the ended view carries too."""
    if wait:
        view = {**drive(ctx, rt, view["id"]), **{k: view[k] for k in keep if k in view}}
        emit(ctx, view, _show)
        if view["state"] == "failed":
            raise typer.Exit(_exit_for(view["error"]["code"]))
        return
    emit(ctx, view, _started)


def _started(v: dict[str, Any]) -> None:
    sys.stdout.write(f"job {v['id']} ({v['kind']}) started: {v['state']}\n")
    if v.get("state") not in ("succeeded", "failed", "cancelled"):
        sys.stdout.write(
            "a `keyshift worker` process runs it: start one if none is running, or run it now with "
            f"`keyshift job wait {v['id']}` (or give --wait to run it here)\n"
        )


def _exit_for(code: str) -> int:
    from keyshift import errors as e

    for cls in (e.VaultUnavailableError, e.KeyInaccessibleError, e.EnvironmentUnavailableError):
        if code == cls.code:
            return cls.exit_code
    if code.startswith("key_") or code in ("access_denied", "throttled"):
        return 6
    return 1 if code in ("internal_error", "integrity_error") else 4


@job_app.command("list")
def list_cmd(
    ctx: typer.Context,
    state_: Annotated[str | None, typer.Option("--state", help="Only jobs in this state.")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only jobs of this environment.")] = None,
) -> None:
    """List jobs, newest first."""
    with runtime(ctx) as rt, rt.transaction() as session:
        env_id = None
        if env is not None:
            from keyshift.migrate.common import find_environment

            env_id = find_environment(session, env).id
        views = [store.to_view(j) for j in store.list_jobs(session, state=state_, environment_id=env_id)]
    emit(ctx, views, lambda v: print_table([_row(x) for x in v], COLUMNS, title="jobs"))


@job_app.command("show")
def show_cmd(ctx: typer.Context, job: str) -> None:
    """Show one job: state, progress, error."""
    with runtime(ctx) as rt, rt.transaction() as session:
        view = store.to_view(store.find_job(session, store.resolve_job_id(session, job)))
    emit(ctx, view, _show)


@job_app.command("wait")
def wait_cmd(
    ctx: typer.Context,
    job: str,
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None,
) -> None:
    """Block until the job ends (this process helps run it)."""
    with runtime(ctx) as rt:
        with rt.transaction() as session:
            job_id = store.resolve_job_id(session, job)
        view = drive(ctx, rt, job_id, timeout=timeout)
        emit(ctx, view, _show)
        if view["state"] == "failed":
            raise typer.Exit(_exit_for(view["error"]["code"]))


@job_app.command("resume")
def resume_cmd(ctx: typer.Context, job: str, wait: Annotated[bool, typer.Option("--wait")] = False) -> None:
    """Continue a failed job from its checkpoint."""
    with runtime(ctx) as rt:
        with rt.transaction() as session:
            job_id = store.resolve_job_id(session, job)
        finish(ctx, rt, store.resume(rt, job_id), wait)


@job_app.command("cancel")
def cancel_cmd(ctx: typer.Context, job: str) -> None:
    """Cancel a job that has not passed its point of no return."""
    with runtime(ctx) as rt:
        with rt.transaction() as session:
            job_id = store.resolve_job_id(session, job)
        view = store.request_cancel(rt, job_id)
    emit(ctx, view, _show)


def register(app: typer.Typer) -> None:
    app.add_typer(job_app, name="job")
