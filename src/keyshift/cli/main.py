"""`keyshift` — the operator's command line. One module per command group registers itself here.

Start-up is kept short: `keyshift --help` imports no command module (the command list below carries
each top-level command's one-line help), and a command imports only the modules that build its group.
Global options (`--json`, `--home`, `--database-url`) are accepted anywhere on the command line.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keyshift.cli.clicklib import ClickException, Context, HelpFormatter, NoArgsIsHelpError, TyperGroup
from keyshift.cli.common import CliState
from keyshift.cli.help_style import plain_help
from keyshift.errors import KeyshiftError

# Each module exposes `register(app: typer.Typer) -> None`; listed here so the tree stays visible.
COMMAND_MODULES = (
    "keyshift.cli.init",  # init
    "keyshift.cli.vault",  # vault create|list|show|update|remove (group owner)
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
    "keyshift.cli.completion",  # completion
)

# Top-level command -> (one-line help, the modules that build it). A command missing here still
# works (every module is then loaded); tests/cli/test_lazy_commands.py keeps this table in step.
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "init": ("Create (or upgrade) the state home: schema, master key, platform vault and key.", ("init",)),
    "tenant": ("Tenants and their legacy BYOK status.", ("tenant",)),
    "env": (
        "Environments and their encryption.",
        ("env", "policy_jobs", "revocation", "features", "byok", "policy", "export", "coverage"),
    ),
    "vault": (
        "Key vaults: the embedded local vault and registered external ones.",
        ("vault", "vault_external"),
    ),
    "key": (
        "Keys (KEKs) in a vault: lifecycle, access grants, coverage and retirement.",
        ("key", "coverage"),
    ),
    "policy": (
        "Enterprise policies (customer-managed keys).",
        ("policy", "policy_jobs", "revocation", "env", "byok", "coverage"),
    ),
    "byok": ("Legacy bring-your-own-key (BYOK) tenant keys.", ("byok", "revocation", "env", "policy")),
    "job": ("Long operations: migrations, unlink, swap, rotation, restore.", ("job",)),
    "worker": ("Run jobs and due maintenance (forever, or once).", ("worker",)),
    "maintenance": ("Due maintenance: retention purges, vault deletion, rotation.", ("worker",)),
    "data": ("Environment table records.", ("data", "features", "env", "policy_jobs", "policy")),
    "audit": ("Environment audit events.", ("data",)),
    "files": ("Environment files.", ("data",)),
    "lake": (
        "Data lake: encrypted Parquet exports of tables.",
        ("features", "data", "env", "policy_jobs", "policy"),
    ),
    "audit-trail": (
        "Who did what, when, and how it ended: every control-plane change and key operation.",
        ("audit_trail",),
    ),
    "token": ("API tokens (shown once, stored hashed).", ("token",)),
    "serve": ("Serve the REST API and the admin center.", ("serve",)),
    "demo": (
        "Run the whole scenario: BYOK tenant, environments, online migration to a customer key.",
        ("demo",),
    ),
    "completion": ("Print the shell completion script (bash, zsh or fish).", ("completion",)),
}

PREFIX = "keyshift.cli."
COMPLETE_VAR = "_KEYSHIFT_COMPLETE"
_registered: set[str] = set()
# The app every command module registers into (each at most once per process).
_commands_app = typer.Typer(rich_markup_mode=None)


@_commands_app.callback()
def _commands_root() -> None:  # pragma: no cover - never invoked; keeps the app a group
    pass


def _register(module: str) -> None:
    if module in _registered:
        return
    _registered.add(module)
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:  # group not built yet
            return
        raise
    mod.register(_commands_app)


def load_commands(name: str | None = None, sub: str | None = None) -> Any:
    """The click group holding `name` (every command when `name` is None or not in the table).

    With `sub` (the word after `name`), the group's owner module alone is tried first: `data get`
    needs only keyshift.cli.data, not the modules that add `data search` to the group.
    """
    entry = COMMANDS.get(name) if name is not None else None
    modules = [PREFIX + m for m in entry[1]] if entry else list(COMMAND_MODULES)
    if name is not None and sub is not None and len(modules) > 1 and modules[0] not in _registered:
        _register(modules[0])
        group = typer.main.get_group(_commands_app)
        cmd = group.commands.get(name)
        if cmd is not None and sub in getattr(cmd, "commands", {}):
            plain_help(group)
            return group
    for module in modules:
        _register(module)
    group = typer.main.get_group(_commands_app)
    plain_help(group)
    return group


class LazyRoot(TyperGroup):
    """The root group: lists commands from the table, imports a command's modules when it runs."""

    _sub: str | None = None

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def resolve_command(self, ctx: Context, args: list[str]) -> Any:
        # Remember the subcommand's name so that get_command can load just what it needs.
        self._sub = args[1] if len(args) > 1 and not args[1].startswith("-") else None
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        cmd = load_commands(cmd_name, self._sub).commands.get(cmd_name)
        if cmd is None and cmd_name not in COMMANDS:
            return None
        return cmd

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (text, _) in COMMANDS.items()])


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("keyshift")
        except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
            v = "unknown"
        typer.echo(f"keyshift {v}")
        raise typer.Exit(0)


