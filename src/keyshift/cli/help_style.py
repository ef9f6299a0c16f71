"""Help that reads like an ordinary command line: `env create [OPTIONS] TENANT NAME`, `--region REGION`.

Typer's own rendering shows `{tenant}` for arguments and `<str>` type tags; this walks a built click
tree once and gives every argument and valued option a plain upper-case metavar, plain-text help.
"""

from __future__ import annotations

from typing import Any

from keyshift.cli.clicklib import TyperArgument, TyperGroup, TyperOption


def _metavar(param: TyperArgument | TyperOption) -> str:
    longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    name = longs[0][2:] if longs else (param.name or "value")
    return name.replace("-", "_").upper()


def plain_help(cmd: Any) -> None:
    """Give `cmd` and its subcommands plain help (idempotent)."""
    if getattr(cmd, "_keyshift_plain", False):
        return
    cmd._keyshift_plain = True  # type: ignore[attr-defined]
    if hasattr(cmd, "rich_markup_mode"):
        cmd.rich_markup_mode = None
    for param in cmd.params:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = _metavar(param)
            _plain_usage(param)
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        elif isinstance(param, TyperOption) and not param.is_flag and param.metavar is None:
            param.metavar = _metavar(param)
    if isinstance(cmd, TyperGroup):
        for sub in cmd.commands.values():
            plain_help(sub)


def _plain_usage(param: TyperArgument) -> None:
    """`TENANT` for a required argument, `[FILE]` for an optional one (no braces)."""
    label = param.metavar or _metavar(param)
    if not param.required:
        label = f"[{label}]"
    if param.nargs != 1:
        label += "..."
    param._usage_display_name = lambda: label  # type: ignore[method-assign]
