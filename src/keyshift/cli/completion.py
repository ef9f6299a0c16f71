"""`keyshift completion bash|zsh|fish`: print the shell completion script.

Install with e.g. `keyshift completion bash > ~/.local/share/bash-completion/completions/keyshift`
(or `eval "$(keyshift completion bash)"` in ~/.bashrc). Completion runs through `_KEYSHIFT_COMPLETE`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from keyshift.cli.common import fail
from keyshift.errors import UsageError

SHELLS = ("bash", "zsh", "fish")


def completion_cmd(
    ctx: typer.Context,
    shell: Annotated[str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")],
) -> None:
    """Print the shell completion script (bash, zsh or fish)."""
    from keyshift.cli.clicklib import completion_class
    from keyshift.cli.common import state

    cls = completion_class(shell) if shell in SHELLS else None
    if cls is None:
        fail(UsageError(f"unknown shell {shell!r}: one of {', '.join(SHELLS)}"), state(ctx).json)
    root = ctx.find_root().command
    typer.echo(cls(root, {}, "keyshift", "_KEYSHIFT_COMPLETE").source())


def register(app: typer.Typer) -> None:
    app.command("completion")(completion_cmd)
