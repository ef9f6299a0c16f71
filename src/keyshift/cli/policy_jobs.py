"""`policy add-env|remove-env|swap-env` (on the policy group) and `env restore --before-migration`
(on the env group): the commands that start key-change jobs."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from keyshift.cli.common import emit, runtime
from keyshift.cli.job import finish
from keyshift.errors import UsageError

WAIT_HELP = "Block until the job ends (this process runs it; a progress bar on a terminal)."


def add_env(
    ctx: typer.Context,
    policy: str,
    env: str,
    reencrypt: Annotated[
        bool, typer.Option("--reencrypt", help="Fresh DEKs and every row re-encrypted.")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
) -> None:
    """Add an environment to a policy: encrypt it under the policy's key (platform or BYOK -> CMK)."""
    from keyshift.migrate.link import start_link

    with runtime(ctx) as rt:
        finish(ctx, rt, start_link(rt, policy, env, reencrypt=reencrypt), wait)


def remove_env(
    ctx: typer.Context,
    policy: str,
    env: str,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
) -> None:
    """Remove an environment from its policy: back to the platform key."""
    from keyshift.migrate.link import start_unlink

    with runtime(ctx) as rt:
        view = start_unlink(rt, policy, env)
        try:  # the 30-day old-key warning, in both forms (with --wait: also in the ended job's view)
            finish(ctx, rt, view, wait, keep=("warnings",))
        finally:
            for w in view.get("warnings", []):
                sys.stderr.write(f"warning: {w}\n")


def swap_env(
    ctx: typer.Context,
    policy: str,
    env: str,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
) -> None:
    """Move a linked environment to another policy (and its key)."""
    from keyshift.migrate.link import start_swap

    with runtime(ctx) as rt:
        finish(ctx, rt, start_swap(rt, policy, env), wait)


def restore_env(
    ctx: typer.Context,
    env: str,
    before_migration: Annotated[
        bool, typer.Option("--before-migration", help="Back to the pre-migration BYOK state (28-day window).")
    ] = False,
    from_backup: Annotated[
        str | None, typer.Option("--from", help="Restore a backup of this environment (backup id).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help=WAIT_HELP)] = False,
) -> None:
    """Restore an environment (to its pre-migration state, or from a backup with --from ID)."""
    if from_backup is not None and RESTORE_FROM_HOOK is not None and not before_migration:
        RESTORE_FROM_HOOK(ctx, env, from_backup)  # keyshift.cli.features: restore a backup
        return
    with runtime(ctx) as rt:
        if from_backup is not None and before_migration:
            raise UsageError("use either --before-migration or --from, not both", code="conflicting_options")
        if from_backup is not None or not before_migration:
            raise_usage()
        from keyshift.migrate.restore import start_restore

        finish(ctx, rt, start_restore(rt, env), wait)


# Set by keyshift.cli.features (additive hook): `env restore ENV --from ID` restores a backup.
RESTORE_FROM_HOOK: Any = None


def raise_usage() -> None:
    raise UsageError("use `env restore ENV --before-migration` (restoring from a backup is not available)")


def _group(module: str, attr: str, name: str, app: typer.Typer, help_text: str) -> Any:
    try:
        mod = __import__(module, fromlist=[attr])
        return getattr(mod, attr)
    except (ImportError, AttributeError):
        group = typer.Typer(help=help_text, no_args_is_help=True)
        app.add_typer(group, name=name)
        return group


def register(app: typer.Typer) -> None:
    policy_app = _group("keyshift.cli.policy", "policy_app", "policy", app, "Enterprise policies.")
    policy_app.command("add-env")(add_env)
    policy_app.command("remove-env")(remove_env)
    policy_app.command("swap-env")(swap_env)
    env_app = _group("keyshift.cli.env", "env_app", "env", app, "Environments.")
    env_app.command("restore")(restore_env)


__all__ = ["emit", "register"]
