"""The click that Typer runs on: recent Typer ships its own copy (`typer._click`), older Typer uses click.

The entry point catches the parser's exceptions and the help and completion code names click's types;
they must be the ones Typer raises, so they are taken from here.
"""

from __future__ import annotations

from typing import Any

try:  # Typer >= 0.2x
    from typer import _click as click

    ClickException: Any = click.exceptions.ClickException
    NoArgsIsHelpError: Any = click.exceptions.NoArgsIsHelpError
except ImportError:  # pragma: no cover - older Typer on the real click
    import click  # type: ignore[no-redef]

    ClickException = click.exceptions.ClickException
    NoArgsIsHelpError = getattr(click.exceptions, "NoArgsIsHelpError", click.exceptions.UsageError)

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

Context: Any = click.Context
HelpFormatter: Any = click.HelpFormatter


def init_completion() -> None:
    """Register Typer's shell completion classes (needed before completing or printing a script)."""
    from typer._completion_classes import completion_init

    completion_init()


def completion_class(shell: str) -> Any:
    """The completion class Typer uses for `shell` (None if unknown)."""
    init_completion()
    return click.shell_completion.get_completion_class(shell)


__all__ = [
    "ClickException",
    "Context",
    "HelpFormatter",
    "NoArgsIsHelpError",
    "TyperArgument",
    "TyperCommand",
    "TyperGroup",
    "TyperOption",
    "completion_class",
    "init_completion",
]
