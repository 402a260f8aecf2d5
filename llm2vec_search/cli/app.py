"""The Typer app and the two consoles every command module shares (commands register on import)."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="l2v-search",
    help="LLM2Vec encoders and semantic search: train, encode, index, query, evaluate, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)  # progress, logs, errors
out = Console()  # results for people (tables)


@app.callback()
def _root() -> None:
    """LLM2Vec encoders and semantic search: train, encode, index, query, evaluate, serve."""
    # A callback keeps the app a group of commands when only the invoked command's module is
    # loaded (Typer runs a lone command as the whole program otherwise).