app = typer.Typer(
    name="keyshift",
    help="Customer-managed encryption keys and online key-mode migration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    cls=LazyRoot,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="KEYSHIFT_HOME",
            metavar="DIR",
            help="State home (default $KEYSHIFT_HOME, else ~/.keyshift).",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="KEYSHIFT_DATABASE_URL",
            metavar="URL",
            help="SQLAlchemy URL of the state database (default: the one recorded by init, else "
            "SQLite in the home).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON value; errors as JSON.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Customer-managed encryption keys and online key-mode migration.

    Global options may be given anywhere on the command line.
    """
    ctx.obj = CliState(home=home, database_url=database_url, json=as_json)


_GLOBAL_FLAGS = ("--json", "--version")
_GLOBAL_VALUED = ("--home", "--database-url")


def hoist_globals(argv: list[str]) -> list[str]:
    """Move the global options to the front, wherever they were given (not after `--`)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in _GLOBAL_FLAGS or any(arg.startswith(o + "=") for o in _GLOBAL_VALUED):
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _error(as_json: bool, code: str, message: str, exit_code: int) -> None:
    if as_json:
        sys.stderr.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    else:
        sys.stderr.write(f"error ({code}): {message}\n")
    sys.exit(exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point. Usage errors exit 2 (as JSON on stderr with `--json`, wherever it was given).

    Run as the program (`argv` None), the process ends right after: the garbage collector is
    frozen on the way out, so the interpreter's last collection does not walk every object the
    imports made (about a quarter of `keyshift data get`'s CPU time). Teardown is otherwise as
    usual: atexit handlers run and objects are released by reference counting; commands close
    their own files, connections and runtime before they return.
    """
    try:
        _main(argv)
    finally:
        if argv is None:
            gc.freeze()


def _main(argv: list[str] | None) -> None:
    args = hoist_globals(list(sys.argv[1:] if argv is None else argv))
    as_json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    root = typer.main.get_command(app)
    if COMPLETE_VAR in os.environ:
        from keyshift.cli.clicklib import init_completion

        init_completion()
    try:
        rc: Any = root.main(args=args, prog_name="keyshift", standalone_mode=False, complete_var=COMPLETE_VAR)
    except NoArgsIsHelpError as exc:
        if as_json:
            _error(True, "invalid_argument", "missing command", exc.exit_code)
        exc.show()
        sys.exit(exc.exit_code)
    except ClickException as exc:
        if as_json:
            _error(True, "invalid_argument", exc.format_message(), exc.exit_code)
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _error(as_json, "aborted", "aborted", 130)
    except KeyboardInterrupt:
        _error(as_json, "aborted", "interrupted", 130)
    except KeyshiftError as err:  # raised outside a command's own error handling (an import, say)
        _error(as_json, err.code, err.message, err.exit_code)
    except Exception as exc:  # never a traceback with internals on a user's terminal
        _error(as_json, "internal_error", f"internal error: {type(exc).__name__}", 1)
    sys.exit(rc if isinstance(rc, int) else 0)
