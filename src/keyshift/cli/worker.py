"""`keyshift worker [--once]` and `keyshift maintenance run`."""

from __future__ import annotations

import contextlib
import signal
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, runtime, vaults_ready
from keyshift.jobs import schedule
from keyshift.jobs.runner import Worker

maintenance_app = typer.Typer(help="Due maintenance: retention purges, vault deletion, rotation.")


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
    strict_vaults: Annotated[
        bool, typer.Option("--strict-vaults", help="Exit 6 if a vault in use cannot be opened.")
    ] = False,
) -> None:
    """Run jobs and due maintenance (forever, or once)."""
    with runtime(ctx) as rt:
        vaults_ready(ctx, rt, "worker", strict_vaults)
        worker = Worker(rt, lease_seconds=lease_seconds, pace=pace)
        if once:
            out = worker.run_once()
            emit(ctx, out, lambda v: _human(v))
            return
        stopping: list[bool] = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        with contextlib.suppress(KeyboardInterrupt):
            worker.run_forever(idle_seconds=idle_seconds, stop=lambda: bool(stopping))


def _human(out: dict[str, Any]) -> None:
    for job_id, st in out["jobs"].items():
        typer.echo(f"job {job_id}: {st}")
    for name, res in out["maintenance"].items():
        typer.echo(f"maintenance {name}: {res}")


@maintenance_app.command("run")
def maintenance_run(ctx: typer.Context) -> None:
    """Run due maintenance now: purge expired pre-migration copies, delete due BYOK vaults, detect
    key rotations."""
    with runtime(ctx) as rt:
        out = schedule.run_due(rt)
    emit(ctx, out, _human_maintenance)


def _human_maintenance(out: dict[str, Any]) -> None:
    for name, res in out.items():
        typer.echo(f"{name}: {res}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker_cmd)
    app.add_typer(maintenance_app, name="maintenance")
