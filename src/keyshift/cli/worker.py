"""`keyshift worker [--once]`, `keyshift worker status` and `keyshift maintenance run`."""

from __future__ import annotations

import contextlib
import signal
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, print_lines, print_table, runtime, vaults_ready
from keyshift.jobs import schedule
from keyshift.jobs.priority import DEFAULT_NICE, lower_priority
from keyshift.jobs.runner import Worker

worker_app = typer.Typer(
    help="Run jobs and due maintenance (forever, or --once); `worker status` lists live workers.",
    invoke_without_command=True,
)
maintenance_app = typer.Typer(help="Due maintenance: retention purges, vault deletion, rotation.")

LogFormat = Annotated[
    str, typer.Option("--log-format", help="Log lines as readable `text` or `json` (one object a line).")
]


@worker_app.callback()
def worker_cmd(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Run every runnable job and due maintenance, then exit.")
    ] = False,
    lease_seconds: Annotated[float, typer.Option(help="Batch lease duration.")] = 30.0,
    idle_seconds: Annotated[float, typer.Option(help="Sleep between polls when idle.")] = 1.0,
    pace: Annotated[
        float, typer.Option(help="After each batch pause PACE x its duration (eases load on the database).")
    ] = 0.0,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on this port."),
    ] = None,
    metrics_host: Annotated[str, typer.Option("--metrics-host", help="Address of the metrics port.")] = (
        "127.0.0.1"
    ),
    heartbeat_seconds: Annotated[
        float, typer.Option("--heartbeat-seconds", min=0.1, help="Heartbeat interval (lost after 3 missed).")
    ] = 5.0,
    log_format: LogFormat = "text",
    strict_vaults: Annotated[
        bool, typer.Option("--strict-vaults", help="Exit 6 if a vault in use cannot be opened.")
    ] = False,
    nice: Annotated[
        int,
        typer.Option(
            "--nice",
            envvar="KEYSHIFT_WORKER_NICE",
            min=0,
            max=19,
            help="CPU niceness of the worker (0-19): clients on the same machine go first.",
        ),
    ] = DEFAULT_NICE,
) -> None:
    """Run jobs and due maintenance (forever, or once)."""
    if ctx.invoked_subcommand is not None:
        return
    _setup_logging(log_format)
    lower_priority(nice)
    _serve_metrics(metrics_port, metrics_host)
    with runtime(ctx) as rt:
        vaults_ready(ctx, rt, "worker", strict_vaults)
        from keyshift.jobs.heartbeat import Heartbeat
        from keyshift.observability.job_reports import JobReporter

        worker = Worker(rt, lease_seconds=lease_seconds, pace=pace, health_between_batches=True)
        heartbeat = Heartbeat(rt, worker.owner, interval=heartbeat_seconds, on_beat=_count_beat)
        worker.on_progress = JobReporter(on_current=lambda job: setattr(heartbeat, "current_job", job))
        with heartbeat:
            if once:
                out = worker.run_once()
                emit(ctx, out, lambda v: _human(v))
                return
            stopping: list[bool] = []
            signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
            with contextlib.suppress(KeyboardInterrupt):
                worker.run_forever(idle_seconds=idle_seconds, stop=lambda: bool(stopping))


def _setup_logging(log_format: str) -> None:
    from keyshift.observability import logs

    if log_format not in logs.FORMATS:
        raise typer.BadParameter(f"--log-format must be one of {', '.join(logs.FORMATS)}")
    logs.configure(log_format)


def _serve_metrics(port: int | None, host: str) -> None:
    if port is None:
        return
    from keyshift.observability.exposition import serve_process_metrics

    serve_process_metrics(port, host)


def _count_beat() -> None:
    from keyshift.observability import metrics

    metrics.worker_loops.inc()


def _human(out: dict[str, Any]) -> None:
    jobs = out.get("jobs") or {}
    typer.echo("jobs:" if jobs else "jobs: none runnable")
    for job_id, st in jobs.items():
        typer.echo(f"  {job_id}: {st if not isinstance(st, dict) else st.get('state', '')}")
    typer.echo("maintenance:")
    print_lines(out.get("maintenance") or {}, indent=1)


@worker_app.command("status")
def worker_status(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list lost workers (heartbeat expired, not yet pruned).")
    ] = False,
) -> None:
    """Live workers: host, pid, started, last heartbeat, current job and the leases they hold."""
    from keyshift.jobs.heartbeat import list_workers

    with runtime(ctx) as rt:
        rows = list_workers(rt, include_lost=show_all)
    emit(ctx, rows, _human_status)


def _human_status(rows: list[dict[str, Any]]) -> None:
    if not rows:
        typer.echo("no live workers")
        return
    table = [
        {
            **r,
            "leases": ", ".join([*r["job_leases"], *r["batch_leases"]]) or "-",
            "current_job": r["current_job"] or "-",
        }
        for r in rows
    ]
    print_table(
        table,
        ["host", "pid", "state", "started_at", "last_heartbeat_at", "current_job", "leases"],
        title="workers",
    )


@maintenance_app.command("run")
def maintenance_run(ctx: typer.Context) -> None:
    """Run due maintenance now: purge expired pre-migration copies, delete due BYOK vaults, detect
    key rotations."""
    with runtime(ctx) as rt:
        out = schedule.run_due(rt)
    emit(ctx, out, _human_maintenance)


def _human_maintenance(out: dict[str, Any]) -> None:
    print_lines(out)


def register(app: typer.Typer) -> None:
    app.add_typer(worker_app, name="worker")
    app.add_typer(maintenance_app, name="maintenance")
